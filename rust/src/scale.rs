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

/// Per-sample base-2 exponents of a block of `K` rows per sample, and the squared norms the last
/// [`Exponents::rescale`] measured.
#[derive(Debug, Clone)]
pub struct Exponents {
    pub per_sample: Vec<i32>,
    /// Whether samples are scaled together (when a BatchNorm couples them).
    pub shared: bool,
    /// `ln` of each sample's true squared norm (its `K` rows, exponent included), as measured by
    /// the last `rescale`: the pass that decides the scale also gives the norms, for free.
    pub log_sq_norms: Vec<f64>,
    /// Whether `rescale` records [`Exponents::row_sq_norms`].
    pub row_norms: bool,
    /// Each row's sum of squares as the block holds it (times `4^per_sample[b]` for the true one).
    pub row_sq_norms: Vec<f64>,
}

impl Exponents {
    pub fn new(batch: usize, shared: bool) -> Self {
        Exponents {
            per_sample: vec![0; batch],
            shared,
            log_sq_norms: vec![f64::NAN; batch],
            row_norms: false,
            row_sq_norms: Vec::new(),
        }
    }

    pub fn all_zero(&self) -> bool {
        self.per_sample.iter().all(|&e| e == 0)
    }

    /// Rescales `block` (`K` rows per sample) where its magnitude left the safe range, and
    /// records each sample's log squared norm (and, with `row_norms`, each row's sum of squares).
    ///
    /// One float64 sum of squares per sample decides: a sum in `[2^-2L, 2^2L]` needs no
    /// scaling. Otherwise the sample's largest magnitude `m` sets the exponent `floor(log2 m)`
    /// and the rows are multiplied by its inverse power of two (exact).
    pub fn rescale<T: Float>(&mut self, block: &mut Array2<T>, k: usize) {
        let lim = limit::<T>();
        let (lo2, hi2) = (((-2 * lim) as f64).exp2(), ((2 * lim) as f64).exp2());
        // (a zero sum may be an underflow: the largest magnitude then decides)
        let fits = |s: f64| (lo2..=hi2).contains(&s);
        let (hi, lo) = (
            T::from_f64((lim as f64).exp2()),
            T::from_f64((-lim as f64).exp2()),
        );
        let needs = |m: T| m.is_finite() && m > T::zero() && (m > hi || m < lo);
        let shift = |m: T| -> i32 { m.as_f64().log2().floor() as i32 };
        // a sample's sum of squares; with `row_norms`, each row's into `out` first
        let keep_rows = self.row_norms || k == 1;
        let measure = |rows: ArrayView2<T>, out: &mut [f64]| -> f64 {
            if keep_rows {
                row_sum_squares(rows, out);
                out.iter().sum()
            } else {
                match rows.as_slice() {
                    Some(s) => sum_squares(s),
                    None => rows.iter().map(|&v| v.as_f64() * v.as_f64()).sum(),
                }
            }
        };
        let max_abs = |rows: ArrayView2<T>| match rows.as_slice() {
            Some(s) => max_abs_slice(s),
            None => rows.iter().fold(T::zero(), |a, &v| a.max(v.abs())),
        };
        // by 2^-e in two steps the dtype can hold: a subnormal block (e below the normal range,
        // e.g. after a cancellation) needs a factor beyond the largest finite power of two
        let scale_by = |rows: &mut ArrayViewMut2<T>, e: i32| {
            let half = -e / 2;
            let (f1, f2) = (
                T::from_f64((half as f64).exp2()),
                T::from_f64(((-e - half) as f64).exp2()),
            );
            rows.mapv_inplace(|v| v * f1 * f2);
        };
        let ln2 = std::f64::consts::LN_2;
        self.row_sq_norms.resize(block.nrows(), 0.0);
        if self.shared {
            let measure_all = |block: ArrayView2<T>, rows_out: &mut [f64]| -> Vec<f64> {
                block
                    .axis_chunks_iter(Axis(0), k)
                    .zip(rows_out.chunks_mut(k))
                    .map(|(rows, out)| measure(rows, out))
                    .collect()
            };
            let mut sums = measure_all(block.view(), &mut self.row_sq_norms);
            let mut e = 0;
            if !fits(sums.iter().sum()) {
                let m = max_abs(block.view());
                if needs(m) {
                    e = shift(m);
                    scale_by(&mut block.view_mut(), e);
                    sums = measure_all(block.view(), &mut self.row_sq_norms);
                }
            }
            for ((x, log), s) in self
                .per_sample
                .iter_mut()
                .zip(&mut self.log_sq_norms)
                .zip(sums)
            {
                *x += e;
                *log = crate::simd::ln(s) + 2.0 * *x as f64 * ln2;
            }
            return;
        }
        let one_sample =
            |mut rows: ArrayViewMut2<T>, exp: &mut i32, log: &mut f64, out: &mut [f64]| {
                let mut s = measure(rows.view(), out);
                if !fits(s) {
                    let m = max_abs(rows.view());
                    if needs(m) {
                        let e = shift(m);
                        scale_by(&mut rows, e);
                        *exp += e;
                        s = measure(rows.view(), out);
                    }
                }
                *log = s; // its log below, for all samples in one vectorised pass
            };
        // Samples are independent: parallel only when the block is worth splitting.
        if block.len() >= 4 * PARALLEL_ELEMENTS {
            block
                .axis_chunks_iter_mut(Axis(0), k)
                .into_par_iter()
                .zip(self.per_sample.par_iter_mut())
                .zip(self.log_sq_norms.par_iter_mut())
                .zip(self.row_sq_norms.par_chunks_mut(k))
                .for_each(|(((rows, exp), log), out)| one_sample(rows, exp, log, out));
        } else {
            block
                .axis_chunks_iter_mut(Axis(0), k)
                .zip(self.per_sample.iter_mut())
                .zip(self.log_sq_norms.iter_mut())
                .zip(self.row_sq_norms.chunks_mut(k))
                .for_each(|(((rows, exp), log), out)| one_sample(rows, exp, log, out));
        }
        crate::simd::ln_slice(&mut self.log_sq_norms);
        for (log, &e) in self.log_sq_norms.iter_mut().zip(&self.per_sample) {
            *log += 2.0 * e as f64 * ln2;
        }
    }
}

