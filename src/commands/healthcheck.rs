//! `fanout-bridge healthcheck`: exit 0 when the worker's `/readyz` answers
//! 200, else 1. Container images built from distroless have no curl or wget,
//! so the binary asks itself.
//!
//! One HTTP/1.1 GET over a plain TCP stream, no client pool and no proxy: the
//! ops listener is the worker's own, on this host or next to it, and a proxy
//! variable meant for the APIs must not send the probe elsewhere.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::ExitCode,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::config::{ConfigError, RawConfig};

/// The whole probe, from resolving to the status line. Orchestrators run a
/// healthcheck with a timeout of their own (Docker: 30 s by default); this
/// answers well within it, with a reason.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Where the probe goes: `host:port` to connect to, the `Host` header and the
/// path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub authority: String,
    pub path: String,
}

impl Target {
    /// The readiness endpoint of the worker listening on `addr`: an
    /// unspecified address (`0.0.0.0`, `::`) is reached on loopback of the
    /// same family (a `[::]` listener need not accept IPv4).
    pub fn from_listen_addr(addr: SocketAddr) -> Target {
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Target {
            authority: SocketAddr::new(ip, addr.port()).to_string(),
            path: "/readyz".to_owned(),
        }
    }

    /// `--url`: `http://HOST[:PORT][/PATH]`, or a bare `HOST:PORT`; no path
    /// means `/readyz`.
    ///
    /// # Errors
    /// Names `--url` when it is not such a URL.
    pub fn from_url(url: &str) -> Result<Target, ConfigError> {
        let bad = |why: &str| ConfigError::one(format!("--url {url:?} is not valid: {why}"));
        let text = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let parsed = url::Url::parse(&text).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "http" {
            return Err(bad(
                "only http:// (the worker's ops listener speaks plain HTTP)",
            ));
        }
        let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let path = match parsed.path() {
            "" | "/" => "/readyz".to_owned(),
            p => p.to_owned(),
        };
        let path = match parsed.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        Ok(Target {
            authority: format!("{host}:{port}"),
            path,
        })
    }

    fn shown(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// # Errors
/// A bad `BRIDGE_METRICS_ADDR` or `--url` (exit 2).
pub async fn run(raw: &RawConfig, url: Option<&str>) -> anyhow::Result<ExitCode> {
    let target = match url {
        Some(url) => Target::from_url(url)?,
        None => Target::from_listen_addr(raw.metrics_addr()?),
    };
    match tokio::time::timeout(TIMEOUT, status(&target)).await {
        Ok(Ok(200)) => {
            println!("ready: {} answered 200", target.shown());
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(code)) => {
            eprintln!("not ready: {} answered {code}", target.shown());
            Ok(ExitCode::from(1))
        }
        Ok(Err(e)) => {
            eprintln!("not ready: {}: {e}", target.shown());
            Ok(ExitCode::from(1))
        }
        Err(_) => {
            eprintln!(
                "not ready: {}: no answer within {} s",
                target.shown(),
                TIMEOUT.as_secs()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The status code of `GET target`, read from the status line.
async fn status(target: &Target) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(target.authority.as_str()).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fanout-bridge-healthcheck\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.write_all(request.as_bytes()).await?;
    // The status line is all we need; a few hundred bytes hold it.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not an HTTP response",
        )
    })
}

/// `HTTP/1.x NNN …` → NNN.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback() {
        let t = Target::from_listen_addr("0.0.0.0:9464".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:9464");
        assert_eq!(t.path, "/readyz");
        let t = Target::from_listen_addr("[::]:9464".parse().unwrap());
        assert_eq!(t.authority, "[::1]:9464");
        let t = Target::from_listen_addr("10.1.2.3:1234".parse().unwrap());
        assert_eq!(t.authority, "10.1.2.3:1234");
    }

    #[test]
    fn urls_default_to_readyz_and_must_be_http() {
        let t = Target::from_url("http://127.0.0.1:9464").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:9464", "/readyz")
        );
        let t = Target::from_url("localhost:81/healthz").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("localhost:81", "/healthz")
        );
        let t = Target::from_url("http://[::1]/readyz?x=1").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("[::1]:80", "/readyz?x=1")
        );
        let e = Target::from_url("https://example.test/").unwrap_err();
        assert!(e.to_string().contains("--url"), "{e}");
        assert!(Target::from_url("http://").is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }
}
