//! One QUIC connection to one node: TLS set-up, the hello, the push stream,
//! and one bidirectional stream per request.

use courier_proto::Code;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use courier_proto::client as pb;
use courier_proto::client::request::Method as M;
use courier_proto::client::response::Result as R;
use courier_proto::frame::{self, MAX_CLIENT_FRAME};

use crate::error::{Error, Result};
use crate::{Event, Inner};

pub const ALPN: &[u8] = b"courier/1";
pub const PROTOCOL: u32 = 1;

/// Reconnection attempts after an unexpected disconnect (about 5 minutes).
const RECONNECT_ATTEMPTS: u32 = 60;

pub(crate) struct Conn {
    pub node: String,
    pub conn: quinn::Connection,
}

/// Trust only the cluster CA; TLS 1.3; ALPN `courier/1`.
pub(crate) fn tls_config(ca_pem: &[u8], keep_alive: Duration, idle_timeout: Duration) -> Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for c in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let c = c.map_err(|e| Error::Config(format!("cluster CA: {e}")))?;
        roots.add(c).map_err(|e| Error::Config(format!("cluster CA: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(Error::Config("the cluster CA file holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| Error::Config(format!("QUIC TLS: {e}")))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // The idle timeout in force is the shorter of the two sides': the
    // client's short one makes a dead node (no packets at all: kill -9, a
    // pause, a cut cable) noticed in about that long, while keep-alives keep
    // a quiet live connection open.
    let idle = idle_timeout.try_into().map_err(|_| Error::Config(format!("idle timeout {idle_timeout:?} is too long")))?;
    transport.keep_alive_interval(Some(keep_alive)).max_idle_timeout(Some(idle));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

pub(crate) fn endpoint() -> Result<quinn::Endpoint> {
    quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).map_err(|e| Error::Config(format!("cannot open a UDP socket: {e}")))
}

/// `host` of `host:port` (IPv6 literals without brackets): the TLS server name.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The brief's code a node gave when it closed the connection, if any.
pub(crate) fn close_code(e: &quinn::ConnectionError) -> Option<Code> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason);
            Code::parse(reason.split(':').next().unwrap_or("").trim())
        }
        quinn::ConnectionError::LocallyClosed => None,
        _ => Some(Code::Unavailable),
    }
}

fn conn_error(e: quinn::ConnectionError) -> Error {
    match close_code(&e) {
        Some(code) if code != Code::Unavailable => Error::Api { code, message: format!("the node closed the connection: {e}"), retry_after_secs: 0, parts: vec![] },
        _ => Error::Unavailable(e.to_string()),
    }
}

impl Conn {
    /// Connects to `addr`, verifies it against the CA, says hello (with the
    /// token, after the handshake), and starts the push reader; a
    /// `requests_only` connection (see [`crate::route`]) gets no pushes and
    /// is not reconnected.
    pub(crate) async fn open(inner: &Arc<Inner>, addr: &str, token: Option<&[u8]>, requests_only: bool) -> Result<(Conn, pb::HelloReply)> {
        let cfg = &inner.cfg;
        let sock = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot resolve {addr}: {e}")))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| Error::Unavailable(format!("{addr} has no IPv4 address")))?;
        let connecting = inner
            .endpoint
            .connect_with(inner.tls.clone(), sock, host_of(addr))
            .map_err(|e| Error::Config(format!("cannot connect to {addr}: {e}")))?;
        let conn = match tokio::time::timeout(cfg.connect_timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(quinn::ConnectionError::TransportError(e))) if e.code.to_string().contains("TLS") || e.to_string().contains("certificate") => {
                return Err(Error::Tls(format!("{addr}: {e}")));
            }
            Ok(Err(e)) => return Err(Error::Unavailable(format!("{addr}: {e}"))),
            Err(_) => return Err(Error::Unavailable(format!("{addr}: no answer within {:?}", cfg.connect_timeout))),
        };
        // The handshake verified the node's certificate; only now does the token leave.
        let hello = pb::Request {
            method: Some(M::Hello(pb::Hello {
                protocol: PROTOCOL,
                client_version: cfg.client_version.clone(),
                device: cfg.device.clone(),
                session_token: token.map(<[u8]>::to_vec).unwrap_or_default(),
                requests_only,
                own_sends_key: inner.own_sends_key,
            })),
        };
        let reply = match request(&conn, &hello, cfg.request_timeout).await? {
            R::Hello(h) => h,
            R::Error(e) => return Err(Error::from_proto(e)),
            other => return Err(Error::Protocol(format!("unexpected hello reply {other:?}"))),
        };
        Ok((Conn { node: addr.to_string(), conn }, reply))
    }

    /// Starts reading the push stream and watching for the end of the
    /// connection (the device's own connection only: the one that won the
    /// race to connect, so no loser ever delivers pushes).
    pub(crate) fn start_readers(&self, inner: &Arc<Inner>) {
        spawn_readers(Arc::downgrade(inner), self.node.clone(), self.conn.clone());
    }
}

