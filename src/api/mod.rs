//! The two downstream APIs: one shared HTTP client, the requests the contract
//! prescribes, and the per-API retry loop.

pub mod backoff;
pub mod classify;
pub mod rate_limit;

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER,
};
use tracing::warn;

use crate::{
    config::{ApiConfig, WorkerConfig},
    domain::{
        message::is_header_safe, CallFailure, CallOutcome, FailureKind, InboundMessage, Target,
    },
    metrics::{AttemptResult, Metrics},
};
use backoff::Backoff;
use rate_limit::RateLimiter;

/// Longest wait between two attempts, whatever the doubling reaches.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Idle pooled connections are dropped before common servers close theirs
/// (Node.js and Apache: 5 s), so a request rarely meets a connection the server
/// closed while idle; when it does, the error is transient and retried.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

#[derive(Debug)]
struct Endpoint {
    url: reqwest::Url,
    /// `Bearer …`, marked sensitive so hyper never prints it.
    authorization: Option<HeaderValue>,
    limiter: Option<RateLimiter>,
}

/// How one API call went, with the time it took including retries.
#[derive(Clone, Debug)]
pub struct CallReport {
    pub outcome: CallOutcome,
    pub elapsed: Duration,
}

/// One per process: its connection pool serves every delivery task.
#[derive(Debug)]
pub struct ApiClient {
    client: reqwest::Client,
    /// Indexed by `Target as usize`.
    endpoints: [Endpoint; 2],
    max_attempts: u32,
    /// Bounds one attempt, from connecting to the end of the response body.
    timeout: Duration,
    backoff: Backoff,
    metrics: Metrics,
}

/// The bodies and headers of one message's two requests, built once.
#[derive(Clone, Debug)]
pub struct Requests {
    pub headers: HeaderMap,
    /// Indexed by `Target as usize`.
    pub bodies: [Bytes; 2],
}

/// Why a message's properties cannot be sent as HTTP headers.
#[derive(Debug, thiserror::Error)]
#[error(
    "message_id {0:?} contains control characters and cannot be sent as the Idempotency-Key header"
)]
pub struct UnsendableId(pub String);

impl Requests {
    /// Builds both requests of `msg`. `json` is the trimmed JSON text of the
    /// body, `event` the logging event name.
    ///
    /// # Errors
    /// When the message id cannot be an HTTP header value.
    pub fn build(msg: &InboundMessage, json: &[u8], event: &str) -> Result<Requests, UnsendableId> {
        let mut headers = HeaderMap::with_capacity(5);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // from_bytes, not from_str: a non-ASCII id travels as its UTF-8 bytes
        // (obs-text) rather than being refused.
        let key = HeaderValue::from_bytes(msg.message_id.as_str().as_bytes())
            .map_err(|_| UnsendableId(msg.message_id.to_string()))?;
        headers.insert(IDEMPOTENCY_KEY.clone(), key);
        for (name, value) in [
            (&CORRELATION_ID, &msg.correlation_id),
            (&TRACEPARENT, &msg.traceparent),
            (&TRACESTATE, &msg.tracestate),
        ] {
            // These only help tracing; one that cannot be a header is dropped
            // rather than failing the message.
            if let Some(v) = value.as_deref().filter(|v| is_header_safe(v)) {
                if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                    headers.insert(name.clone(), v);
                }
            }
        }
        let log_body = crate::domain::message::log_envelope(event, json, &msg.message_id);
        Ok(Requests {
            headers,
            bodies: [msg.body.clone(), Bytes::from(log_body)],
        })
    }
}

