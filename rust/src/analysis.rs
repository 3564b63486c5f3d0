//! The numeric work behind the analysis of SPEC §3, §4, §7: per-sample log norms of points and
//! gradients from one forward and one backward pass, Jacobian log norms between all pairs of
//! points (exact, or estimated with Gaussian probes), collapsing-domain statistics and dilution.
//!
//! Everything is returned as natural logs of norms, so nothing overflows however deep the network
//! (see [`crate::scale`]); the Python layer composes them into the GSC (`gsc_core/analysis.py`).

use std::ops::Range;

use ndarray::{s, Array1, Array2, Array3, ArrayView2, Axis};
use rayon::prelude::*;

use crate::backward::{vjp, ParamGrads, VjpOptions};
use crate::cancel::Stop;
use crate::error::Result;
use crate::float::Float;
use crate::forward::{self, Trace};
use crate::jacobian::{for_sample_tiles, require_per_sample, tile_row_sq_norms, RowSqNorms};
use crate::jvp::jvp;
use crate::loss::{self, Loss, Targets};
use crate::memory;
use crate::network::{Network, Op};
use crate::scale::{
    log_add_exp, log_batch_norms, log_sum_squares_of, row_log_norms_into, Exponents,
};
use crate::simd::multiversion;

/// Per-unit statistics of every Activation layer's input `Z` (`B x d`), depth-first (SPEC §4).
#[derive(Debug, Clone)]
pub struct PreactivationStats {
    /// Population std over the batch, per unit.
    pub unit_std: Vec<Array1<f64>>,
    /// `min(P, N) / (P + N)` per unit (0 where `P + N = 0`).
    pub unit_sign_diversity: Vec<Array1<f64>>,
}

pub fn preactivation_stats<T: Float>(net: &Network<T>, trace: &Trace<T>) -> PreactivationStats {
    let tile = tile_rows(trace.values.iter().map(|v| v.ncols()), trace.batch());
    let per_layer: Vec<UnitMoments> = net
        .pre_activation_slots
        .par_iter()
        .map(|&slot| {
            let z = trace.values[slot].view();
            let mut tiles = z.axis_chunks_iter(Axis(0), tile).map(UnitMoments::of);
            let first = tiles.next().expect("a non-empty batch");
            tiles.fold(first, |acc, m| acc.merge(&m))
        })
        .collect();
    PreactivationStats::from_moments(&per_layer)
}

impl PreactivationStats {
    fn from_moments(layers: &[UnitMoments]) -> Self {
        let (unit_std, unit_sign_diversity) = layers.iter().map(UnitMoments::finish).unzip();
        PreactivationStats {
            unit_std,
            unit_sign_diversity,
        }
    }
}

/// Samples per tile of the streamed analyses of `batch` samples. At most
/// [`crate::parallel::rows_per_task`] of the widest slot, so one tile's block of any slot stays
/// in a core's cache; the number of tiles is rounded up to a multiple of 8 (tiles of at least
/// [`MIN_TILE_ROWS`]) so that 2, 4 or 8 threads get equal shares. Depends only on the shapes.
fn tile_rows(widths: impl Iterator<Item = usize>, batch: usize) -> usize {
    let largest = crate::parallel::rows_per_task(widths.max().unwrap_or(1), 1);
    let tiles = batch
        .div_ceil(largest)
        .next_multiple_of(8)
        .min(batch.div_ceil(MIN_TILE_ROWS))
        .max(1);
    batch.div_ceil(tiles).max(1)
}

const MIN_TILE_ROWS: usize = 32;

/// Per-unit moments of one Activation input over some samples: count, mean, sum of squared
/// deviations (two passes over the rows), and the counts of positive and negative values.
/// Tiles merge in a fixed order (Chan et al.'s pairwise update), so the statistics of a batch are
/// the same bits whether it was seen whole or tile by tile.
///
/// Units whose values are so large or small that their sum of squared deviations leaves
/// float64's range (|z| near 1e308 or 1e-300) are kept scaled: their `mean` and `m2` are those
/// of `z * 2^-exp` (exact powers of two), `exp` 0 everywhere else.
#[derive(Debug, Clone)]
struct UnitMoments {
    count: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    pos: Vec<f64>,
    neg: Vec<f64>,
    exp: Vec<i32>,
}

/// `m2` below this (or not finite) is recomputed scaled: its squares may have underflowed
/// (or overflowed).
const M2_SUSPECT: f64 = 1e-250;

impl UnitMoments {
    fn of<T: Float>(z: ArrayView2<T>) -> Self {
        let (batch, d) = z.dim();
        let z = z.as_standard_layout();
        let rows = || {
            z.as_slice()
                .expect("standard layout")
                .chunks_exact(d.max(1))
        };
        let mut sum = vec![0.0f64; d];
        let mut pos = vec![0.0f64; d];
        let mut neg = vec![0.0f64; d];
        for row in rows() {
            add_row_and_signs(row, &mut sum, &mut pos, &mut neg);
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / batch as f64).collect();
        let mut m2 = vec![0.0f64; d];
        for row in rows() {
            add_squared_deviations(row, &mean, &mut m2);
        }
        let mut moments = UnitMoments {
            count: batch as f64,
            mean,
            m2,
            pos,
            neg,
            exp: vec![0; d],
        };
        for j in 0..d {
            let (m2, mean) = (moments.m2[j], moments.mean[j]);
            if !(m2.is_finite() && mean.is_finite()) || m2 < M2_SUSPECT {
                moments.rescale_unit(z.column(j), j);
            }
        }
        moments
    }

