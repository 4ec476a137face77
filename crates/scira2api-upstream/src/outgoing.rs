//! An upstream request before it is sent: method, URL, headers, and whether its connection is
//! closed afterwards. Providers build one per attempt. The lean HTTP/1.1 client writes it as it
//! is; awc gets it as a `ClientRequest` ([`Outgoing::into_awc`]). Building awc's request for
//! every attempt only for the lean client to read it back cost more than the rest of the
//! request head (a client config `Rc`, a request head with its extensions, a hashed header map).

use actix_http::Method;
use actix_http::error::HttpError;
use actix_http::header::{AUTHORIZATION, HeaderName, HeaderValue, TryIntoHeaderPair};
use actix_http::uri::Uri;
use awc::error::SendRequestError;

/// One request to an upstream, as a provider built it.
pub(crate) struct Outgoing {
    method: Method,
    uri: Uri,
    /// In the order set; a name appears once (setting it again replaces it, as in awc).
    headers: Vec<(HeaderName, HeaderValue)>,
    close: bool,
    /// The first URL or header that did not parse: the request fails with it when sent, as
    /// awc's does.
    err: Option<HttpError>,
}

impl Outgoing {
    /// A request for `method` on `url`.
    pub(crate) fn new<U>(method: Method, url: U) -> Self
    where
        Uri: TryFrom<U>,
        <Uri as TryFrom<U>>::Error: Into<HttpError>,
    {
        let (uri, err) = match Uri::try_from(url) {
            Ok(uri) => (uri, None),
            Err(e) => (Uri::default(), Some(e.into())),
        };
        Outgoing {
            method,
            uri,
            headers: Vec::with_capacity(4),
            close: false,
            err,
        }
    }

    /// Sets a header, replacing any value it had.
    pub(crate) fn insert_header(mut self, header: impl TryIntoHeaderPair) -> Self {
        match header.try_into_pair() {
            Ok((name, value)) => {
                self.headers.retain(|(n, _)| *n != name);
                self.headers.push((name, value));
            }
            Err(e) => {
                self.err.get_or_insert(e.into());
            }
        }
        self
    }

    /// `Authorization: Bearer <token>`.
    pub(crate) fn bearer_auth(self, token: &str) -> Self {
        self.insert_header((AUTHORIZATION, format!("Bearer {token}")))
    }

    /// Closes the connection after this request (the pool is off).
    pub(crate) fn force_close(mut self) -> Self {
        self.close = true;
        self
    }

    /// The method.
    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    /// The URL.
    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The headers, in the order set.
    pub(crate) fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The request's error, if its URL or a header did not parse (awc's error for it).
    pub(crate) fn error(&mut self) -> Option<SendRequestError> {
        self.err.take().map(SendRequestError::Http)
    }

    /// The same request as awc's, to send with `client`.
    pub(crate) fn into_awc(
        mut self,
        client: &awc::Client,
    ) -> Result<awc::ClientRequest, SendRequestError> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        let mut req = client.request(self.method, self.uri);
        for header in self.headers {
            req = req.insert_header(header);
        }
        Ok(if self.close { req.force_close() } else { req })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::header::CONTENT_TYPE;

    #[test]
    fn a_header_set_again_is_replaced_and_order_is_kept() {
        let out = Outgoing::new(Method::POST, "http://up/v1/chat/completions")
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header(("x-extra", "1"))
            .bearer_auth("k1")
            .insert_header(("X-Extra", "2"));
        let names: Vec<_> = out
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("content-type", "application/json"),
                ("authorization", "Bearer k1"),
                ("x-extra", "2")
            ]
        );
        assert_eq!(out.uri().path(), "/v1/chat/completions");
    }

    #[actix_rt::test]
    async fn a_bad_url_or_header_fails_as_awc_fails_it() {
        let client = awc::Client::default();
        let mut bad_header =
            Outgoing::new(Method::GET, "http://up/").insert_header(("bad name", "v"));
        assert!(matches!(
            bad_header.error(),
            Some(SendRequestError::Http(_))
        ));
        let bad_url = Outgoing::new(Method::GET, "http://up/a b");
        assert!(matches!(
            bad_url.into_awc(&client),
            Err(SendRequestError::Http(_))
        ));
        let req = Outgoing::new(Method::DELETE, "http://up/v1/files/f")
            .insert_header(("x-a", "1"))
            .force_close()
            .into_awc(&client)
            .unwrap();
        assert_eq!(req.get_method(), Method::DELETE);
        assert_eq!(req.headers().get("x-a").unwrap(), "1");
    }
}
