//! Client requests as validated domain values: nothing past the gateway sees
//! an unchecked protobuf message.

use courier_proto::client as pb;
use courier_proto::client::request::Method as M;

use crate::auth::AuthError;
use crate::messaging::ChatKind;
use crate::messaging::logic;
use crate::error::{Error, Result};

pub const PROTOCOL: u32 = 1;
const SHORT: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub client_version: String,
    pub device: String,
    pub token: Option<Vec<u8>>,
    /// A device's extra connection for requests only: no push stream.
    pub requests_only: bool,
    /// Nonzero: the client applies its own sends from their replies
    /// (`Hello.own_sends_key`).
    pub own_sends_key: u64,
}

pub use crate::messaging::InputMedia;

/// One client request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Hello(Hello),
    Ping(u64),
    SendCode { phone: String },
    SignIn { phone: String, code_id: u64, code: String },
    SignUp { phone: String, code_id: u64, first_name: String, last_name: String },
    GetSelf,
    GetSessions,
    TerminateSession(u64),
    TerminateOthers,
    LogOut,
    ResolvePhone { phone: String },
    CreateChat { kind: ChatKind, title: String, members: Vec<u64> },
    Invite { chat: u64, users: Vec<u64> },
    RemoveMember { chat: u64, user: u64 },
    SetTitle { chat: u64, title: String },
    SetAdmin { chat: u64, user: u64, admin: bool },
    SendMessage { chat: u64, random_id: u64, text: String, reply_to: u64, media: Option<InputMedia> },
    EditMessage { chat: u64, id: u64, text: String },
    DeleteMessages { chat: u64, ids: Vec<u64> },
    ReadHistory { chat: u64, max_id: u64 },
    GetHistory { chat: u64, before: u64, after: u64, limit: u32 },
    GetMembers { chat: u64, after: u64, limit: u32 },
    /// A page of dialogs after `before` = (last_ms, chat id), at most `limit`.
    GetDialogs { before: (u64, u64), limit: u32 },
    GetDifference(Vec<(u64, u64, u64)>),
    Forward { chat: u64, from_chat: u64, ids: Vec<u64>, random_id: u64 },
    Pin { chat: u64, id: u64 },
    React { chat: u64, id: u64, emoji: String },
    Search { chat: u64, text: String, limit: u32, before: u64 },
    GetReactions { chat: u64, id: u64, after: u64, limit: u32 },
    Typing { chat: u64 },
    BlockUser { user: u64, blocked: bool },
    GetUsers(Vec<u64>),
    DeleteForMe { chat: u64, ids: Vec<u64> },
    UploadPart { upload: u64, part: u32, part_size: u32, bytes: Vec<u8> },
    FinishUpload { upload: u64, parts: u32, part_size: u32, size: u64, sha256: [u8; 32], name: String, mime: String },
    /// `via`: the message (chat, id) that carries the file; `thumb`: a preview's kind.
    GetFile { file: u64, offset: u64, limit: u32, via: Option<(u64, u64)>, thumb: Option<u8> },
    GetRoutes,
}

/// Chats one `get_difference` may name.
pub const DIFF_CHATS_MAX: usize = 10_000;

