//! Host-automatable parameters. Ids are part of every saved project: never rename one.

use nice_plug::prelude::*;

#[derive(Params)]
pub struct EzAudioParams {
    /// Level of the main stereo mix (stems are not affected).
    #[id = "main_gain"]
    pub main_gain: FloatParam,
}

impl Default for EzAudioParams {
    fn default() -> Self {
        Self {
            main_gain: FloatParam::new(
                "Main Gain",
                util::db_to_gain(0.0),
                FloatRange::Skewed {
                    min: util::db_to_gain(-60.0),
                    max: util::db_to_gain(12.0),
                    factor: FloatRange::gain_skew_factor(-60.0, 12.0),
                },
            )
            .with_smoother(SmoothingStyle::Logarithmic(20.0))
            .with_unit(" dB")
            .with_value_to_string(formatters::v2s_f32_gain_to_db(1))
            .with_string_to_value(formatters::s2v_f32_gain_to_db()),
        }
    }
}
