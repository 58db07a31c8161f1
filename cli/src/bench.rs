//! Benchmarks. `kv`: replicated durable writes through the KV probe, with
//! concurrent writers spread over the nodes. `connections`: authenticated idle
//! QUIC connections one node holds and its memory per connection. `sign-ins`:
//! logins per second with test numbers.

use courier_client::Code;
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use courier_proto::peer::KvPutRequest;
use hdrhistogram::Histogram;

use courier_client::{Client, ClientConfig};

use crate::user::UserConn;
use crate::{Conn, admin};

#[derive(Args)]
pub struct KvBenchArgs {
    #[command(flatten)]
    conn: Conn,
    /// Concurrent writers (each waits for its write before the next).
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// How long to write.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    #[arg(long)]
    json: bool,
}

pub async fn kv(args: KvBenchArgs) -> Result<()> {
    if args.writers == 0 || args.writers > 4096 {
        bail!("--writers must be between 1 and 4096");
    }
    // One connection per node; writers take turns over them.
    let mut clients = Vec::new();
    for addr in &args.conn.nodes {
        let conn = Conn { nodes: vec![addr.clone()], ..args.conn.clone() };
        clients.push(admin::connect(&conn).await?);
    }
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.writers {
        let client = clients[w % clients.len()].clone();
        let value = vec![b'x'; args.value_size];
        tasks.spawn(async move {
            let mut i = 0u64;
            until(end, || {
                i += 1;
                let mut client = client.clone();
                let req = KvPutRequest { key: format!("bench/{w}/{i}"), value: value.clone() };
                async move { client.kv_put(req).await }
            })
            .await
        });
    }
    let (hist, errors) = merge(tasks).await?;
    let ops = hist.len() as f64 / args.seconds as f64;
    let (p50, p99) = (hist.value_at_quantile(0.5) as f64 / 1000.0, hist.value_at_quantile(0.99) as f64 / 1000.0);
    if args.json {
        println!("{}", serde_json::json!({"writers": args.writers, "ops_per_sec": ops, "p50_ms": p50, "p99_ms": p99, "errors": errors, "ops": hist.len()}));
    } else {
        println!("writers {:>4}: {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} ops, {} errors)", args.writers, ops, p50, p99, hist.len(), errors);
    }
    Ok(())
}

#[derive(Args)]
pub struct ConnBenchArgs {
    /// The node's client address (every connection goes to this one node).
    #[arg(long)]
    node: String,
    /// The cluster CA certificate.
    #[arg(long, env = "COURIER_CA")]
    ca: std::path::PathBuf,
    /// The node's process id, for its resident memory (in DATA_DIR/courier.pid).
    #[arg(long)]
    node_pid: u32,
    /// Connection counts to reach, in order (each adds to the previous).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    counts: Vec<usize>,
    /// Distinct sessions the connections log in with (round robin).
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    #[arg(long)]
    json: bool,
}

/// Resident memory of a process, from `/proc/PID/status`.
fn rss_bytes(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("no process {pid} on this machine"))?;
    let kb = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("VmRSS missing from /proc/PID/status")?;
    Ok(kb * 1024)
}

/// Test number `i` (`+99966XYYYY`, code `XXXXX`), from a random start so
/// repeated runs do not exhaust a number's daily codes.
fn test_phone(i: u64) -> (String, String) {
    let i = i % 90_000;
    let x = 1 + i / 10_000;
    (format!("+99966{x}{:04}", i % 10_000), x.to_string().repeat(5))
}

