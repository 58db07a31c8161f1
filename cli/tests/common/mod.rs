//! A harness for end-to-end tests: real `courier` processes on their own
//! loopback addresses (127.0.SLOT.I), driven through the CLI the way an
//! operator drives them. Every process is stopped by its pid on drop.

#![allow(dead_code)]

use courier_client::Code;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use courier_client::{Client, ClientConfig, Event, pb};
use serde_json::Value;
use tokio::sync::mpsc;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_courier"))
}

/// A plain HTTP/1.0 GET: (status line, headers in lower case, body).
pub fn http_get(addr: &str, path: &str) -> Option<(String, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut all = String::new();
    s.read_to_string(&mut all).ok()?;
    let (head, body) = all.split_once("\r\n\r\n")?;
    let (status, headers) = head.split_once("\r\n")?;
    Some((status.to_string(), headers.to_lowercase(), body.to_string()))
}

/// Waits until `f` returns `Some`, at most `timeout`; panics naming `what`.
pub fn must_wait<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub struct NodeProc {
    pub child: Option<Child>,
    pub config: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub slot: u8,
    pub certs: PathBuf,
    pub nodes: BTreeMap<u32, NodeProc>,
}

impl Cluster {
    /// A cluster directory with a CA and an operator certificate; no nodes yet.
    pub fn new(slot: u8) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        let c = Cluster { dir, slot, certs, nodes: BTreeMap::new() };
        c.must_run(&["cert", "create-ca", "--certs-dir", c.certs.to_str().unwrap()]);
        c.must_run(&["cert", "create-client", "--certs-dir", c.certs.to_str().unwrap(), "--name", "operator"]);
        c
    }

    pub fn host(&self, i: u32) -> String {
        format!("127.0.{}.{}", self.slot, i)
    }

    pub fn peer(&self, i: u32) -> String {
        format!("{}:7001", self.host(i))
    }

    pub fn client_addr(&self, i: u32) -> String {
        format!("{}:7002", self.host(i))
    }

    /// A counter or gauge from node `i`'s `/metrics` (admin port, plain HTTP).
    pub fn metric(&self, i: u32, name: &str) -> Option<f64> {
        let (_, _, body) = http_get(&format!("{}:7003", self.host(i)), "/metrics")?;
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Runs `courier ARGS` as `profile` (config under `home`) against every
    /// node: (success, stdout, stderr).
    pub fn user_cli(&self, home: &Path, profile: &str, args: &[&str]) -> (bool, String, String) {
        let all: Vec<u32> = self.nodes.keys().copied().collect();
        self.user_cli_on(&all, home, profile, args)
    }

    /// [`Cluster::user_cli`] against the client ports of `nodes` only.
    pub fn user_cli_on(&self, nodes: &[u32], home: &Path, profile: &str, args: &[&str]) -> (bool, String, String) {
        let nodes = nodes.iter().map(|i| self.client_addr(*i)).collect::<Vec<_>>().join(",");
        let out = Command::new(bin())
            .args(args)
            .env("XDG_CONFIG_HOME", home)
            .env("COURIER_PROFILE", profile)
            .env("COURIER_NODES", nodes)
            .env("COURIER_CA", self.certs.join("ca.pem"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    }

    /// Writes node `i`'s config (joining node 1 unless `i == 1`) and starts it.
    pub fn add_node(&mut self, i: u32, extra: &str) {
        self.add_node_with(i, extra, true)
    }

    /// Like `add_node`; `issue_cert: false` uses whatever `certs/nI.pem` holds.
    /// `@HOST@` in `extra` is the node's own loopback address.
    pub fn add_node_with(&mut self, i: u32, extra: &str, issue_cert: bool) {
        let name = format!("n{i}");
        let host = self.host(i);
        let extra = extra.replace("@HOST@", &host);
        if issue_cert {
            self.must_run(&["cert", "create-node", "--certs-dir", self.certs.to_str().unwrap(), "--name", &name, "--host", &host]);
        }
        let data = self.dir.path().join(&name);
        std::fs::create_dir_all(&data).unwrap();
        let join = if i == 1 { String::new() } else { format!("\"{}\"", self.peer(1)) };
        let config = self.dir.path().join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\ndata_dir = \"{}\"\npeer_addr = \"{host}:7001\"\nclient_addr = \"{host}:7002\"\nadmin_addr = \"{host}:7003\"\njoin = [{join}]\n{extra}\n[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/{name}.pem\"\nkey = \"{c}/{name}-key.pem\"\n",
            data.display(),
            c = self.certs.display(),
        );
        std::fs::write(&config, text).unwrap();
        let log = self.dir.path().join(format!("{name}.log"));
        self.nodes.insert(i, NodeProc { child: None, config, data, log });
        self.start(i);
    }

    pub fn start(&mut self, i: u32) {
        let n = self.nodes.get_mut(&i).expect("node exists");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log).unwrap();
        let child = Command::new(bin())
            .args(["node", "--config", n.config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn courier node");
        n.child = Some(child);
    }

    pub fn kill9(&mut self, i: u32) {
        if let Some(mut c) = self.nodes.get_mut(&i).and_then(|n| n.child.take()) {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (at most 20 s) for the node to exit.
    pub fn stop(&mut self, i: u32) {
        if let Some(mut c) = self.nodes.get_mut(&i).and_then(|n| n.child.take()) {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("node {i} did not stop within 20 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn wipe(&mut self, i: u32) {
        let n = &self.nodes[&i];
        assert!(n.child.is_none(), "stop node {i} before wiping it");
        std::fs::remove_dir_all(&n.data).unwrap();
        std::fs::create_dir_all(&n.data).unwrap();
    }

    pub fn log(&self, i: u32) -> String {
        std::fs::read_to_string(&self.nodes[&i].log).unwrap_or_default()
    }

    fn env_cmd(&self, args: &[&str], nodes: &[u32]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("COURIER_CA", self.certs.join("ca.pem"))
            .env("COURIER_CERT", self.certs.join("operator.pem"))
            .env("COURIER_KEY", self.certs.join("operator-key.pem"))
            .env("COURIER_ADMIN_NODES", nodes.iter().map(|i| self.peer(*i)).collect::<Vec<_>>().join(","))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a courier command against `nodes` (in order of preference).
    pub fn run_on(&self, nodes: &[u32], args: &[&str]) -> Output {
        self.env_cmd(args, nodes).output().expect("run courier")
    }

    /// Runs a courier command against every running node.
    pub fn run(&self, args: &[&str]) -> Output {
        let up: Vec<u32> = self.nodes.iter().filter(|(_, n)| n.child.is_some()).map(|(i, _)| *i).collect();
        self.run_on(&up, args)
    }

    pub fn must_run(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "courier {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn status_on(&self, nodes: &[u32]) -> Option<Value> {
        let out = self.run_on(nodes, &["cluster", "status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self) -> Option<Value> {
        let up: Vec<u32> = self.nodes.iter().filter(|(_, n)| n.child.is_some()).map(|(i, _)| *i).collect();
        self.status_on(&up)
    }

    pub fn put_on(&self, node: u32, key: &str, value: &str) -> bool {
        self.run_on(&[node], &["kv", "put", key, value]).status.success()
    }

    pub fn get_on(&self, node: u32, key: &str) -> Option<String> {
        let out = self.run_on(&[node], &["kv", "get", key]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts nodes 1..=n, inits the cluster through node 1 and waits until it settled.
    /// Nodes join one after another, so node `i` gets id `i`.
    pub fn start_settled(slot: u8, n: u32, extra: &str) -> Cluster {
        let mut c = Cluster::new(slot);
        c.add_node(1, extra);
        must_wait(Duration::from_secs(30), "cluster init", || {
            let out = c.run_on(&[1], &["cluster", "init"]);
            (out.status.success() || String::from_utf8_lossy(&out.stderr).contains("already belongs")).then_some(())
        });
        for i in 2..=n {
            c.add_node(i, extra);
            must_wait(Duration::from_secs(30), &format!("node {i} to register"), || {
                let s = c.status_on(&[1])?;
                s["nodes"].as_array()?.iter().any(|n| n["id"] == i && n["peer_addr"] == c.peer(i)).then_some(())
            });
        }
        c.must_settle(n as usize, Duration::from_secs(120));
        c
    }

    /// Waits until `up` nodes are up, every group has a leader, and placement settled.
    pub fn must_settle(&self, up: usize, timeout: Duration) -> Value {
        must_wait(timeout, &format!("{up} nodes up and placement settled"), || {
            let s = self.status()?;
            let n_up = s["nodes"].as_array()?.iter().filter(|n| n["state"] == "up").count();
            (n_up == up && s["placement_settled"] == true).then_some(s)
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u32> = self.nodes.keys().copied().collect();
        for i in ids {
            self.kill9(i);
        }
        if std::thread::panicking() {
            for (i, n) in &self.nodes {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- last lines of n{i}.log ----");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Voters of every group, by group id.
pub fn voters(status: &Value) -> BTreeMap<u64, Vec<u64>> {
    status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["id"].as_u64().unwrap(), g["voters"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()))
        .collect()
}

pub fn leaders(status: &Value) -> BTreeMap<u64, Option<u64>> {
    status["groups"].as_array().unwrap().iter().map(|g| (g["id"].as_u64().unwrap(), g["leader"].as_u64())).collect()
}

pub fn read_pid(data: &Path) -> Option<i32> {
    std::fs::read_to_string(data.join("courier.pid")).ok()?.trim().parse().ok()
}

/// A device of the account with test number `phone` (`+99966XYYYY`, code
/// `XXXXX`), connected to node `node` only.
pub async fn device(c: &Cluster, node: u32, phone: &str, name: &str) -> (Client, mpsc::Receiver<Event>, pb::User) {
    device_with(c, node, phone, name, |_| {}).await
}

/// [`device`] with its client configuration changed by `tune`.
pub async fn device_with(c: &Cluster, node: u32, phone: &str, name: &str, tune: impl FnOnce(&mut ClientConfig)) -> (Client, mpsc::Receiver<Event>, pb::User) {
    let ca = std::fs::read(c.certs.join("ca.pem")).unwrap();
    let mut cfg = ClientConfig::new(vec![c.client_addr(node)], ca);
    cfg.device = format!("{name}@n{node}");
    // A request to a node that was killed fails after this (QUIC sees no reset).
    cfg.request_timeout = Duration::from_secs(5);
    tune(&mut cfg);
    let (client, events) = Client::connect(cfg).await.unwrap();
    let sent = client.send_code(phone).await.unwrap();
    let code = phone[6..7].repeat(5);
    let auth = match client.sign_in(phone, &sent.phone_code_hash, &code).await {
        Ok(a) => a,
        Err(e) if e.code() == Code::SignUpRequired => client.sign_up(phone, &sent.phone_code_hash, name, "").await.unwrap(),
        Err(e) => panic!("{e}"),
    };
    (client, events, auth.user.unwrap())
}

/// A raw QUIC client trusting `ca` with the given ALPN.
pub fn raw_endpoint(ca: &[u8], alpn: &[u8]) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider).with_protocol_versions(&[&rustls::version::TLS13]).unwrap().with_root_certificates(roots).with_no_client_auth();
    endpoint_with(tls, alpn)
}

/// A QUIC client endpoint with `tls`, offering `alpn`.
pub fn endpoint_with(mut tls: rustls::ClientConfig, alpn: &[u8]) -> quinn::Endpoint {
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    ep
}
