//! Per-sample Jacobians between points and their Frobenius norms (SPEC §2).

use std::ops::Range;

use ndarray::{s, Array2, Array3, ArrayView2};
use rayon::prelude::*;

use crate::backward::{vjp, vjp_rows, VjpOptions};
use crate::cancel::Stop;
use crate::error::{CoreError, Result};
use crate::float::Float;
use crate::forward::{self, forward, forward_checked, trace_bytes, Trace};
use crate::invalid;
use crate::jvp::jvp;
use crate::memory;
use crate::network::Network;
use crate::scale::{ldexp, log_add_exp, Exponents};

/// `K` identity vectors per sample: row `b*K + t` is the unit vector `e_{first + t}` of width `d`.
pub fn identity_block<T: Float>(batch: usize, first: usize, k: usize, d: usize) -> Array2<T> {
    let mut seed = Array2::zeros((batch * k, d));
    for b in 0..batch {
        for t in 0..k {
            seed[[b * k + t, first + t]] = T::one();
        }
    }
    seed
}

/// Fails when a BatchNorm between points `start < end` couples the samples.
pub fn require_per_sample<T: Float>(net: &Network<T>, start: usize, end: usize) -> Result<()> {
    if let Some(label) = net.batchnorm_between(start + 1, end) {
        return invalid!(
            "the per-sample Jacobian dp_{end}/dp_{start} does not exist: {label} couples the samples of a batch; \
             use vjp/jvp on the whole batch (or mode='batch') instead"
        );
    }
    Ok(())
}

/// Per-sample `dp_end/dp_start`, shape `(B, d_end, d_start)`, by `K = min(d_end, d_start)`
/// batched VJPs or JVPs: true values, `inf`/`0` only where they overflow/underflow the dtype
/// (the products are rescaled on the way, so no `inf - inf = NaN` at extreme depth).
pub fn jacobian<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    start: i64,
    end: i64,
    stop: &Stop,
) -> Result<Array3<T>> {
    let (mut j, exps) = jacobian_scaled(net, x, start, end, stop)?;
    for (mut m, &e) in j.outer_iter_mut().zip(&exps.per_sample) {
        if e != 0 {
            m.mapv_inplace(|v| ldexp(v, e as i64));
        }
    }
    Ok(j)
}

/// [`jacobian`] as mantissas and exponents: the true Jacobian of sample `b` is
/// `J[b] * 2^exponents[b]`, with `J[b]` kept in range however deep the network (its singular
/// values, norms, ... follow without overflow).
pub fn jacobian_scaled<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    start: i64,
    end: i64,
    stop: &Stop,
) -> Result<(Array3<T>, Exponents)> {
    let start = net.resolve_point(start, "start")?;
    let end = net.resolve_point(end, "end")?;
    if start > end {
        return invalid!(
            "start={start} comes after end={end}: the Jacobian dp_end/dp_start needs start <= end"
        );
    }
    require_per_sample(net, start, end)?;
    let batch = x.nrows();
    forward::plan(
        net,
        x,
        |w| {
            let (ds, de) = (w[net.point_slots[start]], w[net.point_slots[end]]);
            let size = std::mem::size_of::<T>();
            // the trace, the result (twice while it is reshaped), the K-vector blocks on the way
            trace_bytes::<T>(w, batch)
                .saturating_add(memory::product(&[2, batch, ds, de, size]))
                .saturating_add(memory::product(&[
                    3,
                    batch,
                    ds.min(de),
                    *w.iter().max().unwrap_or(&1),
                    size,
                ]))
        },
        "jacobian (one d_end x d_start Jacobian per sample)",
        "use gsc_core.jacobian_norms or jacobian_spectrum, which never hold all the Jacobians, \
         or pass fewer samples at a time",
    )?;
    let trace = forward(net, x, stop)?;
    jacobian_from_trace(net, &trace, start, end, stop)
}

/// The rescaled per-sample Jacobians of a trace (see [`jacobian_scaled`]).
pub fn jacobian_from_trace<T: Float>(
    net: &Network<T>,
    trace: &Trace<T>,
    start: usize,
    end: usize,
    stop: &Stop,
) -> Result<(Array3<T>, Exponents)> {
    let batch = trace.batch();
    let d_start = trace.point(net, start).ncols();
    let d_end = trace.point(net, end).ncols();
    let mut result = None;
    if d_end <= d_start {
        let seed = identity_block(batch, 0, d_end, d_end);
        let opts = VjpOptions {
            params: false,
            rescale: true,
            row_norms: false,
        };
        vjp(
            net,
            trace,
            seed,
            d_end,
            end,
            start,
            opts,
            &mut |i, g, exps| {
                if i == start {
                    result = Some((g.to_owned(), exps.clone()));
                }
                Ok(())
            },
            stop,
        )?;
        let (rows, exps) =
            result.ok_or_else(|| CoreError::Internal("vjp skipped the start point".into()))?;
        let j = rows
            .into_shape_with_order((batch, d_end, d_start))
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok((j, exps))
    } else {
        let seed = identity_block(batch, 0, d_start, d_start);
        jvp(
            net,
            trace,
            seed,
            d_start,
            start,
            end,
            true,
            &mut |j, t, exps| {
                if j == end {
                    result = Some((t.to_owned(), exps.clone()));
                }
                Ok(())
            },
            stop,
        )?;
        let (cols, exps) =
            result.ok_or_else(|| CoreError::Internal("jvp skipped the end point".into()))?;
        let cols = cols
            .into_shape_with_order((batch, d_start, d_end))
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok((
            cols.permuted_axes([0, 2, 1])
                .as_standard_layout()
                .into_owned(),
            exps,
        ))
    }
}

