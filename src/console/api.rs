//! The JSON API, which the page uses too: `/api/depth`, `/api/groups`,
//! `/api/messages[/<id>]`, `/api/export`, `POST /api/replay`,
//! `POST /api/purge`. Filters come as query parameters (GET) or a JSON
//! object (POST) with the CLI's names: `reason`, `target`, `group`, `id`
//! (repeatable / a list), `since`, `until`, `grep`.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{Path, RawQuery, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt as _;
use tracing::{info, warn};

use super::Console;
use crate::{
    broker::dlq_pass::DlqBusy,
    commands::dlq::{self, export, groups, list, purge, ReplayRequest},
    domain::{
        dead_letter::rfc3339_utc,
        failure::{parse_time, Filter},
    },
};

/// Messages per page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

/// Why a request failed, as the status it gets.
pub(super) enum ApiError {
    Bad(String),
    NotFound(String),
    Failed(anyhow::Error),
    /// The DLQ changed since the page counted: `(the page's count, now)`.
    Changed(u64, u64),
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Failed(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Bad(m) => error(StatusCode::BAD_REQUEST, &m),
            ApiError::NotFound(m) => error(StatusCode::NOT_FOUND, &m),
            ApiError::Changed(expected, matched) => json_response(
                StatusCode::CONFLICT,
                &json!({
                    "error": format!(
                        "the DLQ changed: {matched} messages match now, not the {expected} \
                         the page counted; nothing was done (read again)"
                    ),
                    "expected": expected,
                    "matched": matched,
                }),
            ),
            ApiError::Failed(e) => match e.chain().find_map(|c| c.downcast_ref::<DlqBusy>()) {
                // The page says so; the DlqBusy text starts with "another
                // DLQ operation is running".
                Some(busy) => error(StatusCode::CONFLICT, &busy.to_string()),
                None => {
                    warn!("console: {e:#}");
                    error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}"))
                }
            },
        }
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn ok(value: &impl Serialize) -> ApiResult {
    Ok(json_response(StatusCode::OK, value))
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

// === filters ===

/// The filter fields as text, from a query or a JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterFields {
    reason: Option<String>,
    target: Option<String>,
    group: Option<String>,
    #[serde(default)]
    id: Ids,
    since: Option<String>,
    until: Option<String>,
    grep: Option<String>,
}

/// `"id": "m-1"` or `"id": ["m-1", "m-2"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Ids {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl FilterFields {
    fn to_filter(&self) -> Result<Filter, ApiError> {
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
struct Query {
    filter: FilterFields,
    offset: u64,
    limit: Option<usize>,
    fresh: bool,
}

fn query(raw: Option<&str>, paging: bool) -> Result<Query, ApiError> {
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

/// The JSON body of a POST.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    reason: Option<String>,
    target: Option<String>,
    group: Option<String>,
    #[serde(default)]
    id: Ids,
    since: Option<String>,
    until: Option<String>,
    grep: Option<String>,
    /// replay: messages per second.
    rate: Option<u32>,
    /// replay: at most this many.
    limit: Option<u32>,
    /// purge: needed when no filter is given.
    #[serde(default)]
    all: bool,
    #[serde(default)]
    dry_run: bool,
    /// How many messages the page said the action touches: when the DLQ
    /// now holds another number of matching messages, nothing is done (409).
    expect: Option<u64>,
}

impl ActionBody {
    fn parse(body: &[u8]) -> Result<ActionBody, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(ActionBody::default());
        }
        serde_json::from_slice(body)
            .map_err(|e| ApiError::Bad(format!("the body must be a JSON object of filters: {e}")))
    }

    fn filter(self) -> Result<(Filter, ActionBody), ApiError> {
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

/// `GET /api/depth`: `{"dlq", "depth" (null when the DLQ does not exist),
/// "at", "history": [[unix seconds, depth], ...]}` (the last hour).
pub(super) async fn depth(State(c): State<Arc<Console>>) -> Response {
    let now = OffsetDateTime::now_utc();
    match c.depth.read(&c.broker).await {
        Ok(depth) => json_response(
            StatusCode::OK,
            &json!({
                "dlq": c.broker.dlq,
                "depth": depth,
                "at": rfc3339_utc(now),
                "history": c.depth.history(),
            }),
        ),
        Err(e) => ApiError::Failed(e).into_response(),
    }
}

/// Runs a request's DLQ work on a task of its own. A client that goes away
/// (a closed tab, a proxy's timeout, a page that aborts its fetch) drops the
/// handler; a pass dropped there would leave its window unsettled and hand
/// messages back to the DLQ (each a delivery attempt of a quorum DLQ). On
/// its own task the pass finishes and settles whatever happens to the
/// request.
async fn detached<F>(work: F) -> ApiResult
where
    F: std::future::Future<Output = ApiResult> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ApiError::Failed(anyhow::anyhow!(
            "the DLQ operation was cancelled: {e}"
        ))),
    }
}

