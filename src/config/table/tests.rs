use super::*;
use crate::config::PREFIX;

#[test]
fn help_shows_every_row_with_its_default() {
    let help = help();
    for doc in SETTINGS.iter().chain(OTEL_SETTINGS).chain(PROXY_SETTINGS) {
        let line = help
            .lines()
            .find(|l| l.starts_with("  ") && l.split([',', ' ']).any(|w| w == doc.name))
            .unwrap_or_else(|| panic!("{} not in:\n{help}", doc.name));
        let default = match doc.default {
            WhenUnset::Required => "required".to_owned(),
            d => format!("default {d}"),
        };
        assert!(line.ends_with(&default), "{}: {line:?}", doc.name);
    }
    assert!(help.lines().all(|l| l.len() <= 80 || !l.contains(' ')));
}

#[test]
fn every_fixed_setting_names_itself_when_bad() {
    // The typed rows: a value no parser takes (not even as a queue name)
    // is refused naming the row; BRIDGE_LOG_EVENT takes any text.
    let bad = "\u{1},".repeat(200);
    for doc in SETTINGS
        .iter()
        .filter(|d| matches!(d.default, WhenUnset::Default(_)))
        .filter(|d| d.name.starts_with(PREFIX) && !d.name.contains('<'))
        .filter(|d| d.name != "BRIDGE_LOG_EVENT")
    {
        let pairs = [
            ("BRIDGE_USER_API_URL", "http://u/x"),
            ("BRIDGE_LOG_API_URL", "http://l/x"),
            (doc.name, &bad),
        ];
        let raw = RawConfig::from_vars(pairs.map(|(k, v)| (k.to_owned(), v.to_owned())));
        let e = raw.worker_config().unwrap_err().to_string();
        assert!(e.contains(doc.name), "{}: {e}", doc.name);
    }
}

#[test]
fn help_states_the_bounds_the_parsers_enforce() {
    use crate::config::parse::{MAX_HTTP_TIMEOUT, MAX_PAUSE, MAX_RATE_LIMIT, MAX_RETRY_BACKOFF};
    for (help, max) in [
        (HTTP_TIMEOUT_MS.help, MAX_HTTP_TIMEOUT),
        (RETRY_BACKOFF_MS.help, MAX_RETRY_BACKOFF),
        (OUTAGE_PAUSE_MS.help, MAX_PAUSE),
        (SHUTDOWN_GRACE_MS.help, MAX_PAUSE),
    ] {
        let bound = format!(" to {}", max.as_millis());
        let after = help.split_once(&bound).map(|(_, rest)| rest);
        let next = after.and_then(|rest| rest.chars().next());
        assert!(next.is_some_and(|c| !c.is_ascii_digit()), "{help}");
    }
    assert!(TARGET_RATE_LIMIT
        .help
        .contains(&format!(" to {MAX_RATE_LIMIT};")));
    assert!(PREFETCH.help.contains(&format!(" to {}.", u16::MAX)));
}
