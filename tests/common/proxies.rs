//! Real proxy servers for the tests: tinyproxy (HTTP CONNECT, basic auth) and microsocks (SOCKS5,
//! username/password), from Debian's packages.

use super::wait_for;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed (apt-get install -y {name}); .ci/run installs it");
        }
        eprintln!("SKIPPED: {name} is not installed (apt-get install -y {name})");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Proxy {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Proxy {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(self) -> Proxy {
        assert!(
            wait_for(Duration::from_secs(5), || std::net::TcpStream::connect((
                "127.0.0.1",
                self.port
            ))
            .is_ok()),
            "proxy did not start: {}",
            self.log()
        );
        self
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "scira2api-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn tinyproxy() -> Option<Proxy> {
    let bin = tool("tinyproxy")?;
    let dir = workdir("tinyproxy");
    let port = free_port();
    let log = dir.join("tinyproxy.log");
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Info\nMaxClients 50\nBasicAuth proxyuser s3cret-pass\nDisableViaHeader Yes\n",
            log.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["-d", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some(Proxy { child, port, log }.wait_ready())
}

pub fn microsocks() -> Option<Proxy> {
    let bin = tool("microsocks")?;
    let dir = workdir("microsocks");
    let port = free_port();
    let log = dir.join("microsocks.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            "sockuser",
            "-P",
            "s0cks-pass",
        ])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Some(Proxy { child, port, log }.wait_ready())
}
