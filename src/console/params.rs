//! What a request asks for: the filters as query parameters (GET) or a
//! JSON object (POST), paging, and an action's options. Anything unknown is
//! refused, so a typo cannot widen a selection.

use serde::Deserialize;
use time::OffsetDateTime;

use super::{api::MAX_LIMIT, reply::ApiError};
use crate::domain::failure::{parse_time, Filter};

/// The filter fields as text, from a query or a JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilterFields {
    pub(super) reason: Option<String>,
    pub(super) target: Option<String>,
    pub(super) group: Option<String>,
    #[serde(default)]
    pub(super) id: Ids,
    pub(super) since: Option<String>,
    pub(super) until: Option<String>,
    pub(super) grep: Option<String>,
}

/// `"id": "m-1"` or `"id": ["m-1", "m-2"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub(super) enum Ids {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl FilterFields {
    pub(super) fn to_filter(&self) -> Result<Filter, ApiError> {
        let now = OffsetDateTime::now_utc();
        let when = |name: &str, v: &Option<String>| match v.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(t) => parse_time(t, now)
                .map(Some)
                .map_err(|e| ApiError::Bad(format!("{name}: {e}"))),
        };
        let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let ids = match &self.id {
            Ids::None => Vec::new(),
            Ids::One(id) => vec![id.clone()],
            Ids::Many(ids) => ids.clone(),
        };
        Ok(Filter {
            reason: text(&self.reason),
            target: text(&self.target),
            group: text(&self.group).map(|g| g.to_ascii_lowercase()),
            ids: ids.into_iter().filter(|i| !i.is_empty()).collect(),
            since: when("since", &self.since)?,
            until: when("until", &self.until)?,
            grep: text(&self.grep),
        })
    }
}

/// A GET's query: the filters and the paging (`offset`, `limit`) or
/// `fresh`; an unknown parameter is refused (a typo must not widen a
/// selection).
#[derive(Debug, Default)]
pub(super) struct Query {
    pub(super) filter: FilterFields,
    pub(super) offset: u64,
    pub(super) limit: Option<usize>,
    pub(super) fresh: bool,
}

pub(super) fn query(raw: Option<&str>, paging: bool) -> Result<Query, ApiError> {
    let mut q = Query::default();
    let number = |k: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| ApiError::Bad(format!("{k}: not a number: {v:?}")))
    };
    let mut ids = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "reason" => q.filter.reason = Some(v),
            "target" => q.filter.target = Some(v),
            "group" => q.filter.group = Some(v),
            "id" => ids.push(v),
            "since" => q.filter.since = Some(v),
            "until" => q.filter.until = Some(v),
            "grep" => q.filter.grep = Some(v),
            "offset" if paging => q.offset = number("offset", &v)?,
            "limit" if paging => {
                let n = number("limit", &v)?;
                if n == 0 || n > MAX_LIMIT as u64 {
                    return Err(ApiError::Bad(format!("limit: 1 to {MAX_LIMIT}")));
                }
                q.limit = Some(n as usize);
            }
            "fresh" if !paging => q.fresh = !matches!(v.as_str(), "0" | "false"),
            other => return Err(ApiError::Bad(format!("unknown parameter {other:?}"))),
        }
    }
    q.filter.id = Ids::Many(ids);
    Ok(q)
}

/// The JSON body of a POST. The filter fields are spelled out again rather
/// than flattened from [`FilterFields`]: serde cannot refuse unknown fields
/// through a flattened struct.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionBody {
    pub(super) reason: Option<String>,
    pub(super) target: Option<String>,
    pub(super) group: Option<String>,
    #[serde(default)]
    pub(super) id: Ids,
    pub(super) since: Option<String>,
    pub(super) until: Option<String>,
    pub(super) grep: Option<String>,
    /// replay: messages per second.
    pub(super) rate: Option<u32>,
    /// replay: at most this many.
    pub(super) limit: Option<u32>,
    /// purge: needed when no filter is given.
    #[serde(default)]
    pub(super) all: bool,
    #[serde(default)]
    pub(super) dry_run: bool,
    /// How many messages the page said the action touches: when the DLQ
    /// now holds another number of matching messages, nothing is done (409).
    pub(super) expect: Option<u64>,
}

impl ActionBody {
    pub(super) fn parse(body: &[u8]) -> Result<ActionBody, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(ActionBody::default());
        }
        serde_json::from_slice(body)
            .map_err(|e| ApiError::Bad(format!("the body must be a JSON object of filters: {e}")))
    }

    pub(super) fn filter(self) -> Result<(Filter, ActionBody), ApiError> {
        let fields = FilterFields {
            reason: self.reason.clone(),
            target: self.target.clone(),
            group: self.group.clone(),
            id: match &self.id {
                Ids::None => Ids::None,
                Ids::One(i) => Ids::One(i.clone()),
                Ids::Many(v) => Ids::Many(v.clone()),
            },
            since: self.since.clone(),
            until: self.until.clone(),
            grep: self.grep.clone(),
        };
        Ok((fields.to_filter()?, self))
    }
}

// === handlers ===