/// One login with a test number: send_code, sign_in, sign_up when new. Returns whether it signed up.
pub(crate) async fn log_in(client: &Client, i: u64) -> courier_client::Result<bool> {
    let (phone, code) = test_phone(i);
    let sent = client.send_code(&phone).await?;
    match client.sign_in(&phone, &sent.phone_code_hash, &code).await {
        Ok(_) => Ok(false),
        Err(e) if e.code() == Code::SignUpRequired => {
            client.sign_up(&phone, &sent.phone_code_hash, "Bench", &format!("{i}")).await?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

pub async fn connections(args: ConnBenchArgs) -> Result<()> {
    if args.counts.is_empty() || args.counts.windows(2).any(|w| w[0] >= w[1]) || args.sessions == 0 {
        bail!("--counts must increase (e.g. 1000,10000) and --sessions be at least 1");
    }
    let ca = std::fs::read(&args.ca).with_context(|| format!("read {}", args.ca.display()))?;
    let mut cfg = ClientConfig::new(vec![args.node.clone()], ca);
    // Idle devices as a phone keeps them (not the SDK's fast-failover
    // keep-alive, which would make this a packet-rate benchmark).
    cfg.keep_alive = Duration::from_secs(10);
    cfg.idle_timeout = Duration::from_secs(30);
    // Sessions first: their writes are not the connections' memory.
    let start = rand::random_range(0..90_000u64);
    let mut tokens = Vec::new();
    let (login, _) = Client::connect(cfg.clone()).await?;
    for i in 0..args.sessions as u64 {
        log_in(&login, start + i).await.context("sign-in (is test_numbers on, and the per-address code limit off?)")?;
        tokens.push(login.token().context("no token after sign-in")?);
    }
    login.close().await;
    drop(login);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = rss_bytes(args.node_pid)?;
    // A few UDP sockets carry all connections, as a NAT'd population would.
    let endpoints: Vec<_> = (0..8).map(|_| courier_client::shared_endpoint()).collect::<Result<_, _>>()?;
    let mut held: Vec<(Client, tokio::sync::mpsc::Receiver<courier_client::Event>)> = Vec::new();
    let mut results = Vec::new();
    for &target in &args.counts {
        let t = Instant::now();
        while held.len() < target {
            let batch = (target - held.len()).min(256);
            let mut set = tokio::task::JoinSet::new();
            for k in 0..batch {
                let n = held.len() + k;
                let mut c = cfg.clone();
                c.token = Some(tokens[n % tokens.len()].clone());
                c.endpoint = Some(endpoints[n % endpoints.len()].clone());
                c.device = format!("bench-{n}");
                set.spawn(async move {
                    let (client, rx) = Client::connect(c).await?;
                    if !client.hello().is_some_and(|h| h.authorized) {
                        bail!("a connection was not authorized");
                    }
                    Ok((client, rx))
                });
            }
            while let Some(r) = set.join_next().await {
                held.push(r??);
            }
        }
        let took = t.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Still alive: a sample answers.
        for c in held.iter().step_by((held.len() / 16).max(1)) {
            c.0.ping().await.context("an idle connection stopped answering")?;
        }
        let rss = rss_bytes(args.node_pid)?;
        let per = rss.saturating_sub(base) as f64 / held.len() as f64;
        results.push(serde_json::json!({
            "connections": held.len(), "node_rss_mib": rss as f64 / 1048576.0, "baseline_rss_mib": base as f64 / 1048576.0,
            "bytes_per_connection": per.round(), "connect_secs": took.as_secs_f64(),
        }));
        if !args.json {
            println!(
                "{:>6} connections: node RSS {:>7.1} MiB (baseline {:.1} MiB), {:>6.1} KiB per connection; opened in {:.1} s",
                held.len(),
                rss as f64 / 1048576.0,
                base as f64 / 1048576.0,
                per / 1024.0,
                took.as_secs_f64()
            );
        }
    }
    if args.json {
        println!("{}", serde_json::json!({ "node": args.node, "sessions": args.sessions, "results": results }));
    }
    for (c, _) in &held {
        c.close().await;
    }
    Ok(())
}

#[derive(Args)]
pub struct SignInBenchArgs {
    #[command(flatten)]
    conn: UserConn,
    /// Concurrent clients (spread over the nodes), each logging in again and again.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long)]
    json: bool,
}

pub async fn sign_ins(args: SignInBenchArgs) -> Result<()> {
    if args.clients == 0 || args.clients > 4096 || args.conn.nodes.is_empty() {
        bail!("--clients must be between 1 and 4096, and at least one --node given");
    }
    let ca_path = args.conn.ca.clone().context("pass --ca FILE or set COURIER_CA")?;
    let ca = std::fs::read(&ca_path).with_context(|| format!("read {}", ca_path.display()))?;
    let next = Arc::new(AtomicU64::new(rand::random_range(0..90_000u64)));
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.clients {
        let node = args.conn.nodes[w % args.conn.nodes.len()].clone();
        let cfg = ClientConfig::new(vec![node], ca.clone());
        let next = next.clone();
        tasks.spawn(async move {
            let (client, _rx) = Client::connect(cfg).await?;
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let (mut sign_ups, mut errors, mut first_error) = (0u64, 0u64, None);
            while Instant::now() < end {
                let t = Instant::now();
                match log_in(&client, next.fetch_add(1, Ordering::Relaxed)).await {
                    Ok(new) => {
                        hist.record(t.elapsed().as_micros() as u64).expect("record");
                        sign_ups += u64::from(new);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
            anyhow::Ok((hist, sign_ups, errors, first_error))
        });
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let (mut sign_ups, mut errors, mut first_error) = (0, 0, None);
    while let Some(r) = tasks.join_next().await {
        let (h, s, e, f) = r??;
        hist.add(h)?;
        sign_ups += s;
        errors += e;
        first_error = first_error.or(f);
    }
    let rate = hist.len() as f64 / args.seconds as f64;
    let (p50, p99) = (hist.value_at_quantile(0.5) as f64 / 1000.0, hist.value_at_quantile(0.99) as f64 / 1000.0);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"clients": args.clients, "nodes": args.conn.nodes.len(), "logins_per_sec": rate, "p50_ms": p50, "p99_ms": p99, "logins": hist.len(), "sign_ups": sign_ups, "errors": errors})
        );
    } else {
        println!(
            "clients {:>4} over {} nodes: {:>7.0} logins/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} logins, {} of them sign-ups, {} errors)",
            args.clients,
            args.conn.nodes.len(),
            rate,
            p50,
            p99,
            hist.len(),
            sign_ups,
            errors
        );
    }
    if let Some(e) = first_error {
        eprintln!("first error: {e}");
    }
    Ok(())
}

#[derive(Args)]
pub struct MessagesBenchArgs {
    #[command(flatten)]
    conn: UserConn,
    /// Concurrent senders, each its own user in its own group chat, spread over the nodes.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Message text size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Then: this many messages from a sender on the first node to a
    /// recipient on the second, one at a time, timing send → push.
    #[arg(long, default_value_t = 200)]
    delivery: usize,
    /// Keep each sender on its one connection instead of sending straight
    /// to its chat's leader (every send that lands on a follower is then
    /// forwarded by it).
    #[arg(long)]
    no_leader_routing: bool,
    /// The nodes' admin HTTP addresses (`courier dev` exports them): the
    /// benchmark first waits until the groups' leaders stop moving (a fresh
    /// cluster spreads them over its first seconds), and reads the nodes'
    /// CPU time before and after the timed sends, to report the node CPU
    /// each send cost.
    #[arg(long = "metrics", env = "COURIER_METRICS", value_delimiter = ',')]
    metrics: Vec<String>,
    #[arg(long)]
    json: bool,
}

/// A counter's or gauge's value in a node's Prometheus text.
fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A metric's value on each node at these admin addresses, or `None` if
/// one does not answer (or predates the metric).
async fn per_node(addrs: &[String], name: &str) -> Option<Vec<f64>> {
    let mut values = Vec::with_capacity(addrs.len());
    for addr in addrs {
        values.push(node_metric(addr, name, Duration::from_secs(5)).await?);
    }
    Some(values)
}

/// A metric's value on the node at this admin address (`None`: no answer
/// within `timeout`, or no such metric).
pub(crate) async fn node_metric(addr: &str, name: &str, timeout: Duration) -> Option<f64> {
    metric_value(&crate::dev::http_get(addr, "/metrics", timeout).await?, name)
}

/// The summed CPU seconds of the nodes at these admin addresses.
async fn nodes_cpu_seconds(addrs: &[String]) -> Option<f64> {
    Some(per_node(addrs, "courier_process_cpu_seconds_total").await?.iter().sum())
}

/// Watches how many groups each node leads: steady once no count changed for
/// `quiet`. A fresh cluster starts with every group led by its first node
/// and spreads them over the next seconds; a benchmark measures the cluster
/// as it will stay, not one whose leaders (and the clients' routes) move
/// under it.
struct LeaderWatch {
    quiet: Duration,
    last: Option<(Vec<u64>, Instant)>,
}

/// What one look at the leaders found.
#[derive(Debug, PartialEq, Eq)]
enum Leaders {
    /// The counts differ from the last look's (or this is the first).
    Moved,
    /// Unchanged, for less than the quiet time.
    Holding,
    /// Unchanged for the quiet time.
    Steady,
}

impl LeaderWatch {
    fn new(quiet: Duration) -> Self {
        LeaderWatch { quiet, last: None }
    }

    /// Records the counts seen at `now`.
    fn observe(&mut self, counts: Vec<u64>, now: Instant) -> Leaders {
        match &self.last {
            Some((seen, since)) if *seen == counts && now.duration_since(*since) >= self.quiet => Leaders::Steady,
            Some((seen, _)) if *seen == counts => Leaders::Holding,
            _ => {
                self.last = Some((counts, now));
                Leaders::Moved
            }
        }
    }
}

/// Waits, at most `limit`, until the nodes' leaderships stop moving (see
/// [`LeaderWatch`]); says what it waits for. Without admin addresses it
/// cannot tell, and does not wait.
pub(crate) async fn wait_for_steady_leaders(addrs: &[String], limit: Duration) {
    let (start, mut watch) = (Instant::now(), LeaderWatch::new(Duration::from_secs(5)));
    while start.elapsed() < limit {
        let Some(led) = per_node(addrs, "courier_raft_groups_led").await else { return };
        let counts: Vec<u64> = led.into_iter().map(|n| n as u64).collect();
        match watch.observe(counts.clone(), Instant::now()) {
            Leaders::Steady => return,
            Leaders::Moved => eprintln!("waiting for the leaders to settle: groups led per node {counts:?}"),
            Leaders::Holding => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("leaders still moving after {} s: measuring anyway", limit.as_secs());
}

pub async fn messages(args: MessagesBenchArgs) -> Result<()> {
    if args.senders == 0 || args.senders > 1024 || args.conn.nodes.is_empty() {
        bail!("--senders must be between 1 and 1024, and at least one --node given");
    }
    wait_for_steady_leaders(&args.metrics, Duration::from_secs(60)).await;
    let ca_path = args.conn.ca.clone().context("pass --ca FILE or set COURIER_CA")?;
    let ca = std::fs::read(&ca_path).with_context(|| format!("read {}", ca_path.display()))?;
    let base = rand::random_range(0..90_000u64);
    // The senders share one UDP socket: one process playing many devices
    // need not wake a socket's task per device for every packet.
    let endpoint = courier_client::shared_endpoint()?;
    let connect = |node: &str| ClientConfig {
        route_to_leaders: !args.no_leader_routing,
        endpoint: Some(endpoint.clone()),
        ..ClientConfig::new(vec![node.to_string()], ca.clone())
    };
    // Set-up: one user and one group per sender.
    let mut senders = Vec::new();
    for w in 0..args.senders {
        let (c, mut events) = Client::connect(connect(&args.conn.nodes[w % args.conn.nodes.len()])).await?;
        // A live device: it reads its updates (its own messages among them).
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        log_in(&c, base + w as u64).await.context("sign-in (is test_numbers on?)")?;
        let chat = c.create_group(&format!("bench {w}"), vec![]).await?.id;
        senders.push((c, chat));
    }
    let text = "x".repeat(args.size);
    let cpu_before = nodes_cpu_seconds(&args.metrics).await;
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (c, chat) in senders {
        let text = text.clone();
        tasks.spawn(async move {
            let c = Arc::new(c);
            until(end, || {
                let (c, text) = (c.clone(), text.clone());
                async move { c.send_message(chat, rand::random(), &text, 0).await }
            })
            .await
        });
    }
    let (hist, errors) = merge(tasks).await?;
    // Node CPU per send, summed over the nodes (empty without --metrics).
    let cpu_us = match (cpu_before, nodes_cpu_seconds(&args.metrics).await) {
        (Some(a), Some(b)) if !hist.is_empty() => Some((b - a) * 1e6 / hist.len() as f64),
        _ => None,
    };
    let rate = hist.len() as f64 / args.seconds as f64;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;

    // Delivery latency: sender on the first node, recipient on the last.
    let mut lat = Histogram::<u64>::new(3)?;
    if args.delivery > 0 {
        let (a, _) = Client::connect(connect(&args.conn.nodes[0])).await?;
        log_in(&a, base + 90_000 - 1).await?;
        let (b, mut events) = Client::connect(connect(args.conn.nodes.last().expect("a node"))).await?;
        log_in(&b, base + 90_000 - 2).await?;
        let b_id = b.get_self().await?.id;
        let chat = a.private_chat(b_id).await?.id;
        tokio::time::sleep(Duration::from_millis(500)).await;
        while events.try_recv().is_ok() {}
        for _ in 0..args.delivery {
            let t = Instant::now();
            let sent = a.send_message(chat, rand::random(), &text, 0).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Some(courier_client::Event::Update(courier_client::pb::Update {
                        kind: Some(courier_client::pb::update::Kind::ChatEvent(e)),
                    }))) if matches!(&e.kind, Some(courier_client::pb::chat_event::Kind::NewMessage(m)) if m.id == sent.id && m.chat_id == chat) => {
                        lat.record(t.elapsed().as_micros() as u64)?;
                        break;
                    }
                    Ok(Some(_)) => continue,
                    _ => bail!("message {} was not delivered within 5 s", sent.id),
                }
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"senders": args.senders, "sends_per_sec": rate, "p50_ms": ms(&hist, 0.5), "p99_ms": ms(&hist, 0.99), "errors": errors,
                "delivery_p50_ms": ms(&lat, 0.5), "delivery_p99_ms": ms(&lat, 0.99), "delivered": lat.len(), "node_cpu_us_per_send": cpu_us})
        );
    } else {
        println!(
            "senders {:>4}: {:>7.0} durable sends/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} sends, {} errors)",
            args.senders,
            rate,
            ms(&hist, 0.5),
            ms(&hist, 0.99),
            hist.len(),
            errors
        );
        if args.delivery > 0 {
            println!("delivery send → push on another node: p50 {:.2} ms  p99 {:.2} ms  ({} messages)", ms(&lat, 0.5), ms(&lat, 0.99), lat.len());
        }
        if let Some(us) = cpu_us {
            println!("node CPU per send: {us:.0} µs (summed over {} nodes)", args.metrics.len());
        }
    }
    Ok(())
}

/// Runs `op` again and again until `end`; the latency of each success in µs, and the failures.
async fn until<F, Fut, T, E>(end: Instant, mut op: F) -> (Histogram<u64>, u64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let mut hist = latencies();
    let mut errors = 0;
    while Instant::now() < end {
        let t = Instant::now();
        match op().await {
            Ok(_) => hist.saturating_record(t.elapsed().as_micros() as u64),
            Err(_) => errors += 1,
        }
    }
    (hist, errors)
}

/// The workers' latencies and failures, together.
async fn merge(mut tasks: tokio::task::JoinSet<(Histogram<u64>, u64)>) -> Result<(Histogram<u64>, u64)> {
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (h, e) = r?;
        hist.add(h)?;
        errors += e;
    }
    Ok((hist, errors))
}

