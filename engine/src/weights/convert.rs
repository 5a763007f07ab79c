//! Float conversions straight out of a file's bytes, so a checkpoint stored in one of f16, bf16
//! and f32 reaches a model in another in a single pass, with no copy in the stored dtype.

use candle_core::DType;
use rayon::prelude::*;

/// Converted values, typed for `Tensor::from_vec`.
pub(super) enum FloatVec {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    BF16(Vec<half::bf16>),
}

/// Elements per step when narrowing through an f32 scratch buffer.
const CONVERT_CHUNK: usize = 1024;

/// `bytes` (`from` values in native byte order, as candle's own reader takes them) as `to`,
/// for two different types among f16, bf16 and f32; `None` for other pairs or bytes not aligned
/// for their type (the caller then goes through candle). Each conversion is the one candle's CPU `to_dtype` applies per element:
/// `to_f32` to widen, `from_f32` of the f32 value to narrow.
pub(super) fn convert_float(bytes: &[u8], from: DType, to: DType) -> Option<FloatVec> {
    use half::slice::HalfFloatSliceExt;
    use half::{bf16, f16};

    // Converted in parallel blocks: loading is otherwise one thread streaming gigabytes.
    const BLOCK: usize = 1 << 16;

    fn widen<H>(src: &[H]) -> Vec<f32>
    where
        [H]: HalfFloatSliceExt,
        H: Sync,
    {
        // A zeroed allocation: fresh pages from the kernel, no extra pass.
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(BLOCK)
            .zip(src.par_chunks(BLOCK))
            .for_each(|(out, src)| src.convert_to_f32_slice(out));
        out
    }
    fn narrow<H, T>(src: &[H], f: impl Fn(f32) -> T + Sync) -> Vec<T>
    where
        [H]: HalfFloatSliceExt,
        H: Sync,
        T: Copy + Default + Send,
    {
        let mut out = vec![T::default(); src.len()];
        out.par_chunks_mut(BLOCK)
            .zip(src.par_chunks(BLOCK))
            .for_each(|(out, block)| {
                let mut scratch = [0f32; CONVERT_CHUNK];
                for (out, chunk) in out
                    .chunks_mut(CONVERT_CHUNK)
                    .zip(block.chunks(CONVERT_CHUNK))
                {
                    let wide = &mut scratch[..chunk.len()];
                    chunk.convert_to_f32_slice(wide);
                    for (o, &x) in out.iter_mut().zip(wide.iter()) {
                        *o = f(x);
                    }
                }
            });
        out
    }
    Some(match (from, to) {
        (DType::F16, DType::F32) => {
            let src: &[f16] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::F32(widen(src))
        }
        (DType::BF16, DType::F32) => {
            let src: &[bf16] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::F32(widen(src))
        }
        (DType::F16, DType::BF16) => {
            let src: &[f16] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::BF16(narrow(src, bf16::from_f32))
        }
        (DType::BF16, DType::F16) => {
            let src: &[bf16] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::F16(narrow(src, f16::from_f32))
        }
        (DType::F32, DType::BF16) => {
            let src: &[f32] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::BF16(src.par_iter().map(|&x| bf16::from_f32(x)).collect())
        }
        (DType::F32, DType::F16) => {
            let src: &[f32] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::F16(src.par_iter().map(|&x| f16::from_f32(x)).collect())
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};

    use crate::weights::fixture::bits;
    use crate::weights::Checkpoint;

    /// Awkward values for every float conversion: signed zeros, infinities, NaN, f16
    /// subnormals and overflow, ties, then a long ramp (more than one conversion chunk).
    fn awkward_f32() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            1.0,
            -1.5,
            65504.0,
            65520.0,
            1e6,
            -1e-8,
            6e-8,
            3e-5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            1.0 + 1.0 / 2048.0,
            std::f32::consts::PI,
        ];
        v.extend((0..2500).map(|i| (i as f32 * 0.731).sin() * 10f32.powi(i % 9 - 4)));
        v
    }

    #[test]
    fn every_float_conversion_matches_candle_to_dtype_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let base = Tensor::new(awkward_f32(), &Device::Cpu).unwrap();
        let n = base.elem_count();
        let floats = [DType::F16, DType::BF16, DType::F32];
        let stored: HashMap<String, Tensor> = floats
            .iter()
            .map(|&d| (format!("{d:?}"), base.to_dtype(d).unwrap()))
            .collect();
        let path = dir.path().join("floats.safetensors");
        candle_core::safetensors::save(&stored, &path).unwrap();
        let ckpt = Checkpoint::load(&path, None, None).unwrap();
        for from in floats {
            let name = format!("{from:?}");
            let file_tensor = &stored[&name];
            for to in floats {
                let got = ckpt.var_builder(to, &Device::Cpu).get(n, &name).unwrap();
                assert_eq!(got.dtype(), to);
                let want = file_tensor.to_dtype(to).unwrap();
                assert_eq!(bits(&got), bits(&want), "{from:?} -> {to:?}");
            }
        }
        // Spot checks of the values themselves: 65520 overflows f16, 1 + 1/256 ties to even in
        // bf16, 1 + 3/256 rounds up.
        let f16_of_f32 = ckpt
            .var_builder(DType::F16, &Device::Cpu)
            .get(n, "F32")
            .unwrap();
        let v = f16_of_f32
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(&v[..6], &[0.0, -0.0, 1.0, -1.5, 65504.0, f32::INFINITY]);
        assert!(v[12].is_nan());
        let bf16_of_f32 = ckpt
            .var_builder(DType::BF16, &Device::Cpu)
            .get(n, "F32")
            .unwrap();
        let v = bf16_of_f32
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(v[14], 1.0);
        assert_eq!(v[15], 1.0 + 4.0 / 256.0);
    }
}
