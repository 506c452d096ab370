//! An API stand-in that records requests when they arrive (the fake APIs of
//! helpers.rs record them when answered), answers 200 after a delay, and
//! notes any Idempotency-Key seen twice at the same time.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, Router};
use tokio::net::TcpListener;

#[derive(Default)]
struct Inner {
    arrived: usize,
    active: HashMap<String, usize>,
    overlapping: Vec<String>,
}

#[derive(Clone)]
pub struct SlowApi {
    pub addr: SocketAddr,
    state: Arc<(Mutex<Inner>, Duration)>,
}

/// Takes the key off the active list even when the worker hangs up.
struct Active(Arc<(Mutex<Inner>, Duration)>, String);

impl Drop for Active {
    fn drop(&mut self) {
        let mut inner = self.0 .0.lock().unwrap();
        if let Some(n) = inner.active.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                inner.active.remove(&self.1);
            }
        }
    }
}

async fn answer(
    State(state): State<Arc<(Mutex<Inner>, Duration)>>,
    headers: HeaderMap,
) -> &'static str {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    {
        let mut inner = state.0.lock().unwrap();
        inner.arrived += 1;
        let n = inner.active.entry(key.clone()).or_default();
        *n += 1;
        if *n > 1 {
            inner.overlapping.push(key.clone());
        }
    }
    let _active = Active(Arc::clone(&state), key);
    tokio::time::sleep(state.1).await;
    "{}"
}

impl SlowApi {
    pub async fn start(delay: Duration) -> SlowApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new((Mutex::new(Inner::default()), delay));
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        SlowApi { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Requests that have arrived, answered or not.
    pub fn arrived(&self) -> usize {
        self.state.0.lock().unwrap().arrived
    }

    /// Keys that were being processed twice at the same moment.
    pub fn overlapping(&self) -> Vec<String> {
        self.state.0.lock().unwrap().overlapping.clone()
    }
}
