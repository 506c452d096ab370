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
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt as _;
use tracing::info;

use super::{
    params::{query, ActionBody},
    reply::{json_response, ok, ApiError, ApiResult},
    Console,
};
use crate::{
    commands::dlq::{self, export, groups, list, purge, ReplayRequest},
    domain::{dead_letter::rfc3339_utc, failure::Filter},
};

/// Messages per page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

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
    Ok(report_response(report.error.is_some(), &report))
}

/// An action's report: 500 when it stopped part way (the report says how
/// far it got), else 200.
fn report_response(stopped: bool, report: &impl serde::Serialize) -> Response {
    let status = if stopped {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    json_response(status, report)
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
    Ok(report_response(report.error.is_some(), &report))
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
