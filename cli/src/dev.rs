//! `courier dev`: a local cluster in one command. Certificates, one config and
//! one child process per node, `cluster init`, and `DIR/env` for later commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use courier_node::certs;

use crate::{Conn, admin};

#[derive(Args)]
pub struct DevArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Where certificates, node data and logs go.
    #[arg(long, default_value = "./courier-dev")]
    dir: PathBuf,
    /// Node I listens on BASE+10*I (peer), +1 (client QUIC), +2 (admin HTTP).
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// The loopback address the nodes listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Data groups of the new cluster.
    #[arg(long, default_value_t = 16)]
    data_groups: u32,
    /// Voters per data group (`placement.replicas`): 3 survives one dead
    /// node, 5 two (with at least 5 nodes).
    #[arg(long, default_value_t = 3)]
    replicas: u32,
}

struct Ports {
    peer: String,
    client: String,
    admin: String,
    web: String,
}

fn ports(args: &DevArgs, i: u32) -> Ports {
    let base = u32::from(args.base_port) + 10 * i;
    Ports {
        peer: format!("{}:{}", args.host, base),
        client: format!("{}:{}", args.host, base + 1),
        admin: format!("{}:{}", args.host, base + 2),
        web: format!("{}:{}", args.host, base + 3),
    }
}

