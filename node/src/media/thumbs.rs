//! Previews of images, made when an upload is finished: bytes in, JPEGs
//! out, no I/O. A file is treated as an image by its content (its first
//! bytes), not by the MIME type the client declared; anything that does
//! not decode simply gets no previews.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageReader, Limits};

/// Telegram's `s` (100 px box) and `m` (320 px box) sizes.
pub const SIZES: [(u8, u32); 2] = [(b's', 100), (b'm', 320)];
/// Files larger than this get no previews (Telegram's photo limit is 10 MB).
pub const MAX_SOURCE: u64 = 10 << 20;
/// Decoding limits: a small file can declare a huge canvas.
const MAX_SIDE: u32 = 10_000;
const MAX_DECODE_BYTES: u64 = 256 << 20;
const QUALITY: u8 = 80;

#[derive(Debug)]
pub struct Preview {
    pub kind: u8,
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
}

/// The previews of an image, smallest first; none if `bytes` is not an
/// image this build decodes (JPEG, PNG, GIF, WebP) or is too large.
pub fn previews(bytes: &[u8]) -> Vec<Preview> {
    if bytes.len() as u64 > MAX_SOURCE {
        return Vec::new();
    }
    let Some(img) = decode(bytes) else { return Vec::new() };
    let mut out = Vec::new();
    for (kind, side) in SIZES {
        let small = if img.width() <= side && img.height() <= side { img.clone() } else { img.thumbnail(side, side) };
        let rgb = DynamicImage::ImageRgb8(small.to_rgb8());
        let mut jpeg = Vec::new();
        if rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut jpeg, QUALITY)).is_err() {
            return Vec::new();
        }
        out.push(Preview { kind, width: rgb.width(), height: rgb.height(), jpeg });
    }
    out
}

fn decode(bytes: &[u8]) -> Option<DynamicImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?;
    reader.format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    reader.decode().ok()
}

#[cfg(test)]
mod tests {
    use image::{ImageFormat, Rgb, RgbImage};

    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn an_image_gets_a_small_and_a_medium_preview_keeping_its_shape() {
        let p = previews(&png(1200, 600));
        let got: Vec<_> = p.iter().map(|p| (p.kind, p.width, p.height)).collect();
        assert_eq!(got, vec![(b's', 100, 50), (b'm', 320, 160)]);
        for p in &p {
            assert_eq!(&p.jpeg[..2], &[0xFF, 0xD8], "a JPEG");
            let back = image::load_from_memory(&p.jpeg).unwrap();
            assert_eq!((back.width(), back.height()), (p.width, p.height));
        }
    }

    #[test]
    fn a_small_image_is_not_enlarged() {
        let got: Vec<_> = previews(&png(40, 80)).iter().map(|p| (p.width, p.height)).collect();
        assert_eq!(got, vec![(40, 80), (40, 80)]);
    }

    #[test]
    fn what_is_not_an_image_gets_none() {
        assert!(previews(b"just some text, not a picture").is_empty());
        let mut broken = png(300, 300);
        broken.truncate(broken.len() / 2);
        assert!(previews(&broken).is_empty(), "a truncated image");
        assert!(previews(&[]).is_empty());
    }
}
