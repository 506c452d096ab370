//! Which dead-lettered messages a DLQ command acts on: the `--reason`,
//! `--target`, `--group`, `--id`, `--since`, `--until` and `--grep` filters.

use time::{format_description::well_known::Rfc3339, Duration, OffsetDateTime};

use super::failure::{Failed, Group};

/// Which messages a DLQ command acts on; an empty filter matches all. The
/// conditions combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub reason: Option<String>,
    /// Among the failed targets.
    pub target: Option<String>,
    pub group: Option<String>,
    /// Any of these message ids.
    pub ids: Vec<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// A substring of the body or of `x-bridge-error`.
    pub grep: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether the message matches. `group` is its group (computed once by
    /// the caller), `body` its bytes.
    pub fn matches(&self, f: &Failed, group: &Group, body: &[u8]) -> bool {
        if self.reason.as_ref().is_some_and(|r| *r != f.reason) {
            return false;
        }
        if self
            .target
            .as_ref()
            .is_some_and(|t| !f.failed_targets.iter().any(|ft| ft == t))
        {
            return false;
        }
        if self.group.as_ref().is_some_and(|g| *g != group.id) {
            return false;
        }
        if !self.ids.is_empty()
            && !f
                .message_id
                .as_ref()
                .is_some_and(|id| self.ids.iter().any(|want| want == id))
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(at) = f.at else {
                return false;
            };
            if self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at > u) {
                return false;
            }
        }
        if let Some(needle) = &self.grep {
            let in_body = contains(body, needle.as_bytes());
            if !in_body && !f.error.contains(needle.as_str()) {
                return false;
            }
        }
        true
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A `--since`/`--until` value: RFC 3339, or a duration back from `now`
/// (`45s`, `30m`, `2h`, `7d`).
///
/// # Errors
/// A text saying what is wrong, for the flag's error message.
pub fn parse_time(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let text = text.trim();
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let wrong =
        || format!("{text:?} is neither an RFC 3339 time nor a duration such as 30m, 2h or 7d");
    let Some(unit) = text.chars().last() else {
        return Err(wrong());
    };
    let number = &text[..text.len() - unit.len_utf8()];
    let n: i64 = number.parse().map_err(|_| wrong())?;
    if n < 0 {
        return Err(format!(
            "{text:?}: a duration back from now cannot be negative"
        ));
    }
    let seconds = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => return Err(wrong()),
    };
    let back = seconds
        .filter(|s| *s <= Duration::MAX.whole_seconds())
        .map(Duration::seconds)
        .ok_or_else(|| format!("{text:?} reaches too far back"))?;
    now.checked_sub(back)
        .ok_or_else(|| format!("{text:?} reaches too far back"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::failure::{group_of, tests::api_failed};

    #[test]
    fn filters_combine_with_and() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut f = api_failed(&["logging"], "logging: HTTP 503 after 3 attempts");
        f.message_id = Some("m-1".into());
        f.at = Some(now - Duration::minutes(10));
        let g = group_of(&f);
        let body = br#"{"customer":"acme"}"#;
        assert!(Filter::default().matches(&f, &g, body));
        let only = |filter: Filter| filter.matches(&f, &g, body);
        assert!(only(Filter {
            reason: Some("api_failed".into()),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            reason: Some("invalid_payload".into()),
            ..Filter::default()
        }));
        assert!(only(Filter {
            target: Some("logging".into()),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            target: Some("user-management".into()),
            ..Filter::default()
        }));
        assert!(only(Filter {
            group: Some(g.id.clone()),
            ..Filter::default()
        }));
        assert!(only(Filter {
            ids: vec!["x".into(), "m-1".into()],
            ..Filter::default()
        }));
        assert!(!only(Filter {
            ids: vec!["x".into()],
            ..Filter::default()
        }));
        assert!(only(Filter {
            since: Some(now - Duration::hours(1)),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            since: Some(now - Duration::minutes(5)),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            until: Some(now - Duration::hours(1)),
            ..Filter::default()
        }));
        assert!(only(Filter {
            grep: Some("acme".into()),
            ..Filter::default()
        }));
        assert!(only(Filter {
            grep: Some("HTTP 503".into()),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            grep: Some("zzz".into()),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            reason: Some("api_failed".into()),
            grep: Some("zzz".into()),
            ..Filter::default()
        }));
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_back() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(parse_time("30m", now).unwrap(), now - Duration::minutes(30));
        assert_eq!(parse_time("2h", now).unwrap(), now - Duration::hours(2));
        assert_eq!(parse_time("7d", now).unwrap(), now - Duration::days(7));
        assert_eq!(
            parse_time("2027-01-15T08:00:00Z", now).unwrap(),
            OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("5w", now).is_err());
        assert!(parse_time("", now).is_err());
        // Neither panics: a multi-byte last character, an overflow.
        assert!(parse_time("5é", now).is_err());
        assert!(parse_time("999999999999999999d", now).is_err());
        assert!(parse_time("-5m", now).is_err());
    }
}
