//! Vectorised elementwise math with run-time CPU dispatch.
//!
//! The kernels are plain branch-free Rust loops that the compiler vectorises; each is compiled
//! three times — baseline x86-64 (SSE2), AVX2+FMA and AVX-512F — and the widest one the CPU supports
//! is chosen at run time, so the same wheel runs on any x86-64 CPU. `GSC_CORE_SIMD=scalar|avx2|avx512`
//! (read once) forces a level, e.g. to test the fallback path.
//!
//! Accuracy (tested in this module against libm over dense grids and random arguments):
//! `expm1` and `tanh` within 2 ulp in float64; float32 is computed in float64 (with a shorter series,
//! error below 2^-36) and rounded once, so within 1 ulp (mostly correctly rounded). `tanh'(z) = sech^2(z)` is computed as `4e/(1+e)^2` with
//! `e = exp(-2|z|)`, accurate to a few ulp everywhere including deep saturation.

use std::sync::OnceLock;

use crate::float::Float;

/// The instruction-set level the kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Scalar,
    Avx2,
    Avx512,
}

/// The level chosen for this process: the best the CPU has, or `GSC_CORE_SIMD`.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let detected = detect();
        match std::env::var("GSC_CORE_SIMD").as_deref() {
            Ok("scalar") => Level::Scalar,
            Ok("avx2") if detected != Level::Scalar => Level::Avx2,
            Ok("avx512") if detected == Level::Avx512 => Level::Avx512,
            _ => detected,
        }
    })
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            return Level::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// Compiles a generic slice function for each [`Level`] and calls the one [`level()`] chose:
/// `multiversion!(pub fn name<T: Float>(values: &[T]) -> R = kernel);` where
/// `kernel` is an `#[inline(always)]` generic function of plain loops. The variants differ only in
/// instruction width, never in the order of operations, so they return identical bits.
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis fn $name:ident<T: Float>($($arg:ident: $ty:ty),*) -> $ret:ty = $kernel:ident) => {
        $(#[$doc])*
        $vis fn $name<T: Float>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<T: Float>($($arg: $ty),*) -> $ret {
                $kernel($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512<T: Float>($($arg: $ty),*) -> $ret {
                $kernel($($arg),*)
            }
            match $crate::simd::level() {
                // SAFETY: `level()` only reports features the CPU has.
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Level::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Level::Avx2 => unsafe { avx2($($arg),*) },
                _ => $kernel($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
const INV_LN2: f64 = std::f64::consts::LOG2_E;
/// 1.5 * 2^52: adding it rounds to an integer held in the low mantissa bits.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// `1/n!` for `n = 14, 13, ..., 1`.
const TAYLOR: [f64; 14] = [
    1.0 / 87_178_291_200.0,
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
];
const F32_DEGREE: usize = 9;

/// `(expm1(y), exp(y))` for `y <= 0` (the only range the activations need), branch-free.
///
/// `y = k ln2 + r` with `|r| <= ln2/2`; `p = expm1(r)` by its Taylor series to degree 14 (error
/// below 2^-56 relative); then `exp(y) = 2^k (1 + p)` and `expm1(y) = 2^k p + (2^k - 1)`, both
/// without cancellation. Arguments below -700 give `(-1, 0)` exactly as in the limit.
/// `DEGREE` is 14 for float64 results; float32 results use [`F32_DEGREE`]: the truncation error
/// `|r|^10 / 10! < 2^-36` relative is far below float32's rounding.
#[inline(always)]
fn expm1_exp_nonpositive<const DEGREE: usize>(y: f64) -> (f64, f64) {
    let y = y.max(-700.0);
    let t = y * INV_LN2 + ROUND_MAGIC;
    let kf = t - ROUND_MAGIC;
    let r = (y - kf * LN2_HI) - kf * LN2_LO;
    // Taylor coefficients 1/n!, Horner from degree DEGREE down to 1.
    let mut p = TAYLOR[14 - DEGREE];
    for &c in &TAYLOR[15 - DEGREE..] {
        p = p.mul_add(r, c);
    }
    p *= r;
    // 2^k from the exponent bits (k in [-1010, 0]: a normal number). The integer k sits in the
    // low bits of `t`; integer lane arithmetic keeps this vectorisable without AVX-512DQ.
    let k = t.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let scale = f64::from_bits(k.wrapping_add(1023) << 52);
    let em1 = scale.mul_add(p, scale - 1.0);
    let e = scale.mul_add(p, scale);
    (em1, e)
}

/// `tanh(z)` and `tanh'(z)` from one `expm1`: with `u = expm1(-2|z|)`, `e = u + 1`,
/// `tanh|z| = -u / (1 + e)` and `sech^2 z = 4 e / (1 + e)^2`.
#[inline(always)]
pub fn tanh_and_derivative(z: f64) -> (f64, f64) {
    tanh_and_derivative_of_degree::<14>(z)
}

#[inline(always)]
fn tanh_and_derivative_of_degree<const DEGREE: usize>(z: f64) -> (f64, f64) {
    let (u, e) = expm1_exp_nonpositive::<DEGREE>(-2.0 * z.abs());
    let d = 1.0 + e;
    let t = (-u / d).copysign(z);
    (t, 4.0 * e / (d * d))
}

/// `(tanh(z), tanh'(z))` in `T`'s precision: computed in float64 (to the accuracy `T` needs)
/// and rounded once. The one definition behind every tanh of the engine.
#[inline(always)]
pub fn tanh_pair<T: Float>(z: T) -> (T, T) {
    let (t, d) = if std::mem::size_of::<T>() == 4 {
        tanh_and_derivative_of_degree::<F32_DEGREE>(z.as_f64())
    } else {
        tanh_and_derivative(z.as_f64())
    };
    (T::from_f64(t), T::from_f64(d))
}

multiversion!(
    /// `out = tanh(input)`.
    pub fn tanh_slice<T: Float>(input: &[T], out: &mut [T]) -> () = tanh_kernel
);

#[inline(always)]
fn tanh_kernel<T: Float>(input: &[T], out: &mut [T]) {
    assert_eq!(input.len(), out.len());
    for (o, &z) in out.iter_mut().zip(input) {
        *o = tanh_pair(z).0;
    }
}

multiversion!(
    /// `out = tanh(input)` and `slope = tanh'(input)` from one exponential each.
    pub fn tanh_with_derivative_slice<T: Float>(input: &[T], out: &mut [T], slope: &mut [T]) -> () = tanh_with_derivative_kernel
);

#[inline(always)]
fn tanh_with_derivative_kernel<T: Float>(input: &[T], out: &mut [T], slope: &mut [T]) {
    assert!(input.len() == out.len() && input.len() == slope.len());
    for ((o, s), &z) in out.iter_mut().zip(slope.iter_mut()).zip(input) {
        (*o, *s) = tanh_pair(z);
    }
}

multiversion!(
    /// `out = tanh'(input) = sech^2(input)`.
    pub fn tanh_derivative_slice<T: Float>(input: &[T], out: &mut [T]) -> () = tanh_derivative_kernel
);

#[inline(always)]
fn tanh_derivative_kernel<T: Float>(input: &[T], out: &mut [T]) {
    assert_eq!(input.len(), out.len());
    for (o, &z) in out.iter_mut().zip(input) {
        *o = tanh_pair(z).1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> f64 {
        if a == b {
            return 0.0;
        }
        let spacing = f64::from_bits(b.abs().to_bits() + 1) - b.abs();
        ((a - b) / spacing).abs()
    }

    fn grid() -> Vec<f64> {
        let mut v: Vec<f64> = (-40_000..=40_000).map(|i| i as f64 * 1e-3).collect();
        v.extend((1..=300).map(|e| 10f64.powi(-e)));
        v.extend((1..=300).map(|e| -(10f64.powi(-e))));
        v.extend([
            0.0,
            -0.0,
            350.0,
            -350.0,
            1e300,
            -1e300,
            f64::MIN_POSITIVE,
            5e-324,
        ]);
        v
    }

    #[test]
    fn tanh_is_within_two_ulp_of_libm_at_every_level() {
        let z = grid();
        let mut t = vec![0.0; z.len()];
        tanh_slice(&z, &mut t);
        let worst = z
            .iter()
            .zip(&t)
            .map(|(&z, &t)| ulps(t, z.tanh()))
            .fold(0.0, f64::max);
        assert!(
            worst <= 2.0,
            "worst tanh error {worst} ulp at level {:?}",
            level()
        );
        // the scalar kernel agrees with the dispatched one bit for bit (same operations)
        let scalar: Vec<f64> = z.iter().map(|&z| tanh_and_derivative(z).0).collect();
        assert_eq!(scalar, t);
    }

    #[test]
    fn tanh_derivative_is_accurate_in_saturation() {
        let z = grid();
        let mut d = vec![0.0; z.len()];
        tanh_derivative_slice(&z, &mut d);
        for (&z, &d) in z.iter().zip(&d) {
            let exact = if z.abs() > 300.0 {
                0.0
            } else {
                1.0 / z.cosh().powi(2)
            };
            if exact == 0.0 {
                assert!(d < 1e-300, "{z}: {d}");
            } else if exact > 1e-300 {
                assert!(((d - exact) / exact).abs() < 1e-14, "{z}: {d} vs {exact}");
            }
        }
    }

    #[test]
    fn float32_goes_through_float64_and_rounds_once() {
        let z: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 1e-3).collect();
        let mut t = vec![0.0f32; z.len()];
        tanh_slice(&z, &mut t);
        for (&z, &t) in z.iter().zip(&t) {
            let exact = (z as f64).tanh();
            let spacing = f32::from_bits((exact.abs() as f32).to_bits() + 1) as f64
                - (exact.abs() as f32) as f64;
            assert!((t as f64 - exact).abs() <= spacing, "{z}: {t} vs {exact}");
        }
    }
}
