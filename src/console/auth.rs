//! Who may talk to the console, checked on every request before any route:
//!
//! - **Host** (always): a request whose `Host` is not the console's own
//!   address is refused, so a DNS-rebinding page (evil.example resolving to
//!   127.0.0.1) cannot read or drive it.
//! - **Token** (when `BRIDGE_CONSOLE_TOKEN` is set): `Authorization: Bearer
//!   <token>`, or the session cookie the login form sets (HttpOnly,
//!   SameSite=Strict). Compared in constant time.
//! - **CSRF**: a state-changing request that carries an `Origin` (a
//!   browser's) must come from the console's own origin and carry
//!   `X-CSRF-Token`, which only the console's page has (in a meta tag). A
//!   script's request (no `Origin`) needs only the bearer token.
//! - **Headers** on every response: a Content-Security-Policy allowing only
//!   the console's own script and style, `nosniff`, no referrer, no framing.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::Response,
};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::Console;
use crate::config::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "fanout_bridge_console";

/// The header a browser's state-changing request carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

/// The console's secrets and its own addresses.
pub struct Auth {
    token: Option<Secret>,
    /// The session cookie's value after a login: random per process, so
    /// the cookie never holds the token and a restart logs everyone out.
    session: Secret,
    /// Embedded in the page; required on a browser's state-changing request.
    csrf: Secret,
    /// (host, port) pairs the `Host` header may name; a `None` port is any.
    hosts: Vec<(String, Option<u16>)>,
}

impl Auth {
    /// `listen` is the bound address; `extra` the `--allow-host` values.
    pub fn new(token: Option<Secret>, listen: SocketAddr, extra: &[String]) -> Auth {
        let port = listen.port();
        let mut hosts = Vec::new();
        let ip = listen.ip();
        if !ip.is_unspecified() {
            hosts.push((ip.to_string(), Some(port)));
        }
        // Loopback names: the console's own on loopback, and what a port
        // mapping to 127.0.0.1 or `kubectl port-forward` shows when it
        // listens on every address.
        if ip.is_loopback() || ip.is_unspecified() {
            for name in ["localhost", "127.0.0.1", "::1"] {
                hosts.push((name.to_owned(), Some(port)));
            }
        }
        for h in extra {
            if let Some((name, p)) = split_host(h) {
                hosts.push((name, p));
            }
        }
        Auth {
            token,
            session: Secret::new(random_hex()),
            csrf: Secret::new(random_hex()),
            hosts,
        }
    }

    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }

    pub fn csrf(&self) -> &str {
        self.csrf.expose()
    }

    /// Whether `Host` (`name[:port]`, port 80 when absent) is ours.
    pub fn host_ok(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        let port = port.unwrap_or(80);
        self.hosts
            .iter()
            .any(|(n, p)| *n == name && p.is_none_or(|p| p == port))
    }

    /// Whether an `Origin` is the console's own (http or https, our host).
    pub fn origin_ok(&self, origin: &str) -> bool {
        let Ok(url) = url::Url::parse(origin) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        let name = host.trim_start_matches('[').trim_end_matches(']');
        self.hosts
            .iter()
            .any(|(n, p)| n.eq_ignore_ascii_case(name) && p.is_none_or(|p| p == port))
    }

    /// Whether the token matches (constant time).
    pub fn token_matches(&self, given: &str) -> bool {
        self.token.as_ref().is_some_and(|t| same(t.expose(), given))
    }

    /// The `Set-Cookie` value of a login.
    pub fn login_cookie(&self) -> String {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            self.session.expose()
        )
    }

    /// Whether the request carries the token, or the session cookie.
    fn authenticated(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|given| same(token.expose(), given.trim()));
        bearer
            || cookies(headers)
                .filter(|(k, _)| *k == COOKIE)
                .any(|(_, v)| same(self.session.expose(), v))
    }
}

