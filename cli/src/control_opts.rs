//! `ezaudio generate --control ref.wav` / `--control-envelope "0:0,0.5:1"`: loudness-controlled
//! generation with EzAudio-ControlNet (energy).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use ezaudio_engine::audio::wav::read_mono;
use ezaudio_engine::audio::{Clip, ClipMeta};
use ezaudio_engine::engine::{ControlParams, ControlSource};
use ezaudio_engine::Recipe;

use super::session::shell_quote;
use super::{CliError, CliResult};

/// Most points a drawn envelope may have.
const MAX_POINTS: usize = 10_000;

#[derive(Debug, Clone, Default, Args)]
pub struct ControlOpts {
    /// A WAV whose loudness over time the sound follows (EzAudio-ControlNet; the output is cut
    /// to its length when it is shorter than --seconds)
    #[arg(long, value_name = "WAV", conflicts_with_all = ["control_envelope", "batch"])]
    pub control: Option<PathBuf>,
    /// A drawn loudness envelope instead of a WAV: time:level points, seconds and 0..1,
    /// e.g. "0:0,0.5:1,1.2:0.2" (straight lines between points)
    #[arg(long, value_name = "T:L,...", conflicts_with = "batch")]
    pub control_envelope: Option<String>,
    /// How strongly the control acts (1 = as trained, 0 = not at all)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub control_scale: f32,
    /// Noise gate for --control: after peak normalisation, samples at or below this level are
    /// silenced (0 = off)
    #[arg(long, default_value_t = 0.0)]
    pub control_gate: f32,
    /// The ControlNet folder [default: <model>/controlnet, $EZAUDIO_CONTROLNET, or the
    /// official one in the download cache for EzAudio-L]
    #[arg(long, value_name = "DIR")]
    pub controlnet: Option<PathBuf>,
}

impl ControlOpts {
    pub fn is_set(&self) -> bool {
        self.control.is_some() || self.control_envelope.is_some()
    }

    /// The control, read and checked (`None` without --control / --control-envelope).
    pub fn source(&self) -> CliResult<Option<ControlSource>> {
        if !self.control_scale.is_finite() || !(0.0..=10.0).contains(&self.control_scale) {
            return Err(CliError::new(format!(
                "--control-scale must be between 0 and 10, got {}",
                self.control_scale
            )));
        }
        if !self.control_gate.is_finite() || !(0.0..1.0).contains(&self.control_gate) {
            return Err(CliError::new(format!(
                "--control-gate must be at least 0 and below 1, got {}",
                self.control_gate
            )));
        }
        if let Some(dir) = &self.controlnet {
            if !dir.is_dir() {
                return Err(CliError::new(format!(
                    "--controlnet {}: folder not found",
                    dir.display()
                )));
            }
        }
        if let Some(path) = &self.control {
            let audio = read_mono(path).map_err(|e| CliError::new(format!("--control: {e}")))?;
            if audio.samples.is_empty() {
                return Err(CliError::new(format!(
                    "--control {}: the file has no audio",
                    path.display()
                )));
            }
            if audio.samples.iter().any(|s| !s.is_finite()) {
                return Err(CliError::new(format!(
                    "--control {}: the file holds NaN or infinite samples",
                    path.display()
                )));
            }
            let meta = ClipMeta {
                recipe: Recipe::new(path.display().to_string()),
                ..Default::default()
            };
            let clip = Clip::new(audio.samples, audio.sample_rate, meta);
            return Ok(Some(ControlSource::Reference(Arc::new(clip))));
        }
        if let Some(text) = &self.control_envelope {
            return Ok(Some(ControlSource::Envelope(parse_envelope(text)?)));
        }
        Ok(None)
    }

    pub fn params(&self, recipe: Recipe, control: ControlSource) -> ControlParams {
        ControlParams {
            recipe,
            control,
            conditioning_scale: self.control_scale,
            surpass_noise: self.control_gate,
            controlnet: self.controlnet.clone(),
        }
    }

    /// The options as they would be typed, for the sidecar's command line.
    pub fn command_args(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.control {
            s += &format!(" --control {}", shell_quote(&p.to_string_lossy()));
        }
        if let Some(e) = &self.control_envelope {
            s += &format!(" --control-envelope {}", shell_quote(e));
        }
        if self.is_set() {
            s += &format!(" --control-scale {}", self.control_scale);
            if self.control_gate > 0.0 {
                s += &format!(" --control-gate {}", self.control_gate);
            }
            if let Some(d) = &self.controlnet {
                s += &format!(" --controlnet {}", shell_quote(&d.to_string_lossy()));
            }
        }
        s
    }
}

/// `"0:0,0.5:1,1.2:0.2"` -> `[(0, 0), (0.5, 1), (1.2, 0.2)]`: times in seconds, ascending and
/// not negative; levels 0..1.
pub fn parse_envelope(text: &str) -> CliResult<Vec<(f32, f32)>> {
    let bad = |what: String| {
        CliError::new(format!(
            "--control-envelope \"{text}\": {what} (expected time:level pairs separated by commas, e.g. \"0:0,0.5:1,1.2:0.2\")"
        ))
    };
    let mut points = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (t, l) = item
            .split_once(':')
            .ok_or_else(|| bad(format!("'{item}' is not time:level")))?;
        let t: f32 = t
            .trim()
            .parse()
            .map_err(|_| bad(format!("'{t}' is not a time in seconds")))?;
        let l: f32 = l
            .trim()
            .parse()
            .map_err(|_| bad(format!("'{l}' is not a level")))?;
        if !t.is_finite() || t < 0.0 {
            return Err(bad(format!("time {t} must be 0 or more")));
        }
        if !l.is_finite() || !(0.0..=1.0).contains(&l) {
            return Err(bad(format!("level {l} must be between 0 and 1")));
        }
        if points.last().is_some_and(|&(prev, _)| t < prev) {
            return Err(bad(format!("time {t} comes before the previous point")));
        }
        points.push((t, l));
    }
    if points.is_empty() {
        return Err(bad("no points".into()));
    }
    if points.len() > MAX_POINTS {
        return Err(bad(format!("more than {MAX_POINTS} points")));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_envelope("0:0, 0.5:1,1.2:0.2").unwrap(),
            vec![(0.0, 0.0), (0.5, 1.0), (1.2, 0.2)]
        );
        for (text, needle) in [
            ("", "no points"),
            ("0:0,1", "not time:level"),
            ("a:1", "not a time"),
            ("0:2", "between 0 and 1"),
            ("1:0,0.5:1", "before the previous"),
            ("-1:0", "0 or more"),
        ] {
            let e = parse_envelope(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