    /// Recomputes unit `j` from its values `col` scaled by the power of two of their largest
    /// magnitude (nothing to do for an all-zero unit).
    fn rescale_unit<T: Float>(&mut self, col: ndarray::ArrayView1<T>, j: usize) {
        let m = col.iter().fold(0.0f64, |a, v| a.max(v.as_f64().abs()));
        if m == 0.0 || !m.is_finite() {
            return;
        }
        let e = m.log2().floor() as i32;
        let f = |v: T| v.as_f64() * ((-e / 2) as f64).exp2() * ((-e - -e / 2) as f64).exp2();
        let mean = col.iter().map(|&v| f(v)).sum::<f64>() / self.count;
        self.mean[j] = mean;
        self.m2[j] = col.iter().map(|&v| (f(v) - mean).powi(2)).sum();
        self.exp[j] = e;
    }

    fn merge(mut self, other: &Self) -> Self {
        let n = self.count + other.count;
        let (wa, wb) = (self.count / n, other.count / n);
        for j in 0..self.mean.len() {
            if self.exp[j] != other.exp[j] {
                // bring both to the larger scale (exact powers of two; negligible parts may underflow)
                let top = self.exp[j].max(other.exp[j]);
                let (fa, fb) = (
                    ((self.exp[j] - top) as f64).exp2(),
                    ((other.exp[j] - top) as f64).exp2(),
                );
                let (mean_b, m2_b) = (other.mean[j] * fb, other.m2[j] * fb * fb);
                self.mean[j] *= fa;
                self.m2[j] *= fa * fa;
                self.exp[j] = top;
                let delta = mean_b - self.mean[j];
                self.m2[j] += m2_b + delta * delta * self.count * wb;
                self.mean[j] = wa * self.mean[j] + wb * mean_b;
                self.pos[j] += other.pos[j];
                self.neg[j] += other.neg[j];
                continue;
            }
            let delta = other.mean[j] - self.mean[j];
            self.m2[j] += other.m2[j] + delta * delta * self.count * wb;
            self.mean[j] = wa * self.mean[j] + wb * other.mean[j];
            self.pos[j] += other.pos[j];
            self.neg[j] += other.neg[j];
        }
        self.count = n;
        self
    }

    /// Population std and sign diversity `min(P, N) / (P + N)` per unit.
    fn finish(&self) -> (Array1<f64>, Array1<f64>) {
        let std = self
            .m2
            .iter()
            .zip(&self.exp)
            .map(|(s, &e)| {
                let sd = (s / self.count).sqrt();
                if e == 0 {
                    sd
                } else {
                    sd * ((e / 2) as f64).exp2() * ((e - e / 2) as f64).exp2()
                }
            })
            .collect();
        let sign = self
            .pos
            .iter()
            .zip(&self.neg)
            .map(|(&p, &n)| {
                if p + n == 0.0 {
                    0.0
                } else {
                    p.min(n) / (p + n)
                }
            })
            .collect();
        (std, sign)
    }
}

multiversion!(
    /// `sum += row`, `pos += (row > 0)`, `neg += (row < 0)` unit by unit.
    fn add_row_and_signs<T: Float>(row: &[T], sum: &mut [f64], pos: &mut [f64], neg: &mut [f64]) -> () = add_row_and_signs_kernel
);

#[inline(always)]
fn add_row_and_signs_kernel<T: Float>(
    row: &[T],
    sum: &mut [f64],
    pos: &mut [f64],
    neg: &mut [f64],
) {
    for (((&v, s), p), n) in row.iter().zip(sum).zip(pos).zip(neg) {
        let v = v.as_f64();
        *s += v;
        *p += if v > 0.0 { 1.0 } else { 0.0 };
        *n += if v < 0.0 { 1.0 } else { 0.0 };
    }
}

multiversion!(
    /// `sq += (row - mean)^2` unit by unit.
    fn add_squared_deviations<T: Float>(row: &[T], mean: &[f64], sq: &mut [f64]) -> () = add_squared_deviations_kernel
);

#[inline(always)]
fn add_squared_deviations_kernel<T: Float>(row: &[T], mean: &[f64], sq: &mut [f64]) {
    for ((&v, &m), s) in row.iter().zip(mean).zip(sq) {
        let dev = v.as_f64() - m;
        *s += dev * dev;
    }
}

/// `ln ||row||_2` of every row of `a`, in parallel over fixed chunks of rows.
pub fn row_log_norms<T: Float>(a: ArrayView2<T>) -> Array1<f64> {
    let mut out = Array1::zeros(a.nrows());
    let rows = crate::parallel::rows_per_task(a.ncols(), 1);
    out.axis_chunks_iter_mut(Axis(0), rows)
        .into_par_iter()
        .zip(a.axis_chunks_iter(Axis(0), rows))
        .for_each(|(mut o, a)| row_log_norms_into(a, o.as_slice_mut().expect("owned")));
    out
}

/// `ln ||p_{i,b}||_2` for every point and sample, shape `(N + 1, B)`.
pub fn point_log_norms<T: Float>(net: &Network<T>, trace: &Trace<T>) -> Array2<f64> {
    let mut out = Array2::zeros((net.point_slots.len(), trace.batch()));
    for (i, mut row) in out.outer_iter_mut().enumerate() {
        row.assign(&row_log_norms(trace.point(net, i)));
    }
    out
}