/// `GET /api/groups[?fresh=1][&FILTERS]`: the `dlq groups` JSON of the
/// latest read, with `read_at` and `stale` (an action changed the DLQ
/// since). The first request reads; `fresh=1` reads again; filters read
/// with them (not kept).
pub(super) async fn groups(State(c): State<Arc<Console>>, RawQuery(raw): RawQuery) -> ApiResult {
    detached(groups_pass(c, raw)).await
}

async fn groups_pass(c: Arc<Console>, raw: Option<String>) -> ApiResult {
    let q = query(raw.as_deref(), false)?;
    let filter = q.filter.to_filter()?;
    if !filter.is_empty() {
        let _pass = c.passes.lock().await;
        let g = groups::collect_groups(&c.broker, &filter, &c.stop).await?;
        let read_at = rfc3339_utc(OffsetDateTime::now_utc());
        return ok(&view(&g, &read_at, false));
    }
    let read = c.latest_groups(q.fresh).await?;
    ok(&view(&read.groups, &rfc3339_utc(read.at), read.stale))
}

fn view(g: &groups::Groups, read_at: &str, stale: bool) -> Value {
    let mut v = serde_json::to_value(g).unwrap_or_default();
    v["read_at"] = json!(read_at);
    v["stale"] = json!(stale);
    v
}

/// `GET /api/messages?FILTERS&offset=&limit=`: `{"total", "offset",
/// "next_offset", "messages": [export records]}`; one full pass.
pub(super) async fn messages(State(c): State<Arc<Console>>, RawQuery(raw): RawQuery) -> ApiResult {
    detached(messages_pass(c, raw)).await
}

async fn messages_pass(c: Arc<Console>, raw: Option<String>) -> ApiResult {
    let q = query(raw.as_deref(), true)?;
    let filter = q.filter.to_filter()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let _pass = c.passes.lock().await;
    let page = list::list_messages(&c.broker, &filter, q.offset, limit, &c.stop).await?;
    ok(&page)
}

/// `GET /api/messages/<message_id>`: its export record (the first, should
/// the DLQ hold copies), with `copies`; 404 when none has that id.
pub(super) async fn message(State(c): State<Arc<Console>>, Path(id): Path<String>) -> ApiResult {
    detached(message_pass(c, id)).await
}

async fn message_pass(c: Arc<Console>, id: String) -> ApiResult {
    let filter = Filter {
        ids: vec![id.clone()],
        ..Filter::default()
    };
    let _pass = c.passes.lock().await;
    let page = list::list_messages(&c.broker, &filter, 0, 1, &c.stop).await?;
    let Some(mut record) = page.messages.into_iter().next() else {
        return Err(ApiError::NotFound(format!(
            "no message with message_id {id:?} in the DLQ"
        )));
    };
    record["copies"] = json!(page.total);
    ok(&record)
}

/// `POST /api/replay` `{FILTERS, "rate"?, "limit"?, "dry_run"?}`: the
/// `dlq replay --format json` report.
pub(super) async fn replay(State(c): State<Arc<Console>>, body: Bytes) -> ApiResult {
    detached(replay_pass(c, body)).await
}

async fn replay_pass(c: Arc<Console>, body: Bytes) -> ApiResult {
    let (filter, body) = ActionBody::parse(&body)?.filter()?;
    if body.all {
        return Err(ApiError::Bad(
            "\"all\" is for purge; a replay without filters moves every message".into(),
        ));
    }
    if body.rate == Some(0) || body.limit == Some(0) {
        return Err(ApiError::Bad("rate and limit must be at least 1".into()));
    }
    let request = ReplayRequest {
        limit: body.limit,
        filter,
        dry_run: body.dry_run,
        rate: body.rate,
    };
    let _pass = c.passes.lock().await;
    if let (Some(expected), false) = (body.expect, request.dry_run) {
        let counted = ReplayRequest {
            dry_run: true,
            ..request.clone()
        };
        let now = dlq::replay::replay_messages_until(&c.broker, &counted, &c.stop).await?;
        if now.matched != expected {
            return Err(ApiError::Changed(expected, now.matched));
        }
    }
    let report = dlq::replay::replay_messages_until(&c.broker, &request, &c.stop).await?;
    if !request.dry_run {
        c.mark_stale();
    }
    info!(
        matched = report.matched,
        moved = report.moved,
        dry_run = request.dry_run,
        "console: replay"
    );
    let status = if report.error.is_some() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &report))
}

