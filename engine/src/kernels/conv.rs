//! 1-D convolutions of the VAE on the CPU in f32, as strided `gemm` calls with no im2col buffer.
//!
//! A kernel-`K` convolution is `y = sum_j W_j X_j`: `W_j` is tap `j` of the weight (a strided view
//! `C_out x C_in`) and `X_j` the padded input shifted by `j * dilation` (a strided view
//! `C_in x L_out`). `gemm` reads both views in place and accumulates into the output, which starts
//! as the bias (plus the residual, when the caller fuses one); taps that fall in the zero padding
//! are skipped instead of padding a copy of the input. candle's CPU conv instead unrolls
//! the input K times (im2col: up to ~0.9 GB for the last decoder stage of 10 s, single-threaded)
//! and adds the bias in a separate pass.

use candle_core::{bail, DType, Device, Result, Tensor};
use gemm::Parallelism;

use rayon::prelude::*;

use super::fused::{snake_row, with_f32};

/// Stride, dilation and zero padding of a convolution.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub stride: usize,
    pub dilation: usize,
    pub padding: usize,
}

/// Whether these kernels handle `x` with weight `w` (both f32 on the CPU).
pub fn applies(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32
}

fn parallelism() -> Parallelism {
    Parallelism::Rayon(candle_core::utils::get_num_threads().max(1))
}

/// `dst (m x n, row stride dst_rs, column stride dst_cs) += lhs (m x k) * rhs (k x n)`.
/// Strides are in elements. Safety: the caller guarantees every addressed element is in bounds.
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    parallelism: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        true,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    )
}

/// Runs `f(weight, x_b, out_b)` for each batch item `b` of `x` (items of `in_len` values) and
/// `out` (items of `out_len`), with the weight and the input as f32 slices.
fn for_each_item(
    x: &Tensor,
    w: &Tensor,
    out: &mut [f32],
    (in_len, out_len): (usize, usize),
    mut f: impl FnMut(&[f32], &[f32], &mut [f32]),
) -> Result<()> {
    if in_len == 0 || out_len == 0 {
        return Ok(());
    }
    with_f32(w, |w| {
        with_f32(x, |x| {
            for (xb, dst) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(out_len)) {
                f(w, xb, dst);
            }
        })
    })?
}

/// Output rows start as `bias[c]` (plus `residual`, laid out like the output).
fn initial_output(
    b: usize,
    c: usize,
    l: usize,
    bias: &[f32],
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(b * c * l);
    for i in 0..b * c {
        let bias = bias.get(i % c).copied().unwrap_or(0.0);
        match residual {
            Some(r) => out.extend(r[i * l..(i + 1) * l].iter().map(|v| v + bias)),
            None => out.extend(std::iter::repeat_n(bias, l)),
        }
    }
    out
}

/// `conv1d(x, w) + bias (+ residual)`. `x`: `(B, C_in, L_in)`, `w`: `(C_out, C_in, K)`,
/// `bias`: `C_out` values (empty = none), `residual`: `(B, C_out, L_out)`.
pub fn conv1d(
    x: &Tensor,
    w: &Tensor,
    bias: &[f32],
    g: Geometry,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, c_in, l_in) = x.dims3()?;
    let (c_out, w_c_in, k) = w.dims3()?;
    let span = g.dilation * (k.max(1) - 1) + 1;
    let padded = l_in + 2 * g.padding;
    if w_c_in != c_in || k == 0 || g.stride == 0 || padded < span {
        bail!("conv1d: input {:?}, weight {:?}, {g:?}", x.dims(), w.dims())
    }
    let l_out = (padded - span) / g.stride + 1;
    if let Some(r) = residual {
        if r.dims() != [b, c_out, l_out] {
            bail!(
                "conv1d: residual {:?}, output ({b}, {c_out}, {l_out})",
                r.dims()
            )
        }
    }
    let mut out = match residual {
        Some(r) => with_f32(r, |r| initial_output(b, c_out, l_out, bias, Some(r)))?,
        None => initial_output(b, c_out, l_out, bias, None),
    };
    for_each_item(
        x,
        w,
        &mut out,
        (c_in * l_in, c_out * l_out),
        |w, xb, dst| {
            for j in 0..k {
                // Tap j reads input column t*stride + j*dilation - padding. Only outputs
                // whose column lies inside the input get a term (the zero padding adds
                // nothing), so no padded copy of the input is made.
                let shift = j * g.dilation;
                let first = g.padding.saturating_sub(shift).div_ceil(g.stride);
                let end = (l_in + g.padding)
                    .checked_sub(shift)
                    .map_or(0, |room| room.div_ceil(g.stride))
                    .min(l_out);
                if first >= end {
                    continue;
                }
                let column = first * g.stride + shift - g.padding;
                // SAFETY: rows c < c_in of `xb` are read at columns column + t*stride for
                // t < end - first, all < l_in by the choice of `end`; outputs first..end of
                // each of the c_out rows exist; taps j < k of the weight exist.
                unsafe {
                    accumulate(
                        (c_out, end - first, c_in),
                        dst.as_mut_ptr().add(first),
                        (l_out, 1),
                        w.as_ptr().add(j),
                        (c_in * k, k),
                        xb.as_ptr().add(column),
                        (l_in, g.stride),
                        parallelism(),
                    )
                }
            }
        },
    )?;
    Tensor::from_vec(out, (b, c_out, l_out), &Device::Cpu)
}

