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
            assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1), "{rows}x{panels}");
        }
    }
}
