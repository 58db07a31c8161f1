//! A node's TOML configuration. Defaults run a local node; `validate` names
//! the bad field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// A human name for the node (logs, status).
    pub name: String,
    /// Where the node keeps its RocksDB and `courier.pid`.
    pub data_dir: PathBuf,
    /// Node-to-node gRPC (mutual TLS); also where operators connect.
    pub peer_addr: String,
    /// Client QUIC port (the gateway).
    pub client_addr: String,
    /// HTTP: `/health`, `/ready`, `/metrics`.
    pub admin_addr: String,
    /// Peer addresses of existing nodes to join through; empty on the first node.
    pub join: Vec<String>,
    /// Data groups created by `cluster init` on this node (fixed for the cluster's life).
    pub data_groups: u32,
    pub tls: TlsConfig,
    pub raft: RaftConfig,
    pub placement: PlacementConfig,
    pub gateway: GatewayConfig,
    pub auth: AuthConfig,
    pub media: MediaConfig,
    pub limits: LimitsConfig,
    /// Testing only: a file holding seconds (may be negative) added to this
    /// node's wall clock, re-read on every use. Lets tests expire login codes.
    /// Needs `development = true`.
    pub clock_offset_file: Option<PathBuf>,
    /// A development cluster (`courier dev`, tests, the chaos harness): the
    /// only setting under which `auth.test_numbers` and `clock_offset_file`
    /// are accepted. The node says so at start and `cluster status` shows
    /// it. Never on a host real users reach.
    pub development: bool,
    pub debug: DebugConfig,
    pub web: WebConfig,
}

/// Courier Web: the page on a TCP port, and WebTransport (HTTP/3) for
/// browsers on the client UDP port beside `courier/1`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Where the page is served (TCP); empty: no web. Plain HTTP only on a
    /// loopback address (a browser's secure context); elsewhere set
    /// `tls_cert` and `tls_key`.
    pub addr: String,
    /// Page origins whose pages may open WebTransport sessions here
    /// (`https://chat.example.org`); empty: every node's own page origin.
    pub origins: Vec<String>,
    /// A certificate browsers trust by name (PEM chain), for `host`: the page
    /// is HTTPS and WebTransport uses it. Without one the node uses its own
    /// short-lived certificates, pinned by hash by its pages.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The name in the page's and WebTransport's URLs (the certificate's
    /// name); default: the IP of `addr` and of `client_addr`.
    pub host: Option<String>,
}

/// Deliberate faults, accepted only by debug builds: they exist so the chaos
/// harness (`courier-jepsen`) can show that its checkers catch a broken node.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// Forget the client's `random_id` on sends: a retried send makes a
    /// second message (breaks G3).
    pub unsafe_ignore_random_id: bool,
}

/// What one user may spend (docs/security.md lists every budget). Each
/// is per user per node: a node keeps its own count.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// `resolve_phone` calls a user may make a minute (a burst of this
    /// many, refilled evenly); past it `FLOOD_WAIT`. 0: no limit.
    pub resolve_phone_per_minute: u32,
    /// Messages (sends, media, forwards) one user may post into one chat a
    /// minute, counted by the chat group's leader before it proposes.
    pub posts_per_chat_per_minute: u32,
    /// Edits, reactions and pins one user may make in one chat a minute
    /// (counted as posts are).
    pub changes_per_chat_per_minute: u32,
    /// `invite` calls one user may make in one chat a minute (as posts).
    pub invites_per_chat_per_minute: u32,
    /// Typing notices one user may send into one chat a minute (each node
    /// its share: the budget over the live nodes).
    pub typing_per_chat_per_minute: u32,
    /// Private chats one user may open with someone new an hour (each node
    /// its share); opening one that exists costs nothing.
    pub new_private_chats_per_hour: u32,
    /// Heavy reads (searches) this node runs at once as a group's leader,
    /// off the async workers; more wait their turn.
    pub heavy_reads_at_once: usize,
    /// Heavy reads one user may have in flight through this node; more are
    /// refused with `FLOOD_WAIT`.
    pub heavy_reads_per_user_at_once: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            resolve_phone_per_minute: 30,
            posts_per_chat_per_minute: 60,
            changes_per_chat_per_minute: 120,
            invites_per_chat_per_minute: 10,
            typing_per_chat_per_minute: 60,
            new_private_chats_per_hour: 60,
            heavy_reads_at_once: 2,
            heavy_reads_per_user_at_once: 2,
        }
    }
}

