//! The editor's logic, apart from drawing: when Generate is possible, how progress, clips and
//! the model are described, the waveform envelope, the span a drag selects. Pure functions,
//! unit-tested. (What an action submits is [`crate::jobs`].)

use ezaudio_engine::audio::Clip;
use ezaudio_engine::engine::{JobError, JobStatus};
use ezaudio_engine::Sampler;

use crate::jobs::MIN_EDIT_S;
use crate::status::{Download, JobView, ModelView, Progress, StepCost};
use crate::store::PadData;

/// Why Generate is not possible right now, if it isn't.
pub fn generate_blocker(pad: &PadData, progress: &Progress) -> Option<&'static str> {
    if pad.recipe.prompt.trim().is_empty() {
        Some("Type a prompt first")
    } else if progress.is_running() {
        Some("Generating...")
    } else {
        None
    }
}

/// What the progress bar shows: a fraction (None: nothing to show) and a caption.
pub fn progress_view(p: &Progress) -> (Option<f32>, String) {
    match p {
        Progress::Idle => (None, String::new()),
        Progress::Job(JobStatus::Queued) => (Some(0.0), "Queued".into()),
        Progress::Job(JobStatus::LoadingModel) => (Some(0.0), "Loading model...".into()),
        Progress::Job(JobStatus::EncodingText) => (Some(0.02), "Encoding prompt...".into()),
        Progress::Job(JobStatus::Step { k, n }) => {
            let f = if *n == 0 {
                0.0
            } else {
                (*k as f32 / *n as f32).clamp(0.0, 1.0)
            };
            (Some(0.05 + 0.9 * f), format!("Step {k}/{n}"))
        }
        Progress::Job(JobStatus::Decoding) => (Some(0.97), "Decoding audio...".into()),
        Progress::Job(JobStatus::Done) => (Some(1.0), "Done".into()),
        Progress::Job(JobStatus::Failed(JobError::Cancelled)) => (None, "Cancelled".into()),
        Progress::Job(JobStatus::Failed(e)) => (None, format!("Failed: {e}")),
    }
}

/// One line about a clip: length, seed, steps.
pub fn clip_summary(clip: &Clip) -> String {
    format!(
        "{:.2} s, seed {}, {} {} steps, guidance {}",
        clip.duration_s(),
        clip.meta.recipe.seed,
        sampler_label(clip.meta.recipe.sampler),
        clip.meta.recipe.steps,
        clip.meta.recipe.guidance
    )
}

/// A MIDI note as "36 C1": the number (which every DAW agrees on) and a name with middle C
/// (60) called C3. DAWs disagree on octave numbers (C3 or C4 for 60), so the number comes first.
pub fn note_name(note: i32) -> String {
    const NAMES: [&str; 12] = [
        "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
    ];
    let n = note.clamp(0, 127);
    format!("{n} {}{}", NAMES[n as usize % 12], n / 12 - 2)
}

/// The pad's name: its own prompt (what the prompt field says), else its clip's. A span edit
/// makes a clip whose recipe holds the span's prompt; the pad keeps its name.
pub fn pad_name(pad: &PadData) -> &str {
    match pad.recipe.prompt.trim() {
        "" => pad
            .clip
            .as_ref()
            .map(|c| c.meta.recipe.prompt.as_str())
            .unwrap_or(""),
        prompt => prompt,
    }
}

/// What a pad button says: a head line with its number and MIDI note, then its name. The
/// button draws each line on its own and elides the name at its width; screen readers and
/// tests get both lines in full ([`PadCaption::label`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PadCaption {
    pub head: String,
    pub name: String,
}

impl PadCaption {
    pub fn label(&self) -> String {
        format!("{}\n{}", self.head, self.name)
    }
}

pub fn pad_caption(index: usize, pad: &PadData, note: i32) -> PadCaption {
    PadCaption {
        head: format!("{} · {}", index + 1, note_name(note)),
        name: pad_name(pad).to_owned(),
    }
}

