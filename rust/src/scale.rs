//! Exact power-of-two rescaling of cotangent/tangent blocks, so products of thousands of layer
//! Jacobians stay representable (SPEC §3: a 5,000-layer exploding network gives finite logs).
//!
//! A block is stored as `block * 2^exponent[b]` per sample `b` (one exponent for all samples when
//! a BatchNorm couples them). Multiplying by a power of two is exact, so rescaling changes no
//! digit of the result; it only moves the exponent out of the floating-point number.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::parallel::TASK_ELEMENTS as PARALLEL_ELEMENTS;
use rayon::prelude::*;

use crate::float::Float;
use crate::simd::multiversion;

/// Rescale when a sample's largest magnitude leaves `[2^-LIMIT, 2^LIMIT]`.
fn limit<T: Float>() -> i32 {
    if std::mem::size_of::<T>() == 4 {
        32
    } else {
        256
    }
}

/// Per-sample base-2 exponents of a block of `K` rows per sample, and the log squared norms
/// the last [`Exponents::rescale`] measured.
#[derive(Debug, Clone)]
pub struct Exponents {
    pub per_sample: Vec<i32>,
    /// Whether samples are scaled together (when a BatchNorm couples them).
    pub shared: bool,
    /// `ln` of each sample's true squared norm (its `K` rows, exponent included), as measured by
    /// the last `rescale`: the pass that decides the scale also gives the norms, for free.
    pub log_sq_norms: Vec<f64>,
}

impl Exponents {
    pub fn new(batch: usize, shared: bool) -> Self {
        Exponents {
            per_sample: vec![0; batch],
            shared,
            log_sq_norms: vec![f64::NAN; batch],
        }
    }

    pub fn all_zero(&self) -> bool {
        self.per_sample.iter().all(|&e| e == 0)
    }

    /// Rescales `block` (`K` rows per sample) where its magnitude left the safe range, and
    /// records each sample's log squared norm.
    ///
    /// One float64 sum of squares per sample decides: a sum in `[2^-2L, 2^2L]` (or zero) needs no
    /// scaling. Otherwise the sample's largest magnitude `m` sets the exponent `floor(log2 m)`
    /// and the rows are multiplied by its inverse power of two (exact).
    pub fn rescale<T: Float>(&mut self, block: &mut Array2<T>, k: usize) {
        let lim = limit::<T>();
        let (lo2, hi2) = (((-2 * lim) as f64).exp2(), ((2 * lim) as f64).exp2());
        let fits = |s: f64| s == 0.0 || (lo2..=hi2).contains(&s);
        let (hi, lo) = (
            T::from_f64((lim as f64).exp2()),
            T::from_f64((-lim as f64).exp2()),
        );
        let needs = |m: T| m.is_finite() && m > T::zero() && (m > hi || m < lo);
        let shift = |m: T| -> i32 { m.as_f64().log2().floor() as i32 };
        let sum_sq = |rows: ArrayView2<T>| match rows.as_slice() {
            Some(s) => sum_squares(s),
            None => rows.iter().map(|&v| v.as_f64() * v.as_f64()).sum(),
        };
        let max_abs = |rows: ArrayView2<T>| match rows.as_slice() {
            Some(s) => max_abs_slice(s),
            None => rows.iter().fold(T::zero(), |a, &v| a.max(v.abs())),
        };
        let ln2 = std::f64::consts::LN_2;
        if self.shared {
            let sums: Vec<f64> = block
                .axis_chunks_iter(Axis(0), k)
                .map(|rows| sum_sq(rows))
                .collect();
            let total: f64 = sums.iter().sum();
            let mut e = 0;
            let mut sums = sums;
            if !fits(total) {
                let m = max_abs(block.view());
                if needs(m) {
                    e = shift(m);
                    let factor = T::from_f64((-e as f64).exp2());
                    block.par_mapv_inplace(|v| v * factor);
                    sums = block
                        .axis_chunks_iter(Axis(0), k)
                        .map(|rows| sum_sq(rows))
                        .collect();
                }
            }
            for ((x, log), s) in self.per_sample.iter_mut().zip(&mut self.log_sq_norms).zip(sums) {
                *x += e;
                *log = s.ln() + 2.0 * *x as f64 * ln2;
            }
            return;
        }
        let one_sample = |mut rows: ArrayViewMut2<T>, exp: &mut i32, log: &mut f64| {
            let mut s = sum_sq(rows.view());
            if !fits(s) {
                let m = max_abs(rows.view());
                if needs(m) {
                    let e = shift(m);
                    let factor = T::from_f64((-e as f64).exp2());
                    rows.mapv_inplace(|v| v * factor);
                    *exp += e;
                    s = sum_sq(rows.view());
                }
            }
            *log = s.ln() + 2.0 * *exp as f64 * ln2;
        };
        // Samples are independent: parallel only when the block is worth splitting.
        if block.len() >= 4 * PARALLEL_ELEMENTS {
            block
                .axis_chunks_iter_mut(Axis(0), k)
                .into_par_iter()
                .zip(self.per_sample.par_iter_mut())
                .zip(self.log_sq_norms.par_iter_mut())
                .for_each(|((rows, exp), log)| one_sample(rows, exp, log));
        } else {
            block
                .axis_chunks_iter_mut(Axis(0), k)
                .zip(self.per_sample.iter_mut())
                .zip(self.log_sq_norms.iter_mut())
                .for_each(|((rows, exp), log)| one_sample(rows, exp, log));
        }
    }
}

