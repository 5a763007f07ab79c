//! "Foley that follows the track", the audio thread's half: the sidechain capture. (The
//! generation thread's half, which turns a finished capture into jobs, is `generation/follow.rs`.)
//!
//! The audio thread records the sidechain's mono mix into a [`CaptureBuffer`] allocated in
//! `activate()` (10 s at the host rate): no allocation, lock or syscall in `process()`, only
//! relaxed stores into preallocated atomics. The hand-off is one state word: the audio thread
//! alone moves `IDLE -> RECORDING -> READY` and writes samples only while `RECORDING`; the
//! generation thread alone moves `READY -> IDLE`, after copying the samples out. A capture
//! starts at the first block after the `capture_sidechain` parameter is switched on (or at
//! transport start, when the host reports a stopped transport with a position) and ends when
//! the buffer (or the following pad's length) is full or the parameter is switched off.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::layout::{CAPTURE_SECONDS, MIN_CAPTURE_SECONDS};

const IDLE: u8 = 0;
const RECORDING: u8 = 1;
const READY: u8 = 2;
const NO_POSITION: i64 = i64::MIN;

/// The preallocated capture, shared by the audio thread and the generation thread.
pub struct CaptureBuffer {
    samples: Box<[AtomicU32]>,
    rate: u32,
    state: AtomicU8,
    len: AtomicUsize,
    start: AtomicI64,
    /// Frames to record (at most the capacity); kept up to date by the generation thread.
    limit: AtomicUsize,
}

/// A finished capture, copied out.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    /// Mono mix at the host rate.
    pub samples: Vec<f32>,
    pub rate: u32,
    /// Transport position (host samples) of the first sample, when the host gave one.
    pub start: Option<i64>,
}

