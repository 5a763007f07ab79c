//! AVX2 + FMA micro-kernels over the packed Linear weights, for CPUs without AVX-512 (most
//! laptops, AMD before Zen 4) and for bf16 weights on CPUs without a bf16 dot product.
//!
//! Both weight layouts keep their panels of 64 columns ([`PackedF32Weight`], [`PackedBf16Weight`]),
//! so a model packs the same way on every CPU. A 256-bit core has 16 vector registers, too few
//! for the 6x64 tile of the AVX-512 kernels, so each panel is swept as four 16-column strips
//! (6 rows x 2 ymm = 12 accumulators). The activations stay f32 and are read in place.
//!
//! bf16 weights are widened in registers: a packed word holds elements 2p (low half) and 2p+1
//! (high half) of one column, so a shift gives the first as f32 and a mask the second. Unlike the
//! `vdpbf16ps`/AMX kernels, the activations are not rounded to bf16 (there is no bf16 product
//! to feed), so this path is the more accurate of the two.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::ops::Range;

use super::bf16_gemm::PackedBf16Weight;
use super::f32_gemm::PackedF32Weight;
use super::tiles::{self, Init, MicroTile, OutPtr};

/// Panel width shared with the packed layouts.
const NR: usize = 64;
/// Columns per strip: two ymm vectors.
const STRIP: usize = 16;
/// Rows per micro-tile: 12 accumulators, 2 weight vectors, a broadcast and the bf16 mask fit
/// the 16 ymm registers.
const MR: usize = 6;
/// Rows per bf16 micro-tile: the widening needs the two raw words and two widened vectors live
/// at once, so 6 rows would spill (Zen 3, guided DiT-L step in bf16: 6 rows 9.9 s, 5 rows 9.1 s,
/// 4 rows 8.7 s).
const MR_BF16: usize = 4;
/// k values per cache block (a 6 x 128 activation block and one strip's 8 KiB of weight in L1).
const KC: usize = 128;

/// `out = a * w^T + bias` for a packed f32 weight. Every output is written.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `a` is m x k, `out` m x n, `bias` n long.
pub(super) unsafe fn matmul_f32(
    a: &[f32],
    m: usize,
    w: &PackedF32Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n, k) = (w.n(), w.k());
    let outp = OutPtr(out.as_mut_ptr());
    let (ap, bp) = (a.as_ptr() as usize, w.values().as_ptr() as usize);
    tiles::for_each_task(m.div_ceil(MR), n.div_ceil(NR), |row_units, panels| {
        let rows = row_units.start * MR..(row_units.end * MR).min(m);
        let (ap, bp) = (ap as *const f32, bp as *const f32);
        // SAFETY: the caller checked the CPU; each task writes its own tiles of `out`.
        unsafe {
            task::<false>(rows, panels, n, k, KC, bias, outp, |t| Strips {
                a: ap.add(t.row * k + t.k0),
                lda: k,
                b: bp.add((t.panel * k + t.k0) * NR).cast(),
                steps: t.kc,
                half_step: false,
            })
        }
    });
}

/// `out = a * w^T + bias` for a packed bf16 weight, with f32 activations. Every output is
/// written.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `a` is m x k, `out` m x n, `bias` n long.
pub(super) unsafe fn matmul_bf16(
    a: &[f32],
    m: usize,
    w: &PackedBf16Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n, k, kp) = (w.n(), w.k(), w.kp());
    // Pairs that hold data; the packing pads k with zero pairs that need no work.
    let pairs = k.div_ceil(2);
    let outp = OutPtr(out.as_mut_ptr());
    let (ap, bp) = (a.as_ptr() as usize, w.words().as_ptr() as usize);
    tiles::for_each_task(m.div_ceil(MR_BF16), n.div_ceil(NR), |row_units, panels| {
        let rows = row_units.start * MR_BF16..(row_units.end * MR_BF16).min(m);
        let (ap, bp) = (ap as *const f32, bp as *const u32);
        // SAFETY: as for `matmul_f32`; the last pair of an odd k has no second activation, so
        // it runs as a half step that reads only the first.
        unsafe {
            task::<true>(rows, panels, n, pairs, KC / 2, bias, outp, |t| {
                let odd_end = k % 2 == 1 && t.k0 + t.kc == pairs;
                Strips {
                    a: ap.add(t.row * k + 2 * t.k0),
                    lda: k,
                    b: bp.add((t.panel * kp + t.k0) * NR).cast(),
                    steps: t.kc - odd_end as usize,
                    half_step: odd_end,
                }
            })
        }
    });
}

