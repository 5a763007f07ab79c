//! Hostile saved states, decoded the way a CLAP load decodes them (nice-plug hands the
//! plugin its fields; [`PadStore::deserialize_fields`] reads them): a state with clips of
//! several blocks, history with audio and loudness control, damaged at random (truncated,
//! bit-flipped, spliced with pieces of other pads, cut out, repeated) in thousands of seeded
//! cases. Every case must load without a panic, restore every undamaged pad exactly, name
//! every pad whose audio changed in the load messages, and save a state that reloads clean.
//!
//! The same damage through the real CLAP host (the container bytes too) is in
//! `tests/tests/state_fuzz.rs`.

use std::collections::BTreeMap;

use ezaudio_engine::audio::{Clip, ClipMeta};
use ezaudio_engine::Recipe;
use nice_plug::prelude::Params;

use crate::layout::PAD_COUNT;
use crate::state::{self, codec::BLOCK};
use crate::store::{PadStore, MAX_HISTORY_BUDGET};

/// xorshift64*: the cases are reproducible from their number.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn audio(len: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    // Noise under a slow envelope, like a generated clip (its exponents vary).
    (0..len)
        .map(|i| {
            let env = 0.05 + (i as f32 * 0.001).sin().abs();
            env * ((r.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        })
        .collect()
}

fn clip(len: usize, seed: u64, prompt: &str) -> Clip {
    let meta = ClipMeta {
        recipe: Recipe {
            seed,
            ..Recipe::new(prompt)
        },
        ..Default::default()
    };
    Clip::new(audio(len, seed), 24_000, meta)
}

/// The scene: pads 1-6 hold clips (one of three blocks), with 0-3 history entries of audio,
/// pad 2 follows the sidechain with an envelope, pad 16 has only a prompt.
pub fn scene() -> PadStore {
    let store = PadStore::default();
    store.with(|b| b.set_history_budget(MAX_HISTORY_BUDGET));
    let lens = [2 * BLOCK + 300, 9000, 4000, 1200, 20_000, 700];
    for (pad, &len) in lens.iter().enumerate() {
        let takes = 1 + pad % 4;
        for t in 0..takes {
            let seed = (pad * 10 + t) as u64;
            let len = if t + 1 == takes { len } else { 500 + 300 * t };
            store.set_clip(pad, clip(len, seed, &format!("pad {} take {t}", pad + 1)));
        }
        store.with(|b| b.pads[pad].recipe.prompt = format!("prompt {}", pad + 1));
    }
    store.with(|b| {
        let c = &mut b.pads[1].control;
        c.follow_sidechain = true;
        c.envelope = vec![(0.0, 0.25), (0.5, 1.0)];
        b.pads[15].recipe.prompt = "thunder, far away".into();
    });
    store
}

/// A pad as comparable data: recipe, control, clip bits, history (recipe, audio bits).
type PadDigest = (
    String,
    String,
    Option<Vec<u32>>,
    Vec<(u64, Option<Vec<u32>>)>,
);

fn digest(store: &PadStore, pad: usize) -> PadDigest {
    let bits = |c: &Clip| c.samples.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
    store.with(|b| {
        let p = &b.pads[pad];
        (
            format!("{:?}{}", p.recipe, p.seed_locked),
            format!("{:?}", p.control),
            p.clip.as_deref().map(bits),
            p.history
                .iter()
                .map(|h| (h.meta.recipe.seed, h.clip.as_deref().map(bits)))
                .collect(),
        )
    })
}

/// One kind of damage to `text`, `other` being another field to splice from.
fn damage(text: &str, other: &str, r: &mut Rng) -> (String, &'static str) {
    let mut b = text.as_bytes().to_vec();
    if b.is_empty() {
        // Already cut to nothing by an earlier damage of this case.
        return (other.to_string(), "replaced");
    }
    let at = r.below(b.len());
    let kind = match r.below(5) {
        0 => {
            b.truncate(at);
            "truncated"
        }
        1 => {
            for _ in 0..1 + r.below(8) {
                let i = r.below(b.len());
                b[i] ^= 1 << r.below(8);
            }
            "bit-flipped"
        }
        2 => {
            let o = other.as_bytes();
            let from = r.below(o.len()).min(o.len());
            let n = r.below(4000).min(o.len() - from);
            let end = (at + r.below(4000)).min(b.len());
            b.splice(at..end, o[from..from + n].iter().copied());
            "spliced"
        }
        3 => {
            let end = (at + 1 + r.below(3000)).min(b.len());
            b.drain(at..end);
            "cut"
        }
        _ => {
            let end = (at + 1 + r.below(3000)).min(b.len());
            let piece = b[at..end].to_vec();
            b.splice(at..at, piece);
            "repeated"
        }
    };
    // nice-plug hands over JSON strings: always valid UTF-8.
    (String::from_utf8_lossy(&b).into_owned(), kind)
}

/// Runs `cases` seeded cases starting at `first`; returns (cases, pads damaged, pads whose
/// audio changed and were reported).
pub fn run(first: u64, cases: u64) -> (u64, usize, usize) {
    let original = scene();
    let fields = original.serialize_fields();
    let want: Vec<PadDigest> = (0..PAD_COUNT).map(|p| digest(&original, p)).collect();
    let target = PadStore::default();
    let (mut damaged_pads, mut reported) = (0, 0);
    for case in first..first + cases {
        let mut r = Rng::new(case);
        let mut bad: BTreeMap<String, String> = fields.clone();
        let mut hit = Vec::new();
        for _ in 0..1 + r.below(3) {
            // Mostly pads with audio; sometimes the empty pads or the version. (Not the budget:
            // a smaller one drops old history audio of undamaged pads, as it should.)
            let key = match r.below(10) {
                0 => state::VERSION_KEY.to_string(),
                1 => state::pad_key(r.below(PAD_COUNT)),
                _ => state::pad_key(r.below(6)),
            };
            let other = state::pad_key(r.below(6));
            let (text, _) = damage(&bad[&key], &fields[&other], &mut r);
            bad.insert(key.clone(), text);
            hit.push(key);
        }
        target.deserialize_fields(&bad);
        let messages = target.load_messages();
        for (pad, want) in want.iter().enumerate() {
            let key = state::pad_key(pad);
            let got = digest(&target, pad);
            if bad[&key] == fields[&key] {
                assert_eq!(&got, want, "case {case}: undamaged pad {} changed", pad + 1);
                continue;
            }
            damaged_pads += 1;
            if got.2 != want.2 || got.3 != want.3 {
                let name = format!("Pad {}: ", pad + 1);
                assert!(
                    messages.iter().any(|m| m.starts_with(&name)),
                    "case {case}: pad {} audio changed without a message: {messages:?}",
                    pad + 1
                );
                assert!(
                    messages[0].contains(&name),
                    "case {case}: the summary names pad {}: {messages:?}",
                    pad + 1
                );
                reported += 1;
            }
        }
        assert!(
            messages.len() < 200,
            "case {case}: {} messages",
            messages.len()
        );
        // What loaded saves as a clean state: a second load reports nothing more. (Every
        // 20th case: saving compresses every clip again, the slow part.)
        if case % 20 != 0 {
            continue;
        }
        let again = PadStore::default();
        again.deserialize_fields(&target.serialize_fields());
        let clean: Vec<_> = again
            .load_messages()
            .into_iter()
            .filter(|m| !m.contains("newer EzAudio"))
            .collect();
        assert!(
            clean.is_empty(),
            "case {case} after resave: {clean:?} (hit {hit:?})"
        );
    }
    (cases, damaged_pads, reported)
}

#[test]
fn damaged_states_restore_undamaged_pads_and_report_the_rest() {
    let t0 = std::time::Instant::now();
    let (cases, damaged, reported) = run(0, 2000);
    eprintln!(
        "{cases} damaged states loaded in {:.1} s: {damaged} damaged pads, {reported} with changed audio, all reported",
        t0.elapsed().as_secs_f32()
    );
    // The damage must really reach the audio often, or the check above proves little.
    assert!(
        reported > 2000,
        "only {reported} pads had their audio changed"
    );
}
