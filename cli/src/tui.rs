//! `courier chat`: the interactive terminal client. Line-based, so it works
//! in any terminal, over ssh and inside tmux: type to send into the open
//! chat, `/` commands for the rest; messages arrive live, read marks go out
//! as you see them.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use courier_client::{Client, Event, pb};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::user::{ProfileDir, UserConn, client};

const HELP: &str = "\
commands:
  /dialogs            your chats (/d)
  /open N|CHAT|+PHONE open chat number N of /dialogs, a chat id, or the private chat with a phone (/o)
  /more               older messages of the open chat
  /group TITLE +PHONE…  create a group with these members and open it
  /members            who is in the open chat (the first 50, with roles)
  /invite +PHONE…     add people to the open group
  /search TEXT        find messages in the open chat
  /react ID EMOJI     react to a message of the open chat
  /edit ID TEXT       edit your message;  /delete ID   delete it for everyone
  /file PATH          send a file (an image goes as a photo)
  /save ID PATH       download the file of message ID to PATH
  /quit               leave (Ctrl-D too)
anything else is sent to the open chat";

struct Ui {
    c: Client,
    profile: ProfileDir,
    me: u64,
    names: HashMap<u64, String>,
    dialogs: Vec<pb::Dialog>,
    open: Option<pb::Chat>,
    /// The oldest message id shown of the open chat (for /more).
    oldest: u64,
    /// The other member of private chats opened by phone.
    peers: HashMap<u64, u64>,
}

fn clock(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:02}:{:02}", t.hour(), t.minute())
}

impl Ui {
    async fn name(&mut self, id: u64) -> String {
        if !self.names.contains_key(&id)
            && let Ok(users) = self.c.users(vec![id]).await
        {
            for u in users {
                self.names.insert(u.id, crate::user::full_name(&u));
            }
        }
        self.names.get(&id).cloned().unwrap_or_else(|| format!("user {id}"))
    }

    /// A private chat's other member: as the dialogs name it
    /// (`Dialog.peer`), or as this session opened it by phone.
    fn peer(&self, chat: u64) -> Option<u64> {
        self.peers.get(&chat).copied().or_else(|| {
            self.dialogs.iter().find(|d| d.chat.as_ref().is_some_and(|c| c.id == chat)).map(|d| d.peer).filter(|p| *p != 0)
        })
    }

    async fn title(&mut self, chat: &pb::Chat) -> String {
        if chat.kind == pb::ChatKind::Private as i32 {
            return match self.peer(chat.id) {
                Some(peer) => self.name(peer).await,
                None => "private chat".into(),
            };
        }
        chat.title.clone()
    }

    async fn line(&mut self, m: &pb::Message) -> String {
        let who = if m.from == self.me { "you".to_string() } else { self.name(m.from).await };
        let text = if m.deleted { "(deleted)".to_string() } else { m.text.clone() };
        let mut extra = String::new();
        if let Some(f) = &m.fwd {
            extra.push_str(&format!(" (forwarded from {})", self.name(f.from).await));
        }
        if m.edit_ms > 0 && !m.deleted {
            extra.push_str(" (edited)");
        }
        if !m.reactions.is_empty() {
            let r: Vec<String> = m.reactions.iter().map(|r| format!("{}{}", r.emoji, r.count)).collect();
            extra.push_str(&format!("  [{}]", r.join(" ")));
        }
        if let Some(line) = crate::chat::media_line(m).filter(|_| !m.deleted) {
            extra.push_str(&format!("  {line}"));
        }
        format!("[{}] #{} {who}: {text}{extra}", clock(m.date_ms), m.id)
    }

    async fn show_dialogs(&mut self) -> Result<()> {
        self.dialogs = self.c.dialogs().await?;
        if self.dialogs.is_empty() {
            println!("no chats yet: /open +PHONE starts one, /group TITLE +PHONE… makes a group");
        }
        for (i, d) in self.dialogs.clone().iter().enumerate() {
            let chat = d.chat.clone().unwrap_or_default();
            let title = self.title(&chat).await;
            let last = d.last.as_ref().map(|m| if m.deleted { "(deleted)".into() } else { m.text.chars().take(50).collect::<String>() }).unwrap_or_default();
            let unread = if d.unread > 0 { format!(" ({} unread)", d.unread) } else { String::new() };
            println!("  {:>2}) {title}{unread} — {last}", i + 1);
        }
        Ok(())
    }

