//! Connections to the APIs, through an HTTP proxy when the environment names
//! one for the target ([`crate::config::ProxyConfig`]): an `https://` target
//! through a CONNECT tunnel (TLS stays end to end, the proxy sees only the
//! host), an `http://` target by sending the request to the proxy in
//! absolute form with `Proxy-Authorization`.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::{
        legacy::connect::{proxy::Tunnel, Connected, Connection, HttpConnector},
        proxy::matcher::Matcher,
    },
    rt::TokioIo,
};
use tokio::net::TcpStream;
use tower_service::Service;

use super::transport::Opened;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// TCP to the target, or to its proxy; TLS goes on top (hyper-rustls).
#[derive(Clone)]
pub(super) struct Connector {
    tcp: HttpConnector,
    proxies: std::sync::Arc<Matcher>,
}

impl Connector {
    pub(super) fn new(tcp: HttpConnector, proxies: Matcher) -> Connector {
        Connector {
            tcp,
            proxies: std::sync::Arc::new(proxies),
        }
    }
}

/// What a request to `uri` needs on top of its own headers: the proxy's
/// credentials when it goes to a proxy in absolute form.
pub(super) fn proxy_authorization(proxies: &Matcher, uri: &Uri) -> Option<HeaderValue> {
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    proxies
        .intercept(uri)
        .and_then(|i| i.basic_auth().cloned())
        .map(|mut v| {
            v.set_sensitive(true);
            v
        })
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let intercept = self.proxies.intercept(&dst);
        Box::pin(async move {
            let Some(proxy) = intercept else {
                let io = tcp.call(dst).await?;
                return Ok(Conn { io, proxied: false });
            };
            if dst.scheme() == Some(&http::uri::Scheme::HTTPS) {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), tcp);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let io = tunnel.call(dst).await?;
                Ok(Conn { io, proxied: false })
            } else {
                let io = tcp.call(proxy.uri().clone()).await?;
                Ok(Conn { io, proxied: true })
            }
        })
    }
}

/// A TCP connection that knows whether it leads to a forwarding proxy, so
/// the client writes requests on it in absolute form.
pub(super) struct Conn {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for Conn {
    /// Called once per connection, when it is ready for its first request.
    /// The stamp replaces the `HttpInfo` extra of the TCP stream (unused),
    /// so each response still carries a single extra.
    fn connected(&self) -> Connected {
        Connected::new()
            .proxy(self.proxied)
            .extra(Opened(Instant::now()))
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