#[derive(Args)]
pub struct GroupBenchArgs {
    #[command(flatten)]
    conn: UserConn,
    /// Online members of the group, each its own user and connection, spread over the nodes.
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Messages to time, one after another.
    #[arg(long, default_value_t = 5)]
    messages: usize,
    #[arg(long)]
    json: bool,
}

/// One message to every online member of a large group: the time until the
/// last member has it on its push stream.
pub async fn group(args: GroupBenchArgs) -> Result<()> {
    if args.members == 0 || args.members > 20_000 || args.conn.nodes.is_empty() {
        bail!("--members must be between 1 and 20000, and at least one --node given");
    }
    let ca_path = args.conn.ca.clone().context("pass --ca FILE or set COURIER_CA")?;
    let ca = std::fs::read(&ca_path).with_context(|| format!("read {}", ca_path.display()))?;
    let base = rand::random_range(0..80_000u64);
    let endpoints: Vec<_> = (0..8).map(|_| courier_client::shared_endpoint()).collect::<Result<_, _>>()?;
    let t = Instant::now();
    let mut logins = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..args.members {
        let mut cfg = ClientConfig::new(vec![args.conn.nodes[i % args.conn.nodes.len()].clone()], ca.clone());
        cfg.endpoint = Some(endpoints[i % endpoints.len()].clone());
        let sem = sem.clone();
        logins.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let (c, events) = Client::connect(cfg).await?;
            log_in(&c, base + 1 + i as u64).await?;
            let id = c.get_self().await?.id;
            anyhow::Ok((c, events, id))
        });
    }
    let mut members = Vec::new();
    while let Some(r) = logins.join_next().await {
        members.push(r??);
    }
    let (owner, _) = Client::connect(ClientConfig::new(vec![args.conn.nodes[0].clone()], ca.clone())).await?;
    log_in(&owner, base).await?;
    let chat = owner.create_group("bench group", members.iter().map(|m| m.2).collect()).await?.id;
    eprintln!("{} members logged in and in the group in {:.1} s", members.len(), t.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await; // the Joined event subscribes their connections
    let mut rounds = Vec::new();
    for k in 0..args.messages {
        let mut waits = tokio::task::JoinSet::new();
        let start = Instant::now();
        let sent = owner.send_message(chat, rand::random(), &format!("to everyone #{k}"), 0).await?;
        for (i, (_, events, _)) in members.iter_mut().enumerate() {
            let mut events = std::mem::replace(events, tokio::sync::mpsc::channel(1).1);
            waits.spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    match tokio::time::timeout_at(deadline, events.recv()).await {
                        Ok(Some(courier_client::Event::Update(courier_client::pb::Update {
                            kind: Some(courier_client::pb::update::Kind::ChatEvent(e)),
                        }))) if matches!(&e.kind, Some(courier_client::pb::chat_event::Kind::NewMessage(m)) if m.id == sent.id && m.chat_id == chat) => {
                            return (i, events, Some(start.elapsed()));
                        }
                        Ok(Some(_)) => continue,
                        _ => return (i, events, None),
                    }
                }
            });
        }
        let mut hist = latencies();
        let mut missed = 0;
        while let Some(r) = waits.join_next().await {
            let (i, events, took) = r?;
            members[i].1 = events;
            match took {
                Some(d) => hist.saturating_record(d.as_micros() as u64),
                None => missed += 1,
            }
        }
        rounds.push((hist.value_at_quantile(0.5) as f64 / 1000.0, hist.max() as f64 / 1000.0, missed));
    }
    if args.json {
        let v: Vec<_> = rounds.iter().map(|(p50, all, missed)| serde_json::json!({"p50_ms": p50, "all_ms": all, "missed": missed})).collect();
        println!("{}", serde_json::json!({"members": args.members, "nodes": args.conn.nodes.len(), "rounds": v}));
    } else {
        for (k, (p50, all, missed)) in rounds.iter().enumerate() {
            println!("message {k}: half the {} members had it after {p50:.1} ms, all after {all:.1} ms ({missed} missed)", args.members);
        }
    }
    Ok(())
}

