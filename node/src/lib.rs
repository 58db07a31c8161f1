//! A Courier node. Every node runs every part; `run` is what `courier node`
//! calls, and what tests boot.
//!
//! - `cluster/`: identity, init and join, health, placement, `cluster status`.
//! - `push/`: which client connections receive what, here and on every node.
//! - `auth/`: login and sessions; `messaging/`: chats as replicated ordered
//!   logs; `media/`: files in chunks on the ring. `app.rs`: the services'
//!   replicated commands, applied inside Raft.
//! - `gateway/`: the client front door (a transport-independent core;
//!   QUIC and WebTransport under it). `web/`: Courier Web's page and
//!   the certificates browsers pin.
//! - `rpc.rs`: the peer port's gRPC services, wired to the parts that own each call.

pub mod app;
pub mod auth;
pub mod certs;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod gateway;
pub mod limit;
pub mod media;
mod http;
pub mod messaging;
pub mod metrics;
pub mod push;
pub mod rpc;
pub mod state;
pub mod tls;
pub mod web;

use std::path::PathBuf;
use std::time::Duration;

use courier_proto::peer::admin_server::AdminServer;
use courier_proto::peer::peer_server::PeerServer;
use courier_raft::network::MAX_MESSAGE;

pub use cluster::Node;
pub use config::NodeConfig;

/// The parts above the cluster, wired as [`run`] wires them (tests boot
/// the same): arrows point from the door to the services to pushes to the
/// cluster.
pub struct Parts {
    pub pushes: std::sync::Arc<push::Pushes>,
    pub auth: std::sync::Arc<auth::Auth>,
    pub media: std::sync::Arc<media::Media>,
    pub chats: std::sync::Arc<messaging::Messaging>,
    pub door: std::sync::Arc<gateway::Door>,
}

impl Parts {
    pub fn new(node: &Node) -> Parts {
        use std::sync::Arc;
        let cfg = node.config();
        let clock = clock::Clock::new(cfg.clock_offset_file.clone());
        let pushes = push::Pushes::new(node.clone(), auth::SESSION_LEASE);
        let auth = Arc::new(auth::Auth::new(node.clone(), pushes.clone(), cfg.auth.clone(), clock.clone()));
        let media = Arc::new(media::Media::new(node.clone(), clock.clone()));
        let chats = Arc::new(messaging::Messaging::new(node.clone(), pushes.clone(), auth.clone(), media.clone(), clock));
        let door = gateway::Door::new(node.clone(), pushes.clone(), auth.clone(), chats.clone(), media.clone(), cfg.gateway.clone());
        Parts { pushes, auth, media, chats, door }
    }
}
pub use error::{Error, Result};

/// Writes the process id to `courier.pid` in the data directory while the
/// node runs, and removes it on drop.
struct PidFile(PathBuf);

impl PidFile {
    fn create(dir: &std::path::Path) -> Result<PidFile> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("create data dir {}: {e}", dir.display())))?;
        let path = dir.join("courier.pid");
        std::fs::write(&path, format!("{}\n", std::process::id())).map_err(|e| Error::Io(format!("write {}: {e}", path.display())))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs a node until SIGTERM or SIGINT, then shuts down gracefully: group
/// leadership is handed to other voters before the node stops answering.
pub async fn run(cfg: NodeConfig) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    cfg.validate()?;
    let _pid = PidFile::create(&cfg.data_dir)?;
    let metrics = metrics::Metrics::default();
    let node = Node::open(cfg.clone(), metrics, std::sync::Arc::new(app::Services::new(&cfg)))?;

    let server_tls = tls::server_config(&cfg.tls)?;
    let peer_listener = tokio::net::TcpListener::bind(&cfg.peer_addr)
        .await
        .map_err(|e| Error::Io(format!("cannot listen on peer_addr {}: {e}", cfg.peer_addr)))?;
    let admin_listener = tokio::net::TcpListener::bind(&cfg.admin_addr)
        .await
        .map_err(|e| Error::Io(format!("cannot listen on admin_addr {}: {e}", cfg.admin_addr)))?;

    let client_socket = std::net::UdpSocket::bind(&cfg.client_addr)
        .map_err(|e| Error::Io(format!("cannot bind client_addr {} (UDP): {e}", cfg.client_addr)))?;
    let web = web::Web::open(&node)?;
    let web_listener = match &web {
        Some(_) => Some(
            tokio::net::TcpListener::bind(&cfg.web.addr)
                .await
                .map_err(|e| Error::Io(format!("cannot listen on web.addr {}: {e}", cfg.web.addr)))?,
        ),
        None => None,
    };
    let endpoint = gateway::endpoint(&cfg, client_socket, web.as_ref().map(|w| w.tls_key()))?;

    let parts = Parts::new(&node);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grpc = {
        // One `Peer` service: Raft's methods answered by the raft crate, the
        // others by the node, and a node certificate required in front of both.
        let raft = {
            let node = node.clone();
            courier_raft::server::service(std::sync::Arc::new(move || node.raft().ok().cloned()))
        };
        let node_half = PeerServer::new(rpc::PeerService { node: node.clone(), pushes: parts.pushes.clone() })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let peer = tonic::service::interceptor::InterceptedService::new(courier_raft::server::PeerMux::new(raft, node_half), rpc::node_only);
        let admin = AdminServer::new(rpc::AdminService { node: node.clone(), auth: parts.auth.clone() });
        let incoming = tls::incoming(peer_listener, server_tls, node.revoked());
        let mut stop = stop_rx.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(5)))
                .initial_connection_window_size(Some(8 << 20))
                .initial_stream_window_size(Some(4 << 20))
                .add_service(peer)
                .add_service(admin)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                }),
        )
    };
    let http = tokio::spawn(http::serve(admin_listener, node.clone(), stop_rx.clone()));
    let (gw_stop_tx, gw_stop_rx) = tokio::sync::watch::channel(false);
    let repair = tokio::spawn(parts.media.clone().run_repair(stop_rx.clone()));
    let sweep = tokio::spawn(parts.door.clone().sweep_loop(gw_stop_rx.clone()));
    let origins = web.clone().map(|w| w as std::sync::Arc<dyn gateway::web::Origins>);
    let gateway = tokio::spawn(gateway::quic::serve(parts.door.clone(), endpoint, origins, gw_stop_rx));
    let page = match (web, web_listener) {
        (Some(web), Some(listener)) => Some(tokio::spawn(web.run(listener, stop_rx.clone()))),
        _ => None,
    };

    node.boot().await?;
    tracing::info!(name = %cfg.name, peer = %cfg.peer_addr, client = %cfg.client_addr, admin = %cfg.admin_addr, "node running");
    if cfg.development {
        tracing::warn!(
            test_numbers = cfg.auth.test_numbers,
            clock_offset_file = cfg.clock_offset_file.is_some(),
            "DEVELOPMENT node (`development = true`): test numbers log in with a known code and the clock may be moved; never let real users reach it"
        );
    }

    wait_for_signal().await;
    tracing::info!("shutting down: closing client connections, handing over leadership");
    let _ = gw_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), gateway).await;
    sweep.abort();
    node.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), grpc).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), repair).await;
    if let Some(page) = page {
        let _ = tokio::time::timeout(Duration::from_secs(1), page).await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
