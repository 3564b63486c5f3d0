//! Mean-field theory of deep random networks (SPEC §6): the length map, its fixed point `q*`,
//! `chi_1`, the correlation map and its fixed point `c*`, the depth scales of Schoenholz et al. 2017,
//! and the edge of chaos.
//!
//! # The model
//! Weights `W_ij ~ N(0, sigma_w2 / fan_in)`, biases `b_i ~ N(0, sigma_b2)`, an elementwise
//! nonlinearity `phi`. Pre-activations `h^l = W^l phi(h^{l-1}) + b^l` (for the first layer,
//! `h^1 = W^1 x + b^1`). In the wide limit they are Gaussian with variance `q^l`:
//!
//! * length map: `q^{l+1} = F(q^l) = sigma_w2 * E_z[phi(sqrt(q^l) z)^2] + sigma_b2`, `z ~ N(0, 1)`;
//! * first layer: `q^1 = sigma_w2 * q0 + sigma_b2` with `q0 = ||x||^2 / d_in`, the mean squared
//!   input per feature. This matches `gsc_core.mlp`, whose first `Dense` acts on the raw input, so the
//!   pre-activation std of the l-th `Activation` layer (1-based) is about `sqrt(q^l)`;
//! * `chi_1 = sigma_w2 * E[phi'(sqrt(q*) z)^2]` (per-layer growth of squared gradients; the GSC grows
//!   by about `sqrt(chi_1)` per layer);
//! * `chi_q = F'(q*) = sigma_w2 * E[phi'(u)^2 + phi(u) phi''(u)]`, `u = sqrt(q*) z`. The identity
//!   `d/dq E[phi(sqrt(q) z)^2] = E[phi'^2 + phi phi'']` (Stein's lemma) makes `chi_q` the slope of the
//!   length map at its fixed point. Every activation with a kink has `phi(0) = 0`, so the Dirac mass
//!   of `phi''` at the kink contributes `phi(0) * jump = 0` and the classical `phi''` is exact;
//! * correlation map at fixed `q*`: `c' = (sigma_w2 * E[phi(u1) phi(u2)] + sigma_b2) / q*` with
//!   `(u1, u2)` Gaussian, variances `q*`, correlation `c`; `chi_c = sigma_w2 * E[phi'(u1) phi'(u2)]`
//!   at `c*` (the slope of the correlation map there);
//! * depth scales `xi_q = -1/ln chi_q`, `xi_c = -1/ln chi_c`, `xi_grad = -1/ln chi_1`. A depth scale is
//!   `+inf` when its `chi` is exactly 1 (criticality), and negative when `chi > 1` (then the quantity
//!   grows by a factor `e` every `|xi|` layers instead of decaying).
//!
//! # Numerics
//! Gaussian expectations use closed forms where they exist (identity, relu, leaky_relu: the
//! arc-cosine kernels; sin) and otherwise globally adaptive Gauss–Kronrod quadrature (the 21-point
//! rule of QUADPACK `qk21` with its error heuristic) on the two half-lines `z < 0` and `z > 0`
//! separately, so the kink of relu-like activations, elu and selu (always at `u = 0`) is a panel end
//! and never inside a panel. The initial panels are refined geometrically towards the kink down to
//! the activation's own scale `1/sqrt(q)`, then 4 wide; the half-lines are truncated at `|z| = 13`
//! (two-dimensional integrals at 9), where the Gaussian density is below 1e-37 (1e-18).
//! Two-dimensional expectations are iterated one-dimensional integrals: `u1 = sqrt(q) z1`,
//! `u2 = sqrt(q) (c z1 + sqrt(1 - c^2) z2)`; for each `z1` the conditional expectation over `z2` is
//! split at the kink of `phi(u2)`, and the outer integral (split at `z1 = 0`) evaluates its nodes on
//! the rayon pool (the result does not depend on the thread count). Tolerances are 1e-13 relative in
//! one dimension and 1e-10 in two; against much tighter settings the measured errors are ~1e-15.
//! `tanh` is evaluated here from `expm1` (scalar calls of the engine's vectorised kernel are slower).
//!
//! # Degenerate fixed points
//! `q*` is the limit of the length map started from `q^1 = sigma_w2 * q0 + sigma_b2` (`F` is
//! nondecreasing for every supported activation, so the sequence is monotone). It is usually
//! independent of `q0`; it depends on `q0` only when the map has several attracting fixed points or
//! diverges from some starting points (e.g. relu with `sigma_w2 = 2`, `sigma_b2 = 0`, where every
//! `q` is fixed and `q* = q^1`; or gelu with `2 < sigma_w2 < 4`, `sigma_b2 = 0`).
//! * `q* = +inf` when the length map diverges (only activations with linear growth: e.g. relu with
//!   `sigma_w2 > 2`, or `sigma_w2 = 2` and `sigma_b2 > 0`). Quantities "at `q*`" are then the
//!   `q -> inf` limits: `phi` becomes its piecewise-linear asymptote (slopes `s+` for `u > 0` and `s-`
//!   for `u < 0`; e.g. relu for elu/gelu/silu/softplus, `lambda * relu` for selu), so
//!   `chi_1 = chi_q = sigma_w2 (s+^2 + s-^2) / 2`, and the normalised correlation map has `c* = 1`
//!   with slope `chi_c = 1` there (`xi_c = +inf`). When the slope of `F` at infinity is exactly 1
//!   (He init `sigma_w2 = 2` for elu/gelu/silu/softplus) divergence is decided from `F(q) - q`
//!   computed without cancellation (see `length_excess`).
//! * `q* = 0` (e.g. tanh or relu with `sigma_b2 = 0` and `chi_1 < 1`): quantities are the `q -> 0+`
//!   limits (one-sided derivatives at the kink, e.g. `chi_1 = sigma_w2 / 2` for relu). As `q -> 0`
//!   the normalised correlation map becomes that of the piecewise-linear `phi` near 0, whose slope at
//!   `c = 1` is 1: `c* = 1`, `chi_c = 1`, `xi_c = +inf` (correlations are not forgotten at an
//!   exponential rate).

use std::f64::consts::PI;

use rayon::prelude::*;

use crate::activation::{Activation, SELU_ALPHA, SELU_LAMBDA};
use crate::cancel::Stop;
use crate::error::{CoreError, Result};
use crate::invalid;

// ------------------------------------------------------------------ quadrature

/// One-dimensional expectations are truncated at |z| = Z_1D: the N(0, 1) density there is 2e-37.
const Z_1D: f64 = 13.0;
/// Two-dimensional expectations are truncated at |z1|, |z2| = Z_2D (density 8e-23).
const Z_2D: f64 = 9.0;
/// Relative tolerance of one-dimensional integrals.
const REL_1D: f64 = 1e-13;
/// Relative tolerances of the inner and the outer integral in two dimensions.
const REL_INNER: f64 = 1e-11;
const REL_OUTER: f64 = 1e-10;
/// Width of the initial panels away from the kink.
const STRIDE: f64 = 4.0;
/// Most panel splits one integral may make.
const MAX_SPLITS: usize = 2000;
/// A positive number small enough that `phi(+TINY)` gives the right-hand limit at 0.
const TINY: f64 = f64::MIN_POSITIVE;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Abscissae of the 21-point Kronrod rule on [-1, 1] (positive half, descending; QUADPACK `qk21`).
/// `XGK[1], XGK[3], ..., XGK[9]` are the nodes of the 10-point Gauss rule.
#[allow(clippy::excessive_precision)] // the published 33-digit values
const XGK: [f64; 11] = [
    0.995_657_163_025_808_080_735_527_280_689_003,
    0.973_906_528_517_171_720_077_964_012_084_452,
    0.930_157_491_355_708_226_001_207_180_059_508,
    0.865_063_366_688_984_510_732_096_688_423_493,
    0.780_817_726_586_416_897_063_717_578_345_042,
    0.679_409_568_299_024_406_234_327_365_114_874,
    0.562_757_134_668_604_683_339_000_099_272_694,
    0.433_395_394_129_247_190_799_265_943_165_784,
    0.294_392_862_701_460_198_131_126_603_103_866,
    0.148_874_338_981_631_210_884_826_001_129_720,
    0.0,
];
/// Weights of the 21-point Kronrod rule.
#[allow(clippy::excessive_precision)] // the published 33-digit values
const WGK: [f64; 11] = [
    0.011_694_638_867_371_874_278_064_396_062_192,
    0.032_558_162_307_964_727_478_818_972_459_390,
    0.054_755_896_574_351_996_031_381_300_244_580,
    0.075_039_674_810_919_952_767_043_140_916_190,
    0.093_125_454_583_697_605_535_065_465_083_366,
    0.109_387_158_802_297_641_899_210_590_325_805,
    0.123_491_976_262_065_851_077_958_109_831_074,
    0.134_709_217_311_473_325_928_054_001_771_707,
    0.142_775_938_577_060_080_797_094_273_138_717,
    0.147_739_104_901_338_491_374_841_515_972_068,
    0.149_445_554_002_916_905_664_936_468_389_821,
];
/// Weights of the 10-point Gauss rule (for `XGK[1], XGK[3], ..., XGK[9]`).
#[allow(clippy::excessive_precision)] // the published 33-digit values
const WG: [f64; 5] = [
    0.066_671_344_308_688_137_593_568_809_893_332,
    0.149_451_349_150_580_593_145_776_339_657_697,
    0.219_086_362_515_982_043_995_534_934_228_163,
    0.269_266_719_309_996_355_091_226_921_569_469,
    0.295_524_224_714_752_870_173_892_994_651_338,
];

