//! Handing finished audio to the audio thread without locks, allocation or frees on it.
//!
//! # Design
//!
//! The plugin has a handful of slots (16); each shows the latest clip published into it. The
//! engine/GUI threads (writers) publish new buffers at any time; the audio thread (the one
//! reader of a slot) must, in every callback, see the current buffer of each slot and let
//! voices keep playing an older buffer across callbacks after a newer one was published.
//!
//! Rules on the audio thread: no locks, no allocation, and no *frees* (freeing a multi-MB
//! buffer can take a global allocator lock or return pages to the OS).
//!
//! The scheme, per slot ([`ClipSlot`] writer side, [`SlotReader`] reader side):
//!
//! * Buffers are `Arc<PlaybackBuffer>`. The slot's `current` is an `AtomicPtr` to the buffer
//!   the reader should pick up (null = empty).
//! * **The keeper.** The writer side keeps its own clone of every buffer it ever published in
//!   a list (behind a mutex only writers touch). It drops that clone — the only place a
//!   buffer is ever freed — in [`ClipSlot::collect`], and only once (a) the buffer is no longer
//!   current, (b) the reader cannot be halfway through turning the old pointer into a handle,
//!   and (c) `strong_count == 1`, i.e. no handle exists anywhere. Since the keeper's clone
//!   outlives every other clone, a handle dropped on the audio thread only ever decrements a
//!   count that stays >= 1: it never frees. No deferred-drop queue is needed.
//! * **Pointer -> handle.** Reading `current` and incrementing the count are two steps; the
//!   buffer must not be freed between them. The reader bumps `reader_seq` to odd before
//!   loading `current` and back to even after taking its reference. After swapping `current`,
//!   a writer records `reader_seq` with the retired buffer: if it was even, any later read sees
//!   the new pointer (both sides use `SeqCst`, the classic store/load handshake); if it was odd
//!   (`s`), the reader may hold the old pointer, and the buffer stays put until `reader_seq != s`.
//!   The reader only stores to its own counter, so its side is wait-free: two stores, one load
//!   and one atomic increment per fresh pick-up, nothing while the slot is unchanged.
//! * **One reader per slot**, enforced by types: [`ClipSlot::new`] returns the single
//!   [`SlotReader`], whose methods take `&mut self`. Writers ([`ClipSlot`]) can be cloned freely.
//! * Freeing is cheap to schedule: [`ClipSlot::publish`] and [`ClipSlot::clear`] collect, and a
//!   non-realtime thread (GUI timer, engine loop) should call [`ClipSlot::collect`] now and
//!   then so buffers whose last voice ended get freed without waiting for the next publish.
//!
//! Audio-thread usage: [`SlotReader::read`] borrows the current buffer (cached, so a callback
//! on an unchanged slot touches one atomic); [`SlotReader::acquire`] gives a voice a
//! [`PlaybackHandle`] to keep until the voice ends; dropping it there is fine.
//!
//! Caveat: drop the [`SlotReader`] and any handles off the audio thread at teardown (they
//! live in the plugin struct, which hosts drop on the main thread). Once both the reader
//! and all writers are gone the keeper is gone too, and a handle left over would then free
//! its buffer wherever it is dropped.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Mono audio at the host rate, ready to play. Immutable once published.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaybackBuffer {
    samples: Box<[f32]>,
    sample_rate: u32,
    /// Generation counter chosen by the publisher (e.g. increasing per slot).
    id: u64,
}

impl PlaybackBuffer {
    pub fn new(samples: impl Into<Box<[f32]>>, sample_rate: u32, id: u64) -> Self {
        Self {
            samples: samples.into(),
            sample_rate,
            id,
        }
    }
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn len(&self) -> usize {
        self.samples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
    pub fn duration_s(&self) -> f64 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.samples.len() as f64 / self.sample_rate as f64
        }
    }
}

