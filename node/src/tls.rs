//! TLS for the peer port: mutual TLS 1.3 with the cluster CA on both sides.
//! The server side accepts connections itself so that a refused certificate
//! is logged with the peer's address and every request knows its caller's role.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
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

/// Where the client port's certificate for browsers (ALPN `h3`) comes from,
/// asked at every handshake (the node's own rotate).
pub type WebKey = Arc<dyn Fn() -> Arc<rustls::sign::CertifiedKey> + Send + Sync>;

/// The client-facing QUIC side: TLS 1.3, any client (users authenticate
/// inside the protocol), the ALPNs `alpns`. A client offering `h3` (a
/// browser, when `web` is set) gets the web certificate; everyone else the
/// node's certificate from the cluster CA.
pub fn client_facing_config(tls: &TlsConfig, alpns: &[&[u8]], web: Option<WebKey>) -> Result<Arc<rustls::ServerConfig>> {
    let node = certified_key(&tls.cert, &tls.key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Cert(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByAlpn { node, web }));
    cfg.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    cfg.max_early_data_size = 0;
    Ok(Arc::new(cfg))
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert: &Path, key_path: &Path) -> Result<Arc<rustls::sign::CertifiedKey>> {
    let chain = certs(cert, "certificate")?;
    let signer = provider().key_provider.load_private_key(key(key_path)?).map_err(|e| Error::Cert(format!("key {}: {e}", key_path.display())))?;
    let ck = rustls::sign::CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| Error::Cert(format!("certificate {} and key {}: {e}", cert.display(), key_path.display())))?;
    Ok(Arc::new(ck))
}

/// Picks the certificate by the client's ALPN offer.
struct ByAlpn {
    node: Arc<rustls::sign::CertifiedKey>,
    web: Option<WebKey>,
}

impl std::fmt::Debug for ByAlpn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByAlpn").field("web", &self.web.is_some()).finish()
    }
}

impl rustls::server::ResolvesServerCert for ByAlpn {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        // A browser offers `h3` and not `courier/1` (which the server
        // prefers, so a client offering both negotiates `courier/1`).
        let offered: Vec<&[u8]> = hello.alpn().map(|a| a.collect()).unwrap_or_default();
        let browser = offered.contains(&H3) && !offered.iter().any(|p| *p == b"courier/1");
        match &self.web {
            Some(web) if browser => Some(web()),
            _ => Some(self.node.clone()),
        }
    }
}

/// HTTPS with `key` (Courier Web's page with an operator's certificate):
/// rustls's safe default versions, HTTP/1.1.
pub fn https_config(key: Arc<rustls::sign::CertifiedKey>) -> Result<Arc<rustls::ServerConfig>> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Cert(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// HTTP/3's ALPN: what browsers offer for WebTransport.
pub const H3: &[u8] = b"h3";

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

/// The certificates the cluster revoked (`Command::RevokeCert`, by the
/// SHA-256 of their DER), as this node last read them from the meta group:
/// the peer port refuses them at the handshake and ends connections that
/// presented one before it was revoked.
#[derive(Debug, Default)]
pub struct Revoked {
    set: RwLock<HashSet<[u8; 32]>>,
    /// Moves on with every change (open connections check again then).
    generation: AtomicU64,
}

impl Revoked {
    pub fn contains(&self, sha256: &[u8; 32]) -> bool {
        self.set.read().expect("revoked lock").contains(sha256)
    }

    /// Replaces the list; `true` when it changed.
    pub fn replace(&self, list: impl IntoIterator<Item = [u8; 32]>) -> bool {
        let new: HashSet<[u8; 32]> = list.into_iter().collect();
        let mut set = self.set.write().expect("revoked lock");
        if *set == new {
            return false;
        }
        *set = new;
        self.generation.fetch_add(1, Ordering::Release);
        true
    }

    pub fn len(&self) -> usize {
        self.set.read().expect("revoked lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The SHA-256 of a certificate's DER: how the cluster names a certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(der).into()
}

/// The [`fingerprint`] of the (first) certificate in a PEM file.
pub fn fingerprint_of(path: &Path) -> Result<[u8; 32]> {
    let all = certs(path, "certificate")?;
    Ok(fingerprint(all[0].as_ref()))
}

/// A verified TLS connection handed to tonic.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    identity: PeerIdentity,
    /// The peer certificate's fingerprint, checked again when `revoked` changes.
    cert: Option<[u8; 32]>,
    revoked: Arc<Revoked>,
    seen: u64,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerIdentity;
    fn connect_info(&self) -> PeerIdentity {
        self.identity.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let generation = self.revoked.generation.load(Ordering::Acquire);
        if generation != self.seen {
            self.seen = generation;
            if self.cert.is_some_and(|c| self.revoked.contains(&c)) {
                tracing::warn!(addr = %self.identity.addr, "closed a peer connection: its certificate was revoked");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "certificate revoked")));
            }
        }
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
pub fn incoming(listener: TcpListener, cfg: Arc<rustls::ServerConfig>, revoked: Arc<Revoked>) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>> {
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
            let revoked = revoked.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let first = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
                        let role = first.map(|c| role_of(c.as_ref())).unwrap_or(Role::Other);
                        let cert = first.map(|c| fingerprint(c.as_ref()));
                        let seen = revoked.generation.load(Ordering::Acquire);
                        if cert.is_some_and(|c| revoked.contains(&c)) {
                            tracing::warn!(%addr, "refused peer connection: its certificate was revoked");
                            return;
                        }
                        let _ = conn_tx.send(Ok(TlsConn { stream, identity: PeerIdentity { addr, role }, cert, revoked, seen })).await;
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