/// Peak of a clip in dBFS (None for silence), for the waveform's readout.
pub fn peak_dbfs(samples: &[f32]) -> Option<f32> {
    let p = crate::level::peak(samples);
    (p > 0.0).then(|| crate::level::to_db(p))
}

/// "peak -3.2 dBFS", or "peak +23.5 dBFS - over full scale" when it would clip.
pub fn peak_text(samples: &[f32]) -> String {
    match peak_dbfs(samples) {
        None => "silent".into(),
        Some(db) if db > 0.0 => format!("peak {db:+.1} dBFS - over full scale"),
        Some(db) => format!("peak {db:.1} dBFS"),
    }
}

/// The vertical zoom of a waveform: full scale, or the clip's peak when it is hotter or much
/// quieter, so a hot clip is not a solid block and a quiet one is visible.
pub fn waveform_scale(peak: f32) -> f32 {
    if peak > 1e-6 {
        peak
    } else {
        1.0
    }
}

/// Min/max per column over `columns` equal slices of `samples`.
pub fn waveform_envelope(samples: &[f32], columns: usize) -> Vec<(f32, f32)> {
    if samples.is_empty() || columns == 0 {
        return Vec::new();
    }
    (0..columns)
        .map(|c| {
            let a = c * samples.len() / columns;
            let b = ((c + 1) * samples.len() / columns)
                .max(a + 1)
                .min(samples.len());
            samples[a.min(samples.len() - 1)..b]
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| {
                    (lo.min(s), hi.max(s))
                })
        })
        .collect()
}

/// "12 s", "3 min 5 s".
pub fn duration_text(seconds: f32) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// "12 s left", "3 min 5 s left".
pub fn eta_text(seconds: f32) -> String {
    format!("{} left", duration_text(seconds))
}

/// A sampler as the editor names it.
pub fn sampler_label(s: Sampler) -> &'static str {
    match s {
        Sampler::Ddim => "DDIM",
        Sampler::DpmPp2m => "DPM++ 2M",
        Sampler::DpmPp2mSde => "DPM++ 2M SDE",
        Sampler::UniPc => "UniPC",
    }
}

/// What the editor says a sampler is for.
pub fn sampler_hint(s: Sampler) -> &'static str {
    match s {
        Sampler::Ddim => "The official sampler (100 steps, eta 1 in EzAudio's own API)",
        Sampler::DpmPp2m => {
            "Deterministic, second order: closer than DDIM from about 10 steps; a draft and its final refine the same sound"
        }
        Sampler::DpmPp2mSde => "Stochastic second-order solver (fresh noise every step, like DDIM at eta 1)",
        Sampler::UniPc => "Deterministic predictor-corrector (bh2): about as close as DPM++ 2M",
    }
}

/// "about 40 s" for a job of `steps`, from what steps cost so far; what to expect otherwise.
pub fn expected_text(cost: &StepCost, steps: u32, seconds: f32, guidance: f32) -> String {
    match cost.expected_s(steps, seconds, guidance) {
        Some(s) => format!("about {}", duration_text(s)),
        None => "time known after the first generation".into(),
    }
}

/// The progress bar's caption with variations and the time left.
pub fn progress_caption(p: &Progress, job: &JobView) -> (Option<f32>, String) {
    let (fraction, mut caption) = progress_view(p);
    if p.is_running() {
        if let Some((done, total)) = job.variations {
            caption = format!("Variation {}/{total}: {caption}", (done + 1).min(total));
        }
        if let Some(eta) = job.eta_s {
            caption = format!("{caption} - {}", eta_text(eta));
        }
    }
    (fraction, caption)
}