/// Dilution of every residual block (in execution order): `||s(X)||_F / ||alpha body(X)||_F` over
/// the batch, i.e. the ratio of the quadratic means of the per-sample norms.
pub fn dilution<T: Float>(net: &Network<T>, trace: &Trace<T>) -> Vec<f64> {
    let tile = tile_rows(trace.values.iter().map(|v| v.ncols()), trace.batch());
    let mut tiles = (0..trace.batch())
        .step_by(tile)
        .map(|b| residual_log_sq_norms(net, trace, b..(b + tile).min(trace.batch())));
    let first = tiles.next().expect("a non-empty batch");
    finish_dilution(net, tiles.fold(first, merge_log_sq_norms))
}

/// `(ln ||s(X)||^2, ln ||body(X)||^2)` of every residual block over the samples `rows`.
fn residual_log_sq_norms<T: Float>(
    net: &Network<T>,
    trace: &Trace<T>,
    rows: Range<usize>,
) -> Vec<(f64, f64)> {
    net.nodes
        .iter()
        .filter_map(|node| match node.op {
            Op::Add { shortcut, .. } => Some((
                log_sum_squares_of(trace.values[shortcut].slice(s![rows.clone(), ..])),
                log_sum_squares_of(trace.values[node.input].slice(s![rows.clone(), ..])),
            )),
            _ => None,
        })
        .collect()
}

fn merge_log_sq_norms(mut a: Vec<(f64, f64)>, b: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    for (x, y) in a.iter_mut().zip(b) {
        *x = (log_add_exp(x.0, y.0), log_add_exp(x.1, y.1));
    }
    a
}

fn finish_dilution<T: Float>(net: &Network<T>, logs: Vec<(f64, f64)>) -> Vec<f64> {
    let alphas = net.nodes.iter().filter_map(|node| match node.op {
        Op::Add { alpha, .. } => Some(alpha.as_f64().abs().ln()),
        _ => None,
    });
    logs.into_iter()
        .zip(alphas)
        .map(|((ls, lb), ln_alpha)| (0.5 * ls - (0.5 * lb + ln_alpha)).exp())
        .collect()
}

/// Everything one forward and one backward pass of a loss tell (SPEC §7), as logs.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Per-sample losses `l_b` (`inf`/`0` where they leave the dtype's range).
    pub losses: Array1<f64>,
    /// `ln l_b`, exact also where `l_b` leaves the dtype's range (see [`loss::log_losses`]).
    pub log_losses: Array1<f64>,
    /// `ln ||p_{i,b}||_2`, `(N + 1, B)`.
    pub point_log_norms: Array2<f64>,
    /// `ln ||(dL/dP_i)_b||_2` (row `b` of the total loss gradient), `(N + 1, B)`.
    pub grad_log_norms: Array2<f64>,
    /// `ln ||P_i||_F` over the whole batch, `(N + 1,)` (see [`log_batch_norms`]).
    pub point_log_batch_norms: Vec<f64>,
    /// `ln ||dL/dP_i||_F` over the whole batch, `(N + 1,)`.
    pub grad_log_batch_norms: Vec<f64>,
    /// `ln ||dL/dW||_F` per Dense layer.
    pub weight_grad_log_norms: Vec<f64>,
    /// `ln ||W||_F` per Dense layer.
    pub weight_log_norms: Vec<f64>,
    pub preactivations: PreactivationStats,
    pub dilution: Vec<f64>,
}

/// Tiles of one profile are summed in at most this many groups, each on one thread: their
/// partial weight gradients are the only per-group memory, so it stays bounded for any batch.
const MAX_GROUPS: usize = 16;

