//! EzAudio as a DAW instrument: pads hold generated clips and play them from MIDI.
//!
//! This file is the plugin itself: ports, activate, and `process()`, which turns MIDI and the
//! pads' parameters into voices. The rooms, each depending only on those listed before it
//! (`plugin/tests/layering.rs` checks that no arrow points back):
//!
//! * [`layout`]: the fixed shape (ports, pad count, rate bound, capture length).
//! * [`audio`]: the realtime path (voices, sidechain recorder); reads only published clips.
//! * [`level`]: a pad's output level (off / peak / LUFS), a gain applied at publish.
//! * [`state`], [`store`]: the persisted format, and the live pads behind a lock.
//! * [`params`]: the host-automatable parameters (and the store, persisted with them).
//! * [`status`]: what the editor sees of jobs, the model and downloads.
//! * [`jobs`]: what each action submits to the engine, and its seed.
//! * [`shared`]: what the threads share, and the publisher (resample, hand to the audio thread).
//! * [`generation`]: the generation thread (runner, engine backend, sidechain follow, download).
//! * [`export`], [`editor`]: WAV export and the UI.
//!
//! Generation and resampling happen on the generation thread and on activate; the audio thread
//! only reads what the publisher handed over.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ezaudio_engine::audio::published::SlotReader;
use nice_plug::prelude::*;

pub mod audio;
pub mod editor;
pub mod export;
pub mod generation;
pub mod jobs;
pub mod layout;
pub mod level;
pub mod params;
pub mod shared;
pub mod state;
pub mod status;
pub mod store;

use audio::locked::{BlockTransport, LockPoints, LockedPad, LockedPlayer};
#[cfg(test)]
mod state_fuzz;

use audio::recorder::{CaptureBuffer, Recorder};
use audio::voice::{VoiceStart, FADE_MS, NO_KEY};
use audio::voices::{mix, pan_gains, PadGains, Voices};
use generation::backend::EngineBackend;
use generation::{follow, Generator};
use layout::{MAX_RATE, PAD_COUNT};
use params::{EzAudioParams, PlayMode};
use shared::Shared;
use store::PadStore;

/// Largest gain a (pad or main) gain parameter can ask for: +12 dB.
const MAX_GAIN: f32 = 3.982;

/// `v` clamped to `[lo, hi]`, or `default` when it is not a number.
#[inline]
fn sane(v: f32, default: f32, lo: f32, hi: f32) -> f32 {
    if v.is_nan() {
        default
    } else {
        v.clamp(lo, hi)
    }
}

pub struct EzAudio {
    params: Arc<EzAudioParams>,
    shared: Arc<Shared>,
    /// The audio thread's side of each pad's clip slot.
    readers: Vec<SlotReader>,
    voices: Voices,
    gains: PadGains,
    sample_rate: f32,
    /// Records the sidechain into the preallocated capture buffer (audio thread).
    recorder: Recorder,
    /// Transport-locked pads: where their clips start (written off the audio thread) and
    /// their voices.
    locks: Arc<LockPoints>,
    locked: LockedPlayer,
    editor_state: Arc<nice_plug_egui::EguiEditorState>,
    /// Test-only switch (feature `test_alloc_probe`): allocate in process on purpose.
    alloc_probe: bool,
    /// The model folder last handed to the generation thread.
    model_folder_sent: String,
    // Last: stops the generation thread when the plugin goes away.
    generator: Generator,
}

impl Default for EzAudio {
    fn default() -> Self {
        let store = Arc::new(PadStore::default());
        let mut params = EzAudioParams::new(store.clone());
        let (shared, readers) = Shared::new(store);
        follow::publish_after_state_loads(&shared);
        // One value: the host restores it into the params, the generation thread reads it.
        params.generation_cores = shared.generation_cores.clone();
        let params = Arc::new(params);
        let locks = shared.locks.clone();
        let generator = Generator::spawn(shared.clone(), Box::new(EngineBackend::default()));
        Self {
            params,
            shared,
            readers,
            voices: Voices::default(),
            gains: [[0.0; 2]; PAD_COUNT],
            sample_rate: 48_000.0,
            recorder: Recorder::default(),
            locks,
            locked: LockedPlayer::default(),
            editor_state: editor::default_state(),
            alloc_probe: false,
            model_folder_sent: String::new(),
            generator,
        }
    }
}