/// `v * 2^e` rounded into `T`: saturates to `±inf` where the true value exceeds the dtype and to
/// `±0` (through the subnormals) where it underflows; zero stays zero. The inverse of rescaling,
/// used to hand users true values ([`descale`]).
#[inline]
pub fn ldexp<T: Float>(v: T, e: i64) -> T {
    if e == 0 || v == T::zero() || !v.is_finite() {
        return v;
    }
    // Exact in float64 until the result leaves its range; one final rounding into T.
    let (mut x, mut e) = (v.as_f64(), e);
    while e != 0 && x != 0.0 && x.is_finite() {
        let step = e.clamp(-1000, 1000);
        x *= (step as f64).exp2();
        e -= step;
    }
    T::from_f64(x)
}

/// Multiplies the `K` rows of every sample `b` by `2^exps[b]`: the true block of a rescaled one,
/// `inf`/`0` exactly where the true values overflow/underflow the dtype.
pub fn descale<T: Float>(block: &mut Array2<T>, k: usize, exps: &Exponents) {
    if exps.all_zero() {
        return;
    }
    block
        .axis_chunks_iter_mut(Axis(0), k.max(1))
        .into_par_iter()
        .zip(exps.per_sample.par_iter())
        .for_each(|(mut rows, &e)| {
            if e != 0 {
                rows.mapv_inplace(|v| ldexp(v, e as i64));
            }
        });
}

