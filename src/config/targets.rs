//! `BRIDGE_TARGETS` and the row of settings of each target it names.
//!
//! A target `N` is configured by `BRIDGE_TARGET_<N>_{URL,TOKEN,RATE_LIMIT,BODY}`
//! (`<N>` upper-cased, `-` as `_`). The two default targets keep the contract's
//! older spelling as well (`BRIDGE_USER_API_*`, `BRIDGE_LOG_API_*`); one
//! setting spelled both ways is refused, since either choice would silently
//! ignore a value the operator set.
//!
//! The rows of these variables (name pattern, default, meaning) are in the
//! settings table (`table::TARGET_*`), their parsers in `parse`; they are
//! read here rather than through a typed row because a target's token is
//! checked against its URL and the older spelling is looked up beside the
//! new one.

use std::{fmt, num::NonZeroU32};

use url::Url;

use super::{
    all_ok,
    parse::{http_url, invalid, one_of, rate_limit},
    table::{
        Doc, DEFAULT_TARGETS, TARGETS, TARGET_BODY, TARGET_RATE_LIMIT, TARGET_TOKEN, TARGET_URL,
    },
    ConfigError, RawConfig, Secret, PREFIX,
};
use crate::domain::{message::is_header_safe, BodyShape, TargetName};

const BODIES: &[(&str, BodyShape)] = &[("raw", BodyShape::Raw), ("envelope", BodyShape::Envelope)];

/// Whether `key` is a per-target variable, kept aside from the fixed settings.
pub(super) fn is_target_variable(key: &str) -> bool {
    ["BRIDGE_TARGET_", "BRIDGE_USER_API_", "BRIDGE_LOG_API_"]
        .iter()
        .any(|p| key.starts_with(p))
}

/// The older spelling of a default target's variables, and its body shape.
fn legacy(name: &TargetName) -> Option<(&'static str, BodyShape)> {
    match name.as_str() {
        "user-management" => Some(("USER_API", BodyShape::Raw)),
        "logging" => Some(("LOG_API", BodyShape::Envelope)),
        _ => None,
    }
}

/// One target: where its requests go and how they look.
#[derive(Clone)]
pub struct TargetConfig {
    pub name: TargetName,
    /// May hold credentials (sent as basic auth): `Debug` hides them.
    pub url: Url,
    pub token: Option<Secret>,
    /// At most this many requests in any one-second window.
    pub rate_limit: Option<NonZeroU32>,
    pub body: BodyShape,
}

impl fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetConfig")
            .field("name", &self.name)
            .field("url", &redacted_url(&self.url))
            .field("token", &self.token)
            .field("rate_limit", &self.rate_limit)
            .field("body", &self.body)
            .finish()
    }
}

/// The URL with any user name and password replaced by `***`.
pub fn redacted_url(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Only fails for URLs that cannot have credentials, which these had.
    let _ = shown.set_password(None);
    let _ = shown.set_username("***");
    shown.to_string()
}

/// One setting of one target, as found in the environment.
struct Found<'a> {
    variable: String,
    value: &'a str,
}

impl Found<'_> {
    /// The value through `parse`; a refusal names the variable.
    fn parse<T>(&self, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        parse(self.value).map_err(|why| ConfigError::one(invalid(&self.variable, self.value, &why)))
    }
}

impl RawConfig {
    /// The targets of `BRIDGE_TARGETS`, each with its settings; every
    /// problem of the list and of each well-named target is reported.
    pub(super) fn targets(&self) -> Result<Vec<TargetConfig>, ConfigError> {
        let list = self.get(TARGETS.name).unwrap_or(DEFAULT_TARGETS);
        let mut names: Vec<TargetName> = Vec::new();
        let mut problems = Vec::new();
        for item in list.split(',').map(str::trim) {
            match TargetName::parse(item) {
                Err(e) => problems.push(invalid(TARGETS.name, list, &e.to_string())),
                Ok(name) if names.contains(&name) => problems.push(invalid(
                    TARGETS.name,
                    list,
                    &format!("target {:?} is listed twice", name.as_str()),
                )),
                Ok(name) => names.push(name),
            }
        }
        // Every listed target is checked, so all problems show at once.
        let mut rows = Vec::new();
        for name in names {
            match self.target(name) {
                Ok(row) => rows.push(row),
                Err(e) => problems.extend(e.problems),
            }
        }
        if problems.is_empty() {
            Ok(rows)
        } else {
            Err(ConfigError { problems })
        }
    }