impl EzAudio {
    /// Starts pad `pad` (audio thread). `semitones` adds to the pad's pitch (chromatic mode);
    /// `audition` plays it once regardless of gate mode.
    fn trigger(&mut self, pad: usize, key: u8, velocity: f32, semitones: f64, audition: bool) {
        let Some(reader) = self.readers.get_mut(pad) else {
            return;
        };
        let Some(buffer) = reader.acquire() else {
            return;
        };
        let p = self.params.pad(pad);
        let len = buffer.len() as f64;
        let start = (sane(p.start.value(), 0.0, 0.0, 1.0) as f64 * len).round() as usize;
        let end = (sane(p.end.value(), 1.0, 0.0, 1.0) as f64 * len).round() as usize;
        // Values are clamped here: a state or host can set plain values outside the ranges.
        let pitch = sane(p.pitch.value(), 0.0, -24.0, 24.0) as f64;
        let ratio = 2f64.powf((pitch + semitones).clamp(-96.0, 96.0) / 12.0);
        let fade_len = (FADE_MS * 1e-3 * self.sample_rate).round().max(1.0) as u32;
        let release_len = (sane(p.release.value(), 50.0, 1.0, 5000.0) * 1e-3 * self.sample_rate)
            .round()
            .max(fade_len as f32) as u32;
        let start = VoiceStart {
            pad: pad as u8,
            key,
            velocity: sane(velocity, 0.0, 0.0, 1.0),
            ratio,
            start,
            end,
            gate: !audition && p.mode.value() == PlayMode::Gate,
            choke: p.choke.value().clamp(0, params::CHOKE_GROUPS) as u8,
            stem: p.output.value().clamp(0, PAD_COUNT as i32) as u8,
            fade_len,
            release_len,
        };
        self.voices.note_on(start, buffer);
    }

    fn handle_event(&mut self, event: NoteEvent<()>) {
        match event {
            NoteEvent::NoteOn { key, velocity, .. } => {
                let Some(k) = key.number() else { return };
                if velocity <= 0.0 {
                    self.voices.note_off(Some(k));
                } else if self.params.chromatic.value() {
                    let pad = (self.params.chromatic_pad.value() - 1).clamp(0, PAD_COUNT as i32 - 1)
                        as usize;
                    let semitones = k as f64 - self.params.chromatic_root.value() as f64;
                    self.trigger(pad, k, velocity, semitones, false);
                } else {
                    for pad in 0..PAD_COUNT {
                        if self.params.pad(pad).note.value() == k as i32 {
                            self.trigger(pad, k, velocity, 0.0, false);
                        }
                    }
                }
            }
            NoteEvent::NoteOff { key, .. } => self.voices.note_off(key.number()),
            NoteEvent::Choke { key, .. } => self.voices.choke(key.number()),
            _ => {}
        }
    }

    /// Schedules this block's starts and stops of the transport-locked pads (audio thread):
    /// a pad is locked when it has a lock origin (it follows the sidechain and its capture
    /// recorded a position), its lock parameter is on and it has a clip.
    fn plan_locked(&mut self, t: BlockTransport) {
        self.locked.begin(t);
        if !t.playing || t.position.is_none() {
            return;
        }
        let fade_len = (FADE_MS * 1e-3 * self.sample_rate).round().max(1.0) as u32;
        for (pad, reader) in self.readers.iter_mut().enumerate().take(PAD_COUNT) {
            let p = self.params.pad(pad);
            let Some(origin) = self.locks.get(pad).filter(|_| p.lock.value()) else {
                continue;
            };
            let Some(buffer) = reader.acquire() else {
                continue;
            };
            let len = buffer.len() as f64;
            let locked = LockedPad {
                origin,
                start: (sane(p.start.value(), 0.0, 0.0, 1.0) as f64 * len).round() as usize,
                end: (sane(p.end.value(), 1.0, 0.0, 1.0) as f64 * len).round() as usize,
                stem: p.output.value().clamp(0, PAD_COUNT as i32) as u8,
                fade_len,
            };
            self.locked.plan(pad, locked, t, buffer);
        }
    }

    /// Steps every smoother once and computes the pads' left/right gains for one frame.
    fn step_gains(&mut self) -> f32 {
        for (g, p) in self.gains.iter_mut().zip(self.params.pads()) {
            *g = pan_gains(
                sane(p.gain.smoothed.next(), 0.0, 0.0, MAX_GAIN),
                p.pan.smoothed.next(),
            );
        }
        sane(self.params.main_gain.smoothed.next(), 0.0, 0.0, MAX_GAIN)
    }
}

impl Plugin for EzAudio {
    const NAME: &'static str = "EzAudio";
    const VENDOR: &'static str = "EzAudio for DAWs";
    const URL: &'static str = "https://github.com/haidog-yaqub/EzAudio";
    const EMAIL: &'static str = "none@example.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = layout::LAYOUTS;
    const MIDI_INPUT: MidiConfig = MidiConfig::Basic;
    const SAMPLE_ACCURATE_AUTOMATION: bool = true;

    type Editor = nice_plug_egui::EguiEditor<editor::EditorApp>;
    type SysExMessage = ();
    type BackgroundTask = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn editor(&mut self, _async_executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        // The window opens at the size saved with the project (restored into the params after
        // construction, so the state is built here, while no window uses it).
        if !self.editor_state.is_open() {
            let (w, h) = params::editor_size(*self.params.editor_size.read());
            self.editor_state = editor::state_of_size(w, h);
        }
        editor::create(
            self.params.clone(),
            self.shared.clone(),
            self.generator.sender(),
            self.editor_state.clone(),
        )
    }

