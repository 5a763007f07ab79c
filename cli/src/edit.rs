//! `ezaudio edit`: regenerate a span of an existing WAV.
//!
//! The file is mixed to mono and handed to the engine, which resamples it to the model's rate
//! and regenerates `[start, start + length)` with `--boundary` seconds of context on each side.
//! The result keeps the file's rate by default. When that rate is not the model's, only the
//! regenerated region is taken from the model (resampled back) and spliced into the original
//! samples with 5 ms crossfades, so everything outside it stays bit-identical to the input.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use ezaudio_engine::audio::wav::read_mono;
use ezaudio_engine::audio::{resample, Clip, ClipKind, ClipMeta};
use ezaudio_engine::engine::{EditParams, Job, ModelStatus};

use super::gen::{
    check_prompt, numbered, random_seed, with_wav_extension, OutputOpts, SamplingOpts, MAX_SECONDS,
};
use super::output::{check_free, write_clip, write_samples, Provenance};
use super::progress::Reporter;
use super::session::{dtype_name, shell_quote, ModelOpts, Session};
use super::{CliError, CliResult};

#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// The WAV to edit (any format; mixed to mono)
    pub input: PathBuf,
    /// Start of the span to regenerate, in seconds
    #[arg(long, allow_negative_numbers = true)]
    pub start: f32,
    /// Length of the span in seconds (may reach past the end: the clip is extended)
    #[arg(long, allow_negative_numbers = true)]
    pub length: f32,
    /// What the span should sound like
    #[arg(long)]
    pub prompt: String,
    /// Seconds of context on each side that the model sees and blends into
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub boundary: f32,
    /// Output WAV [default: <input>-edit.wav]
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelOpts,
    #[command(flatten)]
    pub sampling: SamplingOpts,
    #[command(flatten)]
    pub output_opts: OutputOpts,
}

