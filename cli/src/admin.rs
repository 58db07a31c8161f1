//! Operator commands over the peer port's `Admin` service (mutual TLS with an
//! operator certificate).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use courier_proto::peer::admin_client::AdminClient;
use courier_proto::peer::*;
use tonic::transport::{Channel, Endpoint};

use crate::Conn;

pub async fn connect(conn: &Conn) -> Result<AdminClient<Channel>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (Some(ca), Some(cert), Some(key)) = (&conn.ca, &conn.cert, &conn.key) else {
        bail!("operator credentials missing: pass --ca, --cert and --key (or set COURIER_CA, COURIER_CERT, COURIER_KEY; `. DIR/env` after `courier dev` does)");
    };
    if conn.nodes.is_empty() {
        bail!("no node to talk to: pass --node ADDR (a node's peer address) or set COURIER_ADMIN_NODES");
    }
    let tls = courier_node::tls::client_tls(ca, cert, key)?;
    let mut last = None;
    for addr in &conn.nodes {
        let ep = Endpoint::from_shared(format!("https://{addr}"))
            .with_context(|| format!("bad node address {addr}"))?
            .tls_config(tls.clone())?
            .connect_timeout(Duration::from_secs(3));
        match ep.connect().await {
            Ok(ch) => return Ok(AdminClient::new(ch).max_decoding_message_size(64 << 20)),
            Err(e) => last = Some(anyhow!("{addr}: {e:?}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no node answered")).context("cannot reach any node"))
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}", s.message())
}

pub async fn init(conn: &Conn, data_groups: u32) -> Result<()> {
    let mut c = connect(conn).await?;
    let r = c.init(InitRequest { data_groups }).await.map_err(status_err)?.into_inner();
    println!("initialized cluster {} with {} data groups; this node is node {}", r.cluster_id, r.data_groups, r.node_id);
    Ok(())
}

pub async fn fetch_status(conn: &Conn) -> Result<StatusReply> {
    let mut c = connect(conn).await?;
    Ok(c.status(StatusRequest {}).await.map_err(status_err)?.into_inner())
}