/// The one-forward, one-backward profile behind `gsc_core.analyze` and `gsc_core.gsc`.
///
/// Without BatchNorm the samples are independent, so the batch streams through the network in
/// fixed tiles ([`tile_rows`]): each tile's forward values stay in cache for its backward pass,
/// and only per-sample logs, mergeable statistics and weight-gradient sums leave the tile. Tiles
/// are grouped by shape alone and every sum runs in tile order, so the result does not depend on
/// the thread count. A BatchNorm network takes the whole batch at once.
pub fn profile<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    loss: Loss,
    targets: Targets<T>,
    stop: &Stop,
) -> Result<Profile> {
    let (batch, n) = (x.nrows(), net.num_layers());
    let widths = forward::plan(
        net,
        x,
        |w| {
            // per group in flight a tile's trace and a sum of weight gradients (the whole batch's
            // trace with BatchNorm), plus the per-sample logs
            let tile = tile_rows(w.iter().copied(), batch);
            let groups = batch.div_ceil(tile).min(MAX_GROUPS);
            let in_flight = crate::parallel::num_threads().unwrap_or(1).min(groups) as u128;
            let params: u128 = net
                .dense
                .iter()
                .map(|p| {
                    memory::product(&[p.weight.len() + p.weight.nrows(), std::mem::size_of::<T>()])
                })
                .sum();
            let traces = if net.has_batchnorm() {
                forward::trace_bytes::<T>(w, batch)
            } else {
                in_flight.saturating_mul(forward::trace_bytes::<T>(w, tile))
            };
            traces
                .saturating_add(params.saturating_mul(groups as u128 + 1))
                .saturating_add(memory::product(&[3, n + 1, batch, 8]))
        },
        "the gradient profile (gsc, analyze)",
        "pass fewer samples at a time",
    )?;
    if net.has_batchnorm() {
        return profile_whole_batch(net, x, loss, targets, stop);
    }
    loss::check_targets(loss, targets, batch, widths[net.point_slots[n]])?;
    let tile = tile_rows(widths.iter().copied(), batch);
    let tiles: Vec<Range<usize>> = (0..batch)
        .step_by(tile)
        .map(|b| b..(b + tile).min(batch))
        .collect();
    let groups = tiles.len().min(MAX_GROUPS);
    let per_group: Vec<(Vec<TileProfile>, ParamGrads<T>)> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let mine = &tiles[g * tiles.len() / groups..(g + 1) * tiles.len() / groups];
            let mut parts = Vec::with_capacity(mine.len());
            let mut sum: Option<ParamGrads<T>> = None;
            for rows in mine {
                let (part, params) = profile_tile(net, x, loss, targets, rows.clone(), stop)?;
                sum = Some(match sum {
                    None => params,
                    Some(acc) => acc.add(params),
                });
                parts.push(part);
            }
            Ok((parts, sum.expect("every group has a tile")))
        })
        .collect::<Result<_>>()?;

    let mut losses = Array1::zeros(batch);
    let mut log_losses = Array1::zeros(batch);
    let mut point_log_norms = Array2::zeros((n + 1, batch));
    let mut grad_log_norms = Array2::zeros((n + 1, batch));
    let mut moments: Option<Vec<UnitMoments>> = None;
    let mut residuals: Option<Vec<(f64, f64)>> = None;
    let mut group_sums = Vec::with_capacity(per_group.len());
    for (parts, group_params) in per_group {
        for part in parts {
            let cols = part.rows.clone();
            losses.slice_mut(s![cols.clone()]).assign(&part.losses);
            log_losses
                .slice_mut(s![cols.clone()])
                .assign(&part.log_losses);
            point_log_norms
                .slice_mut(s![.., cols.clone()])
                .assign(&part.point_log_norms);
            grad_log_norms
                .slice_mut(s![.., cols])
                .assign(&part.grad_log_norms);
            moments = Some(match moments {
                None => part.moments,
                Some(acc) => acc
                    .into_iter()
                    .zip(&part.moments)
                    .map(|(a, b)| a.merge(b))
                    .collect(),
            });
            residuals = Some(match residuals {
                None => part.residuals,
                Some(acc) => merge_log_sq_norms(acc, part.residuals),
            });
        }
        group_sums.push(group_params);
    }
    let params = ParamGrads::sum_in_order(group_sums).expect("a non-empty batch");
    Ok(Profile {
        losses,
        log_losses,
        point_log_batch_norms: log_batch_norms(point_log_norms.view()),
        grad_log_batch_norms: log_batch_norms(grad_log_norms.view()),
        point_log_norms,
        grad_log_norms,
        weight_grad_log_norms: weight_grad_log_norms(&params),
        weight_log_norms: weight_log_norms(net),
        preactivations: PreactivationStats::from_moments(&moments.expect("a non-empty batch")),
        dilution: finish_dilution(net, residuals.expect("a non-empty batch")),
    })
}

/// What one tile of [`profile`] hands back.
struct TileProfile {
    rows: Range<usize>,
    losses: Array1<f64>,
    log_losses: Array1<f64>,
    point_log_norms: Array2<f64>,
    grad_log_norms: Array2<f64>,
    moments: Vec<UnitMoments>,
    residuals: Vec<(f64, f64)>,
}

/// Forward, loss and backward of the samples `rows` alone.
fn profile_tile<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    loss: Loss,
    targets: Targets<T>,
    rows: Range<usize>,
    stop: &Stop,
) -> Result<(TileProfile, ParamGrads<T>)> {
    let n = net.num_layers();
    let trace = forward::forward_checked(net, x.slice(s![rows.clone(), ..]), true, stop)?;
    let (losses, seed) =
        loss::loss_and_output_grad(trace.point(net, n), loss, targets.rows(rows.clone()))?;
    let log_losses = loss::log_losses(&losses, &seed, loss);
    let (grad_log_norms, params) = backward_log_norms(net, &trace, seed, stop)?;
    let mut point_log_norms = Array2::zeros((n + 1, rows.len()));
    for (i, mut out) in point_log_norms.outer_iter_mut().enumerate() {
        row_log_norms_into(trace.point(net, i), out.as_slice_mut().expect("owned"));
    }
    let part = TileProfile {
        losses: losses.mapv(|l| l.as_f64()),
        log_losses,
        point_log_norms,
        grad_log_norms,
        moments: net
            .pre_activation_slots
            .iter()
            .map(|&slot| UnitMoments::of(trace.values[slot].view()))
            .collect(),
        residuals: residual_log_sq_norms(net, &trace, 0..rows.len()),
        rows,
    };
    Ok((part, params))
}

/// The loss gradient's `ln ||(dL/dP_i)_b||_2` at every point (rescaled, so finite at any depth)
/// and the Dense parameter gradients, from the output gradient `seed`.
fn backward_log_norms<T: Float>(
    net: &Network<T>,
    trace: &Trace<T>,
    seed: Array2<T>,
    stop: &Stop,
) -> Result<(Array2<f64>, ParamGrads<T>)> {
    let n = net.num_layers();
    let mut grad_log_norms = Array2::zeros((n + 1, trace.batch()));
    let opts = VjpOptions {
        params: true,
        rescale: true,
        row_norms: false,
    };
    let params = vjp(
        net,
        trace,
        seed,
        1,
        n,
        0,
        opts,
        &mut |i, _, exps| {
            grad_log_norms
                .row_mut(i)
                .iter_mut()
                .zip(&exps.log_sq_norms)
                .for_each(|(o, l)| *o = 0.5 * l);
            Ok(())
        },
        stop,
    )?
    .expect("params were requested");
    Ok((grad_log_norms, params))
}

