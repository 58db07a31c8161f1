//! Versioned bytes: everything the raft crate persists or sends is one format
//! byte followed by the postcard encoding of the value.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The format byte written in front of every encoded value.
pub const FORMAT: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Serializing our own serde types into a Vec cannot fail.
    postcard::to_io(value, &mut out).expect("postcard encoding into memory");
    out
}

/// Encodes under another format byte: a row whose layout grew is written
/// with its new format, so rows written before still decode as the old one.
pub fn encode_as<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut out = vec![format];
    postcard::to_io(value, &mut out).expect("postcard encoding into memory");
    out
}

/// The format byte of an encoded value, and the postcard bytes after it.
pub fn split_format(bytes: &[u8]) -> Result<(u8, &[u8])> {
    bytes.split_first().map(|(f, rest)| (*f, rest)).ok_or_else(|| Error::Decode("empty value".into()))
}

/// Decodes postcard bytes whose format byte was already read.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    postcard::from_bytes(body).map_err(|e| Error::Decode(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| Error::Decode(e.to_string())),
        Some((v, _)) => Err(Error::Decode(format!("unknown format version {v}"))),
        None => Err(Error::Decode("empty value".into())),
    }
}

/// Encodes `value`, then `trailer` after it: a reader that knows only
/// `value`'s type decodes it as before (postcard leaves trailing bytes
/// alone), one that knows the trailer reads it with [`decode_with_trailer`].
pub fn encode_with_trailer<T: Serialize, U: Serialize>(value: &T, trailer: Option<&U>) -> Vec<u8> {
    let mut out = encode(value);
    if let Some(t) = trailer {
        postcard::to_io(t, &mut out).expect("postcard encoding into memory");
    }
    out
}

/// Decodes what [`encode_with_trailer`] wrote (or [`encode`]: no trailer).
pub fn decode_with_trailer<T: DeserializeOwned, U: DeserializeOwned>(bytes: &[u8]) -> Result<(T, Option<U>)> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => {
            let (value, rest) = postcard::take_from_bytes(rest).map_err(|e| Error::Decode(e.to_string()))?;
            let trailer = if rest.is_empty() { None } else { Some(postcard::from_bytes(rest).map_err(|e| Error::Decode(format!("trailer: {e}")))?) };
            Ok((value, trailer))
        }
        _ => Ok((decode(bytes)?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_version_check() {
        let bytes = encode(&("a".to_string(), 7u64));
        assert_eq!(bytes[0], FORMAT);
        let back: (String, u64) = decode(&bytes).unwrap();
        assert_eq!(back, ("a".to_string(), 7));
        let mut future = bytes.clone();
        future[0] = 9;
        assert!(decode::<(String, u64)>(&future).unwrap_err().to_string().contains("unknown format version 9"));
        assert!(decode::<u64>(&[]).is_err());
    }

    #[test]
    fn a_trailer_is_invisible_to_readers_that_do_not_know_it() {
        let with = encode_with_trailer(&("a".to_string(), 7u64), Some(&(3u64, 4u64)));
        let old: (String, u64) = decode(&with).unwrap();
        assert_eq!(old, ("a".to_string(), 7), "a reader without the trailer decodes the value as before");
        let (v, t): ((String, u64), Option<(u64, u64)>) = decode_with_trailer(&with).unwrap();
        assert_eq!((v, t), (("a".to_string(), 7), Some((3, 4))));
        let without = encode(&("b".to_string(), 1u64));
        assert_eq!(encode_with_trailer::<_, (u64, u64)>(&("b".to_string(), 1u64), None), without);
        let (v, t): ((String, u64), Option<(u64, u64)>) = decode_with_trailer(&without).unwrap();
        assert_eq!((v, t), (("b".to_string(), 1), None));
        assert!(decode_with_trailer::<(String, u64), (u64, u64)>(&with[..with.len() - 1]).is_err(), "a cut trailer is an error");
    }
}
