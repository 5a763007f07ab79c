//! `ezaudio bench`: times one part of a model at the official size.
//!
//! TODO(bench): `ezaudio_engine::bench` is being written separately. Until it is merged,
//! [`bench_backend`] is a stub that returns "not available yet"; wiring it up means replacing
//! its body with a call to `crate::bench::run(&crate::bench::BenchOptions { .. })` built from
//! [`BenchArgs`] (shape, part, runs, threads, dtype, device).

use candle_core::DType;
use clap::{Args, ValueEnum};

use crate::device::DeviceChoice;

use super::session::dtype_name;
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
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Model size to build (random weights, real shapes)
    #[arg(long, value_enum, default_value_t = Shape::L)]
    pub shape: Shape,
    /// Which part to time
    #[arg(long, value_enum)]
    pub part: Part,
    /// Timed runs (after one warm-up)
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// CPU threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Precision: f32, f16 or bf16
    #[arg(long, default_value = "f32", value_parser = |s: &str| crate::device::parse_dtype(s).map_err(|e| e.to_string()))]
    pub dtype: DType,
    /// auto, cpu, cuda, cuda:N or metal
    #[arg(long, default_value = "auto", value_parser = |s: &str| s.parse::<DeviceChoice>().map_err(|e| e.to_string()))]
    pub device: DeviceChoice,
}

pub fn run(args: BenchArgs) -> CliResult {
    if args.runs == 0 || args.runs > 1000 {
        return Err(CliError::new(format!(
            "--runs must be between 1 and 1000, got {}",
            args.runs
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
        println!("{row}");
    }
    Ok(())
}

/// TODO(bench): replace with `crate::bench::run(...)` once `engine/src/bench.rs` is merged.
fn bench_backend(args: &BenchArgs) -> CliResult<Vec<serde_json::Value>> {
    Err(CliError::new(format!(
        "ezaudio bench is not available in this build yet (the benchmark module is not merged); \
         requested: --shape {:?} --part {:?} --runs {} --dtype {} --device {}",
        args.shape,
        args.part,
        args.runs,
        dtype_name(args.dtype),
        args.device
    )))
}