/// `conv_transpose1d(x, w, stride s, padding p) + bias` for the VAE's kernel `K = 2s`.
/// `x`: `(B, C_in, T)`, `w`: `(C_in, C_out, 2s)`. Output length `(T - 1) s - 2p + 2s`.
/// Input frame `i` adds tap `r` to output sample `i s + r - p`; each tap is one strided gemm
/// into the output (column stride `s`), restricted to the frames that land inside the crop.
/// The `SAFETY` bounds are the same kind as in [`conv1d`]: every frame index is < `t` and every
/// output index is `i s + r - p` in `0..len` by the choice of `first` and `end`.
pub fn conv_transpose1d(
    x: &Tensor,
    w: &Tensor,
    bias: &[f32],
    s: usize,
    p: usize,
) -> Result<Tensor> {
    let (b, c_in, t) = x.dims3()?;
    let (w_c_in, c_out, k) = w.dims3()?;
    if w_c_in != c_in || s == 0 || k != 2 * s || (t + 1) * s < 2 * p {
        bail!(
            "conv_transpose1d: input {:?}, weight {:?}, stride {s}, padding {p}",
            x.dims(),
            w.dims()
        )
    }
    let len = (t + 1) * s - 2 * p;
    let mut out = initial_output(b, c_out, len, bias, None);
    for_each_item(x, w, &mut out, (c_in * t, c_out * len), |w, xb, dst| {
        for r in 0..k {
            // Frames i with 0 <= i*s + r - p < len.
            let Some(room) = (len + p).checked_sub(r) else {
                continue;
            };
            let first = p.saturating_sub(r).div_ceil(s);
            let end = room.div_ceil(s).min(t);
            if first >= end {
                continue;
            }
            let o0 = first * s + r - p;
            unsafe {
                accumulate(
                    (c_out, end - first, c_in),
                    dst.as_mut_ptr().add(o0),
                    (len, s),
                    w.as_ptr().add(r),
                    (k, c_out * k),
                    xb.as_ptr().add(first),
                    (t, 1),
                    parallelism(),
                )
            }
        }
    })?;
    Tensor::from_vec(out, (b, c_out, len), &Device::Cpu)
}

/// SnakeBeta parameters of one activation: per channel `exp(alpha)` and `1 / (exp(beta) + eps)`.
#[derive(Debug, Clone, Copy)]
pub struct Snake<'a> {
    pub alpha: &'a [f32],
    pub inv_beta: &'a [f32],
}

/// The weights of an Oobleck residual unit `x + conv_1x1(snake2(conv_k(snake1(x))))` with a
/// "same"-padded dilated kernel `(C, C, k)` (odd k) and a 1x1 conv `(C, C, 1)`.
pub struct ResidualUnit<'a> {
    pub snake1: Snake<'a>,
    pub conv1: &'a Tensor,
    pub bias1: &'a [f32],
    pub dilation: usize,
    pub snake2: Snake<'a>,
    pub conv2: &'a Tensor,
    pub bias2: &'a [f32],
}

/// Output columns per tile: the tile's activations (`C x tile` plus halo) stay in L2.
fn tile_len(channels: usize) -> usize {
    (65_536 / channels.max(1)).max(256)
}