impl Method {
    /// Whether the method needs a logged-in connection.
    pub fn needs_session(&self) -> bool {
        !matches!(self, Method::Hello(_) | Method::Ping(_) | Method::SendCode { .. } | Method::SignIn { .. } | Method::SignUp { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Hello(_) => "hello",
            Method::Ping(_) => "ping",
            Method::SendCode { .. } => "send_code",
            Method::SignIn { .. } => "sign_in",
            Method::SignUp { .. } => "sign_up",
            Method::GetSelf => "get_self",
            Method::GetSessions => "get_sessions",
            Method::TerminateSession(_) => "terminate_session",
            Method::TerminateOthers => "terminate_other_sessions",
            Method::LogOut => "log_out",
            Method::ResolvePhone { .. } => "resolve_phone",
            Method::CreateChat { .. } => "create_chat",
            Method::Invite { .. } => "invite",
            Method::RemoveMember { .. } => "remove_member",
            Method::SetTitle { .. } => "set_title",
            Method::SetAdmin { .. } => "set_admin",
            Method::SendMessage { .. } => "send_message",
            Method::EditMessage { .. } => "edit_message",
            Method::DeleteMessages { .. } => "delete_messages",
            Method::ReadHistory { .. } => "read_history",
            Method::GetHistory { .. } => "get_history",
            Method::GetMembers { .. } => "get_members",
            Method::GetDialogs { .. } => "get_dialogs",
            Method::GetReactions { .. } => "get_reactions",
            Method::GetDifference(_) => "get_difference",
            Method::Forward { .. } => "forward_messages",
            Method::Pin { .. } => "pin_message",
            Method::React { .. } => "send_reaction",
            Method::Search { .. } => "search",
            Method::Typing { .. } => "set_typing",
            Method::BlockUser { .. } => "block_user",
            Method::GetUsers(_) => "get_users",
            Method::DeleteForMe { .. } => "delete_for_me",
            Method::UploadPart { .. } => "upload_part",
            Method::FinishUpload { .. } => "finish_upload",
            Method::GetFile { .. } => "get_file",
            Method::GetRoutes => "get_routes",
        }
    }
}

fn text(field: &str, v: String, max: usize) -> Result<String> {
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!("{field}: at most {max} printable characters")));
    }
    Ok(v)
}

fn phone(v: String) -> Result<String> {
    if !crate::auth::logic::valid_phone(&v) {
        return Err(AuthError::PhoneNumberInvalid.into());
    }
    Ok(v)
}

fn code_id(v: &str) -> Result<u64> {
    if v.len() != 16 {
        return Err(Error::BadRequest("phone_code_hash: the value send_code returned".into()));
    }
    u64::from_str_radix(v, 16).map_err(|_| Error::BadRequest("phone_code_hash: the value send_code returned".into()))
}

/// How `send_code` names a code to the client.
pub fn code_id_string(id: u64) -> String {
    format!("{id:016x}")
}

impl TryFrom<pb::Request> for Method {
    type Error = Error;