/// A reference to a published buffer that a voice can hold across audio callbacks.
///
/// Cloning and dropping only touch the reference count, and never free: the slot's keeper
/// holds the buffer until no handle is left (see the module docs for the one teardown caveat).
#[derive(Debug, Clone)]
pub struct PlaybackHandle(Arc<PlaybackBuffer>);

impl PlaybackHandle {
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl std::ops::Deref for PlaybackHandle {
    type Target = PlaybackBuffer;
    fn deref(&self) -> &PlaybackBuffer {
        &self.0
    }
}

/// One buffer the writer side keeps alive.
struct Kept {
    buf: Arc<PlaybackBuffer>,
    /// `None` while current; else the reader's sequence number seen right after retiring.
    retired_at: Option<u64>,
}

struct Shared {
    /// Borrowed from an `Arc` in `kept`; null when the slot is empty.
    current: AtomicPtr<PlaybackBuffer>,
    /// Odd while the reader is between loading `current` and owning its reference.
    reader_seq: AtomicU64,
    kept: Mutex<Vec<Kept>>,
}

/// Writer side of one slot: publish, clear and free from non-realtime threads.
#[derive(Clone)]
pub struct ClipSlot {
    shared: Arc<Shared>,
}

/// Reader side of one slot, for the audio thread. Exactly one exists per slot.
pub struct SlotReader {
    shared: Arc<Shared>,
    /// What `read` returns; refreshed when `current` moves.
    cached: Option<PlaybackHandle>,
}

impl ClipSlot {
    /// A new empty slot: the writer handle (clone it for more writers) and its one reader.
    pub fn new() -> (ClipSlot, SlotReader) {
        let shared = Arc::new(Shared {
            current: AtomicPtr::new(ptr::null_mut()),
            reader_seq: AtomicU64::new(0),
            kept: Mutex::new(Vec::new()),
        });
        (
            ClipSlot {
                shared: shared.clone(),
            },
            SlotReader {
                shared,
                cached: None,
            },
        )
    }

    /// Make `buf` the slot's current buffer. The previous one stays alive for voices still
    /// playing it and is freed by a later [`collect`](Self::collect) on a writer thread.
    pub fn publish(&self, buf: Arc<PlaybackBuffer>) {
        let new = Arc::as_ptr(&buf).cast_mut();
        let mut kept = self.shared.kept.lock();
        // The keeper holds exactly one clone per buffer, so `strong_count == 1` means "free".
        match kept.iter_mut().find(|k| Arc::ptr_eq(&k.buf, &buf)) {
            Some(k) => k.retired_at = None, // republished: `buf` drops here, the keeper has one
            None => kept.push(Kept {
                buf,
                retired_at: None,
            }),
        }
        let old = self.shared.current.swap(new, Ordering::SeqCst);
        if old != new {
            self.retire(&mut kept, old);
        }
        Self::collect_locked(&self.shared, &mut kept);
    }

    /// Empty the slot; readers see `None` from their next read on.
    pub fn clear(&self) {
        let mut kept = self.shared.kept.lock();
        let old = self.shared.current.swap(ptr::null_mut(), Ordering::SeqCst);
        self.retire(&mut kept, old);
        Self::collect_locked(&self.shared, &mut kept);
    }

    /// Free retired buffers that no reader can reach any more. Returns how many were freed.
    /// Call periodically from a non-realtime thread.
    pub fn collect(&self) -> usize {
        let mut kept = self.shared.kept.lock();
        Self::collect_locked(&self.shared, &mut kept)
    }

    /// Retired buffers not yet freed (still playing, or awaiting the next collect).
    pub fn pending(&self) -> usize {
        self.shared
            .kept
            .lock()
            .iter()
            .filter(|k| k.retired_at.is_some())
            .count()
    }

    /// Id of the current buffer, if any.
    pub fn current_id(&self) -> Option<u64> {
        let kept = self.shared.kept.lock();
        let cur = self.shared.current.load(Ordering::SeqCst);
        kept.iter()
            .find(|k| ptr::eq(Arc::as_ptr(&k.buf), cur))
            .map(|k| k.buf.id)
    }

