//! A small, real CLAP host for end-to-end tests: it loads the bundled `.clap` the way a DAW
//! does, instantiates the plugin, activates it at a given rate and block size, feeds note
//! events sample-accurately and collects every output port.

pub mod blob;

use std::ffi::CString;
use std::path::{Path, PathBuf};

use clack_extensions::audio_ports::{AudioPortInfoBuffer, PluginAudioPorts};
use clack_extensions::audio_ports_config::{AudioPortsConfigBuffer, PluginAudioPortsConfig};
use clack_extensions::state::PluginState;
use clack_host::events::event_types::{NoteOffEvent, NoteOnEvent, TransportEvent, TransportFlags};
use clack_host::events::EventFlags;
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};

/// Root of the workspace (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Cargo's target folder, honouring `CARGO_TARGET_DIR` like cargo itself.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The bundle under test: `EZAUDIO_CLAP_BUNDLE`, else `<target>/test-bundles/EzAudio-test.clap`
/// (`cargo xtask bundle-test`: kept apart from the user's `<target>/bundled/`).
/// Panics with instructions when it does not exist, so a missing bundle fails the suite.
pub fn clap_bundle() -> PathBuf {
    let path = std::env::var_os("EZAUDIO_CLAP_BUNDLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("test-bundles/EzAudio-test.clap"));
    assert!(
        path.exists(),
        "CLAP bundle {} is missing: build it with `cargo xtask bundle-test ezaudio-plugin --features assert_process_allocs,test_alloc_probe` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The VST3 bundle next to the CLAP one: `EZAUDIO_VST3_BUNDLE`, else
/// `<target>/test-bundles/EzAudio-test.vst3`; panics with instructions when missing.
pub fn vst3_bundle() -> PathBuf {
    let path = std::env::var_os("EZAUDIO_VST3_BUNDLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("test-bundles/EzAudio-test.vst3"));
    assert!(
        path.exists(),
        "VST3 bundle {} is missing: build it with `cargo xtask bundle-test ezaudio-plugin --features assert_process_allocs,test_alloc_probe` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Whether a missing external host (pedalboard, Ardour) fails the test instead of skipping
/// it: in CI (`CI` set, as `.ci/run` runs) or with `EZAUDIO_REQUIRE_HOSTS=1`.
pub fn hosts_required() -> bool {
    std::env::var_os("EZAUDIO_REQUIRE_HOSTS").is_some_and(|v| v == "1")
        || std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// The reference fixtures (`EZAUDIO_FIXTURES`, default `../shared/fixtures/ezaudio-ref`) with
/// the tiny model and the tiny ControlNet; panics with instructions when they are missing.
pub fn fixtures_with_controlnet() -> PathBuf {
    let dir = std::env::var_os("EZAUDIO_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures/ezaudio-ref"));
    assert!(
        dir.join("model-tiny/config.yml").is_file()
            && dir.join("controlnet/generate.json").is_file(),
        "fixtures (model-tiny, controlnet) missing at {} (set EZAUDIO_FIXTURES)",
        dir.display()
    );
    dir
}

pub const PLUGIN_ID: &str = "org.ezaudio.daw.instrument";

struct TestHostShared;

impl SharedHandler<'_> for TestHostShared {
    fn request_restart(&self) {}
    fn request_process(&self) {}
    fn request_callback(&self) {}
}

struct TestHost;

impl HostHandlers for TestHost {
    type Shared<'a> = TestHostShared;
    type MainThread<'a> = ();
    type AudioProcessor<'a> = ();
}

/// A note event at an absolute sample position of the render.
#[derive(Debug, Clone, Copy)]
pub struct Note {
    pub at: u32,
    pub key: u8,
    pub velocity: f64,
    pub on: bool,
}

impl Note {
    pub fn on(at: u32, key: u8, velocity: f64) -> Self {
        Self {
            at,
            key,
            velocity,
            on: true,
        }
    }
    pub fn off(at: u32, key: u8) -> Self {
        Self {
            at,
            key,
            velocity: 0.0,
            on: false,
        }
    }
}

/// Rendered audio: `ports[port][channel][frame]`, port 0 being the main output.
pub type Render = Vec<Vec<Vec<f32>>>;

/// The host transport at the first frame of a block: playing, and the position in samples.
pub type TransportAt<'a> = &'a dyn Fn(u32) -> Option<(bool, i64)>;

/// Everything a render can vary; [`RenderSpec::new`] gives a plain one.
pub struct RenderSpec<'a> {
    pub sample_rate: f64,
    /// Frames per `process()` call.
    pub block: u32,
    /// The `max_frames_count` announced at activation; a host that announces less than it
    /// passes is misbehaving, which is what the over-long-block tests simulate.
    pub announced: u32,
    pub frames: u32,
    pub notes: &'a [Note],
    /// `inputs[port][channel][frame]`.
    pub inputs: &'a [Vec<Vec<f32>>],
    /// Transport per block, from the render frame of the block's start (None: no transport).
    pub transport: Option<TransportAt<'a>>,
}

impl<'a> RenderSpec<'a> {
    pub fn new(sample_rate: f64, block: u32, frames: u32, notes: &'a [Note]) -> Self {
        Self {
            sample_rate,
            block,
            announced: block,
            frames,
            notes,
            inputs: &[],
            transport: None,
        }
    }
}

/// A CLAP transport event at `position` samples (seconds timeline, 120 BPM, 4/4).
fn transport_event(sample_rate: f64, playing: bool, position: i64) -> TransportEvent {
    let seconds = position as f64 / sample_rate;
    let beats = seconds * 2.0;
    let mut flags = TransportFlags::HAS_TEMPO
        | TransportFlags::HAS_SECONDS_TIMELINE
        | TransportFlags::HAS_BEATS_TIMELINE
        | TransportFlags::HAS_TIME_SIGNATURE;
    if playing {
        flags |= TransportFlags::IS_PLAYING;
    }
    TransportEvent {
        header: clack_host::events::EventHeader::new_core(0, EventFlags::empty()),
        flags,
        song_pos_beats: BeatTime::from_float(beats),
        song_pos_seconds: SecondsTime::from_float(seconds),
        tempo: 120.0,
        tempo_inc: 0.0,
        loop_start_beats: BeatTime::from_int(0),
        loop_end_beats: BeatTime::from_int(0),
        loop_start_seconds: SecondsTime::from_int(0),
        loop_end_seconds: SecondsTime::from_int(0),
        bar_start: BeatTime::from_float((beats / 4.0).floor() * 4.0),
        bar_number: (beats / 4.0).floor() as i32,
        time_signature_numerator: 4,
        time_signature_denominator: 4,
    }
}

pub struct PluginUnderTest {
    /// Render in real time (sleep until each block is due) instead of as fast as possible,
    /// as a DAW's audio callback is driven.
    pub real_time: bool,
    /// How long each `process()` call of the last render took.
    pub process_times: Vec<std::time::Duration>,
    instance: PluginInstance<TestHost>,
    // The entry must outlive the instance: keep it last so it drops after.
    _entry: PluginEntry,
}

impl PluginUnderTest {
    pub fn load(bundle: &Path) -> Result<Self, String> {
        // SAFETY: loading a CLAP library runs its initialisation code; the bundle is our own.
        let entry = unsafe { PluginEntry::load(bundle) }
            .map_err(|e| format!("cannot load {}: {e:?}", bundle.display()))?;
        let host_info = HostInfo::new("ezaudio-tests", "EzAudio", "https://example.invalid", "0.1")
            .map_err(|e| format!("{e:?}"))?;
        let id = CString::new(PLUGIN_ID).map_err(|e| e.to_string())?;
        let instance =
            PluginInstance::<TestHost>::new(|_| TestHostShared, |_| (), &entry, &id, &host_info)
                .map_err(|e| format!("cannot instantiate {PLUGIN_ID}: {e:?}"))?;
        Ok(Self {
            real_time: false,
            process_times: Vec::new(),
            instance,
            _entry: entry,
        })
    }

    /// Plugin descriptor ids found in the bundle's factory.
    pub fn descriptor_ids(bundle: &Path) -> Result<Vec<String>, String> {
        // SAFETY: as in `load`.
        let entry = unsafe { PluginEntry::load(bundle) }.map_err(|e| format!("{e:?}"))?;
        let factory = entry.get_plugin_factory().ok_or("no plugin factory")?;
        Ok(factory
            .plugin_descriptors()
            .filter_map(|d| d.id().map(|id| id.to_string_lossy().into_owned()))
            .collect())
    }

    /// Channel counts of the output ports, main first, as the plugin declares them.
    pub fn output_ports(&mut self) -> Vec<u32> {
        self.ports(false)
    }

    /// Channel counts of the input ports (the sidechain), as the plugin declares them.
    pub fn input_ports(&mut self) -> Vec<u32> {
        self.ports(true)
    }

    fn ports(&mut self, is_input: bool) -> Vec<u32> {
        let handle = self.instance.plugin_handle();
        let Some(ports) = handle.get_extension::<PluginAudioPorts>() else {
            return Vec::new();
        };
        let mut buffer = AudioPortInfoBuffer::new();
        (0..ports.count(&handle, is_input))
            .filter_map(|i| {
                ports
                    .get(&handle, i, is_input, &mut buffer)
                    .map(|p| p.channel_count)
            })
            .collect()
    }

    /// Names of the audio-port configurations the plugin offers (CLAP audio-ports-config), in
    /// order; the index is the id [`Self::select_layout`] takes.
    pub fn layouts(&mut self) -> Vec<String> {
        let handle = self.instance.plugin_handle();
        let Some(configs) = handle.get_extension::<PluginAudioPortsConfig>() else {
            return Vec::new();
        };
        let mut buffer = AudioPortsConfigBuffer::new();
        (0..configs.count(&handle))
            .filter_map(|i| {
                configs
                    .get(&handle, i, &mut buffer)
                    .map(|c| String::from_utf8_lossy(c.name).into_owned())
            })
            .collect()
    }

    /// Selects audio-port configuration `id` (while inactive, as CLAP requires).
    pub fn select_layout(&mut self, id: u32) -> Result<(), String> {
        let handle = self.instance.plugin_handle();
        let configs = handle
            .get_extension::<PluginAudioPortsConfig>()
            .ok_or("no audio-ports-config extension")?;
        let id = ClapId::new(id);
        configs
            .select(&handle, id)
            .map_err(|e| format!("select layout: {e}"))
    }

    pub fn save_state(&mut self) -> Result<Vec<u8>, String> {
        let handle = self.instance.plugin_handle();
        let state = handle
            .get_extension::<PluginState>()
            .ok_or("no state extension")?;
        let mut bytes = Vec::new();
        state
            .save(&handle, &mut bytes)
            .map_err(|e| format!("{e:?}"))?;
        Ok(bytes)
    }

    pub fn load_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        let handle = self.instance.plugin_handle();
        let state = handle
            .get_extension::<PluginState>()
            .ok_or("no state extension")?;
        state
            .load(&handle, &mut &bytes[..])
            .map_err(|e| format!("{e:?}"))
    }

    /// Activates at `sample_rate` with blocks of at most `block` frames, renders `frames` frames
    /// with `notes`, and deactivates. Blocks are split so every event lands at its exact sample.
    pub fn render(
        &mut self,
        sample_rate: f64,
        block: u32,
        frames: u32,
        notes: &[Note],
    ) -> Result<Render, String> {
        self.render_with_inputs(sample_rate, block, frames, notes, &[])
    }

    /// [`Self::render`] with audio on the input ports: `inputs[port][channel][frame]`. Every
    /// input port the plugin declares gets a buffer, as a DAW provides: ports, channels or
    /// frames that `inputs` lacks are silence.
    pub fn render_with_inputs(
        &mut self,
        sample_rate: f64,
        block: u32,
        frames: u32,
        notes: &[Note],
        inputs: &[Vec<Vec<f32>>],
    ) -> Result<Render, String> {
        self.render_spec(&RenderSpec {
            inputs,
            ..RenderSpec::new(sample_rate, block, frames, notes)
        })
    }

    /// The general render: see [`RenderSpec`].
    pub fn render_spec(&mut self, spec: &RenderSpec) -> Result<Render, String> {
        let RenderSpec {
            sample_rate,
            block,
            announced,
            frames,
            notes,
            inputs,
            transport,
        } = *spec;
        let in_ports = self.input_ports();
        let ports = self.output_ports();
        if ports.is_empty() {
            return Err("plugin declares no output ports".into());
        }
        let config = PluginAudioConfiguration {
            sample_rate,
            min_frames_count: 1,
            max_frames_count: announced,
        };
        let stopped = self
            .instance
            .activate(|_, _| (), config)
            .map_err(|e| format!("activate: {e:?}"))?;
        let mut processor = stopped
            .start_processing()
            .map_err(|e| format!("start_processing: {e:?}"))?;

        let mut out: Render = ports
            .iter()
            .map(|&ch| vec![vec![0.0f32; frames as usize]; ch as usize])
            .collect();
        let mut scratch: Vec<Vec<Vec<f32>>> = ports
            .iter()
            .map(|&ch| vec![vec![0.0f32; block as usize]; ch as usize])
            .collect();
        let mut output_ports =
            AudioPorts::with_capacity(ports.iter().sum::<u32>() as usize, ports.len());
        let mut input_ports =
            AudioPorts::with_capacity(in_ports.iter().sum::<u32>() as usize, in_ports.len());
        let mut in_scratch: Vec<Vec<Vec<f32>>> = in_ports
            .iter()
            .map(|&ch| vec![vec![0.0f32; block as usize]; ch as usize])
            .collect();
        let mut events = EventBuffer::new();
        let mut out_events = EventBuffer::new();
        let mut steady_time = 0u64;
        self.process_times.clear();
        self.process_times
            .reserve(frames.div_ceil(block.max(1)) as usize);
        let wall_start = std::time::Instant::now();

        let mut start = 0u32;
        while start < frames {
            let len = block.min(frames - start);
            events.clear();
            for n in notes.iter().filter(|n| n.at >= start && n.at < start + len) {
                let pckn = Pckn::new(0u16, 0u16, n.key as u16, 0u32);
                if n.on {
                    events.push(&NoteOnEvent::new(n.at - start, pckn, n.velocity));
                } else {
                    events.push(&NoteOffEvent::new(n.at - start, pckn, 0.0));
                }
            }
            for (p, port) in in_scratch.iter_mut().enumerate() {
                for (c, channel) in port.iter_mut().enumerate() {
                    let given = inputs.get(p).and_then(|port| port.get(c));
                    for (i, s) in channel[..len as usize].iter_mut().enumerate() {
                        *s = given
                            .and_then(|g| g.get((start + i as u32) as usize))
                            .copied()
                            .unwrap_or(0.0);
                    }
                }
            }
            let input_audio = input_ports.with_input_buffers(in_scratch.iter_mut().map(|port| {
                AudioPortBuffer {
                    latency: 0,
                    channels: AudioPortBufferType::f32_input_only(
                        port.iter_mut()
                            .map(|c| InputChannel::variable(&mut c[..len as usize])),
                    ),
                }
            }));
            let mut output_audio =
                output_ports.with_output_buffers(scratch.iter_mut().map(|port| AudioPortBuffer {
                    latency: 0,
                    channels: AudioPortBufferType::f32_output_only(
                        port.iter_mut().map(|c| &mut c[..len as usize]),
                    ),
                }));
            // Under RealtimeSanitizer (feature `rtsan`) the plugin's process() may not
            // allocate, lock or make blocking calls.
            if self.real_time {
                let due = std::time::Duration::from_secs_f64(start as f64 / sample_rate);
                if let Some(wait) = due.checked_sub(wall_start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let transport_now = transport
                .and_then(|at| at(start).map(|(p, pos)| transport_event(sample_rate, p, pos)));
            #[cfg(feature = "rtsan")]
            rtsan_standalone::realtime_enter();
            let called = std::time::Instant::now();
            let processed = processor.process(
                &input_audio,
                &mut output_audio,
                &InputEvents::from_buffer(&events),
                &mut OutputEvents::from_buffer(&mut out_events),
                Some(steady_time),
                transport_now.as_ref(),
            );
            self.process_times.push(called.elapsed());
            #[cfg(feature = "rtsan")]
            rtsan_standalone::realtime_exit();
            processed.map_err(|e| format!("process: {e:?}"))?;
            for (port, scratch_port) in out.iter_mut().zip(&scratch) {
                for (channel, scratch_channel) in port.iter_mut().zip(scratch_port) {
                    channel[start as usize..(start + len) as usize]
                        .copy_from_slice(&scratch_channel[..len as usize]);
                }
            }
            steady_time += len as u64;
            start += len;
        }
        let stopped = processor.stop_processing();
        self.instance.deactivate(stopped);
        Ok(out)
    }
}
