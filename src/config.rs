//! Settings from the environment (`BRIDGE_*`), validated before anything
//! connects.
//!
//! Two steps, like ripgrep's low/high args: [`RawConfig`] holds the strings as
//! envy found them (every field optional, so envy itself cannot fail with a
//! message that lacks our prefix), then each setting is parsed by one helper
//! that names the variable. Every bad variable is reported, not just the first.
//!
//! The per-target variables (`BRIDGE_TARGET_<N>_*`) are named by
//! `BRIDGE_TARGETS`, so they are kept as raw pairs and read in `targets`.
//! No error message echoes a token or the credentials of a URL.

mod targets;

use std::{
    collections::BTreeMap, fmt, net::SocketAddr, num::NonZeroU32, str::FromStr, time::Duration,
};

use lapin::uri::AMQPUri;
use serde::Deserialize;
pub use targets::{redacted_url, TargetConfig, DEFAULT_TARGETS, MAX_RATE_LIMIT};

pub const PREFIX: &str = "BRIDGE_";

/// The heartbeat used when `BRIDGE_AMQP_URL` does not set one: a dead broker is
/// noticed within seconds rather than at the next TCP timeout.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// The environment as strings, before validation.
#[derive(Clone, Default, Deserialize)]
pub struct RawConfig {
    amqp_url: Option<String>,
    queue: Option<String>,
    dlq: Option<String>,
    queue_type: Option<String>,
    targets: Option<String>,
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
    /// The per-target variables (`BRIDGE_TARGET_<N>_*`, `BRIDGE_USER_API_*`,
    /// `BRIDGE_LOG_API_*`) by full name: their names depend on
    /// `BRIDGE_TARGETS`, so envy cannot map them to fields.
    #[serde(skip)]
    target_vars: BTreeMap<String, String>,
}

impl fmt::Debug for RawConfig {
    /// Names only: the values hold tokens and URL passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConfig")
            .field("target_variables", &self.target_vars.keys())
            .finish_non_exhaustive()
    }
}

impl RawConfig {
    /// Reads `BRIDGE_*` from the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// The same settings with the two default targets at other URLs (the
    /// `demo` points the worker at its stand-ins); other target settings are
    /// dropped, since the demo has exactly those two.
    pub fn with_api_urls(&self, user: String, log: String) -> RawConfig {
        let mut target_vars = BTreeMap::new();
        target_vars.insert(format!("{PREFIX}USER_API_URL"), user);
        target_vars.insert(format!("{PREFIX}LOG_API_URL"), log);
        RawConfig {
            targets: None,
            target_vars,
            ..self.clone()
        }
    }

