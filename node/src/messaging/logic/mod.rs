//! Chats as replicated ordered logs: the pure decisions. A chat's record, its
//! members, its messages and its event log live in the data group its id
//! names (the low 16 bits), so a send is one Raft command in one group.
//!
//! * Message ids are 1, 2, 3, … per chat, never reused; a deleted message
//!   stays as a tombstone (G2).
//! * Every change (new message, edit, deletion, read position, membership,
//!   title) is an event with the chat's next `pts`; a device syncs a chat by
//!   asking for the events after the `pts` it has (G4). A post to a channel
//!   with 100,000 subscribers writes one message and one event, not 100,000.
//! * A send carries the sender's `random_id`; the same (chat, sender,
//!   random_id) returns the first message (G3).
//! * The user's chat list lives in the user's own group (`UserChats`); it is a
//!   superset hint (written before a join, removed after a leave), and the
//!   chat's member row is the authority.
//!
//! Keys (`m/…`, ids big-endian): `m/c/<chat>` chat, `m/mem/<chat><user>`
//! member, `m/msg/<chat><id>` message, `m/ev/<chat><pts>` event,
//! `m/rid/<chat><user><random_id>` dedup, `m/uchat/<user><chat>` a chat in
//! the user's list (`m/uchatn/<user>` their count; `m/uchats/<user>`, one
//! value with the whole list, is the format before rows: moved by the next
//! add or removal).
//!
//! By concern: `types.rs` (records, commands, queries, answers, limits),
//! `cmd.rs` and `ask.rs` (each command's and query's struct),
//! `keys.rs` (row keys and shared reads), `apply.rs` (commands),
//! `query.rs` (queries and their byte budgets), `visibility.rs` (what each
//! member sees); each with its tests.

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}

mod apply;
pub mod ask;
pub mod cmd;
mod keys;
mod query;
#[cfg(test)]
mod testkit;
mod types;
mod visibility;

pub use apply::{apply, check_text};
pub use query::{Budget, diff_size, query};
pub use types::*;
pub use visibility::{event_for, event_in};