    fn retire(&self, kept: &mut [Kept], old: *mut PlaybackBuffer) {
        if old.is_null() {
            return;
        }
        // Read after the swap (SeqCst on both sides): see the module docs.
        let seq = self.shared.reader_seq.load(Ordering::SeqCst);
        if let Some(k) = kept.iter_mut().find(|k| ptr::eq(Arc::as_ptr(&k.buf), old)) {
            k.retired_at = Some(seq);
        }
    }

    fn collect_locked(shared: &Shared, kept: &mut Vec<Kept>) -> usize {
        // SeqCst (at least Acquire): pairs with the reader's release store of the even count, so
        // a buffer it finished with is seen as finished; SeqCst also orders it after our swaps.
        let now = shared.reader_seq.load(Ordering::SeqCst);
        let before = kept.len();
        kept.retain(|k| match k.retired_at {
            None => true,
            Some(seq) => {
                let unreachable = seq % 2 == 0 || now != seq;
                // With the keeper the only holder left and no way to get a new handle,
                // dropping here (a writer thread) is the buffer's one and only free.
                !(unreachable && Arc::strong_count(&k.buf) == 1)
            }
        });
        before - kept.len()
    }
}

impl SlotReader {
    /// The slot's current buffer, for this callback. Wait-free, no allocation, no free.
    ///
    /// The buffer is cached, so it stays valid until the next `read`/`acquire` even if a
    /// writer publishes meanwhile; a voice that must outlive that takes [`acquire`](Self::acquire).
    pub fn read(&mut self) -> Option<&PlaybackBuffer> {
        let cur = self.shared.current.load(Ordering::Acquire);
        let cached = self
            .cached
            .as_ref()
            .map_or(ptr::null(), |h| Arc::as_ptr(&h.0));
        // The cached handle keeps its buffer alive, so its address can't have been reused:
        // equal pointers really mean "unchanged".
        if !ptr::eq(cur, cached) {
            // Replacing the old handle only decrements its count (the keeper holds one).
            self.cached = self.shared.take_current();
        }
        self.cached.as_deref()
    }

    /// A handle to the current buffer that a voice keeps until it ends. Wait-free, no
    /// allocation; dropping the handle later on the audio thread doesn't free.
    pub fn acquire(&mut self) -> Option<PlaybackHandle> {
        self.read();
        self.cached.clone()
    }