impl ApiClient {
    /// # Errors
    /// When the TLS backend cannot be initialised or a token is not a valid
    /// header value.
    pub fn new(cfg: &WorkerConfig, metrics: Metrics) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            // Both APIs may share a host, each with up to `prefetch` requests
            // in flight: a smaller idle pool closes and reopens connections
            // under load (BENCHMARK.md: 475 → 2 new connections per 1,000
            // messages).
            .pool_max_idle_per_host(usize::from(cfg.prefetch).saturating_mul(2).max(16))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .connect_timeout(cfg.http_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("fanout-bridge/", env!("CARGO_PKG_VERSION")));
        // TLS: the platform's roots, plus BRIDGE_CA_FILE and the client
        // certificate (src/tls.rs).
        let client = cfg.broker.tls.apply(client)?.build()?;
        let endpoint = |api: &ApiConfig, name: &str| -> anyhow::Result<Endpoint> {
            let authorization = match &api.token {
                None => None,
                Some(t) => {
                    let mut v =
                        HeaderValue::from_str(&format!("Bearer {}", t.expose())).map_err(|_| {
                            anyhow::anyhow!("BRIDGE_{name}_API_TOKEN is not a valid header value")
                        })?;
                    v.set_sensitive(true);
                    Some(v)
                }
            };
            Ok(Endpoint {
                url: api.url.clone(),
                authorization,
                limiter: api.rate_limit.map(RateLimiter::per_second),
            })
        };
        Ok(ApiClient {
            client,
            endpoints: [
                endpoint(&cfg.user_api, "USER")?,
                endpoint(&cfg.log_api, "LOG")?,
            ],
            max_attempts: cfg.max_attempts.get(),
            timeout: cfg.http_timeout,
            backoff: Backoff::new(cfg.retry_backoff, BACKOFF_CAP),
            metrics,
        })
    }

    /// Calls `target` until it accepts, fails permanently, or the attempts run
    /// out. The per-attempt timeout is set on the client request.
    pub async fn call(&self, target: Target, requests: &Requests) -> CallReport {
        let started = Instant::now();
        let endpoint = &self.endpoints[target as usize];
        let body = &requests.bodies[target as usize];
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            if let Some(limiter) = &endpoint.limiter {
                limiter.acquire().await;
            }
            let attempt_started = Instant::now();
            // OpenTelemetry: a span per attempt (disabled when off).
            let span = crate::otel::attempt_span(target.as_str(), &endpoint.url, attempt);
            let result = self.attempt(endpoint, &requests.headers, body, &span).await;
            drop(span);
            let took = attempt_started.elapsed();
            let (kind, error, retry_after) = match result {
                Ok(()) => {
                    self.metrics
                        .record_attempt(target, AttemptResult::Success, took);
                    break CallOutcome::Succeeded { attempts: attempt };
                }
                Err(failure) => failure,
            };
            let label = match kind {
                FailureKind::Transient => AttemptResult::TransientError,
                FailureKind::Permanent => AttemptResult::PermanentError,
            };
            self.metrics.record_attempt(target, label, took);
            warn!(%target, attempt, max_attempts = self.max_attempts, error = %error, "API attempt failed");
            if kind == FailureKind::Permanent || attempt >= self.max_attempts {
                break CallOutcome::Failed(CallFailure {
                    kind,
                    attempts: attempt,
                    last_error: error,
                });
            }
            let backoff = self.backoff.delay(attempt, &mut rand::thread_rng());
            tokio::time::sleep(backoff.max(retry_after.unwrap_or_default())).await;
        };
        CallReport {
            outcome,
            elapsed: started.elapsed(),
        }
    }

    /// One HTTP attempt. On failure: its kind, a short description, and the
    /// wait a `Retry-After` header asked for.
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        headers: &HeaderMap,
        body: &Bytes,
        span: &tracing::Span,
    ) -> Result<(), (FailureKind, String, Option<Duration>)> {
        let mut headers = headers.clone();
        // With OpenTelemetry on, the API gets the attempt's span as its parent
        // instead of the message's traceparent.
        crate::otel::inject(span, &mut headers);
        let mut request = self
            .client
            .post(endpoint.url.clone())
            .headers(headers)
            .body(body.clone())
            .timeout(self.timeout);
        if let Some(auth) = &endpoint.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = request.send().await.map_err(|e| {
            let description = describe(&e, self.timeout);
            crate::otel::record_error(span, error_type(&e), &description);
            (FailureKind::Transient, description, None)
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
        // Reading the body to its end returns the connection to the pool; its
        // content is not used, and a broken body does not change the verdict.
        let _ = response.bytes().await;
        match classify::classify_status(status) {
            None => Ok(()),
            Some(kind) => Err((kind, format!("HTTP {status}"), retry_after)),
        }
    }
}

/// The `error.type` of a transport error, for the attempt's span.
fn error_type(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    }
}

/// A short description of a transport error, without the URL (it may carry
/// credentials).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("timed out after {} ms", timeout.as_millis())
    } else if e.is_connect() {
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
        let mut text = String::from("request failed");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MessageId, TargetSet};

    fn message(id: &str, correlation: Option<&str>) -> InboundMessage {
        InboundMessage {
            body: Bytes::from_static(b" {\"a\":1} "),
            message_id: MessageId::resolve(Some(id), b""),
            message_id_from_property: true,
            kind: None,
            correlation_id: correlation.map(str::to_owned),
            traceparent: None,
            tracestate: None,
            done: TargetSet::empty(),
        }
    }

    #[test]
    fn builds_both_requests() {
        let msg = message("id-1", Some("c-1"));
        let r = Requests::build(&msg, b"{\"a\":1}", "user.registered").unwrap();
        assert_eq!(r.headers["idempotency-key"], "id-1");
        assert_eq!(r.headers["x-correlation-id"], "c-1");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(
            &r.bodies[Target::UserManagement as usize][..],
            b" {\"a\":1} "
        );
        assert_eq!(
            &r.bodies[Target::Logging as usize][..],
            br#"{"event":"user.registered","data":{"a":1},"message_id":"id-1"}"#
        );
    }

    #[test]
    fn non_ascii_ids_travel_and_control_characters_are_refused() {
        let msg = message("usér-1", Some("bad\ncorrelation"));
        let r = Requests::build(&msg, b"1", "e").unwrap();
        assert_eq!(r.headers["idempotency-key"].as_bytes(), "usér-1".as_bytes());
        assert!(
            !r.headers.contains_key("x-correlation-id"),
            "an unsendable optional header is dropped"
        );
        assert!(Requests::build(&message("a\r\nb", None), b"1", "e").is_err());
    }
}
