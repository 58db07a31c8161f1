//! What one node tells the others about their client connections: a
//! versioned [`Notice`]. A push carries the client's own update bytes
//! (`client.proto`'s `Update`, already encoded) and its audience, never a
//! service's internal struct: changing how messaging stores an event does
//! not change what nodes say to each other.

use courier_proto::client as pb;
use courier_raft::codec;
use serde::{Deserialize, Serialize};

/// The format of an encoded [`Notice`]: the first byte. A node refuses a
/// format it does not know (the sender is newer or older); devices catch up
/// by difference. 1 was 0.1.x's notice (the raft codec's format byte in
/// front of another enum): 2, so that neither version misreads the other's.
pub const NOTICE_FORMAT: u8 = 2;

/// A session's token hash (what revocation names).
pub type TokenHash = [u8; 32];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// Close every connection of these sessions.
    Revoked(Vec<TokenHash>),
    /// An update for some connections.
    Push(Push),
    // Notices cross the wire: new ones at the end.
}

/// One update and who receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    pub audience: Audience,
    /// The update as the audience sees it (an encoded `client.Update`);
    /// `None`: nothing, unless the user is in `except`.
    pub update: Option<Vec<u8>>,
    /// Users who see something else: their own update, or nothing (`None`).
    /// A member-only event (another member's delete-for-me, a channel's
    /// joins) is an empty event for everyone but those it concerns.
    pub except: Vec<(u64, Option<Vec<u8>>)>,
    /// The client that made the change, when it applies its own changes
    /// from their replies: its connections skip the push.
    pub origin: Option<Origin>,
}

/// Who a push is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Audience {
    /// Every logged-in connection of these users.
    Users(Vec<u64>),
    /// The connections subscribed to a chat. Before the update, the
    /// connections of `join` are subscribed (they receive it); after it,
    /// those of `leave` are unsubscribed (they received it).
    Chat { chat: u64, join: Vec<u64>, leave: Vec<u64> },
}

/// Who made a change: its connections (same user, same session, same
/// `Hello.own_sends_key`) skip the push.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Origin {
    pub user: u64,
    /// Session ids count per user.
    pub session: u64,
    pub key: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoticeError {
    #[error("notice format {0} is unknown here (a newer node sent it)")]
    Format(u8),
    #[error("undecodable notice: {0}")]
    Decode(String),
}

impl Notice {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_as(NOTICE_FORMAT, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Notice, NoticeError> {
        let decode = |e: courier_raft::Error| NoticeError::Decode(e.to_string());
        match codec::split_format(bytes).map_err(decode)? {
            (NOTICE_FORMAT, body) => codec::decode_body(body).map_err(decode),
            (other, _) => Err(NoticeError::Format(other)),
        }
    }
}

/// The bytes of a client's `Update` of this kind: what a push carries.
pub fn client_update(kind: pb::update::Kind) -> Vec<u8> {
    prost::Message::encode_to_vec(&pb::Update { kind: Some(kind) })
}

impl Push {
    /// `update` for every logged-in connection of these users.
    pub fn to_users(users: Vec<u64>, update: Vec<u8>) -> Push {
        Push { audience: Audience::Users(users), update: Some(update), except: Vec::new(), origin: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Notice> {
        vec![
            Notice::Revoked(vec![[7; 32], [9; 32]]),
            Notice::Push(Push::to_users(vec![1, 2], vec![8, 1])),
            Notice::Push(Push {
                audience: Audience::Chat { chat: 1 << 40, join: vec![5], leave: vec![6, 7] },
                update: None,
                except: vec![(5, Some(vec![1, 2, 3])), (6, None)],
                origin: Some(Origin { user: 5, session: 2, key: 99 }),
            }),
        ]
    }

    #[test]
    fn notices_round_trip_with_their_format_first() {
        for n in samples() {
            let bytes = n.encode();
            assert_eq!(bytes[0], NOTICE_FORMAT);
            assert_eq!(Notice::decode(&bytes), Ok(n));
        }
    }

    #[test]
    fn the_encoding_of_a_notice_is_fixed() {
        // Bytes other nodes read: a change here is a new format.
        let n = Notice::Push(Push { audience: Audience::Users(vec![3]), update: Some(vec![0xAB]), except: vec![(4, None)], origin: None });
        assert_eq!(n.encode(), vec![2, 1, 0, 1, 3, 1, 1, 0xAB, 1, 4, 0, 0]);
    }

    #[test]
    fn unknown_formats_and_garbage_are_refused() {
        let mut bytes = samples()[0].encode();
        bytes[0] = 3;
        assert_eq!(Notice::decode(&bytes), Err(NoticeError::Format(3)));
        // A 0.1.x notice: the raft codec's format byte, then its own enum.
        assert_eq!(Notice::decode(&courier_raft::codec::encode(&(1u8, 7u64))), Err(NoticeError::Format(1)));
        assert!(matches!(Notice::decode(&[]), Err(NoticeError::Decode(_))));
        assert!(matches!(Notice::decode(&[NOTICE_FORMAT, 9, 9]), Err(NoticeError::Decode(_))));
        let cut = samples()[2].encode();
        assert!(Notice::decode(&cut[..cut.len() - 3]).is_err());
    }
}
