//! Noticing a client that has gone while its request is still being answered.
//!
//! actix-web keeps running a handler after its client has closed the connection: until the
//! response is written, nothing reads the socket on the handler's behalf. A client that gives
//! up while the upstream is still thinking would hold the upstream call — and its retries — for
//! up to `CLIENT_TIMEOUT`. [`on_connect`] keeps a duplicate of each accepted socket; a handler
//! races its work against [`ConnWatch::gone`], which the kernel wakes (`EPOLLRDHUP`) the moment
//! the peer closes, and drops the work — and with it the upstream request — at once.

use actix_web::HttpRequest;
use actix_web::dev::Extensions;
use std::cell::OnceCell;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use tokio::io::Interest;

/// A connection's watch: a duplicate of its socket, registered with the reactor on first use.
pub struct ConnWatch {
    fd: std::cell::Cell<Option<OwnedFd>>,
    stream: OnceCell<Option<tokio::net::TcpStream>>,
}

impl ConnWatch {
    fn stream(&self) -> Option<&tokio::net::TcpStream> {
        self.stream
            .get_or_init(|| {
                let fd = self.fd.take()?;
                let std = std::net::TcpStream::from(fd);
                std.set_nonblocking(true).ok()?;
                tokio::net::TcpStream::from_std(std).ok()
            })
            .as_ref()
    }

    /// Completes when the client has closed its side of the connection (or it broke). Pending
    /// forever when the connection cannot be watched.
    pub fn gone(self: Rc<Self>) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            let Some(stream) = self.stream() else {
                return std::future::pending().await;
            };
            loop {
                match stream.ready(Interest::READABLE).await {
                    Ok(r) if r.is_read_closed() || r.is_error() => return,
                    Ok(_) => {
                        // Data (a pipelined request) is actix's to read: forget this readiness
                        // and wait for the next event.
                        let _ = stream.try_io(Interest::READABLE, || {
                            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                        });
                    }
                    Err(_) => return,
                }
            }
        })
    }
}

/// The watch of the connection `req` arrived on, when [`on_connect`] installed one.
pub fn watch(req: &HttpRequest) -> Option<Rc<ConnWatch>> {
    req.conn_data::<Rc<ConnWatch>>().cloned()
}

/// The `HttpServer::on_connect` callback every server of the gateway should install: turns
/// Nagle's algorithm off (see [`crate::tcp_nodelay`]) and keeps the connection's watch, so
/// that a request whose client has gone is cancelled, upstream call included, at once.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut Extensions) {
    crate::tcp_nodelay(conn, ext);
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
            ext.insert(Rc::new(ConnWatch {
                fd: std::cell::Cell::new(Some(fd)),
                stream: OnceCell::new(),
            }));
        }
    }
}
