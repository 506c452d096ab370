//! The downstream APIs (targets): one shared HTTP client, the requests the
//! contract prescribes, and the per-target retry loop.

pub mod classify;
mod endpoint;
pub mod probe;
mod proxy;
pub mod rate_limit;
pub mod requests;
mod transport;

use std::time::{Duration, Instant, SystemTime};

use http::{
    header::{
        HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, PROXY_AUTHORIZATION, RETRY_AFTER, USER_AGENT,
    },
    Method, Uri,
};
use tracing::{debug, warn};

use crate::{
    backoff::Backoff,
    config::{TargetConfig, WorkerConfig},
    domain::{BodyShape, CallFailure, CallOutcome, FailureKind, InboundMessage, TargetName},
    metrics::{AttemptResult, Metrics, TargetMetrics},
};
use rate_limit::RateLimiter;
pub use requests::{RequestBody, Requests, UnsendableId};
use transport::{describe, discard_body, error_type, scrub, timed_out, PoolSettings, Transport};

/// Longest wait between two attempts, whatever the doubling reaches.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Idle pooled connections are dropped before common servers close theirs
/// (Node.js and Apache: 5 s), so a request rarely meets a connection the server
/// closed while idle; when it does, the request is sent again on a new
/// connection without counting as an attempt (`transport::closed_while_pooled`).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How much of an error response's body is read. Nothing of it is used; a
/// short one is read to its end so the connection can be reused, a longer one
/// (a server streaming without end) is cut off with its connection.
pub const ERROR_BODY_CAP: usize = 1024;
/// The same for a success: acknowledgements are small, and a huge one must
/// not cost memory or hold the call until its timeout.
pub const SUCCESS_BODY_CAP: usize = 64 * 1024;
/// How long the body after a response head may take (capped by the attempt
/// timeout). The outcome is already known from the status; this only bounds
/// the wait for the connection to be reusable, so it is short: a small
/// acknowledgement arrives with its head or a round trip later.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// One target, with everything its requests need built once at startup.
pub struct Endpoint {
    name: TargetName,
    /// Without credentials (they are in `authorization`).
    url: url::Url,
    /// `url` as the request's URI.
    uri: Uri,
    /// `Bearer …`, marked sensitive so hyper never prints it.
    authorization: Option<HeaderValue>,
    /// The credentials of the forwarding proxy an `http://` target is
    /// reached through, if it has some.
    proxy_authorization: Option<HeaderValue>,
    body: BodyShape,
    limiter: Option<RateLimiter>,
    metrics: TargetMetrics,
}

impl std::fmt::Debug for Endpoint {
    /// The URL without its credentials; the token is sensitive anyway.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &crate::config::redacted_url(&self.url))
            .field("body", &self.body)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn name(&self) -> &TargetName {
        &self.name
    }
}

/// How one call went, with the time it took including retries.
#[derive(Clone, Debug)]
pub struct CallReport {
    pub outcome: CallOutcome,
    pub elapsed: Duration,
}

/// One per process: its connection pool serves every delivery task.
#[derive(Debug)]
pub struct ApiClient {
    transport: Transport,
    /// In the configured order.
    endpoints: Vec<Endpoint>,
    /// Whether any target takes the envelope, so it is built only then.
    needs_envelope: bool,
    max_attempts: u32,
    /// Bounds one attempt, from connecting to the response head; the body
    /// has its own [`BODY_READ_TIMEOUT`].
    timeout: Duration,
    backoff: Backoff,
}

/// A target whose settings cannot make a request (the configuration checks
/// these first, so this is a second line of defence).
#[derive(Debug, thiserror::Error)]
#[error("target {0:?} cannot make a request: its URL or token is not valid")]
pub struct BadTarget(String);

/// What every request carries besides the message's headers.
static USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("fanout-bridge/", env!("CARGO_PKG_VERSION")));
static ACCEPT_ANY: HeaderValue = HeaderValue::from_static("*/*");

