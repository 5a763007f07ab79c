//! bf16 GEMM for x86-64 CPUs with AVX512-BF16 (`vdpbf16ps`), f32 accumulation.
//!
//! `out = a * w^T + bias`, with `w` a PyTorch Linear weight ([n][k]) packed once at load time.
//!
//! Layout: bf16 values travel as `u32` pairs (element 2p in the low half, 2p+1 in the high half)
//! because `vdpbf16ps` multiplies pairs and adds both products into one f32 lane. The weight is
//! cut into panels of `NR` columns; inside a panel, pair `p` of all `NR` columns is contiguous, so
//! one 64-byte load feeds 16 output columns. Activations are converted to bf16 row-major, so
//! the pair of a row needed at step `p` is one 32-bit broadcast.
//!
//! Without AVX512-BF16 a portable scalar loop over the same packed data is used.

use half::bf16;
use rayon::prelude::*;

use super::amx;
use super::cpu::{self, Tier};
use super::tiles::{self, OutPtr};

/// zmm vectors per panel row.
const NV: usize = 4;
/// Panel width (output columns per micro-tile); 64 divides the usual model widths.
pub(super) const NR: usize = 16 * NV;
/// Rows per micro-tile: 24 accumulators + 4 weight vectors + broadcasts fit the 32 zmm, and a
/// broadcast feeds 4 dot products. On Zen 4, 6x64 measured as fast as or faster than 8x48,
/// 5x80, 4x64, 12x32 and 14x32 (the kernel runs near the 1 vdpbf16ps/cycle peak).
const MR: usize = 6;
/// k pairs per cache block: the 6 x 256 activation block (6 KiB) stays in L1 while a task's
/// weight panels (64 KiB each) stream from L2. 128 and 512 measured slightly slower.
const KC: usize = 256;

/// One cache line of packed data; the alignment makes every weight load a single-line load.
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Line([u32; 16]);

/// A Linear weight packed once at load time into the panel layout the micro-kernel streams.
pub struct PackedBf16Weight {
    n: usize,
    k: usize,
    /// k pairs (k rounded up to even, halved).
    kp: usize,
    panels: usize,
    /// `panels * kp * NR` words: word `(panel * kp + p) * NR + c` holds column
    /// `panel * NR + c`, elements `2p` (low) and `2p + 1` (high); zero past n or k.
    data: Vec<Line>,
}

/// Summary only: the packed data can be hundreds of MiB.
impl std::fmt::Debug for PackedBf16Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedBf16Weight")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("size_bytes", &self.size_bytes())
            .finish()
    }
}

/// True when a fast kernel for packed bf16 weights runs here, as [`cpu::tier`] allows: AMX or
/// AVX512-BF16 (bf16 products), else AVX2 + FMA with the weights widened to f32 in registers
/// (half the memory of f32 weights at about f32 speed).
pub fn is_available() -> bool {
    cpu::tier() >= Tier::Avx2
}

/// True when the CPU multiplies bf16 itself (`vdpbf16ps` or AMX tiles); the activations are then
/// rounded to bf16 too.
pub fn has_bf16_products() -> bool {
    cpu::tier() >= Tier::Avx512Bf16
}

impl PackedBf16Weight {
    /// Packs a row-major [n][k] f32 weight, rounding to nearest even.
    pub fn from_f32(weight: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(weight.len(), n * k, "weight length != n * k");
        Self::pack(n, k, |j, i| bf16::from_f32(weight[j * k + i]).to_bits())
    }

    /// Packs a row-major [n][k] bf16 weight.
    pub fn from_bf16(weight: &[bf16], n: usize, k: usize) -> Self {
        assert_eq!(weight.len(), n * k, "weight length != n * k");
        Self::pack(n, k, |j, i| weight[j * k + i].to_bits())
    }

