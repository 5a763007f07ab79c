//! Fused f32 CPU passes for the DiT blocks. Each replaces a chain of candle element-wise ops (one
//! allocation and one trip through memory per op, some of them single-threaded) by one parallel
//! pass. The arithmetic is the reference's, operation by operation in f32 (no FMA contraction),
//! so results match the unfused chain up to the summation order of the LayerNorm moments.
//!
//! Callers check [`applies`] and keep the candle chain for other devices and dtypes.

use candle_core::{bail, DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

/// Rows per parallel task: big enough that scheduling is noise, small enough to split 1000 rows.
const ROWS_PER_TASK: usize = 16;

/// Whether the fused kernels handle `x` (f32 on the CPU).
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("fused kernel: tensor is not on the CPU")
    };
    let data = cpu.as_slice::<f32>()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("fused kernel: tensor is not contiguous")
    };
    Ok(f(&data[start..end]))
}

/// A small per-batch row table `(B, 1, D)` / `(B, D)` as host values.
pub fn host_rows(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// Row sums with 16 independent lanes (vectorises; a cascade like PyTorch's moments).
fn row_sum(row: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

fn row_sq_dev(row: &[f32], mean: f32) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            let d = v - mean;
            *lane += d * d;
        }
    }
    let tail: f32 = tail.iter().map(|v| (v - mean) * (v - mean)).sum();
    lanes.iter().sum::<f32>() + tail
}

/// adaLN modulation of a LayerNorm output: `y * (1 + scale[b]) + shift[b]` per batch item.
pub struct Film<'a> {
    pub shift: &'a [f32],
    pub scale: &'a [f32],
}

/// `LayerNorm(x) * weight + bias` over the last dim (two-pass moments, biased variance), then
/// the optional [`Film`]. `x`: `(B, ..., D)` f32 on the CPU; film tables are `B x D`.
pub fn layer_norm(
    x: &Tensor,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
    film: Option<Film>,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let d = *dims.last().unwrap_or(&0);
    if d == 0 || weight.len() != d || bias.len() != d {
        bail!(
            "fused layer_norm: input {dims:?}, weight {}, bias {}",
            weight.len(),
            bias.len()
        )
    }
    let batch = dims.first().copied().unwrap_or(1).max(1);
    if let Some(f) = &film {
        if f.shift.len() != batch * d || f.scale.len() != batch * d {
            bail!("fused layer_norm: film tables must be {batch} x {d}")
        }
    }
    let n = x.elem_count();
    let rows_per_batch = n / d / batch;
    // 1 + scale once per batch item, rounded as the reference's `(1 + scale)` tensor.
    let one_plus_scale: Option<Vec<f32>> = film
        .as_ref()
        .map(|f| f.scale.iter().map(|s| 1.0 + s).collect());
    let mut out = vec![0f32; n];
    with_f32(x, |src| {
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(src.par_chunks(d * ROWS_PER_TASK))
            .enumerate()
            .for_each(|(task, (dst, src))| {
                for (r, (y, row)) in dst.chunks_exact_mut(d).zip(src.chunks_exact(d)).enumerate() {
                    let mean = row_sum(row) / d as f32;
                    let var = row_sq_dev(row, mean) / d as f32;
                    let rstd = 1.0 / (var + eps).sqrt();
                    for ((y, &v), (&w, &b)) in y.iter_mut().zip(row).zip(weight.iter().zip(bias)) {
                        *y = (v - mean) * rstd * w + b;
                    }
                    if let (Some(f), Some(ops)) = (&film, &one_plus_scale) {
                        let b = (task * ROWS_PER_TASK + r) / rows_per_batch;
                        let shift = &f.shift[b * d..(b + 1) * d];
                        let scale = &ops[b * d..(b + 1) * d];
                        for ((y, &s), &t) in y.iter_mut().zip(scale).zip(shift) {
                            *y = *y * s + t;
                        }
                    }
                }
            })
    })?;
    Tensor::from_vec(out, dims, &Device::Cpu)
}

/// GEGLU: `h[..., :I] * gelu_erf(h[..., I:])` for `h` `(..., 2I)`; returns `(..., I)`.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    let mut dims = h.dims().to_vec();
    let two_i = *dims.last().unwrap_or(&0);
    if two_i == 0 || two_i % 2 != 0 {
        bail!("fused geglu: last dim {two_i} is not even")
    }
    let inner = two_i / 2;
    let rows = h.elem_count() / two_i;
    let mut out = vec![0f32; rows * inner];
    with_f32(h, |src| {
        out.par_chunks_mut(inner * ROWS_PER_TASK)
            .zip(src.par_chunks(two_i * ROWS_PER_TASK))
            .for_each(|(dst, src)| {
                for (y, row) in dst.chunks_exact_mut(inner).zip(src.chunks_exact(two_i)) {
                    let (value, gate) = row.split_at(inner);
                    for ((y, &v), &g) in y.iter_mut().zip(value).zip(gate) {
                        *y = v * gelu_erf(g);
                    }
                }
            })
    })?;
    if let Some(last) = dims.last_mut() {
        *last = inner;
    }
    Tensor::from_vec(out, dims, &Device::Cpu)
}

/// PyTorch's exact GELU, `x * 0.5 * (1 + erf(x / sqrt 2))`, in f32.
fn gelu_erf(x: f32) -> f32 {
    x * 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// EzAudio's gated residual `x + y * (1 - gate[b])`; `x`, `y`: `(B, T, D)`, `gate`: `B x D`.
pub fn gated_residual(x: &Tensor, y: &Tensor, gate: &[f32]) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if y.dims() != dims.as_slice() || dims.len() != 3 {
        bail!("fused gated_residual: {dims:?} vs {:?}", y.dims())
    }
    let (batch, t, d) = (dims[0], dims[1], dims[2]);
    if gate.len() != batch * d {
        bail!("fused gated_residual: gate must be {batch} x {d}")
    }
    let keep: Vec<f32> = gate.iter().map(|g| 1.0 - g).collect();
    let mut out = vec![0f32; x.elem_count()];
    with_f32(x, |xs| {
        with_f32(y, |ys| {
            out.par_chunks_mut(d * ROWS_PER_TASK)
                .zip(xs.par_chunks(d * ROWS_PER_TASK))
                .zip(ys.par_chunks(d * ROWS_PER_TASK))
                .enumerate()
                .for_each(|(task, ((o, xs), ys))| {
                    for (r, ((o, xs), ys)) in o
                        .chunks_exact_mut(d)
                        .zip(xs.chunks_exact(d))
                        .zip(ys.chunks_exact(d))
                        .enumerate()
                    {
                        let b = (task * ROWS_PER_TASK + r) / t;
                        let keep = &keep[b * d..(b + 1) * d];
                        for (((o, &x), &y), &k) in o.iter_mut().zip(xs).zip(ys).zip(keep) {
                            *o = x + y * k;
                        }
                    }
                })
        })
    })??;
    Tensor::from_vec(out, dims, &Device::Cpu)
}
