//! A device's local copy of its chats, kept by live events and by
//! `get_difference` after time away. Each chat's events carry consecutive
//! `pts`: an event already seen is skipped, and an event after a gap is held
//! a moment (a send's own events come in its reply and may overtake other
//! members' earlier events still on the push stream): when the missing
//! events arrive, the held ones apply after them; when they have not come
//! within [`GAP_WAIT`], the device syncs, and the gap is filled from the
//! difference, never guessed. Telegram's clients wait the same way before
//! `getDifference`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use courier_proto::client as pb;
use pb::chat_event::Kind;

use crate::{Client, Event, Result};

/// How long events past a gap wait for the missing ones before a sync.
pub const GAP_WAIT: Duration = Duration::from_millis(500);
/// Events past a gap one chat holds; one more asks for a sync at once.
pub const HELD_MAX: usize = 256;

/// One chat as this device knows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatView {
    pub chat: pb::Chat,
    /// The pts of the last event applied.
    pub pts: u64,
    /// Messages by id; deleted ones are tombstones (`deleted`, empty text).
    pub messages: BTreeMap<u64, pb::Message>,
    /// Read position of each member who read something (in a channel,
    /// reads are no events: see `read_max_id`).
    pub reads: BTreeMap<u64, u64>,
    /// This user's own read position where the server said it: in a
    /// channel (pushed, and in the difference) and with `too_long`.
    pub read_max_id: u64,
    pub members: BTreeSet<u64>,
    /// Messages deleted for this user only: gone from `messages`, and later
    /// edits of them are ignored.
    pub hidden: BTreeSet<u64>,
    /// Events past a gap, by pts, and since when the first of them waits.
    held: BTreeMap<u64, pb::ChatEvent>,
    gap_since: Option<Instant>,
}

/// What one step of [`SyncState::follow`] saw.
#[derive(Debug)]
pub enum Followed {
    /// A chat event, applied (or held past a gap, or a repeat skipped);
    /// `synced`: it showed a gap that could not be held, and the device synced.
    ChatEvent { event: pb::ChatEvent, synced: bool },
    /// Any other event (connection news, typing, …).
    Other(Event),
    /// Events missing before held ones did not come in time: the device synced.
    Synced,
    /// Nothing came for the idle time, and nothing is held.
    Quiet,
    /// The event stream ended.
    Closed,
}

/// What applying one live event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Seen before (a repeat after a reconnect).
    Duplicate,
    /// An event is missing before this one: call [`SyncState::sync`].
    Gap,
    /// Past a gap: held until the missing events arrive (it is applied
    /// after them), or until [`SyncState::sync_due`] says to sync.
    Held,
}

impl ChatView {
    /// A live event: applied in pts order, held past a gap.
    fn on_event(&mut self, e: &pb::ChatEvent, now: Instant) -> Applied {
        match self.apply(e) {
            Applied::Gap if self.held.len() < HELD_MAX => {
                self.held.insert(e.pts, e.clone());
                self.gap_since.get_or_insert(now);
                Applied::Held
            }
            applied => {
                if applied == Applied::Applied {
                    self.apply_held();
                }
                applied
            }
        }
    }

    /// Applies the held events that now follow on, drops the ones already
    /// covered, and ends the wait once none is held.
    fn apply_held(&mut self) {
        while let Some(e) = self.held.first_entry().map(|e| e.remove()) {
            if self.apply(&e) == Applied::Gap {
                self.held.insert(e.pts, e);
                return;
            }
        }
        self.gap_since = None;
    }

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

    /// [`SyncState::states`] with the read positions this device knows.
    pub fn chat_states(&self) -> Vec<pb::ChatState> {
        self.chats.iter().map(|(id, v)| pb::ChatState { chat_id: *id, pts: v.pts, read_max_id: Some(v.read_max_id) }).collect()
    }

    /// The user's read position in a channel moved (another device read).
    pub fn on_own_read(&mut self, r: &pb::ReadPosition) {
        if let Some(view) = self.chats.get_mut(&r.chat_id) {
            view.read_max_id = view.read_max_id.max(r.max_id);
        }
    }