impl CaptureBuffer {
    /// Allocates `CAPTURE_SECONDS` at `rate` (main thread, in `activate`).
    pub fn new(rate: u32) -> Arc<Self> {
        let capacity = (CAPTURE_SECONDS * rate as f32).ceil().max(1.0) as usize;
        Arc::new(Self {
            samples: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            rate,
            state: AtomicU8::new(IDLE),
            len: AtomicUsize::new(0),
            start: AtomicI64::new(NO_POSITION),
            limit: AtomicUsize::new(capacity),
        })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn capacity(&self) -> usize {
        self.samples.len()
    }

    /// Caps the next captures at `seconds` (clamped to the capacity).
    pub fn set_limit_seconds(&self, seconds: f32) {
        let frames = (seconds.clamp(MIN_CAPTURE_SECONDS, CAPTURE_SECONDS) * self.rate as f32)
            .round() as usize;
        self.limit
            .store(frames.clamp(1, self.capacity()), Ordering::Relaxed);
    }

    pub fn is_recording(&self) -> bool {
        self.state.load(Ordering::Relaxed) == RECORDING
    }

    /// Frames recorded so far (for a level meter / progress).
    pub fn recorded(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Generation thread: the finished capture, if one is waiting; frees the buffer for the
    /// next capture.
    pub fn take(&self) -> Option<Captured> {
        if self.state.load(Ordering::Acquire) != READY {
            return None;
        }
        let n = self.len.load(Ordering::Relaxed).min(self.capacity());
        let samples = self.samples[..n]
            .iter()
            .map(|s| f32::from_bits(s.load(Ordering::Relaxed)))
            .collect();
        let start = self.start.load(Ordering::Relaxed);
        self.state.store(IDLE, Ordering::Release);
        Some(Captured {
            samples,
            rate: self.rate,
            start: (start != NO_POSITION).then_some(start),
        })
    }
}

/// The audio thread's side: edge detection of the arm switch and the writing.
#[derive(Default)]
pub struct Recorder {
    buffer: Option<Arc<CaptureBuffer>>,
    was_armed: bool,
    /// Armed, waiting for the buffer to be free or the transport to start.
    pending: bool,
}

impl Recorder {
    /// Main thread (activate): the buffer to write into.
    pub fn set_buffer(&mut self, buffer: Arc<CaptureBuffer>) {
        self.buffer = Some(buffer);
        self.pending = false;
    }

    /// Audio thread, once per block. `channels` is the sidechain (any channel count; none is
    /// silence), `frames` the block length, `position` the transport position of the block's
    /// first sample when known. Realtime-safe: atomics only.
    pub fn process(
        &mut self,
        armed: bool,
        channels: &[&mut [f32]],
        frames: usize,
        playing: bool,
        position: Option<i64>,
    ) {
        let Some(buf) = &self.buffer else { return };
        if armed && !self.was_armed {
            self.pending = true;
        }
        self.was_armed = armed;
        let mut state = buf.state.load(Ordering::Acquire);
        if !armed {
            self.pending = false;
            if state == RECORDING {
                buf.state.store(READY, Ordering::Release);
            }
            return;
        }
        // A stopped transport with a known position: start with playback, so the capture is
        // aligned with the arrangement. Without transport information, start at once.
        let transport_ready = playing || position.is_none();
        if self.pending && state == IDLE && transport_ready {
            self.pending = false;
            buf.len.store(0, Ordering::Relaxed);
            buf.start
                .store(position.unwrap_or(NO_POSITION), Ordering::Relaxed);
            buf.state.store(RECORDING, Ordering::Relaxed);
            state = RECORDING;
        }
        if state != RECORDING {
            return;
        }
        let len = buf.len.load(Ordering::Relaxed);
        let limit = buf.limit.load(Ordering::Relaxed).min(buf.capacity());
        let n = frames.min(limit.saturating_sub(len));
        let scale = if channels.is_empty() {
            0.0
        } else {
            1.0 / channels.len() as f32
        };
        for (i, slot) in buf.samples[len..len + n].iter().enumerate() {
            let mix: f32 = channels
                .iter()
                .map(|c| c.get(i).copied().unwrap_or(0.0))
                .sum::<f32>()
                * scale;
            let mix = if mix.is_finite() { mix } else { 0.0 };
            slot.store(mix.to_bits(), Ordering::Relaxed);
        }
        buf.len.store(len + n, Ordering::Relaxed);
        if len + n >= limit {
            buf.state.store(READY, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(v: f32, n: usize) -> [Vec<f32>; 2] {
        [vec![v; n], vec![-v * 0.5; n]]
    }

    fn run(rec: &mut Recorder, armed: bool, v: f32, n: usize, playing: bool, pos: Option<i64>) {
        let [mut l, mut r] = block(v, n);
        let chans: [&mut [f32]; 2] = [&mut l, &mut r];
        rec.process(armed, &chans, n, playing, pos);
    }

    #[test]
    fn capture_starts_on_arming_stops_when_full_and_hands_off_once() {
        let buf = CaptureBuffer::new(1000);
        buf.set_limit_seconds(0.25);
        let mut rec = Recorder::default();
        rec.set_buffer(buf.clone());
        run(&mut rec, false, 1.0, 100, false, None);
        assert!(buf.take().is_none());
        run(&mut rec, true, 0.5, 100, false, None); // first block after arming
        assert!(buf.is_recording());
        run(&mut rec, true, 1.0, 100, false, None);
        run(&mut rec, true, 2.0, 100, false, None); // only 50 fit
        assert!(!buf.is_recording());
        run(&mut rec, true, 3.0, 100, false, None); // still armed: no new capture
        let c = buf.take().expect("ready");
        assert_eq!(c.samples.len(), 250);
        assert_eq!(
            (c.samples[0], c.samples[100], c.samples[249]),
            (0.125, 0.25, 0.5)
        );
        assert_eq!(c.start, None);
        assert!(buf.take().is_none());
        // Re-arm with a stopped transport: waits for play, records the position.
        run(&mut rec, false, 0.0, 10, false, Some(0));
        run(&mut rec, true, 1.0, 10, false, Some(500));
        assert!(!buf.is_recording());
        run(&mut rec, true, 1.0, 10, true, Some(4800));
        run(&mut rec, false, 1.0, 10, true, Some(4810)); // disarm stops it
        let c = buf.take().expect("ready");
        assert_eq!((c.samples.len(), c.start), (10, Some(4800)));
    }
}