/// Media storage's background work.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// A chunk no file or upload uses is deleted once it was last written
    /// this long ago (the delay covers uploads whose chunks are stored but
    /// not yet recorded).
    pub gc_after_secs: u64,
    /// How often a node looks for such chunks, and for copies it holds that
    /// are no longer on one of their homes.
    pub gc_every_secs: u64,
    /// An upload not finished this long after its first chunk is forgotten.
    pub upload_ttl_secs: u64,
    /// Bytes of parts this node holds in memory for chunks not yet complete.
    pub staging_bytes: usize,
    /// Of those, bytes one user's uploads may hold.
    pub staged_bytes_per_user: usize,
    /// Uploads one user may have with parts held on this node.
    pub uploads_per_user: usize,
    /// Bytes of finished files one user may store, cluster-wide (0: no cap).
    pub stored_bytes_per_user: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            gc_after_secs: 3600,
            gc_every_secs: 600,
            upload_ttl_secs: 86_400,
            staging_bytes: 512 << 20,
            staged_bytes_per_user: 64 << 20,
            uploads_per_user: 16,
            stored_bytes_per_user: 20 << 30,
        }
    }
}

/// The client QUIC front door.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Connections this node accepts at once; more are refused.
    pub max_connections: usize,
    /// Requests one connection may have in flight (QUIC streams).
    pub max_streams_per_connection: u32,
    /// Bytes a connection may have buffered towards the node.
    pub connection_window_bytes: u32,
    /// A connection silent this long is closed (clients keep alive every 10 s).
    pub idle_timeout_secs: u64,
    /// Time a client has for the TLS handshake, the hello, or one request frame.
    pub request_timeout_secs: u64,
    /// Connections one client address may hold on this node (a NAT puts
    /// many devices behind one address: raise it for a big one; 0: no cap).
    pub max_connections_per_address: usize,
    /// Connections that finished the handshake but have not said hello yet,
    /// on this node; past it the oldest is closed to make room.
    pub max_hello_less: usize,
    /// Time a connection has to say hello after its handshake.
    pub hello_timeout_secs: u64,
}

/// Login codes and their delivery.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `log` (development: the code goes to this node's log and to
    /// `courier cluster login-code`) or `command` (run `code_command PHONE CODE`).
    pub code_delivery: String,
    /// The operator's SMS gateway program, for `code_delivery = "command"`.
    pub code_command: Option<PathBuf>,
    /// Also send the code as a service message to the account's logged-in devices.
    pub deliver_in_app: bool,
    /// Telegram's test numbers `+99966XYYYY` take the code XXXXX.
    pub test_numbers: bool,
    pub code_ttl_secs: u64,
    /// `send_code` per phone per 24 h (replicated).
    pub codes_per_day: u32,
    /// Login attempts (`send_code`, `sign_in`, `sign_up`) per client address
    /// per minute, for the whole cluster: each node allows its share, this
    /// over the live nodes (0: no limit). A refused attempt adds to the wait.
    #[serde(alias = "codes_per_address_per_minute")]
    pub logins_per_address_per_minute: u32,
    /// Login attempts per phone and client address per minute, counted by
    /// the leader of the phone's group before it proposes (0: no limit).
    pub logins_per_phone_per_minute: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM), issued by the cluster CA.
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many log entries.
    pub snapshot_logs: u64,
    /// Entries kept behind a snapshot.
    pub keep_logs: u64,
    /// How long a request waits for a group leader before `UNAVAILABLE`.
    pub request_timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {
    /// A node down this long loses its replicas to other nodes.
    pub dead_after_secs: u64,
    /// How often the meta leader checks placement.
    pub tick_ms: u64,
    /// Spread group leaders evenly over the nodes.
    pub balance_leaders: bool,
    /// Replicas of every data group (odd): 3 survives one node lost at a
    /// time, 5 two. Set the same on every node.
    pub replicas: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "node".into(),
            data_dir: PathBuf::from("./courier-data"),
            peer_addr: "127.0.0.1:7001".into(),
            client_addr: "127.0.0.1:7002".into(),
            admin_addr: "127.0.0.1:7003".into(),
            join: Vec::new(),
            data_groups: 16,
            tls: TlsConfig::default(),
            raft: RaftConfig::default(),
            placement: PlacementConfig::default(),
            gateway: GatewayConfig::default(),
            auth: AuthConfig::default(),
            media: MediaConfig::default(),
            limits: LimitsConfig::default(),
            clock_offset_file: None,
            development: false,
            debug: DebugConfig::default(),
            web: WebConfig::default(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_connections: 100_000,
            max_streams_per_connection: 32,
            connection_window_bytes: 4 << 20,
            idle_timeout_secs: 30,
            request_timeout_secs: 10,
            max_connections_per_address: 256,
            max_hello_less: 1024,
            hello_timeout_secs: 5,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            code_delivery: "log".into(),
            code_command: None,
            deliver_in_app: true,
            test_numbers: false,
            code_ttl_secs: 300,
            codes_per_day: 5,
            logins_per_address_per_minute: 30,
            logins_per_phone_per_minute: 5,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { ca: "certs/ca.pem".into(), cert: "certs/node.pem".into(), key: "certs/node-key.pem".into() }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        let d = courier_raft::RaftOptions::default();
        RaftConfig {
            heartbeat_ms: d.heartbeat_ms,
            election_min_ms: d.election_min_ms,
            election_max_ms: d.election_max_ms,
            snapshot_logs: d.snapshot_logs,
            keep_logs: d.keep_logs,
            request_timeout_ms: d.request_timeout.as_millis() as u64,
        }
    }
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig { dead_after_secs: 60, tick_ms: 1000, balance_leaders: true, replicas: courier_raft::placement::REPLICAS }
    }
}

