//! Per-sample losses on the network output and their gradients (SPEC §2).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Zip};

use crate::error::Result;
use crate::float::Float;
use crate::forward::check_finite_2d;
use crate::invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// `l_b = 0.5 * ||o_b - y_b||^2`.
    Mse,
    /// `l_b = logsumexp(o_b) - o_b[y_b]`.
    CrossEntropy,
}

impl Loss {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "mse" => Ok(Loss::Mse),
            "cross_entropy" => Ok(Loss::CrossEntropy),
            _ => invalid!("unknown loss '{name}'; expected 'mse' or 'cross_entropy'"),
        }
    }
}

/// What the loss compares the output with.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a, T> {
    /// Zero targets (mse with `y=None`).
    Zeros,
    /// One target vector per sample (mse).
    Values(ArrayView2<'a, T>),
    /// One class per sample (cross_entropy).
    Classes(ArrayView1<'a, i64>),
}

impl<'a, T> Targets<'a, T> {
    /// The targets of samples `rows`.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Targets<'a, T> {
        match *self {
            Targets::Zeros => Targets::Zeros,
            Targets::Values(y) => Targets::Values(y.slice_move(ndarray::s![rows, ..])),
            Targets::Classes(y) => Targets::Classes(y.slice_move(ndarray::s![rows])),
        }
    }
}

/// Checks that `targets` suit `loss` on an output of shape `(batch, d)`.
pub fn check_targets<T: Float>(
    loss: Loss,
    targets: Targets<T>,
    batch: usize,
    d: usize,
) -> Result<()> {
    match (loss, targets) {
        (Loss::Mse, Targets::Zeros) => Ok(()),
        (Loss::Mse, Targets::Values(y)) => {
            if y.dim() != (batch, d) {
                return invalid!("y has shape {:?} but the network output has shape ({batch}, {d}); mse needs targets of the output's shape", y.shape());
            }
            check_finite_2d(y, "y")
        }
        (Loss::CrossEntropy, Targets::Classes(y)) => {
            if y.len() != batch {
                return invalid!(
                    "y has {} class labels but the batch has {batch} samples",
                    y.len()
                );
            }
            if let Some((b, &c)) = y.indexed_iter().find(|(_, &c)| c < 0 || c as usize >= d) {
                return invalid!(
                    "y[{b}] = {c} is not a class index of the {d}-way output (expected 0..{d})"
                );
            }
            Ok(())
        }
        (Loss::CrossEntropy, Targets::Zeros) => {
            invalid!("cross_entropy needs integer class targets y of shape (B,); got y=None")
        }
        (Loss::CrossEntropy, Targets::Values(_)) => {
            invalid!("cross_entropy needs integer class targets y of shape (B,), not a float array")
        }
        (Loss::Mse, Targets::Classes(_)) => {
            invalid!("mse needs float targets of the output's shape (B, d_out), not class labels")
        }
    }
}

/// `ln l_b` per sample, exact where `l_b` itself over- or underflows the dtype (a huge or tiny
/// output): from the output gradient `grad` for mse (`l_b = ||grad_b||^2 / 2`), from the loss for
/// cross_entropy (never out of range there). `-inf` for a zero loss.
pub fn log_losses<T: Float>(losses: &Array1<T>, grad: &Array2<T>, loss: Loss) -> Array1<f64> {
    match loss {
        Loss::Mse => grad
            .rows()
            .into_iter()
            .map(|r| crate::scale::log_sum_squares_of(r) - std::f64::consts::LN_2)
            .collect(),
        Loss::CrossEntropy => losses.mapv(|l| l.as_f64().ln()),
    }
}

/// Per-sample losses `(B,)` and `dL/do` `(B, d)` for the total loss `L = sum_b l_b`.
pub fn loss_and_output_grad<T: Float>(
    out: ArrayView2<T>,
    loss: Loss,
    targets: Targets<T>,
) -> Result<(Array1<T>, Array2<T>)> {
    let (batch, d) = out.dim();
    check_targets(loss, targets, batch, d)?;
    match (loss, targets) {
        (Loss::Mse, Targets::Zeros) => {
            let grad = out.to_owned();
            let losses = grad
                .rows()
                .into_iter()
                .map(|r| T::from_f64(0.5) * r.dot(&r))
                .collect();
            Ok((losses, grad))
        }
        (Loss::Mse, Targets::Values(y)) => {
            let grad = &out - &y;
            let losses = grad
                .rows()
                .into_iter()
                .map(|r| T::from_f64(0.5) * r.dot(&r))
                .collect();
            Ok((losses, grad))
        }
        (Loss::CrossEntropy, Targets::Classes(y)) => {
            let mut grad = Array2::zeros((batch, d));
            let mut losses = Array1::zeros(batch);
            Zip::from(grad.rows_mut())
                .and(&mut losses)
                .and(out.rows())
                .and(&y)
                .for_each(|mut g, l, o, &c| {
                    let c = c as usize;
                    // With m = max o = o_a: sum_k e^{o_k - m} = 1 + S, S = sum_{k != a} e^{o_k - m}, so
                    // l = (m - o_c) + log1p(S) keeps its relative accuracy for confident samples.
                    let (a, m) =
                        o.indexed_iter()
                            .fold(
                                (0, T::neg_infinity()),
                                |(ai, m), (i, &v)| if v > m { (i, v) } else { (ai, m) },
                            );
                    Zip::from(&mut g)
                        .and(o)
                        .for_each(|g, &v| *g = (v - m).exp());
                    let others = g
                        .iter()
                        .enumerate()
                        .filter(|&(i, _)| i != a)
                        .fold(T::zero(), |acc, (_, &e)| acc + e);
                    let total = T::one() + others;
                    g.mapv_inplace(|e| e / total);
                    *l = (m - o[c]) + others.ln_1p();
                    // p_c - 1 = -sum_{k != c} p_k, without cancellation when p_c is close to 1.
                    let rest = g
                        .iter()
                        .enumerate()
                        .filter(|&(i, _)| i != c)
                        .fold(T::zero(), |acc, (_, &p)| acc + p);
                    g[c] = -rest;
                });
            Ok((losses, grad))
        }
        _ => unreachable!("check_targets accepted only the pairs above"),
    }
}
