//! `ezaudio generate` (one prompt, variations, or a batch of cues).

use std::path::{Path, PathBuf};

use clap::Args;

use ezaudio_engine::audio::wav::SampleFormat;
use ezaudio_engine::engine::{Job, ModelStatus};
use ezaudio_engine::model::sampler::Sampler;
use ezaudio_engine::Recipe;

use super::batch::{read_cues, slug};
use super::control_opts::ControlOpts;
use super::output::{check_free, write_clip, Normalize, OutputSpec, Provenance};
use super::progress::Reporter;
use super::session::{dtype_name, shell_quote, ModelOpts, Session};
use super::{CliError, CliResult};

pub use super::edit::{edit, EditArgs};

/// Longest clip accepted. The official models are trained on 10 s; far longer clips lose
/// coherence and need memory that grows with the square of the length (attention).
pub const MAX_SECONDS: f32 = 30.0;
pub const MAX_STEPS: u32 = 1000;
pub const MAX_VARIATIONS: u32 = 100;
pub const MAX_PROMPT_CHARS: usize = 2000;

#[derive(Debug, Clone, Args)]
pub struct SamplingOpts {
    /// Denoising steps (the official default; 25-50 gives a quicker preview)
    #[arg(long, default_value_t = 100)]
    pub steps: u32,
    /// Sampler: ddim (the official), dpm++2m or unipc (deterministic second-order solvers,
    /// closer than DDIM at 10-50 steps on the test models), dpm++2m-sde (stochastic). --eta
    /// applies to ddim only
    #[arg(long, default_value = "ddim", value_parser = parse_sampler)]
    pub sampler: Sampler,
    /// Classifier-free guidance: higher follows the prompt more closely
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f32,
    /// Guidance rescale (0..1), against the over-saturation of high guidance
    #[arg(long, default_value_t = 0.75)]
    pub rescale: f32,
    /// DDIM eta (0 = deterministic path, 1 = the official default)
    #[arg(long, default_value_t = 1.0)]
    pub eta: f32,
    /// Random seed [default: random, printed and recorded in the .json]
    #[arg(long)]
    pub seed: Option<u64>,
    /// What to steer away from, e.g. "music, speech"
    #[arg(long, default_value = "")]
    pub negative: String,
    /// Make N files with seeds seed, seed+1, ... (named out-1.wav, out-2.wav, ...)
    #[arg(long, default_value_t = 1)]
    pub variations: u32,
}

#[derive(Debug, Clone, Args)]
pub struct OutputOpts {
    /// Output sample rate in Hz [default: the model's 24000 for generate, the input's for edit]
    #[arg(long)]
    pub sample_rate: Option<u32>,
    /// Bits per sample: 32 (float, keeps peaks above full scale), 24 or 16 (integer PCM)
    #[arg(long, default_value = "32", value_parser = ["32", "24", "16"])]
    pub bits: String,
    /// Level: auto (float untouched; 24/16-bit scaled down to -1 dBFS only if it would clip),
    /// none, peak (to --peak-db), lufs (to --lufs, ITU-R BS.1770)
    #[arg(long, value_enum, default_value_t = Normalize::Auto)]
    pub normalize: Normalize,
    /// Peak target in dBFS for --normalize peak
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
    pub peak_db: f32,
    /// Loudness target in LUFS for --normalize lufs (-23 is EBU R128 broadcast)
    #[arg(long, default_value_t = -23.0, allow_negative_numbers = true)]
    pub lufs: f32,
    /// Overwrite existing files
    #[arg(short, long)]
    pub force: bool,
    /// Print only warnings and errors
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// What to hear, e.g. "a dog barking in the distance"
    #[arg(required_unless_present = "batch")]
    pub prompt: Option<String>,
    /// Output WAV [default: <prompt slug>.wav in --out-dir or the current folder]
    #[arg(short, long, conflicts_with = "batch")]
    pub output: Option<PathBuf>,
    /// Length in seconds
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub seconds: f32,
    /// Cue file: one prompt per line, or CSV with the header prompt,seconds,seed[,negative,sampler,steps]
    #[arg(long, conflicts_with = "prompt")]
    pub batch: Option<PathBuf>,
    /// Folder for the output files
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelOpts,
    #[command(flatten)]
    pub sampling: SamplingOpts,
    #[command(flatten)]
    pub control: ControlOpts,
    #[command(flatten)]
    pub output_opts: OutputOpts,
}

