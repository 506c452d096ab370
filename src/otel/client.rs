//! The OTLP exporter's HTTP client, built here rather than left to the
//! exporter: its default client trusts whatever roots reqwest was compiled
//! with (none in a release build, so every `https://` export failed), and
//! knows neither `BRIDGE_CA_FILE` nor `OTEL_EXPORTER_OTLP_CERTIFICATE`.
//!
//! Trust: the certificates of `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` or
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` when one is set (only those, as the
//! OpenTelemetry specification and the other SDKs have it); otherwise the
//! platform's roots plus `BRIDGE_CA_FILE`, as for the APIs.

use std::time::Duration;

use rustls::RootCertStore;

use super::var;
use crate::tls;

const CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
const TRACES_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE";
const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
/// The specification's default export timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client for the exporter; `ca_file` is `BRIDGE_CA_FILE`.
///
/// # Errors
/// A certificate file that cannot be read or holds no usable CA, naming its
/// variable (exit 2, like the other TLS files).
pub(super) fn build(ca_file: Option<&str>) -> Result<reqwest::blocking::Client, String> {
    let roots = roots(ca_file)?;
    let config = tls::client_config(roots).map_err(|e| format!("OTLP TLS: {e}"))?;
    let timeout = timeout();
    // reqwest's blocking client starts a runtime of its own, which must not
    // be created (or later dropped) inside another: a thread of its own keeps
    // this callable from anywhere, as the exporter's default client does.
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(timeout)
            .use_preconfigured_tls(config)
            .build()
    })
    .join()
    .map_err(|_| "cannot build the OTLP client (its thread panicked)".to_owned())?
    .map_err(|e| format!("cannot build the OTLP client ({e})"))
}

fn roots(ca_file: Option<&str>) -> Result<RootCertStore, String> {
    let chosen = [TRACES_CERTIFICATE, CERTIFICATE]
        .into_iter()
        .find_map(|name| var(name).map(|path| (name, path.trim().to_owned())));
    let (mut roots, extra) = match (chosen, ca_file) {
        (Some((name, path)), _) => (RootCertStore::empty(), Some((name, path))),
        (None, Some(path)) => (tls::platform_roots(), Some((tls::CA_FILE, path.to_owned()))),
        (None, None) => (tls::platform_roots(), None),
    };
    if let Some((name, path)) = extra {
        let certs = tls::read_cas(&path).map_err(|e| format!("{name}={path:?}: {e}"))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{name}={path:?}: not usable as a CA ({e})"))?;
        }
    }
    Ok(roots)
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, then `OTEL_EXPORTER_OTLP_TIMEOUT`
/// (milliseconds), as the exporter reads them: it applies the timeout only
/// to a client it builds itself.
fn timeout() -> Duration {
    [TRACES_TIMEOUT, TIMEOUT]
        .into_iter()
        .find_map(|name| var(name)?.trim().parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}
