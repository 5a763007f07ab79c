//! How clip audio is stored inside a pad's JSON: losslessly (every `f32` bit for bit) and
//! compactly, in blocks that each survive or fail on their own.
//!
//! Since state version 3 a clip's samples are `blocks`: the samples cut into runs of
//! [`BLOCK`], each run stored as its four byte planes (every sample's byte 0, then every byte
//! 1, ...: the sign/exponent plane of audio is highly repetitive, the low mantissa planes are
//! noise), compressed as a zlib stream (deflate plus an Adler-32 checksum) and written in
//! base64. A damaged block (bad base64, a broken stream, a wrong checksum or length) is
//! silenced and reported by its time span; the blocks around it load unchanged.
//!
//! Before version 3 a clip was one base64 string of its raw little-endian samples
//! (`samples`); [`decode_legacy`] still reads it, and reads past damage in the same spirit:
//! a run of base64 that does not decode is silenced, not the whole clip.
//!
//! Every size read from a state is bounded before anything is allocated from it
//! ([`MAX_CLIP_SAMPLES`]), so a hostile state cannot make loading allocate more than that
//! per clip.

use std::ops::Range;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

/// Samples per stored block (0.68 s at the model's 24 kHz): small enough that damage costs
/// little audio, large enough that deflate finds the planes' repetition.
pub const BLOCK: usize = 16_384;
/// Name of the block format, saved beside the blocks so a later format can be told apart.
pub const CODEC: &str = "f32le-planes-zlib";
/// Longest clip a state may hold: 2^21 samples (87 s at 24 kHz, 43 s at 48 kHz; the model
/// makes at most 10 s). Bounds what a hostile state can make the loader allocate.
pub const MAX_CLIP_SAMPLES: usize = 1 << 21;
/// deflate level: 6 is within 1 % of 9 on audio planes here and about twice as fast.
const LEVEL: u8 = 6;

/// Samples as stored blocks (see the module documentation).
pub fn encode_blocks(samples: &[f32]) -> Vec<String> {
    let mut planes = Vec::with_capacity(BLOCK.min(samples.len()) * 4);
    samples
        .chunks(BLOCK)
        .map(|chunk| {
            to_planes(chunk, &mut planes);
            B64.encode(miniz_oxide::deflate::compress_to_vec_zlib(&planes, LEVEL))
        })
        .collect()
}

fn to_planes(chunk: &[f32], out: &mut Vec<u8>) {
    let n = chunk.len();
    out.clear();
    out.resize(n * 4, 0);
    for (i, s) in chunk.iter().enumerate() {
        for (k, b) in s.to_le_bytes().into_iter().enumerate() {
            out[k * n + i] = b;
        }
    }
}

fn from_planes(planes: &[u8], out: &mut [f32]) {
    let n = out.len();
    for (i, s) in out.iter_mut().enumerate() {
        *s = f32::from_le_bytes([
            planes[i],
            planes[n + i],
            planes[2 * n + i],
            planes[3 * n + i],
        ]);
    }
}

/// Decoded audio and the sample ranges that could not be read (silenced).
#[derive(Debug, Default)]
pub struct Decoded {
    pub samples: Vec<f32>,
    pub damaged: Vec<Range<usize>>,
}

impl Decoded {
    fn silence(&mut self, range: Range<usize>) {
        self.samples[range.clone()].fill(0.0);
        match self.damaged.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => self.damaged.push(range),
        }
    }
}

/// Reads version-3 `blocks` holding `len` samples. Fails only when nothing sensible can be
/// rebuilt (no list, a length out of bounds, or more blocks or fewer than `len` needs);
/// damage inside a block silences that block.
pub fn decode_blocks(blocks: &Value, len: usize) -> Result<Decoded, String> {
    let blocks = blocks.as_array().ok_or("its audio blocks are not a list")?;
    if len > MAX_CLIP_SAMPLES {
        return Err(format!(
            "it claims {len} samples, more than a clip may hold ({MAX_CLIP_SAMPLES})"
        ));
    }
    if blocks.len() != len.div_ceil(BLOCK) {
        return Err(format!(
            "it has {} audio blocks where {len} samples need {}",
            blocks.len(),
            len.div_ceil(BLOCK)
        ));
    }
    let mut out = Decoded {
        samples: vec![0.0; len],
        damaged: Vec::new(),
    };
    for (k, block) in blocks.iter().enumerate() {
        let range = k * BLOCK..((k + 1) * BLOCK).min(len);
        let bytes = range.len() * 4;
        let planes = block
            .as_str()
            .and_then(|t| B64.decode(t).ok())
            .and_then(|z| miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&z, bytes).ok())
            .filter(|p| p.len() == bytes);
        match planes {
            Some(p) => from_planes(&p, &mut out.samples[range]),
            None => out.silence(range),
        }
    }
    Ok(out)
}

/// Base64 characters decoded at a time by [`decode_legacy`]: a damaged run costs at most
/// this many characters' worth of audio (3 KiB, 768 samples).
const LEGACY_RUN: usize = 4096;