pub fn status_json(s: &StatusReply) -> serde_json::Value {
    use serde_json::json;
    json!({
        "cluster_id": s.cluster_id,
        "data_groups": s.data_groups,
        "placement_settled": s.placement_settled,
        "chunks": s.chunks.as_ref().map(|c| json!({
            "chunks": c.chunks, "under_replicated": c.under_replicated, "repaired": c.repaired, "stored": c.stored, "passes": c.passes,
            "scrubbed": c.scrubbed, "corrupt_repaired": c.corrupt_repaired,
            "collected": c.collected, "moved_off": c.moved_off, "uploads_expired": c.uploads_expired,
        })),
        "nodes": s.nodes.iter().map(|n| json!({
            "id": n.id, "name": n.name, "addr": n.addr, "peer_addr": n.peer_addr, "admin_addr": n.admin_addr,
            "state": n.state, "lifecycle": n.lifecycle, "replicas": n.replicas, "leads": n.leads, "chunks_stored": n.chunks_stored,
            "development": n.development,
        })).collect::<Vec<_>>(),
        "groups": s.groups.iter().map(|g| json!({
            "id": g.id,
            "kind": if g.id == 0 { "meta" } else { "data" },
            "leader": if g.leader == 0 { serde_json::Value::Null } else { json!(g.leader) },
            "voters": g.voters, "learners": g.learners, "term": g.term, "applied": g.applied, "quorum": g.quorum,
            "replicas": g.replicas.iter().map(|r| json!({"node": r.node, "applied": r.applied, "lag": r.lag})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub async fn status(conn: &Conn, json: bool) -> Result<()> {
    let s = fetch_status(conn).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status_json(&s))?);
        return Ok(());
    }
    println!("cluster {}  ({} data groups, placement {})", s.cluster_id, s.data_groups, if s.placement_settled { "settled" } else { "moving" });
    let dev: Vec<String> = s.nodes.iter().filter(|n| n.development).map(|n| n.id.to_string()).collect();
    if !dev.is_empty() {
        println!("DEVELOPMENT nodes {}: test numbers log in with a known code; never let real users reach them", dev.join(","));
    }
    println!();
    println!("{:<4} {:<10} {:<8} {:<9} {:<22} {:<22} {:>8} {:>5}", "ID", "NAME", "STATE", "LIFECYCLE", "CLIENT ADDR", "PEER ADDR", "REPLICAS", "LEADS");
    for n in &s.nodes {
        println!("{:<4} {:<10} {:<8} {:<9} {:<22} {:<22} {:>8} {:>5}", n.id, n.name, n.state, n.lifecycle, n.addr, n.peer_addr, n.replicas, n.leads);
    }
    println!();
    println!("{:<6} {:<9} {:<12} {:<10} {:>6} {:>9}  LAG", "GROUP", "LEADER", "VOTERS", "LEARNERS", "TERM", "APPLIED");
    for g in &s.groups {
        let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let leader = match (g.leader, g.quorum) {
            (_, false) => "NOQUORUM".to_string(),
            (0, true) => "-".to_string(),
            (l, true) => l.to_string(),
        };
        let lag = g.replicas.iter().map(|r| if r.lag == u64::MAX { format!("{}:?", r.node) } else { format!("{}:{}", r.node, r.lag) }).collect::<Vec<_>>().join(" ");
        let name = if g.id == 0 { "meta".to_string() } else { g.id.to_string() };
        println!("{:<6} {:<9} {:<12} {:<10} {:>6} {:>9}  {}", name, leader, ids(&g.voters), ids(&g.learners), g.term, g.applied, lag);
    }
    if let Some(c) = &s.chunks {
        println!();
        let repair = if c.under_replicated == 0 { "every chunk on all its homes".to_string() } else { format!("repairing {} under-replicated", c.under_replicated) };
        println!("chunks: {} in use, {} copies stored, {repair}; {} copies made by repair", c.chunks, c.stored, c.repaired);
        println!("scrub: {} chunks re-read, {} damaged copies replaced", c.scrubbed, c.corrupt_repaired);
        println!(
            "collector: {} unused chunks deleted, {} copies moved off (their homes have them), {} unfinished uploads expired",
            c.collected, c.moved_off, c.uploads_expired
        );
    }
    Ok(())
}

pub async fn remove_node(conn: &Conn, id: u64, wait: bool) -> Result<()> {
    let mut c = connect(conn).await?;
    let r = c.remove_node(RemoveNodeRequest { node_id: id }).await.map_err(status_err)?.into_inner();
    println!("node {id}: {}", r.state);
    if wait {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let s = fetch_status(conn).await?;
            let n = s.nodes.iter().find(|n| n.id == id).ok_or_else(|| anyhow!("node {id} vanished from status"))?;
            if n.lifecycle == "removed" {
                println!("node {id}: removed");
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {id} still holds {} replicas after 10 minutes", n.replicas);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

pub async fn kv_put(conn: &Conn, key: String, value: String) -> Result<()> {
    let mut c = connect(conn).await?;
    let r = c.kv_put(KvPutRequest { key, value: value.into_bytes() }).await.map_err(status_err)?.into_inner();
    println!("written: group {} index {}", r.group, r.index);
    Ok(())
}

pub async fn kv_get(conn: &Conn, key: String) -> Result<()> {
    let mut c = connect(conn).await?;
    let r = c.kv_get(KvGetRequest { key: key.clone() }).await.map_err(status_err)?.into_inner();
    if !r.found {
        bail!("key {key:?} not found");
    }
    println!("{}", String::from_utf8_lossy(&r.value));
    Ok(())
}

pub async fn revoke_cert(conn: &Conn, cert: &std::path::Path) -> Result<()> {
    let sha256 = courier_node::tls::fingerprint_of(cert)?;
    let mut c = connect(conn).await?;
    let r = c.revoke_cert(RevokeCertRequest { sha256: sha256.to_vec() }).await.map_err(status_err)?.into_inner();
    let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
    println!("revoked certificate {hex} ({}); every node refuses it within a few seconds ({} revoked in all)", cert.display(), r.revoked);
    Ok(())
}

pub async fn login_code(conn: &Conn, phone: String) -> Result<()> {
    let mut c = connect(conn).await?;
    let r = c.login_code(LoginCodeRequest { phone: phone.clone() }).await.map_err(status_err)?.into_inner();
    if !r.found {
        bail!("no pending login code for {phone} (none sent, used, or expired)");
    }
    println!("{}", r.code);
    Ok(())
}
