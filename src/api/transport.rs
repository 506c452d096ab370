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

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::{
        legacy::{connect::HttpConnector, Client},
        proxy::matcher::Matcher,
    },
    rt::{TokioExecutor, TokioTimer},
};

use super::{proxy::Connector, RequestBody};

type HttpClient = Client<HttpsConnector<Connector>, RequestBody>;

/// A pooled HTTP/1.1 + HTTP/2 client for the targets' requests.
#[derive(Clone, Debug)]
pub(super) struct Transport {
    client: HttpClient,
    /// The same without a pool: every request on a new connection, for the
    /// one resend of a request whose reused connection the server had closed.
    fresh: HttpClient,
}

/// When a connection became ready for its first request (the connector's
/// extra in `Connected`): one made before an attempt began was reused by it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Opened(pub Instant);

/// The pool and connection settings of [`Transport::new`].
pub(super) struct PoolSettings {
    pub max_idle_per_host: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

/// TCP keepalive on API connections: a peer that vanished without a FIN is
/// noticed on an idle pooled connection (reqwest's default, kept).
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// HTTP/2 keep-alive pings: a connection that went silent (a peer or NAT
/// that vanished without a FIN or RST; TCP keepalive only probes the kernel,
/// which may still answer) is closed and replaced within
/// `H2_PING_INTERVAL + H2_PING_TIMEOUT` instead of holding requests until
/// their timeout, attempt after attempt. A ping goes out only after that long
/// without a frame from the server, so a busy connection sends none.
const H2_PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered: many round trips even far away.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(5);

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
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(H2_PING_INTERVAL)
            .http2_keep_alive_timeout(H2_PING_TIMEOUT)
            // Also between requests: a dead connection is found before a
            // request is put on it.
            .http2_keep_alive_while_idle(true);
        let fresh = builder
            .clone()
            .pool_max_idle_per_host(0)
            .build(connector.clone());
        let client = builder
            .pool_max_idle_per_host(pool.max_idle_per_host)
            .pool_idle_timeout(pool.idle_timeout)
            .build(connector);
        Transport { client, fresh }
    }

    /// Sends `request` and returns the response head; the body is read by
    /// [`discard_body`].
    pub(super) async fn send(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }

    /// Sends `request` on a new connection of its own.
    pub(super) async fn send_fresh(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.fresh.request(request).await
    }
}

/// Whether `e` is a request that met a connection the server had closed
/// while it sat in the pool: a connection opened before the attempt
/// `started`, and closed (EOF or reset) before any response to it. Such a
/// request is sent again on a new connection without counting as an attempt
/// (the rule for requests with an idempotency key): servers closing idle
/// keep-alive connections is normal, not a failing API. hyper-util resends
/// by itself only a request the closed connection never took.
pub(super) fn closed_while_pooled(e: &hyper_util::client::legacy::Error, started: Instant) -> bool {
    if e.is_connect() {
        return false;
    }
    let Some(info) = e.connect_info() else {
        return false;
    };
    let mut extras = http::Extensions::new();
    info.get_extras(&mut extras);
    let reused = extras.get::<Opened>().is_some_and(|o| o.0 < started);
    if !reused {
        return false;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return true;
            }
        } else if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
            if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe) {
                return true;
            }
        }
        source = s.source();
    }
    false
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
