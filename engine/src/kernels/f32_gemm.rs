//! f32 GEMM for the Linear layers, with the weight packed once at load time: an AVX-512 kernel
//! here, an AVX2 + FMA one over the same layout in `avx2_gemm`.
//!
//! `out = a * w^T + bias`, `w` a PyTorch Linear weight ([n][k]). The `gemm` crate (candle's f32
//! matmul) runs 256-bit FMA kernels on every x86 CPU unless built with its `x86-v4` feature,
//! and it re-packs the weight on every call. On an Intel Xeon with two 512-bit FMA units this
//! kernel reached 1.4-1.8x of that (`engine/PERF.md`); on AMD Zen 4 (512-bit instructions on
//! 256-bit datapaths) the two may be close. So whether the Linear layers use it is decided once
//! per process by a short measurement against `gemm` at a DiT-like shape ([`use_packed`]). On
//! AVX2-only CPUs gemm is kept (the AVX2 kernel was not faster on Zen 3); it can be forced.
//!
//! Layout: the weight is cut into panels of `NR` = 64 columns; inside a panel, row `i` of all
//! 64 columns is contiguous (4 zmm loads). The activations are read in place (row-major, one
//! broadcast per row and k), so nothing is packed per call.

use std::sync::OnceLock;
use std::time::Instant;

use super::cpu::{self, Tier};
use super::tiles::{self, OutPtr};

/// zmm vectors per panel row.
const NV: usize = 4;
/// Panel width (output columns per micro-tile); 64 divides the usual model widths.
const NR: usize = 16 * NV;
/// Rows per micro-tile: 24 accumulators + 4 weight vectors + a broadcast fit the 32 zmm.
const MR: usize = 6;
/// k per cache block: one panel's block (128 x 64 f32 = 32 KiB) fits L1 with the 6 activation
/// rows; 64 and 256 measured slower on the Xeon (PERF.md).
const KC: usize = 128;

/// One cache line of packed weight; the alignment makes every weight load a single-line load.
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Line([f32; 16]);

/// A Linear weight packed once into the panel layout the micro-kernel streams.
pub struct PackedF32Weight {
    n: usize,
    k: usize,
    panels: usize,
    /// `panels * k * NR` values: value `(panel * k + i) * NR + c` is `w[panel * NR + c][i]`;
    /// zero past n.
    data: Vec<Line>,
}

/// Summary only: the packed data can be hundreds of MiB.
impl std::fmt::Debug for PackedF32Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedF32Weight")
            .field("n", &self.n)
            .field("k", &self.k)
            .finish()
    }
}

impl PackedF32Weight {
    /// Packs a row-major [n][k] weight.
    pub fn new(weight: &[f32], n: usize, k: usize) -> Self {
        use rayon::prelude::*;
        assert_eq!(weight.len(), n * k, "weight length != n * k");
        let panels = n.div_ceil(NR);
        let mut data = vec![Line([0.0; 16]); panels * k * NR / 16];
        let flat: &mut [f32] = bytemuck::cast_slice_mut(&mut data);
        if !flat.is_empty() {
            flat.par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(panel, dst)| {
                    for c in 0..NR.min(n - panel * NR) {
                        let row = &weight[(panel * NR + c) * k..][..k];
                        for (i, &x) in row.iter().enumerate() {
                            dst[i * NR + c] = x;
                        }
                    }
                });
        }
        PackedF32Weight { n, k, panels, data }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub(super) fn values(&self) -> &[f32] {
        bytemuck::cast_slice(&self.data)
    }
}

