//! Fused f32 CPU passes for the DiT blocks. Each replaces a chain of candle element-wise ops (one
//! allocation and one trip through memory per op, some of them single-threaded) by one parallel
//! pass. The arithmetic is the reference's, operation by operation in f32 (no FMA contraction),
//! so results match the unfused chain up to the summation order of the LayerNorm moments.
//!
//! Callers check [`applies`] and keep the candle chain for other devices and dtypes.

use candle_core::{
    bail, CpuStorage, DType, Device, InplaceOp1, Layout, Result, Storage, Tensor, WithDType,
};
use rayon::prelude::*;

use super::math;

/// Rows per parallel task: big enough that scheduling is noise, small enough to split 1000 rows.
const ROWS_PER_TASK: usize = 16;

/// Whether the fused kernels handle `x` (f32 on the CPU).
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    with_slice(t, f)
}

/// Runs `f` on the contiguous data of a CPU tensor of element type `T` (no copy when the
/// tensor is already contiguous).
pub(crate) fn with_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("fused kernel: tensor is not on the CPU")
    };
    let data = cpu.as_slice::<T>()?;
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
#[inline(always)]
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

#[inline(always)]
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
                let film = film.as_ref().zip(one_plus_scale.as_deref());
                let film = film.map(|(f, ops)| (f.shift, ops));
                let rows = RowBatch {
                    first: task * ROWS_PER_TASK,
                    per_batch: rows_per_batch,
                };
                layer_norm_rows(dst, src, weight, bias, eps, film, rows)
            })
    })?;
    Tensor::from_vec(out, dims, &Device::Cpu)
}

/// Where a task's rows sit: the first row's index and how many rows each batch item has.
#[derive(Clone, Copy)]
struct RowBatch {
    first: usize,
    per_batch: usize,
}

impl RowBatch {
    fn batch_of(self, r: usize) -> usize {
        (self.first + r) / self.per_batch.max(1)
    }
}

math::multiversion! {
    /// LayerNorm of each `d`-row of `src` into `dst`, then `y * (1 + scale) + shift` with the
    /// row's batch entry of `film = (shift, 1 + scale)`.
    fn layer_norm_rows(
        dst: &mut [f32],
        src: &[f32],
        weight: &[f32],
        bias: &[f32],
        eps: f32,
        film: Option<(&[f32], &[f32])>,
        rows: RowBatch,
    ) {
        let d = weight.len();
        for (r, (y, row)) in dst.chunks_exact_mut(d).zip(src.chunks_exact(d)).enumerate() {
            let mean = row_sum(row) / d as f32;
            let var = row_sq_dev(row, mean) / d as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            for ((y, &v), (&w, &b)) in y.iter_mut().zip(row).zip(weight.iter().zip(bias)) {
                *y = (v - mean) * rstd * w + b;
            }
            if let Some((shift, one_plus_scale)) = film {
                let b = rows.batch_of(r);
                let shift = &shift[b * d..(b + 1) * d];
                let scale = &one_plus_scale[b * d..(b + 1) * d];
                for ((y, &s), &t) in y.iter_mut().zip(scale).zip(shift) {
                    *y = *y * s + t;
                }
            }
        }
    }
}

math::multiversion! {
    /// `value * gelu_erf(gate)` for each `[value | gate]` row of `src` (rows of `2 * inner`).
    fn geglu_rows(dst: &mut [f32], src: &[f32], inner: usize) {
        for (y, row) in dst.chunks_exact_mut(inner).zip(src.chunks_exact(2 * inner)) {
            let (value, gate) = row.split_at(inner);
            for ((y, &v), &g) in y.iter_mut().zip(value).zip(gate) {
                *y = v * math::gelu_erf(g);
            }
        }
    }
}

math::multiversion! {
    /// `y = x + sin(a x)^2 * inv_beta` for one channel row.
    pub fn snake_row(y: &mut [f32], x: &[f32], a: f32, inv_beta: f32) {
        let peak = x.iter().fold(0f32, |m, &v| m.max((v * a).abs()));
        if peak <= math::SIN_FAST_LIMIT {
            for (yv, &xv) in y.iter_mut().zip(x) {
                let s = math::sin(xv * a);
                *yv = xv + s * s * inv_beta;
            }
        } else {
            // Huge arguments (or NaN): libm's full range reduction.
            for (yv, &xv) in y.iter_mut().zip(x) {
                let s = (xv * a).sin();
                *yv = xv + s * s * inv_beta;
            }
        }
    }
}

math::multiversion! {
    fn gated_rows(out: &mut [f32], a: &[f32], b: &[f32], act: GateActivation) {
        match act {
            GateActivation::GeluTanh => {
                for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                    *o = math::gelu_tanh(a) * b;
                }
            }
            GateActivation::GeluErf => {
                for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                    *o = math::gelu_erf(a) * b;
                }
            }
        }
    }
}

math::multiversion! {
    /// Softmax of each `l`-row, after adding the row's batch entry of `key_bias`.
    fn softmax_rows(data: &mut [f32], l: usize, key_bias: Option<&[f32]>, rows: RowBatch) {
        for (r, row) in data.chunks_exact_mut(l).enumerate() {
            if let Some(bias) = key_bias {
                let b = rows.batch_of(r);
                for (v, &k) in row.iter_mut().zip(&bias[b * l..(b + 1) * l]) {
                    *v += k;
                }
            }
            softmax_row(row);
        }
    }
}

