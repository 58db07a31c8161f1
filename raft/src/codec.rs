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
    decode_as(FORMAT, bytes)
}

/// Decodes what [`encode_as`] wrote under `format`; any other format byte
/// is refused, never misread.
pub fn decode_as<T: DeserializeOwned>(format: u8, bytes: &[u8]) -> Result<T> {
    match split_format(bytes)? {
        (f, body) if f == format => decode_body(body),
        (v, _) => Err(Error::Decode(format!("unknown format version {v}"))),
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
}
