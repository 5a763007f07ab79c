//! Hand-written CPU kernels for what candle's CPU backend lacks (see `PERF.md`).

pub mod bf16_gemm;
pub mod conv;
pub mod fused;
pub mod math;