/// One panel of the adaptive integrator: the 21-point Kronrod estimate, its error estimate (the
/// QUADPACK heuristic from the embedded 10-point Gauss rule) and the integral of `|f|`.
struct Panel {
    a: f64,
    b: f64,
    value: f64,
    err: f64,
    abs: f64,
}

/// The 21 Kronrod abscissae on `[a, b]`: the centre, then `centre -+ half * XGK[j]` for j = 0..10.
fn kronrod_nodes(a: f64, b: f64) -> [f64; 21] {
    let centre = 0.5 * (a + b);
    let half = 0.5 * (b - a);
    let mut x = [centre; 21];
    for j in 0..10 {
        x[1 + 2 * j] = centre - half * XGK[j];
        x[2 + 2 * j] = centre + half * XGK[j];
    }
    x
}

/// The panel from the integrand's values `fv` at [`kronrod_nodes`]`(a, b)`.
fn kronrod_panel(a: f64, b: f64, fv: &[f64]) -> Panel {
    let half = 0.5 * (b - a);
    let fc = fv[0];
    let mut res_k = WGK[10] * fc;
    let mut res_g = 0.0;
    let mut res_abs = res_k.abs();
    for j in 0..10 {
        let (f1, f2) = (fv[1 + 2 * j], fv[2 + 2 * j]);
        res_k += WGK[j] * (f1 + f2);
        res_abs += WGK[j] * (f1.abs() + f2.abs());
        if j % 2 == 1 {
            res_g += WG[j / 2] * (f1 + f2);
        }
    }
    let mean = 0.5 * res_k;
    let mut res_asc = WGK[10] * (fc - mean).abs();
    for j in 0..10 {
        res_asc += WGK[j] * ((fv[1 + 2 * j] - mean).abs() + (fv[2 + 2 * j] - mean).abs());
    }
    let h = half.abs();
    let (res_abs, res_asc) = (res_abs * h, res_asc * h);
    let mut err = ((res_k - res_g) * half).abs();
    if res_asc != 0.0 && err != 0.0 {
        err = res_asc * (200.0 * err / res_asc).powf(1.5).min(1.0);
    }
    if res_abs > f64::MIN_POSITIVE / (50.0 * f64::EPSILON) {
        err = err.max(50.0 * f64::EPSILON * res_abs);
    }
    Panel {
        a,
        b,
        value: res_k * half,
        err,
        abs: res_abs,
    }
}

#[cfg(test)]
fn gauss_kronrod<F: Fn(f64) -> f64>(f: &F, a: f64, b: f64) -> Panel {
    let fv = kronrod_nodes(a, b).map(f);
    kronrod_panel(a, b, &fv)
}

/// Globally adaptive Gauss–Kronrod integral over `[points[0], points[last]]`, the points being
/// initial panel ends (put kinks there). Bisects the panel with the largest error estimate until
/// the summed estimate is below `rel` times the integral of `|f|` or below `atol`. Non-finite values
/// propagate.
/// `eval(xs, out)` writes the integrand at the abscissae `xs` into `out` (serially or in parallel).
fn integrate_by<E: Fn(&[f64], &mut [f64])>(eval: &E, points: &[f64], rel: f64, atol: f64) -> f64 {
    let ends: Vec<(f64, f64)> = points
        .windows(2)
        .filter(|p| p[1] > p[0])
        .map(|p| (p[0], p[1]))
        .collect();
    let xs: Vec<f64> = ends
        .iter()
        .flat_map(|&(a, b)| kronrod_nodes(a, b))
        .collect();
    let mut fv = vec![0.0; xs.len()];
    eval(&xs, &mut fv);
    let mut panels: Vec<Panel> = ends
        .iter()
        .zip(fv.chunks(21))
        .map(|(&(a, b), v)| kronrod_panel(a, b, v))
        .collect();
    let mut xs = [0.0; 42];
    let mut fv = [0.0; 42];
    for _ in 0..MAX_SPLITS {
        let (mut err, mut abs) = (0.0, 0.0);
        let mut worst = 0;
        for (k, p) in panels.iter().enumerate() {
            err += p.err;
            abs += p.abs;
            if p.err > panels[worst].err {
                worst = k;
            }
        }
        if !(err.is_finite() && abs.is_finite()) || err <= rel * abs || err <= atol.max(1e-300) {
            break;
        }
        let p = panels.swap_remove(worst);
        let m = 0.5 * (p.a + p.b);
        if !(m > p.a && m < p.b) {
            panels.push(Panel { err: 0.0, ..p });
            continue;
        }
        xs[..21].copy_from_slice(&kronrod_nodes(p.a, m));
        xs[21..].copy_from_slice(&kronrod_nodes(m, p.b));
        eval(&xs, &mut fv);
        panels.push(kronrod_panel(p.a, m, &fv[..21]));
        panels.push(kronrod_panel(m, p.b, &fv[21..]));
    }
    panels.sort_by(|p, q| p.a.total_cmp(&q.a));
    panels.iter().map(|p| p.value).sum()
}

/// [`integrate_by`] evaluating `f` serially.
fn integrate<F: Fn(f64) -> f64>(f: &F, points: &[f64], rel: f64) -> f64 {
    integrate_by(
        &|xs: &[f64], out: &mut [f64]| {
            for (o, &x) in out.iter_mut().zip(xs) {
                *o = f(x);
            }
        },
        points,
        rel,
        0.0,
    )
}

/// [`integrate_by`] evaluating `f` on the rayon pool (for expensive integrands; the result does not
/// depend on the number of threads).
fn integrate_parallel<F: Fn(f64) -> f64 + Sync>(f: &F, points: &[f64], rel: f64, atol: f64) -> f64 {
    integrate_by(
        &|xs: &[f64], out: &mut [f64]| {
            out.par_iter_mut()
                .zip(xs.par_iter())
                .for_each(|(o, &x)| *o = f(x));
        },
        points,
        rel,
        atol,
    )
}

/// Initial panel ends on `[lo, hi]` for an integrand with a kink (or its sharpest feature) at `lo`:
/// `lo + 2^-k` refined geometrically towards `lo` down to about `scale / 2`, then every `STRIDE`.
fn breakpoints(lo: f64, hi: f64, scale: f64) -> Vec<f64> {
    let mut pts = vec![lo];
    if hi > lo {
        let levels = ((1.0 / scale).log2().ceil()).clamp(0.0, 1100.0) as i32;
        for k in (0..=levels).rev() {
            let p = lo + 2f64.powi(-k);
            if p > lo && p < hi {
                pts.push(p);
            }
        }
        let mut p = lo + 1.0 + STRIDE;
        while p < hi {
            pts.push(p);
            p += STRIDE;
        }
        pts.push(hi);
    }
    pts
}

#[inline]
fn std_normal_pdf(z: f64) -> f64 {
    INV_SQRT_2PI * (-0.5 * z * z).exp()
}

/// `E[g(sqrt(q) z)]`, `z ~ N(0, 1)`, by quadrature on each half-line (split at the kink `z = 0`).
/// At `q = 0` this is the `q -> 0+` limit `(g(0+) + g(0-)) / 2`.
pub fn gaussian_expectation<G: Fn(f64) -> f64>(g: &G, q: f64) -> f64 {
    if q == 0.0 {
        return 0.5 * (g(TINY) + g(-TINY));
    }
    let r = q.sqrt();
    let pts = breakpoints(0.0, Z_1D, (1.0 / r).min(1.0));
    let pos = integrate(&|z: f64| g(r * z) * std_normal_pdf(z), &pts, REL_1D);
    let neg = integrate(&|z: f64| g(-r * z) * std_normal_pdf(z), &pts, REL_1D);
    pos + neg
}

/// `E[ga(u1) gb(u2)]` for `(u1, u2)` Gaussian with variances `q` and correlation `c`, by iterated
/// quadrature: `u1 = sqrt(q) z1`, `u2 = sqrt(q) (c z1 + s z2)`, `s = sqrt(1 - c^2)`. The outer
/// integral is split at `z1 = 0` (the kink of `ga`), the inner one at `z2 = -c z1 / s` (the kink of
/// `gb`). At `q = 0` this is the `q -> 0+` limit, from the orthant probabilities.
pub fn bivariate_gaussian_expectation<A, B>(ga: &A, gb: &B, q: f64, c: f64) -> f64
where
    A: Fn(f64) -> f64 + Sync,
    B: Fn(f64) -> f64 + Sync,
{
    if c >= 1.0 {
        return gaussian_expectation(&|u: f64| ga(u) * gb(u), q);
    }
    if c <= -1.0 {
        return gaussian_expectation(&|u: f64| ga(u) * gb(-u), q);
    }
    if q == 0.0 {
        let same = 0.25 + c.asin() / (2.0 * PI);
        let diff = 0.5 - same;
        return same * (ga(TINY) * gb(TINY) + ga(-TINY) * gb(-TINY))
            + diff * (ga(TINY) * gb(-TINY) + ga(-TINY) * gb(TINY));
    }
    let r = q.sqrt();
    let s = ((1.0 - c) * (1.0 + c)).sqrt();
    let rs = r * s;
    let inner_scale = (1.0 / rs).min(1.0);
    // E_{z2}[gb(u2)] given z1; with t = z2 - zs, u2 = r s t and the kink is at t = 0.
    let inner = |z1: f64| -> f64 {
        let zs = -c * z1 / s;
        let mut total = 0.0;
        let hi = Z_2D - zs;
        if hi > 0.0 {
            let lo = (-Z_2D - zs).max(0.0);
            let pts = breakpoints(lo, hi, inner_scale);
            total += integrate(
                &|t: f64| gb(rs * t) * std_normal_pdf(t + zs),
                &pts,
                REL_INNER,
            );
        }
        let hi = Z_2D + zs;
        if hi > 0.0 {
            let lo = (zs - Z_2D).max(0.0);
            let pts = breakpoints(lo, hi, inner_scale);
            total += integrate(
                &|v: f64| gb(-rs * v) * std_normal_pdf(zs - v),
                &pts,
                REL_INNER,
            );
        }
        total
    };
    let outer = |z1: f64| -> f64 {
        let a = ga(r * z1);
        if a == 0.0 {
            0.0
        } else {
            a * inner(z1) * std_normal_pdf(z1)
        }
    };
    let pts = breakpoints(0.0, Z_2D, (1.0 / r).min(1.0).min(s));
    // The inner integrals are accurate relative to their own scale, not to a cancelling result
    // (e.g. c ~ 0 with E[phi] = 0): an absolute tolerance at the Cauchy-Schwarz scale of the result,
    // sqrt(E[ga^2] E[gb^2]), keeps the outer refinement from chasing that noise.
    let scale = (gaussian_expectation(&|u: f64| ga(u) * ga(u), q)
        * gaussian_expectation(&|u: f64| gb(u) * gb(u), q))
    .sqrt();
    let atol = 0.5 * REL_OUTER * scale;
    let pos = integrate_parallel(&outer, &pts, REL_OUTER, atol);
    let neg = integrate_parallel(&|z: f64| outer(-z), &pts, REL_OUTER, atol);
    pos + neg
}

