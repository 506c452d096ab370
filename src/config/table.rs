//! The settings table: every variable's name, default, meaning, and (for the
//! fixed settings) its parser with its bounds. Parsing reads the typed rows
//! ([`Setting`]), `run --help` is [`help`] rendered from [`SETTINGS`], and a
//! test holds the README's settings table against [`SETTINGS`].
//!
//! The per-target variables are named by `BRIDGE_TARGETS`, so their rows are
//! patterns (`BRIDGE_TARGET_<N>_URL`) read by `targets.rs`; the TLS files are
//! read together by `crate::tls::load`.

use std::{fmt, net::SocketAddr, num::NonZeroU32, time::Duration};

use super::{
    parse::{self, Nodes},
    ConfigError, LogFormat, OutagePolicy, QueueType, RawConfig,
};

/// What a variable means when it is unset (or empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenUnset {
    /// This value, parsed like a value that was set.
    Default(&'static str),
    /// Nothing: the feature is off.
    Unset,
    /// No default: `run` refuses to start without it.
    Required,
}

impl fmt::Display for WhenUnset {
    /// As `--help` and the README show it: the value, `unset` or `required`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WhenUnset::Default(v) => v,
            WhenUnset::Unset => "unset",
            WhenUnset::Required => "required",
        })
    }
}

/// One row of the settings table as people read it.
#[derive(Clone, Copy, Debug)]
pub struct Doc {
    pub name: &'static str,
    pub default: WhenUnset,
    pub help: &'static str,
}

/// A fixed setting: its row, and the parser that turns its value (or the
/// default, through the same parser) into `T`. Bounds live in the parser.
pub struct Setting<T> {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Setting<T> {
    pub const fn doc(&self) -> Doc {
        Doc {
            name: self.name,
            default: WhenUnset::Default(self.default),
            help: self.help,
        }
    }

