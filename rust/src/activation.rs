//! Elementwise nonlinearities and their exact derivatives.
//!
//! At a kink the derivative is the left-hand one (the `z <= 0` branch), as in PyTorch:
//! relu'(0) = 0, leaky_relu'(0) = negative_slope, elu'(0) = alpha, selu'(0) = lambda * alpha.
//! Derivatives are computed from `z` in forms that stay accurate in saturation
//! (e.g. tanh'(z) = sech^2(z) from exp(-2|z|), not 1 - tanh(z)^2).

use crate::error::Result;
use crate::float::Float;
use crate::invalid;
use crate::simd;

/// SELU's scale, lambda (Klambauer et al. 2017).
pub const SELU_LAMBDA: f64 = 1.050_700_987_355_480_5;
/// SELU's alpha.
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_2;

/// The activation names of SPEC §1, in a fixed order.
pub const ACTIVATION_NAMES: [&str; 11] = [
    "identity",
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "tanh",
    "sigmoid",
    "softplus",
    "sin",
];

/// An elementwise nonlinearity `phi`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    LeakyRelu { negative_slope: f64 },
    Elu { alpha: f64 },
    Selu,
    Gelu,
    Silu,
    Tanh,
    Sigmoid,
    Softplus,
    Sin,
}

impl Activation {
    /// Builds an activation from its SPEC name and its (name, value) parameters.
    pub fn from_name(name: &str, params: &[(String, f64)]) -> Result<Self> {
        let allowed: &[&str] = match name {
            "leaky_relu" => &["negative_slope"],
            "elu" => &["alpha"],
            _ => &[],
        };
        for (key, value) in params {
            if !allowed.contains(&key.as_str()) {
                return if allowed.is_empty() {
                    invalid!("activation '{name}' takes no parameters, got '{key}'")
                } else {
                    invalid!(
                        "activation '{name}' has no parameter '{key}' (it takes: {})",
                        allowed.join(", ")
                    )
                };
            }
            if !value.is_finite() {
                return invalid!(
                    "activation '{name}': parameter '{key}' must be finite, got {value}"
                );
            }
        }
        let get = |key: &str, default: f64| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| *v)
                .unwrap_or(default)
        };
        Ok(match name {
            "identity" => Activation::Identity,
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu {
                negative_slope: get("negative_slope", 0.01),
            },
            "elu" => Activation::Elu {
                alpha: get("alpha", 1.0),
            },
            "selu" => Activation::Selu,
            "gelu" => Activation::Gelu,
            "silu" => Activation::Silu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "softplus" => Activation::Softplus,
            "sin" => Activation::Sin,
            _ => {
                return invalid!(
                    "unknown activation '{name}'; expected one of: {}",
                    ACTIVATION_NAMES.join(", ")
                )
            }
        })
    }

    /// The SPEC name.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Elu { .. } => "elu",
            Activation::Selu => "selu",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Softplus => "softplus",
            Activation::Sin => "sin",
        }
    }

    /// `phi(z)`.
    #[inline]
    pub fn apply<T: Float>(&self, z: T) -> T {
        let zero = T::zero();
        match *self {
            Activation::Identity => z,
            Activation::Relu => {
                if z > zero {
                    z
                } else {
                    zero
                }
            }
            Activation::LeakyRelu { negative_slope } => {
                if z > zero {
                    z
                } else {
                    z * T::from_f64(negative_slope)
                }
            }
            Activation::Elu { alpha } => {
                if z > zero {
                    z
                } else {
                    T::from_f64(alpha) * z.exp_m1()
                }
            }
            Activation::Selu => {
                let lambda = T::from_f64(SELU_LAMBDA);
                if z > zero {
                    lambda * z
                } else {
                    lambda * T::from_f64(SELU_ALPHA) * z.exp_m1()
                }
            }
            // z * Phi(z), Phi(z) = erfc(-z / sqrt 2) / 2 (accurate also for very negative z).
            Activation::Gelu => z * std_normal_cdf(z),
            Activation::Silu => z * sigmoid(z),
            Activation::Tanh => simd::tanh_pair(z).0,
            Activation::Sigmoid => sigmoid(z),
            // log(1 + e^z) = max(z, 0) + log1p(e^-|z|)
            Activation::Softplus => z.max(zero) + (-z.abs()).exp().ln_1p(),
            Activation::Sin => z.sin(),
        }
    }

    /// `phi'(z)`, the left-hand derivative at a kink.
    #[inline]
    pub fn derivative<T: Float>(&self, z: T) -> T {
        let zero = T::zero();
        let one = T::one();
        match *self {
            Activation::Identity => one,
            Activation::Relu => {
                if z > zero {
                    one
                } else {
                    zero
                }
            }
            Activation::LeakyRelu { negative_slope } => {
                if z > zero {
                    one
                } else {
                    T::from_f64(negative_slope)
                }
            }
            Activation::Elu { alpha } => {
                if z > zero {
                    one
                } else {
                    T::from_f64(alpha) * z.exp()
                }
            }
            Activation::Selu => {
                let lambda = T::from_f64(SELU_LAMBDA);
                if z > zero {
                    lambda
                } else {
                    lambda * T::from_f64(SELU_ALPHA) * z.exp()
                }
            }
            // Phi(z) + z phi(z)
            Activation::Gelu => {
                let density = (-(z * z) / T::from_f64(2.0)).exp()
                    * T::from_f64(
                        std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 * 0.5,
                    );
                std_normal_cdf(z) + z * density
            }
            // sigma(z) + z sigma(z) sigma(-z)
            Activation::Silu => {
                let s = sigmoid(z);
                s + z * sigmoid_product(z)
            }
            // sech^2(z) = 4 e^{-2|z|} / (1 + e^{-2|z|})^2, the same kernel as the SIMD path
            Activation::Tanh => simd::tanh_pair(z).1,
            Activation::Sigmoid => sigmoid_product(z),
            Activation::Softplus => sigmoid(z),
            Activation::Sin => z.cos(),
        }
    }
}