impl OutputOpts {
    pub fn spec(&self, default_rate: Option<u32>) -> CliResult<OutputSpec> {
        let bits: u16 = self
            .bits
            .parse()
            .map_err(|_| CliError::new(format!("--bits {} is not a number", self.bits)))?;
        let sample_rate = self.sample_rate.or(default_rate);
        if let Some(r) = self.sample_rate {
            if !(8_000..=384_000).contains(&r) {
                return Err(CliError::new(format!(
                    "--sample-rate must be between 8000 and 384000 Hz, got {r}"
                )));
            }
        }
        if !self.peak_db.is_finite() || self.peak_db > 0.0 || self.peak_db < -60.0 {
            return Err(CliError::new(format!(
                "--peak-db must be between -60 and 0 dBFS, got {}",
                self.peak_db
            )));
        }
        if !self.lufs.is_finite() || self.lufs > 0.0 || self.lufs < -70.0 {
            return Err(CliError::new(format!(
                "--lufs must be between -70 and 0 LUFS, got {}",
                self.lufs
            )));
        }
        Ok(OutputSpec {
            sample_rate,
            format: SampleFormat::from_bits(bits)?,
            normalize: self.normalize,
            peak_db: self.peak_db,
            lufs: self.lufs,
            overwrite: self.force,
        })
    }
}

impl SamplingOpts {
    pub fn check(&self) -> CliResult {
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(CliError::new(format!(
                "--steps must be between 1 and {MAX_STEPS}, got {} (100 is the official default; 25-50 gives a quick preview)",
                self.steps
            )));
        }
        let ranges = [
            ("guidance", self.guidance, 0.0, 50.0),
            ("rescale", self.rescale, 0.0, 1.0),
            ("eta", self.eta, 0.0, 1.0),
        ];
        for (name, v, lo, hi) in ranges {
            if !v.is_finite() || v < lo || v > hi {
                return Err(CliError::new(format!(
                    "--{name} must be between {lo} and {hi}, got {v}"
                )));
            }
        }
        if self.variations == 0 || self.variations > MAX_VARIATIONS {
            return Err(CliError::new(format!(
                "--variations must be between 1 and {MAX_VARIATIONS}, got {}",
                self.variations
            )));
        }
        check_prompt(&self.negative, "the negative prompt", true)
    }

    pub fn params(&self, prompt: &str, seconds: f32, seed: u64) -> Recipe {
        Recipe {
            prompt: prompt.to_string(),
            negative: self.negative.clone(),
            seconds,
            steps: self.steps,
            sampler: self.sampler,
            guidance: self.guidance,
            rescale: self.rescale,
            eta: self.eta,
            seed,
        }
    }
}

/// `--sampler NAME`: one of [`Sampler::NAMES`] (listed by `--help` and in the error).
fn parse_sampler(s: &str) -> Result<Sampler, String> {
    s.parse::<Sampler>().map_err(|_| {
        format!(
            "unknown sampler '{s}' [possible values: {}]",
            Sampler::NAMES.join(", ")
        )
    })
}

pub fn check_prompt(prompt: &str, what: &str, may_be_empty: bool) -> CliResult {
    if !may_be_empty && prompt.trim().is_empty() {
        return Err(CliError::new(format!(
            "{what} is empty: describe the sound, e.g. \"a dog barking in the distance\""
        )));
    }
    let n = prompt.chars().count();
    if n > MAX_PROMPT_CHARS {
        return Err(CliError::new(format!(
            "{what} is {n} characters long; the text encoder reads only the first few hundred tokens, \
             so keep it under {MAX_PROMPT_CHARS} characters"
        )));
    }
    Ok(())
}

pub fn check_seconds(seconds: f32, what: &str) -> CliResult {
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(CliError::new(format!(
            "{what} must be a positive number of seconds, got {seconds}"
        )));
    }
    if seconds > MAX_SECONDS {
        return Err(CliError::new(format!(
            "{what} is {seconds} s; the maximum is {MAX_SECONDS} s (EzAudio is trained on 10 s clips: longer \
             ones lose coherence and need much more memory). Generate several clips and join them."
        )));
    }
    Ok(())
}

pub fn random_seed() -> u64 {
    // 32 bits: short enough to type back in, plenty of variety.
    rand::random::<u32>() as u64
}

/// `dog.wav` -> `dog-2.wav`.
pub fn numbered(path: &Path, i: u32) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "clip".into());
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "wav".into());
    path.with_file_name(format!("{stem}-{i}.{ext}"))
}

/// See [`super::output::wav_path`].
pub fn with_wav_extension(path: PathBuf) -> CliResult<PathBuf> {
    super::output::wav_path(path)
}

struct Planned {
    label: String,
    params: Recipe,
    path: PathBuf,
}

fn command_line(p: &Recipe, session_model: &str, dtype: &str, out: &Path) -> String {
    let mut cmd = format!(
        "ezaudio generate {} -o {} --seconds {} --steps {} --sampler {} --guidance {} --rescale {} --eta {} --seed {}",
        shell_quote(&p.prompt),
        shell_quote(&out.to_string_lossy()),
        p.seconds,
        p.steps,
        p.sampler,
        p.guidance,
        p.rescale,
        p.eta,
        p.seed
    );
    if !p.negative.is_empty() {
        cmd += &format!(" --negative {}", shell_quote(&p.negative));
    }
    cmd + &format!(" --model {} --dtype {dtype}", shell_quote(session_model))
}

