//! Post-compression rate-distortion optimisation (PCRD-opt, Taubman's EBCOT): per code-block
//! convex hulls of the (bytes, distortion reduction) truncation points, and a search over the
//! slope threshold lambda so that each quality layer's codestream fits its byte budget.
//! Sizes are measured by running tier-2 for real, so packet headers are accounted exactly.

use super::t1::PassInfo;
use super::t2::{tile_len, Tile};

/// Feasible truncation points of one block: (cumulative passes, slope dD/dR) with strictly
/// decreasing slopes, starting after `start` mandatory passes.
pub fn hull(passes: &[PassInfo], weight: f64, start: usize) -> Vec<(usize, f64)> {
    let rate = |n: usize| {
        if n == 0 {
            0.0
        } else {
            passes[n - 1].rate as f64
        }
    };
    let dist = |n: usize| {
        if n == 0 {
            0.0
        } else {
            passes[n - 1].dist * weight
        }
    };
    // Stack of (passes, slope from previous point).
    let mut pts: Vec<(usize, f64)> = Vec::with_capacity(passes.len());
    for n in start + 1..=passes.len() {
        loop {
            let base = pts.last().map_or(start, |p| p.0);
            let dd = dist(n) - dist(base);
            let dr = rate(n) - rate(base);
            if dd <= 0.0 {
                break; // no gain over the current hull end: not a candidate yet
            }
            let slope = if dr <= 0.0 { f64::INFINITY } else { dd / dr };
            if let Some(&(_, prev_slope)) = pts.last() {
                if slope >= prev_slope {
                    pts.pop();
                    continue;
                }
            }
            pts.push((n, slope));
            break;
        }
    }
    pts
}

/// Chooses, for every block and layer, how many passes to include. `budgets[l]` is the byte
/// budget for the whole codestream up to layer `l` (`None`: include every pass).
/// `overhead` counts bytes outside packet data (main header, tile-part headers, EOC).
pub fn allocate(tiles: &mut [Tile], budgets: &[Option<usize>], overhead: usize) {
    let nlayers = budgets.len();
    let hulls: Vec<Vec<Vec<(usize, f64)>>> = tiles
        .iter()
        .map(|t| {
            t.blocks()
                .map(|b| {
                    hull(
                        &b.coded.passes,
                        b.weight,
                        b.min_passes.min(b.coded.passes.len()),
                    )
                })
                .collect()
        })
        .collect();
    for t in tiles.iter_mut() {
        for b in t.blocks_mut() {
            b.cuts = vec![0; nlayers];
        }
    }
    for (layer, budget) in budgets.iter().enumerate() {
        let set = |tiles: &mut [Tile], lambda: f64| {
            for (t, th) in tiles.iter_mut().zip(&hulls) {
                for (b, h) in t.blocks_mut().zip(th) {
                    let prev = if layer == 0 { 0 } else { b.cuts[layer - 1] };
                    let mut n = b.min_passes.min(b.coded.passes.len()).max(prev);
                    // Slopes decrease along the hull: take the last point still above lambda.
                    if lambda == f64::NEG_INFINITY {
                        // Everything, including trailing passes without measured gain.
                        n = b.coded.passes.len();
                    } else {
                        let k = h.partition_point(|p| p.1 >= lambda);
                        if k > 0 {
                            n = n.max(h[k - 1].0);
                        }
                    }
                    b.cuts[layer] = n;
                }
            }
        };
        let size = |tiles: &[Tile]| -> usize {
            overhead + tiles.iter().map(|t| tile_len(t, layer + 1)).sum::<usize>()
        };
        let Some(budget) = *budget else {
            set(tiles, f64::NEG_INFINITY);
            continue;
        };
        set(tiles, f64::NEG_INFINITY);
        if size(tiles) <= budget {
            continue;
        }
        // Bisection on log(lambda) between the extreme finite slopes.
        let (mut lo, mut hi) = (f64::INFINITY, 0f64);
        for h in hulls.iter().flatten().flatten() {
            if h.1.is_finite() && h.1 > 0.0 {
                lo = lo.min(h.1);
                hi = hi.max(h.1);
            }
        }
        if !lo.is_finite() {
            continue;
        }
        let (mut lo, mut hi) = ((lo * 0.5).ln(), (hi * 2.0).ln());
        set(tiles, hi.exp());
        if size(tiles) > budget {
            continue; // even the mandatory passes exceed the budget
        }
        for _ in 0..40 {
            let mid = 0.5 * (lo + hi);
            set(tiles, mid.exp());
            if size(tiles) <= budget {
                hi = mid;
            } else {
                lo = mid;
            }
            if hi - lo < 1e-4 {
                break;
            }
        }
        set(tiles, hi.exp());
    }
}

/// Estimated squared error (image units, summed over samples) left when every block is
/// cut at the last hull point with slope >= `lambda`.
fn remaining_error(tiles: &[Tile], hulls: &[Vec<Vec<(usize, f64)>>], lambda: f64) -> f64 {
    let mut err = 0.0;
    for (t, th) in tiles.iter().zip(hulls) {
        for (b, h) in t.blocks().zip(th) {
            let Some(last) = b.coded.passes.last() else {
                continue;
            };
            let k = h.partition_point(|p| p.1 >= lambda);
            let n = if k > 0 { h[k - 1].0 } else { 0 };
            let done = if n == 0 {
                0.0
            } else {
                b.coded.passes[n - 1].dist
            };
            err += (last.dist - done) * b.weight;
        }
    }
    err
}