fn bad(field: &str, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("field `{field}`: {why}"))
}

fn check_addr(field: &str, v: &str) -> Result<()> {
    v.parse::<SocketAddr>().map(|_| ()).map_err(|_| bad(field, format!("{v:?} is not an IP:port address")))
}

impl NodeConfig {
    /// Reads, parses and validates a config file; relative paths in it are
    /// taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut cfg = Self::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// Parses and validates TOML text. Errors are one line naming the field.
    pub fn parse(text: &str) -> Result<NodeConfig> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().replace('\n', " ");
            match line {
                Some(l) => Error::Config(format!("line {l}: {msg}")),
                None => Error::Config(msg),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.data_dir, &mut self.tls.ca, &mut self.tls.cert, &mut self.tls.key]
            .into_iter()
            .chain(self.clock_offset_file.as_mut())
            .chain(self.auth.code_command.as_mut().filter(|p| p.components().count() > 1))
            .chain(self.web.tls_cert.as_mut())
            .chain(self.web.tls_key.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(bad("name", "must be 1 to 64 characters"));
        }
        if self.limits.heavy_reads_at_once == 0 {
            return Err(bad("limits.heavy_reads_at_once", "at least 1 (searches would never run)"));
        }
        if self.auth.test_numbers && !self.development {
            return Err(bad(
                "auth.test_numbers",
                "lets anyone log in as any +99966… account with a known code; only a development cluster may have it: add `development = true` (never on a host real users reach)",
            ));
        }
        if self.clock_offset_file.is_some() && !self.development {
            return Err(bad("clock_offset_file", "moves this node's clock for tests; only a development cluster may have it: add `development = true`"));
        }
        if self.debug.unsafe_ignore_random_id && !cfg!(debug_assertions) {
            return Err(bad("debug.unsafe_ignore_random_id", "deliberately breaks the node; only debug builds accept it"));
        }
        if !(1..=7).contains(&self.placement.replicas) || self.placement.replicas % 2 == 0 {
            return Err(bad("placement.replicas", "an odd number from 1 to 7"));
        }
        check_addr("peer_addr", &self.peer_addr)?;
        check_addr("client_addr", &self.client_addr)?;
        check_addr("admin_addr", &self.admin_addr)?;
        for (i, j) in self.join.iter().enumerate() {
            check_addr(&format!("join[{i}]"), j)?;
        }
        if self.peer_addr == self.client_addr || self.peer_addr == self.admin_addr || self.client_addr == self.admin_addr {
            return Err(bad("peer_addr", "peer_addr, client_addr and admin_addr must differ"));
        }
        if !(1..=1024).contains(&self.data_groups) {
            return Err(bad("data_groups", "must be between 1 and 1024"));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 {
            return Err(bad("raft.heartbeat_ms", "must be above 0"));
        }
        if r.election_min_ms <= r.heartbeat_ms {
            return Err(bad("raft.election_min_ms", "must be larger than raft.heartbeat_ms"));
        }
        if r.election_max_ms <= r.election_min_ms {
            return Err(bad("raft.election_max_ms", "must be larger than raft.election_min_ms"));
        }
        if r.snapshot_logs == 0 {
            return Err(bad("raft.snapshot_logs", "must be above 0"));
        }
        if r.request_timeout_ms < r.election_max_ms {
            return Err(bad("raft.request_timeout_ms", "must be at least raft.election_max_ms"));
        }
        if self.media.gc_every_secs == 0 {
            return Err(bad("media.gc_every_secs", "must be above 0"));
        }
        // The delay protects chunks stored for uploads not yet recorded.
        if self.media.gc_after_secs == 0 {
            return Err(bad("media.gc_after_secs", "must be above 0 (keep it at minutes or more outside tests)"));
        }
        if self.media.upload_ttl_secs < self.media.gc_after_secs {
            return Err(bad("media.upload_ttl_secs", "must be at least media.gc_after_secs"));
        }
        if self.placement.tick_ms == 0 {
            return Err(bad("placement.tick_ms", "must be above 0"));
        }
        let g = &self.gateway;
        if g.max_connections == 0 {
            return Err(bad("gateway.max_connections", "must be above 0"));
        }
        if !(1..=1024).contains(&g.max_streams_per_connection) {
            return Err(bad("gateway.max_streams_per_connection", "must be between 1 and 1024"));
        }
        if g.connection_window_bytes < 1 << 20 {
            return Err(bad("gateway.connection_window_bytes", "must be at least 1 MiB (one request frame)"));
        }
        if g.idle_timeout_secs == 0 || g.request_timeout_secs == 0 {
            return Err(bad("gateway.idle_timeout_secs", "timeouts must be above 0"));
        }
        let a = &self.auth;
        match a.code_delivery.as_str() {
            "log" => {}
            "command" if a.code_command.is_some() => {}
            "command" => return Err(bad("auth.code_command", "is required when auth.code_delivery = \"command\"")),
            other => return Err(bad("auth.code_delivery", format!("{other:?} is not one of \"log\", \"command\""))),
        }
        if a.code_ttl_secs == 0 {
            return Err(bad("auth.code_ttl_secs", "must be above 0"));
        }
        if a.codes_per_day == 0 {
            return Err(bad("auth.codes_per_day", "must be above 0"));
        }
        self.web.validate()?;
        let unspecified = self.client_addr.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_unspecified());
        if self.web.enabled() && unspecified && self.web.host.as_deref().unwrap_or("").is_empty() {
            return Err(bad("web.host", format!("client_addr {} is no address a browser can reach: set web.host to the node's name or IP", self.client_addr)));
        }
        Ok(())
    }

    pub fn raft_options(&self) -> courier_raft::RaftOptions {
        courier_raft::RaftOptions {
            heartbeat_ms: self.raft.heartbeat_ms,
            election_min_ms: self.raft.election_min_ms,
            election_max_ms: self.raft.election_max_ms,
            snapshot_logs: self.raft.snapshot_logs,
            keep_logs: self.raft.keep_logs,
            request_timeout: Duration::from_millis(self.raft.request_timeout_ms),
            heavy_reads: self.limits.heavy_reads_at_once,
        }
    }
}

