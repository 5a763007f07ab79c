//! Hand-written plugin states, to put known clips into pads without the model.
//!
//! The format, as the plugin saves it through CLAP (see `plugin/src/state.rs`):
//! an 8-byte little-endian length, then nice-plug's JSON state
//! `{"version": "...", "params": {id: {"f32"|"i32"|"bool"|"string": value}}, "fields": {...}}`
//! whose `fields` hold `"ezaudio_version"` and `"padN": "<JSON of the pad>"` with
//! `{"prompt", "negative", "settings", "clip": {"sample_rate", "len", "samples", "meta"},
//! "history": [{"meta", "clip"}], "control"}` (`control` since version 2); `samples` is base64
//! of the little-endian f32 samples. The blobs here say version 1 unless a test sets more.
//!
//! What the plugin saves since version 3 differs in two ways, both read here ([`parse_state`],
//! [`clip_samples`]): the JSON after the length is compressed with zstd (nice-plug's `zstd`
//! feature), and a clip holds `"codec": "f32le-planes-zlib", "blocks": [...]` instead of
//! `samples`: runs of 16384 samples, each as its four byte planes (byte 0 of every sample,
//! then byte 1, ...) in a zlib stream, in base64.
//!
//! This is the one builder of whole states. It is written from the format, not from the
//! plugin's code, on purpose: the end-to-end tests check the format from outside, so a change
//! to it in the plugin shows up here (and this crate needs only the bundle, not the plugin crate).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

/// A clip's recipe with every field present.
pub fn meta(prompt: &str, seed: u64) -> Value {
    json!({
        "prompt": prompt, "negative": "", "seconds": 1.0, "steps": 10, "guidance": 5.0,
        "rescale": 0.75, "eta": 1.0, "seed": seed, "model_id": "test", "kind": {"type": "generate"},
        "created": 0
    })
}

pub fn clip_json(samples: &[f32], sample_rate: u32, prompt: &str) -> Value {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    json!({"sample_rate": sample_rate, "len": samples.len(), "samples": B64.encode(bytes), "meta": meta(prompt, 1)})
}

/// A pad holding `samples` at `sample_rate`, with a prompt.
pub fn pad_json(samples: &[f32], sample_rate: u32, prompt: &str) -> Value {
    json!({"prompt": prompt, "negative": "", "clip": clip_json(samples, sample_rate, prompt), "history": []})
}

/// The full CLAP state: `pads` as (pad index 0..16, pad JSON), `params` as (id, tagged value).
pub fn state_blob(pads: &[(usize, Value)], params: &[(&str, Value)]) -> Vec<u8> {
    let mut fields = serde_json::Map::new();
    fields.insert("ezaudio_version".into(), Value::String("1".into()));
    for (i, pad) in pads {
        fields.insert(format!("pad{}", i + 1), Value::String(pad.to_string()));
    }
    let params: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let state = json!({"version": "0.1.0", "params": params, "fields": fields});
    with_length(state.to_string().as_bytes())
}

/// Prefixes nice-plug's 8-byte length.
pub fn with_length(json: &[u8]) -> Vec<u8> {
    let mut blob = (json.len() as u64).to_le_bytes().to_vec();
    blob.extend_from_slice(json);
    blob
}

/// The JSON part of a saved state (zstd-compressed or plain), parsed.
pub fn parse_state(blob: &[u8]) -> Value {
    let body = &blob[8.min(blob.len())..];
    match zstd::decode_all(body) {
        Ok(json) => serde_json::from_slice(&json).unwrap_or(Value::Null),
        Err(_) => serde_json::from_slice(body).unwrap_or(Value::Null),
    }
}

/// A stored clip's samples in either format (None if absent or unreadable).
pub fn clip_samples(clip: &Value) -> Option<Vec<f32>> {
    if let Some(text) = clip["samples"].as_str() {
        let bytes = B64.decode(text).ok()?;
        return Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    if clip["codec"] != "f32le-planes-zlib" {
        return None;
    }
    let mut out = Vec::new();
    for block in clip["blocks"].as_array()? {
        let z = B64.decode(block.as_str()?).ok()?;
        let planes = miniz_oxide::inflate::decompress_to_vec_zlib(&z).ok()?;
        let n = planes.len() / 4;
        out.extend((0..n).map(|i| {
            f32::from_le_bytes([
                planes[i],
                planes[n + i],
                planes[2 * n + i],
                planes[3 * n + i],
            ])
        }));
    }
    (out.len() as u64 == clip["len"].as_u64()?).then_some(out)
}

/// Pad `index`'s JSON in a parsed state (Null if absent).
pub fn pad_of(state: &Value, index: usize) -> Value {
    state["fields"][format!("pad{}", index + 1)]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// Decodes pad `index`'s clip samples from a saved state (None if absent).
pub fn saved_clip(blob: &[u8], index: usize) -> Option<Vec<f32>> {
    clip_samples(&pad_of(&parse_state(blob), index)["clip"])
}

pub fn f32_param(v: f32) -> Value {
    json!({"f32": v})
}
pub fn i32_param(v: i32) -> Value {
    json!({"i32": v})
}
pub fn enum_param(id: &str) -> Value {
    json!({"string": id})
}
pub fn bool_param(v: bool) -> Value {
    json!({"bool": v})
}

/// Deterministic test audio in [-0.5, 0.5] with no zero samples (so onsets are unambiguous).
pub fn test_clip(len: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            if v == 0.0 {
                0.25
            } else {
                v
            }
        })
        .collect()
}

/// A busy scene for the real-time checks: 16 pads with the same clip, a gated pad and a choke
/// group, and 48 overlapping notes (voice stealing, chokes, gate releases).
pub struct BusyScene {
    pub state: Vec<u8>,
    pub notes: Vec<crate::Note>,
}

pub fn busy_scene(seed: u32) -> BusyScene {
    let x = test_clip(9600, seed);
    let pads: Vec<_> = (0..16).map(|i| (i, pad_json(&x, 24_000, "p"))).collect();
    let params = [
        ("pad2_mode", enum_param("gate")),
        ("pad3_choke", i32_param(1)),
        ("pad4_choke", i32_param(1)),
    ];
    let mut notes = Vec::new();
    for n in 0..48u32 {
        notes.push(crate::Note::on(n * 37, 36 + (n % 16) as u8, 0.8));
        notes.push(crate::Note::off(n * 37 + 500, 36 + (n % 16) as u8));
    }
    BusyScene {
        state: state_blob(&pads, &params),
        notes,
    }
}
