//! `fanout-bridge console`: a web page (and a JSON API) for watching and
//! repairing the DLQ, served by the binary itself, assets included (no CDN,
//! no build step; it works offline).
//!
//! Every action is a DLQ command of [`crate::commands::dlq`] (groups, list,
//! replay, export, purge): one pass on the [`crate::broker::dlq_pass`]
//! engine, under the DLQ's lock. The console adds what a page needs:
//!
//! - the latest read of the failure groups, kept (a read is a full pass, so
//!   the page does not cost one per load); "Read again" refreshes it;
//! - the depth (a passive declare, no pass, no lock), sampled every
//!   [`SAMPLE_EVERY`] for the last hour's chart;
//! - [`auth`]: Host, token, CSRF and the response headers.
//! - `api`: the JSON handlers.

mod api;
pub mod auth;
mod params;
mod reply;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    body::Bytes,
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    broker::{dlq_pass::Stop, tool_session::ToolSession, topology, BrokerError},
    commands::dlq::groups::Groups,
    config::{BrokerConfig, ConfigError, RawConfig},
};

/// How often the depth is sampled for the chart.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// How far back the chart goes.
pub const HISTORY: Duration = Duration::from_secs(3600);

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The console's state, shared by the handlers.
pub struct Console {
    broker: BrokerConfig,
    auth: auth::Auth,
    /// This console's passes wait for each other instead of failing on the
    /// DLQ's lock (which stays the guard against every other process).
    passes: tokio::sync::Mutex<()>,
    /// The latest read of the failure groups.
    latest: Mutex<Option<Arc<LatestRead>>>,
    depth: DepthProbe,
    /// Set on shutdown: a running pass settles what it holds and stops.
    stop: Stop,
}

/// A read of the groups, and when it was made.
pub struct LatestRead {
    groups: Groups,
    at: OffsetDateTime,
    /// An action changed the DLQ since.
    stale: bool,
}

/// Serves the console on `listen` until SIGTERM or SIGINT.
///
/// # Errors
/// A configuration error (exit 2) when `listen` is not loopback and
/// `BRIDGE_CONSOLE_TOKEN` is unset; when the address cannot be bound.
pub async fn run(
    raw: &RawConfig,
    listen: SocketAddr,
    allow_hosts: &[String],
) -> anyhow::Result<ExitCode> {
    let token = raw.console_token()?;
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(ConfigError {
            problems: vec![format!(
                "BRIDGE_CONSOLE_TOKEN is not set: the console listens on {listen}, which is not a \
                 loopback address, so every request must carry a token; set \
                 BRIDGE_CONSOLE_TOKEN (e.g. `openssl rand -hex 24`) or listen on 127.0.0.1"
            )],
        }
        .into());
    }
    let broker = raw.broker_config()?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let shutdown = crate::shutdown::on_signal().context("installing the signal handlers")?;
    let console = Arc::new(Console {
        broker,
        auth: auth::Auth::new(token, addr, allow_hosts),
        passes: tokio::sync::Mutex::new(()),
        latest: Mutex::new(None),
        depth: DepthProbe::default(),
        stop: Stop::following(shutdown.clone()),
    });
    let sampler = tokio::spawn(sample_depth(console.clone()));
    info!(
        dlq = %console.broker.dlq,
        token = console.auth.token_required(),
        "console listening on http://{addr}/"
    );
    axum::serve(listener, router(console.clone()))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the console")?;
    sampler.abort();
    console.depth.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The routes, behind [`auth::guard`].
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/login", get(login_form).post(login))
        .route("/api/depth", get(api::depth))
        .route("/api/groups", get(api::groups))
        .route("/api/messages", get(api::messages))
        .route("/api/messages/{id}", get(api::message))
        .route("/api/export", get(api::export))
        .route("/api/replay", post(api::replay))
        .route("/api/purge", post(api::purge))
        .fallback(|| async { auth::refuse(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::guard,
        ))
        .with_state(console)
}

