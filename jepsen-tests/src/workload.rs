//! The workload, through the client SDK as a user's devices would use it:
//! * senders: every user sends into a few shared groups; a send that ends
//!   unknown is retried with the same `random_id`, and some acknowledged
//!   sends are sent again on purpose (a reply lost on the way back); some
//!   messages are edited or deleted afterwards; some sends carry a file
//!   uploaded just before (1–2.5 MiB of random bytes, resumed after
//!   `FILE_PART_MISSING`), checked byte for byte at the end (G1 for files);
//! * devices: one more device per user goes offline and comes back, syncing
//!   with `get_difference` (G4), and records every message it saw live;
//! * revocations: a fresh account logs in twice; one device terminates the
//!   other's session, then requests are made with the revoked token (G6).
//!
//! Clients start on a random node and move to another random one after a
//! failure.

use courier_client::Code;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use courier_client::sync::{Followed, SyncState};
use courier_client::{Client, ClientConfig, Error, Event, pb};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::checker::{Line, ident, send_text};
use crate::history::{History, Kind};

/// How long one operation may take before it counts as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Options {
    pub users: usize,
    pub chats: usize,
    /// Sending clients per user.
    pub senders_per_user: usize,
}

/// How to reach the cluster.
#[derive(Clone)]
pub struct Target {
    pub nodes: Vec<String>,
    pub ca_pem: Vec<u8>,
    /// One UDP socket for every client of the run.
    pub endpoint: courier_client::Endpoint,
}

/// A logged-in device.
pub struct Device {
    cfg: ClientConfig,
    pub client: Client,
    pub events: mpsc::Receiver<Event>,
    pub user: u64,
}

impl Device {
    fn open(cfg: ClientConfig) -> Result<Device> {
        let (client, events) = Client::new(cfg.clone())?;
        Ok(Device {
            cfg,
            client,
            events,
            user: 0,
        })
    }

    /// Moves to a random node (keeping the session).
    async fn rotate(&mut self) {
        self.client.close().await;
        self.cfg.token = self.client.token();
        if let Ok((client, events)) = Client::new(self.cfg.clone()) {
            self.client = client;
            self.events = events;
        }
    }
}

pub struct Setup {
    pub target: Target,
    pub chats: Vec<u64>,
    /// Per user: the account id and the sending devices.
    pub senders: Vec<Device>,
    pub devices: Vec<Device>,
    /// User 0's token, for the final reads.
    pub reader_token: Vec<u8>,
    phone_digit: u32,
    next_phone: u32,
}

impl Target {
    fn config(&self, device: &str, token: Option<Vec<u8>>) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.nodes.clone(), self.ca_pem.clone());
        cfg.device = device.into();
        cfg.token = token;
        cfg.request_timeout = OP_TIMEOUT;
        cfg.connect_timeout = Duration::from_secs(2);
        cfg.endpoint = Some(self.endpoint.clone());
        cfg
    }

    /// A client on one node only (final reads).
    pub fn pinned(&self, node: &str, token: Vec<u8>) -> Result<Client> {
        let mut cfg = self.config("final-reader", Some(token));
        cfg.nodes = vec![node.into()];
        Ok(Client::new(cfg)?.0)
    }
}

/// Telegram's test number `+99966XYYYY`, whose code is `XXXXX`.
fn test_number(x: u32, n: u32) -> (String, String) {
    (
        format!("+99966{x}{:04}", n % 10_000),
        x.to_string().repeat(5),
    )
}

/// Logs in (signing up the first time) with a test number.
async fn login(
    target: &Target,
    phone: &str,
    code: &str,
    name: &str,
    device: &str,
) -> Result<Device> {
    let mut d = Device::open(target.config(device, None))?;
    let sent = d.client.send_code(phone).await?;
    let auth = match d.client.sign_in(phone, &sent.phone_code_hash, code).await {
        Ok(a) => a,
        Err(e) if e.code() == Code::SignUpRequired => {
            d.client
                .sign_up(phone, &sent.phone_code_hash, name, "")
                .await?
        }
        Err(e) => return Err(e.into()),
    };
    d.user = auth
        .user
        .map(|u| u.id)
        .context("authorization without a user")?;
    d.cfg.token = Some(auth.session_token);
    Ok(d)
}

