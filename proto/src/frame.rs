//! Length-prefixed frames: a 4-byte big-endian length, then the message.
//! The length is checked against the caller's limit before any allocation,
//! so a frame announcing 4 GiB costs the reader four bytes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest client request or response frame (a 512 KiB upload part and
/// its envelope fit).
pub const MAX_CLIENT_FRAME: u32 = 1 << 20;

/// Frame errors; each maps to a closed stream and, where a reply is still
/// possible, the `BAD_REQUEST` code.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {limit} bytes")]
    TooLarge { len: u32, limit: u32 },
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("undecodable message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `msg` as one frame.
pub fn encode<M: prost::Message>(msg: &M) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut out).expect("a Vec grows as needed");
    out
}

pub async fn write<M: prost::Message, W: AsyncWrite + Unpin>(w: &mut W, msg: &M) -> Result<(), FrameError> {
    w.write_all(&encode(msg)).await?;
    Ok(())
}

/// The first allocation for a frame's body; larger bodies grow as they arrive.
const GROW_FROM: usize = 16 * 1024;

/// Reads one frame: `Ok(None)` at a clean end of stream (before a frame
/// starts), an error for an oversize, truncated or undecodable frame.
pub async fn read<M: prost::Message + Default, R: AsyncRead + Unpin>(r: &mut R, limit: u32) -> Result<Option<M>, FrameError> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut head[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(head);
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    // The buffer grows as bytes arrive: a declared length costs nothing
    // until the peer sends that much.
    let mut body = Vec::with_capacity((len as usize).min(GROW_FROM));
    let got = (&mut *r).take(u64::from(len)).read_to_end(&mut body).await?;
    if got < len as usize {
        return Err(FrameError::Truncated);
    }
    Ok(Some(M::decode(body.as_slice())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Hello;

    fn hello() -> Hello {
        Hello { protocol: 1, client_version: "t".into(), device: "phone".into(), session_token: vec![7; 32], requests_only: false, own_sends_key: 0 }
    }

    #[tokio::test]
    async fn roundtrip_and_clean_end() {
        let mut bytes = encode(&hello());
        bytes.extend(encode(&hello()));
        let mut r = &bytes[..];
        assert_eq!(read::<Hello, _>(&mut r, 1024).await.unwrap(), Some(hello()));
        assert_eq!(read::<Hello, _>(&mut r, 1024).await.unwrap(), Some(hello()));
        assert_eq!(read::<Hello, _>(&mut r, 1024).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_frame_announcing_4_gib_is_refused_before_allocation() {
        let bytes = u32::MAX.to_be_bytes();
        let err = read::<Hello, _>(&mut &bytes[..], 1 << 20).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len: u32::MAX, .. }), "{err}");
    }

    #[tokio::test]
    async fn truncated_and_garbage_frames_are_errors() {
        let full = encode(&hello());
        for cut in [2, 4, full.len() - 1] {
            let err = read::<Hello, _>(&mut &full[..cut], 1024).await.unwrap_err();
            assert!(matches!(err, FrameError::Truncated), "cut at {cut}: {err}");
        }
        let mut garbage = 3u32.to_be_bytes().to_vec();
        garbage.extend([0xff, 0xff, 0xff]);
        assert!(matches!(read::<Hello, _>(&mut &garbage[..], 1024).await.unwrap_err(), FrameError::Decode(_)));
    }
}