/// Elements of one tile's `(samples * K, width)` block: sized to stay in a core's L2 cache.
const TILE_ELEMENTS: usize = 1 << 16;

/// How a per-sample Jacobian sweep is split: `K` identity vectors per chunk, samples per tile.
/// Depends only on the shapes, never on the thread count.
fn tiling(batch: usize, d_end: usize, max_width: usize) -> (usize, usize) {
    let k = (TILE_ELEMENTS / max_width.max(1)).clamp(1, d_end.max(1));
    let samples = (TILE_ELEMENTS / (k * max_width.max(1))).clamp(1, batch.max(1));
    (k, samples)
}

/// Squared norms of the rows of per-sample Jacobians `dp_end/dp_i` for every point `i <= end`
/// and every sample `b` of a tile: `||row_k(dp_end/dp_i)_b||^2 = sq[i, b, k] * 2^scale[i, b]`.
/// Exact powers of two carry the magnitude, so nothing overflows or underflows at any depth.
#[derive(Debug, Clone)]
pub struct RowSqNorms {
    /// `(end + 1, samples, d_end)`.
    pub sq: Array3<f64>,
    /// `(end + 1, samples)`: base-2 exponents.
    pub scale: Array2<i32>,
}

impl RowSqNorms {
    /// `ln ||dp_end/dp_i||_F^2` per point and sample, `(end + 1, samples)`: one logarithm each.
    pub fn log_sq_norms(&self) -> Array2<f64> {
        let ln2 = std::f64::consts::LN_2;
        let mut out = Array2::zeros(self.scale.raw_dim());
        for ((o, rows), &e) in out
            .iter_mut()
            .zip(self.sq.lanes(ndarray::Axis(2)))
            .zip(&self.scale)
        {
            *o = rows.sum().ln() + e as f64 * ln2;
        }
        out
    }
}

/// Pulls identity cotangents from `end` back through the samples `rows`, `K` unit vectors at a
/// time (`K` from [`tiling`]), rescaled; `f(first, k, point, exponents)` sees the block of unit
/// vectors `first..first + k` at every point (with per-row sums of squares if `row_norms`).
fn identity_sweeps<T: Float>(
    net: &Network<T>,
    trace: &Trace<T>,
    rows: Range<usize>,
    end: usize,
    row_norms: bool,
    stop: &Stop,
    mut f: impl FnMut(usize, usize, usize, &Exponents),
) -> Result<()> {
    let batch = rows.len();
    let d_end = trace.point(net, end).ncols();
    let max_width = trace.values.iter().map(|v| v.ncols()).max().unwrap_or(1);
    let (chunk, _) = tiling(batch, d_end, max_width);
    let opts = VjpOptions {
        params: false,
        rescale: true,
        row_norms,
    };
    for first in (0..d_end).step_by(chunk) {
        let k = chunk.min(d_end - first);
        let seed = identity_block(batch, first, k, d_end);
        vjp_rows(
            net,
            trace,
            rows.clone(),
            seed,
            k,
            end,
            0,
            opts,
            &mut |i, _, exps| {
                f(first, k, i, exps);
                Ok(())
            },
            stop,
        )?;
    }
    Ok(())
}

/// [`RowSqNorms`] of the tile `rows` by identity-seeded, rescaled VJPs from `end`, `K` rows at
/// a time.
pub fn tile_row_sq_norms<T: Float>(
    net: &Network<T>,
    trace: &Trace<T>,
    rows: Range<usize>,
    end: usize,
    stop: &Stop,
) -> Result<RowSqNorms> {
    let batch = rows.len();
    let d_end = trace.point(net, end).ncols();
    let mut sq = Array3::<f64>::zeros((end + 1, batch, d_end));
    let mut scale = Array2::<i32>::zeros((end + 1, batch));
    identity_sweeps(net, trace, rows, end, true, stop, |first, k, i, exps| {
        for b in 0..batch {
            let e = 2 * exps.per_sample[b];
            // the chunks of one sample may carry different exponents: align to the larger
            let top = if first == 0 { e } else { scale[[i, b]].max(e) };
            if first > 0 && scale[[i, b]] != top {
                let f = ((scale[[i, b]] - top) as f64).exp2();
                sq.slice_mut(s![i, b, ..first]).mapv_inplace(|v| v * f);
            }
            scale[[i, b]] = top;
            let f = ((e - top) as f64).exp2();
            let rows = &exps.row_sq_norms[b * k..(b + 1) * k];
            for (o, &r) in sq
                .slice_mut(s![i, b, first..first + k])
                .iter_mut()
                .zip(rows)
            {
                *o = r * f;
            }
        }
    })?;
    Ok(RowSqNorms { sq, scale })
}

