//! Courier Web: the browser client's page, served by every node (config
//! `[web]`), and what the page needs to reach any node over WebTransport:
//! each node's URL and the hashes of the certificates it may pin
//! (`/web.json`). The WebTransport sessions themselves are the door's
//! (`gateway::web`); this part decides which page origins they may come
//! from and which certificate browsers get.
//!
//! Every node tells the others where browsers reach it in its health probe
//! answers (`WebEndpoint`), so any node's page lists them all.

pub mod certs;
mod page;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use courier_proto::peer::WebEndpoint;
use serde::Serialize;

use crate::clock::Clock;
use crate::cluster::Node;
use crate::config::WebConfig;
use crate::error::{Error, Result};
use crate::gateway::web::{Origins, PATH};
use certs::WebCerts;

/// How often the node's own certificates are checked for rotation.
const ROTATE_EVERY: Duration = Duration::from_secs(60);

/// Where browsers' certificate comes from.
enum Key {
    /// The node's own, short-lived, pinned by hash.
    Own(Arc<WebCerts>),
    /// The operator's, trusted by name.
    Operator(Arc<rustls::sign::CertifiedKey>),
}

pub struct Web {
    node: Node,
    cfg: WebConfig,
    key: Key,
    /// This node's page origin (`http://127.0.0.1:7113`).
    page_origin: String,
    /// This node's WebTransport URL.
    url: String,
    clock: Clock,
}

/// `/web.json`: what a page needs to reach every node.
#[derive(Debug, Serialize)]
pub struct Directory {
    pub version: u32,
    /// The node that served it (the page connects there first).
    pub node_id: u64,
    pub nodes: Vec<DirectoryNode>,
}

#[derive(Debug, Serialize)]
pub struct DirectoryNode {
    pub id: u64,
    pub name: String,
    pub url: String,
    /// Hex SHA-256 of the certificates a page pins (empty: trusted by name).
    pub cert_sha256: Vec<String>,
}

impl Web {
    /// The web part of this node; `None` without `[web] addr`.
    pub fn open(node: &Node) -> Result<Option<Arc<Web>>> {
        let all = node.config();
        let cfg = all.web.clone();
        if !cfg.enabled() {
            return Ok(None);
        }
        let clock = Clock::new(all.clock_offset_file.clone());
        let page_addr: SocketAddr = cfg.addr.parse().map_err(|_| Error::Config(format!("web.addr {:?} is not an address", cfg.addr)))?;
        let client: SocketAddr = all.client_addr.parse().map_err(|_| Error::Config(format!("client_addr {:?} is not an address", all.client_addr)))?;
        let (key, page_origin, url) = match (&cfg.tls_cert, &cfg.tls_key, &cfg.host) {
            (Some(cert), Some(key), Some(host)) => (
                Key::Operator(crate::tls::certified_key(cert, key)?),
                origin("https", host, page_addr.port()),
                format!("https://{host}:{}{PATH}", client.port()),
            ),
            _ => {
                // The client port as browsers reach it: `web.host` when set
                // (a node listening on 0.0.0.0), else its address.
                let (reach, names) = match &cfg.host {
                    Some(host) => (format!("{host}:{}", client.port()), vec![host.clone(), client.ip().to_string()]),
                    None => (client.to_string(), vec![client.ip().to_string(), "localhost".to_string()]),
                };
                let certs = WebCerts::open(&all.data_dir, names, unix_secs(&clock))?;
                (Key::Own(Arc::new(certs)), format!("http://{page_addr}"), format!("https://{reach}{PATH}"))
            }
        };
        let web = Arc::new(Web { node: node.clone(), cfg, key, page_origin, url, clock });
        node.set_web(web.endpoint());
        Ok(Some(web))
    }

    /// The certificate source for the client port's TLS (browsers only).
    pub fn tls_key(self: &Arc<Self>) -> crate::tls::WebKey {
        let web = self.clone();
        Arc::new(move || match &web.key {
            Key::Own(certs) => certs.key(),
            Key::Operator(key) => key.clone(),
        })
    }

    fn endpoint(&self) -> WebEndpoint {
        let cert_sha256 = match &self.key {
            Key::Own(certs) => certs.hashes().iter().map(|h| h.to_vec()).collect(),
            Key::Operator(_) => Vec::new(),
        };
        WebEndpoint { page_origin: self.page_origin.clone(), url: self.url.clone(), cert_sha256 }
    }

    /// `/web.json`: every node browsers can reach, as this node knows them.
    pub fn directory(&self) -> Directory {
        let endpoints = self.node.web_endpoints();
        // This node's own copy of the registry: anyone may ask for the
        // directory, so it never costs a read through the meta leader.
        let names: BTreeMap<u64, String> = match self.node.raft().and_then(|m| Ok(m.local_cluster()?)) {
            Ok(c) => c.nodes.values().map(|n| (n.id, n.info.name.clone())).collect(),
            Err(_) => BTreeMap::new(),
        };
        let node_id = self.node.raft().map(|m| m.id()).unwrap_or(0);
        let nodes = endpoints
            .into_iter()
            .map(|(id, e)| DirectoryNode {
                id,
                name: names.get(&id).cloned().unwrap_or_default(),
                url: e.url,
                cert_sha256: e.cert_sha256.iter().map(hex::encode).collect(),
            })
            .collect();
        Directory { version: 1, node_id, nodes }
    }

    /// The WebTransport origins (`https://host:port`) of every node known,
    /// for the page's content-security policy.
    fn transport_origins(&self) -> Vec<String> {
        let mut all: Vec<String> = self.node.known_web_endpoints().values().filter_map(|e| e.url.strip_suffix(PATH).map(str::to_string)).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Serves the page on `listener` and rotates this node's certificates,
    /// until `stop`.
    pub async fn run(self: Arc<Self>, listener: tokio::net::TcpListener, stop: tokio::sync::watch::Receiver<bool>) {
        let rotate = {
            let web = self.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(ROTATE_EVERY) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    if let Key::Own(certs) = &web.key {
                        match certs.tick(unix_secs(&web.clock)) {
                            Ok(true) => web.node.set_web(web.endpoint()),
                            Ok(false) => {}
                            Err(e) => tracing::warn!("cannot rotate the web certificates: {e}"),
                        }
                    }
                }
            })
        };
        page::serve(self, listener, stop).await;
        rotate.abort();
    }
}

impl Origins for Web {
    /// `web.origins` when set, else the page origin of every node known,
    /// down ones too: a page whose node died moves to another.
    fn allows(&self, origin: &str) -> bool {
        if !self.cfg.origins.is_empty() {
            return self.cfg.origins.iter().any(|o| o == origin);
        }
        origin == self.page_origin || self.node.known_web_endpoints().values().any(|e| e.page_origin == origin)
    }
}

fn origin(scheme: &str, host: &str, port: u16) -> String {
    match (scheme, port) {
        ("https", 443) | ("http", 80) => format!("{scheme}://{host}"),
        _ => format!("{scheme}://{host}:{port}"),
    }
}

/// The node's clock (a test's clock offset included) in Unix seconds.
fn unix_secs(clock: &Clock) -> i64 {
    (clock.now_ms() / 1000) as i64
}