/// Reads the node's push stream, and reports (and recovers from) the end of the connection.
fn spawn_readers(inner: Weak<Inner>, node: String, conn: quinn::Connection) {
    let Some(strong) = inner.upgrade() else { return };
    let events = strong.events.clone();
    drop(strong);
    let pushes = {
        let conn = conn.clone();
        let events = events.clone();
        async move {
            while let Ok(mut stream) = conn.accept_uni().await {
                while let Ok(Some(update)) = frame::read::<pb::Update, _>(&mut stream, MAX_CLIENT_FRAME).await {
                    if events.send(Event::Update(update)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::spawn(pushes);
    tokio::spawn(async move {
        let reason = conn.closed().await;
        let Some(code) = close_code(&reason) else { return };
        let revoked = code == Code::SessionRevoked;
        if let Some(i) = inner.upgrade() {
            if revoked {
                *i.token.lock().expect("token lock") = None;
            }
            let _ = i.events.try_send(Event::Disconnected { node: node.clone(), code: Some(code) });
            if revoked || i.token.lock().expect("token lock").is_none() {
                return;
            }
        }
        // A logged-in client comes back on its own, so its updates resume:
        // at once (another node is up), then backing off.
        for attempt in 0..RECONNECT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis((100 * (1 << attempt.min(6))).min(5000))).await;
            }
            let Some(i) = inner.upgrade() else { return };
            match i.ensure().await {
                Ok(_) | Err(Error::Api { .. }) | Err(Error::Tls(_)) => return,
                Err(_) => continue,
            }
        }
    });
}

/// One request on its own stream.
pub(crate) async fn request(conn: &quinn::Connection, req: &pb::Request, timeout: Duration) -> Result<R> {
    let run = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(conn_error)?;
        frame::write(&mut send, req).await.map_err(|e| Error::Unavailable(e.to_string()))?;
        let _ = send.finish();
        match frame::read::<pb::Response, _>(&mut recv, MAX_CLIENT_FRAME).await {
            Ok(Some(pb::Response { result: Some(r) })) => Ok(r),
            Ok(Some(pb::Response { result: None })) => Err(Error::Protocol("empty response (a newer node?)".into())),
            Ok(None) => Err(conn.close_reason().map(conn_error).unwrap_or_else(|| Error::Unavailable("the node closed the stream".into()))),
            Err(e) => Err(read_error(e, conn.close_reason())),
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unavailable(format!("no answer within {timeout:?}"))),
    }
}

/// What a failed read of the node's answer means. An answer this client
/// cannot take (over the frame limit, undecodable) would be the same on
/// every node: final, never retried. A broken stream or connection is
/// retryable.
fn read_error(e: frame::FrameError, closed: Option<quinn::ConnectionError>) -> Error {
    match e {
        frame::FrameError::TooLarge { .. } | frame::FrameError::Decode(_) => Error::Protocol(format!("the node's answer: {e}")),
        e => closed.map(conn_error).unwrap_or_else(|| Error::Unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_over_the_frame_limit_is_final_a_broken_stream_is_not() {
        let big = read_error(frame::FrameError::TooLarge { len: 1_313_204, limit: MAX_CLIENT_FRAME }, None);
        assert!(!big.is_retryable(), "{big}");
        assert_eq!(big.code(), Code::BadRequest);
        let cut = read_error(frame::FrameError::Truncated, None);
        assert!(cut.is_retryable(), "{cut}");
    }

    #[test]
    fn server_names_and_close_codes() {
        assert_eq!(host_of("127.0.0.1:7002"), "127.0.0.1");
        assert_eq!(host_of("node1.example:7002"), "node1.example");
        assert_eq!(host_of("[::1]:7002"), "::1");
        assert!(tls_config(b"not a pem", Duration::from_millis(400), Duration::from_millis(1200)).is_err());
    }
}
