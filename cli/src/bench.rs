//! Real-size CPU/GPU benchmark of the three networks with random weights (no files needed).
//!
//! Shapes are those of one EzAudio job: a guided DiT step is one forward on batch 2 (prompt and
//! negative prompt) over 500 latent frames (10 s at 50 Hz) with 100 text tokens of which 30 are
//! valid; T5 encodes that prompt pair; the VAE decodes 500 frames of one clip. Weights are drawn
//! at random with the shapes the model code requests from the configs (`DitConfig::ezaudio_l/xl`,
//! `T5Config::flan_t5_large/xl`, `VaeConfig::oobleck_24k`), so the timings are those of the real
//! model. Performance is measured here, never asserted in tests (see `engine/PERF.md`).
//!
//! Threads: candle's CPU backend runs on rayon's global pool, which reads `RAYON_NUM_THREADS`
//! once when it starts, and hands `gemm` `Parallelism::Rayon(n)` with `n` read from the same
//! variable on every matmul (`candle_core::utils::get_num_threads`). `threads` therefore sets
//! `RAYON_NUM_THREADS` before any tensor work; if the pool was already started by earlier work in
//! the process, only the matmul split follows the new value (the result reports what candle sees).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use ezaudio_engine::error::{Error, Result};
use ezaudio_engine::kernels::cpu;
use ezaudio_engine::model::config::EzAudioConfig;
use ezaudio_engine::model::dit::{DitConfig, MaskDit};
use ezaudio_engine::model::sampler::Schedule;
use ezaudio_engine::model::t5::{T5Config, T5Encoder};
use ezaudio_engine::model::vae::{Oobleck, VaeConfig};
use ezaudio_engine::pipeline::{vae_dtype, Denoiser, RunOptions};
use ezaudio_engine::runtime::{describe, gpu, release_free_memory, tune_allocator, DeviceChoice};
use ezaudio_engine::weights::random_vb;
use ezaudio_engine::Recipe;

/// Model size: EzAudio-L (flan-t5-large) or EzAudio-XL (flan-t5-xl).
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    L,
    XL,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Dit,
    T5,
    Vae,
    /// A whole 10 s job with all three models resident: T5 on the prompt pair, the context
    /// prepared once, `steps` guided DiT steps, the VAE decode (the pipeline's precision rules).
    Job,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::L => "l",
            Shape::XL => "xl",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "l" | "large" => Ok(Shape::L),
            "xl" => Ok(Shape::XL),
            _ => Err(Error::InvalidInput(format!(
                "unknown model shape '{s}' (expected l or xl)"
            ))),
        }
    }
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Dit => "dit",
            Part::T5 => "t5",
            Part::Vae => "vae",
            Part::Job => "job",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "dit" => Ok(Part::Dit),
            "t5" => Ok(Part::T5),
            "vae" => Ok(Part::Vae),
            "job" => Ok(Part::Job),
            _ => Err(Error::InvalidInput(format!(
                "unknown part '{s}' (expected dit, t5, vae or job)"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub shape: Shape,
    pub part: Part,
    /// Timed runs (the median and minimum are reported).
    pub runs: usize,
    /// Sets `RAYON_NUM_THREADS` (see the module docs); `None` keeps candle's default.
    pub threads: Option<usize>,
    pub dtype: DType,
    /// Untimed runs before timing (first-touch allocations, caches).
    pub warmup: usize,
    /// Guided DiT steps of a [`Part::Job`].
    pub steps: usize,
    /// Audio length of a [`Part::Job`].
    pub seconds: f32,
    /// A [`Part::Job`] keeps every step's trace, as production jobs did before tracing became
    /// opt-in (to measure what that cost).
    pub trace: bool,
    /// Where to run (the CPU unless asked: numbers of different devices never mix silently).
    pub device: DeviceChoice,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            shape: Shape::L,
            part: Part::Dit,
            runs: 3,
            threads: None,
            dtype: DType::F32,
            warmup: 1,
            steps: 2,
            seconds: 10.0,
            trace: false,
            device: DeviceChoice::Cpu,
        }
    }
}