pub fn generate(args: GenerateArgs) -> CliResult {
    let rep = Reporter::new(args.output_opts.quiet);
    let spec = args.output_opts.spec(None)?;
    args.sampling.check()?;
    // Read and check the control before any model loads: a bad file fails at once.
    let control = args.control.source()?;
    let variations = args.sampling.variations;
    let out_dir = args.out_dir.clone().unwrap_or_default();

    let mut plan = Vec::new();
    if let Some(batch) = &args.batch {
        let cues = read_cues(batch)?;
        let width = cues.len().to_string().len().max(3);
        for (i, cue) in cues.iter().enumerate() {
            let at =
                |e: CliError| CliError::new(format!("{} line {}: {e}", batch.display(), cue.line));
            check_prompt(&cue.prompt, "the prompt", false).map_err(at)?;
            let seconds = cue.seconds.unwrap_or(args.seconds);
            check_seconds(seconds, "seconds").map_err(at)?;
            if let Some(steps) = cue.steps.filter(|s| *s == 0 || *s > MAX_STEPS) {
                return Err(at(CliError::new(format!(
                    "steps must be between 1 and {MAX_STEPS}, got {steps}"
                ))));
            }
            let seed = cue.seed.or(args.sampling.seed).unwrap_or_else(random_seed);
            let base = out_dir.join(format!("{:0width$}-{}.wav", i + 1, slug(&cue.prompt)));
            for v in 0..variations {
                let mut params =
                    args.sampling
                        .params(&cue.prompt, seconds, seed.wrapping_add(v as u64));
                if let Some(neg) = &cue.negative {
                    params.negative = neg.clone();
                }
                if let Some(sampler) = cue.sampler {
                    params.sampler = sampler;
                }
                if let Some(steps) = cue.steps {
                    params.steps = steps;
                }
                let path = if variations > 1 {
                    numbered(&base, v + 1)
                } else {
                    base.clone()
                };
                plan.push(Planned {
                    label: format!("cue {}/{}", i + 1, cues.len()),
                    params,
                    path,
                });
            }
        }
    } else {
        let prompt = args.prompt.clone().unwrap_or_default();
        check_prompt(&prompt, "the prompt", false)?;
        check_seconds(args.seconds, "--seconds")?;
        let seed = args.sampling.seed.unwrap_or_else(random_seed);
        let base = with_wav_extension(match &args.output {
            Some(o) => out_dir.join(o),
            None => out_dir.join(format!("{}.wav", slug(&prompt))),
        })?;
        for v in 0..variations {
            let path = if variations > 1 {
                numbered(&base, v + 1)
            } else {
                base.clone()
            };
            let label = if variations > 1 {
                format!("variation {}/{variations}", v + 1)
            } else {
                "generate".into()
            };
            plan.push(Planned {
                label,
                params: args
                    .sampling
                    .params(&prompt, args.seconds, seed.wrapping_add(v as u64)),
                path,
            });
        }
    }
    let paths: Vec<PathBuf> = plan.iter().map(|p| p.path.clone()).collect();
    check_free(&paths, spec.overwrite)?;

    let session = Session::open(&args.model, &rep)?;
    let longest = plan.iter().map(|p| p.params.seconds).fold(0f32, f32::max) as f64;
    if longest > session.trained_seconds() + 1e-6 {
        rep.warn(format!(
            "{} was trained on {:.0} s clips; {longest} s may lose coherence",
            session.folder.model_id(),
            session.trained_seconds()
        ));
    }
    let model_label = session.source.to_string();
    let dtype = dtype_name(session.dtype);
    let mut failures = Vec::new();
    for item in &plan {
        rep.note(format!(
            "{}: \"{}\", {} s, seed {} -> {}",
            item.label,
            item.params.prompt,
            item.params.seconds,
            item.params.seed,
            item.path.display()
        ));
        let job = match &control {
            Some(c) => Job::GenerateControlled(args.control.params(item.params.clone(), c.clone())),
            None => Job::Generate(item.params.clone()),
        };
        let handle = session.engine.submit(job);
        let result = rep
            .wait_job(&session.engine, &handle, &item.label)
            .and_then(|clip| {
                let prov = Provenance {
                    command: command_line(&item.params, &model_label, dtype, &item.path)
                        + &args.control.command_args(),
                    model: model_label.clone(),
                    model_path: session.folder.root.clone(),
                    device: session.device.clone(),
                    dtype: dtype.to_string(),
                    source_file: None,
                };
                write_clip(&clip, &item.path, &spec, &prov, &rep)
            });
        match result {
            Ok(()) => {}
            // A model that fails to load fails every job alike: stop at the first.
            Err(e)
                if plan.len() == 1
                    || matches!(session.engine.model_status(), ModelStatus::Failed(_)) =>
            {
                return Err(e)
            }
            Err(e) => {
                crate::errln!("error: {}: {e}", item.label);
                failures.push(item.path.clone());
            }
        }
    }
    if !failures.is_empty() {
        return Err(CliError::new(format!(
            "{} of {} files failed (see above)",
            failures.len(),
            plan.len()
        )));
    }
    Ok(())
}
