//! The methods: each checked request (`Method`) handed to the service that
//! owns it, and its answer in the client's terms. No business rule lives
//! here: what a request may do is the services' to decide.

use std::sync::Arc;
use std::time::Instant;

use courier_proto::client as pb;
use courier_proto::client::response::Result as R;

use super::core::{Authed, Client, Door};
use super::model::{self, Method};
use crate::auth::{AuthError, Caller, NewAuthorization, Revoke};
use crate::error::{Error, Result};
use crate::messaging::model as chat_model;
use crate::push::Origin;

impl Door {
    pub(super) async fn handle(&self, client: &Arc<Client>, m: Method) -> Result<R> {
        // Who asks: for the login methods only (not built for every request).
        let caller = || Caller { addr: client.remote(), device: client.device.clone(), app_version: client.app_version.clone() };
        match m {
            Method::Hello(_) => Err(Error::BadRequest("hello comes once, on the first stream".into())),
            Method::Ping(nonce) => Ok(R::Pong(pb::Pong { nonce })),
            Method::SendCode { phone } => {
                let sent = self.auth.send_code(&phone, &caller()).await?;
                Ok(R::SentCode(pb::SentCode {
                    phone_code_hash: model::code_id_string(sent.code_id),
                    timeout_secs: sent.ttl_secs,
                    delivery: sent.delivery.into(),
                }))
            }
            // One account per connection (as one auth key per connection in
            // Telegram): refused before anything is proposed.
            Method::SignIn { .. } | Method::SignUp { .. } if !client.begin_sign_in() => Err(AuthError::AlreadyLoggedIn.into()),
            Method::SignIn { phone, code_id, code } => {
                let r = self.auth.sign_in(&phone, code_id, &code, &caller()).await.map(|a| self.logged_in(client, a));
                client.end_sign_in();
                r
            }
            Method::SignUp { phone, code_id, first_name, last_name } => {
                let r = self.auth.sign_up(&phone, code_id, &first_name, &last_name, &caller()).await.map(|a| self.logged_in(client, a));
                client.end_sign_in();
                r
            }
            m => {
                let me = self.session(client).await?;
                match m {
                    Method::GetSelf => Ok(R::User(user_to_proto(&me.user))),
                    Method::GetRoutes => {
                        let raft = self.node.raft()?;
                        let routes = raft
                            .leader_client_addrs()
                            .into_iter()
                            .map(|(group, leader)| {
                                let (node_id, addr) = leader.unwrap_or_default();
                                pb::Route { group, addr, node_id }
                            })
                            .collect();
                        Ok(R::Routes(pb::Routes { group_mask: crate::messaging::logic::CHAT_GROUP_MASK, routes }))
                    }
                    Method::ResolvePhone { phone } => {
                        let now_ms = self.auth.clock().now_ms();
                        let (budget, live) = (self.node.config().limits.resolve_phone_per_minute, self.node.live_nodes());
                        if let Err(secs) = self.resolve_limit.lock().expect("limiter lock").check_share(&me.user.id, now_ms, budget, live) {
                            return Err(AuthError::FloodWait { secs }.into());
                        }
                        match self.auth.user_by_phone(&phone).await? {
                            Some(u) => {
                                client.resolved(u.id);
                                // The caller gave this very number: it may be shown.
                                Ok(R::User(user_to_proto(&u)))
                            }
                            None => Err(Error::BadRequest("no account has this phone number".into())),
                        }
                    }
                    Method::GetUsers(ids) => {
                        // Accounts this connection resolved need no chat lists read.
                        let (mut visible, rest): (Vec<u64>, Vec<u64>) = ids.iter().partition(|id| client.has_resolved(**id));
                        visible.sort_unstable();
                        visible.dedup();
                        visible.extend(self.chats.visible_users(me.user.id, &rest).await?);
                        let found = futures::future::join_all(visible.iter().map(|id| self.auth.user_by_id(*id))).await;
                        let (online, seen) = self.pushes.presence(&visible).await;
                        let mut users = Vec::new();
                        for u in found {
                            users.extend(u?.map(|u| pb::User {
                                online: online.contains(&u.id),
                                last_seen_ms: seen.get(&u.id).copied().unwrap_or(0),
                                // A phone number is shown to its owner only.
                                phone: if u.id == me.user.id { u.phone.clone() } else { String::new() },
                                ..user_to_proto(&u)
                            }));
                        }
                        Ok(R::Users(pb::Users { users }))
                    }
                    Method::GetSessions => {
                        let mut list = self.auth.sessions(me.group, me.hash).await?;
                        // The current session first, then the most recently
                        // active, as many as fit an answer (terminating the
                        // others reaches every one).
                        list.sort_by_key(|s| (s.id != me.session_id, std::cmp::Reverse(s.last_active_ms)));
                        let mut budget = crate::messaging::logic::Budget::new(2 * crate::messaging::logic::REPLY_BYTES);
                        list.retain(|s| budget.take(64 + s.device.len() + s.app_version.len() + s.address.len()));
                        Ok(R::Sessions(pb::Sessions {
                            sessions: list
                                .into_iter()
                                .map(|s| pb::Session {
                                    id: s.id,
                                    current: s.id == me.session_id,
                                    device: s.device,
                                    app_version: s.app_version,
                                    node_id: s.node_id,
                                    address: s.address,
                                    created_ms: s.created_ms,
                                    last_active_ms: s.last_active_ms,
                                })
                                .collect(),
                        }))
                    }
                    Method::TerminateSession(id) if id == me.session_id => self.log_out(client, &me).await,
                    Method::TerminateSession(id) => {
                        self.auth.revoke(me.group, me.hash, Revoke::One(id)).await?;
                        Ok(R::Done(pb::Done {}))
                    }
                    Method::TerminateOthers => {
                        self.auth.revoke(me.group, me.hash, Revoke::Others).await?;
                        Ok(R::Done(pb::Done {}))
                    }
                    Method::LogOut => self.log_out(client, &me).await,
                    Method::UploadPart { upload, part, part_size, bytes } => {
                        self.media.upload_part(me.user.id, upload, part, part_size, bytes).await?;
                        Ok(R::Done(pb::Done {}))
                    }
                    Method::FinishUpload { upload, parts, part_size, size, sha256, name, mime } => {
                        let f = self.media.finish(me.user.id, upload, parts, part_size, size, sha256, name, mime).await?;
                        Ok(R::File(file_to_proto(&f)))
                    }
                    Method::GetFile { file, offset, limit, via, thumb } => {
                        let (f, bytes) = self.chats.read_file(me.user.id, file, via, thumb, offset, limit).await?;
                        Ok(R::FileBytes(pb::FileBytes { file: Some(file_to_proto(&f)), offset, bytes }))
                    }
                    Method::SendMessage { chat, random_id, text, reply_to, media: Some(m) } => {
                        let origin = sender(client, &me);
                        Ok(sent(chat, self.chats.send_media(me.user.id, chat, random_id, text, reply_to, m, origin).await?, origin))
                    }
                    Method::SendMessage { chat, random_id, text, reply_to, media: None } => {
                        let origin = sender(client, &me);
                        Ok(sent(chat, self.chats.send(me.user.id, chat, random_id, text, reply_to, origin).await?, origin))
                    }
                    m => self.chat_method(me.user.id, m).await,
                }
            }
        }
    }