// ------------------------------------------------------------------ activations

/// `phi(u)`: [`Activation::apply`], except tanh, computed here from one `expm1` (scalar calls of
/// the engine's vectorised tanh are slower; both are within a few ulp).
#[inline]
fn phi(act: &Activation, u: f64) -> f64 {
    match act {
        Activation::Tanh => {
            let m = (-2.0 * u.abs()).exp_m1();
            (-m / (2.0 + m)).copysign(u)
        }
        _ => act.apply(u),
    }
}

/// `phi'(u)`: [`Activation::derivative`] (left-hand at a kink), except tanh:
/// `sech^2 u = 4 e / (1 + e)^2`, `e = exp(-2|u|)`.
#[inline]
fn dphi(act: &Activation, u: f64) -> f64 {
    match act {
        Activation::Tanh => {
            let e = (-2.0 * u.abs()).exp();
            4.0 * e / ((1.0 + e) * (1.0 + e))
        }
        _ => act.derivative(u),
    }
}

/// `phi''(z)` (the classical second derivative; 0 on the linear pieces of relu-like activations).
pub fn second_derivative(act: &Activation, z: f64) -> f64 {
    match *act {
        Activation::Identity | Activation::Relu | Activation::LeakyRelu { .. } => 0.0,
        Activation::Elu { alpha } => {
            if z > 0.0 {
                0.0
            } else {
                alpha * z.exp()
            }
        }
        Activation::Selu => {
            if z > 0.0 {
                0.0
            } else {
                SELU_LAMBDA * SELU_ALPHA * z.exp()
            }
        }
        // d/dz [Phi(z) + z pdf(z)] = pdf(z) (2 - z^2)
        Activation::Gelu => std_normal_pdf(z) * (2.0 - z * z),
        // sigma' = p = sigma(z) sigma(-z), sigma'' = p (1 - 2 sigma) = -p tanh(z/2);
        // silu'' = 2 p + z sigma'' = p (2 - z tanh(z/2)).
        Activation::Silu => {
            let p: f64 = Activation::Sigmoid.derivative(z);
            p * (2.0 - z * (0.5 * z).tanh())
        }
        // -2 tanh(z) sech^2(z)
        Activation::Tanh => -2.0 * phi(act, z) * dphi(act, z),
        Activation::Sigmoid => {
            let p: f64 = Activation::Sigmoid.derivative(z);
            -p * (0.5 * z).tanh()
        }
        Activation::Softplus => Activation::Sigmoid.derivative(z),
        Activation::Sin => -z.sin(),
    }
}

/// The slopes `(s+, s-)` of a piecewise-linear, positively homogeneous `phi`
/// (`phi(u) = s+ u` for `u > 0`, `s- u` for `u < 0`): identity, relu, leaky_relu.
fn piecewise_linear(act: &Activation) -> Option<(f64, f64)> {
    match *act {
        Activation::Identity => Some((1.0, 1.0)),
        Activation::Relu => Some((1.0, 0.0)),
        Activation::LeakyRelu { negative_slope } => Some((1.0, negative_slope)),
        _ => None,
    }
}

/// The slopes `(s+, s-)` of `phi`'s piecewise-linear asymptote, `lim_{s->inf} phi(s u) / s`, for the
/// activations that grow linearly (the only ones whose length map can diverge); `None` for bounded ones.
fn asymptote(act: &Activation) -> Option<(f64, f64)> {
    match *act {
        Activation::Identity | Activation::Relu | Activation::LeakyRelu { .. } => {
            piecewise_linear(act)
        }
        Activation::Elu { .. } | Activation::Gelu | Activation::Silu | Activation::Softplus => {
            Some((1.0, 0.0))
        }
        Activation::Selu => Some((SELU_LAMBDA, 0.0)),
        Activation::Tanh | Activation::Sigmoid | Activation::Sin => None,
    }
}

/// The arc-cosine kernels of a two-slope piecewise-linear `phi` with unit variances:
/// `(E[phi(u1) phi(u2)], E[phi'(u1) phi'(u2)])` at correlation `c`.
fn two_slope_kernels(sp: f64, sm: f64, c: f64) -> (f64, f64) {
    let c = c.clamp(-1.0, 1.0);
    let d2 = (sp - sm) * (sp - sm);
    let angle = PI - c.acos(); // in [0, pi]
    let relu_k = (((1.0 - c) * (1.0 + c)).sqrt() + angle * c) / (2.0 * PI);
    (sp * sm * c + d2 * relu_k, sp * sm + d2 * angle / (2.0 * PI))
}

// ------------------------------------------------------------------ Gaussian expectations

/// A one-dimensional Gaussian expectation at `u = sqrt(q) z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// `E[phi(u)^2]`
    Phi2,
    /// `E[phi'(u)^2]`
    Dphi2,
    /// `E[phi'(u)^2 + phi(u) phi''(u)]` (= d/dq of `E[phi(u)^2]`)
    Dphi2PhiD2phi,
}

/// A two-dimensional Gaussian expectation at `(u1, u2)`, variances `q`, correlation `c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment2 {
    /// `E[phi(u1) phi(u2)]`
    PhiPhi,
    /// `E[phi'(u1) phi'(u2)]`
    DphiDphi,
}

fn check_q(q: f64) -> Result<()> {
    if !(q.is_finite() && q >= 0.0) {
        return invalid!("the variance q must be finite and non-negative, got {q}");
    }
    Ok(())
}

/// The 1-D expectation by quadrature only (no closed forms): for testing and for the activations
/// without a closed form.
pub fn moment_numeric(act: &Activation, m: Moment, q: f64) -> f64 {
    match m {
        Moment::Phi2 => gaussian_expectation(
            &|u: f64| {
                let p = phi(act, u);
                p * p
            },
            q,
        ),
        Moment::Dphi2 => gaussian_expectation(
            &|u: f64| {
                let d = dphi(act, u);
                d * d
            },
            q,
        ),
        Moment::Dphi2PhiD2phi => gaussian_expectation(
            &|u: f64| {
                let p = phi(act, u);
                let d = dphi(act, u);
                d * d + p * second_derivative(act, u)
            },
            q,
        ),
    }
}

/// The 2-D expectation by quadrature only (no closed forms).
pub fn moment2_numeric(act: &Activation, m: Moment2, q: f64, c: f64) -> f64 {
    match m {
        Moment2::PhiPhi => {
            let f = |u: f64| phi(act, u);
            bivariate_gaussian_expectation(&f, &f, q, c)
        }
        Moment2::DphiDphi => {
            let f = |u: f64| dphi(act, u);
            bivariate_gaussian_expectation(&f, &f, q, c)
        }
    }
}

fn moment_unchecked(act: &Activation, m: Moment, q: f64) -> f64 {
    if let Some((sp, sm)) = piecewise_linear(act) {
        let k = 0.5 * (sp * sp + sm * sm);
        return match m {
            Moment::Phi2 => k * q,
            Moment::Dphi2 | Moment::Dphi2PhiD2phi => k,
        };
    }
    if let Activation::Sin = act {
        // E[sin^2 u] = (1 - e^{-2q}) / 2, E[cos^2 u] = (1 + e^{-2q}) / 2, E[cos 2u] = e^{-2q}
        let e = (-2.0 * q).exp();
        return match m {
            Moment::Phi2 => -0.5 * (-2.0 * q).exp_m1(),
            Moment::Dphi2 => 0.5 * (1.0 + e),
            Moment::Dphi2PhiD2phi => e,
        };
    }
    moment_numeric(act, m, q)
}