/// `ln ||dL/dW||_F` per Dense layer.
fn weight_grad_log_norms<T: Float>(params: &ParamGrads<T>) -> Vec<f64> {
    let ln2 = std::f64::consts::LN_2;
    params
        .weights
        .iter()
        .zip(&params.exponents)
        .map(|(w, &e)| 0.5 * log_sum_squares_of(w.view()) + e as f64 * ln2)
        .collect()
}

/// `ln ||W||_F` per Dense layer.
fn weight_log_norms<T: Float>(net: &Network<T>) -> Vec<f64> {
    net.dense
        .iter()
        .map(|p| 0.5 * log_sum_squares_of(p.weight.view()))
        .collect()
}

/// [`profile`] of a network whose BatchNorm couples the samples: one pass over the whole batch.
fn profile_whole_batch<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    loss: Loss,
    targets: Targets<T>,
    stop: &Stop,
) -> Result<Profile> {
    let trace = forward::forward(net, x, stop)?;
    let n = net.num_layers();
    let (losses, seed) = loss::loss_and_output_grad(trace.point(net, n), loss, targets)?;
    let log_losses = loss::log_losses(&losses, &seed, loss);
    let (grad_log_norms, params) = backward_log_norms(net, &trace, seed, stop)?;
    let point_log_norms = point_log_norms(net, &trace);
    Ok(Profile {
        losses: losses.mapv(|l| l.as_f64()),
        log_losses,
        point_log_batch_norms: log_batch_norms(point_log_norms.view()),
        grad_log_batch_norms: log_batch_norms(grad_log_norms.view()),
        point_log_norms,
        grad_log_norms,
        weight_grad_log_norms: weight_grad_log_norms(&params),
        weight_log_norms: weight_log_norms(net),
        preactivations: preactivation_stats(net, &trace),
        dilution: dilution(net, &trace),
    })
}

const MATRIX_HINT: &str = "pass fewer samples, or ask for less: gsc_core.gsc (every point to the loss) or \
     gsc_core.jacobian_norms(net, x, end) (every point to one end point) need no (N+1) x (N+1) x B array";

/// What an all-pairs analysis holds at its peak besides the forward traces: the native
/// `(N+1, N+1, B)` result twice (the tiles' parts and the assembled array), the Python
/// composition's copies of it (about five), and per running tile the row norms of two end points.
fn matrix_bytes(n: usize, batch: usize, max_width: usize) -> u128 {
    let pairs = memory::product(&[n + 1, n + 1, batch, 8]);
    let per_row = memory::product(&[n + 1, (1 << 16) / max_width.max(1) + max_width, 8]);
    pairs
        .saturating_mul(7)
        .saturating_add(per_row.saturating_mul(4))
}

/// `ln ||dp_j/dp_i||_F^2` per sample for every pair `i <= j`: shape `(N + 1, N + 1, B)` indexed
/// `[i, j, b]`, NaN for `i > j`; plus the point log norms. Exact.
///
/// Tiles of samples run in parallel; each streams through the end points `j` with one
/// identity-seeded VJP sweep per end point, keeping per-row norms. An end point produced by an
/// Activation layer needs no sweep of its own: its Jacobian is `diag(phi') dp_{j-1}/dp_i`, so
/// `||row_k||^2` is the previous end's times `phi'(z_k)^2` — the same numbers, half the work.
pub fn jacobian_log_sq_norm_matrix<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    stop: &Stop,
) -> Result<(Array3<f64>, Array2<f64>)> {
    let n = net.num_layers();
    require_per_sample(net, 0, n)?;
    let widths = forward::plan(
        net,
        x,
        |w| {
            let mw = *w.iter().max().unwrap_or(&1);
            forward::trace_bytes::<T>(w, x.nrows()).saturating_add(matrix_bytes(n, x.nrows(), mw))
        },
        "gsc_matrix (an (N+1) x (N+1) x B array of per-sample log norms, and its composition)",
        MATRIX_HINT,
    )?;
    let max_width = widths.iter().copied().max().unwrap_or(1);
    let tiles = for_sample_tiles(net, x, max_width, stop, |rows, trace| {
        let rows = 0..rows.len(); // of the tile's own trace
        let mut out = Array3::from_elem((n + 1, n + 1, rows.len()), f64::NAN);
        let mut previous: Option<RowSqNorms> = None; // end j - 1
        for end in 0..=n {
            let derived = match (net.top_level_activation(end), previous.take()) {
                (Some(act), Some(prev)) if end > 0 => {
                    through_activation(act, trace.point(net, end - 1), prev)
                }
                _ => None,
            };
            let norms = match derived {
                Some(norms) => norms,
                None => tile_row_sq_norms(net, trace, rows.clone(), end, stop)?,
            };
            out.slice_mut(s![..=end, end, ..])
                .assign(&norms.log_sq_norms());
            previous = Some(norms);
        }
        Ok((out, point_log_norms(net, trace)))
    })?;
    let batch = x.nrows();
    let mut out = Array3::from_elem((n + 1, n + 1, batch), f64::NAN);
    let mut points = Array2::zeros((n + 1, batch));
    for (rows, (matrix, point_logs)) in tiles {
        out.slice_mut(s![.., .., rows.clone()]).assign(&matrix);
        points.slice_mut(s![.., rows]).assign(&point_logs);
    }
    Ok((out, points))
}