/// Children are stopped (SIGTERM, then SIGKILL) when this drops.
struct Children(Vec<(u32, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &self.0 {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (i, c) in &mut self.0 {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = c.try_wait() {
                eprintln!("node {i} did not stop in time; killing it");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn write_config(args: &DevArgs, i: u32, certs_dir: &Path) -> Result<PathBuf> {
    let dir = args.dir.join(format!("n{i}"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("courier.toml");
    if path.exists() {
        return Ok(path);
    }
    let p = ports(args, i);
    let join = if i == 1 { String::new() } else { format!("\"{}\"", ports(args, 1).peer) };
    let certs = std::fs::canonicalize(certs_dir)?;
    let text = format!(
        "# Written by `courier dev`.\nname = \"n{i}\"\ndata_dir = \".\"\npeer_addr = \"{}\"\nclient_addr = \"{}\"\nadmin_addr = \"{}\"\njoin = [{join}]\ndata_groups = {}\n# A laptop cluster: test numbers (+99966XYYYY take code XXXXX) need it.\ndevelopment = true\n\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n# No per-address login budget (every local client shares one address).\n[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\n\n# Every local client shares one address: no cap on its connections.\n[gateway]\nmax_connections_per_address = 0\n\n# Benchmarks post as fast as they can: no per-user budgets on posts.\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n\n[placement]\nreplicas = {}\n\n# Courier Web: the page here, WebTransport on the client port.\n[web]\naddr = \"{}\"\n",
        p.peer,
        p.client,
        p.admin,
        args.data_groups,
        certs.join("ca.pem").display(),
        certs.join(format!("n{i}.pem")).display(),
        certs.join(format!("n{i}-key.pem")).display(),
        args.replicas,
        p.web,
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The pid node `i` of the dev cluster in `dir` wrote for itself.
pub(crate) fn node_pid(dir: &Path, i: u32) -> Result<i32> {
    let path = dir.join(format!("n{i}/courier.pid"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {} (is the node running?)", path.display()))?;
    text.trim().parse().with_context(|| format!("{} holds no pid", path.display()))
}

/// Starts `courier node --config CONFIG` with its output appended to `log`.
pub(crate) fn spawn_node(exe: &Path, config: &Path, log: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("open {}", log.display()))?;
    Ok(Command::new(exe).arg("node").arg("--config").arg(config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?)
}

/// `GET path` from a node's admin HTTP address: the whole response (status
/// line, headers, body) when it is a 200 within `timeout`, else `None`.
pub(crate) async fn http_get(addr: &str, path: &str, timeout: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        (text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200")).then_some(text)
    };
    tokio::time::timeout(timeout, get).await.ok().flatten()
}

async fn wait_http(addr: &str, deadline: Instant) -> Result<()> {
    loop {
        if http_get(addr, "/health", Duration::from_secs(1)).await.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node at {addr} did not become healthy");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(args: DevArgs) -> Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    if args.replicas == 0 || args.replicas % 2 == 0 {
        bail!("--replicas must be odd (1, 3, 5, …): an even count survives no more failures than the odd one below it");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let certs_dir = dir.join("certs");
    if !certs::ca_paths(&certs_dir).0.exists() {
        certs::create_ca(&certs_dir)?;
        certs::create_client(&certs_dir, "operator")?;
    }
    for i in 1..=args.nodes {
        if !certs::issued_paths(&certs_dir, &format!("n{i}")).0.exists() {
            certs::create_node(&certs_dir, &format!("n{i}"), &[args.host.clone(), "localhost".into()])?;
        }
    }
    let exe = std::env::current_exe().context("locate the courier binary")?;
    let spawn = |i: u32| -> Result<Child> {
        let config = write_config(&args, i, &certs_dir)?;
        spawn_node(&exe, &config, &dir.join(format!("n{i}/node.log"))).with_context(|| format!("start node {i}"))
    };
    let node_log = |i: u32| format!("see {}", dir.join(format!("n{i}/node.log")).display());
    let deadline = Instant::now() + Duration::from_secs(60);
    // Ctrl-C (or SIGTERM) from now on stops the nodes: with the handlers
    // installed before the first node starts, a signal during start-up is
    // held until the wait below instead of killing this process and
    // leaving the nodes running.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut children = Children(Vec::new());
    children.0.push((1, spawn(1)?));
    wait_http(&ports(&args, 1).admin, deadline).await.with_context(|| node_log(1))?;

    let (ca, cert, key) = (certs_dir.join("ca.pem"), certs_dir.join("operator.pem"), certs_dir.join("operator-key.pem"));
    let peers: Vec<String> = (1..=args.nodes).map(|i| ports(&args, i).peer).collect();
    let clients: Vec<String> = (1..=args.nodes).map(|i| ports(&args, i).client).collect();
    let conn = Conn { nodes: vec![peers[0].clone()], ca: Some(ca.clone()), cert: Some(cert.clone()), key: Some(key.clone()) };
    let mut c = admin::connect(&conn).await?;
    let fresh = match c.init(courier_proto::peer::InitRequest { data_groups: args.data_groups }).await {
        Ok(r) => {
            println!("initialized cluster {}", r.into_inner().cluster_id);
            true
        }
        Err(s) if s.message().contains("already belongs") => {
            println!("cluster already initialized; restarted its nodes");
            false
        }
        Err(s) => bail!("cluster init failed: {}", s.message()),
    };
    // A new cluster's nodes join one at a time, so node nI gets id I.
    for i in 2..=args.nodes {
        children.0.push((i, spawn(i)?));
        wait_http(&ports(&args, i).admin, deadline).await.with_context(|| node_log(i))?;
        // A restarted cluster's nodes are registered already.
        while fresh && !admin::fetch_status(&conn).await.is_ok_and(|s| s.nodes.iter().any(|n| n.peer_addr == peers[i as usize - 1])) {
            if Instant::now() > deadline {
                bail!("node n{i} did not join; {}", node_log(i));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let env = format!(
        "export COURIER_NODES={}\nexport COURIER_CA={}\nexport COURIER_CERT={}\nexport COURIER_KEY={}\nexport COURIER_ADMIN_NODES={}\nexport COURIER_METRICS={}\nexport COURIER_DEV_DIR={}\n",
        clients.join(","),
        ca.display(),
        cert.display(),
        key.display(),
        peers.join(","),
        (1..=args.nodes).map(|i| ports(&args, i).admin).collect::<Vec<_>>().join(","),
        dir.display(),
    );
    std::fs::write(dir.join("env"), env)?;

    // Wait until every node is up and every group has its replicas.
    let conn_all = Conn { nodes: peers.clone(), ..conn.clone() };
    let settle = Instant::now() + Duration::from_secs(90);
    let mut stopped = false;
    loop {
        if let Ok(s) = admin::fetch_status(&conn_all).await {
            let up = s.nodes.iter().filter(|n| n.state == "up").count();
            if up == args.nodes as usize && s.placement_settled {
                break;
            }
        }
        if Instant::now() > settle {
            eprintln!("warning: the cluster has not settled yet; see `courier cluster status`");
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = term.recv() => { stopped = true; break }
            _ = int.recv() => { stopped = true; break }
        }
    }

    println!();
    println!("Courier dev cluster: {} nodes, data in {}", args.nodes, dir.display());
    for i in 1..=args.nodes {
        let p = ports(&args, i);
        println!("  n{i}: client {}  peer {}  admin http://{}/metrics  web http://{}/", p.client, p.peer, p.admin, p.web);
    }
    println!();
    println!("In a browser: http://{}/ (Courier Web; log in with +99966XYYYY, code XXXXX)", ports(&args, 1).web);
    println!();
    println!("In another shell:");
    println!("  . {}/env", dir.display());
    println!("  courier cluster status");
    println!();
    println!("Ctrl-C stops the cluster (data stays in {}).", dir.display());

    let mut check = tokio::time::interval(Duration::from_secs(1));
    while !stopped {
        tokio::select! {
            _ = term.recv() => stopped = true,
            _ = int.recv() => stopped = true,
            _ = check.tick() => {
                for (i, c) in &mut children.0 {
                    if let Ok(Some(status)) = c.try_wait() {
                        eprintln!("node n{i} exited ({status}); see {}", dir.join(format!("n{i}/node.log")).display());
                    }
                }
                children.0.retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
            }
        }
    }
    println!("stopping {} nodes…", args.nodes);
    // A node restarted by someone else (`courier bench failover`) is not our
    // child: it is stopped by the pid it wrote.
    for i in 1..=args.nodes {
        if children.0.iter().any(|(c, _)| *c == i) {
            continue;
        }
        if let Ok(pid) = node_pid(&dir, i) {
            // SAFETY: kill(2) on the pid the node wrote for itself.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    drop(children);
    Ok(())
}