    fn pack(n: usize, k: usize, get: impl Fn(usize, usize) -> u16 + Sync) -> Self {
        // Pairs rounded up to whole AMX tile rows (zeros past k): the model widths are
        // multiples of 32 already, so this costs nothing there.
        let kp = k.div_ceil(2 * amx::PAIRS) * amx::PAIRS;
        let panels = n.div_ceil(NR);
        let words = panels * kp * NR;
        let mut data = vec![Line([0; 16]); words / 16];
        let flat: &mut [u32] = bytemuck::cast_slice_mut(&mut data);
        if words > 0 {
            halves_mut(flat)
                .par_chunks_mut(2 * kp * NR)
                .enumerate()
                .for_each(|(panel, dst)| {
                    for c in 0..NR.min(n - panel * NR) {
                        for i in 0..k {
                            dst[(i / 2 * NR + c) * 2 + i % 2] = get(panel * NR + c, i);
                        }
                    }
                });
        }
        PackedBf16Weight {
            n,
            k,
            kp,
            panels,
            data,
        }
    }

    /// Output features (rows of the source weight).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of the source weight).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held by the packed data (padding included).
    pub fn size_bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<Line>()
    }

    pub(super) fn words(&self) -> &[u32] {
        bytemuck::cast_slice(&self.data)
    }

    /// Packed pairs per column (k rounded up; see `pack`).
    pub(super) fn kp(&self) -> usize {
        self.kp
    }

    pub(super) fn panels(&self) -> usize {
        self.panels
    }
}

/// Pair words are always accessed as two u16 in memory order: this matches the x86 kernels
/// (low half = even element) and keeps the portable path endian-agnostic.
fn halves(words: &[u32]) -> &[u16] {
    bytemuck::cast_slice(words)
}

fn halves_mut(words: &mut [u32]) -> &mut [u16] {
    bytemuck::cast_slice_mut(words)
}

/// Same rounding as `half::bf16::from_f32` (RNE, NaN kept quiet), written so it vectorizes.
#[inline(always)]
fn f32_to_bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        (b >> 16) | 0x40
    } else {
        b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16
    }
}

/// out[i][j] = sum_k a[i][k] * w[j][k] + bias[j]; `a` is f32 row-major m x k, rounded to bf16 inside.
pub fn matmul(a: &[f32], m: usize, w: &PackedBf16Weight, bias: Option<&[f32]>, out: &mut [f32]) {
    assert_eq!(a.len(), m * w.k, "a length != m * k");
    #[cfg(target_arch = "x86_64")]
    if is_available() && !has_bf16_products() {
        return widened(a, m, w, bias, out);
    }
    let fast = has_bf16_products();
    run(m, w, bias, out, fast, |i, dst| {
        let src = &a[i * w.k..(i + 1) * w.k];
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: AVX-512 was detected.
            return unsafe { avx::convert_row(src, dst) };
        }
        convert_row(src, dst)
    });
}

/// Same as [`matmul`], but `a` is already bf16 (row-major m x k).
pub fn matmul_bf16_input(
    a: &[bf16],
    m: usize,
    w: &PackedBf16Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    assert_eq!(a.len(), m * w.k, "a length != m * k");
    #[cfg(target_arch = "x86_64")]
    if is_available() && !has_bf16_products() {
        let a: Vec<f32> = a.iter().map(|x| x.to_f32()).collect();
        return widened(&a, m, w, bias, out);
    }
    run(m, w, bias, out, has_bf16_products(), |i, dst| {
        for (d, s) in dst.iter_mut().zip(&a[i * w.k..(i + 1) * w.k]) {
            *d = s.to_bits();
        }
    });
}

#[inline(always)]
fn convert_row(src: &[f32], dst: &mut [u16]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = f32_to_bf16_bits(x) as u16;
    }
}

thread_local! {
    /// bf16 activations, reused so that each call does not page-fault a fresh buffer.
    static SCRATCH: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}
/// Larger buffers are freed after the call instead of being kept by the thread.
const SCRATCH_KEEP_BYTES: usize = 64 << 20;

