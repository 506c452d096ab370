//! The parsers of the settings table, each with its bounds, and the one
//! message shape every refused value gets.
//!
//! A parser sees a value already trimmed and non-empty and returns why it is
//! refused; [`invalid`] adds the variable name and hides credentials.

use std::{fmt, net::SocketAddr, num::NonZeroU32, str::FromStr, time::Duration};

use lapin::uri::AMQPUri;
use url::Url;

use super::{AmqpUri, LogFormat, OutagePolicy, QueueType, DEFAULT_HEARTBEAT_SECS};

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
/// The largest `_RATE_LIMIT`: the limiter remembers the start of every
/// request in the past second, so the limit is also a memory bound.
pub const MAX_RATE_LIMIT: u32 = 100_000;

/// `VAR="value" is not valid: why`, with any credentials of a URL value
/// (and their echo in `why`) replaced by `***`.
pub(super) fn invalid(variable: &str, value: &str, why: &str) -> String {
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
        let rest = rest.split_once(['?', '#']).map_or(rest, |(r, _)| r);
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
fn millis_within(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
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

/// `BRIDGE_HTTP_TIMEOUT_MS`: 1 ms to [`MAX_HTTP_TIMEOUT`].
pub(super) fn http_timeout(s: &str) -> Result<Duration, String> {
    millis_within(s, Duration::from_millis(1), MAX_HTTP_TIMEOUT)
}

/// `BRIDGE_RETRY_BACKOFF_MS`: 0 to [`MAX_RETRY_BACKOFF`].
pub(super) fn retry_backoff(s: &str) -> Result<Duration, String> {
    millis_within(s, Duration::ZERO, MAX_RETRY_BACKOFF)
}

/// `BRIDGE_OUTAGE_PAUSE_MS`, `BRIDGE_SHUTDOWN_GRACE_MS`: 0 to [`MAX_PAUSE`].
pub(super) fn pause(s: &str) -> Result<Duration, String> {
    millis_within(s, Duration::ZERO, MAX_PAUSE)
}

/// `BRIDGE_PREFETCH`: 1 to 65535 (the AMQP QoS field is 16 bits).
pub(super) fn prefetch(s: &str) -> Result<u16, String> {
    match number::<u16>(s) {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) if number::<u64>(s).is_ok() => Err("must be at most 65535".into()),
        Err(e) => Err(e),
    }
}

/// The largest `BRIDGE_MAX_IN_FLIGHT_BYTES`: 1 TiB.
pub const MAX_BYTE_BUDGET: u64 = 1 << 40;

/// `BRIDGE_MAX_IN_FLIGHT_BYTES`: bytes, or a whole number of KiB, MiB or GiB;
/// 1 to [`MAX_BYTE_BUDGET`].
pub(super) fn byte_budget(s: &str) -> Result<u64, String> {
    let (digits, unit) = [
        ("KiB", 1u64 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
    ]
    .into_iter()
    .find_map(|(suffix, unit)| Some((s.strip_suffix(suffix)?.trim_end(), unit)))
    .unwrap_or((s, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            "must be a number of bytes, optionally followed by KiB, MiB, GiB or TiB".into(),
        );
    }
    let n = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&n| n <= MAX_BYTE_BUDGET)
        .ok_or_else(|| "must be at most 1TiB".to_owned())?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// `BRIDGE_MAX_ATTEMPTS`: at least 1.
pub(super) fn at_least_one(s: &str) -> Result<NonZeroU32, String> {
    let n = number::<u32>(s)?;
    NonZeroU32::new(n).ok_or_else(|| "must be at least 1".to_owned())
}

pub(super) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    number(s)
}

pub(super) fn text(s: &str) -> Result<String, String> {
    Ok(s.to_owned())
}

pub(super) fn one_of<T: Copy>(s: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<_> = choices.iter().map(|(n, _)| *n).collect();
            format!("must be one of {}", names.join(", "))
        })
}

pub(super) fn queue_type(s: &str) -> Result<QueueType, String> {
    one_of(
        s,
        &[
            ("classic", QueueType::Classic),
            ("quorum", QueueType::Quorum),
        ],
    )
}

pub(super) fn outage_policy(s: &str) -> Result<OutagePolicy, String> {
    one_of(
        s,
        &[
            ("dead-letter", OutagePolicy::DeadLetter),
            ("hold", OutagePolicy::Hold),
        ],
    )
}

pub(super) fn log_format(s: &str) -> Result<LogFormat, String> {
    one_of(s, &[("text", LogFormat::Text), ("json", LogFormat::Json)])
}

pub(super) fn queue_name(s: &str) -> Result<String, String> {
    if s.len() > 255 {
        Err("longer than 255 bytes".into())
    } else {
        Ok(s.to_owned())
    }
}

/// The nodes of `BRIDGE_AMQP_URL`: the first, then all of them (the first
/// included). The first is separate so that "one or more" needs no check.
pub(super) type Nodes = (AmqpUri, Vec<AmqpUri>);

/// `BRIDGE_AMQP_URL`: one URL, or a comma-separated list of the nodes of one
/// cluster.
pub(super) fn amqp_uris(s: &str) -> Result<Nodes, String> {
    let (head, tail) = match s.split_once(',') {
        Some((head, tail)) => (head, Some(tail)),
        None => (s, None),
    };
    let first = amqp_uri(1, head)?;
    let mut nodes = vec![first.clone()];
    for (i, part) in tail.into_iter().flat_map(|t| t.split(',')).enumerate() {
        nodes.push(amqp_uri(i + 2, part)?);
    }
    Ok((first, nodes))
}

/// URL number `n` of `BRIDGE_AMQP_URL`, with the heartbeat defaulted.
fn amqp_uri(n: usize, part: &str) -> Result<AmqpUri, String> {
    let part = part.trim();
    if part.is_empty() {
        return Err(format!("URL number {n} of the list is empty"));
    }
    let mut uri = AMQPUri::from_str(part).map_err(|e| format!("not an AMQP URL ({e})"))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
    }
    // No frame_max unless the URL sets one: lapin then takes the broker's
    // (RabbitMQ: 128 KiB). A smaller one breaks on big headers, because a
    // header frame is never split: lapin closes the connection on it and the
    // message is redelivered forever.
    Ok(AmqpUri(uri))
}

/// A target's `_URL`: `http://` or `https://` with a host.
pub(super) fn http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("has no host".into()),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

/// A target's `_RATE_LIMIT`: 1 to [`MAX_RATE_LIMIT`] requests per second.
pub(super) fn rate_limit(s: &str) -> Result<NonZeroU32, String> {
    let n = s.parse::<u64>().map_err(|e| e.to_string())?;
    match u32::try_from(n).ok().filter(|n| *n <= MAX_RATE_LIMIT) {
        None => Err(format!("must be at most {MAX_RATE_LIMIT}")),
        Some(n) => NonZeroU32::new(n).ok_or_else(|| "must be at least 1".into()),
    }
}
