//! Session tokens: 256 random bits behind a version byte and the data group
//! that holds the session, so any node finds the session without a lookup.
//! The cluster stores only the SHA-256 of a token.

use sha2::{Digest, Sha256};

use super::logic::TokenHash;

pub const TOKEN_VERSION: u8 = 1;
pub const TOKEN_LEN: usize = 1 + 2 + 32;

/// A fresh token for a session kept in `group`.
pub fn new_token(group: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(TOKEN_LEN);
    t.push(TOKEN_VERSION);
    t.extend_from_slice(&(group as u16).to_be_bytes());
    t.extend_from_slice(&rand::random::<[u8; 32]>());
    t
}

/// The group a well-formed token names; `None` for anything else.
pub fn token_group(token: &[u8], data_groups: u32) -> Option<u32> {
    if token.len() != TOKEN_LEN || token[0] != TOKEN_VERSION {
        return None;
    }
    let g = u32::from(u16::from_be_bytes([token[1], token[2]]));
    (1..=data_groups).contains(&g).then_some(g)
}

pub fn token_hash(token: &[u8]) -> TokenHash {
    Sha256::digest(token).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_group_and_malformed_ones_nothing() {
        let t = new_token(5);
        assert_eq!(token_group(&t, 16), Some(5));
        assert_eq!(token_group(&t, 4), None);
        assert_eq!(token_group(&t[1..], 16), None);
        let mut v2 = t.clone();
        v2[0] = 2;
        assert_eq!(token_group(&v2, 16), None);
        assert_ne!(new_token(5), t);
        assert_eq!(token_hash(&t), token_hash(&t.clone()));
    }
}