async fn retry<T, F: Future<Output = Result<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{what} (gave up after 60 s)")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

impl Setup {
    fn phone(&mut self) -> (String, String) {
        self.next_phone += 1;
        test_number(self.phone_digit, self.next_phone)
    }

    /// Fresh test numbers for the revocation workload.
    pub fn phones(&self) -> impl FnMut() -> (String, String) + Send + 'static {
        let (digit, mut next) = (self.phone_digit, self.next_phone + 1_000);
        move || {
            next += 1;
            test_number(digit, next)
        }
    }

    /// Accounts, devices and the shared chats; before any fault.
    pub async fn create(target: Target, opts: &Options) -> Result<Setup> {
        let mut rng = rand::rng();
        let mut s = Setup {
            target,
            chats: Vec::new(),
            senders: Vec::new(),
            devices: Vec::new(),
            reader_token: Vec::new(),
            phone_digit: rng.random_range(1..=9),
            next_phone: rng.random_range(0..5_000),
        };
        let mut users = Vec::new();
        for u in 0..opts.users {
            let (phone, code) = s.phone();
            for k in 0..opts.senders_per_user {
                let (name, device) = (format!("User {u}"), format!("sender-{u}-{k}"));
                let d = retry("log in", || login(&s.target, &phone, &code, &name, &device)).await?;
                if k == 0 {
                    users.push(d.user);
                }
                s.senders.push(d);
            }
            let device = format!("device-{u}");
            s.devices
                .push(retry("log in", || login(&s.target, &phone, &code, "", &device)).await?);
        }
        s.reader_token = s.senders[0].client.token().context("no token")?;
        for c in 0..opts.chats {
            let owner = &s.senders[0].client;
            let chat = retry("create a group", || async {
                Ok(owner
                    .create_group(&format!("jepsen {c}"), users[1..].to_vec())
                    .await?)
            })
            .await?;
            s.chats.push(chat.id);
        }
        Ok(s)
    }
}

/// What an error says about whether the operation happened.
fn outcome(e: &Error) -> Kind {
    match e {
        // The node answered: the operation did not happen (codes for
        // "maybe" excepted).
        Error::Api { code, .. } if !matches!(code, Code::Unavailable | Code::Internal) => Kind::Fail,
        _ => Kind::Info,
    }
}

async fn timed<T>(f: impl Future<Output = courier_client::Result<T>>) -> courier_client::Result<T> {
    match tokio::time::timeout(OP_TIMEOUT + Duration::from_secs(2), f).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unavailable("timed out".into())),
    }
}

/// Runs one operation and records it; `Ok` carries its value.
async fn op<T>(
    h: &History,
    d: &mut Device,
    process: &str,
    f: &str,
    value: Value,
    extra: impl Fn(&T) -> Value,
    call: impl AsyncFnOnce(&Client) -> courier_client::Result<T>,
) -> Result<T, Kind> {
    let p = h.invoke(process, f, value);
    let r = timed(call(&d.client)).await;
    let node = d.client.node().await;
    match r {
        Ok(v) => {
            h.complete(p, Kind::Ok, node, extra(&v), None);
            Ok(v)
        }
        Err(e) => {
            let kind = outcome(&e);
            h.complete(p, kind, node, json!({}), Some(e.to_string()));
            if kind == Kind::Info || rand::random_bool(0.3) {
                d.rotate().await;
            }
            Err(kind)
        }
    }
}

