//! Opening upstream TCP connections: directly, through an HTTP proxy (CONNECT tunnel) or through
//! a SOCKS5 proxy. awc has no proxy support; this is the TCP connector it runs TLS on top of, so
//! TLS to an https upstream runs inside the tunnel.
//!
//! A configured proxy that fails fails the request: there is no fallback to a direct connection
//! (that would reveal the server's own address). Every connection gets `TCP_NODELAY`, and every
//! connection opened is counted so connection reuse can be reported.

use actix_rt::net::ActixStream;
use actix_rt::net::TcpStream;
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use awc::http::Uri;
use futures_util::future::LocalBoxFuture;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which proxy protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `http://`: an HTTP CONNECT tunnel.
    Http,
    /// `socks5://` (the target name is resolved here) or `socks5h://` (resolved by the proxy).
    Socks5 {
        /// Let the proxy resolve the target host name.
        remote_dns: bool,
    },
}

/// An outbound proxy. The password is a secret: `Debug` and [`ProxyConfig::describe`] omit it.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Protocol.
    pub kind: ProxyKind,
    /// Proxy host.
    pub host: String,
    /// Proxy port.
    pub port: u16,
    /// Username and password, when the proxy needs them.
    pub auth: Option<(String, String)>,
    /// Hosts reached directly: exact names, `.suffix` / `suffix` domain matches, or `*`.
    pub no_proxy: Vec<String>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyConfig({})", self.describe())
    }
}

impl ProxyConfig {
    /// The proxy a `http://`, `socks5://` or `socks5h://` URL names (`user:pass@` percent-decoded
    /// into [`ProxyConfig::auth`]); `None` for another scheme or a URL without a host.
    pub fn from_url(url: &url::Url, no_proxy: Vec<String>) -> Option<ProxyConfig> {
        let kind = match url.scheme() {
            "http" => ProxyKind::Http,
            "socks5" => ProxyKind::Socks5 { remote_dns: false },
            "socks5h" => ProxyKind::Socks5 { remote_dns: true },
            _ => return None,
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let auth = (!url.username().is_empty())
            .then(|| (decode(url.username()), decode(url.password().unwrap_or(""))));
        Some(ProxyConfig {
            kind,
            host: url
                .host_str()?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port_or_known_default().unwrap_or(1080),
            auth,
            no_proxy,
        })
    }

    /// `scheme://host:port` (never the credentials), for logs and error messages.
    pub fn describe(&self) -> String {
        let scheme = match self.kind {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 { remote_dns: false } => "socks5",
            ProxyKind::Socks5 { remote_dns: true } => "socks5h",
        };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// Whether `host` is reached without the proxy (`NO_PROXY`).
    pub fn bypass(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.no_proxy.iter().any(|rule| {
            let rule = rule.trim().trim_end_matches('.').to_ascii_lowercase();
            if rule.is_empty() {
                return false;
            }
            if rule == "*" {
                return true;
            }
            let suffix = rule.trim_start_matches('.');
            host == suffix || host.ends_with(&format!(".{suffix}"))
        })
    }
}

/// Counters of the connector, shared by every worker.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// TCP connections opened to the upstream (or to the proxy for it).
    pub opened: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
}

/// An upstream connection that keeps [`ConnStats::open`] true: counted when made, uncounted
/// when dropped (closed by the pool, the upstream or an error).
#[derive(Debug)]
pub(crate) struct CountedStream {
    inner: TcpStream,
    stats: Arc<ConnStats>,
}

impl CountedStream {
    pub(crate) fn new(inner: TcpStream, stats: Arc<ConnStats>) -> Self {
        stats.opened.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        CountedStream { inner, stats }
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl actix_rt::net::ActixStream for CountedStream {
    fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<actix_rt::net::Ready>> {
        ActixStream::poll_read_ready(&self.inner, cx)
    }

    fn poll_write_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<actix_rt::net::Ready>> {
        ActixStream::poll_write_ready(&self.inner, cx)
    }
}

/// awc's TCP connector service.
#[derive(Clone)]
pub(crate) struct UpstreamConnector {
    proxy: Option<Arc<ProxyConfig>>,
    stats: Arc<ConnStats>,
}

impl UpstreamConnector {
    pub(crate) fn new(proxy: Option<Arc<ProxyConfig>>, stats: Arc<ConnStats>) -> Self {
        UpstreamConnector { proxy, stats }
    }
}

/// A proxy failure, marked so the client error can say `proxy_error`.
#[derive(Debug)]
pub(crate) struct ProxyFailure(pub(crate) String);

impl fmt::Display for ProxyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProxyFailure {}

fn proxy_err(proxy: &ProxyConfig, what: impl fmt::Display) -> ConnectError {
    ConnectError::Io(std::io::Error::other(ProxyFailure(format!(
        "proxy {} failed: {what}",
        proxy.describe()
    ))))
}

async fn through_proxy(
    proxy: &ProxyConfig,
    host: &str,
    port: u16,
) -> Result<TcpStream, ConnectError> {
    let mut stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|e| proxy_err(proxy, format!("cannot connect: {e}")))?;
    match proxy.kind {
        ProxyKind::Http => {
            let res = match &proxy.auth {
                Some((user, pass)) => {
                    async_http_proxy::http_connect_tokio_with_basic_auth(
                        &mut stream,
                        host,
                        port,
                        user,
                        pass,
                    )
                    .await
                }
                None => async_http_proxy::http_connect_tokio(&mut stream, host, port).await,
            };
            res.map_err(|e| proxy_err(proxy, format!("CONNECT {host}:{port} refused: {e}")))?;
            Ok(stream)
        }
        ProxyKind::Socks5 { remote_dns } => {
            let target: tokio_socks::TargetAddr<'_> = if remote_dns {
                tokio_socks::TargetAddr::Domain(host.into(), port)
            } else {
                let addr = tokio::net::lookup_host((host, port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        ConnectError::Io(std::io::Error::other(format!("cannot resolve {host}")))
                    })?;
                tokio_socks::TargetAddr::Ip(addr)
            };
            let s = match &proxy.auth {
                Some((user, pass)) => {
                    tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(
                        stream, target, user, pass,
                    )
                    .await
                }
                None => tokio_socks::tcp::Socks5Stream::connect_with_socket(stream, target).await,
            };
            let s = s.map_err(|e| {
                proxy_err(
                    proxy,
                    format!("SOCKS5 connect to {host}:{port} refused: {e}"),
                )
            })?;
            Ok(s.into_inner())
        }
    }
}

impl Service<ConnectInfo<Uri>> for UpstreamConnector {
    type Response = Connection<Uri, CountedStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let host = req.hostname().to_owned();
        let port = req.port();
        let uri = req.request().clone();
        let proxy = self.proxy.clone().filter(|p| !p.bypass(&host));
        let stats = self.stats.clone();
        Box::pin(async move {
            let stream = match &proxy {
                Some(p) => through_proxy(p, &host, port).await?,
                None => TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(ConnectError::Io)?,
            };
            // Latency over throughput: every event is sent at once.
            let _ = stream.set_nodelay(true);
            Ok(Connection::new(uri, CountedStream::new(stream, stats)))
        })
    }
}

