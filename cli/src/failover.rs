//! `courier bench failover`: what a user feels when a node dies. Steady
//! senders spread over every group and every node, `kill -9` of one node
//! (by default the one leading the most groups, found by its pid file),
//! the node restarted a few seconds later; then the longest gap between
//! two acknowledgements each sender saw, how long until every group was
//! led again, the errors senders saw, and whether every acknowledged
//! message is in its chat afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use courier_client::{Client, ClientConfig};

use crate::user::UserConn;

#[derive(Args)]
pub struct FailoverBenchArgs {
    #[command(flatten)]
    conn: UserConn,
    /// The `courier dev` directory (node I's pid file and config are in `DIR/nI/`).
    #[arg(long, env = "COURIER_DEV_DIR")]
    dir: PathBuf,
    /// The nodes' admin HTTP addresses, node 1 first (`courier dev` exports them).
    #[arg(long = "metrics", env = "COURIER_METRICS", value_delimiter = ',')]
    metrics: Vec<String>,
    /// Concurrent senders, each its own user in its own group chat.
    #[arg(long, default_value_t = 32)]
    senders: usize,
    /// Seconds of steady sending before the kill.
    #[arg(long, default_value_t = 5)]
    before: u64,
    /// Seconds from the kill to the node's restart.
    #[arg(long, default_value_t = 5)]
    restart_after: u64,
    /// Seconds of sending after the restart.
    #[arg(long, default_value_t = 5)]
    after: u64,
    /// Kill node I (1-based, as in `courier dev`) instead of the busiest leader.
    #[arg(long)]
    node_to_kill: Option<usize>,
    /// Kill the node the first sender is connected to (its clients must move).
    #[arg(long, conflicts_with = "node_to_kill")]
    kill_connected: bool,
    #[arg(long)]
    json: bool,
}

/// One sender's record: when each acknowledgement came, and what was acknowledged.
struct Sent {
    acks: Vec<Instant>,
    ids: Vec<u64>,
    errors: u64,
}

/// The longest time between two acknowledgements (or the run's start and
/// the first one), in ms.
pub(crate) fn longest_gap_ms(start: Instant, acks: &[Instant]) -> f64 {
    let mut prev = start;
    let mut worst = Duration::ZERO;
    for a in acks {
        worst = worst.max(a.saturating_duration_since(prev));
        prev = *a;
    }
    worst.as_secs_f64() * 1000.0
}

/// Groups each node leads, by its metrics (`None` for a node that does not answer).
async fn groups_led(metrics: &[String]) -> Vec<Option<u64>> {
    let mut out = Vec::with_capacity(metrics.len());
    for addr in metrics {
        out.push(crate::bench::node_metric(addr, "courier_raft_groups_led", Duration::from_millis(500)).await.map(|v| v as u64));
    }
    out
}