    fn activate(
        &mut self,
        _layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        let rate = buffer_config.sample_rate;
        if !(1.0..=MAX_RATE as f32).contains(&rate) {
            return false;
        }
        self.sample_rate = rate;
        self.alloc_probe = cfg!(feature = "test_alloc_probe")
            && std::env::var_os("EZAUDIO_TEST_ALLOC_IN_PROCESS").is_some();
        // Main thread: resample and publish every pad's clip at this rate before audio runs.
        self.shared
            .host_rate
            .store(rate.round() as u32, Ordering::SeqCst);
        // The capture buffer, allocated here (10 s at this rate) so process() never allocates.
        let capture = {
            let mut slot = self.shared.capture.lock();
            match slot.as_ref().filter(|b| b.rate() == rate.round() as u32) {
                Some(b) => b.clone(),
                None => slot.insert(CaptureBuffer::new(rate.round() as u32)).clone(),
            }
        };
        capture.set_limit_seconds(self.shared.store.with(|b| follow::capture_seconds(&b.pads)));
        self.recorder.set_buffer(capture);
        self.shared.publish_all();
        // The lock origins at this rate, before the first block (the generation thread keeps
        // them up to date afterwards).
        follow::publish_locks(&self.shared);
        // A model folder chosen in the editor and saved with the project (once per change).
        let folder = self.params.model_folder.read().clone();
        if !folder.is_empty() && folder != self.model_folder_sent {
            let _ = self
                .generator
                .sender()
                .send(generation::Command::UseModelFolder(folder.clone().into()));
            self.model_folder_sent = folder;
        }
        true
    }

    fn reset(&mut self) {
        self.voices.reset();
        self.locked.reset();
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        #[cfg(feature = "test_alloc_probe")]
        if self.alloc_probe {
            std::hint::black_box(Vec::<u8>::with_capacity(64));
        }
        // Any block length works here: everything below runs frame by frame on fixed-size state,
        // so a host passing more frames than it announced costs time, never memory.
        let block = {
            let transport = context.transport();
            let sidechain = aux
                .inputs
                .get(layout::SIDECHAIN_PORT)
                .map(|b| b.as_slice_immutable())
                .unwrap_or(&[]);
            let (playing, position) = (transport.playing, transport.pos_samples());
            self.recorder.process(
                self.params.capture.value(),
                sidechain,
                buffer.samples(),
                playing,
                position,
            );
            BlockTransport {
                playing,
                position,
                frames: buffer.samples(),
            }
        };
        self.plan_locked(block);
        // The editor's Stop: auditions and previews carry no MIDI key, so this leaves notes
        // the host plays alone. Before new auditions, so Stop then Play restarts.
        if self.shared.stop_auditions.swap(false, Ordering::Relaxed) {
            self.voices.choke(Some(NO_KEY));
        }
        let audition = self.shared.audition.swap(0, Ordering::Relaxed);
        for pad in (0..PAD_COUNT).filter(|p| audition & (1 << p) != 0) {
            self.trigger(pad, NO_KEY, 1.0, 0.0, true);
        }

        let mut next = context.next_event();
        for i in 0..buffer.samples() {
            while let Some(event) = next.filter(|e| e.timing() as usize <= i) {
                self.handle_event(event);
                next = context.next_event();
            }
            let main_gain = self.step_gains();
            let (mut main, mut stems) = ([0.0f32; 2], [[0.0f32; 2]; PAD_COUNT]);
            self.voices.tick(&self.gains, &mut main, &mut stems);
            self.locked.frame(i);
            for v in self.locked.voices_mut() {
                mix(v, &self.gains, &mut main, &mut stems);
            }

            // A port the host left out (or passed with null channels) arrives as empty slices:
            // write only where a sample exists.
            for (channel, value) in buffer.as_slice().iter_mut().zip(main) {
                if let Some(s) = channel.get_mut(i) {
                    *s = value * main_gain;
                }
            }
            for (port, stem) in aux.outputs.iter_mut().zip(&stems) {
                for (channel, value) in port.as_slice().iter_mut().zip(stem) {
                    if let Some(s) = channel.get_mut(i) {
                        *s = *value;
                    }
                }
            }
        }
        // Events stamped past the block (a misbehaving host) still count.
        while let Some(event) = next {
            self.handle_event(event);
            next = context.next_event();
        }
        ProcessStatus::Normal
    }
}

impl ClapPlugin for EzAudio {
    const CLAP_ID: &'static str = "org.ezaudio.daw.instrument";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Text-to-audio instrument: type a sound, generate it locally, play it from MIDI");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::Instrument,
        ClapFeature::Sampler,
        ClapFeature::Stereo,
    ];
}

impl Vst3Plugin for EzAudio {
    const VST3_CLASS_ID: [u8; 16] = *b"EzAudioDAWInstr1";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Instrument, Vst3SubCategory::Sampler];
}

nice_export_clap!(EzAudio);
nice_export_vst3!(EzAudio);

/// Test-only (feature `test_alloc_probe`, never in a release bundle): how many pipelines this
/// process has loaded, read by the CLAP host tests through the bundle's symbol table, since
/// the engine's counters live inside the bundle's copy of the engine.
#[cfg(feature = "test_alloc_probe")]
#[no_mangle]
pub extern "C" fn ezaudio_test_pipeline_loads() -> u64 {
    ezaudio_engine::engine::Engine::pipeline_loads() as u64
}
