//! Fixture access and numeric comparison shared by the parity tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

pub use crate::support::fixtures_dir;

/// The device the parity checks run their models on: `EZAUDIO_TEST_DEVICE` (`cpu` by default,
/// `cuda`, `cuda:N`, `metal`). scripts/gpu-check.sh runs this test binary, built with
/// `--features cuda`, on a GPU this way. Fixtures stay host tensors; the models move their inputs.
/// A device that was asked for but does not open fails every test instead of falling back.
pub fn test_device() -> Device {
    static DEVICE: std::sync::OnceLock<Result<Device, String>> = std::sync::OnceLock::new();
    let opened = DEVICE.get_or_init(|| match std::env::var("EZAUDIO_TEST_DEVICE") {
        Err(_) => Ok(Device::Cpu),
        Ok(name) => name
            .parse::<ezaudio_engine::runtime::DeviceChoice>()
            .and_then(|choice| choice.open())
            .map_err(|e| format!("EZAUDIO_TEST_DEVICE={name}: {e}")),
    });
    match opened {
        Ok(device) => device.clone(),
        Err(why) => panic!("{why}"),
    }
}

/// A file under the fixture folder; panics (fails the test) when it is missing.
pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures_dir().join(rel);
    assert!(p.exists(), "fixture file {} is missing", p.display());
    p
}

pub fn load(rel: &str) -> HashMap<String, Tensor> {
    let p = fixture(rel);
    candle_core::safetensors::load(&p, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

pub fn read_json(rel: &str) -> serde_json::Value {
    let p = fixture(rel);
    let s =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

pub fn get<'a>(map: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    map.get(name)
        .unwrap_or_else(|| panic!("fixture tensor '{name}' is missing"))
}

/// `max|port - ref| / max|ref|`, the README's relative error.
pub fn rel_error(port: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(port.dims(), reference.dims(), "shape mismatch");
    let p = port
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let r = reference
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let max_ref = r.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = p.iter().zip(&r).fold(0f32, |m, (a, b)| {
        let d = (a - b).abs();
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    });
    if max_ref == 0.0 {
        max_diff
    } else {
        max_diff / max_ref
    }
}

#[track_caller]
pub fn assert_close(what: &str, port: &Tensor, reference: &Tensor, tol: f32) {
    assert_eq!(
        port.dims(),
        reference.dims(),
        "{what}: shape {:?} vs reference {:?}",
        port.dims(),
        reference.dims()
    );
    let rel = rel_error(port, reference);
    assert!(rel <= tol, "{what}: rel error {rel:e} exceeds {tol:e}");
}

/// Single forwards and every debug tensor.
pub const TOL_FORWARD: f32 = 1e-4;
/// A single DDIM step and `rescale_noise_cfg`.
pub const TOL_STEP: f32 = 1e-5;
/// End-to-end pipeline: per-step latents, final latent, waveform.
pub const TOL_PIPELINE: f32 = 1e-3;