    /// Applies a live event (a chat not seen yet starts empty at pts 0);
    /// one past a gap is held (see the module's note).
    pub fn on_event(&mut self, e: &pb::ChatEvent) -> Applied {
        self.on_event_at(e, Instant::now())
    }

    /// [`SyncState::on_event`] at `now`.
    pub fn on_event_at(&mut self, e: &pb::ChatEvent, now: Instant) -> Applied {
        let view = self.chats.entry(e.chat_id).or_insert_with(|| ChatView { chat: pb::Chat { id: e.chat_id, ..Default::default() }, ..Default::default() });
        view.on_event(e, now)
    }

    /// When a held gap will be due for a sync (the earliest of any chat), if one is held.
    pub fn gap_deadline(&self) -> Option<Instant> {
        self.chats.values().filter_map(|v| v.gap_since).min().map(|t| t + GAP_WAIT)
    }

    /// Whether a chat's missing events waited [`GAP_WAIT`] in vain by `now`:
    /// time to [`SyncState::sync`].
    pub fn sync_due(&self, now: Instant) -> bool {
        self.gap_deadline().is_some_and(|t| now >= t)
    }

    /// How long a reader of live events may wait for the next one from
    /// `now`: until a held gap is due, and at most `idle`.
    pub fn wait_from(&self, now: Instant, idle: Duration) -> Duration {
        self.gap_deadline().map_or(idle, |t| t.saturating_duration_since(now).min(idle))
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
            *view = ChatView { chat: chat.clone(), pts: chat.pts, read_max_id: d.read_max_id, ..Default::default() };
            for m in &d.messages {
                view.messages.insert(m.id, m.clone());
            }
            return false;
        }
        view.chat = pb::Chat { pts: view.pts, ..chat.clone() };
        view.read_max_id = view.read_max_id.max(d.read_max_id);
        for e in &d.events {
            if view.apply(e) == Applied::Gap {
                // The server answers consecutive events; a gap here is a bug.
                tracing::warn!(chat = chat.id, pts = e.pts, have = view.pts, "difference skipped events");
                return false;
            }
        }
        // Held events the difference covered are dropped; later ones follow on.
        view.apply_held();
        if !d.more && !view.held.is_empty() {
            // Every held event was committed before the sync began, so a
            // whole difference covers it: one past it is a server bug.
            tracing::warn!(chat = chat.id, held = view.held.len(), have = view.pts, "difference ended before events already received");
            view.held.clear();
            view.gap_since = None;
        }
        d.more
    }

    /// One step of following a device's live events: waits for the next
    /// (at most `idle`; a held gap's wait ends sooner), applies it, and
    /// syncs when a gap needs it. Call it in a loop.
    pub async fn follow(&mut self, client: &Client, events: &mut tokio::sync::mpsc::Receiver<Event>, idle: Duration) -> Result<Followed> {
        loop {
            if self.sync_due(Instant::now()) {
                self.sync(client).await?;
                return Ok(Followed::Synced);
            }
            return match tokio::time::timeout(self.wait_from(Instant::now(), idle), events.recv()).await {
                Ok(Some(Event::Update(pb::Update { kind: Some(pb::update::Kind::ChatEvent(event)) }))) => {
                    let synced = self.on_event(&event) == Applied::Gap;
                    if synced {
                        self.sync(client).await?;
                    }
                    Ok(Followed::ChatEvent { event, synced })
                }
                // Back on a node (after its own node died, or a reconnect):
                // what was sent meanwhile comes by difference, once.
                Ok(Some(Event::Connected { authorized: true, .. })) => {
                    self.sync(client).await?;
                    Ok(Followed::Synced)
                }
                Ok(Some(other)) => {
                    if let Event::Update(pb::Update { kind: Some(pb::update::Kind::OwnRead(r)) }) = &other {
                        self.on_own_read(r);
                    }
                    Ok(Followed::Other(other))
                }
                Ok(None) => Ok(Followed::Closed),
                // A held gap's wait ended: the top of the loop syncs once it is due.
                Err(_) if self.gap_deadline().is_some() => continue,
                Err(_) => Ok(Followed::Quiet),
            };
        }
    }

    /// Brings every chat up to date (and finds chats joined meanwhile),
    /// asking again while a chat has more.
    pub async fn sync(&mut self, client: &Client) -> Result<()> {
        // Bounded: each round moves every chat with more by a full slice.
        for _ in 0..10_000 {
            let diff = client.difference_of(self.chat_states()).await?;
            // Chats left out of a full answer come in the next one.
            let mut more = diff.more;
            for d in &diff.chats {
                more |= self.on_difference(d);
            }
            if !more {
                return Ok(());
            }
        }
        Err(crate::Error::Protocol("the difference did not end".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: u64 = 7;

    fn new_message(pts: u64, id: u64) -> pb::ChatEvent {
        let m = pb::Message { chat_id: CHAT, id, text: format!("m{id}"), ..Default::default() };
        pb::ChatEvent { chat_id: CHAT, pts, date_ms: 0, kind: Some(Kind::NewMessage(m)) }
    }

    fn ids(s: &SyncState) -> Vec<u64> {
        s.chats[&CHAT].messages.keys().copied().collect()
    }

    #[test]
    fn an_event_past_a_gap_waits_for_the_missing_one_and_then_follows_it() {
        let t0 = Instant::now();
        let mut s = SyncState::default();
        assert_eq!(s.on_event_at(&new_message(1, 1), t0), Applied::Applied);
        // The device's own send (pts 3) came in its reply before pts 2 came pushed.
        assert_eq!(s.on_event_at(&new_message(3, 3), t0), Applied::Held);
        assert_eq!(s.on_event_at(&new_message(3, 3), t0), Applied::Held, "a repeat is held once");
        assert_eq!(ids(&s), [1]);
        assert!(!s.sync_due(t0 + GAP_WAIT - Duration::from_millis(1)));
        assert!(s.sync_due(t0 + GAP_WAIT), "missing for {GAP_WAIT:?}: sync");
        assert_eq!(s.wait_from(t0 + Duration::from_millis(100), Duration::from_secs(2)), GAP_WAIT - Duration::from_millis(100), "a reader waits no longer than the gap");
        assert_eq!(s.on_event_at(&new_message(2, 2), t0 + Duration::from_millis(20)), Applied::Applied);
        assert_eq!(ids(&s), [1, 2, 3], "the held event applied after the missing one");
        assert_eq!(s.chats[&CHAT].pts, 3);
        assert_eq!((s.gap_deadline(), s.sync_due(t0 + GAP_WAIT)), (None, false), "nothing left to wait for");
        assert_eq!(s.wait_from(t0, Duration::from_secs(2)), Duration::from_secs(2));
        assert_eq!(s.on_event_at(&new_message(3, 3), t0), Applied::Duplicate);
    }

    #[test]
    fn a_difference_fills_the_gap_and_held_events_past_it_follow() {
        let t0 = Instant::now();
        let mut s = SyncState::default();
        s.on_event_at(&new_message(1, 1), t0);
        for pts in [3, 4, 6] {
            assert_eq!(s.on_event_at(&new_message(pts, pts), t0), Applied::Held);
        }
        let chat = pb::Chat { id: CHAT, pts: 5, last_id: 5, ..Default::default() };
        let d = pb::ChatDifference { chat: Some(chat), events: (2..=5).map(|p| new_message(p, p)).collect(), ..Default::default() };
        assert!(!s.on_difference(&d));
        assert_eq!(ids(&s), [1, 2, 3, 4, 5, 6], "held 3 and 4 came again in the difference; 6 followed it");
        assert_eq!(s.chats[&CHAT].pts, 6);
        assert_eq!(s.gap_deadline(), None);
    }

    #[test]
    fn too_many_held_events_ask_for_a_sync_at_once() {
        let t0 = Instant::now();
        let mut s = SyncState::default();
        s.on_event_at(&new_message(1, 1), t0);
        for pts in 3..3 + HELD_MAX as u64 {
            assert_eq!(s.on_event_at(&new_message(pts, pts), t0), Applied::Held);
        }
        assert_eq!(s.on_event_at(&new_message(1000, 1000), t0), Applied::Gap);
        // A chat reset by `too_long` forgets what it held.
        let chat = pb::Chat { id: CHAT, pts: 2000, ..Default::default() };
        s.on_difference(&pb::ChatDifference { chat: Some(chat), too_long: true, ..Default::default() });
        assert_eq!(s.gap_deadline(), None);
    }
}