/// Whether an error chain came from a proxy failure; returns its message.
pub(crate) fn proxy_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(p) = err.downcast_ref::<ProxyFailure>() {
            return Some(p.0.clone());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(p) = inner.downcast_ref::<ProxyFailure>() {
                    return Some(p.0.clone());
                }
            }
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(no_proxy: &[&str]) -> ProxyConfig {
        ProxyConfig {
            kind: ProxyKind::Socks5 { remote_dns: true },
            host: "p".into(),
            port: 1080,
            auth: Some(("u".into(), "secret".into())),
            no_proxy: no_proxy.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn no_proxy_rules() {
        let p = proxy(&["localhost", ".internal", "example.com"]);
        assert!(p.bypass("localhost"));
        assert!(p.bypass("api.internal"));
        assert!(p.bypass("example.com") && p.bypass("a.example.com"));
        assert!(!p.bypass("badexample.com"));
        assert!(!p.bypass("api.openai.com"));
        assert!(proxy(&["*"]).bypass("anything"));
        assert!(!proxy(&[]).bypass("localhost"));
    }

    #[test]
    fn describe_hides_credentials() {
        let p = proxy(&[]);
        assert_eq!(p.describe(), "socks5h://p:1080");
        assert!(!format!("{p:?}").contains("secret"));
    }

    #[test]
    fn finds_proxy_failure_in_an_io_error() {
        let e = std::io::Error::other(ProxyFailure("proxy x failed".into()));
        assert_eq!(proxy_failure(&e).as_deref(), Some("proxy x failed"));
        let plain = std::io::Error::other("nope");
        assert_eq!(proxy_failure(&plain), None);
    }
}