/// Converts the activations with `fill(row, dst)` (dst: the row's first k bf16 values, in pair
/// order) into the pair buffer, then multiplies.
fn run(
    m: usize,
    w: &PackedBf16Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
    fast: bool,
    fill: impl Fn(usize, &mut [u16]) + Sync,
) {
    assert_eq!(out.len(), m * w.n, "out length != m * n");
    let (k, kp) = (w.k, w.kp);
    // Taken, not borrowed: a nested call on this thread (rayon work stealing) gets an empty Vec.
    let mut buf = SCRATCH.with(|s| s.take());
    // Rows padded with zeros to whole AMX micro-tiles (the other kernels ignore them).
    let rows = m.div_ceil(amx::BLOCK) * amx::BLOCK;
    if buf.len() < rows * kp {
        buf.resize(rows * kp, 0);
    }
    buf[m * kp..rows * kp].fill(0);
    let a = &mut buf[..m * kp];
    if kp > 0 {
        a.par_chunks_mut(kp * 16).enumerate().for_each(|(c, rows)| {
            for (r, row) in rows.chunks_exact_mut(kp).enumerate() {
                let row16 = halves_mut(row);
                row16[k..].fill(0);
                fill(c * 16 + r, &mut row16[..k]);
            }
        });
    }
    gemm(&buf[..rows * kp], m, w, bias, out, fast);
    if buf.capacity() * 4 <= SCRATCH_KEEP_BYTES {
        SCRATCH.with(|s| s.set(buf));
    }
}

/// The AVX2 path: f32 activations times the widened bf16 weight.
#[cfg(target_arch = "x86_64")]
fn widened(a: &[f32], m: usize, w: &PackedBf16Weight, bias: Option<&[f32]>, out: &mut [f32]) {
    if !check_or_fill_trivial(m, w, bias, out) {
        // SAFETY: the tier has AVX2 and FMA; `a` is m x k (asserted by the callers), `out` and
        // `bias` were checked.
        unsafe { super::avx2_gemm::matmul_bf16(a, m, w, bias, out) }
    }
}

/// Checks the output and bias lengths; returns true when there was nothing to multiply (no
/// rows, no columns, or an empty sum, whose outputs are then the bias).
fn check_or_fill_trivial(
    m: usize,
    w: &PackedBf16Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> bool {
    let n = w.n;
    assert_eq!(out.len(), m * n, "out length != m * n");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias length != n");
    }
    if m == 0 || n == 0 {
        return true;
    }
    if w.kp == 0 {
        // Empty sum: the kernels would never write their tiles.
        for row in out.chunks_exact_mut(n) {
            match bias {
                Some(b) => row.copy_from_slice(b),
                None => row.fill(0.0),
            }
        }
        return true;
    }
    false
}