/// Splits the batch `x` (already checked) into fixed tiles and, in parallel, runs the forward
/// pass of each tile (keeping the activation slopes) and `f(rows, tile_trace)`; results in tile
/// order. Only the tiles in flight hold a trace, so memory does not grow with the batch.
/// The split depends only on the shapes, never on the thread count.
pub fn for_sample_tiles<T: Float, R: Send>(
    net: &Network<T>,
    x: ArrayView2<T>,
    d_end: usize,
    stop: &Stop,
    f: impl Fn(Range<usize>, &Trace<T>) -> Result<R> + Sync,
) -> Result<Vec<(Range<usize>, R)>> {
    let batch = x.nrows();
    let max_width = net.slot_widths(x.ncols())?.into_iter().max().unwrap_or(1);
    let (_, samples) = tiling(batch, d_end, max_width);
    let tiles: Vec<Range<usize>> = (0..batch)
        .step_by(samples)
        .map(|b| b..(b + samples).min(batch))
        .collect();
    tiles
        .into_par_iter()
        .map(|r| {
            let trace = forward_checked(net, x.slice(s![r.clone(), ..]), true, stop)?;
            f(r.clone(), &trace).map(|v| (r, v))
        })
        .collect()
}

/// `ln ||dp_end/dp_i||_F^2` for every point `i <= end` and every sample of `rows`: shape
/// `(end + 1, rows.len())`. Like [`tile_row_sq_norms`], but per sample: the norms come from
/// the rescaling pass itself ([`crate::scale::Exponents::log_sq_norms`]).
pub fn tile_log_sq_norms<T: Float>(
    net: &Network<T>,
    trace: &Trace<T>,
    rows: Range<usize>,
    end: usize,
    stop: &Stop,
) -> Result<Array2<f64>> {
    let mut out = Array2::<f64>::from_elem((end + 1, rows.len()), f64::NEG_INFINITY);
    identity_sweeps(net, trace, rows, end, false, stop, |_, _, i, exps| {
        for (b, &log) in exps.log_sq_norms.iter().enumerate() {
            out[[i, b]] = log_add_exp(out[[i, b]], log);
        }
    })?;
    Ok(out)
}

/// Per-sample `||dp_end/dp_i||_F` for every point `i <= end`, shape `(end + 1, B)` (SPEC §2):
/// tiles of samples in parallel, each running its own forward pass and streaming its
/// identity-seeded VJPs through the network in L2-sized blocks. Exact; computed as logs, so
/// `inf`/`0` only where the float type itself overflows/underflows.
///
/// Memory beyond the result: the forward traces of the tiles in flight, each tile's VJP blocks
/// (64 Ki values each) and `(end + 1) x samples` log norms.
pub fn jacobian_norms<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    end: i64,
    stop: &Stop,
) -> Result<Array2<T>> {
    let end = net.resolve_point(end, "end")?;
    require_per_sample(net, 0, end)?;
    let batch = x.nrows();
    let widths = forward::plan(
        net,
        x,
        |w| {
            // the traces (with slopes: at most twice the values) of the tiles in flight, their
            // log norms and the result
            let max_width = *w.iter().max().unwrap_or(&1);
            let (_, samples) = tiling(batch, w[net.point_slots[end]], max_width);
            let in_flight = crate::parallel::num_threads()
                .unwrap_or(1)
                .min(batch.div_ceil(samples));
            memory::product(&[2, in_flight])
                .saturating_mul(trace_bytes::<T>(w, samples))
                .saturating_add(memory::product(&[2, end + 1, batch, 8]))
        },
        "jacobian_norms (the tiles' forward traces and an (end + 1, B) result)",
        "pass fewer samples at a time",
    )?;
    let d_end = widths[net.point_slots[end]];
    let tiles = for_sample_tiles(net, x, d_end, stop, |rows, trace| {
        tile_log_sq_norms(net, trace, 0..rows.len(), end, stop)
    })?;
    let mut norms = Array2::zeros((end + 1, x.nrows()));
    for (rows, logs) in tiles {
        norms
            .slice_mut(s![.., rows])
            .assign(&logs.mapv(|l| T::from_f64((0.5 * l).exp())));
    }
    Ok(norms)
}
