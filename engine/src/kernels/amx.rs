//! bf16 GEMM on AMX tiles (`tdpbf16ps`), over the same packed weights as the AVX512-BF16
//! kernel ([`super::bf16_gemm`]).
//!
//! Why the same packing works: a `tdpbf16ps` B tile is 16 rows of 64 bytes, row `p` holding
//! element pair `p` of 16 output columns — exactly 16 consecutive words of pair row `p` of a
//! packed panel, so B tiles load straight from the panel with a stride of one panel row
//! (`NR` words). A tiles are 16 activation rows of 16 pairs from the bf16 scratch (stride
//! `kp` words). Each micro-tile keeps a 32 x 32 f32 output in four C tiles over the whole of k.
//!
//! The instructions are written as inline assembly: stable Rust has no AMX intrinsics or
//! target features. The caller guarantees the tier ([`super::cpu::Tier::Amx`]), which also
//! means the kernel's permission for the tile state was granted.

/// Rows and columns of one micro-tile (two tiles each way).
pub const BLOCK: usize = 32;
/// Rows of a tile (and f32 columns of a C tile).
const TILE: usize = 16;
/// Pairs per tile row (64 bytes).
pub const PAIRS: usize = 16;
#[cfg(target_arch = "x86_64")]
pub use tiles::gemm;

#[cfg(target_arch = "x86_64")]
mod tiles {
    use std::arch::asm;
    use std::ops::Range;

    use super::super::bf16_gemm::{PackedBf16Weight, NR};
    use super::super::tiles::{self, OutPtr};
    use super::{BLOCK, PAIRS, TILE};

    /// Bytes of packed weight a task sweeps per row block (a share of a 2 MiB L2).
    const B_BLOCK_BYTES: usize = 1 << 20;

    /// The tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    impl TileConfig {
        fn all_full() -> Self {
            let mut c = [0u8; 64];
            c[0] = 1;
            for t in 0..8 {
                c[16 + 2 * t] = 64; // bytes per row (u16, little endian)
                c[48 + t] = 16; // rows
            }
            Self(c)
        }
    }

    /// `out[m x n] = a * w^T (+ bias)`. `a`: bf16 pairs, `kp` words per row, rows padded with
    /// zeros to a multiple of [`BLOCK`]; `kp` a multiple of [`PAIRS`] (the packing guarantees it).
    ///
    /// # Safety
    /// The CPU must have AMX-BF16 and the process the tile-state permission.
    pub unsafe fn gemm(
        a: &[u32],
        m: usize,
        w: &PackedBf16Weight,
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let (n, kp, panels) = (w.n(), w.kp(), w.panels());
        debug_assert_eq!(kp % PAIRS, 0);
        debug_assert!(a.len() >= m.div_ceil(BLOCK) * BLOCK * kp);
        let outp = OutPtr(out.as_mut_ptr());
        tiles::for_each_task(m.div_ceil(BLOCK), panels, |blocks, panels| {
            let task = Task {
                a: a.as_ptr(),
                b: w.words().as_ptr(),
                kp,
                m,
                n,
                bias,
                out: outp,
            };
            // SAFETY: the caller's guarantee; tasks write disjoint output blocks.
            unsafe { task.run(blocks, panels) }
        });
    }

    struct Task<'a> {
        a: *const u32,
        b: *const u32,
        kp: usize,
        m: usize,
        n: usize,
        bias: Option<&'a [f32]>,
        out: OutPtr,
    }

    impl Task<'_> {
        unsafe fn run(&self, blocks: Range<usize>, panels: Range<usize>) {
            let cfg = TileConfig::all_full();
            asm!("ldtilecfg [{0}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
            let panel_bytes = self.kp * NR * 4;
            let per_sweep = (B_BLOCK_BYTES / panel_bytes.max(1)).max(1);
            let mut tile = [[0f32; BLOCK]; BLOCK];
            for jc in panels.clone().step_by(per_sweep) {
                let jc_end = (jc + per_sweep).min(panels.end);
                for block in blocks.clone() {
                    for j in jc..jc_end {
                        for half in 0..NR / BLOCK {
                            self.micro_tile(block * BLOCK, j, half * BLOCK, &mut tile);
                            self.write(block * BLOCK, j * NR + half * BLOCK, &tile);
                        }
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }

        /// The 32 x 32 output of rows `row..row + 32` and panel `j`'s columns `c0..c0 + 32`, into
        /// `tile` (row-major, 128-byte rows).
        #[inline(always)]
        unsafe fn micro_tile(
            &self,
            row: usize,
            j: usize,
            c0: usize,
            tile: &mut [[f32; BLOCK]; BLOCK],
        ) {
            let lda = self.kp * 4;
            let ldb = NR * 4;
            let a0 = self.a.add(row * self.kp);
            let a1 = a0.add(TILE * self.kp);
            let b0 = self.b.add(j * self.kp * NR + c0);
            let b1 = b0.add(TILE);
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            let mut p = 0;
            while p < self.kp {
                asm!(
                    "tileloadd tmm4, [{a0} + {lda}*1]",
                    "tileloadd tmm5, [{a1} + {lda}*1]",
                    "tileloadd tmm6, [{b0} + {ldb}*1]",
                    "tileloadd tmm7, [{b1} + {ldb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0.add(p),
                    a1 = in(reg) a1.add(p),
                    b0 = in(reg) b0.add(p * NR),
                    b1 = in(reg) b1.add(p * NR),
                    lda = in(reg) lda,
                    ldb = in(reg) ldb,
                    options(nostack, readonly)
                );
                p += PAIRS;
            }
            let t = tile.as_mut_ptr() as *mut f32;
            let ldt = BLOCK * 4;
            asm!(
                "tilestored [{c00} + {ldt}*1], tmm0",
                "tilestored [{c01} + {ldt}*1], tmm1",
                "tilestored [{c10} + {ldt}*1], tmm2",
                "tilestored [{c11} + {ldt}*1], tmm3",
                c00 = in(reg) t,
                c01 = in(reg) t.add(TILE),
                c10 = in(reg) t.add(TILE * BLOCK),
                c11 = in(reg) t.add(TILE * BLOCK + TILE),
                ldt = in(reg) ldt,
                options(nostack)
            );
        }

        /// Copies the valid part of a micro-tile to the output, adding the bias.
        #[inline(always)]
        unsafe fn write(&self, row: usize, col: usize, tile: &[[f32; BLOCK]; BLOCK]) {
            if col >= self.n {
                return;
            }
            let cols = (self.n - col).min(BLOCK);
            for (r, values) in tile
                .iter()
                .enumerate()
                .take(self.m.saturating_sub(row).min(BLOCK))
            {
                let dst =
                    std::slice::from_raw_parts_mut(self.out.0.add((row + r) * self.n + col), cols);
                match self.bias {
                    Some(b) => {
                        for ((d, v), b) in dst.iter_mut().zip(values).zip(&b[col..col + cols]) {
                            *d = v + b;
                        }
                    }
                    None => dst.copy_from_slice(&values[..cols]),
                }
            }
        }
    }

    const _: () = assert!(
        NR.is_multiple_of(BLOCK),
        "a panel is a whole number of micro-tile columns"
    );
}