/// `POST /api/purge` `{FILTERS, "all"?, "dry_run"?}`: the `dlq purge
/// --format json` report. Without a filter it needs `"all": true`.
pub(super) async fn purge(State(c): State<Arc<Console>>, body: Bytes) -> ApiResult {
    detached(purge_pass(c, body)).await
}

async fn purge_pass(c: Arc<Console>, body: Bytes) -> ApiResult {
    let (filter, body) = ActionBody::parse(&body)?.filter()?;
    if body.rate.is_some() || body.limit.is_some() {
        return Err(ApiError::Bad("purge takes no rate or limit".into()));
    }
    if filter.is_empty() && !body.all {
        return Err(ApiError::Bad(
            "purge needs a filter, or \"all\": true to remove every message".into(),
        ));
    }
    let _pass = c.passes.lock().await;
    if let (Some(expected), false) = (body.expect, body.dry_run) {
        let now = purge::purge_messages(&c.broker, &filter, true, &c.stop).await?;
        if now.matched != expected {
            return Err(ApiError::Changed(expected, now.matched));
        }
    }
    let report = purge::purge_messages(&c.broker, &filter, body.dry_run, &c.stop).await?;
    if !body.dry_run {
        c.mark_stale();
    }
    info!(
        matched = report.matched,
        removed = report.removed,
        dry_run = body.dry_run,
        "console: purge"
    );
    let status = if report.error.is_some() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &report))
}

/// `GET /api/export?FILTERS`: the `dlq export` lines as a download. The
/// pass writes a temporary file (memory stays bounded), which is then sent
/// and removed.
pub(super) async fn export(State(c): State<Arc<Console>>, RawQuery(raw): RawQuery) -> ApiResult {
    detached(export_pass(c, raw)).await
}

async fn export_pass(c: Arc<Console>, raw: Option<String>) -> ApiResult {
    let q = query(raw.as_deref(), false)?;
    if q.fresh {
        return Err(ApiError::Bad("unknown parameter \"fresh\"".into()));
    }
    let filter = q.filter.to_filter()?;
    let path = std::env::temp_dir().join(format!(
        "fanout-bridge-console-export-{}.jsonl",
        uuid::Uuid::new_v4().simple()
    ));
    let written = {
        let _pass = c.passes.lock().await;
        export::export_to_file(&c.broker, &filter, &path, &c.stop).await
    };
    let opened = match written {
        Ok(n) => {
            info!(messages = n, "console: export");
            tokio::fs::File::open(&path).await
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
    };
    // Open, then unlinked: the file goes when the download ends.
    let _ = std::fs::remove_file(&path);
    let file = opened.map_err(|e| ApiError::Failed(anyhow::Error::from(e)))?;
    let stream = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    let name: String = c
        .broker
        .dlq
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '.' || ch == '-' {
                ch
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!("attachment; filename=\"{name}-{stamp}.jsonl\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_reads_repeated_ids_and_refuses_unknown_parameters() {
        let q = query(Some("id=a&id=b&group=ABCD0123&offset=50&limit=10"), true)
            .ok()
            .unwrap();
        let f = q.filter.to_filter().ok().unwrap();
        assert_eq!(f.ids, ["a", "b"]);
        assert_eq!(f.group.as_deref(), Some("abcd0123"));
        assert_eq!((q.offset, q.limit), (50, Some(10)));
        assert!(query(Some("groupp=x"), true).is_err());
        assert!(query(Some("limit=0"), true).is_err());
        assert!(query(Some("offset=1"), false).is_err());
        assert!(query(Some("since=yesterday"), true)
            .ok()
            .unwrap()
            .filter
            .to_filter()
            .is_err());
    }

    #[test]
    fn a_body_takes_one_id_or_many_and_nothing_unknown() {
        let (f, _) = ActionBody::parse(br#"{"id":"m-1"}"#)
            .ok()
            .unwrap()
            .filter()
            .ok()
            .unwrap();
        assert_eq!(f.ids, ["m-1"]);
        let (f, b) = ActionBody::parse(br#"{"id":["a","b"],"rate":5}"#)
            .ok()
            .unwrap()
            .filter()
            .ok()
            .unwrap();
        assert_eq!((f.ids.len(), b.rate), (2, Some(5)));
        assert!(ActionBody::parse(br#"{"groups":"x"}"#).is_err());
        let (f, b) = ActionBody::parse(b"").ok().unwrap().filter().ok().unwrap();
        assert!(f.is_empty() && !b.all);
    }
}
