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
    /// kept as a secret and only its host is ever logged. The first of
    /// `nodes`, for code that needs one URL (its scheme, its TLS settings).
    pub uri: AmqpUri,
    /// Every node of `BRIDGE_AMQP_URL` (one or more, in the given order);
    /// connections start at a random one and move on to the next.
    pub nodes: Vec<AmqpUri>,
    pub queue: String,
    pub dlq: String,
    pub queue_type: QueueType,
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

impl AmqpUri {
    /// `host:port`, the name of this node in logs and metrics (no
    /// credentials).
    pub fn node(&self) -> String {
        format!("{}:{}", self.0.authority.host, self.0.authority.port)
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
    // No frame_max unless the URL sets one: lapin then takes the broker's
    // (RabbitMQ: 128 KiB). A smaller one breaks on big headers, because a
    // header frame is never split: lapin closes the connection on it and the
    // message is redelivered forever.
    Ok(AmqpUri(uri))
}

/// `BRIDGE_AMQP_URL`: one URL, or a comma-separated list of the nodes of one
/// cluster.
fn amqp_uris(s: &str) -> Result<Vec<AmqpUri>, String> {
    let mut nodes = Vec::new();
    for (i, part) in s.split(',').map(str::trim).enumerate() {
        if part.is_empty() {
            return Err(format!("URL number {} of the list is empty", i + 1));
        }
        nodes.push(amqp_uri(part)?);
    }
    Ok(nodes)
}

/// The passwords inside an AMQP URL list (for scrubbing error texts).
fn amqp_passwords(s: &str) -> Vec<&str> {
    s.split(',')
        .filter_map(|part| {
            let rest = &part[part.find("://")? + 3..];
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            let userinfo = &authority[..authority.rfind('@')?];
            let password = &userinfo[userinfo.find(':')? + 1..];
            (!password.is_empty()).then_some(password)
        })
        .collect()
}

/// `s` with every password of the AMQP URL list `raw` replaced by `***`:
/// configuration errors quote the value, and must never print a password.
fn redact_amqp(s: &str, raw: &str) -> String {
    let mut passwords = amqp_passwords(raw);
    // Longest first, so a password containing another is replaced whole.
    passwords.sort_by_key(|p| std::cmp::Reverse(p.len()));
    passwords
        .into_iter()
        .fold(s.to_owned(), |out, p| out.replace(p, "***"))
}

/// [`parse_or`] for `BRIDGE_AMQP_URL`, whose value and parse errors are
/// quoted with the passwords redacted.
fn amqp_setting(value: &Option<String>) -> Result<Vec<AmqpUri>, String> {
    match present(value) {
        None => amqp_uris("amqp://guest:guest@127.0.0.1:5672/%2f"),
        Some(s) => amqp_uris(s)
            .map_err(|why| redact_amqp(&format!("{PREFIX}AMQP_URL={s:?} is not valid: {why}"), s)),
    }
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
        let nodes = p.check(amqp_setting(&self.amqp_url));
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
        let nodes = nodes?;
        Some(BrokerConfig {
            uri: nodes.first()?.clone(),
            nodes,
            queue: queue?,
            dlq: dlq?,
            queue_type: queue_type?,
        })
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
        assert_eq!(c.broker.uri.0.query.frame_max, None, "the broker's");
        assert_eq!(c.broker.nodes.len(), 1);
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
    fn amqp_url_lists_and_redaction() {
        let c = raw(&[(
            "BRIDGE_AMQP_URL",
            "amqp://u:p1@a:5681/%2f, amqp://u:p2@b:5682/%2f?frame_max=65536",
        )])
        .broker_config()
        .unwrap();
        let nodes: Vec<_> = c.nodes.iter().map(AmqpUri::node).collect();
        assert_eq!(nodes, ["a:5681", "b:5682"]);
        assert_eq!(c.nodes[1].0.query.frame_max, Some(65536));
        assert_eq!(c.nodes[1].0.query.heartbeat, Some(10));
        for bad in [
            "amqp://u:secret@h/?heartbeat=ten",
            "amqp://guest:guest@h/,amqp://u:secret@h2/?frame_max=x",
            "amqp://u:secret@h/,",
            "http://u:secret@h/",
        ] {
            let e = raw(&[("BRIDGE_AMQP_URL", bad)])
                .broker_config()
                .unwrap_err()
                .to_string();
            assert!(e.contains("BRIDGE_AMQP_URL"), "{e}");
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
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
}