/// The middleware: refuses what [`Auth`] does not allow and puts the
/// security headers on every response.
pub async fn guard(State(console): State<Arc<Console>>, req: Request, next: Next) -> Response {
    let mut response = match refusal(&console.auth, &req) {
        None => next.run(req).await,
        Some(refused) => refused,
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Why the request is refused, if it is.
fn refusal(auth: &Auth, req: &Request) -> Option<Response> {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if !auth.host_ok(host) {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "this console answers only to its own address (the Host header names another); \
             see --allow-host",
        ));
    }
    let path = req.uri().path();
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or(""));
    // Reading the DLQ is a pass that holds the lock: another site's page must
    // not be able to start one (a no-cors fetch sends no Origin on a GET, but
    // browsers mark it with Sec-Fetch-Site).
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site");
    if cross_site && path.starts_with("/api/") {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "refused: another site's page may not use the console's API",
        ));
    }
    if changes {
        if let Some(origin) = origin {
            if !auth.origin_ok(origin) {
                return Some(refuse(
                    StatusCode::FORBIDDEN,
                    "refused: a request from another site (Origin) may not change anything",
                ));
            }
        }
    }
    // The login form and its stylesheet are what an unauthenticated browser
    // needs to authenticate; they hold no data.
    if path == "/login" || path == "/app.css" {
        return None;
    }
    if !auth.authenticated(headers) {
        return Some(unauthenticated(headers));
    }
    if changes && origin.is_some() {
        let given = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same(auth.csrf(), given) {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                "refused: a browser's request that changes something needs the console page's \
                 CSRF token (X-CSRF-Token); reload the page",
            ));
        }
    }
    None
}

/// 401: the login form for a browser, JSON for a script.
fn unauthenticated(headers: &HeaderMap) -> Response {
    let html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let mut response = if html {
        super::login_page(StatusCode::UNAUTHORIZED, None)
    } else {
        refuse(
            StatusCode::UNAUTHORIZED,
            "the console needs its token: Authorization: Bearer <BRIDGE_CONSOLE_TOKEN>, or log in at /login",
        )
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"fanout-bridge console\""),
    );
    response
}

/// A JSON error `{"error": ...}`.
pub fn refuse(status: StatusCode, message: &str) -> Response {
    super::reply::json_response(status, &serde_json::json!({ "error": message }))
}

/// The `name=value` pairs of the `Cookie` headers.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k.trim(), v.trim()))
        })
}

/// `name[:port]` or `[v6]:port`, the name lower-cased; `None` when empty or
/// the port is not a number.
fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let host = host.trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (name, Some(p)),
            None if after.is_empty() => (name, None),
            None => return None,
        }
    } else {
        match host.rsplit_once(':') {
            // A bare IPv6 address (several colons) has no port.
            Some((n, p)) if !n.contains(':') => (n, Some(p)),
            _ => (host, None),
        }
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((name.to_ascii_lowercase(), port))
}

/// Equal, in time that does not depend on where they differ (or on their
/// lengths): the digests are compared whole.
pub fn same(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(listen: &str, extra: &[&str]) -> Auth {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        Auth::new(Some(Secret::new("t0k")), listen.parse().unwrap(), &extra)
    }

    #[test]
    fn hosts_are_the_listen_address_and_loopback_names() {
        let a = auth("127.0.0.1:9465", &[]);
        for ok in [
            "127.0.0.1:9465",
            "localhost:9465",
            "LOCALHOST:9465",
            "[::1]:9465",
        ] {
            assert!(a.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.example:9465",
            "127.0.0.1:9466",
            "localhost",
            "",
            "127.0.0.1:x",
        ] {
            assert!(!a.host_ok(bad), "{bad}");
        }
        let a = auth("10.1.2.3:9465", &["dlq.example.com"]);
        assert!(a.host_ok("10.1.2.3:9465") && a.host_ok("dlq.example.com"));
        assert!(a.host_ok("dlq.example.com:8443") && !a.host_ok("localhost:9465"));
        let a = auth("0.0.0.0:9465", &["proxy:443"]);
        assert!(a.host_ok("localhost:9465") && a.host_ok("proxy:443"));
        assert!(!a.host_ok("0.0.0.0:9465") && !a.host_ok("proxy:80"));
    }

    #[test]
    fn origins_must_be_the_console_itself() {
        let a = auth("127.0.0.1:9465", &[]);
        assert!(a.origin_ok("http://127.0.0.1:9465"));
        assert!(a.origin_ok("http://localhost:9465"));
        for bad in [
            "http://evil.example",
            "http://127.0.0.1:9466",
            "null",
            "file://",
        ] {
            assert!(!a.origin_ok(bad), "{bad}");
        }
    }

    #[test]
    fn the_token_compares_whole() {
        let a = auth("127.0.0.1:1", &[]);
        assert!(a.token_matches("t0k"));
        assert!(!a.token_matches("t0") && !a.token_matches("t0kk") && !a.token_matches(""));
        assert!(same("", "") && !same("a", "b"));
        assert!(!a.login_cookie().contains("t0k"));
        assert!(
            a.login_cookie().contains("HttpOnly") && a.login_cookie().contains("SameSite=Strict")
        );
    }
}