    /// The messaging methods, for user `me`.
    async fn chat_method(&self, me: u64, m: Method) -> Result<R> {
        let c = &self.chats;
        let chat = |c: crate::messaging::Chat| Ok(R::Chat(chat_model::chat(&c)));
        match m {
            Method::CreateChat { kind, title, members } => chat(c.create(me, kind, title, members).await?),
            Method::Invite { chat: id, users } => chat(c.invite(me, id, users).await?),
            Method::RemoveMember { chat: id, user } => chat(c.remove(me, id, user).await?),
            Method::SetTitle { chat: id, title } => chat(c.set_title(me, id, title).await?),
            Method::SetAdmin { chat: id, user, admin } => chat(c.set_admin(me, id, user, admin).await?),
            Method::EditMessage { chat: id, id: msg, text } => Ok(R::Message(chat_model::message(id, &c.edit(me, id, msg, text).await?))),
            Method::DeleteMessages { chat: id, ids } => {
                c.delete(me, id, ids).await?;
                Ok(R::Done(pb::Done {}))
            }
            Method::DeleteForMe { chat: id, ids } => {
                c.delete_for_me(me, id, ids).await?;
                Ok(R::Done(pb::Done {}))
            }
            Method::ReadHistory { chat: id, max_id } => {
                c.read_history(me, id, max_id).await?;
                Ok(R::Done(pb::Done {}))
            }
            Method::GetHistory { chat: id, before, after, limit } => {
                let (list, more) = c.history(me, id, before, after, limit).await?;
                Ok(R::Messages(pb::Messages { messages: list.iter().map(|m| chat_model::message(id, m)).collect(), more }))
            }
            Method::GetMembers { chat: id, after, limit } => {
                let list = c.members(me, id, after, limit).await?;
                Ok(R::Members(pb::Members { members: list.iter().map(|(u, m)| chat_model::member(*u, m)).collect() }))
            }
            Method::Forward { chat: id, from_chat, ids, random_id } => Ok(R::Message(chat_model::message(id, &c.forward(me, id, from_chat, ids, random_id).await?))),
            Method::Pin { chat: id, id: msg } => chat(c.pin(me, id, msg).await?),
            Method::React { chat: id, id: msg, emoji } => Ok(R::Message(chat_model::message(id, &c.react(me, id, msg, emoji).await?))),
            Method::Search { chat: id, text, limit, before } => {
                let (list, more) = c.search(me, id, text, limit, before).await?;
                Ok(R::Messages(pb::Messages { messages: list.iter().map(|m| chat_model::message(id, m)).collect(), more }))
            }
            Method::GetReactions { chat: id, id: msg, after, limit } => {
                let list = c.reactors(me, id, msg, after, limit).await?;
                Ok(R::Reactors(pb::Reactors { reactors: list.into_iter().map(|(user_id, emoji)| pb::Reactor { user_id, emoji }).collect() }))
            }
            Method::Typing { chat: id } => {
                c.typing(me, id).await?;
                Ok(R::Done(pb::Done {}))
            }
            Method::BlockUser { user, blocked } => {
                c.block(me, user, blocked).await?;
                Ok(R::Done(pb::Done {}))
            }
            Method::GetDialogs { before, limit } => {
                let (list, more) = c.dialogs(me, before, limit as usize).await?;
                Ok(R::Dialogs(pb::Dialogs { dialogs: list.iter().map(chat_model::dialog).collect(), more }))
            }
            Method::GetDifference(states) => {
                let (list, more) = c.difference(me, states).await?;
                Ok(R::Difference(pb::Difference { chats: chat_model::differences(&list), more }))
            }
            other => Err(Error::BadRequest(format!("unexpected method {}", other.name()))),
        }
    }