/// Latencies in µs from 1 µs to 10 minutes, 3 significant digits (longer ones count as 10 minutes).
fn latencies() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Args)]
pub struct MediaBenchArgs {
    #[command(flatten)]
    conn: UserConn,
    /// File size in MiB (random bytes).
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Where the test file and the `dd` probe are written (the disk the nodes use).
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
    #[arg(long)]
    json: bool,
}

/// Upload and download MB/s of one file, beside this disk's sequential
/// write rate with fdatasync (`dd … conv=fdatasync`) measured in the same run.
pub async fn media(args: MediaBenchArgs) -> Result<()> {
    if args.mib == 0 || args.mib > 2000 || args.conn.nodes.is_empty() {
        bail!("--mib must be 1 to 2000, and at least one --node given");
    }
    let ca_path = args.conn.ca.clone().context("pass --ca FILE or set COURIER_CA")?;
    let ca = std::fs::read(&ca_path).with_context(|| format!("read {}", ca_path.display()))?;
    let dir = tempfile::Builder::new().prefix("courier-bench-").tempdir_in(&args.dir)?;
    let (src, dst) = (dir.path().join("file.bin"), dir.path().join("copy.bin"));
    let bytes = args.mib << 20;
    // Random bytes, so nothing deduplicates.
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..args.mib {
            rand::fill(&mut block[..]);
            f.write_all(&block)?;
        }
    }
    let dd = dd_rate(dir.path(), args.mib)?;

    let (c, _) = Client::connect(ClientConfig::new(args.conn.nodes.clone(), ca)).await?;
    log_in(&c, rand::random_range(0..90_000u64)).await.context("sign-in (is test_numbers on?)")?;
    let path = src.clone();
    let mut u = tokio::task::spawn_blocking(move || courier_client::media::Upload::prepare(&path, 0)).await??;
    u.upload_id = rand::random::<u64>() >> 1;
    let t = Instant::now();
    let f = c.upload(&u, |_| {}).await?;
    let up = t.elapsed().as_secs_f64();
    let t = Instant::now();
    c.download(f.id, &dst, |_, _| {}).await?;
    let down = t.elapsed().as_secs_f64();
    let mb = bytes as f64 / 1e6;
    let (up_rate, down_rate) = (mb / up, mb / down);
    if args.json {
        println!("{}", serde_json::json!({"mib": args.mib, "upload_mb_s": up_rate, "download_mb_s": down_rate, "dd_fdatasync_mb_s": dd, "upload_vs_dd": up_rate / dd, "download_vs_dd": down_rate / dd}));
    } else {
        println!("{} MiB: upload {up_rate:.1} MB/s ({up:.1} s), download {down_rate:.1} MB/s ({down:.1} s)", args.mib);
        println!("disk: dd conv=fdatasync {dd:.1} MB/s; upload/dd = {:.2}, download/dd = {:.2}", up_rate / dd, down_rate / dd);
    }
    Ok(())
}