    async fn chat_of(&mut self, arg: &str) -> Result<pb::Chat> {
        if let Ok(n) = arg.parse::<usize>()
            && (1..=self.dialogs.len()).contains(&n)
        {
            return Ok(self.dialogs[n - 1].chat.clone().unwrap_or_default());
        }
        if arg.starts_with('+') {
            let u = self.c.resolve_phone(arg).await?;
            let chat = self.c.private_chat(u.id).await?;
            self.names.insert(u.id, crate::user::full_name(&u));
            self.peers.insert(chat.id, u.id);
            return Ok(chat);
        }
        let id: u64 = arg.parse().map_err(|_| anyhow::anyhow!("/open takes a number from /dialogs, a chat id or a phone number"))?;
        let d = self.c.dialogs().await?;
        d.into_iter().filter_map(|d| d.chat).find(|c| c.id == id).ok_or_else(|| anyhow::anyhow!("NOT_A_MEMBER: you are not in chat {id}"))
    }

    async fn open(&mut self, chat: pb::Chat) -> Result<()> {
        let title = self.title(&chat).await;
        let mut status = String::new();
        if let Some(peer) = self.peer(chat.id)
            && let Ok(Some(u)) = self.c.users(vec![peer]).await.map(|mut v| v.pop())
        {
            status = if u.online { " (online)".into() } else if u.last_seen_ms > 0 { format!(" (last seen {})", clock(u.last_seen_ms)) } else { String::new() };
        }
        println!("── {title}{status} ── (type to send, /help)");
        let mut page = self.c.history(chat.id, 0, 0, 20).await?;
        page.reverse();
        self.oldest = page.first().map_or(0, |m| m.id);
        for m in &page {
            println!("{}", self.line(m).await);
        }
        if let Some(last) = page.last() {
            self.c.read_history(chat.id, last.id).await?;
        }
        self.open = Some(chat);
        Ok(())
    }

    async fn command(&mut self, input: &str) -> Result<bool> {
        let (cmd, rest) = input.split_once(' ').map_or((input, ""), |(a, b)| (a, b.trim()));
        let open = self.open.clone();
        match (cmd, open) {
            ("/quit" | "/q", _) => return Ok(false),
            ("/help" | "/h", _) => println!("{HELP}"),
            ("/dialogs" | "/d", _) => self.show_dialogs().await?,
            ("/open" | "/o", _) => {
                let chat = self.chat_of(rest).await?;
                self.open(chat).await?;
            }
            ("/group", _) => {
                let mut words = rest.split_whitespace().peekable();
                let mut title = Vec::new();
                while let Some(w) = words.next_if(|w| !w.starts_with('+')) {
                    title.push(w);
                }
                let mut ids = Vec::new();
                for p in words {
                    ids.push(self.c.resolve_phone(p).await?.id);
                }
                let chat = self.c.create_group(&title.join(" "), ids).await?;
                self.open(chat).await?;
            }
            ("/more", Some(chat)) if self.oldest > 1 => {
                let mut page = self.c.history(chat.id, self.oldest, 0, 20).await?;
                page.reverse();
                self.oldest = page.first().map_or(self.oldest, |m| m.id);
                for m in &page {
                    println!("{}", self.line(m).await);
                }
            }
            ("/search", Some(chat)) => {
                for m in self.c.search(chat.id, rest, 20).await? {
                    println!("{}", self.line(&m).await);
                }
            }
            ("/react", Some(chat)) => {
                let (id, emoji) = rest.split_once(' ').unwrap_or((rest, "👍"));
                self.c.send_reaction(chat.id, id.parse()?, emoji.trim()).await?;
            }
            ("/edit", Some(chat)) => {
                let (id, text) = rest.split_once(' ').ok_or_else(|| anyhow::anyhow!("/edit ID TEXT"))?;
                self.c.edit_message(chat.id, id.parse()?, text).await?;
            }
            ("/delete", Some(chat)) => self.c.delete_messages(chat.id, vec![rest.parse()?]).await?,
            ("/file", Some(chat)) => {
                crate::chat::send_file(&self.profile, &self.c, chat.id, std::path::Path::new(rest), "", None, 0, 0).await?;
            }
            ("/save", Some(chat)) => {
                let (id, path) = rest.split_once(' ').ok_or_else(|| anyhow::anyhow!("/save ID PATH"))?;
                let id: u64 = id.parse()?;
                let m = self.c.history(chat.id, id + 1, 0, 1).await?.into_iter().find(|m| m.id == id);
                let Some(at) = m.as_ref().and_then(courier_client::FileLocation::of_message) else { anyhow::bail!("message {id} has no file") };
                let f = self.c.download(at, std::path::Path::new(path.trim()), |_, _| {}).await?;
                println!("saved {} ({}) to {}", f.name, indicatif::HumanBytes(f.size), path.trim());
            }
            ("/members", Some(chat)) => {
                let list = self.c.members(chat.id, 0, 50).await?;
                let mut line = Vec::new();
                for m in &list {
                    let role = match crate::chat::role_name(m.role) {
                        "member" => String::new(),
                        r => format!(" ({r})"),
                    };
                    line.push(format!("{}{role}", self.name(m.user_id).await));
                }
                let more = if list.len() == 50 && chat.members > 50 { format!(" and {} more", chat.members - 50) } else { String::new() };
                println!("{} members: {}{more}", chat.members.max(list.len() as u64), line.join(", "));
            }
            ("/invite", Some(chat)) => {
                let mut ids = Vec::new();
                for p in rest.split_whitespace() {
                    ids.push(self.c.resolve_phone(p).await?.id);
                }
                let after = self.c.invite(chat.id, ids).await?;
                println!("{} members now", after.members);
            }
            ("/more" | "/search" | "/react" | "/edit" | "/delete" | "/file" | "/save" | "/members" | "/invite", _) => println!("open a chat first: /open N"),
            _ => println!("unknown command {cmd}; /help lists them"),
        }
        Ok(true)
    }