/// Whether every value is finite, in one vectorisable pass (`v * 0` is 0 for finite `v`, NaN
/// otherwise), in parallel for large slices.
pub fn all_finite<T: Float>(values: &[T]) -> bool {
    fn chunk<T: Float>(values: &[T]) -> bool {
        let mut acc = [T::zero(); 8];
        let chunks = values.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v * T::zero();
            }
        }
        for (a, &v) in acc.iter_mut().zip(rest) {
            *a += v * T::zero();
        }
        acc.iter().all(|a| *a == T::zero())
    }
    const PART: usize = 1 << 15;
    if values.len() <= 2 * PART {
        chunk(values)
    } else {
        values.par_chunks(PART).all(chunk)
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

/// `out[r] = sum_j block[r, j]^2` for every row of `block`, in float64.
pub fn row_sum_squares<T: Float>(block: ArrayView2<T>, out: &mut [f64]) {
    assert_eq!(block.nrows(), out.len());
    match block.as_slice() {
        Some(s) if block.ncols() > 0 => rows_sum_squares(s, block.ncols(), out),
        _ => {
            for (o, row) in out.iter_mut().zip(block.rows()) {
                *o = row.iter().map(|&v| v.as_f64() * v.as_f64()).sum();
            }
        }
    }
}

/// `out[r] = ln ||block[r]||_2` for every row, with the scaled two-pass form only for rows whose
/// plain float64 sum of squares left the normal range.
pub fn row_log_norms_into<T: Float>(block: ArrayView2<T>, out: &mut [f64]) {
    row_sum_squares(block, out);
    if out.iter().all(|o| o.is_normal()) {
        return crate::simd::half_ln_slice(out);
    }
    for (o, row) in out.iter_mut().zip(block.rows()) {
        *o = 0.5
            * if o.is_normal() {
                crate::simd::ln(*o)
            } else {
                log_sum_squares(row.iter().copied())
            };
    }
}

/// [`row_sum_squares`] of a contiguous block of rows of `d` elements: eight lanes per row, the
/// tail in its own sum. The AVX-512 version is written out (the compiler splits this loop badly);
/// it performs the same operations in the same order as the portable one, so the bits agree.
fn rows_sum_squares<T: Float>(values: &[T], d: usize, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx512 {
        // SAFETY: the level is only reported when the CPU has AVX-512F.
        return unsafe { rows_sum_squares_avx512(values, d, out) };
    }
    rows_sum_squares_portable(values, d, out)
}

multiversion!(
    fn rows_sum_squares_portable<T: Float>(values: &[T], d: usize, out: &mut [f64]) -> () = rows_sum_squares_kernel
);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_sum_squares_avx512<T: Float>(values: &[T], d: usize, out: &mut [f64]) {
    use std::arch::x86_64::*;
    let single = std::mem::size_of::<T>() == 4;
    for (o, row) in out.iter_mut().zip(values.chunks_exact(d)) {
        let whole = d / 8 * 8;
        let p = row.as_ptr();
        let mut acc = _mm512_setzero_pd();
        let mut j = 0;
        while j < whole {
            // SAFETY: j + 8 <= d elements of T (f32 or f64, by the size test) are in the row.
            let v = if single {
                _mm512_cvtps_pd(_mm256_loadu_ps(p.add(j) as *const f32))
            } else {
                _mm512_loadu_pd(p.add(j) as *const f64)
            };
            acc = _mm512_add_pd(acc, _mm512_mul_pd(v, v));
            j += 8;
        }
        let mut lanes = [0.0f64; 8];
        _mm512_storeu_pd(lanes.as_mut_ptr(), acc);
        *o = finish_rows_sum(&lanes, &row[whole..]);
    }
}

/// The fixed reduction of the eight lanes, plus the tail's own sum.
#[inline(always)]
fn finish_rows_sum<T: Float>(acc: &[f64; 8], tail: &[T]) -> f64 {
    let tail: f64 = tail.iter().map(|&v| v.as_f64() * v.as_f64()).sum();
    (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) + tail
}

#[inline(always)]
fn rows_sum_squares_kernel<T: Float>(values: &[T], d: usize, out: &mut [f64]) {
    for (o, row) in out.iter_mut().zip(values.chunks_exact(d)) {
        let mut acc = [0.0f64; 8];
        let chunks = row.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                let v = v.as_f64();
                *a += v * v;
            }
        }
        *o = finish_rows_sum(&acc, tail);
    }
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