fn moment2_unchecked(act: &Activation, m: Moment2, q: f64, c: f64) -> f64 {
    if let Some((sp, sm)) = piecewise_linear(act) {
        let (k, dk) = two_slope_kernels(sp, sm, c);
        return match m {
            Moment2::PhiPhi => q * k,
            Moment2::DphiDphi => dk,
        };
    }
    if let Activation::Sin = act {
        // E[sin u1 sin u2] = (e^{-q(1-c)} - e^{-q(1+c)}) / 2, E[cos u1 cos u2] = (... + ...) / 2
        let (a, b) = ((-q * (1.0 - c)).exp(), (-q * (1.0 + c)).exp());
        return match m {
            Moment2::PhiPhi => 0.5 * (a - b),
            Moment2::DphiDphi => 0.5 * (a + b),
        };
    }
    moment2_numeric(act, m, q, c)
}

/// `E[...]` at `u = sqrt(q) z`, `z ~ N(0, 1)` (closed forms where they exist, else quadrature);
/// `q = 0` gives the `q -> 0+` limit.
pub fn moment(act: &Activation, m: Moment, q: f64) -> Result<f64> {
    check_q(q)?;
    finite(moment_unchecked(act, m, q), "a Gaussian expectation")
}

/// `E[...]` at `(u1, u2)` Gaussian with variances `q` and correlation `c` in [-1, 1].
pub fn moment2(act: &Activation, m: Moment2, q: f64, c: f64) -> Result<f64> {
    check_q(q)?;
    if !(c.is_finite() && (-1.0..=1.0).contains(&c)) {
        return invalid!("the correlation c must be in [-1, 1], got {c}");
    }
    finite(moment2_unchecked(act, m, q, c), "a Gaussian expectation")
}

fn finite(x: f64, what: &str) -> Result<f64> {
    if x.is_nan() {
        Err(CoreError::Internal(format!("{what} evaluated to NaN")))
    } else {
        Ok(x)
    }
}

// ------------------------------------------------------------------ root finding

/// Brent's zeroin (Brent 1973, netlib `zeroin`): a root of `f` in `[a, b]` given `f(a)`, `f(b)` of
/// opposite signs (or one of them zero), to `2 eps |x| + tol / 2`.
fn brent<F: FnMut(f64) -> f64>(
    mut f: F,
    mut a: f64,
    mut b: f64,
    mut fa: f64,
    mut fb: f64,
    tol: f64,
) -> f64 {
    if fa == 0.0 {
        return a;
    }
    if fb == 0.0 {
        return b;
    }
    let mut c = a;
    let mut fc = fa;
    let mut d = b - a;
    let mut e = d;
    let mut reset = false;
    for _ in 0..300 {
        if reset {
            c = a;
            fc = fa;
            d = b - a;
            e = d;
        }
        if fc.abs() < fb.abs() {
            a = b;
            b = c;
            c = a;
            fa = fb;
            fb = fc;
            fc = fa;
        }
        let tol1 = 2.0 * f64::EPSILON * b.abs() + 0.5 * tol;
        let xm = 0.5 * (c - b);
        if xm.abs() <= tol1 || fb == 0.0 {
            return b;
        }
        let mut bisect = true;
        if e.abs() >= tol1 && fa.abs() > fb.abs() {
            let s = fb / fa;
            let (mut p, mut q);
            if a == c {
                p = 2.0 * xm * s;
                q = 1.0 - s;
            } else {
                let qq = fa / fc;
                let r = fb / fc;
                p = s * (2.0 * xm * qq * (qq - r) - (b - a) * (r - 1.0));
                q = (qq - 1.0) * (r - 1.0) * (s - 1.0);
            }
            if p > 0.0 {
                q = -q;
            }
            p = p.abs();
            if 2.0 * p < 3.0 * xm * q - (tol1 * q).abs() && p < (0.5 * e * q).abs() {
                e = d;
                d = p / q;
                bisect = false;
            }
        }
        if bisect {
            d = xm;
            e = d;
        }
        a = b;
        fa = fb;
        b += if d.abs() > tol1 { d } else { tol1.copysign(xm) };
        fb = f(b);
        reset = (fb > 0.0) == (fc > 0.0);
        if fb.is_nan() {
            return f64::NAN;
        }
    }
    b
}

// ------------------------------------------------------------------ validation

fn check_variance(x: f64, name: &str) -> Result<()> {
    if !x.is_finite() {
        return invalid!("{name} must be finite, got {x}");
    }
    if x < 0.0 {
        return invalid!("{name} must be non-negative (it is a variance), got {x}");
    }
    Ok(())
}

fn check_all(sigma_w2: f64, sigma_b2: f64, q0: f64) -> Result<()> {
    check_variance(sigma_w2, "sigma_w2")?;
    check_variance(sigma_b2, "sigma_b2")?;
    check_variance(q0, "q0 (the mean squared input per feature)")?;
    if !(sigma_w2 * q0 + sigma_b2).is_finite() {
        return invalid!("sigma_w2 * q0 + sigma_b2 overflows");
    }
    Ok(())
}

// ------------------------------------------------------------------ the length map

/// One step of the length map, `F(q) = sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2` (`F(inf) = inf`).
pub fn length_step(act: &Activation, sigma_w2: f64, sigma_b2: f64, q: f64) -> f64 {
    if q == f64::INFINITY {
        return f64::INFINITY;
    }
    sigma_w2 * moment_unchecked(act, Moment::Phi2, q) + sigma_b2
}

/// The variances `q^1, ..., q^layers` of the pre-activations of the first `layers` layers:
/// `out[0] = q^1 = sigma_w2 * q0 + sigma_b2` (the first Dense acts on the input, whose mean squared
/// value per feature is `q0 = ||x||^2 / d_in`), `out[l] = F(out[l - 1])`. So `sqrt(out[l - 1])` is the
/// predicted pre-activation std of the l-th activation layer of an MLP. A diverging map gives `inf`.
pub fn length_map(
    act: &Activation,
    sigma_w2: f64,
    sigma_b2: f64,
    q0: f64,
    layers: usize,
    stop: &Stop,
) -> Result<Vec<f64>> {
    check_all(sigma_w2, sigma_b2, q0)?;
    crate::memory::ensure_fits(
        crate::memory::product(&[layers, std::mem::size_of::<f64>()]),
        &format!("the length map over {layers} layers"),
        "ask for fewer layers",
    )?;
    let mut out = Vec::with_capacity(layers.min(1 << 24));
    let mut q = sigma_w2 * q0 + sigma_b2;
    while out.len() < layers {
        if out.len() % 1024 == 0 {
            stop.check()?;
        }
        out.push(q);
        let next = finite(length_step(act, sigma_w2, sigma_b2, q), "the length map")?;
        if next == q {
            // Converged exactly (or stuck at 0 or inf): the rest of the sequence is constant.
            out.resize(layers, q);
            break;
        }
        q = next;
    }
    Ok(out)
}

/// `phi(u)^2 - phi_inf(u)^2` without cancellation, `phi_inf` the piecewise-linear asymptote of the
/// linearly growing activations that are not piecewise linear themselves. For gelu, silu and
/// softplus, `phi(u) - phi_inf(u) = phi(-|u|)`; elu and selu equal their asymptote for `u > 0`.
fn excess_over_asymptote(act: &Activation, u: f64) -> f64 {
    match act {
        Activation::Elu { .. } | Activation::Selu => {
            if u > 0.0 {
                0.0
            } else {
                let p = phi(act, u);
                p * p
            }
        }
        _ => {
            let d = phi(act, -u.abs());
            let asymptote = if u > 0.0 { u } else { 0.0 };
            d * (d + 2.0 * asymptote)
        }
    }
}

/// `F(q) - q`. For elu, selu, gelu, silu and softplus it is computed as
/// `(r - 1) q + sigma_w2 E[phi^2 - phi_inf^2] + sigma_b2` (`r` the slope of `F` at infinity), which
/// stays accurate at large `q` (where `F(q) - q` would be all rounding) and so decides correctly
/// whether the map diverges when `r` is (close to) 1, e.g. He init `sigma_w2 = 2`.
fn length_excess(act: &Activation, sigma_w2: f64, sigma_b2: f64, q: f64) -> f64 {
    match act {
        Activation::Elu { .. }
        | Activation::Selu
        | Activation::Gelu
        | Activation::Silu
        | Activation::Softplus => {
            let (sp, sm) = asymptote(act).expect("these activations grow linearly");
            let r = sigma_w2 * 0.5 * (sp * sp + sm * sm);
            let excess = gaussian_expectation(&|u: f64| excess_over_asymptote(act, u), q);
            (r - 1.0) * q + (sigma_w2 * excess + sigma_b2)
        }
        _ => length_step(act, sigma_w2, sigma_b2, q) - q,
    }
}

/// Largest finite `q` the fixed-point search tries before it declares the length map divergent.
const Q_DIVERGES: f64 = 1e200;
/// Below this, a decreasing length map is taken to converge to 0.
const Q_VANISHES: f64 = 1e-300;