    async fn event(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Update(pb::Update { kind: Some(pb::update::Kind::ChatEvent(e)) }) => {
                let here = self.open.as_ref().is_some_and(|c| c.id == e.chat_id);
                use pb::chat_event::Kind;
                match e.kind {
                    Some(Kind::NewMessage(m)) if here => {
                        println!("{}", self.line(&m).await);
                        if m.from != self.me {
                            self.c.read_history(e.chat_id, m.id).await?;
                        }
                    }
                    Some(Kind::NewMessage(m)) if m.from != self.me => {
                        let who = self.name(m.from).await;
                        println!("• {who} (chat {}): {}", e.chat_id, m.text.chars().take(60).collect::<String>());
                    }
                    Some(Kind::Edited(m)) | Some(Kind::Reactions(m)) if here => println!("{}", self.line(&m).await),
                    Some(Kind::Deleted(ids)) if here => println!("(messages {:?} were deleted)", ids.ids),
                    Some(Kind::Read(r)) if here && r.user != self.me => println!("✓✓ read up to #{} by {}", r.max_id, self.name(r.user).await),
                    _ => {}
                }
            }
            Event::Update(pb::Update { kind: Some(pb::update::Kind::Typing(t)) }) if self.open.as_ref().is_some_and(|c| c.id == t.chat_id) => {
                println!("{} is typing…", self.name(t.user).await);
            }
            Event::Update(pb::Update { kind: Some(pb::update::Kind::LoginCode(l)) }) => {
                println!("• login code for {} on {}: {}", l.phone, l.device, l.code);
            }
            Event::Disconnected { node, code } => println!("• disconnected from {node} ({}); reconnecting…", code.map_or("closed", |c| c.as_str())),
            Event::Connected { node, .. } => println!("• connected to {node}"),
            _ => {}
        }
        Ok(())
    }
}

pub async fn run(profile: &ProfileDir, conn: &UserConn) -> Result<()> {
    let (c, mut events, _) = client(profile, conn, true).await?;
    let me = c.hello().and_then(|h| h.user).ok_or_else(|| anyhow::anyhow!("not logged in; run `courier login --phone +…`"))?;
    let name = format!("{} {}", me.first_name, me.last_name).trim().to_string();
    println!("Courier — {name} ({}). /help for commands, Ctrl-D to leave.", me.phone);
    let mut ui = Ui { c, profile: profile.clone(), me: me.id, names: HashMap::new(), dialogs: Vec::new(), open: None, oldest: 0, peers: HashMap::new() };
    ui.show_dialogs().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        std::io::stdout().flush()?;
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let input = line.trim();
                if input.is_empty() {
                    continue;
                }
                let r = if input.starts_with('/') {
                    match ui.command(input).await {
                        Ok(true) => Ok(()),
                        Ok(false) => break,
                        Err(e) => Err(e),
                    }
                } else if let Some(chat) = ui.open.clone() {
                    ui.c.send_message(chat.id, rand::random(), input, 0).await.map(|_| ()).map_err(Into::into)
                } else {
                    println!("open a chat first: /dialogs, then /open N");
                    Ok(())
                };
                if let Err(e) = r {
                    println!("! {e}");
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                if let Err(e) = ui.event(ev).await {
                    println!("! {e}");
                }
            }
        }
    }
    println!("bye");
    Ok(())
}
