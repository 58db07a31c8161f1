//! One-shot chat commands for people and scripts: `send`, `history`,
//! `dialogs`, `group create|invite|leave`, `block`. A CHAT is a chat id or a phone
//! number (the private chat with that user); a USER is a user id or a phone.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use courier_client::{Client, pb};

use crate::user::{ProfileDir, UserConn, client, when};

/// A user named by id or phone number.
async fn user_id(c: &Client, who: &str) -> Result<u64> {
    if who.starts_with('+') {
        return Ok(c.resolve_phone(who).await?.id);
    }
    who.parse().map_err(|_| anyhow::anyhow!("{who:?} is neither a user id nor a phone number (+…)"))
}

/// A chat named by id, or by phone number (the private chat with that user).
async fn chat_id(c: &Client, chat: &str) -> Result<u64> {
    if chat.starts_with('@') {
        bail!("usernames are not supported yet; name the chat by id or phone number");
    }
    if chat.starts_with('+') {
        let u = c.resolve_phone(chat).await?;
        return Ok(c.private_chat(u.id).await?.id);
    }
    chat.parse().map_err(|_| anyhow::anyhow!("{chat:?} is neither a chat id nor a phone number (+…)"))
}

fn kind(c: &pb::Chat) -> &'static str {
    match pb::ChatKind::try_from(c.kind) {
        Ok(pb::ChatKind::Private) => "private",
        Ok(pb::ChatKind::Group) => "group",
        Ok(pb::ChatKind::Channel) => "channel",
        _ => "?",
    }
}

fn media_kind(m: &pb::MessageMedia) -> &'static str {
    match pb::MediaKind::try_from(m.kind) {
        Ok(pb::MediaKind::MediaPhoto) => "photo",
        Ok(pb::MediaKind::MediaVoice) => "voice",
        _ => "document",
    }
}

fn message_json(m: &pb::Message) -> serde_json::Value {
    let media = m.media.as_ref().map(|x| {
        let file = x.file.as_ref().map(crate::media::file_json);
        serde_json::json!({"kind": media_kind(x), "file": file, "duration_secs": x.duration_secs})
    });
    serde_json::json!({
        "chat_id": m.chat_id, "id": m.id, "from": m.from, "date_ms": m.date_ms, "text": m.text,
        "reply_to": m.reply_to, "edit_ms": m.edit_ms, "deleted": m.deleted, "media": media,
    })
}

/// One line for a message's media, with the command that downloads it.
pub fn media_line(m: &pb::Message) -> Option<String> {
    let x = m.media.as_ref()?;
    let f = x.file.as_ref()?;
    Some(format!(
        "[{} {} ({}); courier download {} OUT --chat {} --message {}]",
        media_kind(x),
        f.name,
        indicatif::HumanBytes(f.size),
        f.id,
        m.chat_id,
        m.id
    ))
}

/// People's names by id, asked in batches of [`courier_client`]'s limit
/// (one request for a page of history or dialogs). Who is not found (or
/// may not be seen) is left out: [`name_of`] then says `user N`.
pub async fn names(c: &Client, ids: impl Iterator<Item = u64>) -> std::collections::BTreeMap<u64, String> {
    let ids: std::collections::BTreeSet<u64> = ids.collect();
    let ids: Vec<u64> = ids.into_iter().collect();
    let mut out = std::collections::BTreeMap::new();
    for batch in ids.chunks(100) {
        if let Ok(users) = c.users(batch.to_vec()).await {
            out.extend(users.iter().map(|u| (u.id, crate::user::full_name(u))));
        }
    }
    out
}

pub fn name_of(names: &std::collections::BTreeMap<u64, String>, id: u64) -> String {
    names.get(&id).filter(|n| !n.is_empty()).cloned().unwrap_or_else(|| format!("user {id}"))
}

fn chat_json(c: &pb::Chat) -> serde_json::Value {
    serde_json::json!({"id": c.id, "kind": kind(c), "title": c.title, "members": c.members, "last_id": c.last_id, "pts": c.pts})
}

#[derive(Args, Debug)]
pub struct BlockArgs {
    /// The user: a user id, or a phone number.
    user: String,
    /// Lift the block instead.
    #[arg(long)]
    unblock: bool,
    #[command(flatten)]
    conn: UserConn,
}

