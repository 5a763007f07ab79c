//! Transport-locked pads: a pad that follows the sidechain knows where its capture started on
//! the host's timeline, so its clip can play like an audio region there, without a MIDI note,
//! and lands in the DAW's bounce and stem export.
//!
//! The audio thread's half. Where each locked pad's clip starts (host samples at the current
//! rate, or none) arrives through [`LockPoints`], preallocated atomics written by the
//! generation thread and in `activate`; [`LockedPlayer`] turns the transport of each block into
//! voice starts and stops:
//!
//! * the transport passes the clip's first (trimmed) sample: the clip starts at that exact
//!   frame of the block;
//! * a jump or loop (the block does not start where the last one ended) or a transport start
//!   inside the clip: the sounding voice fades out and the clip chases, starting at the
//!   matching offset with the usual anti-click fade-in;
//! * a stopped transport (or none): the voices fade out.
//!
//! Each pad has its own two voices (the sounding one and one fading out after a jump), outside
//! the note pool, so MIDI voices never steal a locked clip and vice versa.

use std::sync::atomic::{AtomicI64, Ordering};

use ezaudio_engine::audio::published::PlaybackHandle;

use crate::audio::voice::{Voice, VoiceStart, NO_KEY};
use crate::layout::PAD_COUNT;

const NONE: i64 = i64::MIN;

/// Per pad, the transport position (host samples) of the clip's sample 0, when the pad is
/// locked. Written off the audio thread, read by it; relaxed atomics only.
pub struct LockPoints {
    starts: [AtomicI64; PAD_COUNT],
}

impl Default for LockPoints {
    fn default() -> Self {
        Self {
            starts: std::array::from_fn(|_| AtomicI64::new(NONE)),
        }
    }
}

impl LockPoints {
    pub fn set(&self, pad: usize, start: Option<i64>) {
        if let Some(s) = self.starts.get(pad) {
            // i64::MIN marks "none"; a real position there would be off any timeline anyway.
            s.store(start.map_or(NONE, |v| v.max(NONE + 1)), Ordering::Relaxed);
        }
    }

    pub fn get(&self, pad: usize) -> Option<i64> {
        let v = self.starts.get(pad)?.load(Ordering::Relaxed);
        (v != NONE).then_some(v)
    }
}

/// How one locked pad plays in this block, computed by the plugin from its parameters.
#[derive(Debug, Clone, Copy)]
pub struct LockedPad {
    /// Transport position of the clip's sample 0.
    pub origin: i64,
    /// Trimmed region of the buffer, in buffer samples.
    pub start: usize,
    pub end: usize,
    pub stem: u8,
    pub fade_len: u32,
}

/// The transport of one block, as the plugin's `process()` sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockTransport {
    pub playing: bool,
    /// Position of the block's first frame, in host samples.
    pub position: Option<i64>,
    pub frames: usize,
}

/// A voice to start at a frame of the current block.
struct Pending {
    frame: usize,
    start: VoiceStart,
    buffer: PlaybackHandle,
}

#[derive(Default)]
pub struct LockedPlayer {
    /// `[sounding, fading]` per pad.
    voices: [[Voice; 2]; PAD_COUNT],
    pending: [Option<Pending>; PAD_COUNT],
    /// Where the next block starts if the transport keeps rolling.
    expected: Option<i64>,
    /// Whether the current block continues the last one.
    continuous: bool,
}

impl LockedPlayer {
    /// Once per block, before [`Self::plan`]: a stopped transport fades everything out, and a
    /// block that does not continue the last one (jump, loop, start) fades out what sounds.
    pub fn begin(&mut self, t: BlockTransport) {
        let rolling = t.playing && t.position.is_some();
        self.continuous = rolling && t.position == self.expected;
        self.expected = match (rolling, t.position) {
            (true, Some(p)) => Some(p.saturating_add(t.frames as i64)),
            _ => None,
        };
        // Dropping a pending start only decrements the clip's count (no freeing here).
        self.pending = Default::default();
        if !self.continuous {
            for [sounding, _] in self.voices.iter_mut() {
                sounding.fade_out();
            }
        }
    }

    /// Per locked pad with a clip, after [`Self::begin`]: schedules the clip's start in this
    /// block if the transport reaches it. `buffer` is the pad's published clip.
    pub fn plan(&mut self, pad: usize, p: LockedPad, t: BlockTransport, buffer: PlaybackHandle) {
        let (Some(position), true) = (t.position, t.playing) else {
            return;
        };
        if pad >= PAD_COUNT {
            return;
        }
        let end = p.end.min(buffer.len());
        if p.start >= end {
            return;
        }
        let first = p.origin.saturating_add(p.start as i64);
        let last = p.origin.saturating_add(end as i64); // one past
        let block_end = position.saturating_add(t.frames as i64);
        let (frame, offset) = if !self.continuous && position > first && position < last {
            // Chase: the transport starts or lands inside the clip.
            (0, (position - p.origin) as usize)
        } else if first >= position && first < block_end {
            ((first - position) as usize, p.start)
        } else {
            return;
        };
        self.pending[pad] = Some(Pending {
            frame,
            start: VoiceStart {
                pad: pad as u8,
                key: NO_KEY,
                velocity: 1.0,
                // Pitch would move the clip off the timeline: locked clips play as recorded.
                ratio: 1.0,
                start: offset,
                end,
                gate: false,
                choke: 0,
                stem: p.stem,
                fade_len: p.fade_len,
                release_len: p.fade_len,
            },
            buffer,
        });
    }

    /// Frame `i` of the block: starts what was scheduled for it. A voice still sounding there
    /// (a loop back into the clip) moves to the fading slot and fades out beside the new one.
    pub fn frame(&mut self, i: usize) {
        for (pending, [sounding, fading]) in self.pending.iter_mut().zip(self.voices.iter_mut()) {
            if pending.as_ref().is_some_and(|p| p.frame == i) {
                let Some(Pending { start, buffer, .. }) = pending.take() else {
                    continue;
                };
                std::mem::swap(sounding, fading);
                fading.fade_out();
                sounding.kill();
                sounding.start(start, buffer, 0);
            }
        }
    }

    /// Every sounding or fading locked voice, for mixing.
    pub fn voices_mut(&mut self) -> impl Iterator<Item = &mut Voice> {
        self.voices.iter_mut().flatten().filter(|v| v.is_active())
    }

    /// Stops everything at once (reset).
    pub fn reset(&mut self) {
        self.voices.iter_mut().flatten().for_each(Voice::kill);
        self.pending = Default::default();
        self.expected = None;
    }
}
