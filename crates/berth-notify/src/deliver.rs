//! Sending one envelope to one endpoint: a `POST` with the envelope's media type, the
//! endpoint's headers and its timeout, over HTTP/1.1, with TLS for `https` URLs (rustls with
//! ring and the system's root certificates, as the S3 client has it).
//!
//! A 2xx answer is delivery. Distribution also accepts 3xx (after Go's client followed the
//! redirects it would); berth does not follow redirects and counts a 3xx as a failure, so
//! an event is deleted only once an endpoint has said it has it.

use std::time::Duration;

use berth_client::Connector;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;

use crate::event::EVENTS_MEDIA_TYPE;

/// The client every endpoint shares (connections are pooled per host).
#[derive(Clone)]
pub(crate) struct Sender {
    client: Client<Connector, Full<Bytes>>,
}

/// How much of an endpoint's answer is read (the rest is dropped with the connection).
const ANSWER_LIMIT: usize = 64 * 1024;

impl Sender {
    /// A client; `tls` loads the system's root certificates. Without any, berth still
    /// starts (as Distribution does): https deliveries then fail, are logged and retried.
    pub fn new(tls: bool) -> Result<Sender, String> {
        let client = berth_client::build(berth_client::Options {
            system_roots: tls,
            serving: "https notification endpoints",
            connect_timeout: None,
        })?;
        Ok(Sender { client })
    }

    /// POSTs `envelope` to `url`: Ok on 2xx, else why not.
    pub async fn post(
        &self,
        url: &Uri,
        headers: &HeaderMap,
        timeout: Duration,
        envelope: Bytes,
    ) -> Result<u16, String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .body(Full::new(envelope))
            .map_err(|e| e.to_string())?;
        let h = request.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(EVENTS_MEDIA_TYPE),
        );
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"))),
        );
        // The endpoint's own headers are added to, not replacing, these (as Distribution's
        // header round tripper merges them).
        for (name, value) in headers {
            h.append(name, value.clone());
        }
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = response.status();
            // Read (a bounded part of) the answer so the connection can be reused.
            let _ = Limited::new(response.into_body(), ANSWER_LIMIT)
                .collect()
                .await;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(Err(e)) => Err(e),
            Ok(Ok(status)) if status.is_success() => Ok(status.as_u16()),
            Ok(Ok(status)) => Err(format!("answered {status}")),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