/// The row norms of `dp_j/dp_i` for an end point `p_j = phi(p_{j-1})` from those of
/// `dp_{j-1}/dp_i`: row `k` is row `k` of the previous Jacobian times `phi'(z_k)`, so its squared
/// norm is the previous one times `phi'(z_k)^2`; `dp_j/dp_j` is the identity (rows of norm 1).
/// Each `(i, b)` lane is renormalised by an exact power of two. `None` where float64 could lose a
/// lane to underflow (derivatives below about `1e-150`): the caller then sweeps the end point.
fn through_activation<T: Float>(
    act: crate::activation::Activation,
    z: ArrayView2<T>,
    prev: RowSqNorms,
) -> Option<RowSqNorms> {
    let (end, nb, d) = (prev.sq.dim().0, z.nrows(), z.ncols());
    let mut sq = Array3::<f64>::zeros((end + 1, nb, d));
    let mut scale = Array2::<i32>::zeros((end + 1, nb));
    sq.slice_mut(s![end, .., ..]).fill(1.0);
    let mut slope = vec![T::zero(); d];
    let mut slope_sq = vec![0.0f64; d];
    for b in 0..nb {
        act.derivative_slice(&z.row(b).to_vec(), &mut slope);
        for (s2, &v) in slope_sq.iter_mut().zip(&slope) {
            *s2 = v.as_f64() * v.as_f64();
        }
        for i in 0..end {
            let before = prev.sq.slice(s![i, b, ..]);
            let mut lane = sq.slice_mut(s![i, b, ..]);
            let mut top = 0.0f64;
            for ((o, &p), &s2) in lane.iter_mut().zip(before).zip(&slope_sq) {
                *o = p * s2;
                top = top.max(*o);
            }
            if top < f64::MIN_POSITIVE * 2f64.powi(64) {
                // a lane that was not zero before must not vanish here by underflow
                let was_zero = before
                    .iter()
                    .zip(&slope)
                    .all(|(&p, &v)| p == 0.0 || v == T::zero());
                if !was_zero {
                    return None;
                }
            }
            let mut e = prev.scale[[i, b]];
            if top > 0.0 && !(2f64.powi(-600)..=2f64.powi(600)).contains(&top) {
                let shift = top.log2().floor() as i32;
                let f = (-shift as f64).exp2();
                lane.mapv_inplace(|v| v * f);
                e += shift;
            }
            scale[[i, b]] = e;
        }
    }
    Some(RowSqNorms { sq, scale })
}

/// A small deterministic Gaussian generator (SplitMix64 + Box–Muller): probes depend only on the
/// seed and the order they are drawn in, never on threads. Public for the benches' inputs.
pub struct Gaussian {
    state: u64,
    spare: Option<f64>,
}

impl Gaussian {
    pub fn new(seed: u64) -> Self {
        Gaussian {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            spare: None,
        }
    }
    /// The next raw 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        // in (0, 1]
        ((self.next_u64() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64)
    }
    /// The next standard normal value.
    pub fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

/// Gaussian-probe estimates of `||dp_j/dp_i||_F^2` for every pair `i <= j` (SPEC §3,
/// `E||J v||^2 = ||J||_F^2` for `v ~ N(0, I)`), with `probes` vectors per start point.
#[derive(Debug, Clone)]
pub struct ProbeEstimates {
    /// Per sample: `ln` of the mean over probes of `||J_b v_bk||^2`, `[i, j, b]`.
    pub sample_log_mean: Array3<f64>,
    /// Per sample: variance over probes of `||J_b v_bk||^2` divided by the squared mean.
    pub sample_rel_var: Array3<f64>,
    /// Whole batch: `ln` of the mean over probes of `||J V_k||_F^2`, `[i, j]`.
    pub batch_log_mean: Array2<f64>,
    /// Whole batch: variance over probes divided by the squared mean.
    pub batch_rel_var: Array2<f64>,
    pub point_log_norms: Array2<f64>,
}

/// Mean and relative variance of `exp(logs)`, computed relative to the largest term.
fn log_mean_rel_var(logs: &[f64]) -> (f64, f64) {
    let m = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return (m, f64::NAN);
    }
    let k = logs.len() as f64;
    let scaled: Vec<f64> = logs.iter().map(|l| (l - m).exp()).collect();
    let mean = scaled.iter().sum::<f64>() / k;
    let var = if logs.len() > 1 {
        scaled.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (k - 1.0)
    } else {
        f64::NAN
    };
    (m + mean.ln(), var / (mean * mean))
}

