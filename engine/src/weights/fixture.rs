//! Test data shared by the checkpoint tests: a small safetensors file and bit-exact views.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// Deterministic f16 values (not all representable in bf16, so the bf16 path rounds).
pub(super) fn f16_tensor(dims: &[usize], seed: f32) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<half::f16> = (0..n)
        .map(|i| half::f16::from_f32(((i as f32 * 0.37 + seed).sin()) * 3.1 + 0.001 * i as f32))
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// A file with prefixed f16 tensors (one large enough to span several release blocks), an
/// integer tensor and one unrelated key without the prefix.
pub(super) fn write_fixture(dir: &Path) -> PathBuf {
    let mut t = HashMap::new();
    t.insert(
        "autoencoder.big.weight".to_string(),
        f16_tensor(&[300, 700], 0.5),
    );
    t.insert("autoencoder.big.bias".to_string(), f16_tensor(&[300], 1.5));
    t.insert("autoencoder.norm.weight".to_string(), f16_tensor(&[7], 2.5));
    t.insert(
        "autoencoder.steps".to_string(),
        Tensor::new(&[3i64, -4, 1 << 40], &Device::Cpu).unwrap(),
    );
    t.insert("ema.big.weight".to_string(), f16_tensor(&[2, 2], 9.0));
    let path = dir.join("ckpt.safetensors");
    candle_core::safetensors::save(&t, &path).unwrap();
    path
}

/// The values' bit patterns, so comparisons are exact and tell -0 and NaNs apart.
pub(super) fn bits(t: &Tensor) -> Vec<u32> {
    match t.dtype() {
        DType::F32 => t
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
        DType::BF16 => t
            .flatten_all()
            .unwrap()
            .to_vec1::<half::bf16>()
            .unwrap()
            .iter()
            .map(|x| u32::from(x.to_bits()))
            .collect(),
        DType::F16 => t
            .flatten_all()
            .unwrap()
            .to_vec1::<half::f16>()
            .unwrap()
            .iter()
            .map(|x| u32::from(x.to_bits()))
            .collect(),
        DType::I64 => t
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&x| x as u32 ^ (x >> 32) as u32)
            .collect(),
        other => panic!("no bit view for {other:?}"),
    }
}
