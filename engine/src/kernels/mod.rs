//! Hand-written CPU kernels for what candle's CPU backend lacks (see `PERF.md`).

mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2_gemm;
pub mod bf16_gemm;
pub mod conv;
pub mod cpu;
pub mod f32_gemm;
pub mod fused;
pub mod math;
mod tiles;
