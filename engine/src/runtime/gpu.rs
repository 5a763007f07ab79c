//! Opening a CUDA device without surprises.
//!
//! The CUDA build loads the driver, cuBLAS and cuRAND at run time (scripts/build-cuda.sh). When
//! one of them is missing, cudarc panics on first use with a long message about `LD_LIBRARY_PATH`;
//! when the driver is there but no GPU is, it returns an error code. Both are turned here into a
//! sentence naming what is missing, and probing first keeps the panic from happening at all.

use candle_core::Device;

use crate::error::{Error, Result};

/// The libraries candle's CUDA device needs when it is created (context, cuBLAS handle, cuRAND
/// generator), each with the file names they are installed under (Linux, then Windows).
#[cfg(feature = "cuda")]
const NEEDED: &[(&str, &[&str])] = &[
    (
        "the NVIDIA driver (libcuda)",
        &["libcuda.so.1", "libcuda.so", "nvcuda.dll"],
    ),
    (
        "cuBLAS (libcublas)",
        &["libcublas.so.13", "libcublas.so", "cublas64_13.dll"],
    ),
    (
        "cuBLASLt (libcublasLt)",
        &["libcublasLt.so.13", "libcublasLt.so", "cublasLt64_13.dll"],
    ),
    (
        "cuRAND (libcurand)",
        &["libcurand.so.10", "libcurand.so", "curand64_10.dll"],
    ),
];

/// The parts of [`NEEDED`] that cannot be loaded in this process (empty when all load).
#[cfg(feature = "cuda")]
pub fn missing_libraries() -> Vec<&'static str> {
    NEEDED
        .iter()
        .filter(|(_, names)| {
            !names.iter().any(|n| {
                // SAFETY: loading a shared library runs its initialisers; these are NVIDIA's
                // own libraries, the same ones cudarc loads right after this check.
                unsafe { libloading::Library::new(n) }.is_ok()
            })
        })
        .map(|(what, _)| *what)
        .collect()
}

#[cfg(not(feature = "cuda"))]
pub fn missing_libraries() -> Vec<&'static str> {
    Vec::new()
}

/// What to tell a person whose CUDA libraries are missing.
fn missing_message(missing: &[&str]) -> String {
    let driver = missing.iter().any(|m| m.contains("driver"));
    let hint = if driver {
        "no NVIDIA driver is installed (or no GPU is visible to this process)"
    } else {
        "install the CUDA 13 libraries (the CUDA toolkit, or the PyPI wheels nvidia-cublas and \
         nvidia-curand) and put their lib folder on LD_LIBRARY_PATH"
    };
    format!("CUDA: cannot load {}: {hint}", missing.join(", "))
}

/// Opens CUDA device `ordinal`, or says in plain words why not.
pub fn open_cuda(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::Unsupported(
            "CUDA: this build has no CUDA support (build it with scripts/build-cuda.sh)".into(),
        ));
    }
    let missing = missing_libraries();
    if !missing.is_empty() {
        return Err(Error::Unsupported(missing_message(&missing)));
    }
    // A library that loads but lacks a symbol (too old a driver) still panics inside cudarc:
    // contained here so the caller gets an error, and `auto` can fall back to the CPU.
    let opened = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    match opened {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(Error::Unsupported(device_error(ordinal, &e.to_string()))),
        Err(payload) => Err(Error::Unsupported(format!(
            "CUDA device {ordinal}: the CUDA libraries failed to load: {}",
            payload_text(payload.as_ref())
        ))),
    }
}

/// The words of a caught panic (`&str` or `String` payloads).
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// candle's CUDA errors quote the driver's enum names; say what they mean.
fn device_error(ordinal: usize, raw: &str) -> String {
    let plain = if raw.contains("CUDA_ERROR_NO_DEVICE") {
        "no CUDA GPU answered (the driver is installed, but it sees no device)".to_string()
    } else if raw.contains("CUDA_ERROR_INVALID_DEVICE") {
        format!("there is no GPU number {ordinal} (try cuda:0)")
    } else if raw.contains("CUDA_ERROR_INSUFFICIENT_DRIVER")
        || raw.contains("CUDA_ERROR_COMPAT_NOT_SUPPORTED")
    {
        "the NVIDIA driver is too old for CUDA 13 (driver 580 or newer is needed)".to_string()
    } else {
        "the device could not be opened".to_string()
    };
    format!("CUDA device {ordinal}: {plain} ({raw})")
}

/// A short human name of a CUDA device: ordinal, model name and compute capability.
#[cfg(feature = "cuda")]
pub fn describe_cuda(device: &Device) -> Option<String> {
    let Device::Cuda(cuda) = device else {
        return None;
    };
    let stream = cuda.cuda_stream();
    let ctx = stream.context();
    let name = ctx.name().ok()?;
    let cc = ctx
        .compute_capability()
        .map(|(major, minor)| format!(", sm_{major}{minor}"))
        .unwrap_or_default();
    Some(format!("CUDA GPU {} ({name}{cc})", ctx.ordinal()))
}

#[cfg(not(feature = "cuda"))]
pub fn describe_cuda(_device: &Device) -> Option<String> {
    None
}

/// Memory in use on the device of `device` in MiB (total - free, as the driver reports it:
/// this process's tensors and context, and other processes'), `None` off CUDA.
#[cfg(feature = "cuda")]
pub fn memory_in_use_mib(device: &Device) -> Option<f64> {
    let Device::Cuda(cuda) = device else {
        return None;
    };
    let stream = cuda.cuda_stream();
    let (free, total) = stream.context().mem_get_info().ok()?;
    Some(total.saturating_sub(free) as f64 / (1024.0 * 1024.0))
}

#[cfg(not(feature = "cuda"))]
pub fn memory_in_use_mib(_device: &Device) -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_driver_is_named_in_plain_words() {
        let m = missing_message(&["the NVIDIA driver (libcuda)", "cuBLAS (libcublas)"]);
        assert!(
            m.contains("cannot load the NVIDIA driver (libcuda), cuBLAS"),
            "{m}"
        );
        assert!(m.contains("no NVIDIA driver is installed"), "{m}");
        let m = missing_message(&["cuRAND (libcurand)"]);
        assert!(m.contains("LD_LIBRARY_PATH"), "{m}");
    }

    #[test]
    fn driver_error_codes_are_explained() {
        let m = device_error(
            0,
            "DriverError(CUDA_ERROR_NO_DEVICE, \"no CUDA-capable device\")",
        );
        assert!(m.starts_with("CUDA device 0: no CUDA GPU answered"), "{m}");
        let m = device_error(3, "DriverError(CUDA_ERROR_INVALID_DEVICE, \"\")");
        assert!(m.contains("no GPU number 3"), "{m}");
    }

    /// Without the feature (the default build) the answer must be the rebuild hint, never a
    /// panic; with it on a machine without a GPU, a message naming the missing part.
    #[test]
    fn opening_cuda_without_a_gpu_is_an_error_not_a_panic() {
        if let Err(e) = open_cuda(0) {
            let m = e.to_string();
            assert!(m.contains("CUDA"), "{m}");
        }
    }
}