/// One sender until `until`.
pub async fn sender(
    h: Arc<History>,
    mut d: Device,
    process: String,
    chats: Vec<u64>,
    pause: Duration,
    until: Instant,
) {
    let mut mine: Vec<(u64, u64, String)> = Vec::new();
    let mut edits = 0u64;
    while Instant::now() < until {
        if !pause.is_zero() {
            tokio::time::sleep(pause.mul_f64(rand::random_range(0.5..1.5))).await;
        }
        let chat = chats[rand::random_range(0..chats.len())];
        let roll = rand::random_range(0..100);
        if roll < 6 && !mine.is_empty() {
            let (chat, id, text) = mine[rand::random_range(0..mine.len())].clone();
            edits += 1;
            let new = format!("{} e{edits}", ident(&text));
            let v = json!({"chat": chat, "id": id, "text": new});
            let _ = op(
                &h,
                &mut d,
                &process,
                "edit",
                v,
                |_| json!({}),
                async |c: &Client| c.edit_message(chat, id, &new).await,
            )
            .await;
            continue;
        }
        if roll < 9 && !mine.is_empty() {
            let (chat, id, _) = mine.swap_remove(rand::random_range(0..mine.len()));
            let _ = op(
                &h,
                &mut d,
                &process,
                "delete",
                json!({"chat": chat, "id": id}),
                |_| json!({}),
                async |c: &Client| c.delete_messages(chat, vec![id]).await,
            )
            .await;
            continue;
        }
        // Now and then a file first: the send then carries it.
        let mut media = None;
        if roll < 11 {
            let mut bytes = vec![0u8; rand::random_range((1 << 20)..(5 << 19))];
            rand::fill(&mut bytes[..]);
            let upload = rand::random::<u64>() >> 1;
            let v = json!({"upload": upload, "size": bytes.len(), "sha256": hex::encode(sha256(&bytes))});
            let with_file = |f: &pb::File| json!({"file": f.id});
            match op(
                &h,
                &mut d,
                &process,
                "upload",
                v,
                with_file,
                async |c: &Client| upload_bytes(c, upload, &bytes).await,
            )
            .await
            {
                Ok(f) => {
                    media = Some(pb::InputMedia {
                        file_id: f.id,
                        kind: pb::MediaKind::MediaDocument.into(),
                        duration_secs: 0,
                    })
                }
                Err(_) => continue,
            }
        }
        let rid: u64 = rand::random::<u64>() >> 1;
        let text = send_text(d.user, rid);
        let mut v = json!({"chat": chat, "user": d.user, "rid": rid, "text": text});
        if let Some(m) = &media {
            v["file"] = json!(m.file_id);
        }
        let send = async |c: &Client| match &media {
            None => c.send_message(chat, rid, &text, 0).await,
            Some(m) => c.send_media(chat, rid, &text, *m, 0).await,
        };
        // Unknown: try the same send again (G3 says it happens once).
        let with_id = |m: &pb::Message| json!({"id": m.id});
        let mut sent = None;
        for _ in 0..3 {
            match op(&h, &mut d, &process, "send", v.clone(), with_id, send).await {
                Ok(m) => {
                    sent = Some(m.id);
                    break;
                }
                Err(Kind::Fail) => break,
                Err(_) => {}
            }
        }
        if let Some(id) = sent {
            mine.push((chat, id, text.clone()));
            // A reply lost on its way back: the client sends again.
            if rand::random_bool(0.1) {
                let _ = op(&h, &mut d, &process, "send", v, with_id, send).await;
            }
        }
    }
    d.client.close().await;
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Uploads `bytes` with the SDK's resumable upload (parts a dead node held
/// are sent again, through whichever node the client is on by then), from a
/// scratch file the SDK reads the parts from.
async fn upload_bytes(c: &Client, upload: u64, bytes: &[u8]) -> courier_client::Result<pb::File> {
    let path = std::env::temp_dir().join(format!("courier-jepsen-upload-{upload}.bin"));
    let io = |e: std::io::Error| Error::Config(format!("{}: {e}", path.display()));
    std::fs::write(&path, bytes).map_err(io)?;
    let r = async {
        let u = courier_client::media::Upload::prepare(&path, upload)?;
        c.upload(&u, |_| {}).await
    }
    .await;
    let _ = std::fs::remove_file(&path);
    r
}

fn line(m: &pb::Message) -> Line {
    if m.deleted {
        Line(m.id, 0, String::new(), true)
    } else {
        Line(m.id, m.from, m.text.clone(), false)
    }
}

/// One device that goes offline and back until `until`, then syncs once
/// more (after the faults healed, when `final_sync` fires) and records its view.
pub async fn device(
    h: Arc<History>,
    mut d: Device,
    process: String,
    until: Instant,
    final_sync: tokio::sync::watch::Receiver<bool>,
) {
    let mut state = SyncState::default();
    let mut seen: BTreeMap<(u64, u64), (u64, String)> = BTreeMap::new();
    while Instant::now() < until {
        // Online: catch up, then follow live events.
        let p = h.invoke(&process, "sync", json!({}));
        match timed(state.sync(&d.client)).await {
            Ok(()) => {
                h.complete(p, Kind::Ok, d.client.node().await, json!({}), None);
            }
            Err(e) => {
                h.complete(
                    p,
                    outcome(&e),
                    d.client.node().await,
                    json!({}),
                    Some(e.to_string()),
                );
                d.rotate().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        }
        let online_until = Instant::now() + Duration::from_millis(rand::random_range(3_000..8_000));
        while Instant::now() < online_until.min(until) {
            // A gap waits a moment for its events, then syncs (`SyncState::follow`).
            match timed(state.follow(&d.client, &mut d.events, Duration::from_secs(2))).await {
                Ok(Followed::ChatEvent { event: e, .. }) => {
                    if let Some(pb::chat_event::Kind::NewMessage(m)) = &e.kind {
                        seen.entry((e.chat_id, m.id))
                            .or_insert((m.from, ident(&m.text).to_string()));
                    }
                }
                // Quiet: make sure the connection (and so the pushes) still stands.
                Ok(Followed::Quiet) => {
                    if timed(state.sync(&d.client)).await.is_err() {
                        break;
                    }
                }
                Ok(Followed::Closed) | Err(_) => break,
                Ok(Followed::Synced | Followed::Other(_)) => {}
            }
        }
        // Offline for a while, then back through a random node.
        d.rotate().await;
        tokio::time::sleep(Duration::from_millis(rand::random_range(1_000..4_000))).await;
    }
    d.client.close().await;
    let mut go = final_sync;
    let _ = go.wait_for(|v| *v).await;
    let p = h.invoke(&process, "view", json!({"user": d.user}));
    let deadline = Instant::now() + Duration::from_secs(60);
    let synced = loop {
        match timed(state.sync(&d.client)).await {
            Ok(()) => break Ok(()),
            Err(e) if Instant::now() > deadline => break Err(e),
            Err(_) => {
                d.rotate().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let node = d.client.node().await;
    match synced {
        Ok(()) => {
            let chats: BTreeMap<String, Vec<Line>> = state
                .chats
                .iter()
                .map(|(id, v)| (id.to_string(), v.messages.values().map(line).collect()))
                .collect();
            let seen: Vec<(u64, u64, u64, String)> = seen
                .into_iter()
                .map(|((c, id), (from, t))| (c, id, from, t))
                .collect();
            h.complete(
                p,
                Kind::Ok,
                node,
                json!({"chats": chats, "seen": seen}),
                None,
            );
        }
        Err(e) => {
            h.complete(p, Kind::Info, node, json!({}), Some(e.to_string()));
        }
    }
    d.client.close().await;
}

/// Sessions revoked from another device, then tried with the revoked token.
pub async fn revoker(
    h: Arc<History>,
    mut setup_phones: impl FnMut() -> (String, String),
    target: Target,
    until: Instant,
) {
    let process = "r";
    let mut k = 0;
    while Instant::now() < until {
        k += 1;
        let (phone, code) = setup_phones();
        let p = h.invoke(process, "login", json!({"phone": phone}));
        let pair = async {
            let a = login(&target, &phone, &code, &format!("Revoked {k}"), "victim").await?;
            let b = login(&target, &phone, &code, "", "terminator").await?;
            anyhow::Ok((a, b))
        };
        let (a, mut b) = match tokio::time::timeout(OP_TIMEOUT * 2, pair).await {
            Ok(Ok(pair)) => {
                h.complete(p, Kind::Ok, None, json!({}), None);
                pair
            }
            Ok(Err(e)) => {
                h.complete(p, Kind::Info, None, json!({}), Some(format!("{e:#}")));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                h.complete(p, Kind::Info, None, json!({}), Some("timed out".into()));
                continue;
            }
        };
        let token = a.client.token();
        let session = match a
            .client
            .sessions()
            .await
            .ok()
            .and_then(|s| s.into_iter().find(|s| s.current))
        {
            Some(s) => s.id,
            None => continue,
        };
        a.client.close().await;
        probe(&h, &target, token.clone(), session).await;
        let mut revoked = false;
        for _ in 0..5 {
            if op(
                &h,
                &mut b,
                process,
                "revoke",
                json!({"session": session}),
                |_| json!({}),
                async |c: &Client| c.terminate_session(session).await,
            )
            .await
            .is_ok()
            {
                revoked = true;
                break;
            }
            if Instant::now() > until {
                break;
            }
        }
        if revoked {
            for _ in 0..3 {
                probe(&h, &target, token.clone(), session).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        b.client.close().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One request with a session's token, through a random node.
async fn probe(h: &History, target: &Target, token: Option<Vec<u8>>, session: u64) {
    let Ok(mut d) = Device::open(target.config("probe", token)) else {
        return;
    };
    let _ = op(
        h,
        &mut d,
        "r",
        "probe",
        json!({"session": session}),
        |_| json!({}),
        async |c: &Client| c.get_self().await,
    )
    .await;
    d.client.close().await;
}

/// Every chat's whole log, read through each of `nodes` (after healing).
pub async fn final_reads(
    h: &History,
    target: &Target,
    token: &[u8],
    chats: &[u64],
    nodes: &[String],
) {
    for node in nodes {
        let Ok(client) = target.pinned(node, token.to_vec()) else {
            continue;
        };
        for &chat in chats {
            let p = h.invoke("final", "read", json!({"chat": chat, "node": node}));
            let deadline = Instant::now() + Duration::from_secs(60);
            let read = loop {
                match read_all(&client, chat).await {
                    Ok(log) => break Ok(log),
                    Err(e) if Instant::now() > deadline => break Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            };
            match read {
                Ok(log) => h.complete(
                    p,
                    Kind::Ok,
                    Some(node.clone()),
                    json!({"messages": log}),
                    None,
                ),
                Err(e) => h.complete(
                    p,
                    Kind::Info,
                    Some(node.clone()),
                    json!({}),
                    Some(format!("{e:#}")),
                ),
            };
        }
        client.close().await;
    }
}

/// Every file an acknowledged send carried, downloaded through its message
/// by a member (after healing), as its SHA-256.
pub async fn final_files(h: &History, target: &Target, token: &[u8], node: &str) {
    let sent: Vec<(u64, u64, u64)> = h
        .entries()
        .iter()
        .filter(|e| e.f == "send" && e.kind == Kind::Ok)
        .filter_map(|e| Some((e.get_u64("chat")?, e.get_u64("id")?, e.get_u64("file")?)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let Ok(client) = target.pinned(node, token.to_vec()) else {
        return;
    };
    for (chat, id, file) in sent {
        let p = h.invoke(
            "final",
            "download",
            json!({"chat": chat, "id": id, "file": file}),
        );
        let at = courier_client::FileLocation {
            file_id: file,
            chat_id: chat,
            message_id: id,
            thumb: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let got = loop {
            match download(&client, at).await {
                Ok(b) => break Ok(b),
                Err(e) if Instant::now() > deadline => break Err(e),
                // Deleted since: nothing to check (the checker knows from the log).
                Err(e) if e.code() == Code::MessageNotFound => break Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        match got {
            Ok(b) => h.complete(
                p,
                Kind::Ok,
                Some(node.to_string()),
                json!({"got_sha256": hex::encode(sha256(&b)), "got_size": b.len()}),
                None,
            ),
            Err(e) => h.complete(
                p,
                Kind::Info,
                Some(node.to_string()),
                json!({}),
                Some(e.to_string()),
            ),
        };
    }
    client.close().await;
}

async fn download(
    client: &Client,
    at: courier_client::FileLocation,
) -> courier_client::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let slice = timed(client.get_file(at, out.len() as u64, 512 << 10)).await?;
        let size = slice.file.as_ref().map_or(0, |f| f.size) as usize;
        out.extend_from_slice(&slice.bytes);
        if out.len() >= size || slice.bytes.is_empty() {
            return Ok(out);
        }
    }
}

async fn read_all(client: &Client, chat: u64) -> Result<Vec<Line>> {
    let mut out: BTreeMap<u64, Line> = BTreeMap::new();
    let mut before = 0;
    for _ in 0..100_000 {
        let page = timed(client.history(chat, before, 0, 100)).await?;
        let Some(low) = page.iter().map(|m| m.id).min() else {
            break;
        };
        out.extend(page.iter().map(|m| (m.id, line(m))));
        if low <= 1 {
            break;
        }
        before = low;
    }
    let ids: BTreeSet<u64> = out.keys().copied().collect();
    if ids.len() != out.len() {
        bail!("history repeated ids");
    }
    Ok(out.into_values().collect())
}