/// GEGLU: `h[..., :I] * gelu_erf(h[..., I:])` for `h` `(..., 2I)`; returns `(..., I)`.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    let mut dims = h.dims().to_vec();
    let two_i = *dims.last().unwrap_or(&0);
    if two_i == 0 || two_i % 2 == 1 {
        bail!("fused geglu: last dim {two_i} is not even")
    }
    let inner = two_i / 2;
    let rows = h.elem_count() / two_i;
    let mut out = vec![0f32; rows * inner];
    with_f32(h, |src| {
        out.par_chunks_mut(inner * ROWS_PER_TASK)
            .zip(src.par_chunks(two_i * ROWS_PER_TASK))
            .for_each(|(dst, src)| geglu_rows(dst, src, inner))
    })?;
    if let Some(last) = dims.last_mut() {
        *last = inner;
    }
    Tensor::from_vec(out, dims, &Device::Cpu)
}

/// The activation of a gated feed-forward (T5's `gated-gelu`).
#[derive(Debug, Clone, Copy)]
pub enum GateActivation {
    GeluTanh,
    GeluErf,
}

/// `act(a) * b` element-wise for same-shaped `a`, `b` (T5's gated feed-forward).
pub fn gated(a: &Tensor, b: &Tensor, act: GateActivation) -> Result<Tensor> {
    if a.dims() != b.dims() {
        bail!("fused gated: {:?} vs {:?}", a.dims(), b.dims())
    }
    let mut out = vec![0f32; a.elem_count()];
    const CHUNK: usize = 1 << 14;
    with_f32(a, |a| {
        with_f32(b, |b| {
            out.par_chunks_mut(CHUNK)
                .zip(a.par_chunks(CHUNK))
                .zip(b.par_chunks(CHUNK))
                .for_each(|((o, a), b)| gated_rows(o, a, b, act))
        })
    })??;
    Tensor::from_vec(out, a.dims(), &Device::Cpu)
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
                    // Plain mul/add: baseline SSE2 vectorises it already.
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

/// Softmax over the last dim of attention scores `(B, H, T, L)`, in place, with an optional
/// additive key bias `B x L` (the key-padding mask). `exp` is the vectorised [`math::exp`].
pub fn softmax_last_dim_in_place(scores: &Tensor, key_bias: Option<&[f32]>) -> Result<()> {
    let (b, _, _, l) = scores.dims4()?;
    if let Some(bias) = key_bias {
        if bias.len() != b * l {
            bail!("fused softmax: key bias must be {b} x {l}")
        }
    }
    scores.inplace_op1(&Softmax { key_bias, batch: b })
}

struct Softmax<'a> {
    key_bias: Option<&'a [f32]>,
    batch: usize,
}

impl InplaceOp1 for Softmax<'_> {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            bail!("fused softmax: expects contiguous f32 scores")
        };
        let l = layout.dims().last().copied().unwrap_or(0);
        if l == 0 {
            return Ok(());
        }
        let rows_per_batch = (end - start) / l / self.batch.max(1);
        data[start..end]
            .par_chunks_mut(l * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, data)| {
                let rows = RowBatch {
                    first: task * ROWS_PER_TASK,
                    per_batch: rows_per_batch,
                };
                softmax_rows(data, l, self.key_bias, rows)
            });
        Ok(())
    }
}

/// `row = exp(row - max) / sum`, with 16 independent lanes for the max and the sum.
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v);
        }
    }
    let max = chunks.remainder().iter().fold(
        lanes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
        |m, &v| m.max(v),
    );
    let mut sums = [0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for chunk in &mut chunks {
        for (sum, v) in sums.iter_mut().zip(chunk.iter_mut()) {
            *v = math::exp(*v - max);
            *sum += *v;
        }
    }
    let mut total = sums.iter().sum::<f32>();
    for v in chunks.into_remainder() {
        *v = math::exp(*v - max);
        total += *v;
    }
    let inv = 1.0 / total;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// The transpose of a 2-D f32 CPU tensor, contiguous, in parallel 64 x 64 tiles (candle's
/// strided copy is one thread walking the source column by column: 3 s for an XL DiT at load).
pub fn transpose_2d(x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = x.dims2()?;
    const TILE: usize = 64;
    let mut out = vec![0f32; rows * cols];
    with_f32(x, |src| {
        // Each task owns TILE output rows (= TILE source columns).
        out.par_chunks_mut(TILE * rows.max(1))
            .enumerate()
            .for_each(|(band, dst)| {
                let c0 = band * TILE;
                let width = dst.len() / rows.max(1);
                for r0 in (0..rows).step_by(TILE) {
                    for r in r0..(r0 + TILE).min(rows) {
                        let row = &src[r * cols + c0..r * cols + c0 + width];
                        for (c, &v) in row.iter().enumerate() {
                            dst[c * rows + r] = v;
                        }
                    }
                }
            })
    })?;
    Tensor::from_vec(out, (cols, rows), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_2d_matches_candle_for_ragged_tiles() -> Result<()> {
        for (rows, cols) in [(1, 1), (3, 130), (129, 65), (64, 64), (200, 7)] {
            let x = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu)?;
            let ours = transpose_2d(&x)?;
            let want = x.t()?.contiguous()?;
            assert_eq!(ours.dims(), &[cols, rows]);
            let diff = (ours - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{rows} x {cols}");
        }
        Ok(())
    }
}
