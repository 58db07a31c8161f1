//! TLS for the peer port: mutual TLS 1.3 with the cluster CA on both sides.
//! The server side accepts connections itself so that a refused certificate
//! is logged with the peer's address and every request knows its caller's role.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::certs::{Role, role_of};
use crate::config::TlsConfig;
use crate::error::{Error, Result};

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Cert(format!("cannot read {what} {}: {e}", path.display())))
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Cert(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Cert(format!("{what} {} holds no certificate", path.display())));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(path, "key")?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| Error::Cert(format!("key {}: {e}", path.display())))?
        .ok_or_else(|| Error::Cert(format!("key {} holds no private key", path.display())))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side of the peer port: TLS 1.3 only, a client certificate from the
/// cluster CA required.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&tls.ca, "CA certificate")? {
        roots.add(c).map_err(|e| Error::Cert(format!("CA certificate: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| Error::Cert(format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Cert(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&tls.cert, "certificate")?, key(&tls.key)?)
        .map_err(|e| Error::Cert(format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The client-facing QUIC side: TLS 1.3 with the node's certificate, any
/// client (users authenticate inside the protocol), one ALPN.
pub fn client_facing_config(tls: &TlsConfig, alpn: &[u8]) -> Result<Arc<rustls::ServerConfig>> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Cert(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs(&tls.cert, "certificate")?, key(&tls.key)?)
        .map_err(|e| Error::Cert(format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg.max_early_data_size = 0;
    Ok(Arc::new(cfg))
}

/// Client side (node to node, operator to node): trust only the cluster CA and
/// present `cert`.
pub fn client_tls(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTlsConfig> {
    let ca = read(ca, "CA certificate")?;
    let identity = Identity::from_pem(read(cert, "certificate")?, read(key, "key")?);
    Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).identity(identity))
}

/// What a handler knows about its caller.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    pub addr: SocketAddr,
    pub role: Role,
}

/// A verified TLS connection handed to tonic.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    identity: PeerIdentity,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerIdentity;
    fn connect_info(&self) -> PeerIdentity {
        self.identity.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections, runs the TLS handshake on each (concurrently,
/// with a time limit) and yields the verified ones. Refusals are logged.
pub fn incoming(listener: TcpListener, cfg: Arc<rustls::ServerConfig>) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(128);
    let acceptor = TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("peer port accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let conn_tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let role = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| role_of(c.as_ref()))
                            .unwrap_or(Role::Other);
                        let _ = conn_tx.send(Ok(TlsConn { stream, identity: PeerIdentity { addr, role } })).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%addr, "refused peer connection: {e}"),
                    Err(_) => tracing::warn!(%addr, "refused peer connection: TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
