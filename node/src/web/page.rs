//! The page's HTTP server: the built files (embedded at compile time) and
//! `/web.json`, with a content-security policy that lets the page run only
//! its own script and connect only to the cluster's nodes. User content never
//! comes from here: the page renders it as text.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::{Key, Web};
use crate::gateway::doors::{AddressSlot, Doors};

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

pub(super) async fn serve(web: Arc<Web>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let tls = match &web.key {
        Key::Operator(key) => Some(key.clone()),
        Key::Own(_) => None,
    };
    let app = Router::new().route("/web.json", get(directory)).fallback(get(asset)).with_state(web);
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let result = match tls {
        None => axum::serve(Capped::new(listener), app).with_graceful_shutdown(shutdown).await,
        Some(key) => match crate::tls::https_config(key) {
            Ok(cfg) => axum::serve(Capped::new(TlsListener::start(listener, cfg)), app).with_graceful_shutdown(shutdown).await,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        },
    };
    if let Err(e) = result {
        tracing::warn!("web page server stopped: {e}");
    }
}

async fn directory(State(web): State<Arc<Web>>) -> Response {
    let body = serde_json::to_vec(&web.directory()).expect("the directory serializes");
    with_headers(&web, "application/json", body.into())
}

async fn asset(State(web): State<Arc<Web>>, uri: Uri) -> Response {
    match ASSETS.iter().find(|(path, _, _)| *path == uri.path()) {
        Some((path, kind, bytes)) => match dev_override(path).await {
            Some(fresh) => with_headers(&web, kind, Body::from(fresh)),
            None => with_headers(&web, kind, Body::from(*bytes)),
        },
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// Debug builds only: with `COURIER_WEB_DIST` set, the page's files are
/// read from that directory on every request, so working on `web/` needs
/// `npm run build` and a reload, not a rebuild of the node. Release builds
/// serve only what they embed.
async fn dev_override(path: &str) -> Option<Vec<u8>> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let dir = std::env::var_os("COURIER_WEB_DIST")?;
    let file = if path == "/" { "index.html" } else { path.trim_start_matches('/') };
    tokio::fs::read(std::path::Path::new(&dir).join(file)).await.ok()
}

/// Every answer: its type, never sniffed, never framed, never cached stale,
/// no referrer, and the page's policy.
fn with_headers(web: &Web, kind: &str, body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(kind).expect("a content type"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(csp) = HeaderValue::from_str(&policy(&web.transport_origins())) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    r
}

/// The content-security policy: the page's own script and style only, no
/// inline code, images only from itself or blobs it made, and connections to
/// its origin and the cluster's WebTransport origins.
pub fn policy(transports: &[String]) -> String {
    let connect: Vec<&str> = std::iter::once("'self'").chain(transports.iter().map(String::as_str)).collect();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src blob:; connect-src {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        connect.join(" ")
    )
}

/// HTTPS for the page with the operator's certificate: handshakes run on
/// their own tasks (a slow one holds nobody), finished ones are accepted.
struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(listener: TcpListener, cfg: Arc<rustls::ServerConfig>) -> TlsListener {
        let local = listener.local_addr().expect("a bound listener's address");
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let (tx, rx) = mpsc::channel(64);
        // At most this many handshakes at once; past it a connection is
        // dropped unanswered (the browser retries).
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, addr)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if tx.is_closed() {
                    return;
                }
                let Ok(turn) = handshakes.clone().try_acquire_owned() else { continue };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                    drop(turn);
                    if let Ok(Ok(tls)) = tls {
                        let _ = tx.send((tls, addr)).await;
                    }
                });
            }
        });
        TlsListener { rx, local }
    }
}

const MAX_HANDSHAKES: usize = 64;
/// Page connections open at once, in all and from one address; each lives
/// at most [`CONNECTION_LIFE`] (a page needs a handful of requests: a slow
/// or idle client cannot hold a socket longer).
const MAX_CONNECTIONS: usize = 1024;
const MAX_PER_ADDRESS: usize = 32;
const CONNECTION_LIFE: Duration = Duration::from_secs(60);

/// A listener whose connections are counted and timed ([`MAX_CONNECTIONS`],
/// [`MAX_PER_ADDRESS`] with the door's book of addresses, [`CONNECTION_LIFE`]).
struct Capped<L> {
    inner: L,
    all: Arc<tokio::sync::Semaphore>,
    addresses: Arc<Doors>,
}

impl<L> Capped<L> {
    fn new(inner: L) -> Capped<L> {
        Capped { inner, all: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)), addresses: Doors::new(MAX_PER_ADDRESS, 1) }
    }
}

impl<L: axum::serve::Listener<Addr = SocketAddr>> axum::serve::Listener for Capped<L> {
    type Io = Held<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let permit = self.all.clone().acquire_owned().await.expect("the semaphore is never closed");
            let (io, addr) = self.inner.accept().await;
            // Past its address's cap: dropped, closed unanswered.
            let Some(slot) = self.addresses.open(addr.ip()) else { continue };
            return (Held { io, _permit: permit, _slot: slot, end: Box::pin(tokio::time::sleep(CONNECTION_LIFE)) }, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A page connection holding its places; it ends at its deadline.
struct Held<T> {
    io: T,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _slot: AddressSlot,
    end: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<T> Held<T> {
    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        self.end.as_mut().poll(cx).is_ready()
    }
}

fn over() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "page connection lived its time")
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Held<T> {
    fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return std::task::Poll::Ready(Err(over()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Held<T> {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return std::task::Poll::Ready(Err(over()));
        }
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor is gone only when the server is: wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_runs_only_its_own_code_and_reaches_only_the_cluster() {
        let p = policy(&["https://127.0.0.1:7111".into(), "https://127.0.0.1:7121".into()]);
        assert!(p.contains("script-src 'self';"), "{p}");
        assert!(!p.contains("unsafe-inline") && !p.contains("unsafe-eval"), "{p}");
        assert!(p.contains("connect-src 'self' https://127.0.0.1:7111 https://127.0.0.1:7121;"), "{p}");
        assert!(p.contains("frame-ancestors 'none'"), "{p}");
    }

    #[test]
    fn the_built_page_is_embedded() {
        let index = ASSETS.iter().find(|(p, _, _)| *p == "/").expect("index.html");
        assert!(index.1.starts_with("text/html"));
        let html = String::from_utf8_lossy(index.2);
        assert!(html.contains("app.js"), "the page loads its script");
        assert!(!html.contains("<script>"), "no inline script (the policy would block it)");
    }
}