    fn target(&self, name: TargetName) -> Result<TargetConfig, ConfigError> {
        let url = match self.setting(&name, &TARGET_URL) {
            Err(e) => Err(e),
            Ok(None) => {
                let key = name.env_key();
                Err(ConfigError::one(match legacy(&name) {
                    Some((old, _)) => format!(
                        "{PREFIX}{old}_URL is required but not set (or set {PREFIX}TARGET_{key}_URL)"
                    ),
                    None => format!(
                        "{PREFIX}TARGET_{key}_URL is required but not set (target {:?} is in {PREFIX}TARGETS)",
                        name.as_str()
                    ),
                }))
            }
            Ok(Some(f)) => f.parse(http_url).map(|url| (url, f.variable)),
        };
        let token = match self.setting(&name, &TARGET_TOKEN) {
            Err(e) => Err(e),
            Ok(None) => Ok(None),
            Ok(Some(f)) => match &url {
                // Both would be an Authorization header, and one would be lost.
                Ok((url, url_variable)) if has_credentials(url) => Err(ConfigError::one(format!(
                    "{} is set and {url_variable} carries credentials (user:password@): use one of them",
                    f.variable
                ))),
                // The value is never echoed: it is the secret.
                _ if is_header_safe(f.value) => Ok(Some(Secret::new(f.value))),
                _ => Err(ConfigError::one(format!(
                    "{} is not valid: it cannot be sent as an HTTP header value (it holds a control character, such as a line break)",
                    f.variable
                ))),
            },
        };
        let rate_limit = match self.setting(&name, &TARGET_RATE_LIMIT) {
            Ok(Some(f)) => f.parse(rate_limit).map(Some),
            other => other.map(|_| None),
        };
        let default_body = legacy(&name).map_or(BodyShape::Raw, |(_, body)| body);
        let body = match self.setting(&name, &TARGET_BODY) {
            Ok(Some(f)) => f.parse(|s| one_of(s, BODIES)),
            other => other.map(|_| default_body),
        };
        all_ok!(url, token, rate_limit, body);
        let (url, _) = url;
        Ok(TargetConfig {
            name,
            url,
            token,
            rate_limit,
            body,
        })
    }

    /// The value of one setting (`row`, a `BRIDGE_TARGET_<N>_*` pattern) of
    /// a target, in whichever spelling was used; both spellings at once is
    /// a problem. Empty values count as unset.
    fn setting(&self, name: &TargetName, row: &Doc) -> Result<Option<Found<'_>>, ConfigError> {
        let new = row.name.replace("<N>", &name.env_key());
        // The older spelling never had a BODY: its shape was fixed.
        let old = legacy(name)
            .filter(|_| row.name != TARGET_BODY.name)
            .map(|(old, _)| row.name.replace("TARGET_<N>", old));
        let old_value = old.as_deref().and_then(|v| self.get(v));
        match (old, old_value, self.get(&new)) {
            (Some(old), Some(_), Some(_)) => Err(ConfigError::one(format!(
                "{old} and {new} are both set: they are two spellings of one setting of target {:?}; set only one",
                name.as_str()
            ))),
            (Some(old), Some(value), None) => Ok(Some(Found {
                variable: old,
                value,
            })),
            (_, _, Some(value)) => Ok(Some(Found {
                variable: new,
                value,
            })),
            (_, _, None) => Ok(None),
        }
    }
}

fn has_credentials(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}