/// A raw output pointer shared by tiles that write disjoint column ranges.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: each task writes only its own tile's columns (see `residual_unit`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Through a method, so closures capture the whole (Sync) wrapper, not the raw field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Runs a residual unit on `x` `(B, C, L)` in time tiles. Each tile reads its input with a halo of
/// the conv's reach, so the result equals the unfused chain (same sums per output, up to gemm's
/// blocking order), but the unit's two full-length intermediates are never allocated: peak
/// memory is `x` + the output instead of four full tensors, and the tiles stay in cache.
pub fn residual_unit(x: &Tensor, unit: &ResidualUnit) -> Result<Tensor> {
    let (b, c, l) = x.dims3()?;
    let k = unit.conv1.dim(2)?;
    if unit.conv1.dims() != [c, c, k]
        || unit.conv2.dims() != [c, c, 1]
        || k % 2 == 0
        || unit.bias1.len() != c
        || unit.bias2.len() != c
        || unit.snake1.alpha.len() != c
        || unit.snake2.alpha.len() != c
    {
        bail!(
            "residual unit: input {:?}, conv {:?} / {:?}",
            x.dims(),
            unit.conv1.dims(),
            unit.conv2.dims()
        )
    }
    let reach = (k - 1) / 2 * unit.dilation;
    let tile = tile_len(c);
    let tiles = l.div_ceil(tile);
    let threads = candle_core::utils::get_num_threads().max(1);
    // Many tiles: one tile per task, single-threaded gemm. Few (the long-channel, short early
    // stages): tiles in order, each gemm split over the threads.
    let (outer, inner) = if tiles >= 4 * threads {
        (true, Parallelism::None)
    } else {
        (false, parallelism())
    };
    let mut out = vec![0f32; b * c * l];
    let shared = SharedOut(out.as_mut_ptr());
    with_f32(unit.conv1, |w1| {
        with_f32(unit.conv2, |w2| {
            with_f32(x, |x| {
                let run_tile = |(bi, ti): (usize, usize)| {
                    let xb = &x[bi * c * l..(bi + 1) * c * l];
                    let t0 = ti * tile;
                    let t1 = (t0 + tile).min(l);
                    // Disjoint: batch item bi, columns t0..t1 of every row belong to this tile only.
                    let out = shared.at(bi * c * l);
                    residual_tile(xb, (l, t0, t1), reach, unit, (w1, w2), out, inner);
                };
                let jobs: Vec<(usize, usize)> = (0..b)
                    .flat_map(|bi| (0..tiles).map(move |ti| (bi, ti)))
                    .collect();
                if outer {
                    jobs.into_par_iter().for_each(run_tile);
                } else {
                    jobs.into_iter().for_each(run_tile);
                }
            })
        })
    })???;
    Tensor::from_vec(out, (b, c, l), &Device::Cpu)
}

/// One tile `t0..t1` of a residual unit on one batch item `xb` (`C x l`), written to `out`.
fn residual_tile(
    xb: &[f32],
    (l, t0, t1): (usize, usize, usize),
    reach: usize,
    unit: &ResidualUnit,
    (w1, w2): (&[f32], &[f32]),
    out: *mut f32,
    parallelism: Parallelism,
) {
    let c = unit.bias1.len();
    let k = w1.len() / (c * c);
    let n = t1 - t0;
    let lo = t0.saturating_sub(reach);
    let hi = (t1 + reach).min(l);
    let width = hi - lo;
    // snake1 over the tile and its halo.
    let mut act = vec![0f32; c * width];
    for (ch, row) in act.chunks_exact_mut(width).enumerate() {
        let src = &xb[ch * l + lo..ch * l + hi];
        snake_row(row, src, unit.snake1.alpha[ch], unit.snake1.inv_beta[ch]);
    }
    // conv_k: taps reaching outside 0..l hit the zero padding and are skipped.
    let mut hidden: Vec<f32> = unit
        .bias1
        .iter()
        .flat_map(|&b| std::iter::repeat_n(b, n))
        .collect();
    for j in 0..k {
        let shift = j * unit.dilation;
        let first = t0.max((lo + reach).saturating_sub(shift));
        let end = t1.min((hi + reach).saturating_sub(shift));
        if first >= end {
            continue;
        }
        // SAFETY: output columns first-t0..end-t0 < n of `hidden`'s c rows; input columns
        // first+shift-reach-lo .. end+shift-reach-lo lie in 0..width by the bounds above.
        unsafe {
            accumulate(
                (c, end - first, c),
                hidden.as_mut_ptr().add(first - t0),
                (n, 1),
                w1.as_ptr().add(j),
                (c * k, k),
                act.as_ptr().add(first + shift - reach - lo),
                (width, 1),
                parallelism,
            )
        }
    }
    // snake2 in place (row by row through a scratch row).
    let mut row_in = vec![0f32; n];
    for (ch, row) in hidden.chunks_exact_mut(n).enumerate() {
        row_in.copy_from_slice(row);
        snake_row(
            row,
            &row_in,
            unit.snake2.alpha[ch],
            unit.snake2.inv_beta[ch],
        );
    }
    // out = x + bias2 + conv_1x1(hidden), on this tile's columns.
    for ch in 0..c {
        let bias = unit.bias2[ch];
        for t in t0..t1 {
            // SAFETY: row ch, column t < l of this batch item, inside this tile.
            unsafe { *out.add(ch * l + t) = xb[ch * l + t] + bias };
        }
    }
    // SAFETY: rows 0..c, columns t0..t1 of `out` (row stride l); w2 is c x c; hidden c x n.
    unsafe {
        accumulate(
            (c, n, c),
            out.add(t0),
            (l, 1),
            w2.as_ptr(),
            (c, 1),
            hidden.as_ptr(),
            (n, 1),
            parallelism,
        )
    }
}