pub async fn run(args: FailoverBenchArgs) -> Result<()> {
    let n = args.conn.nodes.len();
    if n < 3 || args.metrics.len() != n {
        bail!("needs at least 3 nodes, and one --metrics address per node in the same order (`. DIR/env` after `courier dev`)");
    }
    if args.senders == 0 || args.senders > 1024 {
        bail!("--senders must be between 1 and 1024");
    }
    let ca_path = args.conn.ca.clone().context("pass --ca FILE or set COURIER_CA")?;
    let ca = std::fs::read(&ca_path).with_context(|| format!("read {}", ca_path.display()))?;
    crate::bench::wait_for_steady_leaders(&args.metrics, Duration::from_secs(60)).await;
    let total: u64 = groups_led(&args.metrics).await.iter().map(|g| g.unwrap_or(0)).sum();

    // Senders, on every node (each client knows every node, so it can move).
    let endpoint = courier_client::shared_endpoint()?;
    let base = rand::random_range(0..90_000u64);
    let mut senders = Vec::new();
    for w in 0..args.senders {
        let mut nodes = args.conn.nodes.clone();
        nodes.rotate_left(w % n);
        let cfg = ClientConfig { endpoint: Some(endpoint.clone()), ..ClientConfig::new(nodes, ca.clone()) };
        let (c, mut events) = Client::connect(cfg).await?;
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        crate::bench::log_in(&c, base + w as u64).await.context("sign-in (is test_numbers on?)")?;
        let chat = c.create_group(&format!("failover {w}"), vec![]).await?.id;
        senders.push((Arc::new(c), chat));
    }
    let victim = match (args.node_to_kill, args.kill_connected) {
        (Some(i), _) if (1..=n).contains(&i) => i,
        (Some(i), _) => bail!("--node-to-kill {i}: the nodes are 1 to {n}"),
        (None, true) => {
            let addr = senders[0].0.node().await.context("the first sender is not connected")?;
            1 + args.conn.nodes.iter().position(|a| *a == addr).context("the first sender's node is not in --node")?
        }
        (None, false) => {
            let led = groups_led(&args.metrics).await;
            1 + (0..n).max_by_key(|i| led[*i].unwrap_or(0)).unwrap_or(0)
        }
    };
    let config = args.dir.join(format!("n{victim}/courier.toml"));
    if !config.exists() {
        bail!("no {} (is --dir the `courier dev` directory?)", config.display());
    }

    let start = Instant::now();
    let kill_at = start + Duration::from_secs(args.before);
    let restart_at = kill_at + Duration::from_secs(args.restart_after);
    let end = restart_at + Duration::from_secs(args.after);
    let mut tasks = tokio::task::JoinSet::new();
    for (k, (c, chat)) in senders.iter().cloned().enumerate() {
        tasks.spawn(async move {
            let mut s = Sent { acks: Vec::new(), ids: Vec::new(), errors: 0 };
            while Instant::now() < end {
                let random_id = rand::random();
                // A failed send is sent again with its random_id until it is
                // acknowledged (G3 makes that safe), as an app does.
                loop {
                    match c.send_message(chat, random_id, "failover", 0).await {
                        Ok(m) => {
                            s.acks.push(Instant::now());
                            s.ids.push(m.id);
                            break;
                        }
                        Err(_) if Instant::now() < end + Duration::from_secs(30) => {
                            s.errors += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => return Err(anyhow::anyhow!("a send failed for 30 s past the end: {e}")),
                    }
                }
            }
            Ok::<_, anyhow::Error>((k, s))
        });
    }

    // The kill, the time until every group is led again, the restart.
    tokio::time::sleep_until(kill_at.into()).await;
    let pid = crate::dev::node_pid(&args.dir, victim as u32)?;
    // SAFETY: kill(2) on the pid the node wrote for itself.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        bail!("cannot kill node {victim} (pid {pid}): {}", std::io::Error::last_os_error());
    }
    let killed = Instant::now();
    if !args.json {
        eprintln!("killed node {victim} (pid {pid}) at {:.1} s", killed.duration_since(start).as_secs_f64());
    }
    let live: Vec<String> = args.metrics.iter().enumerate().filter(|(i, _)| i + 1 != victim).map(|(_, a)| a.clone()).collect();
    let mut releader_ms = None;
    while Instant::now() < restart_at {
        let led: u64 = groups_led(&live).await.iter().map(|g| g.unwrap_or(0)).sum();
        if led >= total {
            releader_ms = Some(killed.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep_until(restart_at.into()).await;
    let restarted = crate::dev::spawn_node(&std::env::current_exe()?, &config, &args.dir.join(format!("n{victim}/node.log"))).with_context(|| format!("restart node {victim}"))?;
    if !args.json {
        eprintln!("restarted node {victim} (pid {}); it keeps running after this benchmark", restarted.id());
    }

    let mut sent = Vec::new();
    while let Some(r) = tasks.join_next().await {
        sent.push(r??);
    }
    // In the senders' order (they finish in any).
    sent.sort_by_key(|(k, _)| *k);
    let sent: Vec<Sent> = sent.into_iter().map(|(_, s)| s).collect();
    // Every acknowledged message is in its chat, once.
    let mut lost = 0u64;
    for ((c, chat), s) in senders.iter().zip(&sent) {
        let mut have = std::collections::BTreeSet::new();
        let mut before = 0;
        loop {
            let page = c.history_page(*chat, before, 0, 100).await?;
            let Some(last) = page.messages.last() else { break };
            before = last.id;
            have.extend(page.messages.iter().filter(|m| !m.deleted).map(|m| m.id));
            if before <= 1 {
                break;
            }
        }
        let missing: Vec<u64> = s.ids.iter().copied().filter(|id| !have.contains(id)).collect();
        if !missing.is_empty() {
            eprintln!("chat {chat}: {} acknowledged, {} in the history; missing {:?}…", s.ids.len(), have.len(), &missing[..missing.len().min(5)]);
        }
        // Messages in the history but never acknowledged are sends whose
        // answer was lost (sent again with the same random_id: no second copy).
        lost += missing.len() as u64;
    }
    let mut gaps: Vec<f64> = sent.iter().map(|s| longest_gap_ms(start, &s.acks)).collect();
    gaps.sort_by(f64::total_cmp);
    let longest = gaps.last().copied().unwrap_or(0.0);
    let p50 = gaps.get(gaps.len() / 2).copied().unwrap_or(0.0);
    let errors: u64 = sent.iter().map(|s| s.errors).sum();
    let sends: usize = sent.iter().map(|s| s.ids.len()).sum();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"killed_node": victim, "senders": args.senders, "sends": sends, "longest_gap_ms": longest, "p50_gap_ms": p50,
                "releader_ms": releader_ms, "errors": errors, "lost": lost})
        );
    } else {
        println!("killed node {victim}: every group led again after {}", releader_ms.map_or("(not within the restart delay)".into(), |ms| format!("{ms:.0} ms")));
        println!("longest gap between acknowledgements: {longest:.0} ms (p50 over {} senders {p50:.0} ms)", args.senders);
        println!("{sends} sends acknowledged, {errors} errors seen by senders, {lost} acknowledged messages lost");
    }
    if lost > 0 {
        bail!("{lost} acknowledged messages are missing or repeated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_from_the_start() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(longest_gap_ms(t0, &[at(10), at(20), at(900), at(910)]), 880.0);
        assert_eq!(longest_gap_ms(t0, &[at(500)]), 500.0);
        assert_eq!(longest_gap_ms(t0, &[]), 0.0);
    }
}