/// A span of the clip in seconds from a drag between two x positions on a waveform of
/// `width` points showing `duration` seconds. None when too short to edit.
pub fn span_from_drag(x0: f32, x1: f32, width: f32, duration: f32) -> Option<(f32, f32)> {
    let usable = width > 0.0 && duration > 0.0 && x0.is_finite() && x1.is_finite();
    if !usable {
        return None;
    }
    let to_s = |x: f32| (x / width).clamp(0.0, 1.0) * duration;
    let (a, b) = (to_s(x0.min(x1)), to_s(x0.max(x1)));
    (b - a >= MIN_EDIT_S).then_some((a, b))
}

/// What the model strip shows.
#[derive(Debug, Clone, PartialEq)]
pub struct StripView {
    pub line: String,
    /// The download's progress or result.
    pub download: Option<String>,
    /// The label of the download button, when one is offered ("Download ezaudio-l", or
    /// "Retry download" after a failure).
    pub button: Option<String>,
    /// A download is running (where a Cancel button goes).
    pub running: bool,
}

/// What the model strip shows: the status line, the download's state and whether to offer a
/// download (or a retry: a failed download keeps its button).
pub fn model_strip(view: &ModelView) -> StripView {
    let download = match &view.download {
        Download::Idle => None,
        Download::Running {
            file,
            index,
            files,
            done,
            total,
        } => {
            let name = file.rsplit('/').next().unwrap_or(file);
            Some(if *total > 0 {
                format!(
                    "Downloading {name} ({index}/{files}): {:.0} of {:.0} MB",
                    *done as f64 / 1e6,
                    *total as f64 / 1e6
                )
            } else {
                format!("Downloading {name} ({index}/{files})...")
            })
        }
        Download::Done(msg) => Some(msg.clone()),
        Download::Failed(e) => Some(format!("Download failed: {e}")),
        Download::Cancelled => Some("Download cancelled; nothing was installed".into()),
    };
    let running = matches!(view.download, Download::Running { .. });
    let failed = matches!(view.download, Download::Failed(_));
    let button = view
        .downloadable
        .filter(|_| !running && (view.missing.is_some() || failed))
        .map(|m| match failed {
            true => "Retry download".to_string(),
            false => format!("Download {}", m.name()),
        });
    // The engine says "not loaded (loads with the first generation)" before its first job,
    // which reads as if all were well; a model that is not there is "not installed".
    let line = if view.missing.is_some() {
        "Model: not installed".to_string()
    } else if view.line.is_empty() {
        "Model: checking...".to_string()
    } else {
        view.line.clone()
    };
    StripView {
        line,
        download,
        button,
        running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ezaudio_engine::audio::ClipMeta;
    use ezaudio_engine::Recipe;

    #[test]
    fn blockers_and_progress() {
        let pad = PadData::default();
        assert_eq!(
            generate_blocker(&pad, &Progress::Idle),
            Some("Type a prompt first")
        );
        let mut pad = PadData::default();
        pad.recipe.prompt = "x".into();
        assert_eq!(
            generate_blocker(&pad, &JobStatus::Step { k: 1, n: 2 }.into()),
            Some("Generating...")
        );
        assert_eq!(generate_blocker(&pad, &Progress::failed("x")), None);
        let (f, t) = progress_view(&JobStatus::Step { k: 25, n: 50 }.into());
        assert_eq!((f, t.as_str()), (Some(0.5), "Step 25/50"));
        assert_eq!(
            progress_view(&Progress::failed("engine not available")).1,
            "Failed: engine not available"
        );
    }

    #[test]
    fn envelope_and_captions() {
        let env = waveform_envelope(&[0.0, 1.0, -1.0, 0.5, 0.25, -0.25], 3);
        assert_eq!(env, vec![(0.0, 1.0), (-1.0, 0.5), (-0.25, 0.25)]);
        assert_eq!(waveform_envelope(&[0.5], 4), vec![(0.5, 0.5); 4]);
        let mut pad = PadData::default();
        pad.recipe.prompt = "a very long prompt about thunder".into();
        let caption = pad_caption(0, &pad, 36);
        assert_eq!(caption.head, "1 · 36 C1");
        assert_eq!(
            caption.label(),
            "1 · 36 C1\na very long prompt about thunder"
        );
        // The pad's own prompt names it, not the span prompt of an edited clip.
        pad.recipe.prompt = "glass".into();
        pad.clip = Some(std::sync::Arc::new(Clip::new(
            vec![0.0],
            24_000,
            ClipMeta {
                recipe: Recipe::new("glass breaking"),
                ..Default::default()
            },
        )));
        assert_eq!(pad_name(&pad), "glass");
        let clip = Clip::new(
            vec![0.0; 24_000],
            24_000,
            ClipMeta {
                recipe: Recipe {
                    seed: 3,
                    steps: 50,
                    guidance: 5.0,
                    ..Recipe::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(
            clip_summary(&clip),
            "1.00 s, seed 3, DDIM 50 steps, guidance 5"
        );
    }

    #[test]
    fn time_left_and_variation_captions() {
        assert_eq!(eta_text(125.4), "2 min 5 s left");
        let view = JobView {
            eta_s: Some(3.0),
            variations: Some((1, 4)),
        };
        let (_, text) = progress_caption(&JobStatus::Step { k: 2, n: 4 }.into(), &view);
        assert_eq!(text, "Variation 2/4: Step 2/4 - 3 s left");
    }

    #[test]
    fn spans_from_drags() {
        assert_eq!(span_from_drag(300.0, 100.0, 400.0, 8.0), Some((2.0, 6.0)));
        assert_eq!(span_from_drag(-50.0, 500.0, 400.0, 8.0), Some((0.0, 8.0)));
        assert_eq!(span_from_drag(10.0, 11.0, 400.0, 1.0), None);
        assert_eq!(span_from_drag(10.0, 100.0, 0.0, 1.0), None);
    }

    #[test]
    fn model_strip_offers_download_only_when_missing() {
        let mut v = ModelView {
            line: "Model: not loaded".into(),
            ..Default::default()
        };
        let s = model_strip(&v);
        assert_eq!(
            (s.line.as_str(), s.download, s.button),
            ("Model: not loaded", None, None)
        );
        v.missing = Some("ezaudio-l is not installed".into());
        v.downloadable = Some(ezaudio_engine::install::Official::L);
        let s = model_strip(&v);
        assert_eq!(s.line, "Model: not installed");
        assert_eq!(s.button.as_deref(), Some("Download ezaudio-l"));
        v.download = Download::Running {
            file: "ckpts/vae/1m.pt".into(),
            index: 4,
            files: 6,
            done: 50_000_000,
            total: 200_000_000,
        };
        let s = model_strip(&v);
        assert_eq!(
            (s.download.as_deref(), s.button, s.running),
            (Some("Downloading 1m.pt (4/6): 50 of 200 MB"), None, true)
        );
        // A failure keeps a button (a retry), even when the files now look present.
        v.download = Download::Failed("connection reset".into());
        v.missing = None;
        let s = model_strip(&v);
        assert_eq!(s.button.as_deref(), Some("Retry download"));
        assert_eq!(
            s.download.as_deref(),
            Some("Download failed: connection reset")
        );
    }

    #[test]
    fn notes_peaks_and_names() {
        assert_eq!(note_name(36), "36 C1");
        assert_eq!(note_name(37), "37 C#1");
        assert_eq!(note_name(60), "60 C3");
        assert_eq!(note_name(0), "0 C-2");
        assert_eq!(peak_text(&[0.5, -0.25]), "peak -6.0 dBFS");
        assert_eq!(peak_text(&[15.0]), "peak +23.5 dBFS - over full scale");
        assert_eq!(peak_text(&[0.0]), "silent");
        assert_eq!(waveform_scale(15.0), 15.0);
        assert_eq!(waveform_scale(0.0), 1.0);
    }
}