/// Where one micro-tile's operands start. `steps`: k values (f32) or pairs (bf16) to multiply;
/// `half_step`: then the first half of one more pair (bf16 with an odd k).
struct Strips {
    a: *const f32,
    lda: usize,
    /// The panel's first column at the block's first k (f32 values or bf16 pair words: both 4
    /// bytes, 64 per k step).
    b: *const u8,
    steps: usize,
    half_step: bool,
}

/// Sweeps a task's tiles and runs the strip kernel of the weight type on each.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn task<const BF16: bool>(
    rows: Range<usize>,
    panels: Range<usize>,
    n: usize,
    steps: usize,
    block: usize,
    bias: Option<&[f32]>,
    out: OutPtr,
    operands: impl Fn(&MicroTile) -> Strips,
) {
    let mr = if BF16 { MR_BF16 } else { MR };
    tiles::sweep(rows, panels, (steps, block, mr), NR * 4, |t| {
        let s = operands(&t);
        let col = t.panel * NR;
        let init = Init::for_tile(&t, bias, col);
        for strip in 0..NR / STRIP {
            let c0 = col + strip * STRIP;
            if c0 >= n {
                break;
            }
            let x = Args {
                a: s.a,
                lda: s.lda,
                b: s.b.add(strip * STRIP * 4),
                steps: s.steps,
                half_step: s.half_step,
                c: out.0.add(t.row * n + c0),
                ldc: n,
                init: match init {
                    Init::Bias(b) => Init::Bias(b.add(strip * STRIP)),
                    other => other,
                },
            };
            if n - c0 >= STRIP {
                by_height::<BF16>(t.height, &x);
            } else {
                narrow_strip::<BF16>(t.height, &x, n - c0);
            }
        }
    });
}

/// A strip past the last column: computed into a full-width scratch tile, of which only the
/// `valid` real columns are read from and written to the output.
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_strip<const BF16: bool>(height: usize, x: &Args, valid: usize) {
    let mut tile = [[0f32; STRIP]; MR];
    for (r, row) in tile.iter_mut().enumerate().take(height) {
        let src = match x.init {
            Init::Zero => continue,
            Init::Bias(b) => b,
            Init::Load => x.c.add(r * x.ldc),
        };
        std::ptr::copy_nonoverlapping(src, row.as_mut_ptr(), valid);
    }
    let scratch = Args {
        c: tile.as_mut_ptr().cast(),
        ldc: STRIP,
        init: Init::Load,
        ..*x
    };
    by_height::<BF16>(height, &scratch);
    for (r, row) in tile.iter().enumerate().take(height) {
        std::ptr::copy_nonoverlapping(row.as_ptr(), x.c.add(r * x.ldc), valid);
    }
}

#[derive(Clone, Copy)]
struct Args {
    a: *const f32,
    lda: usize,
    b: *const u8,
    steps: usize,
    half_step: bool,
    c: *mut f32,
    ldc: usize,
    init: Init,
}