    /// The value of the variable, or the default; an error names the variable.
    pub(super) fn read(&self, raw: &RawConfig) -> Result<T, ConfigError> {
        let value = raw.get(self.name).unwrap_or(self.default);
        (self.parse)(value).map_err(|why| ConfigError::one(parse::invalid(self.name, value, &why)))
    }
}

pub const AMQP_URL: Setting<Nodes> = Setting {
    name: "BRIDGE_AMQP_URL",
    default: "amqp://guest:guest@127.0.0.1:5672/%2f",
    help: "Broker URL (amqps:// supported), or a comma-separated list of the URLs of one cluster's nodes: each worker starts at a random one and moves on when a connect fails or the session is lost. Heartbeat 10 s unless the URL sets `heartbeat`; frame size the broker's unless a URL sets `frame_max`.",
    parse: parse::amqp_uris,
};
pub const QUEUE: Setting<String> = Setting {
    name: "BRIDGE_QUEUE",
    default: "bridge.inbound",
    help: "Queue consumed; declared durable if absent.",
    parse: parse::queue_name,
};
pub const DLQ: Setting<String> = Setting {
    name: "BRIDGE_DLQ",
    default: "bridge.inbound.dlq",
    help: "Dead-letter queue; declared durable if absent; must differ from BRIDGE_QUEUE.",
    parse: parse::queue_name,
};
pub const QUEUE_TYPE: Setting<QueueType> = Setting {
    name: "BRIDGE_QUEUE_TYPE",
    default: "classic",
    help: "classic, or quorum: both queues x-queue-type quorum, and the inbound queue dead-letters to the DLQ what the broker gives up on (its delivery limit).",
    parse: parse::queue_type,
};
pub const PREFETCH: Setting<u16> = Setting {
    name: "BRIDGE_PREFETCH",
    default: "64",
    help: "Messages in flight per worker (AMQP QoS); 1 to 65535.",
    parse: parse::prefetch,
};
pub const MAX_IN_FLIGHT_BYTES: Setting<u64> = Setting {
    name: "BRIDGE_MAX_IN_FLIGHT_BYTES",
    default: "64MiB",
    help: "Message bodies in flight per worker, in bytes (or with KiB, MiB, GiB); 1 to 1TiB. Caps memory where BRIDGE_PREFETCH caps only the count: the worker lowers its prefetch to what the sizes it has seen allow (budget / largest recent body, at most BRIDGE_PREFETCH) and restores it as they shrink; a body larger than the budget is processed alone.",
    parse: parse::byte_budget,
};
pub const HTTP_TIMEOUT_MS: Setting<Duration> = Setting {
    name: "BRIDGE_HTTP_TIMEOUT_MS",
    default: "10000",
    help: "Timeout of one HTTP attempt; 1 to 600000 (10 min).",
    parse: parse::http_timeout,
};
pub const MAX_ATTEMPTS: Setting<NonZeroU32> = Setting {
    name: "BRIDGE_MAX_ATTEMPTS",
    default: "3",
    help: "Attempts per API for a transient failure (1 = no retry).",
    parse: parse::at_least_one,
};
pub const RETRY_BACKOFF_MS: Setting<Duration> = Setting {
    name: "BRIDGE_RETRY_BACKOFF_MS",
    default: "200",
    help: "First backoff; doubles each retry, with jitter; 0 to 30000.",
    parse: parse::retry_backoff,
};
pub const OUTAGE_POLICY: Setting<OutagePolicy> = Setting {
    name: "BRIDGE_OUTAGE_POLICY",
    default: "dead-letter",
    help: "dead-letter, or hold: a message whose only failures were transient goes back to the inbound queue and the worker pauses.",
    parse: parse::outage_policy,
};
pub const OUTAGE_PAUSE_MS: Setting<Duration> = Setting {
    name: "BRIDGE_OUTAGE_PAUSE_MS",
    default: "5000",
    help: "With hold: how long the worker takes no new message after such a failure; 0 to 86400000 (1 day).",
    parse: parse::pause,
};
pub const LOG_EVENT: Setting<String> = Setting {
    name: "BRIDGE_LOG_EVENT",
    default: "user.registered",
    help: "Event name for the logging API when the message has no AMQP `type`.",
    parse: parse::text,
};
pub const METRICS_ADDR: Setting<SocketAddr> = Setting {
    name: "BRIDGE_METRICS_ADDR",
    default: "0.0.0.0:9464",
    help: "Listener for /metrics, /healthz, /readyz.",
    parse: parse::socket_addr,
};
pub const SHUTDOWN_GRACE_MS: Setting<Duration> = Setting {
    name: "BRIDGE_SHUTDOWN_GRACE_MS",
    default: "30000",
    help: "How long in-flight messages may finish after SIGTERM/SIGINT; 0 to 86400000 (1 day).",
    parse: parse::pause,
};
pub const LOG_FORMAT: Setting<LogFormat> = Setting {
    name: "BRIDGE_LOG_FORMAT",
    default: "text",
    help: "text or json (log lines on stderr; text has no colour unless stderr is a terminal).",
    parse: parse::log_format,
};

/// `BRIDGE_TARGETS` when unset: the contract's two APIs.
pub const DEFAULT_TARGETS: &str = "user-management,logging";

pub const TARGETS: Doc = Doc {
    name: "BRIDGE_TARGETS",
    default: WhenUnset::Default(DEFAULT_TARGETS),
    help: "The targets every message goes to (lowercase letters, digits, `-`). The two default targets keep their own variables: user-management is BRIDGE_USER_API_* (raw), logging is BRIDGE_LOG_API_* (envelope); setting both spellings of one setting is an error.",
};
/// The rows of one target `N`; `targets.rs` reads them with `<N>` replaced.
pub const TARGET_URL: Doc = Doc {
    name: "BRIDGE_TARGET_<N>_URL",
    default: WhenUnset::Required,
    help:
        "For each target N (N upper-cased, `-` as `_`): its endpoint (POST), http:// or https://.",
};
pub const TARGET_TOKEN: Doc = Doc {
    name: "BRIDGE_TARGET_<N>_TOKEN",
    default: WhenUnset::Unset,
    help: "Bearer token for target N; never logged.",
};
pub const TARGET_RATE_LIMIT: Doc = Doc {
    name: "BRIDGE_TARGET_<N>_RATE_LIMIT",
    default: WhenUnset::Unset,
    help: "Requests per second to target N, retries included; 1 to 100000; PER WORKER.",
};
pub const TARGET_BODY: Doc = Doc {
    name: "BRIDGE_TARGET_<N>_BODY",
    default: WhenUnset::Default("raw"),
    help: "raw (body byte for byte) or envelope (the logging envelope).",
};

/// The contract's spelling of the two default targets' settings.
const fn legacy(name: &'static str, default: WhenUnset, help: &'static str) -> Doc {
    Doc {
        name,
        default,
        help,
    }
}

const TOKEN_HELP: &str = "Sent as `Authorization: Bearer …`; never logged.";
const RATE_HELP: &str = "At most this many requests to that API in any one-second window, retries included. The limit is PER WORKER: N replicas send up to N times it.";

pub const CA_FILE: Doc = Doc {
    name: "BRIDGE_CA_FILE",
    default: WhenUnset::Unset,
    help: "PEM bundle trusted in addition to the platform's roots (HTTPS APIs, amqps://).",
};
const CLIENT_CERT_HELP: &str =
    "Client certificate and key (PEM) for the broker and the APIs (mutual TLS); set both or neither.";
pub const TLS_CERT_FILE: Doc = Doc {
    name: "BRIDGE_TLS_CERT_FILE",
    default: WhenUnset::Unset,
    help: CLIENT_CERT_HELP,
};
pub const TLS_KEY_FILE: Doc = Doc {
    name: "BRIDGE_TLS_KEY_FILE",
    default: WhenUnset::Unset,
    help: CLIENT_CERT_HELP,
};

/// `fanout-bridge console` only (not the worker): see docs/console.md.
pub const CONSOLE_TOKEN: Doc = Doc {
    name: "BRIDGE_CONSOLE_TOKEN",
    default: WhenUnset::Unset,
    help: "console only: the token every request to the web console needs (Authorization: Bearer, or its login form); required when --listen is not a loopback address; never logged.",
};

/// Every setting, in the order `run --help` shows them.
pub const SETTINGS: &[Doc] = &[
    AMQP_URL.doc(),
    QUEUE.doc(),
    DLQ.doc(),
    QUEUE_TYPE.doc(),
    legacy(
        "BRIDGE_USER_API_URL",
        WhenUnset::Required,
        "User-management endpoint (POST; the message body byte for byte).",
    ),
    legacy(
        "BRIDGE_LOG_API_URL",
        WhenUnset::Required,
        "Logging endpoint (POST; the logging envelope).",
    ),
    legacy("BRIDGE_USER_API_TOKEN", WhenUnset::Unset, TOKEN_HELP),
    legacy("BRIDGE_LOG_API_TOKEN", WhenUnset::Unset, TOKEN_HELP),
    legacy("BRIDGE_USER_API_RATE_LIMIT", WhenUnset::Unset, RATE_HELP),
    legacy("BRIDGE_LOG_API_RATE_LIMIT", WhenUnset::Unset, RATE_HELP),
    TARGETS,
    TARGET_URL,
    TARGET_TOKEN,
    TARGET_RATE_LIMIT,
    TARGET_BODY,
    CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    PREFETCH.doc(),
    MAX_IN_FLIGHT_BYTES.doc(),
    HTTP_TIMEOUT_MS.doc(),
    MAX_ATTEMPTS.doc(),
    RETRY_BACKOFF_MS.doc(),
    OUTAGE_POLICY.doc(),
    OUTAGE_PAUSE_MS.doc(),
    LOG_EVENT.doc(),
    METRICS_ADDR.doc(),
    SHUTDOWN_GRACE_MS.doc(),
    LOG_FORMAT.doc(),
    CONSOLE_TOKEN,
    Doc {
        name: "RUST_LOG",
        default: WhenUnset::Default("info"),
        help: "Log level and filter.",
    },
];

/// The standard OpenTelemetry variables the worker honours.
pub const OTEL_SETTINGS: &[Doc] = &[
    Doc {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: WhenUnset::Unset,
        help: "When set, a span per message and per API attempt is exported over OTLP/HTTP; an unreachable collector costs spans, never messages.",
    },
    Doc {
        name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        default: WhenUnset::Unset,
        help: "The same, for traces only.",
    },
];

/// The proxy variables the worker honours for the APIs (curl's; the lower-case
/// spellings too, upper case winning).
pub const PROXY_SETTINGS: &[Doc] = &[
    Doc {
        name: "HTTPS_PROXY",
        default: WhenUnset::Unset,
        help: "http://[user:password@]host:port of the proxy for https:// APIs (a CONNECT tunnel; TLS stays end to end).",
    },
    Doc {
        name: "HTTP_PROXY",
        default: WhenUnset::Unset,
        help: "The same for http:// APIs (requests go to the proxy in absolute form).",
    },
    Doc {
        name: "ALL_PROXY",
        default: WhenUnset::Unset,
        help: "The proxy for either, when its own variable is unset.",
    },
    Doc {
        name: "NO_PROXY",
        default: WhenUnset::Unset,
        help: "Comma-separated hosts, domains (and their subdomains), IPs or CIDR ranges called directly; * for all.",
    },
];

/// The settings part of `run --help`: every row with its default and meaning;
/// neighbours that differ only in name (the two APIs' tokens) share an entry.
pub fn help() -> String {
    let mut out = String::from("Settings (environment; empty counts as unset):\n");
    entries(&mut out, SETTINGS);
    out.push_str("\nOpenTelemetry (standard variables):\n");
    entries(&mut out, OTEL_SETTINGS);
    out.push_str("  OTEL_SERVICE_NAME and the other OTEL_* variables apply as usual.\n");
    out.push_str("\nProxies for the APIs (only http:// proxies):\n");
    entries(&mut out, PROXY_SETTINGS);
    out.push('\n');
    out.push_str("A missing or bad setting exits 2 with a message naming the variable.");
    out
}

/// Per entry `  NAME[, NAME]   default D` (or `required`), then the meaning
/// wrapped at 80 columns under it.
fn entries(out: &mut String, rows: &[Doc]) {
    for same in rows.chunk_by(|a, b| a.default == b.default && a.help == b.help) {
        let names: Vec<&str> = same.iter().map(|doc| doc.name).collect();
        let default = match same[0].default {
            WhenUnset::Required => "required".to_owned(),
            d => format!("default {d}"),
        };
        out.push_str(&format!("  {:<26} {default}\n", names.join(", ")));
        wrap(out, same[0].help);
    }
}

fn wrap(out: &mut String, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && 6 + line.len() + 1 + word.len() > 80 {
            out.push_str(&format!("      {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&format!("      {line}\n"));
}

#[cfg(test)]
mod tests;
