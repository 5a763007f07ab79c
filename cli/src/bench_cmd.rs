//! `ezaudio bench`: times one part of a model at the official size.
//! Random weights at the real shapes, so no files are needed; one JSON line per result
//! (see [`crate::bench`]). On the CPU unless `--device` says otherwise.

use candle_core::DType;
use clap::{Args, ValueEnum};
use ezaudio_engine::runtime::DeviceChoice;

use crate::bench::{self, BenchOptions};

use super::{CliError, CliResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    L,
    Xl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Dit,
    T5,
    Vae,
    /// A whole job: T5, --steps guided DDIM steps on --seconds of audio, VAE decode (all models resident)
    Job,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Model size to build (random weights, real shapes)
    #[arg(long, value_enum, default_value_t = Shape::L)]
    pub shape: Shape,
    /// Which part to time
    #[arg(long, value_enum)]
    pub part: Part,
    /// Timed runs (after --warmup untimed ones)
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// CPU threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Guided DiT steps of `--part job`
    #[arg(long, default_value_t = 2)]
    pub steps: usize,
    /// Seconds of audio of `--part job`
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f32,
    /// `--part job` keeps every step's latents, as jobs did before tracing became opt-in
    #[arg(long)]
    pub trace: bool,
    /// Untimed runs before the timed ones
    #[arg(long, default_value_t = 1)]
    pub warmup: u32,
    /// Precision: f32, f16 or bf16
    #[arg(long, default_value = "f32", value_parser = |s: &str| ezaudio_engine::runtime::parse_dtype(s).map_err(|e| e.to_string()))]
    pub dtype: DType,
    /// Where to run: cpu (default), cuda, cuda:N, metal, auto
    #[arg(long, default_value = "cpu", value_parser = |s: &str| s.parse::<DeviceChoice>().map_err(|e| e.to_string()))]
    pub device: DeviceChoice,
}

pub fn run(args: BenchArgs) -> CliResult {
    if args.runs == 0 || args.runs > 1000 {
        return Err(CliError::new(format!(
            "--runs must be between 1 and 1000, got {}",
            args.runs
        )));
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 60.0) {
        return Err(CliError::new(format!(
            "--seconds must be between 0 and 60, got {}",
            args.seconds
        )));
    }
    if args.steps == 0 || args.steps > 1000 || args.warmup > 100 {
        return Err(CliError::new(format!(
            "--steps must be between 1 and 1000 and --warmup at most 100, got {} and {}",
            args.steps, args.warmup
        )));
    }
    if let Some(n) = args.threads {
        if n == 0 || n > 1024 {
            return Err(CliError::new(format!(
                "--threads must be between 1 and 1024, got {n}"
            )));
        }
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    for row in bench_backend(&args)? {
        crate::outln!("{row}")?;
    }
    Ok(())
}

fn bench_backend(args: &BenchArgs) -> CliResult<Vec<serde_json::Value>> {
    // The update stays so options added to BenchOptions later take their defaults here.
    #[allow(clippy::needless_update)]
    let opts = BenchOptions {
        shape: match args.shape {
            Shape::L => bench::Shape::L,
            Shape::Xl => bench::Shape::XL,
        },
        part: match args.part {
            Part::Dit => bench::Part::Dit,
            Part::T5 => bench::Part::T5,
            Part::Vae => bench::Part::Vae,
            Part::Job => bench::Part::Job,
        },
        steps: args.steps,
        seconds: args.seconds,
        trace: args.trace,
        warmup: args.warmup as usize,
        runs: args.runs as usize,
        threads: args.threads,
        dtype: args.dtype,
        device: args.device,
    };
    bench::run(&opts).map_err(|e| CliError::new(e.to_string()))
}