#[target_feature(enable = "avx2,fma")]
unsafe fn by_height<const BF16: bool>(height: usize, x: &Args) {
    match (height, BF16) {
        (6, false) => f32_strip::<6>(x),
        (5, false) => f32_strip::<5>(x),
        (4, false) => f32_strip::<4>(x),
        (3, false) => f32_strip::<3>(x),
        (2, false) => f32_strip::<2>(x),
        (_, false) => f32_strip::<1>(x),
        (6, true) => bf16_strip::<6>(x),
        (5, true) => bf16_strip::<5>(x),
        (4, true) => bf16_strip::<4>(x),
        (3, true) => bf16_strip::<3>(x),
        (2, true) => bf16_strip::<2>(x),
        (_, true) => bf16_strip::<1>(x),
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn start<const H: usize>(x: &Args) -> [[__m256; 2]; H] {
    std::array::from_fn(|r| {
        std::array::from_fn(|v| match x.init {
            Init::Zero => _mm256_setzero_ps(),
            Init::Bias(b) => _mm256_loadu_ps(b.add(8 * v)),
            Init::Load => _mm256_loadu_ps(x.c.add(r * x.ldc + 8 * v)),
        })
    })
}

#[target_feature(enable = "avx2,fma")]
unsafe fn store<const H: usize>(x: &Args, acc: &[[__m256; 2]; H]) {
    for (r, row) in acc.iter().enumerate() {
        for (v, &value) in row.iter().enumerate() {
            _mm256_storeu_ps(x.c.add(r * x.ldc + 8 * v), value);
        }
    }
}

/// acc[r] += a[r][i] * b[i] for one k: the loops over constant bounds unroll, so the tile
/// stays in registers.
#[inline(always)]
unsafe fn rank1<const H: usize>(
    acc: &mut [[__m256; 2]; H],
    a: *const f32,
    lda: usize,
    b: [__m256; 2],
) {
    for (r, row) in acc.iter_mut().enumerate() {
        let av = _mm256_broadcast_ss(&*a.add(r * lda));
        row[0] = _mm256_fmadd_ps(av, b[0], row[0]);
        row[1] = _mm256_fmadd_ps(av, b[1], row[1]);
    }
}

/// H x 16 tile over f32 weights (64 values per k step; this strip's 16 are 64-byte aligned).
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_strip<const H: usize>(x: &Args) {
    let mut acc = start::<H>(x);
    let (mut a, mut b) = (x.a, x.b.cast::<f32>());
    for _ in 0..x.steps {
        rank1(
            &mut acc,
            a,
            x.lda,
            [_mm256_load_ps(b), _mm256_load_ps(b.add(8))],
        );
        a = a.add(1);
        b = b.add(NR);
    }
    store(x, &acc);
}

/// Element 2p of each pair word (its low half) as f32.
#[inline(always)]
unsafe fn first_half(w: __m256i) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w))
}

/// H x 16 tile over bf16 pair words (64 words per pair step), widened to f32 in registers.
#[target_feature(enable = "avx2,fma")]
unsafe fn bf16_strip<const H: usize>(x: &Args) {
    let mut acc = start::<H>(x);
    let high = _mm256_set1_epi32(0xffff_0000_u32 as i32);
    let (mut a, mut b) = (x.a, x.b.cast::<__m256i>());
    for _ in 0..x.steps {
        let w = [_mm256_load_si256(b), _mm256_load_si256(b.add(1))];
        rank1(&mut acc, a, x.lda, [first_half(w[0]), first_half(w[1])]);
        let second = [
            _mm256_castsi256_ps(_mm256_and_si256(w[0], high)),
            _mm256_castsi256_ps(_mm256_and_si256(w[1], high)),
        ];
        rank1(&mut acc, a.add(1), x.lda, second);
        a = a.add(2);
        b = b.add(NR / 8);
    }
    if x.half_step {
        let w = [_mm256_load_si256(b), _mm256_load_si256(b.add(1))];
        rank1(&mut acc, a, x.lda, [first_half(w[0]), first_half(w[1])]);
    }
    store(x, &acc);
}
