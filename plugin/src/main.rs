//! Standalone EzAudio (JACK/ALSA), for use without a DAW.

use ezaudio_plugin::EzAudio;
use nice_plug::prelude::*;

fn main() {
    nice_export_standalone::<EzAudio>();
}