pub fn probe_log_sq_norms<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    probes: usize,
    seed: u64,
    stop: &Stop,
) -> Result<ProbeEstimates> {
    if probes == 0 {
        return crate::invalid!("probes must be at least 1");
    }
    let n = net.num_layers();
    forward::plan(
        net,
        x,
        |w| {
            let mw = *w.iter().max().unwrap_or(&1);
            forward::trace_bytes::<T>(w, x.nrows())
                .saturating_add(matrix_bytes(n, x.nrows(), mw))
                .saturating_add(memory::product(&[4, x.nrows(), probes, mw, 8]))
        },
        "gsc_matrix with probes (an (N+1) x (N+1) x B array of estimates, and its composition)",
        MATRIX_HINT,
    )?;
    let trace = forward::forward(net, x, stop)?;
    let batch = trace.batch();
    let k = probes;
    let mut sample_log_mean = Array3::from_elem((n + 1, n + 1, batch), f64::NAN);
    let mut sample_rel_var = Array3::from_elem((n + 1, n + 1, batch), f64::NAN);
    let mut batch_log_mean = Array2::from_elem((n + 1, n + 1), f64::NAN);
    let mut batch_rel_var = Array2::from_elem((n + 1, n + 1), f64::NAN);
    let mut rng = Gaussian::new(seed);
    for start in 0..=n {
        let d = trace.point(net, start).ncols();
        // Drawn in the order (sample, probe, feature).
        let mut tangent = Array2::zeros((batch * k, d));
        tangent
            .iter_mut()
            .for_each(|v| *v = T::from_f64(rng.sample()));
        jvp(
            net,
            &trace,
            tangent,
            k,
            start,
            n,
            true,
            &mut |j, t, exps: &Exponents| {
                // ln ||row||^2 + the sample's exponent, for every (sample, probe) row.
                let ln2 = std::f64::consts::LN_2;
                let rows: Vec<f64> = t
                    .axis_iter(Axis(0))
                    .into_par_iter()
                    .enumerate()
                    .map(|(r, row)| {
                        log_sum_squares_of(row) + 2.0 * exps.per_sample[r / k] as f64 * ln2
                    })
                    .collect();
                for b in 0..batch {
                    let (mean, rel) = log_mean_rel_var(&rows[b * k..(b + 1) * k]);
                    sample_log_mean[[start, j, b]] = mean;
                    sample_rel_var[[start, j, b]] = rel;
                }
                let per_probe: Vec<f64> = (0..k)
                    .map(|kk| {
                        (0..batch).fold(f64::NEG_INFINITY, |acc, b| {
                            log_add_exp(acc, rows[b * k + kk])
                        })
                    })
                    .collect();
                let (mean, rel) = log_mean_rel_var(&per_probe);
                batch_log_mean[[start, j]] = mean;
                batch_rel_var[[start, j]] = rel;
                Ok(())
            },
            stop,
        )?;
    }
    Ok(ProbeEstimates {
        sample_log_mean,
        sample_rel_var,
        batch_log_mean,
        batch_rel_var,
        point_log_norms: point_log_norms(net, &trace),
    })
}