/// The fixed point `q*` of the length map reached from `q^1 = sigma_w2 * q0 + sigma_b2`, or `+inf`
/// when the map diverges (see the module docs for the degenerate cases).
pub fn fixed_point(act: &Activation, sigma_w2: f64, sigma_b2: f64, q0: f64) -> Result<f64> {
    check_all(sigma_w2, sigma_b2, q0)?;
    let start = sigma_w2 * q0 + sigma_b2;
    if let Some((sp, sm)) = piecewise_linear(act) {
        // F(q) = r q + sigma_b2
        let r = sigma_w2 * 0.5 * (sp * sp + sm * sm);
        return Ok(if r < 1.0 {
            sigma_b2 / (1.0 - r)
        } else if sigma_b2 == 0.0 && (r == 1.0 || start == 0.0) {
            start
        } else {
            f64::INFINITY
        });
    }
    let g = |q: f64| length_excess(act, sigma_w2, sigma_b2, q);
    let g_start = g(start);
    if g_start.is_nan() {
        return Err(CoreError::Internal(
            "the length map evaluated to NaN".into(),
        ));
    }
    if g_start == 0.0 {
        return Ok(start);
    }
    let (lo, hi, g_lo, g_hi);
    if g_start > 0.0 {
        // The sequence increases to the smallest fixed point above `start`.
        // Slope of F at infinity (> 1: the map eventually outgrows q).
        let slope_inf = asymptote(act).map(|(sp, sm)| sigma_w2 * 0.5 * (sp * sp + sm * sm));
        let (mut l, mut gl) = (start, g_start);
        loop {
            if let Some(r) = slope_inf {
                // Far out, F(q)/q has settled near its limit r > 1: no fixed point beyond.
                let ratio = (gl + l) / l;
                if r > 1.0 && l > 1e6 && (ratio - r).abs() < 0.25 * (r - 1.0) {
                    return Ok(f64::INFINITY);
                }
                // r = 1: F(q) - q tends monotonically to sigma_w2 lim E[phi^2 - phi_inf^2] + sigma_b2
                // (elu, selu: from below; gelu, silu: from below to sigma_b2; softplus: from
                // above); positive this far out, it stays positive.
                if r >= 1.0 && l > 1e12 {
                    return Ok(f64::INFINITY);
                }
            }
            let cand = (4.0 * l).max(l + gl);
            if cand > Q_DIVERGES {
                if slope_inf.is_none() {
                    // A bounded activation (tanh, sigmoid, sin: phi^2 <= 1) cannot diverge:
                    // F(q) <= sigma_w2 + sigma_b2, so the fixed point lies below that bound.
                    let bound = sigma_w2 + sigma_b2;
                    let gb = g(bound);
                    if bound.is_finite() && bound > l && gb <= 0.0 {
                        (lo, hi, g_lo, g_hi) = (l, bound, gl, gb);
                        break;
                    }
                    return invalid!(
                        "the length map of {} leaves float64's range: sigma_w2 = {sigma_w2:e}, sigma_b2 = {sigma_b2:e} \
                         are too large to compute its fixed point",
                        act.name()
                    );
                }
                return Ok(f64::INFINITY);
            }
            let gc = g(cand);
            if gc <= 0.0 {
                (lo, hi, g_lo, g_hi) = (l, cand, gl, gc);
                break;
            }
            (l, gl) = (cand, gc);
        }
    } else {
        // The sequence decreases to the largest fixed point below `start`.
        let g_zero = g(0.0); // = sigma_w2 phi(0)^2 + sigma_b2 >= 0
        let zero_fixed = g_zero <= 0.0;
        let slope0 = sigma_w2 * moment_unchecked(act, Moment::Dphi2, 0.0);
        let (mut h, mut gh) = (start, g_start);
        loop {
            if zero_fixed && slope0 <= 1.0 {
                // In the linear regime near 0, F(q)/q ~ slope0 <= 1 (and F(h) < h): no fixed point
                // below h. (At slope0 = 1 exactly the decay is only algebraic; its tail is below
                // what rounding can resolve.)
                let ratio = (gh + h) / h;
                if (ratio - slope0).abs() < (1e-3 * (1.0 - slope0)).max(1e-9) {
                    return Ok(0.0);
                }
            }
            let cand = (0.5 * h).min(h + gh);
            if cand < Q_VANISHES {
                if zero_fixed {
                    return Ok(0.0);
                }
                (lo, hi, g_lo, g_hi) = (0.0, h, g_zero, gh);
                break;
            }
            let gc = g(cand);
            if gc >= 0.0 {
                (lo, hi, g_lo, g_hi) = (cand, h, gc, gh);
                break;
            }
            (h, gh) = (cand, gc);
        }
    }
    let root = brent(g, lo, hi, g_lo, g_hi, 1e-300);
    finite(root, "the fixed point q*")
}

/// `chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]` at the fixed point (the `q -> 0+` or `q -> inf` limit
/// when `q*` is 0 or infinite).
pub fn chi1(act: &Activation, sigma_w2: f64, sigma_b2: f64, q0: f64) -> Result<f64> {
    check_all(sigma_w2, sigma_b2, q0)?;
    if let Some((sp, sm)) = piecewise_linear(act) {
        return Ok(sigma_w2 * 0.5 * (sp * sp + sm * sm));
    }
    let q = fixed_point(act, sigma_w2, sigma_b2, q0)?;
    chi1_at(act, sigma_w2, q)
}

fn chi1_at(act: &Activation, sigma_w2: f64, q: f64) -> Result<f64> {
    if q == f64::INFINITY {
        let Some((sp, sm)) = asymptote(act) else {
            return Err(CoreError::Internal(format!(
                "q* = inf for {}, which grows at most linearly only with an asymptote",
                act.name()
            )));
        };
        return Ok(sigma_w2 * 0.5 * (sp * sp + sm * sm));
    }
    finite(sigma_w2 * moment_unchecked(act, Moment::Dphi2, q), "chi_1")
}

/// `-1 / ln(chi)`, `+inf` at `chi = 1`.
pub fn depth_scale(chi: f64) -> f64 {
    let l = chi.ln();
    if l == 0.0 {
        f64::INFINITY
    } else {
        -1.0 / l
    }
}

/// The correlation map at variance `q > 0`: `c' = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q`.
pub fn correlation_map(
    act: &Activation,
    sigma_w2: f64,
    sigma_b2: f64,
    q: f64,
    c: f64,
) -> Result<f64> {
    check_variance(sigma_w2, "sigma_w2")?;
    check_variance(sigma_b2, "sigma_b2")?;
    if !(q.is_finite() && q > 0.0) {
        return invalid!("the correlation map needs a finite positive variance q, got {q}");
    }
    let k = moment2(act, Moment2::PhiPhi, q, c)?;
    Ok((sigma_w2 * k + sigma_b2) / q)
}

/// Everything mean-field theory says about one (activation, sigma_w2, sigma_b2, q0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanField {
    /// The fixed point of the length map (0 or `inf` in degenerate cases).
    pub q_star: f64,
    /// `sigma_w2 E[phi'(u)^2]` at `q*`.
    pub chi_1: f64,
    /// `F'(q*) = sigma_w2 E[phi'(u)^2 + phi(u) phi''(u)]`.
    pub chi_q: f64,
    /// The stable fixed point of the correlation map: 1 when `chi_1 <= 1` (ordered phase), else in [0, 1).
    pub c_star: f64,
    /// The slope of the correlation map at `c*`, `sigma_w2 E[phi'(u1) phi'(u2)]`.
    pub chi_c: f64,
    /// `-1 / ln chi_q`
    pub xi_q: f64,
    /// `-1 / ln chi_c`
    pub xi_c: f64,
    /// `-1 / ln chi_1`
    pub xi_grad: f64,
}

/// `q*`, `chi_1`, `chi_q`, `c*`, `chi_c` and the three depth scales (Schoenholz et al. 2017).
pub fn mean_field(act: &Activation, sigma_w2: f64, sigma_b2: f64, q0: f64) -> Result<MeanField> {
    check_all(sigma_w2, sigma_b2, q0)?;
    let q = fixed_point(act, sigma_w2, sigma_b2, q0)?;
    let chi_1 = chi1_at(act, sigma_w2, q)?;
    let (chi_q, c_star, chi_c);
    if q == f64::INFINITY || q == 0.0 {
        // Degenerate fixed point: see the module docs.
        chi_q = if q == 0.0 {
            finite(
                sigma_w2 * moment_unchecked(act, Moment::Dphi2PhiD2phi, 0.0),
                "chi_q",
            )?
        } else {
            chi_1
        };
        c_star = 1.0;
        chi_c = 1.0;
    } else {
        chi_q = finite(
            sigma_w2 * moment_unchecked(act, Moment::Dphi2PhiD2phi, q),
            "chi_q",
        )?;
        if chi_1 <= 1.0 {
            c_star = 1.0;
            chi_c = chi_1;
        } else {
            (c_star, chi_c) = chaotic_correlation(act, sigma_w2, sigma_b2, q)?;
        }
    }
    Ok(MeanField {
        q_star: q,
        chi_1,
        chi_q,
        c_star,
        chi_c,
        xi_q: depth_scale(chi_q),
        xi_c: depth_scale(chi_c),
        xi_grad: depth_scale(chi_1),
    })
}

