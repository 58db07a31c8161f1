//! The WebTransport transport of the door: browsers (Courier Web) on the
//! client UDP port, ALPN `h3`, beside `courier/1` on the same endpoint. A
//! session carries the same protocol as a QUIC connection (client.proto
//! frames, one bidirectional stream per request, one server-opened push
//! stream) and runs the same core: hello, login, limits, hostile-input
//! answers. Only the CONNECT is its own: the path must be [`PATH`] and the
//! page's origin one the web part allows.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use web_transport_quinn::{RecvStream, SendStream, Session};

use super::core::{Admission, Connection, DatagramError, Door};
use crate::push::close;

/// The WebTransport session's path (`https://<client addr>/courier`).
pub const PATH: &str = "/courier";

/// Which page origins may open sessions here (the web part decides).
pub trait Origins: Send + Sync + 'static {
    fn allows(&self, origin: &str) -> bool;
}

/// Runs one browser connection: the CONNECT within the hello deadline, then
/// the door's core.
pub async fn accept(door: Arc<Door>, conn: quinn::Connection, admission: Admission, origins: Arc<dyn Origins>) {
    let remote = conn.remote_address();
    let refuse = |why: &str| conn.close(close::BAD_REQUEST.into(), format!("BAD_REQUEST: {why}").as_bytes());
    let connect = async {
        let req = match web_transport_quinn::Request::accept(conn.clone()).await {
            Ok(req) => req,
            Err(e) => return Err(refuse(&format!("not a WebTransport session: {e}"))),
        };
        let origin = req.headers.get(axum::http::header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let refusal = if req.url.path() != PATH {
            Some((axum::http::StatusCode::NOT_FOUND, "no such path"))
        } else if !origins.allows(&origin) {
            Some((axum::http::StatusCode::FORBIDDEN, "this page's origin may not connect here"))
        } else {
            None
        };
        if let Some((status, why)) = refusal {
            tracing::debug!(%remote, origin, path = req.url.path(), %status, "WebTransport session refused");
            let _ = req.reject(status).await;
            // The browser reads the status before the close.
            tokio::time::sleep(PAGE_READ_GRACE).await;
            return Err(refuse(why));
        }
        req.ok().await.map_err(|e| tracing::debug!(%remote, "WebTransport session not accepted: {e}"))
    };
    // The CONNECT is part of the hello phase: the door's caps, deadline and
    // eviction hold for it before anything of HTTP/3 is read.
    let session = match door.before_hello(&admission, remote, connect).await {
        Ok(Ok(session)) => session,
        Ok(Err(())) => return,
        Err(t) => return conn.close(t.code.into(), t.reason.as_bytes()),
    };
    door.serve(Web { session, remote }, admission).await;
}

/// How long a page has to read what reached it before a close: Chromium
/// drops what its page has not read when the session closes.
const PAGE_READ_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// A browser's WebTransport session.
pub struct Web {
    session: Session,
    remote: SocketAddr,
}

impl Connection for Web {
    type Send = SendStream;
    type Recv = RecvStream;

    fn remote(&self) -> SocketAddr {
        self.remote
    }

    async fn accept_bi(&self) -> Option<(SendStream, RecvStream)> {
        self.session.accept_bi().await.inspect_err(|e| tracing::debug!(remote = %self.remote, "browser session ended: {e}")).ok()
    }

    async fn open_uni(&self) -> Option<SendStream> {
        self.session.open_uni().await.ok()
    }

    fn close(&self, code: u32, reason: &str) {
        self.session.close(code, reason.as_bytes());
    }

    fn stop(recv: &mut RecvStream, code: u32) {
        let _ = recv.stop(code);
    }

    fn finish(send: &mut SendStream) {
        let _ = send.finish();
    }

    async fn stopped(send: &mut SendStream) {
        let _ = send.stopped().await;
        // Acknowledged is not yet read by the page: a refused hello's answer
        // gets a moment before the close that follows it.
        tokio::time::sleep(PAGE_READ_GRACE).await;
    }

    fn send_datagram(&self, bytes: Bytes) -> std::result::Result<(), DatagramError> {
        let (len, max) = (bytes.len(), self.session.max_datagram_size());
        if max == 0 {
            return Err(DatagramError::Unsupported);
        }
        if len > max {
            return Err(DatagramError::TooLarge { len, max });
        }
        self.session.send_datagram(bytes).map_err(|_| DatagramError::Closed)
    }

    async fn read_datagram(&self) -> Option<Bytes> {
        self.session.read_datagram().await.ok()
    }
}
