//! The numeric work behind the analysis of SPEC §3, §4, §7: per-sample log norms of points and
//! gradients from one forward and one backward pass, Jacobian log norms between all pairs of
//! points (exact, or estimated with Gaussian probes), collapsing-domain statistics and dilution.
//!
//! Everything is returned as natural logs of norms, so nothing overflows however deep the network
//! (see [`crate::scale`]); the Python layer composes them into the GSC (`gsc_core/analysis.py`).

use ndarray::{s, Array1, Array2, Array3, ArrayView2, Axis};
use rayon::prelude::*;

use crate::backward::{vjp, VjpOptions};
use crate::cancel::Stop;
use crate::error::Result;
use crate::float::Float;
use crate::forward::{self, Trace};
use crate::jacobian::{for_sample_tiles, require_per_sample, tile_row_log_sq_norms};
use crate::jvp::jvp;
use crate::loss::{self, Loss, Targets};
use crate::network::{Network, Op};
use crate::scale::{log_add_exp, log_sum_exp, log_sum_squares_of, Exponents};

/// Per-unit statistics of every Activation layer's input `Z` (`B x d`), depth-first (SPEC §4).
#[derive(Debug, Clone)]
pub struct PreactivationStats {
    /// Population std over the batch, per unit.
    pub unit_std: Vec<Array1<f64>>,
    /// `min(P, N) / (P + N)` per unit (0 where `P + N = 0`).
    pub unit_sign_diversity: Vec<Array1<f64>>,
}

pub fn preactivation_stats<T: Float>(net: &Network<T>, trace: &Trace<T>) -> PreactivationStats {
    let per_layer: Vec<(Array1<f64>, Array1<f64>)> = net
        .pre_activation_slots
        .par_iter()
        .map(|&slot| unit_statistics(trace.values[slot].view()))
        .collect();
    let (unit_std, unit_sign_diversity) = per_layer.into_iter().unzip();
    PreactivationStats {
        unit_std,
        unit_sign_diversity,
    }
}

/// Per-unit population std and sign diversity of `z` (`B x d`), walking the rows in order (two
/// passes: the mean, then the squared deviations), vectorised across units.
fn unit_statistics<T: Float>(z: ArrayView2<T>) -> (Array1<f64>, Array1<f64>) {
    let (batch, d) = z.dim();
    let mut sum = vec![0.0f64; d];
    let mut pos = vec![0u32; d];
    let mut neg = vec![0u32; d];
    for row in z.rows() {
        for (j, &v) in row.iter().enumerate() {
            sum[j] += v.as_f64();
            pos[j] += (v > T::zero()) as u32;
            neg[j] += (v < T::zero()) as u32;
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / batch as f64).collect();
    let mut sq = vec![0.0f64; d];
    for row in z.rows() {
        for (j, &v) in row.iter().enumerate() {
            let dev = v.as_f64() - mean[j];
            sq[j] += dev * dev;
        }
    }
    let std = sq.iter().map(|s| (s / batch as f64).sqrt()).collect();
    let sign = pos
        .iter()
        .zip(&neg)
        .map(|(&p, &n)| {
            if p + n == 0 {
                0.0
            } else {
                p.min(n) as f64 / (p + n) as f64
            }
        })
        .collect();
    (std, sign)
}

/// `ln ||row||_2` of every row of `a`.
pub fn row_log_norms<T: Float>(a: ArrayView2<T>) -> Array1<f64> {
    let logs: Vec<f64> = a
        .axis_iter(Axis(0))
        .into_par_iter()
        .map(|r| 0.5 * log_sum_squares_of(r))
        .collect();
    Array1::from(logs)
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
    net.nodes
        .iter()
        .filter_map(|node| match node.op {
            Op::Add { shortcut, alpha } => {
                let s = 0.5 * log_sum_squares_of(trace.values[shortcut].view());
                let b = 0.5 * log_sum_squares_of(trace.values[node.input].view())
                    + alpha.as_f64().abs().ln();
                Some((s - b).exp())
            }
            _ => None,
        })
        .collect()
}

/// Everything one forward and one backward pass of a loss tell (SPEC §7), as logs.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Per-sample losses `l_b`.
    pub losses: Array1<f64>,
    /// `ln ||p_{i,b}||_2`, `(N + 1, B)`.
    pub point_log_norms: Array2<f64>,
    /// `ln ||(dL/dP_i)_b||_2` (row `b` of the total loss gradient), `(N + 1, B)`.
    pub grad_log_norms: Array2<f64>,
    /// `ln ||dL/dW||_F` per Dense layer.
    pub weight_grad_log_norms: Vec<f64>,
    /// `ln ||W||_F` per Dense layer.
    pub weight_log_norms: Vec<f64>,
    pub preactivations: PreactivationStats,
    pub dilution: Vec<f64>,
}

