//! The audio-thread side of the clip hand-off must never allocate or free.
//!
//! This binary installs `assert_no_alloc`'s allocator: inside `assert_no_alloc(..)` any
//! allocation or deallocation on that thread aborts the process (debug-assertion builds,
//! which `cargo test` uses). `alloc_guard_is_armed` proves the guard is live, so the other
//! tests can't pass vacuously.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use assert_no_alloc::{assert_no_alloc, AllocDisabler};
use ezaudio_engine::audio::published::{ClipSlot, PlaybackBuffer, PlaybackHandle, SlotReader};
use ezaudio_engine::audio::{Clip, ClipMeta};

#[global_allocator]
static A: AllocDisabler = AllocDisabler;

const SLOTS: usize = 16;
const VOICES: usize = 32;

fn buffer(id: u64) -> Arc<PlaybackBuffer> {
    let len = 64 + (id % 509) as usize;
    Arc::new(PlaybackBuffer::new(vec![id as f32; len], 48_000, id))
}

/// One audio callback: every slot is read, voices start and stop, old voices keep playing.
/// Returns a checksum so nothing is optimised away, or what went wrong (panicking here would
/// allocate and abort, hiding the message). Touches no allocator by construction;
/// `assert_no_alloc` checks that claim.
fn callback(
    readers: &mut [SlotReader],
    voices: &mut [Option<PlaybackHandle>; VOICES],
    last_ids: &mut [u64; SLOTS],
    tick: usize,
) -> Result<f32, &'static str> {
    let mut acc = 0.0f32;
    for (s, reader) in readers.iter_mut().enumerate() {
        if let Some(b) = reader.read() {
            if b.id() < last_ids[s] {
                return Err("id went backwards");
            }
            if !b.samples().iter().all(|&x| x == b.id() as f32) {
                return Err("torn buffer");
            }
            last_ids[s] = b.id();
            acc += b.samples()[0];
        }
    }
    // Note-off: dropping a handle on this thread must not free.
    let v = tick % VOICES;
    voices[v] = None;
    // Note-on for a slot, kept across many callbacks.
    voices[(tick * 7 + 3) % VOICES] = readers[tick % SLOTS].acquire();
    for h in voices.iter().flatten() {
        if h.samples()[h.len() - 1] != h.id() as f32 {
            return Err("a voice's buffer changed under it");
        }
        acc += h.samples()[0];
    }
    Ok(acc)
}

#[test]
fn reader_never_allocates_or_frees_under_concurrent_publishing() {
    const PER_SLOT: u64 = 2_000;
    let (writers, mut readers): (Vec<ClipSlot>, Vec<SlotReader>) =
        (0..SLOTS).map(|_| ClipSlot::new()).unzip();
    let done = Arc::new(AtomicBool::new(false));

    let writer = {
        let writers = writers.clone();
        let done = done.clone();
        thread::spawn(move || {
            for id in 1..=PER_SLOT {
                for (s, w) in writers.iter().enumerate() {
                    if (id + s as u64).is_multiple_of(250) {
                        w.clear();
                    } else {
                        w.publish(buffer(id));
                    }
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let audio = thread::spawn(move || {
        let mut voices: [Option<PlaybackHandle>; VOICES] = Default::default();
        let mut last_ids = [0u64; SLOTS];
        let mut tick = 0usize;
        let mut acc = 0.0f32;
        let outcome: Result<(), &str> = assert_no_alloc(|| {
            while !done.load(Ordering::SeqCst) || tick < 1000 {
                acc += callback(&mut readers, &mut voices, &mut last_ids, tick)?;
                tick += 1;
            }
            Ok(())
        });
        std::hint::black_box(acc);
        (readers, voices, outcome, tick)
    });

    writer.join().unwrap();
    let (readers, voices, outcome, ticks) = audio.join().unwrap();
    assert_eq!(outcome, Ok(()), "after {ticks} callbacks");
    // Voices end off the audio thread; then the writers free everything retired.
    drop(voices);
    drop(readers);
    for w in &writers {
        w.collect();
        assert_eq!(w.pending(), 0);
    }
}

#[test]
fn playback_buffer_from_clip_plays_without_allocating() {
    let clip = Clip::new(vec![0.25; 24_000], 24_000, ClipMeta::default());
    let (slot, mut reader) = ClipSlot::new();
    slot.publish(Arc::new(clip.to_playback(48_000, 1).unwrap()));
    let held = assert_no_alloc(|| {
        let b = reader.read().expect("published");
        assert_eq!((b.len(), b.sample_rate()), (48_000, 48_000));
        reader.acquire()
    });
    slot.publish(Arc::new(clip.to_playback(44_100, 2).unwrap()));
    assert_no_alloc(|| {
        assert_eq!(reader.read().map(|b| b.id()), Some(2));
        drop(held); // the last voice on buffer 1 ends on the audio thread: no free
    });
    assert_eq!(slot.collect(), 1, "buffer 1 is freed by the writer side");
}

/// Not a real test: allocates inside the guard, so the process must die. Run by
/// `alloc_guard_is_armed` in a child process.
#[test]
#[ignore]
fn alloc_guard_probe() {
    let v = assert_no_alloc(|| vec![1u8; 64]);
    println!("{}", v.len());
}

#[test]
fn alloc_guard_is_armed() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "alloc_guard_probe",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("memory allocation"),
        "allocating inside assert_no_alloc did not abort: the guard is not active ({stderr})"
    );
}
