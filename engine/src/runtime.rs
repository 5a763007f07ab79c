//! The process the model runs in: which device (and precision) it uses, and the heap settings
//! that large tensors need (glibc; no-ops elsewhere).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{Error, Result};

pub mod gpu;

/// What the user asked for; `Auto` picks CUDA or Metal when built in and present, else CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "metal" | "mps" => Ok(Self::Metal),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Self::Cuda(i)),
                _ => Err(Error::InvalidInput(format!(
                    "unknown device '{s}' (expected auto, cpu, cuda, cuda:N or metal)"
                ))),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
            Self::Metal => write!(f, "metal"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device, with a message a person can act on when it is not available.
    pub fn open(self) -> Result<Device> {
        self.open_explained().map(|(device, _)| device)
    }

    /// Like [`Self::open`], plus, when `Auto` ends on the CPU although a GPU backend is built
    /// in, why the GPU was not used (for the "device: CPU (...)" line the CLI prints).
    pub fn open_explained(self) -> Result<(Device, Option<String>)> {
        match self {
            Self::Cpu => Ok((Device::Cpu, None)),
            Self::Cuda(i) => Ok((gpu::open_cuda(i)?, None)),
            Self::Metal => {
                if !candle_core::utils::metal_is_available() {
                    return Err(Error::Unsupported(
                        "Metal: this build has no Metal support (rebuild with `--features metal` on macOS)".into(),
                    ));
                }
                let device =
                    Device::new_metal(0).map_err(|e| Error::Unsupported(format!("Metal: {e}")))?;
                Ok((device, None))
            }
            Self::Auto => {
                let mut why = Vec::new();
                if candle_core::utils::cuda_is_available() {
                    match gpu::open_cuda(0) {
                        Ok(d) => return Ok((d, None)),
                        Err(e) => why.push(e.to_string()),
                    }
                }
                if candle_core::utils::metal_is_available() {
                    match Device::new_metal(0) {
                        Ok(d) => return Ok((d, None)),
                        Err(e) => why.push(format!("Metal: {e}")),
                    }
                }
                Ok((Device::Cpu, (!why.is_empty()).then(|| why.join("; "))))
            }
        }
    }
}

/// A short human name of an opened device ("CPU", "CUDA GPU 0 (NVIDIA H200, sm_90)").
pub fn describe(device: &Device) -> String {
    if let Some(name) = gpu::describe_cuda(device) {
        return name;
    }
    match device {
        Device::Cpu => "CPU".into(),
        Device::Cuda(_) => "CUDA GPU".into(),
        Device::Metal(_) => "Metal GPU".into(),
    }
}

/// The `--dtype` spelling of a dtype (f32, f16, bf16; others by candle's name).
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F32 => "f32",
        other => other.as_str(),
    }
}

/// Parses `--dtype`: f32 (default), f16, bf16.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" => Ok(DType::F32),
        "f16" | "float16" | "fp16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(Error::InvalidInput(format!(
            "unknown dtype '{other}' (expected f32, f16 or bf16)"
        ))),
    }
}

// ---- Heap settings for large tensors ----

/// Keeps freed tensor buffers in the process instead of returning them to the kernel.
///
/// candle allocates a fresh buffer per op; glibc serves blocks above its mmap threshold (at most
/// 32 MiB) with a fresh `mmap` and unmaps them on free, so every large activation of the VAE
/// (up to ~1 GB) and the DiT's 32 MiB attention scores are page-faulted and zeroed by the kernel
/// again on each use. With mmap disabled and a high trim threshold, they are recycled from the
/// heap: VAE decode -36%, DiT step -3..5% on the 2-core box (engine/PERF.md). Process-wide and
/// glibc-only (a no-op elsewhere); the peak RSS then stays reserved. Call it once at start-up
/// (the bench and the CLI do).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc <malloc.h>: M_TRIM_THRESHOLD = -1, M_MMAP_MAX = -4.
        extern "C" {
            fn mallopt(
                param: std::os::raw::c_int,
                value: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        // SAFETY: mallopt only changes allocator parameters; it takes the arena lock itself.
        unsafe {
            mallopt(-1, i32::MAX);
            mallopt(-4, 0);
        }
    }
}

/// Hands memory freed so far back to the kernel (glibc `malloc_trim`; a no-op elsewhere).
/// Loading converts and packs weights through temporary buffers; with [`tune_allocator`]'s
/// settings the heap would otherwise keep them resident after a model is built.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim only returns free heap pages; it takes the arena locks itself.
        unsafe {
            malloc_trim(0);
        }
    }
}
