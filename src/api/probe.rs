//! `fanout-bridge check`'s look at one target: a TCP connection, and for
//! `https://` a TLS handshake, made by the same connector the worker's
//! client uses (the proxy the environment names for the target, the
//! platform's roots plus `BRIDGE_CA_FILE`, the client certificate), so that
//! what passes here is what the worker will meet. No request is sent.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use super::proxy::Connector;
use crate::config::{ProxyConfig, TargetConfig};

/// What the probe of one target found: each step's detail line, or why it
/// failed.
#[derive(Debug)]
pub struct Probe {
    pub tcp: Result<String, String>,
    /// `None` for `http://` targets.
    pub tls: Option<Result<String, String>>,
}

/// Connects to `target`'s host as the worker would, each step within
/// `timeout`.
pub async fn probe(
    target: &TargetConfig,
    tls: rustls::ClientConfig,
    proxy: &ProxyConfig,
    timeout: Duration,
) -> Probe {
    let url = &target.url;
    let https = url.scheme() == "https";
    let host = url.host_str().unwrap_or_default();
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let authority = format!("{host}:{port}");
    // Scheme and authority only: the URL's credentials have no business in
    // a connection (nor in an error text).
    let uri: http::Uri = match format!("{}://{authority}/", url.scheme()).parse() {
        Ok(uri) => uri,
        Err(e) => {
            return Probe {
                tcp: Err(format!("not a usable URL ({e})")),
                tls: None,
            }
        }
    };
    let proxies = proxy.matcher();
    // The proxy by its address alone: its URL may hold a password.
    let via = proxies.intercept(&uri).map(|i| {
        let p = i.uri();
        let port = p.port_u16().unwrap_or(80);
        format!("{}:{port}", p.host().unwrap_or_default())
    });
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(timeout));
    let mut connector = Connector::new(tcp, proxies);

    let tcp = match tokio::time::timeout(timeout, connector.call(uri.clone())).await {
        Err(_) => Err(format!(
            "{authority}: no connection within {} s",
            timeout.as_secs()
        )),
        Ok(Err(e)) => Err(format!("{authority}: {}", chain(&*e))),
        Ok(Ok(_conn)) => Ok(match (&via, https) {
            (None, _) => format!("connected to {authority}"),
            (Some(p), true) => {
                format!("connected to {authority} through the proxy at {p} (CONNECT)")
            }
            // A forwarding proxy connects to the target per request: only
            // the proxy itself is reachable without sending one.
            (Some(p), false) => {
                format!("connected to the proxy at {p}, which forwards to {authority} (not checked beyond the proxy)")
            }
        }),
    };
    if !https {
        return Probe { tcp, tls: None };
    }
    if tcp.is_err() {
        return Probe {
            tcp,
            tls: Some(Err("not tried: no TCP connection".to_owned())),
        };
    }
    let mut https_connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector);
    let tls = match tokio::time::timeout(timeout, https_connector.call(uri)).await {
        Err(_) => Err(format!(
            "{authority}: no handshake within {} s",
            timeout.as_secs()
        )),
        Ok(Err(e)) => Err(format!("{authority}: {}", chain(&*e))),
        Ok(Ok(hyper_rustls::MaybeHttpsStream::Https(stream))) => {
            let (_, session) = stream.inner().get_ref();
            let version = session
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("TLS");
            let alpn = session
                .alpn_protocol()
                .map_or("none".into(), |p| String::from_utf8_lossy(p).into_owned());
            Ok(format!(
                "handshake with {host} ok ({version}, ALPN {alpn}, certificate verified)"
            ))
        }
        Ok(Ok(hyper_rustls::MaybeHttpsStream::Http(_))) => {
            Err("the connector did not speak TLS (not expected)".to_owned())
        }
    };
    Probe {
        tcp,
        tls: Some(tls),
    }
}

/// An error and its causes on one line, without repeats (connectors wrap
/// the same message at several layers).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}
