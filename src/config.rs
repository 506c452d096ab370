//! Settings from the environment (`BRIDGE_*`), validated before anything
//! connects.
//!
//! One table ([`table`]) holds every setting: its name, default, meaning and
//! parser (with its bounds). [`RawConfig`] keeps the `BRIDGE_*` strings as
//! found; each setting is read through its row, so every error names the
//! variable, and every bad variable is reported, not just the first: a value
//! is a `Result` whose error carries its messages, and [`all_ok!`] gathers
//! the errors of all of them before a config is built.
//!
//! The per-target variables (`BRIDGE_TARGET_<N>_*`) are named by
//! `BRIDGE_TARGETS` and read in `targets`. No error message echoes a token or
//! the credentials of a URL.

mod parse;
pub mod proxy;
pub mod table;
mod targets;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt, net::SocketAddr, num::NonZeroU32, time::Duration};

use lapin::uri::AMQPUri;
pub use parse::{MAX_HTTP_TIMEOUT, MAX_PAUSE, MAX_RATE_LIMIT, MAX_RETRY_BACKOFF};
pub use proxy::ProxyConfig;
pub use table::DEFAULT_TARGETS;
pub use targets::{redacted_url, TargetConfig};

pub const PREFIX: &str = "BRIDGE_";

/// The heartbeat used when `BRIDGE_AMQP_URL` does not set one: a dead broker is
/// noticed within seconds rather than at the next TCP timeout.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// Rebinds each named `Result<T, ConfigError>` to its `T`, or returns one
/// error with the problems of all that failed (in the order named).
macro_rules! all_ok {
    ($($value:ident),+ $(,)?) => {
        let ($($value,)+) = match ($($value,)+) {
            ($(Ok($value),)+) => ($($value,)+),
            ($($value,)+) => {
                let mut problems = Vec::new();
                $(if let Err(e) = $value {
                    problems.extend(e.problems);
                })+
                return Err($crate::config::ConfigError { problems });
            }
        };
    };
}
use all_ok;

/// The `BRIDGE_*` variables as strings, before validation, and the proxy
/// variables ([`proxy::VARIABLES`]).
#[derive(Clone, Default)]
pub struct RawConfig {
    vars: BTreeMap<String, String>,
    proxy_vars: BTreeMap<String, String>,
}

impl fmt::Debug for RawConfig {
    /// Names only: the values hold tokens and URL passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConfig")
            .field("variables", &self.vars.keys())
            .field("proxy_variables", &self.proxy_vars.keys())
            .finish()
    }
}

impl RawConfig {
    /// Reads `BRIDGE_*` from the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// Reads `BRIDGE_*` and the proxy variables from any list of pairs
    /// (tests never touch the process environment). A later pair overrides
    /// an earlier one, as in a shell.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        let mut raw = RawConfig::default();
        for (k, v) in vars {
            if k.starts_with(PREFIX) {
                raw.vars.insert(k, v);
            } else if proxy::VARIABLES.contains(&k.as_str()) {
                raw.proxy_vars.insert(k, v);
            }
        }
        raw
    }

    /// The same settings with the two default targets at other URLs (the
    /// `demo` points the worker at its stand-ins); other target settings are
    /// dropped, since the demo has exactly those two. No proxy: the
    /// stand-ins are on this machine.
    pub fn with_api_urls(&self, user: String, log: String) -> RawConfig {
        let mut vars = self.vars.clone();
        vars.retain(|k, _| k != table::TARGETS.name && !targets::is_target_variable(k));
        vars.insert(format!("{PREFIX}USER_API_URL"), user);
        vars.insert(format!("{PREFIX}LOG_API_URL"), log);
        RawConfig {
            vars,
            proxy_vars: BTreeMap::new(),
        }
    }

    /// `BRIDGE_CA_FILE`, for the OTLP exporter, which is set up before the
    /// rest of the configuration is checked.
    pub fn ca_file(&self) -> Option<&str> {
        self.get(table::CA_FILE.name)
    }

    /// `BRIDGE_CONSOLE_TOKEN`, for `fanout-bridge console`.
    ///
    /// # Errors
    /// When it cannot be sent as a bearer token (visible ASCII only).
    pub fn console_token(&self) -> Result<Option<Secret>, ConfigError> {
        let name = table::CONSOLE_TOKEN.name;
        match self.get(name) {
            None => Ok(None),
            Some(t) if t.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(Secret::new(t))),
            Some(_) => Err(ConfigError::one(format!(
                "{name}: must be visible ASCII characters without spaces (it is sent as \
                 `Authorization: Bearer …`); value not shown"
            ))),
        }
    }

    /// The trimmed value of `variable`; empty counts as unset (`BRIDGE_X=` in
    /// a compose file means "not set").
    fn get(&self, variable: &str) -> Option<&str> {
        self.vars
            .get(variable)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
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

impl ConfigError {
    pub(crate) fn one(problem: String) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }
}

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