impl ApiClient {
    /// # Errors
    /// When the TLS backend cannot be initialised or a token is not a valid
    /// header value.
    pub fn new(cfg: &WorkerConfig, metrics: &Metrics) -> anyhow::Result<Self> {
        let pool = PoolSettings {
            // Targets may share a host, each with up to `prefetch` requests
            // in flight: a smaller idle pool closes and reopens connections
            // under load (BENCHMARK.md: 475 → 2 new connections per 1,000
            // messages).
            max_idle_per_host: usize::from(cfg.prefetch)
                .saturating_mul(cfg.targets.len().max(2))
                .max(16),
            idle_timeout: POOL_IDLE_TIMEOUT,
            connect_timeout: cfg.http_timeout,
        };
        // TLS: the platform's roots, plus BRIDGE_CA_FILE and the client
        // certificate (src/tls.rs).
        let proxies = cfg.proxy.matcher();
        let endpoints = cfg
            .targets
            .iter()
            .map(|t| Endpoint::new(t, &proxies, metrics))
            .collect::<Result<Vec<_>, _>>()?;
        let transport = Transport::new(cfg.broker.tls.http()?, &pool, proxies);
        Ok(ApiClient {
            transport,
            needs_envelope: endpoints.iter().any(|e| e.body == BodyShape::Envelope),
            endpoints,
            max_attempts: cfg.max_attempts.get(),
            timeout: cfg.http_timeout,
            backoff: Backoff::new(cfg.retry_backoff, BACKOFF_CAP),
        })
    }

    /// The targets, in the configured order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Builds the requests of one message for every target.
    ///
    /// # Errors
    /// When the message id cannot be an HTTP header value.
    pub fn requests(
        &self,
        msg: &InboundMessage,
        json: &[u8],
        event: &str,
    ) -> Result<Requests, UnsendableId> {
        Requests::build(msg, json, event, self.needs_envelope)
    }