/// The page, with this process's CSRF token in a meta tag: only a page
/// loaded from the console can read it.
async fn index(State(console): State<Arc<Console>>) -> Response {
    let html = INDEX_HTML.replace("__CSRF_TOKEN__", console.auth.csrf());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The login form; `error` is one of our own fixed sentences, never input.
pub fn login_page(status: StatusCode, error: Option<&'static str>) -> Response {
    let html = LOGIN_HTML.replace("__ERROR__", error.unwrap_or(""));
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

async fn login_form(State(console): State<Arc<Console>>) -> Response {
    if !console.auth.token_required() {
        return redirect_home(None);
    }
    login_page(StatusCode::OK, None)
}

/// `POST /login` (form `token=...`): sets the session cookie (HttpOnly,
/// SameSite=Strict) and goes to the page. Its Origin was checked by the
/// guard.
async fn login(State(console): State<Arc<Console>>, body: Bytes) -> Response {
    if !console.auth.token_required() {
        return redirect_home(None);
    }
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if console.auth.token_matches(token.trim()) {
        info!("console: a browser logged in");
        redirect_home(Some(console.auth.login_cookie()))
    } else {
        warn!("console: a login with a wrong token");
        // A little slower to guess.
        tokio::time::sleep(Duration::from_millis(500)).await;
        login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the console's token."),
        )
    }
}

fn redirect_home(cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Some(cookie) = cookie.and_then(|c| c.parse().ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

impl Console {
    /// The latest read of the groups; reads the DLQ when there is none yet
    /// or `fresh` asks for a new one.
    async fn latest_groups(&self, fresh: bool) -> anyhow::Result<Arc<LatestRead>> {
        if !fresh {
            if let Some(read) = self.latest.lock().map(|l| l.clone()).ok().flatten() {
                return Ok(read);
            }
        }
        let _pass = self.passes.lock().await;
        // Another request read while this one waited.
        if !fresh {
            if let Some(read) = self.latest.lock().map(|l| l.clone()).ok().flatten() {
                return Ok(read);
            }
        }
        let groups = crate::commands::dlq::groups::collect_groups(
            &self.broker,
            &crate::domain::failure::Filter::default(),
            &self.stop,
        )
        .await?;
        let read = Arc::new(LatestRead {
            groups,
            at: OffsetDateTime::now_utc(),
            stale: false,
        });
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(read.clone());
        }
        Ok(read)
    }

    /// After an action changed the DLQ: the latest read no longer says what
    /// is there.
    fn mark_stale(&self) {
        if let Ok(mut latest) = self.latest.lock() {
            if let Some(read) = latest.as_ref() {
                *latest = Some(Arc::new(LatestRead {
                    groups: read.groups.clone(),
                    at: read.at,
                    stale: true,
                }));
            }
        }
    }
}

// === depth ===

/// The DLQ's depth by a passive declare on a connection kept for it (no
/// pass, no lock), and its samples over the last hour.
#[derive(Default)]
struct DepthProbe {
    session: tokio::sync::Mutex<Option<ToolSession>>,
    samples: Mutex<VecDeque<(i64, u32)>>,
}

impl DepthProbe {
    /// The depth now, `None` when the DLQ does not exist.
    async fn read(&self, broker: &BrokerConfig) -> anyhow::Result<Option<u32>> {
        let mut slot = self.session.lock().await;
        let mut last = None;
        // A connection that died since the last read is opened again, once.
        for _ in 0..2 {
            let session = match slot.take() {
                Some(s) => s,
                None => ToolSession::open(broker, "console depth").await?,
            };
            match topology::depth(&session.channel, &broker.dlq).await {
                Ok(d) => {
                    *slot = Some(session);
                    return Ok(Some(d));
                }
                // The broker closed the channel: start afresh next time.
                Err(BrokerError::QueueMissing(_)) => {
                    session.close().await;
                    return Ok(None);
                }
                Err(e) => {
                    session.close().await;
                    last = Some(e);
                }
            }
        }
        Err(anyhow::Error::from(last.expect("a failed attempt")).context("reading the DLQ's depth"))
    }

    fn record(&self, at: OffsetDateTime, depth: u32) {
        if let Ok(mut samples) = self.samples.lock() {
            let now = at.unix_timestamp();
            samples.push_back((now, depth));
            let horizon = now - HISTORY.as_secs() as i64;
            while samples.front().is_some_and(|(t, _)| *t < horizon) {
                samples.pop_front();
            }
        }
    }

    fn history(&self) -> Vec<(i64, u32)> {
        self.samples
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    async fn close(&self) {
        if let Some(session) = self.session.lock().await.take() {
            session.close().await;
        }
    }
}

/// Samples the depth every [`SAMPLE_EVERY`] while the console runs.
async fn sample_depth(console: Arc<Console>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match console.depth.read(&console.broker).await {
            Ok(depth) => console
                .depth
                .record(OffsetDateTime::now_utc(), depth.unwrap_or(0)),
            Err(e) => warn!("console: sampling the DLQ's depth: {e:#}"),
        }
    }
}