impl AmqpUri {
    /// Whether this node is reached over TLS (`amqps://`).
    pub fn is_tls(&self) -> bool {
        self.0.scheme == lapin::uri::AMQPScheme::AMQPS
    }
}

impl fmt::Debug for AmqpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}/{}",
            if self.is_tls() { "amqps" } else { "amqp" },
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
    /// `BRIDGE_MAX_IN_FLIGHT_BYTES`: message bodies in flight, in bytes.
    pub max_in_flight_bytes: u64,
    pub http_timeout: Duration,
    pub max_attempts: NonZeroU32,
    pub retry_backoff: Duration,
    pub outage_policy: OutagePolicy,
    pub outage_pause: Duration,
    pub log_event: String,
    pub metrics_addr: SocketAddr,
    pub shutdown_grace: Duration,
    /// `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`.
    pub proxy: ProxyConfig,
}

impl RawConfig {
    /// The settings of `publish` and `dlq`: only the broker variables are read.
    ///
    /// # Errors
    /// Names every bad `BRIDGE_*` variable.
    pub fn broker_config(&self) -> Result<BrokerConfig, ConfigError> {
        use table::{AMQP_URL, DLQ, QUEUE, QUEUE_TYPE};
        let nodes = AMQP_URL.read(self);
        let queue = QUEUE.read(self);
        let dlq = DLQ.read(self);
        let queue_type = QUEUE_TYPE.read(self);
        let tls = self.tls();
        let distinct = match (&queue, &dlq) {
            (Ok(queue), Ok(dlq)) if queue == dlq => Err(ConfigError::one(format!(
                "{}={dlq:?} is not valid: it must differ from {} (dead letters would be consumed again)",
                DLQ.name, QUEUE.name
            ))),
            _ => Ok(()),
        };
        all_ok!(nodes, queue, dlq, queue_type, tls, distinct);
        let ((uri, nodes), ()) = (nodes, distinct);
        Ok(BrokerConfig {
            uri,
            nodes,
            queue,
            dlq,
            queue_type,
            tls,
        })
    }

    /// `BRIDGE_CA_FILE`, `BRIDGE_TLS_CERT_FILE`, `BRIDGE_TLS_KEY_FILE`: the
    /// files are read and checked here, before anything connects.
    fn tls(&self) -> Result<crate::tls::TlsSettings, ConfigError> {
        use table::{CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
        crate::tls::load(
            self.get(CA_FILE.name),
            self.get(TLS_CERT_FILE.name),
            self.get(TLS_KEY_FILE.name),
        )
        .map_err(|problems| ConfigError { problems })
    }

    /// `BRIDGE_LOG_FORMAT`, needed before logging starts.
    ///
    /// # Errors
    /// Names the variable when its value is not `text` or `json`.
    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        table::LOG_FORMAT.read(self)
    }

    /// `BRIDGE_METRICS_ADDR` alone, for `healthcheck`, which asks the worker
    /// listening there and needs none of the other settings.
    ///
    /// # Errors
    /// Names the variable when its value is not an address.
    pub fn metrics_addr(&self) -> Result<SocketAddr, ConfigError> {
        table::METRICS_ADDR.read(self)
    }

    /// The settings of `run`.
    ///
    /// # Errors
    /// Names every missing or bad `BRIDGE_*` variable.
    pub fn worker_config(&self) -> Result<WorkerConfig, ConfigError> {
        use table::*;
        let broker = self.broker_config();
        let targets = self.targets();
        let prefetch = PREFETCH.read(self);
        let max_in_flight_bytes = MAX_IN_FLIGHT_BYTES.read(self);
        let http_timeout = HTTP_TIMEOUT_MS.read(self);
        let max_attempts = MAX_ATTEMPTS.read(self);
        let retry_backoff = RETRY_BACKOFF_MS.read(self);
        let outage_policy = OUTAGE_POLICY.read(self);
        let outage_pause = OUTAGE_PAUSE_MS.read(self);
        let log_event = LOG_EVENT.read(self);
        let metrics_addr = METRICS_ADDR.read(self);
        let shutdown_grace = SHUTDOWN_GRACE_MS.read(self);
        // Checked with the rest, though the logger was set up from it already.
        let _log_format = self.log_format();
        let proxy = ProxyConfig::read(&self.proxy_vars);
        all_ok!(
            broker,
            targets,
            prefetch,
            max_in_flight_bytes,
            http_timeout,
            max_attempts,
            retry_backoff,
            outage_policy,
            outage_pause,
            log_event,
            metrics_addr,
            shutdown_grace,
            _log_format,
            proxy,
        );
        Ok(WorkerConfig {
            broker,
            targets,
            prefetch,
            max_in_flight_bytes,
            http_timeout,
            max_attempts,
            retry_backoff,
            outage_policy,
            outage_pause,
            log_event,
            metrics_addr,
            shutdown_grace,
            proxy,
        })
    }
}
