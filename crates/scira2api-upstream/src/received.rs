//! An upstream answer whose head has arrived, from either client: awc's, or the lean HTTP/1.1
//! client of [`crate::h1`]. The providers read its status and headers and then its body,
//! whole or as a stream, without knowing which client fetched it.

use crate::h1::H1Response;
use awc::error::PayloadError;
use awc::http::StatusCode;
use awc::http::header::HeaderMap;
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// An answer head with its body still to read. Both kinds are boxed: the answer is handed
/// down several layers of the call (send, accept, read_body, body), each of which keeps its own
/// copy in its future; a pointer there instead of the 144-byte answer keeps every chat
/// request's future about a kilobyte smaller.
pub(crate) enum Received {
    /// Through awc.
    Awc(Box<awc::ClientResponse>),
    /// Through the lean HTTP/1.1 client.
    H1(Box<H1Response>),
}

impl Received {
    /// An answer read through awc.
    pub(crate) fn awc(r: awc::ClientResponse) -> Received {
        Received::Awc(Box::new(r))
    }

    /// An answer read through the lean HTTP/1.1 client.
    pub(crate) fn h1(r: H1Response) -> Received {
        Received::H1(Box::new(r))
    }

    /// The answer's status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Received::Awc(r) => r.status(),
            Received::H1(r) => r.status,
        }
    }

    /// The answer's headers.
    pub(crate) fn headers(&self) -> &HeaderMap {
        match self {
            Received::Awc(r) => r.headers(),
            Received::H1(r) => r.headers(),
        }
    }

    /// The whole body when it has already arrived with the head (the lean client's usual case
    /// for a small answer), taken without a read, a deadline or a future; `None` otherwise.
    pub(crate) fn already_read(&mut self, limit: usize) -> Option<Result<Bytes, PayloadError>> {
        match self {
            Received::Awc(_) => None,
            Received::H1(r) => r.body.already_read(limit),
        }
    }

    /// The whole body: at most `limit` bytes, read within `timeout`.
    pub(crate) async fn body(self, limit: usize, timeout: Duration) -> Result<Bytes, PayloadError> {
        match self {
            Received::Awc(r) => {
                let mut r = (*r).timeout(timeout);
                r.body().limit(limit).await
            }
            Received::H1(mut r) => {
                if let Some(whole) = r.body.already_read(limit) {
                    return whole;
                }
                actix_rt::time::timeout(timeout, r.body.collect(limit))
                    .await
                    .unwrap_or_else(|_| {
                        Err(PayloadError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "Response Payload IO timed out",
                        )))
                    })
            }
        }
    }
}

impl Stream for Received {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Received::Awc(r) => Pin::new(&mut **r).poll_next(cx),
            Received::H1(r) => Pin::new(&mut r.body).poll_next(cx),
        }
    }
}