    fn try_from(r: pb::Request) -> Result<Method> {
        Ok(match r.method {
            None => return Err(Error::BadRequest("unknown or missing method".into())),
            Some(M::BlockUser(b)) => Method::BlockUser { user: b.user_id, blocked: b.blocked },
            Some(M::Hello(h)) => {
                if h.protocol != PROTOCOL {
                    return Err(Error::BadRequest(format!("protocol {} is not spoken here; this node speaks {PROTOCOL}", h.protocol)));
                }
                Method::Hello(Hello {
                    client_version: text("client_version", h.client_version, 64)?,
                    device: text("device", h.device, SHORT)?,
                    token: (!h.session_token.is_empty()).then_some(h.session_token),
                    requests_only: h.requests_only,
                    own_sends_key: h.own_sends_key,
                })
            }
            Some(M::Ping(p)) => Method::Ping(p.nonce),
            Some(M::GetRoutes(_)) => Method::GetRoutes,
            Some(M::SendCode(s)) => Method::SendCode { phone: phone(s.phone)? },
            Some(M::SignIn(s)) => Method::SignIn { phone: phone(s.phone)?, code_id: code_id(&s.phone_code_hash)?, code: text("code", s.code, 16)? },
            Some(M::SignUp(s)) => Method::SignUp {
                phone: phone(s.phone)?,
                code_id: code_id(&s.phone_code_hash)?,
                first_name: text("first_name", s.first_name, 64)?,
                last_name: text("last_name", s.last_name, 64)?,
            },
            Some(M::GetSelf(_)) => Method::GetSelf,
            Some(M::GetSessions(_)) => Method::GetSessions,
            Some(M::TerminateSession(t)) => Method::TerminateSession(t.session_id),
            Some(M::TerminateOtherSessions(_)) => Method::TerminateOthers,
            Some(M::LogOut(_)) => Method::LogOut,
            Some(M::ResolvePhone(r)) => Method::ResolvePhone { phone: phone(r.phone)? },
            Some(M::CreateChat(c)) => {
                let kind = match pb::ChatKind::try_from(c.kind) {
                    Ok(pb::ChatKind::Private) => ChatKind::Private,
                    Ok(pb::ChatKind::Group) => ChatKind::Group,
                    Ok(pb::ChatKind::Channel) => ChatKind::Channel,
                    _ => return Err(Error::BadRequest("kind: PRIVATE, GROUP or CHANNEL".into())),
                };
                if c.members.len() > logic::MEMBERS_PER_REQUEST {
                    return Err(Error::BadRequest(format!("members: at most {} at creation; invite the rest afterwards", logic::MEMBERS_PER_REQUEST)));
                }
                if kind != ChatKind::Private {
                    logic::check_text(&c.title, logic::TITLE_MAX)?;
                }
                Method::CreateChat { kind, title: c.title, members: c.members }
            }
            Some(M::Invite(i)) => {
                if i.users.is_empty() || i.users.len() > logic::MEMBERS_PER_REQUEST {
                    return Err(Error::BadRequest(format!("users: 1 to {} at once", logic::MEMBERS_PER_REQUEST)));
                }
                Method::Invite { chat: i.chat_id, users: i.users }
            }
            Some(M::RemoveMember(r)) => Method::RemoveMember { chat: r.chat_id, user: r.user_id },
            Some(M::SetTitle(t)) => {
                logic::check_text(&t.title, logic::TITLE_MAX)?;
                Method::SetTitle { chat: t.chat_id, title: t.title }
            }
            Some(M::SetAdmin(a)) => Method::SetAdmin { chat: a.chat_id, user: a.user_id, admin: a.admin },
            Some(M::SendMessage(s)) => {
                let media = match s.media {
                    Some(m) => {
                        if s.text.chars().count() > logic::CAPTION_MAX {
                            return Err(logic::ChatError::CaptionTooLong.into());
                        }
                        let kind = match pb::MediaKind::try_from(m.kind).map_err(|_| Error::BadRequest("media.kind: unknown".into()))? {
                            pb::MediaKind::MediaDocument => logic::MediaKind::Document,
                            pb::MediaKind::MediaPhoto => logic::MediaKind::Photo,
                            pb::MediaKind::MediaVoice => logic::MediaKind::Voice,
                        };
                        Some(InputMedia { file: m.file_id, kind, duration_secs: m.duration_secs })
                    }
                    None => {
                        logic::check_text(&s.text, logic::MESSAGE_MAX)?;
                        None
                    }
                };
                Method::SendMessage { chat: s.chat_id, random_id: s.random_id, text: s.text, reply_to: s.reply_to, media }
            }
            Some(M::EditMessage(e)) => {
                logic::check_text(&e.text, logic::MESSAGE_MAX)?;
                Method::EditMessage { chat: e.chat_id, id: e.id, text: e.text }
            }
            Some(M::DeleteMessages(d)) => {
                if d.ids.is_empty() || d.ids.len() > logic::PAGE_MAX {
                    return Err(Error::BadRequest(format!("ids: 1 to {} at once", logic::PAGE_MAX)));
                }
                Method::DeleteMessages { chat: d.chat_id, ids: d.ids }
            }
            Some(M::ReadHistory(r)) => Method::ReadHistory { chat: r.chat_id, max_id: r.max_id },
            Some(M::GetHistory(h)) => Method::GetHistory { chat: h.chat_id, before: h.before, after: h.after, limit: h.limit },
            Some(M::GetMembers(g)) => {
                let max = crate::messaging::logic::MEMBERS_PAGE_MAX;
                if g.limit > max {
                    return Err(Error::BadRequest(format!("limit: 1 to {max} (0: 100)")));
                }
                Method::GetMembers { chat: g.chat_id, after: g.after_user, limit: if g.limit == 0 { 100 } else { g.limit } }
            }
            Some(M::GetDialogs(d)) => {
                if d.limit > 100 {
                    return Err(Error::BadRequest("limit: 1 to 100 (0: 100)".into()));
                }
                Method::GetDialogs { before: (d.before_ms, d.before_chat), limit: if d.limit == 0 { 100 } else { d.limit } }
            }
            Some(M::GetDifference(d)) => {
                if d.states.len() > DIFF_CHATS_MAX {
                    return Err(Error::BadRequest(format!("states: at most {DIFF_CHATS_MAX} chats")));
                }
                // No read position: never behind, so never told.
                Method::GetDifference(d.states.into_iter().map(|s| (s.chat_id, s.pts, s.read_max_id.unwrap_or(u64::MAX))).collect())
            }
            Some(M::ForwardMessages(f)) => {
                if f.ids.is_empty() || f.ids.len() > logic::FORWARD_MAX {
                    return Err(Error::BadRequest(format!("ids: 1 to {} at once", logic::FORWARD_MAX)));
                }
                Method::Forward { chat: f.chat_id, from_chat: f.from_chat, ids: f.ids, random_id: f.random_id }
            }
            Some(M::PinMessage(p)) => Method::Pin { chat: p.chat_id, id: p.id },
            Some(M::SendReaction(r)) => Method::React { chat: r.chat_id, id: r.id, emoji: text("emoji", r.emoji, logic::REACTION_CHARS)? },
            Some(M::Search(s)) => Method::Search { chat: s.chat_id, text: text("text", s.text, 256)?, limit: s.limit, before: s.before },
            Some(M::SetTyping(t)) => Method::Typing { chat: t.chat_id },
            Some(M::DeleteForMe(d)) => {
                if d.ids.is_empty() || d.ids.len() > logic::PAGE_MAX {
                    return Err(Error::BadRequest(format!("ids: 1 to {} at once", logic::PAGE_MAX)));
                }
                Method::DeleteForMe { chat: d.chat_id, ids: d.ids }
            }
            Some(M::UploadPart(u)) => {
                crate::media::logic::check_part(u.part, u.part_size, u.bytes.len())?;
                Method::UploadPart { upload: u.upload_id, part: u.part, part_size: u.part_size, bytes: u.bytes }
            }
            Some(M::FinishUpload(f)) => Method::FinishUpload {
                upload: f.upload_id,
                parts: f.parts,
                part_size: f.part_size,
                size: f.size,
                sha256: f.sha256.as_slice().try_into().map_err(|_| Error::BadRequest("sha256: 32 bytes".into()))?,
                name: text("name", f.name, crate::media::logic::MAX_NAME)?,
                mime: text("mime", f.mime, crate::media::logic::MAX_MIME)?,
            },
            Some(M::GetFile(g)) => {
                if g.limit == 0 || g.limit > crate::media::MAX_READ {
                    return Err(Error::BadRequest(format!("limit: 1 to {}", crate::media::MAX_READ)));
                }
                let thumb = match g.thumb.as_str() {
                    "" => None,
                    "s" => Some(b's'),
                    "m" => Some(b'm'),
                    _ => return Err(Error::BadRequest("thumb: \"s\", \"m\" or empty".into())),
                };
                let via = (g.chat_id != 0 || g.message_id != 0).then_some((g.chat_id, g.message_id));
                Method::GetFile { file: g.file_id, offset: g.offset, limit: g.limit, via, thumb }
            }
            Some(M::GetReactions(g)) => {
                if g.limit > logic::MEMBERS_PAGE_MAX {
                    return Err(Error::BadRequest(format!("limit: 1 to {} (0: 100)", logic::MEMBERS_PAGE_MAX)));
                }
                Method::GetReactions { chat: g.chat_id, id: g.id, after: g.after_user, limit: if g.limit == 0 { 100 } else { g.limit } }
            }
            Some(M::GetUsers(u)) => {
                if u.ids.len() > 100 {
                    return Err(Error::BadRequest("ids: at most 100".into()));
                }
                Method::GetUsers(u.ids)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_into_methods() {
        let bad = |r: pb::Request| Method::try_from(r).unwrap_err().code();
        assert_eq!(bad(pb::Request { method: None }), courier_proto::Code::BadRequest);
        let send = |p: &str| pb::Request { method: Some(M::SendCode(pb::SendCode { phone: p.into() })) };
        assert_eq!(bad(send("12")), courier_proto::Code::PhoneNumberInvalid);
        assert_eq!(Method::try_from(send("+15550001111")).unwrap(), Method::SendCode { phone: "+15550001111".into() });
        let sign_in = |h: &str| pb::Request {
            method: Some(M::SignIn(pb::SignIn { phone: "+15550001111".into(), phone_code_hash: h.into(), code: "1".into() })),
        };
        assert_eq!(bad(sign_in("zz")), courier_proto::Code::BadRequest);
        assert!(matches!(Method::try_from(sign_in(&code_id_string(77))).unwrap(), Method::SignIn { code_id: 77, .. }));
        let hello = |p: u32, d: &str| pb::Request {
            method: Some(M::Hello(pb::Hello { protocol: p, client_version: "t".into(), device: d.into(), session_token: vec![], requests_only: false, own_sends_key: 0 })),
        };
        assert_eq!(bad(hello(2, "d")), courier_proto::Code::BadRequest);
        assert_eq!(bad(hello(1, "bad\u{7}device")), courier_proto::Code::BadRequest);
        assert_eq!(bad(hello(1, &"x".repeat(200))), courier_proto::Code::BadRequest);
        assert!(matches!(Method::try_from(hello(1, "laptop")).unwrap(), Method::Hello(Hello { token: None, .. })));
        let msg = |t: String| pb::Request { method: Some(M::SendMessage(pb::SendMessage { chat_id: 1, random_id: 2, text: t, reply_to: 0, media: None })) };
        assert_eq!(bad(msg("x".repeat(4097))), courier_proto::Code::MessageTooLong);
        assert!(matches!(Method::try_from(msg("x".repeat(4096))).unwrap(), Method::SendMessage { chat: 1, random_id: 2, .. }));
        let photo = |t: String, kind: i32| pb::Request {
            method: Some(M::SendMessage(pb::SendMessage { chat_id: 1, random_id: 2, text: t, reply_to: 0, media: Some(pb::InputMedia { file_id: 9, kind, duration_secs: 0 }) })),
        };
        assert_eq!(bad(photo("x".repeat(1025), 1)), courier_proto::Code::MediaCaptionTooLong);
        assert_eq!(bad(photo(String::new(), 7)), courier_proto::Code::BadRequest);
        let Method::SendMessage { media: Some(m), .. } = Method::try_from(photo(String::new(), 1)).unwrap() else { panic!("an empty caption is fine") };
        assert_eq!((m.file, m.kind), (9, logic::MediaKind::Photo));
        let get = |thumb: &str| pb::Request { method: Some(M::GetFile(pb::GetFile { file_id: 1, offset: 0, limit: 10, chat_id: 5, message_id: 6, thumb: thumb.into() })) };
        assert_eq!(bad(get("x")), courier_proto::Code::BadRequest);
        assert_eq!(Method::try_from(get("m")).unwrap(), Method::GetFile { file: 1, offset: 0, limit: 10, via: Some((5, 6)), thumb: Some(b'm') });
        let create = |k: i32| pb::Request { method: Some(M::CreateChat(pb::CreateChat { kind: k, title: "t".into(), members: vec![] })) };
        assert_eq!(bad(create(0)), courier_proto::Code::BadRequest);
        assert_eq!(bad(create(99)), courier_proto::Code::BadRequest);
        assert!(Method::try_from(create(2)).unwrap().needs_session());
        let members = |limit: u32| pb::Request { method: Some(M::GetMembers(pb::GetMembers { chat_id: 3, after_user: 4, limit })) };
        assert_eq!(bad(members(201)), courier_proto::Code::BadRequest);
        assert_eq!(Method::try_from(members(0)).unwrap(), Method::GetMembers { chat: 3, after: 4, limit: 100 });
        assert_eq!(Method::try_from(members(200)).unwrap(), Method::GetMembers { chat: 3, after: 4, limit: 200 });
    }
}