/// Latent frames of 10 s at 50 Hz.
pub const FRAMES: usize = 500;
/// Tokens of the padded prompt (`text_encoder.max_length`).
pub const TOKENS: usize = 100;
/// Valid (unpadded) tokens of the benchmark prompt.
pub const VALID_TOKENS: usize = 30;
/// Guided steps run prompt and negative prompt as one batch.
pub const BATCH: usize = 2;

/// Runs the benchmark and returns one JSON object per measured part.
pub fn run(opts: &BenchOptions) -> Result<Vec<Value>> {
    if let Some(n) = opts.threads {
        if n == 0 {
            return Err(Error::InvalidInput("threads must be at least 1".into()));
        }
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // candle's elementwise pool spins 25 000 pauses before parking after each op; on a machine
    // with few cores that spinning steals the cores gemm's rayon workers need next (measured
    // ~4% of a DiT step on 2 cores, engine/PERF.md). Only set when the user has not.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "2000");
    }
    tune_allocator();
    if opts.runs == 0 {
        return Err(Error::InvalidInput("runs must be at least 1".into()));
    }
    let device = opts.device.open()?;
    reset_peak_rss();
    let (mut step, gflop): (Box<dyn FnMut() -> Result<()>>, Option<f64>) = match opts.part {
        Part::Dit => dit_case(opts, &device)?,
        Part::T5 => t5_case(opts, &device)?,
        Part::Vae => vae_case(opts, &device)?,
        Part::Job => job_case(opts, &device)?,
    };
    // Models built, nothing run yet: what the weights (and the process) hold.
    let build_peak_rss = peak_rss_mib();
    let loaded_gpu = gpu::memory_in_use_mib(&device);
    release_free_memory();
    let loaded_rss = current_rss_mib();
    reset_peak_rss();
    for _ in 0..opts.warmup {
        step()?;
    }
    let mut times = Vec::with_capacity(opts.runs);
    for _ in 0..opts.runs {
        let start = Instant::now();
        step()?;
        times.push(start.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    Ok(vec![json!({
        "part": opts.part.name(),
        "shape": opts.shape.name(),
        "runs": opts.runs,
        "warmup": opts.warmup,
        "median_s": median,
        "min_s": sorted[0],
        "times_s": times,
        "peak_rss_mib": peak_rss_mib(),
        "loaded_rss_mib": loaded_rss,
        "build_peak_rss_mib": build_peak_rss,
        "steps": (opts.part == Part::Job).then_some(opts.steps),
        "seconds": (opts.part == Part::Job).then_some(opts.seconds),
        "trace": (opts.part == Part::Job).then_some(opts.trace),
        "trace_mib": (opts.part == Part::Job).then(|| {
            TRACE_BYTES.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
        }),
        "threads": candle_core::utils::get_num_threads(),
        "cpu": cpu_record(),
        "device": describe(&device),
        // Device-wide memory in use (cudaMemGetInfo: includes the context and other processes).
        "gpu_mem_loaded_mib": loaded_gpu,
        "gpu_mem_after_mib": gpu::memory_in_use_mib(&device),
        "dtype": format!("{:?}", opts.dtype).to_lowercase(),
        "gflop": gflop,
        "gflops_median": gflop.map(|g| g / median),
    })])
}

/// The CPU, its features and the kernel each kind of operation ran with (see
/// `ezaudio_engine::kernels::cpu`; `EZAUDIO_CPU` restricts the tier).
fn cpu_record() -> Value {
    let choice = cpu::choice();
    let kernels: serde_json::Map<String, Value> = cpu::kernels()
        .into_iter()
        .map(|(op, k)| (op.to_string(), Value::from(k)))
        .collect();
    json!({
        "model": cpu::model_name(),
        "features": cpu::features(),
        "tier": choice.tier.name(),
        "supported_tier": choice.supported.name(),
        "tier_note": choice.note,
        "kernels": kernels,
    })
}

type Case = (Box<dyn FnMut() -> Result<()>>, Option<f64>);

/// Bytes of per-step tensors the last [`Part::Job`] run kept (0 unless `--trace`).
static TRACE_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn dit_case(opts: &BenchOptions, device: &Device) -> Result<Case> {
    let cfg = match opts.shape {
        Shape::L => DitConfig::ezaudio_l(),
        Shape::XL => DitConfig::ezaudio_xl(),
    };
    let dit = MaskDit::new(&cfg, random_vb(opts.dtype, device))?;
    let c = cfg.latent_channels();
    let ctx_dim = cfg.context_dim.unwrap_or(cfg.embed_dim);
    let x = Tensor::randn(0f32, 1.0, (BATCH, c, FRAMES), device)?.to_dtype(opts.dtype)?;
    let t = Tensor::new(&[500f32; BATCH], device)?;
    let context =
        Tensor::randn(0f32, 1.0, (BATCH, TOKENS, ctx_dim), device)?.to_dtype(opts.dtype)?;
    let mask = token_mask(device)?;
    let gflop = dit_gflop(&cfg);
    // One guided step as the pipeline runs it: the context is prepared once per job, outside the
    // step loop (its cost is a small fraction of a step and is not timed here).
    let prepared = dit.prepare_context(&context, &mask, None)?;
    let step = move || -> Result<()> {
        let input = dit.prepare_input(&x, None, None)?;
        let out = dit.forward(&input, &t, &prepared, None, None)?;
        out.device().synchronize()?;
        Ok(())
    };
    Ok((Box::new(step), Some(gflop)))
}

fn t5_case(opts: &BenchOptions, device: &Device) -> Result<Case> {
    let cfg = match opts.shape {
        Shape::L => T5Config::flan_t5_large(),
        Shape::XL => T5Config::flan_t5_xl(),
    };
    let t5 = T5Encoder::new(&cfg, random_vb(opts.dtype, device))?;
    let ids: Vec<u32> = (0..BATCH * TOKENS)
        .map(|i| ((i * 7919) % cfg.vocab_size) as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (BATCH, TOKENS), device)?;
    let mask = token_mask(device)?;
    let gflop = t5_gflop(&cfg);
    let step = move || -> Result<()> {
        let out = t5.forward(&ids, &mask)?;
        out.device().synchronize()?;
        Ok(())
    };
    Ok((Box::new(step), Some(gflop)))
}

fn vae_case(opts: &BenchOptions, device: &Device) -> Result<Case> {
    let cfg = VaeConfig::oobleck_24k();
    let dtype = vae_dtype(device, opts.dtype);
    let vae = Oobleck::new_decoder_only(&cfg, random_vb(dtype, device))?;
    let z =
        Tensor::randn(0f32, 1.0, (1, cfg.latent_channels(), FRAMES), device)?.to_dtype(dtype)?;
    let step = move || -> Result<()> {
        let out = vae.decode(&z)?;
        out.device().synchronize()?;
        Ok(())
    };
    Ok((Box::new(step), None))
}

fn job_case(opts: &BenchOptions, device: &Device) -> Result<Case> {
    let (config, t5_cfg) = match opts.shape {
        Shape::L => (EzAudioConfig::ezaudio_l(), T5Config::flan_t5_large()),
        Shape::XL => (EzAudioConfig::ezaudio_xl(), T5Config::flan_t5_xl()),
    };
    let t5 = T5Encoder::new(&t5_cfg, random_vb(opts.dtype, device))?;
    let dit = MaskDit::new(&config.model, random_vb(opts.dtype, device))?;
    let schedule = Schedule::new(&config.diff)?;
    let vae_cfg = VaeConfig::oobleck_24k();
    let vae_dtype = vae_dtype(device, opts.dtype);
    // Encoder included: the pipeline keeps it for editing.
    let vae = Oobleck::new(&vae_cfg, random_vb(vae_dtype, device))?;
    let ids: Vec<u32> = (0..BATCH * TOKENS)
        .map(|i| ((i * 7919) % t5_cfg.vocab_size) as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (BATCH, TOKENS), device)?;
    let mask = token_mask(device)?;
    let recipe = Recipe {
        steps: opts.steps as u32,
        seconds: opts.seconds,
        ..Recipe::new("bench")
    };
    let frames = config.frames_for_seconds(opts.seconds as f64).max(1);
    let options = RunOptions {
        trace: opts.trace,
        ..RunOptions::default()
    };
    let autoencoder = config.autoencoder.clone();
    let step = move || -> Result<()> {
        let context = t5.forward(&ids, &mask)?;
        // The pipeline's own denoising loop: guidance, rescale, DDIM with eta 1.
        let denoiser = Denoiser {
            dit: &dit,
            schedule: &schedule,
        };
        let (latent, trace) = denoiser.run(
            &recipe,
            (&context, &mask),
            frames,
            None,
            &options,
            &mut |_| true,
            None,
        )?;
        let latent = ((latent / autoencoder.scale)? - autoencoder.shift)?;
        vae.decode(&latent.to_dtype(vae_dtype)?)?
            .device()
            .synchronize()?;
        let kept: usize = trace
            .iter()
            .flat_map(|s| {
                [&s.latents_in, &s.out_text, &s.out_pred, &s.latents_out]
                    .into_iter()
                    .chain(s.out_uncond.as_ref())
            })
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        TRACE_BYTES.store(kept as u64, std::sync::atomic::Ordering::Relaxed);
        drop(trace);
        Ok(())
    };
    let gflop = t5_gflop(&t5_cfg) + opts.steps as f64 * dit_gflop_frames(&config.model, frames);
    Ok((Box::new(step), Some(gflop)))
}

/// `(B, L)` mask with the first [`VALID_TOKENS`] tokens valid.
fn token_mask(device: &Device) -> Result<Tensor> {
    let row: Vec<u8> = (0..TOKENS).map(|i| u8::from(i < VALID_TOKENS)).collect();
    Ok(Tensor::new(row.as_slice(), device)?
        .unsqueeze(0)?
        .repeat((BATCH, 1))?)
}

/// Multiply-adds x 2 of one DiT forward on the benchmark shapes (linear layers and attention;
/// norms and elementwise work are left out).
pub fn dit_gflop(cfg: &DitConfig) -> f64 {
    dit_gflop_frames(cfg, FRAMES)
}

/// [`dit_gflop`] for `frames` latent frames.
pub fn dit_gflop_frames(cfg: &DitConfig, frames: usize) -> f64 {
    let (d, t, l) = (cfg.embed_dim as f64, frames as f64, TOKENS as f64);
    let inner = cfg.mlp_inner_dim() as f64;
    let ctx = cfg.context_dim.unwrap_or(cfg.embed_dim) as f64;
    let half = (cfg.depth / 2) as f64;
    let blocks = 2.0 * half + 1.0;
    // Per latent token and block: q,k,v,proj (4D²), cross q,proj (2D²), GEGLU (3 D*inner),
    // self-attention scores and sums (2TD), cross-attention (2LD).
    let per_token = 6.0 * d * d + 3.0 * d * inner + 2.0 * t * d + 2.0 * l * d;
    let blocks_macs = blocks * t * per_token + half * t * 2.0 * d * d + blocks * l * 2.0 * d * d;
    let embed =
        t * (cfg.in_chans as f64 * d + d * cfg.latent_channels() as f64) + l * (ctx * d + d * d);
    2.0 * BATCH as f64 * (blocks_macs + embed) / 1e9
}

/// Multiply-adds x 2 of one T5 encoder forward on the benchmark shapes.
pub fn t5_gflop(cfg: &T5Config) -> f64 {
    let (d, l) = (cfg.d_model as f64, TOKENS as f64);
    let inner = (cfg.num_heads * cfg.d_kv) as f64;
    let ff = cfg.d_ff as f64
        * if cfg.activation().is_ok_and(|(_, g)| g) {
            3.0
        } else {
            2.0
        };
    let per_token = 4.0 * d * inner + ff * d + 2.0 * l * inner;
    2.0 * BATCH as f64 * cfg.num_layers as f64 * l * per_token / 1e9
}

/// Resident memory now (`VmRSS`), MiB.
fn current_rss_mib() -> Option<f64> {
    proc_status_kib("VmRSS:").map(|kib| kib / 1024.0)
}

/// Resets the kernel's peak-RSS counter (`VmHWM`) so the figure belongs to this part.
fn reset_peak_rss() {
    #[cfg(target_os = "linux")]
    {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
}

/// `VmHWM` of `/proc/self/status` in MiB; `None` where unavailable.
pub fn peak_rss_mib() -> Option<f64> {
    proc_status_kib("VmHWM:").map(|kib| kib / 1024.0)
}

/// A `kB` field of `/proc/self/status`.
fn proc_status_kib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
