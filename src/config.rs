//! Settings from the environment (`BRIDGE_*`), validated before anything
//! connects.
//!
//! Two steps, like ripgrep's low/high args: [`RawConfig`] holds the strings as
//! envy found them (every field optional, so envy itself cannot fail with a
//! message that lacks our prefix), then each setting is parsed by one helper
//! that names the variable. Every bad variable is reported, not just the first.

use std::{fmt, net::SocketAddr, num::NonZeroU32, str::FromStr, time::Duration};

use lapin::uri::AMQPUri;
use serde::Deserialize;
use url::Url;

pub const PREFIX: &str = "BRIDGE_";

/// The largest AMQP frame proposed when `BRIDGE_AMQP_URL` does not set one.
/// lapin sizes its I/O buffers at 32 frames, two per connection and two
/// connections per worker: at RabbitMQ's 128 KiB that is 16 MiB of RSS, at
/// 16 KiB 2 MiB. Larger messages are split into more frames, which costs
/// nothing measurable (BENCHMARK.md).
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// The heartbeat used when `BRIDGE_AMQP_URL` does not set one: a dead broker is
/// noticed within seconds rather than at the next TCP timeout.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// The environment as strings, before validation.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawConfig {
    amqp_url: Option<String>,
    queue: Option<String>,
    dlq: Option<String>,
    queue_type: Option<String>,
    user_api_url: Option<String>,
    log_api_url: Option<String>,
    user_api_token: Option<String>,
    log_api_token: Option<String>,
    user_api_rate_limit: Option<String>,
    log_api_rate_limit: Option<String>,
    prefetch: Option<String>,
    http_timeout_ms: Option<String>,
    max_attempts: Option<String>,
    retry_backoff_ms: Option<String>,
    outage_policy: Option<String>,
    outage_pause_ms: Option<String>,
    log_event: Option<String>,
    metrics_addr: Option<String>,
    shutdown_grace_ms: Option<String>,
    log_format: Option<String>,
    // TLS (src/tls.rs): BRIDGE_CA_FILE, BRIDGE_TLS_CERT_FILE, BRIDGE_TLS_KEY_FILE.
    ca_file: Option<String>,
    tls_cert_file: Option<String>,
    tls_key_file: Option<String>,
}

impl RawConfig {
    /// Reads `BRIDGE_*` from the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// The same settings with other API URLs (the `demo` points the worker at
    /// its stand-ins).
    pub fn with_api_urls(&self, user: String, log: String) -> RawConfig {
        RawConfig {
            user_api_url: Some(user),
            log_api_url: Some(log),
            ..self.clone()
        }
    }

    /// Reads `BRIDGE_*` from any list of pairs (tests never touch the process
    /// environment).
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        // A later pair overrides an earlier one, as in a shell; envy would
        // reject the duplicate field instead.
        let vars: std::collections::BTreeMap<String, String> = vars.into_iter().collect();
        // Every field is an Option<String> and keys are unique, so
        // deserialisation cannot fail.
        envy::prefixed(PREFIX).from_iter(vars).unwrap_or_default()
    }
}

/// One or more variables were missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration: ")?;
        f.write_str(&self.problems.join("; "))
    }
}

impl std::error::Error for ConfigError {}

/// A string that must not reach a log line: `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutagePolicy {
    DeadLetter,
    Hold,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The broker and its two queues: all that `publish` and `dlq` need.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Parsed URL with the heartbeat defaulted; it holds the password, so it is
    /// kept as a secret and only its host is ever logged.
    pub uri: AmqpUri,
    pub queue: String,
    pub dlq: String,
    pub queue_type: QueueType,
    /// Extra CAs and the client certificate, for `amqps://` and (in `run`)
    /// the HTTPS APIs.
    pub tls: crate::tls::TlsSettings,
}

/// An AMQP URI whose `Debug` hides the credentials.
#[derive(Clone)]
pub struct AmqpUri(pub AMQPUri);