/// `a`: bf16 pairs, row-major m x kp.
fn gemm(
    a: &[u32],
    m: usize,
    w: &PackedBf16Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
    fast: bool,
) {
    if check_or_fill_trivial(m, w, bias, out) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fast && cpu::tier() >= Tier::Amx {
        // SAFETY: the Amx tier means the CPU has AMX-BF16 and the permission was granted;
        // `run` padded the rows, `pack` the pairs.
        return unsafe { amx::gemm(a, m, w, bias, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if fast {
        return gemm_parallel(a, m, w, bias, out);
    }
    let _ = fast;
    gemm_fallback(a, m, w, bias, out)
}

#[cfg(target_arch = "x86_64")]
fn gemm_parallel(a: &[u32], m: usize, w: &PackedBf16Weight, bias: Option<&[f32]>, out: &mut [f32]) {
    let outp = OutPtr(out.as_mut_ptr());
    tiles::for_each_task(m.div_ceil(MR), w.panels, |tiles, panels| {
        let rows = tiles.start * MR..(tiles.end * MR).min(m);
        // SAFETY: AVX512-BF16 was detected; tasks cover disjoint output tiles inside `out`.
        unsafe { avx::task(a, w, bias, outp, rows, panels) }
    });
}

/// Portable path over the same packed data (speed does not matter here).
fn gemm_fallback(a: &[u32], m: usize, w: &PackedBf16Weight, bias: Option<&[f32]>, out: &mut [f32]) {
    let (n, kp) = (w.n, w.kp);
    let (a, b) = (halves(a), halves(w.words()));
    let f = |x: u16| f32::from_bits((x as u32) << 16);
    out.par_chunks_mut(n)
        .zip(a.par_chunks(2 * kp))
        .take(m)
        .for_each(|(orow, arow)| {
            for (j, o) in orow.iter_mut().enumerate() {
                let panel = &b[((j / NR) * kp * NR + j % NR) * 2..];
                let mut acc = bias.map_or(0.0, |b| b[j]);
                for (p, x) in arow.chunks_exact(2).enumerate() {
                    let y = &panel[p * NR * 2..];
                    acc += f(x[0]) * f(y[0]) + f(x[1]) * f(y[1]);
                }
                *o = acc;
            }
        });
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::tiles::Init;
    use super::*;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Computes out[rows][panels] over all of k.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn task(
        a: &[u32],
        w: &PackedBf16Weight,
        bias: Option<&[f32]>,
        out: OutPtr,
        rows: Range<usize>,
        panels: Range<usize>,
    ) {
        let (n, kp) = (w.n, w.kp);
        let (ap, bp) = (a.as_ptr(), w.words().as_ptr());
        tiles::sweep(rows, panels, (kp, KC, MR), NR * 4, |t| {
            let col = t.panel * NR;
            let args = Args {
                a: ap.add(t.row * kp + t.k0),
                lda: kp,
                b: bp.add((t.panel * kp + t.k0) * NR),
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

    /// The scalar rounding, compiled for AVX-512 so that it vectorizes 16 lanes wide.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn convert_row(src: &[f32], dst: &mut [u16]) {
        super::convert_row(src, dst)
    }

    struct Args {
        a: *const u32,
        lda: usize,
        b: *const u32,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        init: Init,
        masks: [u16; NV],
    }

    /// H x NR tile: C (+)= A[H x kc pairs] * B[kc pairs x NR]. Masks cover the columns past n.
    /// Index loops over constant bounds: fully unrolled, the tile lives in zmm registers.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bf16")]
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
            let bv: [__m512bh; NV] = std::array::from_fn(|v| {
                std::mem::transmute(_mm512_load_si512(b.add(16 * v).cast()))
            });
            for r in 0..H {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * x.lda) as i32));
                for v in 0..NV {
                    acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    fn round(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
    }

    /// f64 reference on the bf16-rounded weight and the activations as given.
    fn reference(
        a: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<f32> {
        let w = round(w);
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |b| b[j] as f64);
                for p in 0..k {
                    s += a[i * k + p] as f64 * w[j * k + p] as f64;
                }
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    fn check(m: usize, k: usize, n: usize, with_bias: bool) {
        let mut r = rng((m * 1_000_003 + k * 1009 + n) as u64);
        let a: Vec<f32> = (0..m * k).map(|_| r()).collect();
        let wf: Vec<f32> = (0..n * k).map(|_| r()).collect();
        let bias: Vec<f32> = (0..n).map(|_| r()).collect();
        let bias = with_bias.then_some(&bias[..]);
        let w = PackedBf16Weight::from_f32(&wf, n, k);
        // The bf16-product kernels round the activations too; the widening one does not.
        let want = reference(&round(&a), &wf, bias, m, k, n);
        let want_f32_a = reference(&a, &wf, bias, m, k, n);
        // |a|, |w| <= 1: errors come from f32 accumulation order only.
        let tol = 1e-4 * (k as f32).sqrt().max(1.0) + 1e-6;

        let mut got = vec![f32::NAN; m * n];
        matmul(&a, m, &w, bias, &mut got);
        let a16: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
        let mut got16 = vec![f32::NAN; m * n];
        matmul_bf16_input(&a16, m, &w, bias, &mut got16);
        let mut slow = vec![f32::NAN; m * n];
        let kp = w.kp;
        let mut buf = vec![0u32; m.div_ceil(amx::BLOCK) * amx::BLOCK * kp];
        for (row, src) in buf
            .chunks_exact_mut(kp.max(1))
            .zip(a16.chunks_exact(k.max(1)))
        {
            for (d, s) in halves_mut(row).iter_mut().zip(src) {
                *d = s.to_bits();
            }
        }
        gemm(&buf, m, &w, bias, &mut slow, false);
        let matmul_want = if has_bf16_products() || !is_available() {
            &want
        } else {
            &want_f32_a
        };
        let mut results = vec![
            ("matmul", got, matmul_want),
            ("bf16_input", got16, &want),
            ("fallback", slow, &want),
        ];
        // Every fast path this CPU has, called directly (matmul above takes the best one).
        #[cfg(target_arch = "x86_64")]
        if m > 0 && n > 0 && kp > 0 {
            if cpu::tier() >= Tier::Avx512Bf16 {
                let mut v = vec![f32::NAN; m * n];
                gemm_parallel(&buf, m, &w, bias, &mut v);
                results.push(("avx512-bf16", v, &want));
            }
            if cpu::tier() >= Tier::Amx {
                let mut v = vec![f32::NAN; m * n];
                // SAFETY: the tier says AMX is there and permitted; rows and pairs are padded.
                unsafe { amx::gemm(&buf, m, &w, bias, &mut v) };
                results.push(("amx", v, &want));
            }
            if cpu::tier() >= Tier::Avx2 {
                let mut v = vec![f32::NAN; m * n];
                widened(&a, m, &w, bias, &mut v);
                results.push(("avx2-widened", v, &want_f32_a));
            }
        }

        for (name, v, want) in &results {
            let err = v
                .iter()
                .zip(want.iter())
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                err <= tol,
                "{name} m={m} k={k} n={n} bias={with_bias}: err {err} > {tol}"
            );
            assert!(v.iter().all(|x| x.is_finite()), "{name}: unwritten output");
        }
    }

    #[test]
    fn matches_reference() {
        for &m in &[0, 1, 2, 5, 7, 13, 100] {
            for &k in &[1, 3, 64, 129, 1024] {
                for &n in &[1, 15, 16, 17, 63, 64, 65, 130] {
                    for with_bias in [false, true] {
                        check(m, k, n, with_bias);
                    }
                }
            }
        }
    }

    #[test]
    fn larger_shapes() {
        check(301, 700, 257, true);
        check(64, 2048, 200, false);
    }

    /// Other pool sizes change the task grid; one thread also runs the nc and kc blocking.
    #[test]
    fn pool_sizes() {
        for threads in [1, 3, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                check(13, 1100, 1100, true);
                check(100, 130, 65, false);
                check(2, 64, 700, true);
            });
        }
    }

    #[test]
    fn conversion_matches_half() {
        let mut r = rng(7);
        let mut xs: Vec<f32> = (0..10_000).map(|_| r() * 1e3).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-40,
            -1e-41,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::NAN,
        ]);
        xs.extend(
            (0..1000u32).map(|i| f32::from_bits(0x3f80_0000 + i * 0x4000 + (i & 1) * 0x8000)),
        );
        for &x in &xs {
            assert_eq!(
                f32_to_bf16_bits(x),
                bf16::from_f32(x).to_bits() as u32,
                "x = {x:e}"
            );
        }
        #[cfg(target_arch = "x86_64")]
        if has_bf16_products() {
            let mut got = vec![0u16; xs.len()];
            unsafe { avx::convert_row(&xs, &mut got) };
            for (x, g) in xs.iter().zip(got) {
                assert_eq!(g, bf16::from_f32(*x).to_bits(), "x = {x:e}");
            }
        }
    }

    #[test]
    fn pack_from_bf16_equals_from_f32() {
        for &(n, k) in &[(1, 1), (17, 3), (130, 129), (64, 1024)] {
            let mut r = rng((n * k) as u64);
            let w16: Vec<bf16> = (0..n * k).map(|_| bf16::from_f32(r())).collect();
            let wf: Vec<f32> = w16.iter().map(|x| x.to_f32()).collect();
            let (a, b) = (
                PackedBf16Weight::from_bf16(&w16, n, k),
                PackedBf16Weight::from_f32(&wf, n, k),
            );
            assert_eq!((a.n(), a.k(), a.size_bytes()), (n, k, b.size_bytes()));
            assert_eq!(a.words(), b.words());
            assert!(format!("{a:?}").contains(&format!("n: {n}, k: {k}")));
        }
    }

    #[test]
    fn empty_shapes() {
        let w = PackedBf16Weight::from_f32(&[], 0, 8);
        let mut out = vec![];
        matmul(&[1.0; 24], 3, &w, None, &mut out);
        let w = PackedBf16Weight::from_f32(&[], 4, 0);
        let mut out = vec![1.0; 8];
        matmul(&[], 2, &w, Some(&[1.0, 2.0, 3.0, 4.0]), &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]);
    }
}