impl Activation {
    /// `y[i] = phi(z[i])`, vectorised where a SIMD kernel exists (tanh).
    pub fn apply_slice<T: Float>(&self, z: &[T], y: &mut [T]) {
        match self {
            Activation::Tanh => simd::tanh_slice(z, y),
            _ => y.iter_mut().zip(z).for_each(|(y, &z)| *y = self.apply(z)),
        }
    }

    /// Whether `phi` maps finite values to finite values in every dtype (`|phi(z)| <= max(|z|, 1)`),
    /// so a forward pass need not check its output (its input was checked).
    pub fn keeps_finite(&self) -> bool {
        matches!(
            self,
            Activation::Identity
                | Activation::Relu
                | Activation::Tanh
                | Activation::Sigmoid
                | Activation::Sin
        )
    }

    /// `y[i] = phi(z[i])` and `d[i] = phi'(z[i])` (tanh: from one exponential).
    pub fn apply_with_derivative_slice<T: Float>(&self, z: &[T], y: &mut [T], d: &mut [T]) {
        match self {
            Activation::Tanh => simd::tanh_with_derivative_slice(z, y, d),
            _ => {
                self.apply_slice(z, y);
                self.derivative_slice(z, d);
            }
        }
    }

    /// `d[i] = phi'(z[i])`, vectorised where a SIMD kernel exists (tanh).
    pub fn derivative_slice<T: Float>(&self, z: &[T], d: &mut [T]) {
        match self {
            Activation::Tanh => simd::tanh_derivative_slice(z, d),
            _ => d
                .iter_mut()
                .zip(z)
                .for_each(|(d, &z)| *d = self.derivative(z)),
        }
    }
}

/// The standard normal CDF, `erfc(-z / sqrt 2) / 2`.
#[inline]
fn std_normal_cdf<T: Float>(z: T) -> T {
    T::from_f64(0.5) * (-z * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erfc()
}

/// The logistic function, computed without overflow for either sign.
#[inline]
fn sigmoid<T: Float>(z: T) -> T {
    let one = T::one();
    if z >= T::zero() {
        one / (one + (-z).exp())
    } else {
        let e = z.exp();
        e / (one + e)
    }
}

/// `sigma(z) * sigma(-z) = e^{-|z|} / (1 + e^{-|z|})^2`, accurate in both tails.
#[inline]
fn sigmoid_product<T: Float>(z: T) -> T {
    let e = (-z.abs()).exp();
    let d = T::one() + e;
    e / (d * d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Activation> {
        ACTIVATION_NAMES
            .iter()
            .map(|n| Activation::from_name(n, &[]).unwrap())
            .chain([
                Activation::LeakyRelu {
                    negative_slope: 0.2,
                },
                Activation::Elu { alpha: 0.7 },
            ])
            .collect()
    }

    #[test]
    fn derivative_matches_central_difference_away_from_kinks() {
        for act in all() {
            for &z in &[-3.1, -0.7, -0.01, 0.013, 0.4, 2.9, 7.5] {
                let h = 1e-6;
                let fd = (act.apply(z + h) - act.apply(z - h)) / (2.0 * h);
                let d: f64 = act.derivative(z);
                assert!(
                    (fd - d).abs() < 1e-7 * (1.0 + d.abs()),
                    "{act:?} at {z}: {fd} vs {d}"
                );
            }
        }
    }

    #[test]
    fn kinks_take_the_left_hand_derivative() {
        assert_eq!(Activation::Relu.derivative(0.0f64), 0.0);
        assert_eq!(
            Activation::LeakyRelu {
                negative_slope: 0.01
            }
            .derivative(0.0f64),
            0.01
        );
        assert_eq!(Activation::Elu { alpha: 1.5 }.derivative(0.0f64), 1.5);
        assert_eq!(
            Activation::Selu.derivative(0.0f64),
            SELU_LAMBDA * SELU_ALPHA
        );
    }

    #[test]
    fn saturated_values_stay_accurate() {
        // tanh'(20) = sech^2(20) ~ 1.7e-17: 1 - tanh^2 would give 0.
        let d: f64 = Activation::Tanh.derivative(20.0);
        let exact = 1.0 / 20f64.cosh().powi(2);
        assert!((d - exact).abs() < 1e-14 * exact);
        let s: f64 = Activation::Softplus.apply(-800.0);
        assert!(s >= 0.0 && s < 1e-300);
        assert_eq!(Activation::Softplus.apply(800.0f64), 800.0);
        let g: f64 = Activation::Gelu.apply(-10.0);
        assert!(g < 0.0 && g > -1e-21);
    }

    #[test]
    fn unknown_names_and_parameters_are_rejected() {
        assert!(Activation::from_name("swish", &[]).is_err());
        assert!(Activation::from_name("relu", &[("alpha".into(), 1.0)]).is_err());
        assert!(Activation::from_name("elu", &[("alpha".into(), f64::NAN)]).is_err());
        assert_eq!(
            Activation::from_name("elu", &[("alpha".into(), 2.0)]).unwrap(),
            Activation::Elu { alpha: 2.0 }
        );
    }
}
