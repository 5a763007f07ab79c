//! The plugin's fixed shape, which every other room builds on: the audio ports (a stereo main
//! mix plus one stereo stem output per pad, so every pad can be recorded to its own track, and a
//! stereo sidechain input to capture a track whose loudness a pad's next generation follows),
//! the number of pads, the sample-rate bound and the capture length. The layout is fixed so
//! that projects stay routable; it depends on nothing else in the crate.

use nice_plug::prelude::*;

/// Number of pads (clip slots), and of stem outputs.
pub const PAD_COUNT: usize = 16;

const STEREO: NonZeroU32 = new_nonzero_u32(2);

const STEM_PORTS: [NonZeroU32; PAD_COUNT] = [STEREO; PAD_COUNT];

const STEM_NAMES: [&str; PAD_COUNT] = [
    "Stem 1", "Stem 2", "Stem 3", "Stem 4", "Stem 5", "Stem 6", "Stem 7", "Stem 8", "Stem 9",
    "Stem 10", "Stem 11", "Stem 12", "Stem 13", "Stem 14", "Stem 15", "Stem 16",
];

/// The one input: a stereo sidechain whose loudness a pad can follow (recorded by
/// [`crate::audio::recorder`], turned into jobs by [`crate::generation::follow`]).
pub const SIDECHAIN_PORT: usize = 0;

/// Highest sample rate the plugin accepts: a host rate in `activate`, a clip's rate in a saved
/// state. The engine's bound, so whatever the plugin accepts can be resampled.
pub const MAX_RATE: u32 = ezaudio_engine::audio::MAX_RATE;

/// Longest sidechain capture: the ControlNet's training length.
pub const CAPTURE_SECONDS: f32 = 10.0;
/// Shortest capture that starts a generation.
pub const MIN_CAPTURE_SECONDS: f32 = 0.1;

/// The full layout first (what a DAW offers by default), then a plain stereo instrument for
/// simple hosts: JUCE-based hosts such as pedalboard and some plug-in testers pass only a main
/// bus, and with the full layout active nice-plug's buffer set-up reads the missing aux buses'
/// channel pointers anyway (garbage, and a crash). In the plain layout every pad plays on the
/// main mix and nothing is captured; the stems' routing parameters are simply unused.
pub const LAYOUTS: &[AudioIOLayout] = &[FULL_LAYOUT, PLAIN_LAYOUT];

/// Index in [`LAYOUTS`] of the plain stereo layout (also its CLAP audio-ports-config id).
pub const PLAIN_LAYOUT_INDEX: usize = 1;

const FULL_LAYOUT: AudioIOLayout = AudioIOLayout {
    main_input_channels: None,
    main_output_channels: Some(STEREO),
    aux_input_ports: &[STEREO],
    aux_output_ports: &STEM_PORTS,
    names: PortNames {
        layout: Some("Stereo mix + 16 stereo stems, stereo sidechain in"),
        main_input: None,
        main_output: Some("Main"),
        aux_inputs: &["Sidechain"],
        aux_outputs: &STEM_NAMES,
    },
};

const PLAIN_LAYOUT: AudioIOLayout = AudioIOLayout {
    main_input_channels: None,
    main_output_channels: Some(STEREO),
    aux_input_ports: &[],
    aux_output_ports: &[],
    names: PortNames {
        layout: Some("Stereo mix only"),
        main_input: None,
        main_output: Some("Main"),
        aux_inputs: &[],
        aux_outputs: &[],
    },
};