/// Quality target instead of a size: returns the codestream byte budget at which the
/// estimated remaining squared error first drops to `max_error` (the budget then goes
/// through [`allocate`] like any ratio target). `overhead` as in [`allocate`].
pub fn budget_for_error(tiles: &mut [Tile], max_error: f64, overhead: usize) -> usize {
    let hulls: Vec<Vec<Vec<(usize, f64)>>> = tiles
        .iter()
        .map(|t| {
            t.blocks()
                .map(|b| hull(&b.coded.passes, b.weight, 0))
                .collect()
        })
        .collect();
    let (mut lo, mut hi) = (f64::INFINITY, 0f64);
    for h in hulls.iter().flatten().flatten() {
        if h.1.is_finite() && h.1 > 0.0 {
            lo = lo.min(h.1);
            hi = hi.max(h.1);
        }
    }
    let lambda = if !lo.is_finite() || remaining_error(tiles, &hulls, lo * 0.5) > max_error {
        f64::NEG_INFINITY // unreachable target (or nothing to code): keep everything
    } else {
        // Largest lambda (fewest bytes) that still meets the error target.
        let (mut good, mut bad) = ((lo * 0.5).ln(), (hi * 2.0).ln());
        for _ in 0..50 {
            let mid = 0.5 * (good + bad);
            if remaining_error(tiles, &hulls, mid.exp()) <= max_error {
                good = mid;
            } else {
                bad = mid;
            }
        }
        good.exp()
    };
    for (t, th) in tiles.iter_mut().zip(&hulls) {
        for (b, h) in t.blocks_mut().zip(th) {
            let k = h.partition_point(|p| p.1 >= lambda);
            let n = if lambda == f64::NEG_INFINITY {
                b.coded.passes.len()
            } else if k > 0 {
                h[k - 1].0
            } else {
                0
            };
            b.cuts = vec![n];
        }
    }
    overhead + tiles.iter().map(|t| tile_len(t, 1)).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::super::t1::CodedBlock;
    use super::super::t2::{Band, Block, Resolution, TileComp};
    use super::*;

    fn p(rate: u32, dist: f64) -> PassInfo {
        PassInfo { rate, dist }
    }

    #[test]
    fn hull_drops_non_convex_points() {
        // Pass 2 adds little, pass 3 adds a lot: pass 2 is not on the hull.
        let passes = [p(10, 100.0), p(20, 105.0), p(30, 200.0), p(40, 210.0)];
        let h = hull(&passes, 1.0, 0);
        let ns: Vec<usize> = h.iter().map(|x| x.0).collect();
        assert_eq!(ns, vec![1, 3, 4]);
        assert!(h.windows(2).all(|w| w[0].1 > w[1].1));
    }

    fn tile_of(blocks: Vec<Block>) -> Tile {
        let n = blocks.len();
        Tile {
            comps: vec![TileComp {
                resolutions: vec![Resolution {
                    bands: vec![Band {
                        ncbx: n,
                        ncby: 1,
                        blocks,
                    }],
                }],
            }],
        }
    }

    fn block(rates: &[u32], gains: &[f64], min_passes: usize) -> Block {
        let mut d = 0.0;
        let passes = rates
            .iter()
            .zip(gains)
            .map(|(&r, &g)| {
                d += g;
                p(r, d)
            })
            .collect();
        let len = *rates.last().unwrap() as usize;
        Block {
            coded: CodedBlock {
                data: vec![0x11; len],
                passes,
                numbps: 4,
            },
            zbp: 0,
            cuts: vec![],
            min_passes,
            weight: 1.0,
        }
    }

    #[test]
    fn layers_grow_monotonically_and_fit_their_budgets() {
        let blocks = vec![
            block(&[40, 90, 160, 260], &[900.0, 400.0, 100.0, 10.0], 0),
            block(&[30, 70, 130, 220], &[50.0, 40.0, 30.0, 20.0], 0),
            block(&[20, 60, 100, 150], &[5000.0, 100.0, 1.0, 0.5], 1),
        ];
        let mut tiles = vec![tile_of(blocks)];
        let budgets = [Some(120), Some(300), Some(1000)];
        allocate(&mut tiles, &budgets, 10);
        for (l, b) in budgets.iter().enumerate() {
            let size = 10 + tile_len(&tiles[0], l + 1);
            assert!(size <= b.unwrap(), "layer {l}: {size} > {b:?}");
        }
        for blk in tiles[0].blocks() {
            assert!(
                blk.cuts.windows(2).all(|c| c[0] <= c[1]),
                "cuts must not shrink: {:?}",
                blk.cuts
            );
            assert!(
                blk.cuts.iter().all(|&c| c >= blk.min_passes),
                "mandatory passes in every layer"
            );
        }
        // The steep block's first pass beats everything else for the first bytes.
        assert!(tiles[0].comps[0].resolutions[0].bands[0].blocks[2].cuts[0] >= 1);
        let total: usize = tiles[0].blocks().map(|b| b.cuts[2]).sum();
        assert_eq!(total, 12, "the last budget holds everything");
    }

    #[test]
    fn mandatory_passes_survive_a_too_small_budget() {
        let mut tiles = vec![tile_of(vec![
            block(&[50, 100], &[10.0, 1.0], 2),
            block(&[50, 100], &[10.0, 1.0], 0),
        ])];
        allocate(&mut tiles, &[Some(20)], 0);
        let cuts: Vec<usize> = tiles[0].blocks().map(|b| b.cuts[0]).collect();
        assert_eq!(cuts, vec![2, 0]);
    }

    #[test]
    fn hull_respects_mandatory_start() {
        let passes = [p(10, 100.0), p(20, 150.0), p(30, 160.0)];
        let h = hull(&passes, 1.0, 2);
        assert_eq!(h.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3]);
    }
}
