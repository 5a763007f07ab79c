//! EzAudio as a DAW instrument: pads hold generated clips and play them from MIDI.
//!
//! The audio thread only reads published clips; generation happens on the engine thread.

use std::sync::Arc;

use nice_plug::prelude::*;

pub mod layout;
pub mod params;

use params::EzAudioParams;

pub struct EzAudio {
    params: Arc<EzAudioParams>,
}

impl Default for EzAudio {
    fn default() -> Self {
        Self { params: Arc::new(EzAudioParams::default()) }
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

    type Editor = ();
    type SysExMessage = ();
    type BackgroundTask = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        // Drain note events so hosts see them consumed; playback arrives with the pads.
        while context.next_event().is_some() {}
        for channel in buffer.as_slice() {
            channel.fill(0.0);
        }
        for stem in aux.outputs.iter_mut() {
            for channel in stem.as_slice() {
                channel.fill(0.0);
            }
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
    const CLAP_FEATURES: &'static [ClapFeature] =
        &[ClapFeature::Instrument, ClapFeature::Sampler, ClapFeature::Stereo];
}

impl Vst3Plugin for EzAudio {
    const VST3_CLASS_ID: [u8; 16] = *b"EzAudioDAWInstr1";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Instrument, Vst3SubCategory::Sampler];
}

nice_export_clap!(EzAudio);
nice_export_vst3!(EzAudio);
