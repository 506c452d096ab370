//! `BRIDGE_TARGETS` and the row of settings of each target it names.
//!
//! A target `N` is configured by `BRIDGE_TARGET_<N>_{URL,TOKEN,RATE_LIMIT,BODY}`
//! (`<N>` upper-cased, `-` as `_`). The two default targets keep the contract's
//! older spelling as well (`BRIDGE_USER_API_*`, `BRIDGE_LOG_API_*`); one
//! setting spelled both ways is refused, since either choice would silently
//! ignore a value the operator set.

use std::{fmt, num::NonZeroU32};

use url::Url;

use super::{invalid, one_of, Problems, RawConfig, Secret, PREFIX};
use crate::domain::{message::is_header_safe, BodyShape, TargetName};

/// `BRIDGE_TARGETS` when unset: the contract's two APIs.
pub const DEFAULT_TARGETS: &str = "user-management,logging";

/// The largest `_RATE_LIMIT`: the limiter remembers the start of every
/// request in the past second, so the limit is also a memory bound.
pub const MAX_RATE_LIMIT: u32 = 100_000;

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

fn http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("has no host".into()),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

fn rate_limit(s: &str) -> Result<NonZeroU32, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) if n > u64::from(MAX_RATE_LIMIT) => Err(format!("must be at most {MAX_RATE_LIMIT}")),
        Ok(n) => u32::try_from(n)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| "out of range".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// One setting of one target, as found in the environment.
struct Found<'a> {
    variable: String,
    value: &'a str,
}

/// Why a setting has no usable value; the problem is already recorded.
struct Reported;

impl RawConfig {
    /// The targets of `BRIDGE_TARGETS`, each with its settings. Records every
    /// problem; `None` if there was one.
    pub(super) fn targets(&self, p: &mut Problems) -> Option<Vec<TargetConfig>> {
        let list = self
            .targets
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_TARGETS);
        let mut names: Vec<TargetName> = Vec::new();
        let mut ok = true;
        for item in list.split(',').map(str::trim) {
            match TargetName::parse(item) {
                Err(e) => {
                    p.0.push(format!("{PREFIX}TARGETS={list:?} is not valid: {e}"));
                    ok = false;
                }
                Ok(name) if names.contains(&name) => {
                    p.0.push(format!(
                        "{PREFIX}TARGETS={list:?} is not valid: target {:?} is listed twice",
                        name.as_str()
                    ));
                    ok = false;
                }
                Ok(name) => names.push(name),
            }
        }
        // Every listed target is checked, so all problems show at once.
        let rows: Vec<Option<TargetConfig>> =
            names.into_iter().map(|n| self.target(p, n)).collect();
        if !ok {
            return None;
        }
        rows.into_iter().collect()
    }

    fn target(&self, p: &mut Problems, name: TargetName) -> Option<TargetConfig> {
        let mut url_variable = String::new();
        let url = match self.setting(p, &name, "URL") {
            Err(Reported) => None,
            Ok(None) => {
                let key = name.env_key();
                p.0.push(match legacy(&name) {
                    Some((old, _)) => format!(
                        "{PREFIX}{old}_URL is required but not set (or set {PREFIX}TARGET_{key}_URL)"
                    ),
                    None => format!(
                        "{PREFIX}TARGET_{key}_URL is required but not set (target {:?} is in {PREFIX}TARGETS)",
                        name.as_str()
                    ),
                });
                None
            }
            Ok(Some(f)) => {
                let url = http_url(f.value).map_err(|why| invalid(&f.variable, f.value, &why));
                url_variable = f.variable;
                p.check(url)
            }
        };
        let url_has_credentials = url
            .as_ref()
            .is_some_and(|u| !u.username().is_empty() || u.password().is_some());
        let token = match self.setting(p, &name, "TOKEN") {
            Err(Reported) => None,
            Ok(None) => Some(None),
            // Both would be an Authorization header, and one would be lost.
            Ok(Some(f)) if url_has_credentials => {
                p.0.push(format!(
                    "{} is set and {url_variable} carries credentials (user:password@): use one of them",
                    f.variable
                ));
                None
            }
            // The value is never echoed: it is the secret.
            Ok(Some(f)) if is_header_safe(f.value) => Some(Some(Secret::new(f.value))),
            Ok(Some(f)) => {
                p.0.push(format!(
                    "{} is not valid: it cannot be sent as an HTTP header value (it holds a control character, such as a line break)",
                    f.variable
                ));
                None
            }
        };
        let rate_limit = match self.setting(p, &name, "RATE_LIMIT") {
            Err(Reported) => None,
            Ok(None) => Some(None),
            Ok(Some(f)) => p.check(
                rate_limit(f.value)
                    .map(Some)
                    .map_err(|why| invalid(&f.variable, f.value, &why)),
            ),
        };
        let default_body = legacy(&name).map_or(BodyShape::Raw, |(_, body)| body);
        let body = match self.setting(p, &name, "BODY") {
            Err(Reported) => None,
            Ok(None) => Some(default_body),
            Ok(Some(f)) => {
                p.check(one_of(BODIES)(f.value).map_err(|why| invalid(&f.variable, f.value, &why)))
            }
        };
        Some(TargetConfig {
            name,
            url: url?,
            token: token?,
            rate_limit: rate_limit?,
            body: body?,
        })
    }

    /// The value of one setting of a target, in whichever spelling was used;
    /// both spellings at once is a problem. Empty values count as unset.
    fn setting(
        &self,
        p: &mut Problems,
        name: &TargetName,
        key: &str,
    ) -> Result<Option<Found<'_>>, Reported> {
        let get = |variable: &str| {
            self.target_vars
                .get(variable)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let new = format!("{PREFIX}TARGET_{}_{key}", name.env_key());
        // The older spelling never had a BODY: its shape was fixed.
        let old = legacy(name)
            .filter(|_| key != "BODY")
            .map(|(old, _)| format!("{PREFIX}{old}_{key}"));
        let old_value = old.as_deref().and_then(get);
        match (old, old_value, get(&new)) {
            (Some(old), Some(_), Some(_)) => {
                p.0.push(format!(
                    "{old} and {new} are both set: they are two spellings of one setting of target {:?}; set only one",
                    name.as_str()
                ));
                Err(Reported)
            }
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