impl WebConfig {
    pub fn enabled(&self) -> bool {
        !self.addr.is_empty()
    }

    fn validate(&self) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let addr: SocketAddr = self.addr.parse().map_err(|_| bad("web.addr", format!("{:?} is not an IP:port address", self.addr)))?;
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), Some(_)) => {
                if self.host.as_deref().unwrap_or("").is_empty() {
                    return Err(bad("web.host", "is required with web.tls_cert: the name the certificate is for"));
                }
            }
            (None, None) if addr.ip().is_loopback() => {}
            (None, None) => {
                return Err(bad(
                    "web.addr",
                    format!("{addr} is not a loopback address: browsers need HTTPS there; set web.tls_cert, web.tls_key and web.host (a certificate for the web name)"),
                ));
            }
            _ => return Err(bad("web.tls_cert", "web.tls_cert and web.tls_key go together")),
        }
        for o in &self.origins {
            if !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/') || o.len() > 256 {
                return Err(bad("web.origins", format!("{o:?} is not an origin such as https://chat.example.org")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster-configs");
        let mut n = 0;
        for dir in ["local-3", "five-node"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    NodeConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    n += 1;
                }
            }
        }
        assert_eq!(n, 8);
    }

    #[test]
    fn defaults_are_valid() {
        NodeConfig::default().validate().unwrap();
        assert_eq!(NodeConfig::parse("").unwrap(), NodeConfig::default());
    }

    #[test]
    fn web_is_plain_http_only_on_loopback_and_a_certificate_comes_with_its_key_and_name() {
        let web = |t: &str| NodeConfig::parse(&format!("[web]\n{t}")).map(|_| ()).map_err(|e| e.to_string());
        web("addr = \"127.0.0.1:7004\"").unwrap();
        web("addr = \"[::1]:7004\"").unwrap();
        let e = web("addr = \"10.0.0.5:443\"").unwrap_err();
        assert!(e.contains("web.addr") && e.contains("web.tls_cert"), "{e}");
        let e = web("addr = \"10.0.0.5:443\"\ntls_cert = \"a.pem\"").unwrap_err();
        assert!(e.contains("go together"), "{e}");
        let e = web("addr = \"10.0.0.5:443\"\ntls_cert = \"a.pem\"\ntls_key = \"k.pem\"").unwrap_err();
        assert!(e.contains("web.host"), "{e}");
        web("addr = \"10.0.0.5:443\"\ntls_cert = \"a.pem\"\ntls_key = \"k.pem\"\nhost = \"chat.example.org\"").unwrap();
        let e = web("addr = \"127.0.0.1:7004\"\norigins = [\"chat.example.org\"]").unwrap_err();
        assert!(e.contains("web.origins"), "{e}");
        let e = NodeConfig::parse("client_addr = \"0.0.0.0:7002\"\n[web]\naddr = \"127.0.0.1:7004\"").unwrap_err().to_string();
        assert!(e.contains("web.host"), "{e}");
        NodeConfig::parse("client_addr = \"0.0.0.0:7002\"\n[web]\naddr = \"127.0.0.1:7004\"\nhost = \"10.0.0.5\"").unwrap();
        // No address: no web, whatever else is set.
        assert!(!NodeConfig::default().web.enabled());
    }

    #[test]
    fn unknown_field_is_named_on_one_line() {
        let err = NodeConfig::parse("name = \"a\"\n[raft]\nheartbeat = 5\n").unwrap_err().to_string();
        assert!(err.contains("heartbeat"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let err = NodeConfig::parse("peer_addr = \"nowhere\"").unwrap_err().to_string();
        assert!(err.contains("`peer_addr`"), "{err}");
        let err = NodeConfig::parse("[raft]\nelection_min_ms = 50\nheartbeat_ms = 100").unwrap_err().to_string();
        assert!(err.contains("raft.election_min_ms"), "{err}");
        let err = NodeConfig::parse("data_groups = \"many\"").unwrap_err().to_string();
        assert!(err.contains("data_groups") || err.contains("line 1"), "{err}");
        let err = NodeConfig::parse("join = [\"1.2.3.4\"]").unwrap_err().to_string();
        assert!(err.contains("join[0]"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("n.toml");
        std::fs::write(&f, "data_dir = \"d\"\n[tls]\nca = \"/abs/ca.pem\"\n").unwrap();
        let cfg = NodeConfig::load(&f).unwrap();
        assert_eq!(cfg.data_dir, dir.path().join("d"));
        assert_eq!(cfg.tls.ca, PathBuf::from("/abs/ca.pem"));
    }
}
