//! A device's local copy of its chats, kept by live events and by
//! `get_difference` after time away. Each chat's events carry consecutive
//! `pts`: an event already seen is skipped, an event after a gap means "sync
//! first" (the gap is filled from the difference, never guessed).

use std::collections::{BTreeMap, BTreeSet};

use courier_proto::client as pb;
use pb::chat_event::Kind;

use crate::{Client, Result};

/// One chat as this device knows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatView {
    pub chat: pb::Chat,
    /// The pts of the last event applied.
    pub pts: u64,
    /// Messages by id; deleted ones are tombstones (`deleted`, empty text).
    pub messages: BTreeMap<u64, pb::Message>,
    /// Read position of each member who read something.
    pub reads: BTreeMap<u64, u64>,
    pub members: BTreeSet<u64>,
    /// Messages deleted for this user only: gone from `messages`, and later
    /// edits of them are ignored.
    pub hidden: BTreeSet<u64>,
}

/// What applying one live event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Seen before (a repeat after a reconnect).
    Duplicate,
    /// An event is missing before this one: call [`SyncState::sync`].
    Gap,
}

impl ChatView {
    fn apply(&mut self, e: &pb::ChatEvent) -> Applied {
        if e.pts <= self.pts {
            return Applied::Duplicate;
        }
        if e.pts != self.pts + 1 {
            return Applied::Gap;
        }
        match &e.kind {
            Some(Kind::NewMessage(m)) | Some(Kind::Edited(m)) | Some(Kind::Reactions(m)) if !self.hidden.contains(&m.id) => {
                self.messages.insert(m.id, m.clone());
                self.chat.last_id = self.chat.last_id.max(m.id);
            }
            Some(Kind::Deleted(ids)) => {
                for id in &ids.ids {
                    if let Some(m) = self.messages.get_mut(id) {
                        m.deleted = true;
                        m.text.clear();
                    }
                }
            }
            Some(Kind::Read(r)) => {
                let at = self.reads.entry(r.user).or_default();
                *at = (*at).max(r.max_id);
            }
            Some(Kind::Joined(ids)) => self.members.extend(ids.ids.iter().copied()),
            Some(Kind::Left(u)) => {
                self.members.remove(u);
            }
            Some(Kind::Hidden(ids)) => {
                for id in &ids.ids {
                    self.messages.remove(id);
                    self.hidden.insert(*id);
                }
            }
            Some(Kind::NewMessage(_)) | Some(Kind::Edited(_)) | Some(Kind::Reactions(_)) => {}
            Some(Kind::Title(t)) => self.chat.title = t.clone(),
            Some(Kind::Pinned(id)) => self.chat.pinned = *id,
            Some(Kind::Role(_)) | None => {}
        }
        self.pts = e.pts;
        self.chat.pts = e.pts;
        Applied::Applied
    }

    /// The messages as a reader sees them: (id, from, text, deleted), by id.
    pub fn lines(&self) -> Vec<(u64, u64, String, bool)> {
        self.messages.values().map(|m| (m.id, m.from, m.text.clone(), m.deleted)).collect()
    }
}

/// Every chat this device knows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncState {
    pub chats: BTreeMap<u64, ChatView>,
}

impl SyncState {
    /// The (chat, pts) pairs to ask the difference for.
    pub fn states(&self) -> Vec<(u64, u64)> {
        self.chats.iter().map(|(id, v)| (*id, v.pts)).collect()
    }

    /// Applies a live event (a chat not seen yet starts empty at pts 0).
    pub fn on_event(&mut self, e: &pb::ChatEvent) -> Applied {
        let view = self.chats.entry(e.chat_id).or_insert_with(|| ChatView { chat: pb::Chat { id: e.chat_id, ..Default::default() }, ..Default::default() });
        view.apply(e)
    }

    /// Applies one chat's part of a difference; returns whether more remains.
    pub fn on_difference(&mut self, d: &pb::ChatDifference) -> bool {
        let Some(chat) = &d.chat else { return false };
        if d.gone {
            self.chats.remove(&chat.id);
            return false;
        }
        let view = self.chats.entry(chat.id).or_default();
        if d.too_long {
            *view = ChatView { chat: chat.clone(), pts: chat.pts, ..Default::default() };
            for m in &d.messages {
                view.messages.insert(m.id, m.clone());
            }
            return false;
        }
        view.chat = pb::Chat { pts: view.pts, ..chat.clone() };
        for e in &d.events {
            if view.apply(e) == Applied::Gap {
                // The server answers consecutive events; a gap here is a bug.
                tracing::warn!(chat = chat.id, pts = e.pts, have = view.pts, "difference skipped events");
                return false;
            }
        }
        d.more
    }

    /// Brings every chat up to date (and finds chats joined meanwhile),
    /// asking again while a chat has more.
    pub async fn sync(&mut self, client: &Client) -> Result<()> {
        // Bounded: each round moves every chat with more by a full slice.
        for _ in 0..10_000 {
            let diffs = client.difference(self.states()).await?;
            let mut more = false;
            for d in &diffs {
                more |= self.on_difference(d);
            }
            if !more {
                return Ok(());
            }
        }
        Err(crate::Error::Protocol("the difference did not end".into()))
    }
}