/// Blocks a user (no private messages, no invitations from them) or lifts it.
pub async fn block(profile: &ProfileDir, a: BlockArgs) -> Result<()> {
    let (c, _, _) = client(profile, &a.conn, true).await?;
    let user = user_id(&c, &a.user).await?;
    c.block_user(user, !a.unblock).await?;
    println!("{} user {user}", if a.unblock { "unblocked" } else { "blocked" });
    Ok(())
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// A chat id, or a phone number for the private chat with that user.
    chat: String,
    /// The message; with --file, its caption (optional).
    #[arg(required_unless_present = "file")]
    text: Option<String>,
    /// Send a file: uploaded first (with a progress bar; run the command
    /// again to resume an interrupted upload), then posted.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// How the file is shown: a photo (images), a document, or a voice note
    /// (default: photo for an image, else document).
    #[arg(long = "as", value_parser = ["photo", "document", "voice"], requires = "file")]
    as_kind: Option<String>,
    /// A voice note's length in seconds.
    #[arg(long, default_value_t = 0, requires = "file")]
    duration: u32,
    /// Reply to this message id.
    #[arg(long, default_value_t = 0)]
    reply_to: u64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: UserConn,
}

pub async fn send(profile: &ProfileDir, a: SendArgs) -> Result<()> {
    let (c, _, _) = client(profile, &a.conn, true).await?;
    let chat = chat_id(&c, &a.chat).await?;
    let text = a.text.unwrap_or_default();
    // One random_id for this send: a retry inside the SDK cannot duplicate it.
    let m = match &a.file {
        None => c.send_message(chat, rand::random(), &text, a.reply_to).await?,
        Some(path) => send_file(profile, &c, chat, path, &text, a.as_kind.as_deref(), a.duration, a.reply_to).await?,
    };
    if a.json {
        println!("{}", message_json(&m));
    } else {
        println!("sent message {} to chat {}", m.id, chat);
    }
    Ok(())
}

/// Uploads a file (progress bar; resumes an interrupted upload of the same
/// bytes) and posts it in `chat` as `as_kind` (`photo`, `document`,
/// `voice`; default: a photo if the node made previews, else a document).
#[allow(clippy::too_many_arguments)]
pub async fn send_file(
    profile: &ProfileDir,
    c: &Client,
    chat: u64,
    path: &std::path::Path,
    caption: &str,
    as_kind: Option<&str>,
    duration_secs: u32,
    reply_to: u64,
) -> Result<pb::Message> {
    let f = crate::media::upload_file(profile, c, path, None, None).await?;
    let kind = match as_kind {
        Some("photo") => pb::MediaKind::MediaPhoto,
        Some("voice") => pb::MediaKind::MediaVoice,
        Some(_) => pb::MediaKind::MediaDocument,
        None if !f.thumbs.is_empty() => pb::MediaKind::MediaPhoto,
        None => pb::MediaKind::MediaDocument,
    };
    let media = pb::InputMedia { file_id: f.id, kind: kind.into(), duration_secs };
    // One random_id for this send: a retry inside the SDK cannot duplicate it.
    Ok(c.send_media(chat, rand::random(), caption, media, reply_to).await?)
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    chat: String,
    /// How many of the newest messages.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: UserConn,
}

pub async fn history(profile: &ProfileDir, a: HistoryArgs) -> Result<()> {
    let (c, _, _) = client(profile, &a.conn, true).await?;
    let chat = chat_id(&c, &a.chat).await?;
    let mut list = Vec::new();
    let mut before = 0;
    while list.len() < a.limit as usize {
        let page = c.history(chat, before, 0, (a.limit as usize - list.len()).min(100) as u32).await?;
        let Some(last) = page.last() else { break };
        before = last.id;
        list.extend(page);
    }
    list.reverse();
    if a.json {
        println!("{}", serde_json::json!({"chat_id": chat, "messages": list.iter().map(message_json).collect::<Vec<_>>()}));
        return Ok(());
    }
    let names = names(&c, list.iter().map(|m| m.from)).await;
    for m in &list {
        let text = if m.deleted { "(deleted)".to_string() } else { m.text.clone() };
        let edited = if m.edit_ms > 0 && !m.deleted { " (edited)" } else { "" };
        println!("#{:<6} {}  {}: {text}{edited}", m.id, when(m.date_ms), name_of(&names, m.from));
        if let Some(line) = media_line(m).filter(|_| !m.deleted) {
            println!("        {line}");
        }
    }
    Ok(())
}