    /// Calls `endpoint` until it accepts, fails permanently, or the attempts
    /// run out. The per-attempt timeout is set on the client request.
    pub async fn call(&self, endpoint: &Endpoint, requests: &Requests) -> CallReport {
        let started = Instant::now();
        let target = &endpoint.name;
        let Some(body) = requests.body(endpoint.body) else {
            // `requests` came from `self.requests`, which builds every shape
            // a target takes; this is a bug, reported rather than panicking.
            return CallReport {
                outcome: CallOutcome::Failed(CallFailure {
                    kind: FailureKind::Transient,
                    attempts: 0,
                    last_error: "internal error: request body not built".into(),
                }),
                elapsed: started.elapsed(),
            };
        };
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            if let Some(limiter) = &endpoint.limiter {
                limiter.acquire().await;
            }
            let attempt_started = Instant::now();
            // OpenTelemetry: a span per attempt (disabled when off).
            let span = crate::otel::attempt_span(target.as_str(), &endpoint.url, attempt);
            let result = self
                .attempt(endpoint, &requests.headers, &body, &span, attempt_started)
                .await;
            drop(span);
            let took = attempt_started.elapsed();
            let (kind, error, retry_after) = match result {
                Ok(()) => {
                    endpoint
                        .metrics
                        .record_attempt(AttemptResult::Success, took);
                    break CallOutcome::Succeeded { attempts: attempt };
                }
                Err(failure) => failure,
            };
            let label = match kind {
                FailureKind::Transient => AttemptResult::TransientError,
                FailureKind::Permanent => AttemptResult::PermanentError,
            };
            endpoint.metrics.record_attempt(label, took);
            warn!(%target, attempt, max_attempts = self.max_attempts, error = %error, "API attempt failed");
            if kind == FailureKind::Permanent || attempt >= self.max_attempts {
                break CallOutcome::Failed(CallFailure {
                    kind,
                    attempts: attempt,
                    last_error: error,
                });
            }
            let backoff = self.backoff.delay(attempt, &mut rand::rng());
            tokio::time::sleep(backoff.max(retry_after.unwrap_or_default())).await;
        };
        CallReport {
            outcome,
            elapsed: started.elapsed(),
        }
    }

    /// The POST of one attempt: the message's headers (shared by every
    /// target) plus the target's ready-made URI and Authorization.
    fn request(
        endpoint: &Endpoint,
        headers: &HeaderMap,
        body: RequestBody,
        span: &tracing::Span,
    ) -> http::Request<RequestBody> {
        let mut request = http::Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = endpoint.uri.clone();
        let request_headers = request.headers_mut();
        request_headers.clone_from(headers);
        request_headers.insert(USER_AGENT, USER_AGENT_VALUE.clone());
        request_headers.insert(ACCEPT, ACCEPT_ANY.clone());
        if let Some(auth) = &endpoint.authorization {
            request_headers.insert(AUTHORIZATION, auth.clone());
        }
        if let Some(auth) = &endpoint.proxy_authorization {
            request_headers.insert(PROXY_AUTHORIZATION, auth.clone());
        }
        // With OpenTelemetry on, the API gets the attempt's span as its parent
        // instead of the message's traceparent.
        crate::otel::inject(span, request_headers);
        request
    }

    /// One HTTP attempt, bounded by the timeout from connecting to the
    /// response head; its status decides the outcome. A request that met a
    /// pooled connection the server had closed is sent once more, on a new
    /// connection, within the same attempt. A redirect is never followed: a 3xx is a
    /// permanent failure (classify_status), since following one would turn
    /// the POST into a bodiless GET elsewhere whose 200 would ack a message
    /// the API never received. On failure: its kind, a short description,
    /// and the wait a `Retry-After` header asked for.
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        headers: &HeaderMap,
        body: &RequestBody,
        span: &tracing::Span,
        started: Instant,
    ) -> Result<(), (FailureKind, String, Option<Duration>)> {
        // One timer for the whole attempt: it bounds connect → response head,
        // then is re-armed for the body (fewer timer registrations per call).
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let exchange = async {
            let request = Self::request(endpoint, headers, body.clone(), span);
            match self.transport.send(request).await {
                Err(e) if transport::closed_while_pooled(&e, started) => {
                    // Once per attempt, and not an attempt: the server only
                    // closed an idle keep-alive connection.
                    debug!(target = %endpoint.name, error = %scrub(describe(&e), &endpoint.url),
                        "the API had closed a pooled connection; sending again on a new one");
                    let request = Self::request(endpoint, headers, body.clone(), span);
                    self.transport.send_fresh(request).await
                }
                sent => sent,
            }
        };
        let sent = tokio::select! {
            biased;
            sent = exchange => sent,
            () = &mut deadline => {
                let text = timed_out(self.timeout);
                crate::otel::record_error(span, "timeout", &text);
                return Err((FailureKind::Transient, text, None));
            }
        };
        let response = sent.map_err(|e| {
            let text = scrub(describe(&e), &endpoint.url);
            crate::otel::record_error(span, error_type(&e), &text);
            (FailureKind::Transient, text, None)
        })?;
        let status = response.status().as_u16();
        crate::otel::record_status(span, status);
        let retry_after = if classify::honours_retry_after(status) {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| classify::parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };
        // The status line decides (contract): whatever the body does next
        // cannot turn a 2xx into a retry, which would POST an accepted
        // message again, nor a 503 into a timeout that loses its Retry-After.
        let verdict = classify::classify_status(status);
        let cap = if verdict.is_none() {
            SUCCESS_BODY_CAP
        } else {
            ERROR_BODY_CAP
        };
        // The body's content is not used; it is read, on its own short
        // deadline, only so that a connection whose body ends can go back to
        // the pool. A body cut off (cap, deadline, error) closes its
        // connection when dropped.
        deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + self.timeout.min(BODY_READ_TIMEOUT));
        let mut body = response.into_body();
        tokio::select! {
            biased;
            _ = discard_body(&mut body, cap) => {}
            () = &mut deadline => {}
        }
        match verdict {
            None => Ok(()),
            Some(kind) => Err((kind, format!("HTTP {status}"), retry_after)),
        }
    }
}

#[cfg(test)]
mod tests;