multiversion!(
    /// The largest magnitude in `values` (a NaN is skipped: it stays NaN whatever the scale), with
    /// [`LANES`] interleaved maxima so that it vectorises without a dependency chain.
    fn max_abs_slice<T: Float>(values: &[T]) -> T = max_abs_kernel
);

#[inline(always)]
fn max_abs_kernel<T: Float>(values: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let v = v.abs();
            *a = if v > *a { v } else { *a };
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a = a.max(v.abs());
    }
    acc.iter().fold(T::zero(), |a, &v| a.max(v))
}

/// Interleaved accumulators of the reductions here: four AVX-512 float64 registers, so the adds of
/// one iteration do not wait on each other. The summation order is fixed, hence reproducible.
const LANES: usize = 32;

/// `ln(sum exp(x))` of finite or infinite logs, in one fixed order (`-inf` for none).
pub fn log_sum_exp(logs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = logs.clone().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + logs.map(|l| (l - m).exp()).sum::<f64>().ln()
}

multiversion!(
    /// `sum v^2` in float64 with [`LANES`] interleaved accumulators (a fixed order that vectorises).
    pub fn sum_squares<T: Float>(values: &[T]) -> f64 = sum_squares_kernel
);

#[inline(always)]
fn sum_squares_kernel<T: Float>(values: &[T]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let v = v.as_f64();
            *a += v * v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        let v = v.as_f64();
        *a += v * v;
    }
    // pairwise, in a fixed tree
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

/// `ln(sum v^2)` of a contiguous slice: one fast pass, falling back to the scaled two-pass form
/// only when the plain sum left float64's normal range.
#[inline]
pub fn log_sum_squares_slice<T: Float>(values: &[T]) -> f64 {
    let s = sum_squares(values);
    if s.is_normal() {
        s.ln()
    } else {
        log_sum_squares(values.iter().copied())
    }
}

/// `ln(sum v^2)` of any array, taking the fast slice path when its memory is contiguous.
pub fn log_sum_squares_of<T: Float, D: ndarray::Dimension>(a: ndarray::ArrayView<'_, T, D>) -> f64 {
    match a.as_slice_memory_order() {
        Some(s) => log_sum_squares_slice(s),
        None => log_sum_squares(a.iter().copied()),
    }
}

/// `ln(sum v^2)` without overflow or underflow, in one fixed order.
pub fn log_sum_squares<T: Float>(values: impl Iterator<Item = T> + Clone) -> f64 {
    let m = values.clone().fold(0.0f64, |a, v| a.max(v.as_f64().abs()));
    if m == 0.0 || !m.is_finite() {
        return if m == 0.0 {
            f64::NEG_INFINITY
        } else {
            m.ln() * 2.0
        };
    }
    let s: f64 = values
        .map(|v| {
            let r = v.as_f64() / m;
            r * r
        })
        .sum();
    2.0 * m.ln() + s.ln()
}

/// `ln(e^a + e^b)`, exact for infinities.
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    if m.is_infinite() || m.is_nan() {
        return a + b; // inf + inf = inf; NaN stays NaN
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn rescaling_is_exact_and_tracked() {
        let mut b = array![[1e300, -3e299], [1e-300, 2e-301], [0.5, 0.25]];
        let orig = b.clone();
        let mut e = Exponents::new(3, false);
        e.rescale(&mut b, 1);
        assert_eq!(e.per_sample[2], 0);
        for r in 0..3 {
            for c in 0..2 {
                let back = b[[r, c]] * (e.per_sample[r] as f64).exp2();
                assert_eq!(back, orig[[r, c]]);
            }
        }
        let logs = &e.log_sq_norms;
        let exact = (1e300f64.ln() * 2.0) + (1.0 + 0.09f64).ln();
        assert!((logs[0] - exact).abs() < 1e-12);
    }

    #[test]
    fn log_sum_squares_survives_extremes() {
        let v = [1e200f64, 1e200];
        assert!(
            (log_sum_squares(v.iter().copied()) - (2.0 * 1e200f64.ln() + 2f64.ln())).abs() < 1e-12
        );
        assert_eq!(
            log_sum_squares([0.0f64, 0.0].iter().copied()),
            f64::NEG_INFINITY
        );
        assert_eq!(log_add_exp(f64::NEG_INFINITY, 1.5), 1.5);
        assert!((log_add_exp(0.0, 0.0) - 2f64.ln()).abs() < 1e-15);
    }
}