    /// Id of the current buffer (refreshes the cache like [`read`](Self::read)).
    pub fn current_id(&mut self) -> Option<u64> {
        self.read().map(|b| b.id)
    }
}

impl Shared {
    /// Turn `current` into an owned reference. Only the slot's single reader calls this
    /// (guaranteed by `&mut SlotReader`), so it is the only thread storing to `reader_seq`.
    fn take_current(&self) -> Option<PlaybackHandle> {
        let seq = self.reader_seq.load(Ordering::Relaxed);
        self.reader_seq.store(seq + 1, Ordering::SeqCst); // odd: inside
        let p = self.current.load(Ordering::SeqCst);
        let handle = if p.is_null() {
            None
        } else {
            // SAFETY: `p` came from `Arc::as_ptr` of an `Arc<PlaybackBuffer>` in `kept`.
            // `collect` only drops that Arc once it saw `reader_seq` even at or after
            // retirement, or different from the odd value it recorded, i.e. after this
            // function's release store below; until then the allocation is live. We add
            // our own strong reference before leaving, and `from_raw` adopts exactly it.
            unsafe {
                Arc::increment_strong_count(p);
                Some(PlaybackHandle(Arc::from_raw(p)))
            }
        };
        self.reader_seq.store(seq + 2, Ordering::Release); // even: out
        handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn buffer(id: u64) -> Arc<PlaybackBuffer> {
        // Distinct contents per id: length and every sample derive from it.
        let len = 1 + (id % 97) as usize;
        Arc::new(PlaybackBuffer::new(vec![id as f32; len], 48_000, id))
    }

    fn consistent(b: &PlaybackBuffer) -> bool {
        b.len() == 1 + (b.id() % 97) as usize && b.samples().iter().all(|&s| s == b.id() as f32)
    }

    #[test]
    fn publish_read_clear() {
        let (slot, mut reader) = ClipSlot::new();
        assert!(reader.read().is_none());
        slot.publish(buffer(1));
        assert_eq!(reader.read().map(|b| b.id()), Some(1));
        let voice = reader.acquire().unwrap();
        slot.publish(buffer(2));
        assert_eq!(reader.read().map(|b| b.id()), Some(2));
        assert_eq!(slot.current_id(), Some(2));
        // Buffer 1 is retired but a voice still plays it.
        assert_eq!((slot.collect(), slot.pending()), (0, 1));
        assert_eq!(voice.id(), 1);
        assert!(consistent(&voice));
        drop(voice);
        assert_eq!((slot.collect(), slot.pending()), (1, 0));
        slot.clear();
        assert!(reader.read().is_none());
        // The reader's cache let go of buffer 2 on that read; the writer frees it.
        assert_eq!((slot.collect(), slot.pending()), (1, 0));
        assert_eq!(slot.current_id(), None);
    }

    #[test]
    fn republishing_the_same_buffer_is_not_double_kept() {
        let (slot, mut reader) = ClipSlot::new();
        let a = buffer(1);
        slot.publish(a.clone());
        slot.publish(buffer(2));
        slot.publish(a.clone());
        // Buffer 2 was never read, so the publish that retired it freed it at once.
        assert_eq!(slot.pending(), 0);
        assert_eq!(reader.read().map(|b| b.id()), Some(1));
        drop(a);
        slot.clear();
        assert_eq!(slot.pending(), 1); // the reader's cache still holds it
        assert!(reader.read().is_none());
        // A second keeper entry would keep the count above 1 forever.
        assert_eq!((slot.collect(), slot.pending()), (1, 0));
    }

    #[test]
    fn externally_held_buffers_wait_for_their_owner() {
        let (slot, _reader) = ClipSlot::new();
        let a = buffer(1);
        slot.publish(a.clone());
        slot.clear();
        assert_eq!((slot.collect(), slot.pending()), (0, 1));
        drop(a);
        assert_eq!(slot.collect(), 1);
    }

    #[test]
    fn concurrent_publish_and_read() {
        const N: u64 = 10_000;
        let (slot, mut reader) = ClipSlot::new();
        let writer = {
            let slot = slot.clone();
            thread::spawn(move || {
                for id in 1..=N {
                    slot.publish(buffer(id));
                    if id % 1000 == 500 {
                        slot.clear();
                    }
                }
            })
        };
        let reader = thread::spawn(move || {
            let mut voices: Vec<PlaybackHandle> = Vec::with_capacity(8);
            let (mut last, mut seen, mut reads) = (0u64, 0u64, 0u64);
            while last < N {
                reads += 1;
                if let Some(b) = reader.read() {
                    assert!(consistent(b), "torn buffer {}", b.id());
                    assert!(b.id() >= last, "id went back from {last} to {}", b.id());
                    seen += (b.id() != last) as u64;
                    last = b.id();
                }
                // Voices start now and then, and end a few reads later.
                if reads % 7 == 0 && voices.len() < 8 {
                    voices.extend(reader.acquire());
                }
                if reads % 11 == 0 && !voices.is_empty() {
                    voices.remove(0);
                }
                for v in &voices {
                    assert!(consistent(v), "voice buffer {} changed under it", v.id());
                }
            }
            drop(voices);
            (seen, reader)
        });
        writer.join().unwrap();
        let (seen, mut reader) = reader.join().unwrap();
        assert!(seen >= 1);
        assert_eq!(reader.read().map(|b| b.id()), Some(N));
        slot.collect();
        assert_eq!(
            slot.pending(),
            0,
            "every retired buffer is freed by the writer side"
        );
        drop(reader);
        assert_eq!(slot.current_id(), Some(N));
    }
}