    /// Reads `BRIDGE_*` from any list of pairs (tests never touch the process
    /// environment).
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        // A later pair overrides an earlier one, as in a shell; envy would
        // reject the duplicate field instead.
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let target_vars = vars
            .iter()
            .filter(|(k, _)| targets::is_target_variable(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Every field is an Option<String> and keys are unique, so
        // deserialisation cannot fail.
        let raw: RawConfig = envy::prefixed(PREFIX).from_iter(vars).unwrap_or_default();
        RawConfig { target_vars, ..raw }
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

impl AmqpUri {
    /// `host:port`, the name of this node in logs and metrics (no
    /// credentials).
    pub fn node(&self) -> String {
        format!("{}:{}", self.0.authority.host, self.0.authority.port)
    }
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub broker: BrokerConfig,
    /// Every message goes to each of these, in this order (headers and logs
    /// list targets in it).
    pub targets: Vec<TargetConfig>,
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

/// The longest `BRIDGE_HTTP_TIMEOUT_MS`: beyond ten minutes an attempt is a
/// hung connection, not a slow API.
pub const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The longest first backoff: the wait between attempts is capped at 30 s
/// anyway, so a larger first one could not be honoured.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);
/// The longest outage pause and shutdown grace: one day. Far beyond any
/// useful value, and far below what a deadline (`Instant` + duration) can
/// hold.
pub const MAX_PAUSE: Duration = Duration::from_secs(24 * 60 * 60);

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
        Some(s) => parse(s).map_err(|why| invalid(&format!("{PREFIX}{name}"), s, &why)),
    }
}

/// `VAR="value" is not valid: why`, with any credentials of a URL value
/// (and their echo in `why`) replaced by `***`.
fn invalid(variable: &str, value: &str, why: &str) -> String {
    let mut text = format!("{variable}={value:?} is not valid: {why}");
    if variable.ends_with("URL") {
        for secret in url_credentials(value) {
            let escaped: String = secret.escape_debug().collect();
            text = text.replace(secret, "***").replace(&escaped, "***");
        }
    }
    text
}

/// The userinfo parts (`user:password`, and the password alone) of each
/// comma-separated URL in `value`, found textually so that even a URL the
/// parser refuses is redacted. Errs towards hiding too much.
fn url_credentials(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let rest = match item.find("://") {
            Some(i) => &item[i + 3..],
            None => item.split_once(':').map_or(item, |(_, r)| r),
        };
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        if let Some((userinfo, _)) = rest.rsplit_once('@') {
            let userinfo = userinfo.trim_start_matches('/');
            if let Some((_, password)) = userinfo.split_once(':') {
                out.push(password);
            }
            out.push(userinfo);
        }
    }
    // Longest first, so a password inside the whole userinfo goes with it.
    out.retain(|s| !s.is_empty());
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

fn number<T: FromStr>(s: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    s.parse::<T>().map_err(|e| e.to_string())
}

/// A duration in milliseconds within `min..=max`.
fn millis_within(min: Duration, max: Duration) -> impl Fn(&str) -> Result<Duration, String> {
    move |s| {
        let d = Duration::from_millis(number::<u64>(s).map_err(|e| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                format!("must be at most {}", max.as_millis())
            } else {
                e
            }
        })?);
        if d < min {
            Err(format!("must be at least {}", min.as_millis()))
        } else if d > max {
            Err(format!("must be at most {}", max.as_millis()))
        } else {
            Ok(d)
        }
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

/// `BRIDGE_AMQP_URL`, quoted in errors with its passwords redacted (by
/// [`parse_or`]).
fn amqp_setting(value: &Option<String>) -> Result<Vec<AmqpUri>, String> {
    let default = amqp_uris("amqp://guest:guest@127.0.0.1:5672/%2f")?;
    parse_or("AMQP_URL", value, default, amqp_uris)
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
        let tls = self.tls(p);
        let (nodes, queue, dlq) = (nodes?, queue?, dlq?);
        if queue == dlq {
            p.0.push(format!(
                "{PREFIX}DLQ={dlq:?} is not valid: it must differ from {PREFIX}QUEUE (dead letters would be consumed again)"
            ));
            return None;
        }
        Some(BrokerConfig {
            uri: nodes.first()?.clone(),
            nodes,
            queue,
            dlq,
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
        let targets = self.targets(&mut p);
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
            millis_within(Duration::from_millis(1), MAX_HTTP_TIMEOUT),
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
            millis_within(Duration::ZERO, MAX_RETRY_BACKOFF),
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
            millis_within(Duration::ZERO, MAX_PAUSE),
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
            millis_within(Duration::ZERO, MAX_PAUSE),
        ));
        p.check(self.log_format().map_err(|e| e.problems.join("; ")));
        p.finish()?;
        // Every None above pushed a problem, so finish() returned first.
        let incomplete = || ConfigError {
            problems: vec!["settings are incomplete".into()],
        };
        Ok(WorkerConfig {
            broker: broker.ok_or_else(incomplete)?,
            targets: targets.ok_or_else(incomplete)?,
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
    use crate::domain::BodyShape;

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
        let names: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["user-management", "logging"]);
        assert_eq!(c.targets[0].body, BodyShape::Raw);
        assert_eq!(c.targets[1].body, BodyShape::Envelope);
        assert_eq!(c.targets[0].url.as_str(), "http://127.0.0.1:1/users");
        assert!(c
            .targets
            .iter()
            .all(|t| t.token.is_none() && t.rate_limit.is_none()));
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
            ("BRIDGE_LOG_API_RATE_LIMIT", "100001"),
            ("BRIDGE_LOG_API_TOKEN", "a\u{7f}b"),
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
        assert_eq!(c.targets[0].token.as_ref().unwrap().expose(), "s3cret");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("pw"),
            "{debug}"
        );
        assert_eq!(c.broker.uri.0.query.heartbeat, Some(3));
        assert_eq!(c.broker.queue_type, QueueType::Quorum);
    }

    fn problems(pairs: &[(&str, &str)]) -> String {
        raw(pairs).worker_config().unwrap_err().to_string()
    }

    #[test]
    fn any_number_of_targets_with_their_own_settings() {
        let c = raw(&[
            ("BRIDGE_TARGETS", " crm , audit-2,logging"),
            ("BRIDGE_TARGET_CRM_URL", "https://crm.example/hook"),
            ("BRIDGE_TARGET_CRM_TOKEN", "crm-token"),
            ("BRIDGE_TARGET_CRM_RATE_LIMIT", "5"),
            ("BRIDGE_TARGET_AUDIT_2_URL", "http://audit/x"),
            ("BRIDGE_TARGET_AUDIT_2_BODY", "envelope"),
            ("BRIDGE_LOG_API_URL", "http://logs/x"),
            ("BRIDGE_TARGET_LOGGING_BODY", "raw"),
        ])
        .worker_config()
        .unwrap();
        let t = &c.targets;
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].name.as_str(), "crm");
        assert_eq!(t[0].token.as_ref().unwrap().expose(), "crm-token");
        assert_eq!(t[0].rate_limit.unwrap().get(), 5);
        assert_eq!(t[0].body, BodyShape::Raw, "_BODY defaults to raw");
        assert_eq!(t[1].name.as_str(), "audit-2");
        assert_eq!(t[1].body, BodyShape::Envelope);
        assert_eq!(
            t[2].body,
            BodyShape::Raw,
            "_BODY overrides the default shape"
        );
        assert_eq!(t[2].url.as_str(), "http://logs/x");
    }

    #[test]
    fn default_targets_take_either_spelling_but_not_both() {
        let c = raw(&[
            ("BRIDGE_TARGET_USER_MANAGEMENT_URL", "http://u/x"),
            ("BRIDGE_LOG_API_URL", "http://l/x"),
            ("BRIDGE_TARGET_LOGGING_TOKEN", "t"),
        ])
        .worker_config()
        .unwrap();
        assert_eq!(c.targets[0].url.as_str(), "http://u/x");
        assert_eq!(c.targets[1].token.as_ref().unwrap().expose(), "t");

        for (old, new) in [
            ("BRIDGE_USER_API_URL", "BRIDGE_TARGET_USER_MANAGEMENT_URL"),
            ("BRIDGE_LOG_API_URL", "BRIDGE_TARGET_LOGGING_URL"),
            (
                "BRIDGE_USER_API_TOKEN",
                "BRIDGE_TARGET_USER_MANAGEMENT_TOKEN",
            ),
            (
                "BRIDGE_LOG_API_RATE_LIMIT",
                "BRIDGE_TARGET_LOGGING_RATE_LIMIT",
            ),
        ] {
            let mut pairs = URLS.to_vec();
            pairs.extend([(old, "http://a/b"), (new, "http://a/b")]);
            let e = problems(&pairs);
            assert!(e.contains(old) && e.contains(new), "{e}");
            assert!(e.contains("both set"), "{e}");
        }
    }

    #[test]
    fn bad_target_lists_are_named() {
        for list in ["Billing", "crm,crm", "crm,,logging", "a_b", "crm,"] {
            let e = problems(&[
                ("BRIDGE_TARGETS", list),
                ("BRIDGE_TARGET_CRM_URL", "http://c/"),
            ]);
            assert!(e.contains("BRIDGE_TARGETS"), "{list}: {e}");
        }
        assert!(problems(&[("BRIDGE_TARGETS", "crm,crm")]).contains("listed twice"));
        let e = problems(&[("BRIDGE_TARGETS", "crm")]);
        assert!(e.contains("BRIDGE_TARGET_CRM_URL is required"), "{e}");
        let e = problems(&[
            ("BRIDGE_TARGETS", "crm"),
            ("BRIDGE_TARGET_CRM_URL", "http://c/"),
            ("BRIDGE_TARGET_CRM_BODY", "json"),
            ("BRIDGE_TARGET_CRM_RATE_LIMIT", "4294967296"),
        ]);
        assert!(e.contains("BRIDGE_TARGET_CRM_BODY"), "{e}");
        assert!(e.contains("BRIDGE_TARGET_CRM_RATE_LIMIT"), "{e}");
    }

    #[test]
    fn unlisted_targets_settings_are_not_required() {
        let c = raw(&[
            ("BRIDGE_TARGETS", "solo"),
            ("BRIDGE_TARGET_SOLO_URL", "http://s/"),
        ])
        .worker_config()
        .unwrap();
        assert_eq!(c.targets.len(), 1);
    }

    #[test]
    fn a_token_that_is_no_header_value_is_named_not_shown() {
        for (var, token) in [
            ("BRIDGE_USER_API_TOKEN", "abc\ndef-secret"),
            ("BRIDGE_TARGET_LOGGING_TOKEN", "x\r\nInjected: secret"),
            ("BRIDGE_USER_API_TOKEN", "nul\0secret"),
        ] {
            let mut pairs = URLS.to_vec();
            pairs.push((var, token));
            let e = problems(&pairs);
            assert!(e.contains(var), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn url_credentials_never_appear_in_errors_or_debug() {
        let cases = [
            ("BRIDGE_USER_API_URL", "ftp://user:hunter2@host/x"),
            ("BRIDGE_USER_API_URL", "http://user:hunter2@/x"),
            ("BRIDGE_USER_API_URL", "http://user:hunter2@host:99999/x"),
            ("BRIDGE_AMQP_URL", "amqp://u:hunter2@h/?heartbeat=ten"),
            ("BRIDGE_AMQP_URL", "amqp:u:hunter2@h"),
            ("BRIDGE_AMQP_URL", "http://u:hunter2@h/"),
        ];
        for (var, value) in cases {
            let mut pairs = URLS.to_vec();
            pairs.retain(|(k, _)| *k != var);
            pairs.push((var, value));
            let e = problems(&pairs);
            assert!(e.contains(var), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let c = raw(&[
            ("BRIDGE_USER_API_URL", "http://user:hunter2@host/x"),
            ("BRIDGE_LOG_API_URL", "http://tokenonly@host/x"),
        ])
        .worker_config()
        .unwrap();
        let debug = format!("{c:?} {:?}", raw(&[("BRIDGE_USER_API_TOKEN", "hunter2")]));
        assert!(
            !debug.contains("hunter2") && !debug.contains("tokenonly"),
            "{debug}"
        );
        assert_eq!(c.targets[0].url.password(), Some("hunter2"), "still used");
    }

    #[test]
    fn a_token_and_url_credentials_are_one_too_many() {
        let e = problems(&[
            ("BRIDGE_USER_API_URL", "http://u:hunter2@h/x"),
            ("BRIDGE_USER_API_TOKEN", "tok-secret"),
            URLS[1],
        ]);
        assert!(e.contains("BRIDGE_USER_API_TOKEN") && e.contains("BRIDGE_USER_API_URL"));
        assert!(!e.contains("hunter2") && !e.contains("tok-secret"), "{e}");
    }

    #[test]
    fn the_dlq_must_differ_from_the_queue() {
        let mut pairs = URLS.to_vec();
        pairs.extend([("BRIDGE_QUEUE", "q"), ("BRIDGE_DLQ", "q")]);
        let e = problems(&pairs);
        assert!(
            e.contains("BRIDGE_DLQ") && e.contains("BRIDGE_QUEUE"),
            "{e}"
        );
        let e = raw(&[("BRIDGE_DLQ", "bridge.inbound")])
            .broker_config()
            .unwrap_err();
        assert!(e.to_string().contains("BRIDGE_DLQ"), "{e}");
    }

    #[test]
    fn durations_are_bounded() {
        for (var, bad, good) in [
            ("BRIDGE_OUTAGE_PAUSE_MS", "18446744073709551615", "86400000"),
            ("BRIDGE_OUTAGE_PAUSE_MS", "86400001", "0"),
            (
                "BRIDGE_SHUTDOWN_GRACE_MS",
                "99999999999999999999999",
                "86400000",
            ),
            ("BRIDGE_SHUTDOWN_GRACE_MS", "86400001", "0"),
            ("BRIDGE_HTTP_TIMEOUT_MS", "600001", "600000"),
            ("BRIDGE_HTTP_TIMEOUT_MS", "0", "1"),
            ("BRIDGE_RETRY_BACKOFF_MS", "30001", "30000"),
            ("BRIDGE_RETRY_BACKOFF_MS", "18446744073709551615", "0"),
        ] {
            let mut pairs = URLS.to_vec();
            pairs.push((var, bad));
            let e = problems(&pairs);
            assert!(e.contains(var) && e.contains("at "), "{var}={bad}: {e}");
            pairs.pop();
            pairs.push((var, good));
            assert!(raw(&pairs).worker_config().is_ok(), "{var}={good}");
        }
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