/// `ln sqrt(sum_b exp(2 l_b))` for every row `l` of `logs` (the log norms of a point's samples):
/// the log of the norm of the whole batch seen as one vector, exact at any magnitude. NaN where
/// a row holds a NaN, `inf` where it holds an `inf`, `-inf` where every entry is `-inf`.
pub fn log_batch_norms(logs: ArrayView2<f64>) -> Vec<f64> {
    logs.outer_iter()
        .into_par_iter()
        .map(|row| {
            let row = row.to_vec();
            if row.iter().any(|v| v.is_nan()) {
                return f64::NAN;
            }
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !m.is_finite() {
                return m;
            }
            m + 0.5 * crate::simd::ln(crate::simd::sum_exp_twice_shifted(&row, m))
        })
        .collect()
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
    fn batch_norms_from_sample_log_norms() {
        let logs = array![
            [0.0, 0.0, 0.0, 0.0],
            [1e3, 1e3 + 0.5f64.ln(), f64::NEG_INFINITY, -1e3],
            [f64::NEG_INFINITY; 4],
            [1.0, f64::INFINITY, 0.0, 0.0],
            [1.0, f64::NAN, f64::INFINITY, 0.0],
        ];
        let got = log_batch_norms(logs.view());
        assert!((got[0] - 0.5 * 4f64.ln()).abs() < 1e-15);
        assert!(
            (got[1] - (1e3 + 0.5 * 1.25f64.ln())).abs() < 1e-12,
            "{}",
            got[1]
        );
        assert_eq!(got[2], f64::NEG_INFINITY);
        assert_eq!(got[3], f64::INFINITY);
        assert!(got[4].is_nan());
    }

    #[test]
    fn subnormal_blocks_rescale_without_overflow() {
        // 2^1050 does not exist in float64: the factor must be applied in steps
        let tiny = f64::from_bits(3); // 1.5e-323
        for shared in [false, true] {
            let mut b = ndarray::array![[tiny, -tiny, 0.0]];
            let mut e = Exponents::new(1, shared);
            e.rescale(&mut b, 1);
            assert!(b.iter().all(|v| v.is_finite()), "{b:?}");
            assert_eq!(b[[0, 0]] * (e.per_sample[0] as f64).exp2(), tiny);
            assert_eq!(b[[0, 2]], 0.0);
        }
        let tiny32 = f32::from_bits(5);
        let mut b = ndarray::array![[tiny32, 0.0f32]];
        let mut e = Exponents::new(1, false);
        e.rescale(&mut b, 1);
        assert!(
            b[[0, 0]].is_finite() && b[[0, 0]] >= 1.0 && b[[0, 1]] == 0.0,
            "{b:?}"
        );
        assert_eq!(ldexp(b[[0, 0]], e.per_sample[0] as i64), tiny32);
    }

    #[test]
    fn ldexp_saturates_honestly() {
        assert_eq!(ldexp(1.5f64, 3), 12.0);
        assert_eq!(ldexp(1.0f64, 5000), f64::INFINITY);
        assert_eq!(ldexp(-1.0f64, 5000), f64::NEG_INFINITY);
        assert_eq!(ldexp(1.0f64, -5000), 0.0);
        assert_eq!(ldexp(0.0f64, 5000), 0.0); // never 0 * inf = NaN
        assert_eq!(ldexp(1.0f64, -1074), f64::from_bits(1)); // the smallest subnormal
        assert_eq!(ldexp(0.75f32, 200), f32::INFINITY);
        assert_eq!(ldexp(3.0f32, -2), 0.75);
        assert_eq!(ldexp(1.0f64, 1500 - 1400), 2f64.powi(100));
        let mut b = ndarray::array![[1.0f64, -2.0], [3.0, 0.0], [0.5, 0.25]];
        let mut e = Exponents::new(3, false);
        e.per_sample = vec![2000, -3, 0];
        descale(&mut b, 1, &e);
        assert_eq!(
            b,
            ndarray::array![
                [f64::INFINITY, f64::NEG_INFINITY],
                [0.375, 0.0],
                [0.5, 0.25]
            ]
        );
    }

    #[test]
    fn finite_checks() {
        let mut v = vec![1.0f64; 100_000];
        assert!(all_finite(&v));
        v[77_777] = f64::INFINITY;
        assert!(!all_finite(&v));
        v[77_777] = f64::NAN;
        assert!(!all_finite(&v[70_000..]));
        assert!(all_finite(&v[..5]));
        assert!(all_finite::<f32>(&[]));
    }

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
    fn row_sums_of_squares_are_the_same_bits_at_every_level() {
        fn check<T: Float>(scale: f64) {
            for d in 1..=41 {
                let values: Vec<T> = (0..3 * d)
                    .map(|i| T::from_f64(scale * ((i * 7919 % 113) as f64 - 56.0) / 17.0))
                    .collect();
                let mut portable = vec![0.0; 3];
                rows_sum_squares_kernel(&values, d, &mut portable);
                let exact: Vec<f64> = values
                    .chunks(d)
                    .map(|r| r.iter().map(|&v| v.as_f64() * v.as_f64()).sum::<f64>())
                    .collect();
                for (p, e) in portable.iter().zip(&exact) {
                    assert!((p - e).abs() <= 1e-14 * e, "{p} vs {e}");
                }
                let mut dispatched = vec![0.0; 3];
                rows_sum_squares(&values, d, &mut dispatched);
                assert_eq!(
                    portable,
                    dispatched,
                    "d = {d} at {:?}",
                    crate::simd::level()
                );
            }
        }
        check::<f32>(1.0);
        check::<f64>(1e-3);
    }

    #[test]
    fn a_sum_of_squares_that_underflows_still_rescales() {
        let mut b = array![[3e-200f64, 4e-200], [0.0, 0.0]];
        let mut e = Exponents::new(2, false);
        e.rescale(&mut b, 1);
        let exact = 2.0 * 5e-200f64.ln();
        assert!(
            (e.log_sq_norms[0] - exact).abs() < 1e-12,
            "{:?}",
            e.log_sq_norms
        );
        assert_eq!(e.log_sq_norms[1], f64::NEG_INFINITY);
        assert!(e.per_sample[0] < -600 && e.per_sample[1] == 0);
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