impl fmt::Debug for AmqpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}/{}",
            if self.0.scheme == lapin::uri::AMQPScheme::AMQPS {
                "amqps"
            } else {
                "amqp"
            },
            self.0.authority.host,
            self.0.authority.port,
            self.0.vhost
        )
    }
}

/// One downstream API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub url: Url,
    pub token: Option<Secret>,
    /// At most this many requests in any one-second window.
    pub rate_limit: Option<NonZeroU32>,
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub broker: BrokerConfig,
    pub user_api: ApiConfig,
    pub log_api: ApiConfig,
    pub prefetch: u16,
    pub http_timeout: Duration,
    pub max_attempts: NonZeroU32,
    pub retry_backoff: Duration,
    pub outage_policy: OutagePolicy,
    pub outage_pause: Duration,
    pub log_event: String,
    pub metrics_addr: SocketAddr,
    pub shutdown_grace: Duration,
}

/// Collects problems while parsing, so all of them are reported at once.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check<T>(&mut self, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    fn finish(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: self.0 })
        }
    }
}

/// Empty strings count as unset: `BRIDGE_X=` in a compose file means "not set".
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn parse_or<T>(
    name: &str,
    value: &Option<String>,
    default: T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    match present(value) {
        None => Ok(default),
        Some(s) => parse(s).map_err(|why| format!("{PREFIX}{name}={s:?} is not valid: {why}")),
    }
}

fn number<T: FromStr>(s: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    s.parse::<T>().map_err(|e| e.to_string())
}

fn millis(s: &str) -> Result<Duration, String> {
    number::<u64>(s).map(Duration::from_millis)
}

fn positive_millis(s: &str) -> Result<Duration, String> {
    match number::<u64>(s)? {
        0 => Err("must be at least 1".into()),
        n => Ok(Duration::from_millis(n)),
    }
}

fn at_least_one(s: &str) -> Result<NonZeroU32, String> {
    let n = number::<u32>(s)?;
    NonZeroU32::new(n).ok_or_else(|| "must be at least 1".to_owned())
}

fn one_of<T: Copy>(choices: &'static [(&'static str, T)]) -> impl Fn(&str) -> Result<T, String> {
    move |s| {
        choices
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<_> = choices.iter().map(|(n, _)| *n).collect();
                format!("must be one of {}", names.join(", "))
            })
    }
}

fn amqp_uri(s: &str) -> Result<AmqpUri, String> {
    let mut uri = AMQPUri::from_str(s).map_err(|e| format!("not an AMQP URL ({e})"))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
    }
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(DEFAULT_FRAME_MAX);
    }
    Ok(AmqpUri(uri))
}

fn http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("has no host".into()),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

fn required<T>(
    name: &str,
    value: &Option<String>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    match present(value) {
        None => Err(format!("{PREFIX}{name} is required but not set")),
        Some(s) => parse(s).map_err(|why| format!("{PREFIX}{name}={s:?} is not valid: {why}")),
    }
}

fn queue_name(s: &str) -> Result<String, String> {
    if s.len() > 255 {
        Err("longer than 255 bytes".into())
    } else {
        Ok(s.to_owned())
    }
}

const QUEUE_TYPES: &[(&str, QueueType)] = &[
    ("classic", QueueType::Classic),
    ("quorum", QueueType::Quorum),
];
const OUTAGE_POLICIES: &[(&str, OutagePolicy)] = &[
    ("dead-letter", OutagePolicy::DeadLetter),
    ("hold", OutagePolicy::Hold),
];
const LOG_FORMATS: &[(&str, LogFormat)] = &[("text", LogFormat::Text), ("json", LogFormat::Json)];

