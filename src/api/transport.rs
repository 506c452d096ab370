//! The HTTP client of the targets: hyper's pooled client over TCP, or TLS by
//! rustls (the platform's roots, `BRIDGE_CA_FILE`, the client certificate),
//! HTTP/1.1, or HTTP/2 when a TLS server chooses it; through the proxy the
//! environment names, if any (`proxy.rs`). It follows no redirect. What an
//! attempt leaves besides its status: the response body, read only far
//! enough to reuse the connection, and transport errors described without
//! the URL's credentials.
//!
//! hyper directly rather than through reqwest: reqwest's layers (a redirect
//! policy that parses the URL of every request even with redirects off, a
//! retry layer that clones every request, client clones per request) cost
//! about 30 % of the worker's CPU per message (BENCHMARK.md), for nothing
//! this worker uses.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::{
        legacy::{connect::HttpConnector, Client},
        proxy::matcher::Matcher,
    },
    rt::{TokioExecutor, TokioTimer},
};

use super::proxy::Connector;

/// A pooled HTTP/1.1 + HTTP/2 client for the targets' requests.
#[derive(Clone, Debug)]
pub(super) struct Transport {
    client: Client<HttpsConnector<Connector>, Full<Bytes>>,
}

/// The pool and connection settings of [`Transport::new`].
pub(super) struct PoolSettings {
    pub max_idle_per_host: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

/// TCP keepalive on API connections: a peer that vanished without a FIN is
/// noticed on an idle pooled connection (reqwest's default, kept).
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

impl Transport {
    pub(super) fn new(
        tls: rustls::ClientConfig,
        pool: &PoolSettings,
        proxies: Matcher,
    ) -> Transport {
        let mut tcp = HttpConnector::new();
        // The TLS layer above takes `https://`.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        tcp.set_connect_timeout(Some(pool.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Connector::new(tcp, proxies));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool.max_idle_per_host)
            .pool_idle_timeout(pool.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Transport { client }
    }

    /// Sends `request` and returns the response head; the body is read by
    /// [`discard_body`].
    pub(super) async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }
}

/// Reads and drops a response body frame by frame, at most about `cap`
/// bytes (one frame past it); true if it ended within the cap, so the
/// connection can go back to the pool.
pub(super) async fn discard_body(body: &mut Incoming, cap: usize) -> bool {
    let mut read = 0usize;
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read = read.saturating_add(data.len());
                    if read > cap {
                        return false;
                    }
                }
            }
            None => return true,
            Some(Err(_)) => return false,
        }
    }
}

/// The `error.type` of a transport error, for the attempt's span.
pub(super) fn error_type(e: &hyper_util::client::legacy::Error) -> &'static str {
    if e.is_connect() {
        "connect"
    } else {
        "request"
    }
}

/// Removes a URL's credentials from an error text, should a library ever
/// include them.
pub(super) fn scrub(text: String, url: &url::Url) -> String {
    let mut text = text;
    for secret in [url.password().unwrap_or(""), url.username()] {
        if !secret.is_empty() && text.contains(secret) {
            text = text.replace(secret, "***");
        }
    }
    text
}

/// The text of an attempt that ran out of time.
pub(super) fn timed_out(timeout: Duration) -> String {
    format!("timed out after {} ms", timeout.as_millis())
}

/// A short description of a transport error, without the URL (it may carry
/// credentials): the root cause of a failed connection, the whole chain
/// otherwise.
pub(super) fn describe(e: &hyper_util::client::legacy::Error) -> String {
    if e.is_connect() {
        let mut source = std::error::Error::source(e);
        let mut root = None;
        while let Some(s) = source {
            root = Some(s.to_string());
            source = s.source();
        }
        match root {
            Some(r) => format!("connection failed ({r})"),
            None => "connection failed".to_owned(),
        }
    } else {
        let mut text = String::from("request failed: ");
        text.push_str(&e.to_string());
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}