    /// Ends this connection's session; the connection stays open, logged out.
    async fn log_out(&self, client: &Arc<Client>, me: &Authed) -> Result<R> {
        self.log_out_client(client);
        self.auth.revoke(me.group, me.hash, Revoke::Current).await?;
        Ok(R::Done(pb::Done {}))
    }

    /// Ends a sign-in begun with [`Client::begin_sign_in`]: the connection
    /// is logged in with the new session.
    fn logged_in(&self, client: &Arc<Client>, a: NewAuthorization) -> R {
        let group = crate::auth::token::token_group(&a.token, u32::MAX).unwrap_or(0);
        let authed = Authed { group, hash: crate::auth::token::token_hash(&a.token), user: a.user.clone(), session_id: a.session_id, checked_at: Instant::now() };
        if self.accept_check(client, authed) {
            self.start_push(client);
        }
        R::Authorization(pb::Authorization { user: Some(user_to_proto(&a.user)), session_token: a.token, session_id: a.session_id })
    }
}

/// The client behind a send, when it applies its own sends from the reply.
fn sender(client: &Client, me: &Authed) -> Option<Origin> {
    (client.conn.own_sends_key != 0).then_some(Origin { user: me.user.id, session: me.session_id, key: client.conn.own_sends_key })
}

/// A send's answer: with its events for a client that applies them itself
/// (it is not pushed them), else the message alone.
fn sent(chat: u64, (m, events): (crate::messaging::Message, Vec<crate::messaging::Event>), origin: Option<Origin>) -> R {
    if origin.is_none() {
        return R::Message(chat_model::message(chat, &m));
    }
    let events = events.iter().map(|e| chat_model::event(chat, e, std::slice::from_ref(&m))).collect();
    R::Sent(pb::Sent { message: Some(chat_model::message(chat, &m)), events })
}

pub(super) fn user_to_proto(u: &crate::auth::User) -> pb::User {
    pb::User { id: u.id, phone: u.phone.clone(), first_name: u.first_name.clone(), last_name: u.last_name.clone(), ..Default::default() }
}

fn file_to_proto(f: &crate::media::File) -> pb::File {
    pb::File {
        id: f.id,
        size: f.size,
        sha256: f.sha256.to_vec(),
        name: f.name.clone(),
        mime: f.mime.clone(),
        owner: f.owner,
        date_ms: f.created_ms,
        thumbs: chat_model::thumbs(&f.thumbs),
    }
}
