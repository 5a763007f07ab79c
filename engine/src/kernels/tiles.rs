//! How the packed GEMM kernels (bf16, AMX, f32) split one product across the compute threads.

use std::ops::Range;

use rayon::prelude::*;

/// Shared output pointer; tasks write disjoint tiles.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Runs `task(row_units, panels)` over a grid that covers `row_units` x `panels`. Columns are
/// split first: each core then keeps its own weight panels in its L2 while the (small)
/// activations come from L3. A few tasks per thread let rayon rebalance when a core is busy
/// elsewhere (the host's audio, another plugin).
pub(super) fn for_each_task(
    row_units: usize,
    panels: usize,
    task: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    if row_units == 0 || panels == 0 {
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let target = if threads == 1 { 1 } else { threads * 4 };
    let col_groups = panels.min(target);
    let panels_per = panels.div_ceil(col_groups);
    let col_groups = panels.div_ceil(panels_per);
    let row_groups = target.div_ceil(col_groups).min(row_units);
    let units_per = row_units.div_ceil(row_groups);
    let row_groups = row_units.div_ceil(units_per);
    (0..row_groups * col_groups).into_par_iter().for_each(|t| {
        let (rg, cg) = (t / col_groups, t % col_groups);
        task(
            rg * units_per..((rg + 1) * units_per).min(row_units),
            cg * panels_per..((cg + 1) * panels_per).min(panels),
        )
    });
}

/// Packed weight swept per activation block (about half of a 1-2 MiB per-core L2).
const NC_BYTES: usize = 512 * 1024;

/// One micro-tile of a packed product: `height` rows from `row`, weight panel `panel`, over the
/// k block `k0..k0 + kc` (`first`: the block at k = 0, where the accumulators start from the
/// bias or zero instead of the partial sums in `out`).
pub(super) struct MicroTile {
    pub row: usize,
    pub height: usize,
    pub panel: usize,
    pub k0: usize,
    pub kc: usize,
}

impl MicroTile {
    pub fn first(&self) -> bool {
        self.k0 == 0
    }
}

/// Visits a task's micro-tiles in cache order: a block of weight panels (~L2) outermost, then
/// its k blocks of `kc_max`, then each row tile (`mr` rows, its activations in L1) swept across
/// those panels. `panel_bytes_per_k`: bytes of one panel per unit of k.
pub(super) fn sweep(
    rows: Range<usize>,
    panels: Range<usize>,
    (k, kc_max, mr): (usize, usize, usize),
    panel_bytes_per_k: usize,
    mut visit: impl FnMut(MicroTile),
) {
    let nc = (NC_BYTES / (kc_max.min(k).max(1) * panel_bytes_per_k).max(1)).max(1);
    for jc in panels.clone().step_by(nc) {
        let jc_end = (jc + nc).min(panels.end);
        for k0 in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - k0);
            for row in rows.clone().step_by(mr) {
                let height = mr.min(rows.end - row);
                for panel in jc..jc_end {
                    visit(MicroTile {
                        row,
                        height,
                        panel,
                        k0,
                        kc,
                    });
                }
            }
        }
    }
}

/// Store masks of the `NV` 16-lane vectors of a panel with `valid` real columns.
pub(super) fn column_masks<const NV: usize>(valid: usize) -> [u16; NV] {
    std::array::from_fn(|v| {
        let c = valid.saturating_sub(16 * v).min(16);
        ((1u32 << c) - 1) as u16
    })
}

/// Where a micro-tile's accumulators start.
#[derive(Clone, Copy)]
pub(super) enum Init {
    Zero,
    Bias(*const f32),
    /// The partial sums already in the output (k blocks after the first).
    Load,
}

impl Init {
    pub fn for_tile(tile: &MicroTile, bias: Option<&[f32]>, col: usize) -> Init {
        match (tile.first(), bias) {
            (false, _) => Init::Load,
            (true, Some(b)) => Init::Bias(b[col..].as_ptr()),
            (true, None) => Init::Zero,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn tasks_cover_the_grid_exactly_once() {
        for (rows, panels) in [(1, 1), (7, 3), (100, 1), (1, 100), (33, 17)] {
            let seen = Mutex::new(vec![0u8; rows * panels]);
            for_each_task(rows, panels, |r, p| {
                let mut s = seen.lock().unwrap();
                for i in r {
                    for j in p.clone() {
                        s[i * panels + j] += 1;
                    }
                }
            });
            assert!(
                seen.into_inner().unwrap().iter().all(|&c| c == 1),
                "{rows}x{panels}"
            );
        }
    }
}