/// out[i][j] = sum_k a[i][k] * w[j][k] + bias[j], `a` row-major m x k. Every output is written.
pub fn matmul(a: &[f32], m: usize, w: &PackedF32Weight, bias: Option<&[f32]>, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    assert_eq!(a.len(), m * k, "a length != m * k");
    assert_eq!(out.len(), m * n, "out length != m * n");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias length != n");
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in out.chunks_exact_mut(n) {
            match bias {
                Some(b) => row.copy_from_slice(b),
                None => row.fill(0.0),
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if cpu::tier() >= Tier::Avx512 {
        let outp = OutPtr(out.as_mut_ptr());
        tiles::for_each_task(m.div_ceil(MR), w.panels, |tiles, panels| {
            let rows = tiles.start * MR..(tiles.end * MR).min(m);
            // SAFETY: AVX-512 F is there (the tier); tasks write disjoint tiles of `out`.
            unsafe { avx512::task(a, w, bias, outp, rows, panels) }
        });
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if cpu::tier() >= Tier::Avx2 {
        // SAFETY: AVX2 and FMA are there (the tier); the lengths were checked above.
        return unsafe { super::avx2_gemm::matmul_f32(a, m, w, bias, out) };
    }
    fallback(a, m, w, bias, out)
}

/// Portable path over the same packed data (only reached when forced onto a CPU without
/// AVX2; speed does not matter here).
fn fallback(a: &[f32], m: usize, w: &PackedF32Weight, bias: Option<&[f32]>, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    let b = w.values();
    for i in 0..m {
        for j in 0..n {
            let panel = b.get((j / NR) * k * NR + j % NR..).unwrap_or(&[]);
            let mut acc = bias.map_or(0.0, |b| b[j]);
            for (p, &x) in a[i * k..(i + 1) * k].iter().enumerate() {
                acc += x * panel[p * NR];
            }
            out[i * n + j] = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::tiles::Init;
    use super::*;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Computes out[rows][panels] over all of k.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn task(
        a: &[f32],
        w: &PackedF32Weight,
        bias: Option<&[f32]>,
        out: OutPtr,
        rows: Range<usize>,
        panels: Range<usize>,
    ) {
        let (n, k) = (w.n, w.k);
        let (ap, bp) = (a.as_ptr(), w.values().as_ptr());
        tiles::sweep(rows, panels, (k, KC, MR), NR * 4, |t| {
            let col = t.panel * NR;
            let args = Args {
                a: ap.add(t.row * k + t.k0),
                lda: k,
                b: bp.add((t.panel * k + t.k0) * NR),
                kc: t.kc,
                c: out.0.add(t.row * n + col),
                ldc: n,
                init: Init::for_tile(&t, bias, col),
                masks: tiles::column_masks((n - col).min(NR)),
            };
            match t.height {
                6 => kernel::<6>(&args),
                5 => kernel::<5>(&args),
                4 => kernel::<4>(&args),
                3 => kernel::<3>(&args),
                2 => kernel::<2>(&args),
                _ => kernel::<1>(&args),
            }
        });
    }

    struct Args {
        a: *const f32,
        lda: usize,
        b: *const f32,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        init: Init,
        masks: [u16; NV],
    }

    /// H x NR tile: C (+)= A[H x kc] * B[kc x NR]. Masks cover the columns past n. Loops over
    /// constant bounds unroll fully, so the tile lives in zmm registers.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const H: usize>(x: &Args) {
        let mut acc = [[_mm512_setzero_ps(); NV]; H];
        for r in 0..H {
            for v in 0..NV {
                let mk = x.masks[v];
                acc[r][v] = match x.init {
                    Init::Zero => _mm512_setzero_ps(),
                    Init::Bias(b) => _mm512_maskz_loadu_ps(mk, b.wrapping_add(16 * v)),
                    Init::Load => _mm512_maskz_loadu_ps(mk, x.c.wrapping_add(r * x.ldc + 16 * v)),
                };
            }
        }
        let (mut a, mut b) = (x.a, x.b);
        for _ in 0..x.kc {
            let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_load_ps(b.add(16 * v)));
            for r in 0..H {
                let av = _mm512_set1_ps(*a.add(r * x.lda));
                for v in 0..NV {
                    acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
                }
            }
            a = a.add(1);
            b = b.add(NR);
        }
        for r in 0..H {
            for v in 0..NV {
                _mm512_mask_storeu_ps(x.c.wrapping_add(r * x.ldc + 16 * v), x.masks[v], acc[r][v]);
            }
        }
    }
}

/// Which f32 matmul the CPU Linear layers use, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct F32LinearChoice {
    pub packed: bool,
    pub why: String,
}

static CHOICE: OnceLock<F32LinearChoice> = OnceLock::new();

/// Whether the CPU f32 Linear layers use [`PackedF32Weight`] (decided on first call, once per
/// process). `EZAUDIO_F32_LINEAR=packed|gemm` forces one (packed runs the AVX-512 kernel, else the
/// AVX2 one, else the portable loop); default `auto`, which measures only at the avx512 tier.
pub fn use_packed() -> bool {
    choice().packed
}

pub fn choice() -> &'static F32LinearChoice {
    CHOICE.get_or_init(|| {
        let forced = std::env::var("EZAUDIO_F32_LINEAR").ok();
        match forced.as_deref().map(str::trim) {
            Some("packed") => F32LinearChoice {
                packed: true,
                why: "EZAUDIO_F32_LINEAR=packed".into(),
            },
            Some("gemm") => F32LinearChoice {
                packed: false,
                why: "EZAUDIO_F32_LINEAR=gemm".into(),
            },
            _ if cpu::tier() < Tier::Avx2 => F32LinearChoice {
                packed: false,
                why: format!("tier {} has no AVX2", cpu::tier().name()),
            },
            // On AMD Zen 3 the AVX2 kernel measured 0.7-1.1x gemm's rate at load, and the one
            // time the measurement picked it the guided DiT-L step was 1.19x PyTorch's instead
            // of 1.11x (PERF.md): a short measurement cannot separate them reliably, so only
            // EZAUDIO_F32_LINEAR=packed takes it.
            _ if cpu::tier() < Tier::Avx512 => F32LinearChoice {
                packed: false,
                why: format!(
                    "tier {}: gemm's FMA kernels (the packed avx2 kernel is not faster)",
                    cpu::tier().name()
                ),
            },
            _ => measure(),
        }
    })
}

/// Times both kernels at a DiT-like shape (256 x 1024 x 1024, about 0.5 GFLOP; tens of ms in
/// all) and keeps `gemm` unless the packed kernel is clearly faster here.
fn measure() -> F32LinearChoice {
    let (m, k, n) = (256, 1024, 1024);
    let mut s = 0x9e37_79b9_u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
    let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
    let packed = PackedF32Weight::new(&w, n, k);
    let mut w_t = vec![0.0; k * n];
    for (j, row) in w.chunks_exact(k).enumerate() {
        for (i, &x) in row.iter().enumerate() {
            w_t[i * n + j] = x;
        }
    }
    let mut out = vec![0.0; m * n];
    let best = |f: &mut dyn FnMut()| {
        f();
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let t_gemm = best(&mut || gemm_rowmajor(&a, m, &w_t, n, k, &mut out));
    let t_packed = best(&mut || matmul(&a, m, &packed, None, &mut out));
    let gflops = |t: f64| 2.0 * (m * n * k) as f64 / t / 1e9;
    let packed_wins = t_packed < 0.9 * t_gemm;
    F32LinearChoice {
        packed: packed_wins,
        why: format!(
            "measured at load: packed {} {:.0} GFLOP/s, gemm crate {:.0} GFLOP/s",
            packed_isa(),
            gflops(t_packed),
            gflops(t_gemm)
        ),
    }
}

/// The instruction set the packed kernel runs with at this tier.
pub fn packed_isa() -> &'static str {
    if cpu::tier() >= Tier::Avx512 {
        "avx512"
    } else if cpu::tier() >= Tier::Avx2 {
        "avx2"
    } else {
        "portable"
    }
}

/// `out (m x n) = a (m x k) * w_t (k x n)` with the `gemm` crate, as candle's matmul calls it.
fn gemm_rowmajor(a: &[f32], m: usize, w_t: &[f32], n: usize, k: usize, out: &mut [f32]) {
    // SAFETY: the slices hold m*k, k*n and m*n values, row-major, as the strides say.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            w_t.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: usize, k: usize, n: usize, with_bias: bool) {
        let mut s = (m * 7919 + k * 31 + n) as u64 | 1;
        let mut r = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let a: Vec<f32> = (0..m * k).map(|_| r()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| r()).collect();
        let bias: Vec<f32> = (0..n).map(|_| r()).collect();
        let bias = with_bias.then_some(&bias[..]);
        let packed = PackedF32Weight::new(&w, n, k);
        let tol = 2e-6 * (k as f32).max(1.0) + 1e-6;
        let mut fast = vec![f32::NAN; m * n];
        matmul(&a, m, &packed, bias, &mut fast);
        let mut slow = vec![f32::NAN; m * n];
        fallback(&a, m, &packed, bias, &mut slow);
        let mut results = vec![("matmul", fast), ("fallback", slow)];
        // The AVX2 kernel too where the tier picks AVX-512 (matmul takes the best one).
        #[cfg(target_arch = "x86_64")]
        if cpu::tier() >= Tier::Avx2 && m > 0 && n > 0 && k > 0 {
            let mut v = vec![f32::NAN; m * n];
            // SAFETY: the tier says AVX2 and FMA are there; the lengths are right.
            unsafe { crate::kernels::avx2_gemm::matmul_f32(&a, m, &packed, bias, &mut v) };
            results.push(("avx2", v));
        }
        for i in 0..m {
            for j in 0..n {
                let mut want = bias.map_or(0.0, |b| b[j] as f64);
                for p in 0..k {
                    want += a[i * k + p] as f64 * w[j * k + p] as f64;
                }
                for (name, got) in &results {
                    let g = got[i * n + j];
                    assert!(
                        (g as f64 - want).abs() <= tol as f64,
                        "{name} m={m} k={k} n={n} [{i}][{j}]: {g} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_f64_reference_at_edges_and_blocks() {
        // Row tails (m % 6), column tails (n % 64), several k blocks (k > 128), no k at all.
        for (m, k, n) in [
            (1, 1, 1),
            (7, 3, 65),
            (13, 300, 130),
            (6, 128, 64),
            (5, 0, 9),
            (20, 257, 200),
            (9, 130, 20),
            (3, 64, 100),
        ] {
            check(m, k, n, true);
            check(m, k, n, false);
        }
    }

    #[test]
    fn the_choice_says_why() {
        let c = choice();
        assert!(!c.why.is_empty());
        if cpu::tier() < Tier::Avx512 && std::env::var_os("EZAUDIO_F32_LINEAR").is_none() {
            assert!(!c.packed, "packed chosen by default without AVX-512");
        }
    }
}