pub fn edit(args: EditArgs) -> CliResult {
    let rep = Reporter::new(args.output_opts.quiet);
    args.sampling.check()?;
    check_prompt(&args.prompt, "--prompt", false)?;
    for (name, v) in [("--start", args.start), ("--boundary", args.boundary)] {
        if !v.is_finite() || v < 0.0 {
            return Err(CliError::new(format!(
                "{name} must be a number of seconds >= 0, got {v}"
            )));
        }
    }
    if !args.length.is_finite() || args.length <= 0.0 {
        return Err(CliError::new(format!(
            "--length must be a positive number of seconds, got {}",
            args.length
        )));
    }
    let audio = read_mono(&args.input)?;
    let duration = audio.duration_s();
    if args.start as f64 >= duration {
        return Err(CliError::new(format!(
            "--start {} s is outside {} ({duration:.3} s long); the span must start inside the clip",
            args.start,
            args.input.display()
        )));
    }
    // The model sees the span plus its context (edit.rs caps the context at half the span).
    let context = args.boundary.min(args.length / 2.0);
    let window = args.length + 2.0 * context;
    if window > MAX_SECONDS {
        return Err(CliError::new(format!(
            "the span plus context is {window:.1} s; the maximum the model handles is {MAX_SECONDS} s \
             (shorten --length or --boundary)"
        )));
    }
    if audio.channels > 1 {
        rep.note(format!(
            "{} has {} channels; EzAudio works in mono, so the result is mono",
            args.input.display(),
            audio.channels
        ));
    }
    let end = args.start as f64 + args.length as f64;
    if end > duration {
        rep.note(format!(
            "the span ends {:.2} s after the clip: the clip is extended",
            end - duration
        ));
    }
    let spec = args.output_opts.spec(Some(audio.sample_rate))?;
    let default_out = {
        let stem = args
            .input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "clip".into());
        args.input.with_file_name(format!("{stem}-edit.wav"))
    };
    let base = with_wav_extension(args.output.clone().unwrap_or(default_out))?;
    let n = args.sampling.variations;
    let paths: Vec<PathBuf> = (0..n)
        .map(|v| {
            if n > 1 {
                numbered(&base, v + 1)
            } else {
                base.clone()
            }
        })
        .collect();
    check_free(&paths, spec.overwrite)?;

    let session = Session::open(&args.model, &rep)?;
    let model_rate = session.sample_rate();
    let source_name = args.input.display().to_string();
    let source = Arc::new(Clip::new(
        audio.samples.clone(),
        audio.sample_rate,
        ClipMeta {
            recipe: ezaudio_engine::Recipe::new(source_name.clone()),
            kind: ClipKind::Generate,
            ..ClipMeta::default()
        },
    ));
    let seed = args.sampling.seed.unwrap_or_else(random_seed);
    let model_label = session.source.to_string();
    let dtype = dtype_name(session.dtype);
    for (v, path) in paths.iter().enumerate() {
        let gen = args
            .sampling
            .params(&args.prompt, args.length, seed.wrapping_add(v as u64));
        let label = if n > 1 {
            format!("edit {}/{n}", v + 1)
        } else {
            "edit".into()
        };
        rep.note(format!(
            "{label}: \"{}\" over {}..{} s, seed {} -> {}",
            args.prompt,
            args.start,
            end,
            gen.seed,
            path.display()
        ));
        let job = EditParams {
            source: source.clone(),
            start_s: args.start,
            length_s: args.length,
            boundary_s: args.boundary,
            recipe: gen.clone(),
        };
        let handle = session.engine.submit(Job::Edit(job));
        let clip = rep
            .wait_job(&session.engine, &handle, &label)
            .map_err(|e| match session.engine.model_status() {
                ModelStatus::Failed(_) => e,
                _ => CliError::new(format!("editing {}: {e}", args.input.display())),
            })?;
        let mut command = format!(
            "ezaudio edit {} --start {} --length {} --boundary {} --prompt {} -o {} --steps {} --sampler {} --guidance {} --rescale {} --eta {} --seed {}",
            shell_quote(&source_name),
            args.start,
            args.length,
            args.boundary,
            shell_quote(&args.prompt),
            shell_quote(&path.to_string_lossy()),
            gen.steps,
            gen.sampler,
            gen.guidance,
            gen.rescale,
            gen.eta,
            gen.seed
        );
        if !gen.negative.is_empty() {
            command += &format!(" --negative {}", shell_quote(&gen.negative));
        }
        command += &format!(" --model {} --dtype {dtype}", shell_quote(&model_label));
        let prov = Provenance {
            command,
            model: model_label.clone(),
            model_path: session.folder.root.clone(),
            device: session.device.clone(),
            dtype: dtype.to_string(),
            source_file: Some(args.input.clone()),
        };
        if audio.sample_rate == model_rate {
            write_clip(&clip, path, &spec, &prov, &rep)?;
        } else {
            let spliced = splice(&audio.samples, audio.sample_rate, &clip.samples, model_rate)?;
            let rate = spec.sample_rate.unwrap_or(audio.sample_rate);
            let samples = resample(&spliced, audio.sample_rate, rate)?;
            write_samples(samples, rate, &clip, path, &spec, &prov, &rep)?;
        }
    }
    Ok(())
}

/// Puts the region the model changed (found by comparing with the input as the engine saw it)
/// back into the original samples at the original rate, with short linear crossfades.
pub fn splice(original: &[f32], rate: u32, edited: &[f32], model_rate: u32) -> CliResult<Vec<f32>> {
    let seen = resample(original, rate, model_rate)?;
    let changed = |i: &usize| seen.get(*i) != Some(&edited[*i]);
    let (Some(i0), Some(i1)) = (
        (0..edited.len()).find(changed),
        (0..edited.len()).rev().find(changed),
    ) else {
        return Ok(original.to_vec());
    };
    let up = resample(edited, model_rate, rate)?;
    let (r, m) = (rate as u64, model_rate as u64);
    let j0 = ((i0 as u64 * r) / m) as usize;
    let j1 = (((i1 as u64 + 1) * r).div_ceil(m) as usize).min(up.len());
    let mut out = original.to_vec();
    if up.len() > out.len() {
        out.resize(up.len(), 0.0);
    }
    let fade = ((0.005 * rate as f64) as usize).clamp(1, ((j1 - j0) / 4).max(1)) as f32;
    for j in j0..j1 {
        let w_in = if j0 > 0 {
            ((j - j0 + 1) as f32 / fade).min(1.0)
        } else {
            1.0
        };
        let w_out = if j1 < original.len() {
            ((j1 - j) as f32 / fade).min(1.0)
        } else {
            1.0
        };
        let w = w_in.min(w_out);
        out[j] = if j < original.len() {
            original[j] * (1.0 - w) + up[j] * w
        } else {
            up[j]
        };
    }
    Ok(out)
}
