//! The QUIC transport of the door: `courier/1` on the client UDP port
//! (TLS 1.3 with the node's certificate). It admits connections, runs the
//! handshake within the hello deadline, and hands each to the door's core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use courier_proto::frame::MAX_CLIENT_FRAME;
use quinn::VarInt;
use tokio::sync::watch;

use super::core::{Connection, DatagramError, Door};
use super::web::Origins;
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::push::close;

pub const ALPN: &[u8] = b"courier/1";

/// Unidirectional streams a browser may open: HTTP/3's control stream and
/// QPACK's two (a `courier/1` client may open none: [`connection`] closes it).
const BROWSER_UNI_STREAMS: u32 = 4;
/// Datagrams buffered per connection until read (calls will); past it the
/// oldest are dropped. Browsers need datagrams announced (HTTP/3 datagrams).
const DATAGRAM_BUFFER: usize = 16 << 10;

/// The QUIC endpoint on `socket` (bound at start-up so a port conflict shows
/// at once): `courier/1`, and with `web` also WebTransport (`h3`) with the
/// certificate `web` gives.
pub fn endpoint(cfg: &NodeConfig, socket: std::net::UdpSocket, web: Option<crate::tls::WebKey>) -> Result<quinn::Endpoint> {
    let browsers = web.is_some();
    let alpns: &[&[u8]] = if browsers { &[ALPN, crate::tls::H3] } else { &[ALPN] };
    let tls = crate::tls::client_facing_config(&cfg.tls, alpns, web)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| Error::Cert(format!("QUIC TLS: {e}")))?;
    let g = &cfg.gateway;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(g.max_streams_per_connection))
        .max_concurrent_uni_streams(VarInt::from_u32(if browsers { BROWSER_UNI_STREAMS } else { 0 }))
        .stream_receive_window(VarInt::from_u32(MAX_CLIENT_FRAME + 4096))
        .receive_window(VarInt::from_u32(g.connection_window_bytes))
        .send_window(u64::from(g.connection_window_bytes))
        // Without browsers, no datagrams until a part reads them (calls):
        // none are buffered for a client that sends them anyway.
        .datagram_receive_buffer_size(browsers.then_some(DATAGRAM_BUFFER))
        .max_idle_timeout(Some(Duration::from_secs(g.idle_timeout_secs).try_into().map_err(|_| Error::Config("gateway.idle_timeout_secs too large".into()))?));
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    socket.set_nonblocking(true).map_err(|e| Error::Io(format!("client socket: {e}")))?;
    let runtime = quinn::default_runtime().ok_or_else(|| Error::Io("no async runtime for QUIC".into()))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime).map_err(|e| Error::Io(format!("client endpoint: {e}")))
}

/// Accepts connections until `stop`, then closes them all. `web`: browsers
/// are served (WebTransport), from the origins it allows.
pub async fn serve(door: Arc<Door>, endpoint: quinn::Endpoint, web: Option<Arc<dyn Origins>>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if door.full() {
                    tracing::warn!(remote = %incoming.remote_address(), "refusing a connection: gateway.max_connections reached");
                    incoming.refuse();
                    continue;
                }
                tokio::spawn(connection(door.clone(), incoming, web.clone()));
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    door.close_all();
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

async fn connection(door: Arc<Door>, incoming: quinn::Incoming, web: Option<Arc<dyn Origins>>) {
    let remote = incoming.remote_address();
    // Counted from the first packet: the handshake runs within the hello's deadline.
    let admission = door.admit(remote);
    let conn = match incoming.accept() {
        Ok(connecting) => match tokio::time::timeout_at(admission.hello_by, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return tracing::debug!(%remote, "client handshake failed: {e}"),
            Err(_) => return tracing::debug!(%remote, "client handshake timed out"),
        },
        Err(e) => return tracing::debug!(%remote, "cannot accept a client: {e}"),
    };
    let alpn = conn.handshake_data().and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok()).and_then(|h| h.protocol);
    match (alpn.as_deref(), web) {
        (Some(ALPN), None) => {}
        (Some(ALPN), Some(_)) => {
            // The endpoint lets browsers open HTTP/3's unidirectional
            // streams; `courier/1` has none from the client: one is a
            // protocol violation.
            let watch = conn.clone();
            tokio::spawn(async move {
                if watch.accept_uni().await.is_ok() {
                    watch.close(close::BAD_REQUEST.into(), b"BAD_REQUEST: courier/1 clients open no unidirectional streams");
                }
            });
        }
        (Some(crate::tls::H3), Some(origins)) => return super::web::accept(door, conn, admission, origins).await,
        _ => {
            conn.close(close::BAD_REQUEST.into(), b"BAD_REQUEST: ALPN courier/1 required");
            return;
        }
    }
    door.serve(Quic(conn), admission).await;
}

/// A `courier/1` connection.
pub struct Quic(pub quinn::Connection);

impl Connection for Quic {
    type Send = quinn::SendStream;
    type Recv = quinn::RecvStream;

    fn remote(&self) -> SocketAddr {
        self.0.remote_address()
    }

    async fn accept_bi(&self) -> Option<(quinn::SendStream, quinn::RecvStream)> {
        self.0.accept_bi().await.inspect_err(|e| tracing::debug!(remote = %self.0.remote_address(), "client connection ended: {e}")).ok()
    }

    async fn open_uni(&self) -> Option<quinn::SendStream> {
        self.0.open_uni().await.ok()
    }

    fn close(&self, code: u32, reason: &str) {
        self.0.close(code.into(), reason.as_bytes());
    }

    fn stop(recv: &mut quinn::RecvStream, code: u32) {
        let _ = recv.stop(VarInt::from_u32(code));
    }

    fn finish(send: &mut quinn::SendStream) {
        let _ = send.finish();
    }

    async fn stopped(send: &mut quinn::SendStream) {
        let _ = send.stopped().await;
    }

    fn send_datagram(&self, bytes: Bytes) -> std::result::Result<(), DatagramError> {
        let len = bytes.len();
        self.0.send_datagram(bytes).map_err(|e| match e {
            quinn::SendDatagramError::TooLarge => DatagramError::TooLarge { len, max: self.0.max_datagram_size().unwrap_or(0) },
            quinn::SendDatagramError::ConnectionLost(_) => DatagramError::Closed,
            _ => DatagramError::Unsupported,
        })
    }

    async fn read_datagram(&self) -> Option<Bytes> {
        self.0.read_datagram().await.ok()
    }
}
