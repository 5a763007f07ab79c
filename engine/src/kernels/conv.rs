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

use super::fused::with_f32;

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
        parallelism(),
    )
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
    with_f32(w, |w| {
        with_f32(x, |x| {
            for bi in 0..b {
                let xb = &x[bi * c_in * l_in..(bi + 1) * c_in * l_in];
                let dst = &mut out[bi * c_out * l_out..(bi + 1) * c_out * l_out];
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
                        )
                    }
                }
            }
        })
    })??;
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
    with_f32(w, |w| {
        with_f32(x, |x| {
            for bi in 0..b {
                let xb = &x[bi * c_in * t..(bi + 1) * c_in * t];
                let dst = &mut out[bi * c_out * len..(bi + 1) * c_out * len];
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
                        )
                    }
                }
            }
        })
    })??;
    Tensor::from_vec(out, (b, c_out, len), &Device::Cpu)
}