/// `dd if=/dev/zero of=DIR/dd.bin bs=1M count=MIB conv=fdatasync`, in MB/s.
fn dd_rate(dir: &std::path::Path, mib: u64) -> Result<f64> {
    let out_file = dir.join("dd.bin");
    let t = Instant::now();
    let out = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", out_file.display()))
        .args(["bs=1M", &format!("count={mib}"), "conv=fdatasync"])
        .output()
        .context("run dd")?;
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&out_file);
    if !out.status.success() {
        bail!("dd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((mib << 20) as f64 / 1e6 / secs)
}

#[cfg(test)]
mod tests {
    use super::{Duration, Instant, LeaderWatch, Leaders, metric_value};

    #[test]
    fn node_cpu_seconds_are_read_from_the_metrics_text() {
        let text = "# HELP courier_process_cpu_seconds CPU time\n# TYPE courier_process_cpu_seconds counter\ncourier_process_cpu_seconds_total 12.5\ncourier_client_requests_total 3\n";
        let cpu = |text: &str| metric_value(text, "courier_process_cpu_seconds_total");
        assert_eq!(cpu(text), Some(12.5));
        assert_eq!(cpu("courier_client_requests_total 3\n"), None);
        // A longer name that starts with the asked one is another metric.
        assert_eq!(cpu("courier_process_cpu_seconds_total_x 4\n"), None);
    }

    #[test]
    fn leaders_are_steady_once_no_count_changed_for_the_quiet_time() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = LeaderWatch::new(Duration::from_secs(5));
        assert_eq!(w.observe(vec![17, 0, 0], at(0)), Leaders::Moved);
        assert_eq!(w.observe(vec![13, 2, 2], at(3_000)), Leaders::Moved, "a change starts the quiet time over");
        assert_eq!(w.observe(vec![13, 2, 2], at(7_999)), Leaders::Holding);
        assert_eq!(w.observe(vec![7, 5, 5], at(8_000)), Leaders::Moved);
        assert_eq!(w.observe(vec![7, 5, 5], at(12_999)), Leaders::Holding);
        assert_eq!(w.observe(vec![7, 5, 5], at(13_000)), Leaders::Steady);
    }
}