pub async fn dialogs(profile: &ProfileDir, conn: &UserConn, json: bool) -> Result<()> {
    let (c, _, _) = client(profile, conn, true).await?;
    let list = c.dialogs().await?;
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|d| {
                let chat = d.chat.clone().unwrap_or_default();
                serde_json::json!({"chat": chat_json(&chat), "unread": d.unread, "read_max_id": d.read_max_id, "last": d.last.as_ref().map(message_json)})
            })
            .collect();
        println!("{}", serde_json::json!({ "dialogs": v }));
        return Ok(());
    }
    println!("{:<22} {:<8} {:<20} {:>6}  LAST", "CHAT", "KIND", "TITLE", "UNREAD");
    let names = names(&c, list.iter().map(|d| d.peer).filter(|p| *p != 0)).await;
    for d in &list {
        let mut chat = d.chat.clone().unwrap_or_default();
        if d.peer != 0 && chat.title.is_empty() {
            chat.title = name_of(&names, d.peer);
        }
        let last = d.last.as_ref().map(|m| if m.deleted { "(deleted)".into() } else { m.text.chars().take(40).collect::<String>() }).unwrap_or_default();
        println!("{:<22} {:<8} {:<20} {:>6}  {last}", chat.id, kind(&chat), chat.title, d.unread);
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Create a group (you are its creator) and print its id.
    Create {
        title: String,
        /// A member to add, by user id or phone number (repeatable).
        #[arg(long = "member")]
        members: Vec<String>,
        /// A channel instead: admins post, members read.
        #[arg(long)]
        channel: bool,
        #[command(flatten)]
        conn: UserConn,
    },
    /// Add members (by user id or phone number).
    Invite {
        chat: u64,
        #[arg(required = true)]
        users: Vec<String>,
        #[command(flatten)]
        conn: UserConn,
    },
    /// Leave a group or channel.
    Leave {
        chat: u64,
        #[command(flatten)]
        conn: UserConn,
    },
    /// List a chat's members (a channel's subscribers: admins only), in id order.
    Members {
        chat: u64,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: UserConn,
    },
}

/// A member's role as people read it.
pub(crate) fn role_name(r: i32) -> &'static str {
    match pb::Role::try_from(r) {
        Ok(pb::Role::Creator) => "creator",
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::Member) => "member",
        _ => "?",
    }
}

pub async fn group(profile: &ProfileDir, cmd: GroupCmd) -> Result<()> {
    match cmd {
        GroupCmd::Create { title, members, channel, conn } => {
            let (c, _, _) = client(profile, &conn, true).await?;
            let mut ids = Vec::new();
            for m in &members {
                ids.push(user_id(&c, m).await?);
            }
            let chat = if channel {
                let ch = c.create_channel(&title).await?;
                if !ids.is_empty() {
                    c.invite(ch.id, ids).await?
                } else {
                    ch
                }
            } else {
                c.create_group(&title, ids).await?
            };
            println!("{}", chat.id);
            Ok(())
        }
        GroupCmd::Invite { chat, users, conn } => {
            let (c, _, _) = client(profile, &conn, true).await?;
            let mut ids = Vec::new();
            for u in &users {
                ids.push(user_id(&c, u).await?);
            }
            let after = c.invite(chat, ids).await?;
            println!("chat {}: {} members", after.id, after.members);
            Ok(())
        }
        GroupCmd::Leave { chat, conn } => {
            let (c, _, _) = client(profile, &conn, true).await?;
            let me = c.hello().and_then(|h| h.user).map(|u| u.id).unwrap_or_default();
            c.remove_member(chat, me).await?;
            println!("left chat {chat}");
            Ok(())
        }
        GroupCmd::Members { chat, limit, json, conn } => {
            let (c, _, _) = client(profile, &conn, true).await?;
            let mut all = Vec::new();
            loop {
                let after = all.last().map(|m: &pb::ChatMember| m.user_id).unwrap_or(0);
                let page = c.members(chat, after, 200).await?;
                let last_page = page.len() < 200;
                all.extend(page);
                if last_page || (limit > 0 && all.len() >= limit) {
                    break;
                }
            }
            if limit > 0 {
                all.truncate(limit);
            }
            let names = names(&c, all.iter().map(|m| m.user_id)).await;
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|m| serde_json::json!({"user_id": m.user_id, "name": names.get(&m.user_id), "role": role_name(m.role), "joined_ms": m.joined_ms}))
                    .collect();
                println!("{}", serde_json::json!({ "chat_id": chat, "members": v }));
                return Ok(());
            }
            println!("{:<22} {:<8} {:<25} NAME", "USER", "ROLE", "JOINED");
            for m in &all {
                println!("{:<22} {:<8} {:<25} {}", m.user_id, role_name(m.role), when(m.joined_ms), names.get(&m.user_id).map(String::as_str).unwrap_or(""));
            }
            Ok(())
        }
    }
}