/// Reads a pre-version-3 clip (`samples`: base64 of little-endian `f32`). Returns the audio
/// and the number of stray bytes past the last whole sample. A run of text that does not
/// decode (a flipped character) is silenced rather than failing the clip; a text longer than
/// [`MAX_CLIP_SAMPLES`] allows fails.
pub fn decode_legacy(text: &str) -> Result<(Decoded, usize), String> {
    let text = text.trim().as_bytes();
    // 4 characters hold 3 bytes; the bound is checked before allocating.
    let bytes_max = text.len() / 4 * 3 + 3;
    if bytes_max / 4 > MAX_CLIP_SAMPLES + 1 {
        return Err(format!(
            "it is longer than a clip may be ({MAX_CLIP_SAMPLES} samples)"
        ));
    }
    let mut bytes = Vec::with_capacity(bytes_max);
    let mut bad: Vec<Range<usize>> = Vec::new(); // byte ranges
    for run in text.chunks(LEGACY_RUN) {
        let start = bytes.len();
        match B64.decode(run) {
            Ok(b) => bytes.extend_from_slice(&b),
            Err(_) => {
                // Keep the timing: a run of 4n characters stood for 3n bytes.
                let n = run.len() / 4 * 3;
                bytes.resize(start + n, 0);
                bad.push(start..start + n);
            }
        }
    }
    if bad.len() == text.len().div_ceil(LEGACY_RUN) && !text.is_empty() {
        return Err("its samples are not base64".into());
    }
    let stray = bytes.len() % 4;
    let mut out = Decoded {
        samples: bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        damaged: Vec::new(),
    };
    for r in bad {
        let (a, b) = (r.start / 4, r.end.div_ceil(4).min(out.samples.len()));
        if a < b {
            out.silence(a..b);
        }
    }
    Ok((out, stray))
}

/// `ranges` of samples at `rate` in plain words: "0.68-1.37 s, 2.05-2.73 s".
pub fn spans(ranges: &[Range<usize>], rate: u32) -> String {
    let s = |i: usize| i as f64 / rate.max(1) as f64;
    let mut words: Vec<String> = ranges
        .iter()
        .take(4)
        .map(|r| format!("{:.2}-{:.2} s", s(r.start), s(r.end)))
        .collect();
    if ranges.len() > 4 {
        words.push(format!("and {} more places", ranges.len() - 4));
    }
    words.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|s| s.to_bits()).collect()
    }

    #[test]
    fn blocks_roundtrip_bit_exact_at_every_length() {
        let special = [0.0, -0.0, f32::MIN_POSITIVE, 1e-45, -3.3e38, f32::NAN];
        for len in [0, 1, 5, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17] {
            let mut x = noise(len, len as u32 + 1);
            for (s, v) in x.iter_mut().zip(special) {
                *s = v;
            }
            let blocks = encode_blocks(&x);
            assert_eq!(blocks.len(), len.div_ceil(BLOCK));
            let d = decode_blocks(&Value::from(blocks), len).unwrap();
            assert!(d.damaged.is_empty());
            assert_eq!(bits(&d.samples), bits(&x), "len {len}");
        }
    }

    #[test]
    fn a_damaged_block_is_silenced_and_the_others_survive() {
        let x = noise(3 * BLOCK, 9);
        let mut blocks = encode_blocks(&x);
        // Flip one character in the middle of block 1: the checksum or the stream fails.
        let mut b = blocks[1].clone().into_bytes();
        let mid = b.len() / 2;
        b[mid] = if b[mid] == b'A' { b'B' } else { b'A' };
        blocks[1] = String::from_utf8(b).unwrap();
        let d = decode_blocks(&Value::from(blocks), 3 * BLOCK).unwrap();
        assert_eq!(d.damaged, vec![BLOCK..2 * BLOCK]);
        assert_eq!(bits(&d.samples[..BLOCK]), bits(&x[..BLOCK]));
        assert!(d.samples[BLOCK..2 * BLOCK].iter().all(|&s| s == 0.0));
        assert_eq!(bits(&d.samples[2 * BLOCK..]), bits(&x[2 * BLOCK..]));
        assert_eq!(spans(&d.damaged, 24_000), "0.68-1.37 s");
    }

    #[test]
    fn sizes_are_checked_before_allocating() {
        let blocks = Value::from(vec![""; 3]);
        assert!(
            decode_blocks(&blocks, 3 * BLOCK + 1).is_err(),
            "block count"
        );
        assert!(decode_blocks(&Value::from(1), 4).is_err());
        let huge = Value::from(vec![""; MAX_CLIP_SAMPLES / BLOCK + 1]);
        assert!(decode_blocks(&huge, MAX_CLIP_SAMPLES + BLOCK).is_err());
        // A stream that inflates past its block's size is damage, not a bigger clip.
        let bomb = B64.encode(miniz_oxide::deflate::compress_to_vec_zlib(
            &[0u8; 80_000],
            6,
        ));
        let d = decode_blocks(&Value::from(vec![bomb]), 10).unwrap();
        assert_eq!(d.damaged, vec![0..10]);
    }

    #[test]
    fn legacy_text_reads_past_a_bad_run() {
        let x = noise(3000, 4); // 12000 bytes, 16000 characters: 4 runs
        let bytes: Vec<u8> = x.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut text = B64.encode(&bytes).into_bytes();
        text[5000] = b'!';
        let (d, stray) = decode_legacy(std::str::from_utf8(&text).unwrap()).unwrap();
        assert_eq!(stray, 0);
        assert_eq!(d.samples.len(), 3000);
        // Run 1 (characters 4096..8192 = bytes 3072..6144 = samples 768..1536) is silenced.
        assert_eq!(d.damaged, vec![768..1536]);
        assert_eq!(bits(&d.samples[..768]), bits(&x[..768]));
        assert_eq!(bits(&d.samples[1536..]), bits(&x[1536..]));
        assert!(decode_legacy("!!!!").is_err());
        assert_eq!(decode_legacy("").unwrap().0.samples.len(), 0);
    }
}