/// The one-forward, one-backward profile behind `gsc_core.analyze` and `gsc_core.gsc`.
pub fn profile<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    loss: Loss,
    targets: Targets<T>,
    stop: &Stop,
) -> Result<Profile> {
    let trace = forward::forward(net, x, stop)?;
    let n = net.num_layers();
    let (losses, seed) = loss::loss_and_output_grad(trace.point(net, n), loss, targets)?;
    let mut grad_log_norms = Array2::zeros((n + 1, trace.batch()));
    let opts = VjpOptions {
        params: true,
        rescale: true,
    };
    let params = vjp(
        net,
        &trace,
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
    let ln2 = std::f64::consts::LN_2;
    let weight_grad_log_norms = params
        .weights
        .iter()
        .zip(&params.exponents)
        .map(|(w, &e)| 0.5 * log_sum_squares_of(w.view()) + e as f64 * ln2)
        .collect();
    let weight_log_norms = net
        .dense
        .iter()
        .map(|p| 0.5 * log_sum_squares_of(p.weight.view()))
        .collect();
    Ok(Profile {
        losses: losses.mapv(|l| l.as_f64()),
        point_log_norms: point_log_norms(net, &trace),
        grad_log_norms,
        weight_grad_log_norms,
        weight_log_norms,
        preactivations: preactivation_stats(net, &trace),
        dilution: dilution(net, &trace),
    })
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
    let trace = forward::forward(net, x, stop)?;
    let max_width = trace.values.iter().map(|v| v.ncols()).max().unwrap_or(1);
    let tiles = for_sample_tiles(&trace, max_width, |rows| {
        let nb = rows.len();
        let mut out = Array3::from_elem((n + 1, n + 1, nb), f64::NAN);
        let mut previous: Option<Array3<f64>> = None; // per-row logs of end j - 1
        for end in 0..=n {
            let per_row = match (net.top_level_activation(end), previous.take()) {
                (Some(act), Some(prev)) if end > 0 => {
                    let z = trace.point(net, end - 1).slice_move(s![rows.clone(), ..]);
                    let mut per_row = Array3::from_elem((end + 1, nb, z.ncols()), 0.0);
                    per_row.slice_mut(s![..end, .., ..]).assign(&prev);
                    let mut slope = vec![T::zero(); z.ncols()];
                    for b in 0..nb {
                        let zrow = z.row(b).to_vec();
                        act.derivative_slice(&zrow, &mut slope);
                        for (kk, d) in slope.iter().enumerate() {
                            let log_d2 = 2.0 * d.as_f64().abs().ln();
                            per_row
                                .slice_mut(s![..end, b, kk])
                                .mapv_inplace(|v| v + log_d2);
                        }
                    }
                    per_row // the row `end` stays 0 = ln ||e_k||^2
                }
                _ => tile_row_log_sq_norms(net, &trace, rows.clone(), end, stop)?,
            };
            let logs = per_row.map_axis(Axis(2), |r| log_sum_exp(r.iter().copied()));
            out.slice_mut(s![..=end, end, ..]).assign(&logs);
            previous = Some(per_row);
        }
        Ok(out)
    })?;
    let mut out = Array3::from_elem((n + 1, n + 1, trace.batch()), f64::NAN);
    for (rows, part) in tiles {
        out.slice_mut(s![.., .., rows]).assign(&part);
    }
    Ok((out, point_log_norms(net, &trace)))
}

/// A small deterministic Gaussian generator (SplitMix64 + Box–Muller): probes depend only on the
/// seed and the order they are drawn in, never on threads.
struct Gaussian {
    state: u64,
    spare: Option<f64>,
}

impl Gaussian {
    fn new(seed: u64) -> Self {
        Gaussian {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            spare: None,
        }
    }
    fn next_u64(&mut self) -> u64 {
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
    fn sample(&mut self) -> f64 {
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

    #[test]
    fn mean_and_relative_variance_in_log_space() {
        let (m, r) = log_mean_rel_var(&[1f64.ln(), 3f64.ln()]);
        assert!((m - 2f64.ln()).abs() < 1e-15);
        assert!((r - 2.0 / 4.0).abs() < 1e-15);
    }
}