/// `(c*, chi_c)` in the chaotic phase (`chi_1 > 1`) at a finite positive `q*`. The correlation map
/// `f` is a power series in `c` with non-negative coefficients (the squared Hermite coefficients of
/// `phi`), so on [0, 1] it is increasing and convex with `f(0) >= 0`, `f(1) = 1`, `f'(1) = chi_1 > 1`:
/// `g(c) = f(c) - c` has exactly one root in [0, 1), which Newton's method from `c = 0` approaches
/// monotonically from below. A bisection bracket guards every step.
fn chaotic_correlation(
    act: &Activation,
    sigma_w2: f64,
    sigma_b2: f64,
    q: f64,
) -> Result<(f64, f64)> {
    let g = |c: f64| (sigma_w2 * moment2_unchecked(act, Moment2::PhiPhi, q, c) + sigma_b2) / q - c;
    let df = |c: f64| sigma_w2 * moment2_unchecked(act, Moment2::DphiDphi, q, c);
    let nan = || CoreError::Internal("the correlation map evaluated to NaN".into());
    // Invariant: g(lo) > 0, and g < 0 on [hi, 1) (hi = 1 at first).
    let (mut lo, mut g_lo) = (0.0f64, g(0.0));
    let mut hi = 1.0f64;
    if g_lo.is_nan() {
        return Err(nan());
    }
    let mut c = lo;
    if g_lo > 0.0 {
        for _ in 0..200 {
            let slope = df(lo) - 1.0;
            let newton = lo - g_lo / slope;
            let (next, is_newton) = if slope < 0.0 && newton > lo && newton < hi {
                (newton, true)
            } else {
                (0.5 * (lo + hi), false)
            };
            let g_next = g(next);
            if g_next.is_nan() {
                return Err(nan());
            }
            if g_next > 0.0 {
                let step = next - lo;
                (lo, g_lo, c) = (next, g_next, next);
                if step <= 1e-13 || g_lo <= 1e-15 {
                    break;
                }
            } else {
                hi = next;
                if is_newton {
                    // Newton from the left never passes the root of a convex g: this is the root
                    // up to rounding.
                    c = next;
                    break;
                }
            }
            if hi - lo <= 1e-15 {
                break;
            }
        }
    }
    let c = c.clamp(0.0, 1.0);
    Ok((c, finite(df(c), "chi_c")?))
}

/// `c*` (1 in the ordered phase).
pub fn correlation_fixed_point(
    act: &Activation,
    sigma_w2: f64,
    sigma_b2: f64,
    q0: f64,
) -> Result<f64> {
    Ok(mean_field(act, sigma_w2, sigma_b2, q0)?.c_star)
}

