# Helpers the benchmark scripts share (sourced by bench/run.sh and bench/fast.sh).

# Pins the proxy under test apart from the load: sets PROXY_CPU and LOAD_CPU (taskset
# prefixes), PINNING (for the report, naming `$1`, what shares the load CPU), and moves this
# shell (its own sampling work) to the load CPU. Counts every CPU (`nproc --all`), as a caller's
# shell may already be pinned to one.
pin_cpus() {
  if [ "$(nproc --all)" -ge 2 ]; then
    PROXY_CPU="taskset -c 0"; LOAD_CPU="taskset -c 1"; PINNING="proxy on CPU 0; $1 on CPU 1"
    taskset -p -c 1 $$ > /dev/null
  else
    PROXY_CPU=""; LOAD_CPU=""; PINNING="none (1 CPU)"
  fi
}

# Waits up to 10 s for something to listen on host:port.
wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on $1" >&2; return 1
}

# User + system CPU ticks a process has used (see CLK_TCK).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# User and system CPU ticks a process has used, as "user system" (see CLK_TCK).
cpu_split() { awk '{print $14, $15}' "/proc/$1/stat"; }
