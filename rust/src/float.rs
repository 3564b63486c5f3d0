//! The scalar type of a network: `f32` or `f64`.

use ndarray::{LinalgScalar, ScalarOperand};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A real floating-point scalar the engine computes in.
pub trait Float:
    num_traits::Float
    + LinalgScalar
    + ScalarOperand
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// `"float32"` or `"float64"`, as NumPy spells it.
    const NAME: &'static str;
    /// The complementary error function (from `libm`; std has none).
    fn erfc(self) -> Self;
    fn from_f64(x: f64) -> Self;
    fn as_f64(self) -> f64;
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
}

impl Float for f64 {
    const NAME: &'static str = "float64";
    #[inline]
    fn erfc(self) -> Self {
        libm::erfc(self)
    }
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}

impl Float for f32 {
    const NAME: &'static str = "float32";
    #[inline]
    fn erfc(self) -> Self {
        libm::erfcf(self)
    }
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
}