/// Collapsing-domain statistics of SPEC §4 from a forward pass.
pub fn preactivation_stats_of<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    stop: &Stop,
) -> Result<PreactivationStats> {
    let trace = forward::forward(net, x, stop)?;
    Ok(preactivation_stats(net, &trace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_probes_have_unit_variance_and_are_reproducible() {
        let mut g = Gaussian::new(7);
        let v: Vec<f64> = (0..200_000).map(|_| g.sample()).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
            "{mean} {var}"
        );
        let mut h = Gaussian::new(7);
        assert_eq!(h.sample(), v[0]);
    }

    fn gaussian_matrix(g: &mut Gaussian, rows: usize, cols: usize, scale: f64) -> Array2<f64> {
        Array2::from_shape_fn((rows, cols), |_| scale * g.sample())
    }

    /// A network with every per-sample layer kind, and a batch of several profile tiles.
    fn tiled_case() -> (Network<f64>, Array2<f64>, Array1<i64>) {
        use crate::activation::Activation;
        use crate::network::{DenseParams, Layer, NormParams};
        let mut g = Gaussian::new(3);
        let w = 40;
        let mut dense = |d_out, d_in| {
            Layer::Dense(DenseParams {
                weight: gaussian_matrix(&mut g, d_out, d_in, (1.5 / d_in as f64).sqrt()),
                bias: Some(Array1::from_elem(d_out, 0.1)),
            })
        };
        let mut layers = vec![dense(w, 7), Layer::Activation(Activation::Tanh)];
        for _ in 0..3 {
            layers.push(Layer::Residual {
                body: vec![
                    Layer::LayerNorm(NormParams {
                        eps: 1e-5,
                        weight: None,
                        bias: None,
                    }),
                    dense(w, w),
                    Layer::Activation(Activation::Relu),
                ],
                alpha: 0.7,
                shortcut: None,
            });
        }
        layers.push(dense(5, w));
        let net = Network::new(layers).unwrap();
        let batch = 3 * crate::parallel::rows_per_task(w, 1) + 17;
        let x = gaussian_matrix(&mut g, batch, 7, 1.0);
        let y = Array1::from_shape_fn(batch, |b| (b % 5) as i64);
        (net, x, y)
    }

    #[test]
    fn the_tiled_profile_is_the_whole_batch_profile() {
        let (net, x, y) = tiled_case();
        let stop = Stop::new();
        let targets = Targets::Classes(y.view());
        let tiled = profile(&net, x.view(), Loss::CrossEntropy, targets, &stop).unwrap();
        let whole =
            profile_whole_batch(&net, x.view(), Loss::CrossEntropy, targets, &stop).unwrap();
        // Per-sample values do not depend on the tiling, nor do the tile-merged statistics.
        assert_eq!(tiled.losses, whole.losses);
        assert_eq!(tiled.point_log_norms, whole.point_log_norms);
        assert_eq!(tiled.grad_log_norms, whole.grad_log_norms);
        assert_eq!(tiled.preactivations.unit_std, whole.preactivations.unit_std);
        assert_eq!(
            tiled.preactivations.unit_sign_diversity,
            whole.preactivations.unit_sign_diversity
        );
        assert_eq!(tiled.dilution, whole.dilution);
        assert_eq!(tiled.dilution.len(), 3);
        // Weight gradients are summed tile by tile: the same up to rounding.
        for (a, b) in tiled
            .weight_grad_log_norms
            .iter()
            .zip(&whole.weight_grad_log_norms)
        {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn derived_activation_end_points_match_their_own_sweeps_even_in_saturation() {
        use crate::activation::Activation;
        use crate::network::{DenseParams, Layer};
        let mut g = Gaussian::new(5);
        let w = 12;
        let mut layers = Vec::new();
        for (l, gain) in [(0, 1.0), (1, 400.0), (2, 1.0), (3, 1.0)] {
            let d_in = if l == 0 { 6 } else { w };
            layers.push(Layer::Dense(DenseParams {
                weight: gaussian_matrix(&mut g, w, d_in, gain / (d_in as f64).sqrt()),
                bias: None,
            }));
            layers.push(Layer::Activation(Activation::Tanh));
        }
        let net = Network::new(layers).unwrap();
        let x = gaussian_matrix(&mut g, 9, 6, 1.0);
        let stop = Stop::new();
        let (matrix, _) = jacobian_log_sq_norm_matrix(&net, x.view(), &stop).unwrap();
        let trace = forward::forward(&net, x.view(), &stop).unwrap();
        // the layer of gain 400 saturates: some slopes are far below 1e-150
        let z = trace.point(&net, 3);
        assert!(z.iter().any(|v| v.abs() > 200.0) && z.iter().any(|v| v.abs() < 50.0));
        let n = net.num_layers();
        for end in 0..=n {
            let swept = tile_row_sq_norms(&net, &trace, 0..9, end, &stop)
                .unwrap()
                .log_sq_norms();
            for i in 0..=end {
                for b in 0..9 {
                    let (a, e) = (matrix[[i, end, b]], swept[[i, b]]);
                    assert!(
                        a == e || (a - e).abs() < 1e-12 * e.abs().max(1.0),
                        "[{i}, {end}, {b}]: {a} vs {e}"
                    );
                    assert!(a.is_finite(), "[{i}, {end}, {b}] = {a}");
                }
            }
        }
    }

    #[test]
    fn an_activation_whose_slopes_underflow_when_squared_is_swept_instead() {
        use crate::activation::Activation;
        use crate::network::{DenseParams, Layer};
        let constant = |d_out, d_in, total: f64| {
            Layer::Dense(DenseParams {
                weight: Array2::from_elem((d_out, d_in), total / d_in as f64),
                bias: None,
            })
        };
        // every pre-activation of the second tanh is 250: slope ~ 1e-217, squared below f64's range
        let net = Network::new(vec![
            constant(4, 3, 1.0),
            Layer::Activation(Activation::Tanh),
            constant(4, 4, 250.0 / 0.761_594_155_955_764_9),
            Layer::Activation(Activation::Tanh),
        ])
        .unwrap();
        let x = Array2::from_elem((2, 3), 1.0);
        let stop = Stop::new();
        let trace = forward::forward(&net, x.view(), &stop).unwrap();
        let prev = tile_row_sq_norms(&net, &trace, 0..2, 3, &stop).unwrap();
        assert!(through_activation(Activation::Tanh, trace.point(&net, 3), prev).is_none());
        let (matrix, _) = jacobian_log_sq_norm_matrix(&net, x.view(), &stop).unwrap();
        let swept = tile_row_sq_norms(&net, &trace, 0..2, 4, &stop)
            .unwrap()
            .log_sq_norms();
        for i in 0..=4 {
            assert_eq!(matrix[[i, 4, 0]], swept[[i, 0]]);
        }
        for i in 0..4 {
            assert!(
                matrix[[i, 4, 0]].is_finite() && matrix[[i, 4, 0]] < -900.0,
                "{i}: {}",
                matrix[[i, 4, 0]]
            );
        }
    }

    #[test]
    fn merged_moments_match_one_pass_over_all_rows() {
        let mut g = Gaussian::new(11);
        let z = gaussian_matrix(&mut g, 1001, 6, 3.0) + 5.0;
        let whole = UnitMoments::of(z.view());
        let merged = z
            .axis_chunks_iter(Axis(0), 97)
            .map(UnitMoments::of)
            .reduce(|a, b| a.merge(&b))
            .unwrap();
        for j in 0..6 {
            assert!((whole.mean[j] - merged.mean[j]).abs() < 1e-13);
            assert!((whole.m2[j] - merged.m2[j]).abs() < 1e-10 * whole.m2[j]);
            assert_eq!((whole.pos[j], whole.neg[j]), (merged.pos[j], merged.neg[j]));
        }
    }

    #[test]
    fn mean_and_relative_variance_in_log_space() {
        let (m, r) = log_mean_rel_var(&[1f64.ln(), 3f64.ln()]);
        assert!((m - 2f64.ln()).abs() < 1e-15);
        assert!((r - 2.0 / 4.0).abs() < 1e-15);
    }
}