impl RawConfig {
    fn broker(&self, p: &mut Problems) -> Option<BrokerConfig> {
        let uri = p.check(parse_or(
            "AMQP_URL",
            &self.amqp_url,
            amqp_uri("amqp://guest:guest@127.0.0.1:5672/%2f").ok()?,
            amqp_uri,
        ));
        let queue = p.check(parse_or(
            "QUEUE",
            &self.queue,
            "bridge.inbound".into(),
            queue_name,
        ));
        let dlq = p.check(parse_or(
            "DLQ",
            &self.dlq,
            "bridge.inbound.dlq".into(),
            queue_name,
        ));
        let queue_type = p.check(parse_or(
            "QUEUE_TYPE",
            &self.queue_type,
            QueueType::Classic,
            one_of(QUEUE_TYPES),
        ));
        let tls = self.tls(p);
        Some(BrokerConfig {
            uri: uri?,
            queue: queue?,
            dlq: dlq?,
            queue_type: queue_type?,
            tls: tls?,
        })
    }

    /// `BRIDGE_CA_FILE`, `BRIDGE_TLS_CERT_FILE`, `BRIDGE_TLS_KEY_FILE`: the
    /// files are read and checked here, before anything connects.
    fn tls(&self, p: &mut Problems) -> Option<crate::tls::TlsSettings> {
        crate::tls::load(
            present(&self.ca_file),
            present(&self.tls_cert_file),
            present(&self.tls_key_file),
        )
        .map_err(|problems| p.0.extend(problems))
        .ok()
    }

    /// The settings of `publish` and `dlq`: only the broker variables are read.
    ///
    /// # Errors
    /// Names every bad `BRIDGE_*` variable.
    pub fn broker_config(&self) -> Result<BrokerConfig, ConfigError> {
        let mut p = Problems::default();
        let broker = self.broker(&mut p);
        p.finish()?;
        broker.ok_or_else(|| ConfigError {
            problems: vec!["broker settings are incomplete".into()],
        })
    }