/// The edge of chaos: the `sigma_w2` with `chi_1(sigma_w2, sigma_b2) = 1`, the first crossing
/// found scanning `sigma_w2 = 1e-6 * 1.25^k` upwards, refined by Brent's method on that bracket.
/// Piecewise-linear activations have it in closed form, `2 / (s+^2 + s-^2)` (relu: 2, identity: 1,
/// whatever `sigma_b2`). An error if `chi_1` stays below 1 up to `sigma_w2 = 1e12`, or if it jumps
/// across 1 (the fixed point `q*` changes discontinuously there, e.g. gelu and silu with small
/// `sigma_b2`, whose length map diverges before `chi_1` reaches 1).
pub fn edge_of_chaos(act: &Activation, sigma_b2: f64, q0: f64) -> Result<f64> {
    check_all(0.0, sigma_b2, q0)?;
    if let Some((sp, sm)) = piecewise_linear(act) {
        let k = 0.5 * (sp * sp + sm * sm);
        if k == 0.0 {
            return invalid!(
                "{} with these parameters is identically 0: chi_1 = 0 for every sigma_w2",
                act.name()
            );
        }
        return Ok(1.0 / k);
    }
    let h = |w: f64| -> Result<f64> { Ok(chi1(act, w, sigma_b2, q0)? - 1.0) };
    let (mut lo, mut h_lo) = (0.0, -1.0);
    let mut hi = 1e-6;
    let mut h_hi = h(hi)?;
    while h_hi < 0.0 {
        (lo, h_lo) = (hi, h_hi);
        hi *= 1.25;
        if hi > 1e12 {
            return invalid!(
                "{}: no edge of chaos for sigma_b2 = {sigma_b2}: chi_1 stays below 1 up to sigma_w2 = 1e12",
                act.name()
            );
        }
        h_hi = h(hi)?;
    }
    let mut err = None;
    let w = brent(
        |w| match h(w) {
            Ok(v) => v,
            Err(e) => {
                err.get_or_insert(e);
                f64::NAN
            }
        },
        lo,
        hi,
        h_lo,
        h_hi,
        0.0,
    );
    if let Some(e) = err {
        return Err(e);
    }
    let miss = h(w)?;
    if !w.is_finite() || miss.abs() > 1e-7 {
        return invalid!(
            "{}: no edge of chaos for sigma_b2 = {sigma_b2}: chi_1 jumps across 1 near sigma_w2 = {w} \
             (chi_1 - 1 = {miss} there; the fixed point q* changes discontinuously)",
            act.name()
        );
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::ACTIVATION_NAMES;

    type Integrand = Box<dyn Fn(f64) -> f64>;

    fn act(name: &str) -> Activation {
        Activation::from_name(name, &[]).unwrap()
    }

    fn all() -> Vec<Activation> {
        ACTIVATION_NAMES
            .iter()
            .map(|n| act(n))
            .chain([
                Activation::LeakyRelu {
                    negative_slope: 0.2,
                },
                Activation::Elu { alpha: 0.7 },
            ])
            .collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    /// Composite Simpson on each half-line [0, 12] with `n` (even) panels; the kink side is the
    /// one-sided limit at z = 0.
    fn simpson_expectation(g: &dyn Fn(f64) -> f64, q: f64, n: usize) -> f64 {
        let r = q.sqrt();
        let h = 12.0 / n as f64;
        let mut total = 0.0;
        for sign in [1.0, -1.0] {
            let mut s = 0.0;
            for i in 0..=n {
                let z = i as f64 * h;
                let u = if i == 0 { sign * TINY } else { sign * r * z };
                let w = if i == 0 || i == n {
                    1.0
                } else if i % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                s += w * g(u) * std_normal_pdf(z);
            }
            total += s * h / 3.0;
        }
        total
    }

    #[test]
    fn gauss_kronrod_rules_are_exact_for_their_degrees() {
        // K21 is exact to degree 31, G10 to degree 19, on [-1, 1]: integral of x^k = 2 / (k + 1).
        for k in (0..=30).step_by(2) {
            let mut sk = WGK[10] * if k == 0 { 1.0 } else { 0.0 };
            let mut sg = 0.0;
            for j in 0..10 {
                sk += 2.0 * WGK[j] * XGK[j].powi(k);
                if j % 2 == 1 {
                    sg += 2.0 * WG[j / 2] * XGK[j].powi(k);
                }
            }
            let exact = 2.0 / (k as f64 + 1.0);
            assert!((sk - exact).abs() < 1e-15, "K21, x^{k}: {sk}");
            if k <= 18 {
                assert!((sg - exact).abs() < 1e-15, "G10, x^{k}: {sg}");
            }
        }
        let p = gauss_kronrod(&|x: f64| x.exp(), 0.0, 1.0);
        assert!((p.value - (1f64.exp() - 1.0)).abs() < 1e-15 && p.err < 1e-13);
    }

    #[test]
    fn scalar_activations_agree_with_the_engine() {
        for a in all() {
            for i in -400..=400 {
                let u = i as f64 * 0.05 + 1e-3;
                let (p, e): (f64, f64) = (phi(&a, u), a.apply(u));
                assert!(
                    (p - e).abs() <= 1e-15 * (1.0 + e.abs()),
                    "{a:?} at {u}: {p} vs {e}"
                );
                let (d, e): (f64, f64) = (dphi(&a, u), a.derivative(u));
                assert!(
                    (d - e).abs() <= 1e-15 * (1.0 + e.abs()),
                    "{a:?}' at {u}: {d} vs {e}"
                );
                // phi'' against a central difference of phi'
                let h = 1e-6;
                let fd = (dphi(&a, u + h) - dphi(&a, u - h)) / (2.0 * h);
                let d2 = second_derivative(&a, u);
                assert!(
                    (fd - d2).abs() < 1e-7 * (1.0 + d2.abs()),
                    "{a:?}'' at {u}: {fd} vs {d2}"
                );
            }
        }
    }

    #[test]
    fn every_activation_matches_a_fine_simpson_integral() {
        for a in all() {
            for &q in &[0.05, 0.7, 1.0, 2.5, 9.0] {
                let checks: [(Moment, Integrand); 3] = [
                    (
                        Moment::Phi2,
                        Box::new(move |u: f64| a.apply::<f64>(u).powi(2)),
                    ),
                    (
                        Moment::Dphi2,
                        Box::new(move |u: f64| a.derivative::<f64>(u).powi(2)),
                    ),
                    (
                        Moment::Dphi2PhiD2phi,
                        Box::new(move |u: f64| {
                            a.derivative::<f64>(u).powi(2)
                                + a.apply::<f64>(u) * second_derivative(&a, u)
                        }),
                    ),
                ];
                for (m, g) in checks.iter() {
                    let reference = simpson_expectation(g.as_ref(), q, 120_000);
                    let numeric = moment_numeric(&a, *m, q);
                    let best = moment(&a, *m, q).unwrap();
                    assert!(
                        (numeric - reference).abs() < 1e-9,
                        "{a:?} {m:?} q={q}: {numeric} vs {reference}"
                    );
                    assert!(
                        (best - reference).abs() < 1e-9,
                        "{a:?} {m:?} q={q}: {best} vs {reference}"
                    );
                }
            }
        }
    }

    #[test]
    fn closed_forms_agree_with_quadrature() {
        let exact = [
            act("identity"),
            act("relu"),
            Activation::LeakyRelu {
                negative_slope: 0.01,
            },
            Activation::LeakyRelu {
                negative_slope: -0.5,
            },
            act("sin"),
        ];
        for a in exact {
            for &q in &[0.01, 0.5, 1.0, 3.0] {
                for m in [Moment::Phi2, Moment::Dphi2, Moment::Dphi2PhiD2phi] {
                    let (x, y) = (moment(&a, m, q).unwrap(), moment_numeric(&a, m, q));
                    assert!(close(x, y, 1e-12), "{a:?} {m:?} q={q}: {x} vs {y}");
                }
                for &c in &[-0.95, -0.3, 0.0, 0.4, 0.9, 0.999, 1.0] {
                    for m in [Moment2::PhiPhi, Moment2::DphiDphi] {
                        let (x, y) = (moment2(&a, m, q, c).unwrap(), moment2_numeric(&a, m, q, c));
                        assert!(close(x, y, 1e-10), "{a:?} {m:?} q={q} c={c}: {x} vs {y}");
                    }
                }
            }
        }
        // relu closed forms of the brief
        assert_eq!(moment(&act("relu"), Moment::Phi2, 3.0).unwrap(), 1.5);
        assert_eq!(moment(&act("relu"), Moment::Dphi2, 3.0).unwrap(), 0.5);
    }

    #[test]
    fn elu_and_selu_match_their_closed_forms() {
        // E[e^{a z} 1{z<0}] = e^{a^2/2} Phi(-a)
        let phi = |x: f64| 0.5 * libm::erfc(x / std::f64::consts::SQRT_2);
        let tail = |a: f64| (0.5 * a * a).exp() * phi(a);
        for &(alpha, lambda) in &[(1.0, 1.0), (0.7, 1.0), (SELU_ALPHA, SELU_LAMBDA)] {
            let a = if lambda == 1.0 {
                Activation::Elu { alpha }
            } else {
                Activation::Selu
            };
            for &q in &[0.1f64, 1.0, 4.0] {
                let r = q.sqrt();
                let phi2 = lambda
                    * lambda
                    * (q / 2.0 + alpha * alpha * (tail(2.0 * r) - 2.0 * tail(r) + 0.5));
                let dphi2 = lambda * lambda * (0.5 + alpha * alpha * tail(2.0 * r));
                assert!(
                    close(moment(&a, Moment::Phi2, q).unwrap(), phi2, 1e-12),
                    "{a:?} q={q}"
                );
                assert!(
                    close(moment(&a, Moment::Dphi2, q).unwrap(), dphi2, 1e-12),
                    "{a:?} q={q}"
                );
            }
        }
    }

    #[test]
    fn bivariate_expectations_are_consistent() {
        for a in all() {
            for &q in &[0.3, 4.0] {
                // c = 0: independent, E[phi]^2; c = 1: E[phi^2]; c = -1: E[phi(u) phi(-u)].
                let mean = gaussian_expectation(&|u: f64| a.apply::<f64>(u), q);
                let at0 = moment2(&a, Moment2::PhiPhi, q, 0.0).unwrap();
                assert!(
                    (at0 - mean * mean).abs() < 1e-10,
                    "{a:?} q={q}: {at0} vs {}",
                    mean * mean
                );
                let near1 = moment2(&a, Moment2::PhiPhi, q, 1.0 - 1e-12).unwrap();
                let at1 = moment(&a, Moment::Phi2, q).unwrap();
                assert!(close(near1, at1, 1e-9), "{a:?} q={q}: {near1} vs {at1}");
                // Price's theorem: d/dc E[phi(u1) phi(u2)] = q E[phi'(u1) phi'(u2)].
                for &c in &[-0.6, 0.7, 0.97] {
                    let h = 1e-4;
                    let up = moment2_numeric(&a, Moment2::PhiPhi, q, c + h);
                    let down = moment2_numeric(&a, Moment2::PhiPhi, q, c - h);
                    let fd = (up - down) / (2.0 * h);
                    let d = q * moment2_numeric(&a, Moment2::DphiDphi, q, c);
                    assert!(close(fd, d, 1e-6), "{a:?} q={q} c={c}: {fd} vs {d}");
                }
            }
        }
    }

    #[test]
    fn spec_reference_values() {
        let tanh = act("tanh");
        let q = fixed_point(&tanh, 2.5, 0.05, 1.0).unwrap();
        let c = chi1(&tanh, 2.5, 0.05, 1.0).unwrap();
        assert!((q - 1.06396).abs() < 5e-6, "{q}");
        assert!((c - 1.13352).abs() < 5e-6, "{c}");
        let q = fixed_point(&tanh, 1.5, 0.05, 1.0).unwrap();
        let c = chi1(&tanh, 1.5, 0.05, 1.0).unwrap();
        assert!((q - 0.41804).abs() < 5e-6, "{q}");
        assert!((c - 0.93864).abs() < 5e-6, "{c}");
        let w = edge_of_chaos(&tanh, 0.05, 1.0).unwrap();
        // SPEC prints 1.76096; the value is 1.7609546 (a direct Simpson computation agrees), which
        // rounds to 1.76095: the SPEC figure looks double-rounded (1.7609546 -> 1.760955 -> 1.76096).
        assert!((w - 1.7609546).abs() < 1e-7, "{w}");
        assert!((w - 1.76096).abs() < 1e-5, "{w}");
        let q = fixed_point(&tanh, w, 0.05, 1.0).unwrap();
        assert!((q - 0.5700).abs() < 5e-5, "{q}");
        assert!((chi1(&tanh, w, 0.05, 1.0).unwrap() - 1.0).abs() < 1e-10);
        let selu = act("selu");
        let q = fixed_point(&selu, 1.0, 0.0, 1.0).unwrap();
        let c = chi1(&selu, 1.0, 0.0, 1.0).unwrap();
        assert!((q - 1.0).abs() < 1e-9, "{q}");
        assert!((c - 1.071575).abs() < 5e-7, "{c}");
        // SELU's q* = 1 is attracting from other inputs too.
        assert!((fixed_point(&selu, 1.0, 0.0, 7.0).unwrap() - 1.0).abs() < 1e-9);
        assert!((fixed_point(&selu, 1.0, 0.0, 0.01).unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn relu_family() {
        let relu = act("relu");
        for &w in &[0.5, 1.0, 2.0, 3.0, 4.0] {
            for &b in &[0.0, 0.1] {
                assert_eq!(chi1(&relu, w, b, 1.0).unwrap(), w / 2.0);
            }
        }
        assert_eq!(edge_of_chaos(&relu, 0.0, 1.0).unwrap(), 2.0);
        assert_eq!(edge_of_chaos(&relu, 0.3, 1.0).unwrap(), 2.0);
        assert_eq!(edge_of_chaos(&act("identity"), 0.0, 1.0).unwrap(), 1.0);
        let leaky = Activation::LeakyRelu {
            negative_slope: 0.2,
        };
        assert!((edge_of_chaos(&leaky, 0.0, 1.0).unwrap() - 2.0 / 1.04).abs() < 1e-15);
        // degenerate fixed points
        assert_eq!(fixed_point(&relu, 1.0, 0.0, 1.0).unwrap(), 0.0);
        assert_eq!(fixed_point(&relu, 1.0, 0.5, 1.0).unwrap(), 1.0);
        assert_eq!(fixed_point(&relu, 2.0, 0.0, 1.5).unwrap(), 3.0);
        assert_eq!(fixed_point(&relu, 2.0, 0.1, 1.0).unwrap(), f64::INFINITY);
        assert_eq!(fixed_point(&relu, 3.0, 0.0, 1.0).unwrap(), f64::INFINITY);
        let mf = mean_field(&relu, 2.0, 0.0, 1.0).unwrap();
        assert_eq!(
            (mf.xi_q, mf.xi_c, mf.xi_grad),
            (f64::INFINITY, f64::INFINITY, f64::INFINITY)
        );
        let mf = mean_field(&relu, 1.0, 0.2, 1.0).unwrap();
        assert_eq!(mf.c_star, 1.0);
        assert!((mf.xi_grad + 1.0 / 0.5f64.ln()).abs() < 1e-12);
        assert!((mf.xi_c - mf.xi_grad).abs() < 1e-12);
        let mf = mean_field(&relu, 3.0, 0.0, 1.0).unwrap();
        assert!(mf.q_star.is_infinite() && mf.xi_grad < 0.0 && mf.xi_c.is_infinite());
    }

    #[test]
    fn degenerate_fixed_points_of_smooth_activations() {
        let tanh = act("tanh");
        assert_eq!(fixed_point(&tanh, 0.5, 0.0, 1.0).unwrap(), 0.0);
        assert_eq!(fixed_point(&tanh, 1.0, 0.0, 1.0).unwrap(), 0.0);
        assert_eq!(chi1(&tanh, 0.5, 0.0, 1.0).unwrap(), 0.5);
        assert!((edge_of_chaos(&tanh, 0.0, 1.0).unwrap() - 1.0).abs() < 1e-6);
        let mf = mean_field(&tanh, 0.5, 0.0, 1.0).unwrap();
        assert_eq!(
            (mf.q_star, mf.chi_1, mf.chi_q, mf.c_star),
            (0.0, 0.5, 0.5, 1.0)
        );
        assert!(mf.xi_c.is_infinite());
        // elu grows linearly: sigma_w2 > 2 diverges, with chi_1 -> sigma_w2 / 2.
        let elu = act("elu");
        assert_eq!(fixed_point(&elu, 2.5, 0.0, 1.0).unwrap(), f64::INFINITY);
        assert_eq!(chi1(&elu, 2.5, 0.0, 1.0).unwrap(), 1.25);
        // gelu, sigma_b2 = 0, 2 < sigma_w2 < 4: 0 attracts small inputs, large ones diverge.
        let gelu = act("gelu");
        assert_eq!(fixed_point(&gelu, 3.0, 0.0, 0.01).unwrap(), 0.0);
        assert_eq!(fixed_point(&gelu, 3.0, 0.0, 1e4).unwrap(), f64::INFINITY);
        assert_eq!(chi1(&gelu, 3.0, 0.0, 0.01).unwrap(), 0.75);
        // sigma_w2 = 0: q* = sigma_b2
        assert_eq!(fixed_point(&tanh, 0.0, 0.3, 1.0).unwrap(), 0.3);
        // He init (sigma_w2 = 2): the slope of the length map at infinity is exactly 1, and whether
        // it diverges is decided by E[phi^2 - phi_inf^2] + sigma_b2, computed without cancellation.
        assert_eq!(fixed_point(&gelu, 2.0, 1e5, 1.0).unwrap(), f64::INFINITY);
        assert_eq!(fixed_point(&gelu, 2.0, 0.0, 1.0).unwrap(), 0.0);
        assert_eq!(fixed_point(&elu, 2.0, 0.0, 1.0).unwrap(), f64::INFINITY);
        assert_eq!(
            fixed_point(&act("softplus"), 2.0, 0.0, 1.0).unwrap(),
            f64::INFINITY
        );
        for a in [gelu, act("silu")] {
            let q = fixed_point(&a, 2.0, 0.01, 1.0).unwrap();
            assert!(q > 0.0 && q < 1.0, "{a:?}: {q}");
            assert!((length_step(&a, 2.0, 0.01, q) - q).abs() < 1e-12, "{a:?}");
        }
        // the cancellation-free excess agrees with F(q) - q where both are accurate
        for a in [elu, act("selu"), gelu, act("silu"), act("softplus")] {
            for q in [0.0, 0.3, 2.0, 50.0] {
                let (x, y) = (
                    length_excess(&a, 1.7, 0.2, q),
                    length_step(&a, 1.7, 0.2, q) - q,
                );
                assert!((x - y).abs() < 1e-12 * (1.0 + q), "{a:?} q={q}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn length_map_starts_at_the_first_layer_and_converges() {
        let stop = Stop::new();
        for a in all() {
            let (w, b) = (1.5, 0.1);
            let q = fixed_point(&a, w, b, 1.0).unwrap();
            let seq = length_map(&a, w, b, 2.0, 400, &stop).unwrap();
            assert_eq!(seq.len(), 400);
            assert_eq!(seq[0], w * 2.0 + b);
            let step = sigma_step(&a, w, b, seq[0]);
            assert!(close(seq[1], step, 1e-15));
            if q.is_finite() {
                assert!(close(seq[399], q, 1e-9), "{a:?}: {} vs {q}", seq[399]);
            } else {
                assert!(seq[399] > 1e10, "{a:?}");
            }
        }
        assert!(length_map(&act("tanh"), 1.0, 0.0, 1.0, 0, &stop)
            .unwrap()
            .is_empty());
        let diverging = length_map(&act("relu"), 4.0, 0.0, 1.0, 2000, &stop).unwrap();
        assert_eq!(diverging[1999], f64::INFINITY);
        assert_eq!(diverging[2], 16.0);
        let cancelled = Stop::new();
        cancelled.request();
        assert!(matches!(
            length_map(&act("tanh"), 1.0, 0.0, 1.0, 10, &cancelled),
            Err(CoreError::Cancelled)
        ));
    }

    fn sigma_step(a: &Activation, w: f64, b: f64, q: f64) -> f64 {
        length_step(a, w, b, q)
    }

    #[test]
    fn chi_q_is_the_slope_of_the_length_map() {
        for a in all() {
            let (w, b) = (1.3, 0.2);
            let mf = mean_field(&a, w, b, 1.0).unwrap();
            let q = mf.q_star;
            if q.is_infinite() {
                // identity, relu, ...: sigma_w2 = 1.3 makes F grow without bound
                assert_eq!(mf.chi_q, mf.chi_1);
                continue;
            }
            let h = 1e-5 * q;
            let fd = (length_step(&a, w, b, q + h) - length_step(&a, w, b, q - h)) / (2.0 * h);
            assert!(close(mf.chi_q, fd, 1e-6), "{a:?}: {} vs {fd}", mf.chi_q);
            assert!(close(length_step(&a, w, b, q), q, 1e-12), "{a:?}");
        }
    }

    #[test]
    fn edge_of_chaos_gives_chi1_one() {
        for a in all() {
            for b in [0.05, 0.5] {
                let res = edge_of_chaos(&a, b, 1.0);
                if matches!(a, Activation::Gelu | Activation::Silu) && b == 0.05 {
                    // The length map diverges (q* jumps to inf) before chi_1 reaches 1.
                    let msg = format!("{:?}", res.unwrap_err());
                    assert!(msg.contains("no edge of chaos"), "{msg}");
                    continue;
                }
                let w = res.unwrap();
                let c = chi1(&a, w, b, 1.0).unwrap();
                assert!((c - 1.0).abs() < 1e-9, "{a:?}: sigma_w2 = {w}, chi_1 = {c}");
            }
        }
        // elu: the first crossing, at a finite q* (chi_1 also returns to 1 at sigma_w2 = 2 where q* = inf)
        let w = edge_of_chaos(&act("elu"), 0.05, 1.0).unwrap();
        assert!(
            w < 1.9 && fixed_point(&act("elu"), w, 0.05, 1.0).unwrap().is_finite(),
            "{w}"
        );
        // sigma_b2 = 0, odd or relu-like at 0: q* = 0 and the edge is where sigma_w2 phi'(0)^2 = 1
        // chi_1 - 1 = O((sigma_w2 - 1)^2) above the edge: conditioning limits the root to ~1e-8
        assert!((edge_of_chaos(&act("tanh"), 0.0, 1.0).unwrap() - 1.0).abs() < 1e-6);
        assert!((edge_of_chaos(&act("sin"), 0.0, 1.0).unwrap() - 1.0).abs() < 1e-6);
        let selu0 = 2.0 / (SELU_LAMBDA * SELU_LAMBDA * (1.0 + SELU_ALPHA * SELU_ALPHA));
        assert!((edge_of_chaos(&act("selu"), 0.0, 1.0).unwrap() - selu0).abs() < 1e-6);
    }

    #[test]
    fn chaotic_phase_correlation_fixed_point() {
        let tanh = act("tanh");
        // odd phi, no bias: c* = 0
        let mf = mean_field(&tanh, 2.5, 0.0, 1.0).unwrap();
        assert!(mf.c_star.abs() < 1e-12, "{}", mf.c_star);
        assert!(mf.chi_c < 1.0);
        for a in [tanh, act("selu"), act("elu"), act("sin"), act("relu")] {
            let (w, b) = (
                if matches!(a, Activation::Relu) {
                    1.9
                } else {
                    2.5
                },
                0.05,
            );
            let mf = mean_field(&a, w, b, 1.0).unwrap();
            if mf.q_star.is_infinite() {
                // selu with sigma_w2 = 2.5: lambda^2 sigma_w2 / 2 > 1, the length map diverges
                assert_eq!((mf.c_star, mf.chi_c), (1.0, 1.0));
            } else if mf.chi_1 > 1.0 {
                assert!(mf.c_star > 0.0 && mf.c_star < 1.0, "{a:?}: {}", mf.c_star);
                let image = correlation_map(&a, w, b, mf.q_star, mf.c_star).unwrap();
                assert!(
                    (image - mf.c_star).abs() < 1e-10,
                    "{a:?}: {image} vs {}",
                    mf.c_star
                );
                assert!(mf.chi_c < 1.0 && mf.xi_c > 0.0, "{a:?}");
                assert!(mf.xi_grad < 0.0);
            } else {
                assert_eq!(mf.c_star, 1.0);
                assert_eq!(mf.chi_c, mf.chi_1);
            }
        }
        // tanh, sigma_w2 = 2.5, sigma_b2 = 0.05 is chaotic (chi_1 = 1.13352)
        let mf = mean_field(&tanh, 2.5, 0.05, 1.0).unwrap();
        assert!(mf.c_star < 1.0);
        // ordered phase: c* = 1, xi_c = xi_grad
        let mf = mean_field(&tanh, 1.5, 0.05, 1.0).unwrap();
        assert_eq!(mf.c_star, 1.0);
        assert_eq!(mf.xi_c, mf.xi_grad);
        assert!((mf.xi_grad + 1.0 / mf.chi_1.ln()).abs() < 1e-12);
    }

    #[test]
    fn depth_scales_at_criticality_are_infinite() {
        assert_eq!(depth_scale(1.0), f64::INFINITY);
        assert_eq!(depth_scale(0.0), 0.0);
        assert!(depth_scale(2.0) < 0.0);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let tanh = act("tanh");
        assert!(fixed_point(&tanh, -1.0, 0.0, 1.0).is_err());
        assert!(fixed_point(&tanh, 1.0, -0.1, 1.0).is_err());
        assert!(fixed_point(&tanh, f64::NAN, 0.0, 1.0).is_err());
        assert!(fixed_point(&tanh, f64::INFINITY, 0.0, 1.0).is_err());
        assert!(fixed_point(&tanh, 1.0, 0.0, -1.0).is_err());
        assert!(chi1(&tanh, 1.0, f64::NAN, 1.0).is_err());
        assert!(edge_of_chaos(&tanh, -0.1, 1.0).is_err());
        assert!(moment(&tanh, Moment::Phi2, -1.0).is_err());
        assert!(moment2(&tanh, Moment2::PhiPhi, 1.0, 1.5).is_err());
        assert!(correlation_map(&tanh, 1.0, 0.0, 0.0, 0.5).is_err());
        let dead = Activation::LeakyRelu {
            negative_slope: 0.0,
        };
        assert_eq!(edge_of_chaos(&dead, 0.0, 1.0).unwrap(), 2.0);
    }
}
