//! Row keys (`m/…`, ids big-endian: see the module's docs), and the reads
//! of rows both commands and queries make.

use courier_raft::logic::StateRead;

use super::types::{Chat, ChatError, Member};
use crate::error::Result;
use crate::state::{get, key};

pub(super) fn chat_key(chat: u64) -> Vec<u8> {
    key(b"m/c/", &[chat])
}
/// Who blocked the other user of a private chat (`Vec<u64>`, at most two).
pub(super) fn blockers_key(chat: u64) -> Vec<u8> {
    key(b"m/blk/", &[chat])
}

/// Whether someone other than `user` blocked in private chat `chat`.
pub(super) fn blocked_against(view: &dyn StateRead, chat: u64, user: u64) -> Result<bool> {
    Ok(get::<Vec<u64>>(view, &blockers_key(chat))?.unwrap_or_default().iter().any(|b| *b != user))
}

pub(super) fn member_key(chat: u64, user: u64) -> Vec<u8> {
    key(b"m/mem/", &[chat, user])
}
/// The prefix of a chat's member rows ([`member_key`] without the user).
pub(super) fn members_prefix(chat: u64) -> Vec<u8> {
    key(b"m/mem/", &[chat])
}
pub(super) fn msg_key(chat: u64, id: u64) -> Vec<u8> {
    key(b"m/msg/", &[chat, id])
}
pub(super) fn event_key(chat: u64, pts: u64) -> Vec<u8> {
    key(b"m/ev/", &[chat, pts])
}
pub(super) fn rid_key(chat: u64, user: u64, random_id: u64) -> Vec<u8> {
    key(b"m/rid/", &[chat, user, random_id])
}
pub(super) fn hidden_key(chat: u64, user: u64) -> Vec<u8> {
    key(b"m/hide/", &[chat, user])
}
/// A user's chat list as one value (before chat lists were rows): read,
/// and moved to rows by the user's next add or removal.
pub(super) fn user_chats_key(user: u64) -> Vec<u8> {
    key(b"m/uchats/", &[user])
}
/// A chat in the user's list: one row per chat, so an add writes one small row.
pub(super) fn user_chat_key(user: u64, chat: u64) -> Vec<u8> {
    key(b"m/uchat/", &[user, chat])
}
/// The prefix of a user's chat rows ([`user_chat_key`] without the chat).
pub(super) fn user_chats_prefix(user: u64) -> Vec<u8> {
    key(b"m/uchat/", &[user])
}
/// How many chats the user's list holds (its rows).
pub(super) fn user_chats_count_key(user: u64) -> Vec<u8> {
    key(b"m/uchatn/", &[user])
}
/// How many subscribers read a channel post.
pub(super) fn views_key(chat: u64, id: u64) -> Vec<u8> {
    key(b"m/views/", &[chat, id])
}
/// A user's reaction to a message (the emoji).
pub(super) fn reaction_key(chat: u64, id: u64, user: u64) -> Vec<u8> {
    key(b"m/react/", &[chat, id, user])
}

/// The chat and the caller's membership, or `NotAMember` (for a chat that
/// does not exist too).
pub(super) fn membership(view: &dyn StateRead, chat: u64, user: u64) -> Result<std::result::Result<(Chat, Member), ChatError>> {
    let Some(c) = get::<Chat>(view, &chat_key(chat))? else { return Ok(Err(ChatError::NotAMember)) };
    Ok(match get::<Member>(view, &member_key(chat, user))? {
        Some(m) => Ok((c, m)),
        None => Err(ChatError::NotAMember),
    })
}