    /// `BRIDGE_LOG_FORMAT`, needed before logging starts.
    ///
    /// # Errors
    /// Names the variable when its value is not `text` or `json`.
    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        parse_or(
            "LOG_FORMAT",
            &self.log_format,
            LogFormat::Text,
            one_of(LOG_FORMATS),
        )
        .map_err(|e| ConfigError { problems: vec![e] })
    }

    /// The settings of `run`.
    ///
    /// # Errors
    /// Names every missing or bad `BRIDGE_*` variable.
    pub fn worker_config(&self) -> Result<WorkerConfig, ConfigError> {
        let mut p = Problems::default();
        let broker = self.broker(&mut p);
        let user_url = p.check(required("USER_API_URL", &self.user_api_url, http_url));
        let log_url = p.check(required("LOG_API_URL", &self.log_api_url, http_url));
        let user_rate = p.check(parse_or(
            "USER_API_RATE_LIMIT",
            &self.user_api_rate_limit,
            None,
            |s| at_least_one(s).map(Some),
        ));
        let log_rate = p.check(parse_or(
            "LOG_API_RATE_LIMIT",
            &self.log_api_rate_limit,
            None,
            |s| at_least_one(s).map(Some),
        ));
        let prefetch = p.check(parse_or("PREFETCH", &self.prefetch, 64, |s| {
            match number::<u16>(s) {
                Ok(0) => Err("must be at least 1".into()),
                Ok(n) => Ok(n),
                Err(_) if number::<u64>(s).is_ok() => Err("must be at most 65535".into()),
                Err(e) => Err(e),
            }
        }));
        let http_timeout = p.check(parse_or(
            "HTTP_TIMEOUT_MS",
            &self.http_timeout_ms,
            Duration::from_millis(10_000),
            positive_millis,
        ));
        let max_attempts = p.check(parse_or(
            "MAX_ATTEMPTS",
            &self.max_attempts,
            NonZeroU32::MIN.saturating_add(2),
            at_least_one,
        ));
        let retry_backoff = p.check(parse_or(
            "RETRY_BACKOFF_MS",
            &self.retry_backoff_ms,
            Duration::from_millis(200),
            millis,
        ));
        let outage_policy = p.check(parse_or(
            "OUTAGE_POLICY",
            &self.outage_policy,
            OutagePolicy::DeadLetter,
            one_of(OUTAGE_POLICIES),
        ));
        let outage_pause = p.check(parse_or(
            "OUTAGE_PAUSE_MS",
            &self.outage_pause_ms,
            Duration::from_millis(5_000),
            millis,
        ));
        let log_event = self
            .log_event
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "user.registered".into());
        let metrics_addr = p.check(parse_or(
            "METRICS_ADDR",
            &self.metrics_addr,
            SocketAddr::from(([0, 0, 0, 0], 9464)),
            number::<SocketAddr>,
        ));
        let shutdown_grace = p.check(parse_or(
            "SHUTDOWN_GRACE_MS",
            &self.shutdown_grace_ms,
            Duration::from_millis(30_000),
            millis,
        ));
        p.check(self.log_format().map_err(|e| e.problems.join("; ")));
        let token = |v: &Option<String>| present(v).map(Secret::new);
        p.finish()?;
        let incomplete = || ConfigError {
            problems: vec!["settings are incomplete".into()],
        };
        Ok(WorkerConfig {
            broker: broker.ok_or_else(incomplete)?,
            user_api: ApiConfig {
                url: user_url.ok_or_else(incomplete)?,
                token: token(&self.user_api_token),
                rate_limit: user_rate.ok_or_else(incomplete)?,
            },
            log_api: ApiConfig {
                url: log_url.ok_or_else(incomplete)?,
                token: token(&self.log_api_token),
                rate_limit: log_rate.ok_or_else(incomplete)?,
            },
            prefetch: prefetch.ok_or_else(incomplete)?,
            http_timeout: http_timeout.ok_or_else(incomplete)?,
            max_attempts: max_attempts.ok_or_else(incomplete)?,
            retry_backoff: retry_backoff.ok_or_else(incomplete)?,
            outage_policy: outage_policy.ok_or_else(incomplete)?,
            outage_pause: outage_pause.ok_or_else(incomplete)?,
            log_event,
            metrics_addr: metrics_addr.ok_or_else(incomplete)?,
            shutdown_grace: shutdown_grace.ok_or_else(incomplete)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawConfig {
        RawConfig::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    const URLS: [(&str, &str); 2] = [
        ("BRIDGE_USER_API_URL", "http://127.0.0.1:1/users"),
        ("BRIDGE_LOG_API_URL", "https://logs.example/logs"),
    ];

    #[test]
    fn defaults_match_the_contract() {
        let c = raw(&URLS).worker_config().unwrap();
        assert_eq!(c.broker.queue, "bridge.inbound");
        assert_eq!(c.broker.dlq, "bridge.inbound.dlq");
        assert_eq!(c.broker.queue_type, QueueType::Classic);
        assert_eq!(c.broker.uri.0.authority.host, "127.0.0.1");
        assert_eq!(c.broker.uri.0.authority.port, 5672);
        assert_eq!(c.broker.uri.0.vhost, "/");
        assert_eq!(c.broker.uri.0.query.heartbeat, Some(10));
        assert_eq!(c.broker.uri.0.query.frame_max, Some(16 * 1024));
        assert_eq!(c.prefetch, 64);
        assert_eq!(c.http_timeout, Duration::from_secs(10));
        assert_eq!(c.max_attempts.get(), 3);
        assert_eq!(c.retry_backoff, Duration::from_millis(200));
        assert_eq!(c.outage_policy, OutagePolicy::DeadLetter);
        assert_eq!(c.outage_pause, Duration::from_secs(5));
        assert_eq!(c.log_event, "user.registered");
        assert_eq!(c.metrics_addr.to_string(), "0.0.0.0:9464");
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert!(c.user_api.token.is_none() && c.user_api.rate_limit.is_none());
        assert_eq!(raw(&[]).log_format().unwrap(), LogFormat::Text);
    }

    #[test]
    fn missing_urls_are_named() {
        let e = raw(&[]).worker_config().unwrap_err().to_string();
        assert!(e.contains("BRIDGE_USER_API_URL"), "{e}");
        assert!(e.contains("BRIDGE_LOG_API_URL"), "{e}");
    }

    #[test]
    fn every_bad_value_is_named() {
        let cases = [
            ("BRIDGE_PREFETCH", "0"),
            ("BRIDGE_PREFETCH", "abc"),
            ("BRIDGE_PREFETCH", "70000"),
            ("BRIDGE_MAX_ATTEMPTS", "0"),
            ("BRIDGE_HTTP_TIMEOUT_MS", "-5"),
            ("BRIDGE_RETRY_BACKOFF_MS", "soon"),
            ("BRIDGE_OUTAGE_POLICY", "retry"),
            ("BRIDGE_QUEUE_TYPE", "stream"),
            ("BRIDGE_LOG_FORMAT", "xml"),
            ("BRIDGE_METRICS_ADDR", "nowhere"),
            ("BRIDGE_AMQP_URL", "http://x"),
            ("BRIDGE_USER_API_URL", "not a url"),
            ("BRIDGE_LOG_API_URL", "ftp://x/y"),
            ("BRIDGE_USER_API_RATE_LIMIT", "0"),
            ("BRIDGE_OUTAGE_PAUSE_MS", "1.5"),
            ("BRIDGE_SHUTDOWN_GRACE_MS", "x"),
        ];
        for (name, value) in cases {
            let mut pairs = URLS.to_vec();
            pairs.retain(|(k, _)| *k != name);
            pairs.push((name, value));
            let e = raw(&pairs).worker_config().unwrap_err().to_string();
            assert!(e.contains(name), "{name}={value}: {e}");
        }
    }

    #[test]
    fn all_problems_reported_together() {
        let e = raw(&[("BRIDGE_PREFETCH", "0"), ("BRIDGE_MAX_ATTEMPTS", "x")])
            .worker_config()
            .unwrap_err();
        assert_eq!(e.problems.len(), 4, "{e}");
    }

    #[test]
    fn tokens_are_redacted_and_heartbeat_kept_when_set() {
        let mut pairs = URLS.to_vec();
        pairs.push(("BRIDGE_USER_API_TOKEN", "s3cret"));
        pairs.push(("BRIDGE_AMQP_URL", "amqps://u:pw@broker:5671/v?heartbeat=3"));
        pairs.push(("BRIDGE_QUEUE_TYPE", "quorum"));
        let c = raw(&pairs).worker_config().unwrap();
        assert_eq!(c.user_api.token.as_ref().unwrap().expose(), "s3cret");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("pw"),
            "{debug}"
        );
        assert_eq!(c.broker.uri.0.query.heartbeat, Some(3));
        assert_eq!(c.broker.queue_type, QueueType::Quorum);
    }

    #[test]
    fn later_values_override_earlier_ones() {
        let c = raw(&[
            URLS[0],
            URLS[1],
            ("BRIDGE_PREFETCH", "5"),
            ("BRIDGE_PREFETCH", "7"),
        ])
        .worker_config()
        .unwrap();
        assert_eq!(c.prefetch, 7);
    }

    #[test]
    fn broker_config_does_not_need_api_urls() {
        assert!(raw(&[]).broker_config().is_ok());
        let e = raw(&[("BRIDGE_QUEUE_TYPE", "x")])
            .broker_config()
            .unwrap_err();
        assert!(e.to_string().contains("BRIDGE_QUEUE_TYPE"));
    }

    #[test]
    fn tls_files_are_checked_for_every_command() {
        let mut pairs = URLS.to_vec();
        pairs.push(("BRIDGE_CA_FILE", "/nonexistent/ca.pem"));
        pairs.push(("BRIDGE_TLS_KEY_FILE", "/nonexistent/client.key"));
        let e = raw(&pairs).worker_config().unwrap_err().to_string();
        assert!(
            e.contains("BRIDGE_CA_FILE") && e.contains("BRIDGE_TLS_CERT_FILE"),
            "{e}"
        );
        let e = raw(&pairs[2..]).broker_config().unwrap_err().to_string();
        assert!(e.contains("BRIDGE_CA_FILE"), "{e}");
        assert!(raw(&URLS).worker_config().unwrap().broker.tls.is_default());
    }
}
