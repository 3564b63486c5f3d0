//! The forward pass: every slot's value and the normalisation statistics, kept for the
//! backward and tangent passes.

use ndarray::{Array2, ArrayView2};

use crate::cancel::Stop;
use crate::error::Result;
use crate::float::Float;
use crate::invalid;
use crate::kernels::{self, NormStats};
use crate::memory;
use crate::network::{Network, Op};
use crate::scale::all_finite;

/// Everything a forward pass computed.
#[derive(Debug, Clone)]
pub struct Trace<T> {
    /// One `(B, width)` array per slot; slot 0 is the input.
    pub values: Vec<Array2<T>>,
    /// Normalisation statistics of each node (`None` for nodes without).
    pub stats: Vec<Option<NormStats<T>>>,
    /// The slope `phi'(z)` of each Activation node, when the forward pass was asked to keep it
    /// (`None` otherwise: the backward pass then computes it from `z`).
    pub slopes: Vec<Option<Array2<T>>>,
}

impl<T: Float> Trace<T> {
    pub fn batch(&self) -> usize {
        self.values[0].nrows()
    }

    /// Point `p_i`.
    pub fn point(&self, net: &Network<T>, i: usize) -> ArrayView2<'_, T> {
        self.values[net.point_slots[i]].view()
    }
}

/// Checks that a user array has no NaN/Inf, naming the first bad entry.
pub fn check_finite_2d<T: Float>(a: ArrayView2<T>, name: &str) -> Result<()> {
    if a.iter().all(|v| v.is_finite()) {
        return Ok(());
    }
    let ((r, c), v) = a
        .indexed_iter()
        .find(|(_, v)| !v.is_finite())
        .expect("a non-finite entry exists");
    invalid!("{name} contains a non-finite value ({v}) at [{r}, {c}]")
}

/// Checks the input batch: non-empty, the right width, finite.
pub fn check_input<T: Float>(net: &Network<T>, x: ArrayView2<T>) -> Result<Vec<usize>> {
    if x.nrows() == 0 {
        return invalid!(
            "x is an empty batch (shape ({}, {})); pass at least one sample",
            x.nrows(),
            x.ncols()
        );
    }
    let widths = net.slot_widths(x.ncols())?;
    check_finite_2d(x, "x")?;
    Ok(widths)
}

/// Checks a `(B*K, d)` block of `K` vectors per sample placed on point `point`.
pub fn check_block<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    block: ArrayView2<T>,
    k: usize,
    point: usize,
    name: &str,
) -> Result<()> {
    let widths = net.slot_widths(x.ncols())?;
    let d = widths[net.point_slots[point]];
    if k == 0 || block.nrows() != x.nrows() * k {
        return invalid!(
            "{name} has {} rows for K={k} vectors per sample, but x has {} samples",
            block.nrows(),
            x.nrows()
        );
    }
    if block.ncols() != d {
        return invalid!(
            "{name} has width {} but point {point} has width {d}",
            block.ncols()
        );
    }
    check_finite_2d(block, name)
}

/// Bytes of the forward trace of a batch of `batch` samples: every slot's `(B, width)` value.
pub fn trace_bytes<T: Float>(widths: &[usize], batch: usize) -> u128 {
    let elements: u128 = widths.iter().map(|&w| memory::product(&[batch, w])).sum();
    elements.saturating_mul(std::mem::size_of::<T>() as u128)
}

/// Checks the input (see [`check_input`]) and that `bytes(widths)` — the caller's large buffers,
/// e.g. [`trace_bytes`] plus its results — fit in memory, before anything is allocated; returns
/// the slot widths. `what` names the call and `hint` says how to ask for less in the error.
pub fn plan<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    bytes: impl FnOnce(&[usize]) -> u128,
    what: &str,
    hint: &str,
) -> Result<Vec<usize>> {
    let widths = check_input(net, x)?;
    memory::ensure_fits(bytes(&widths), what, hint)?;
    Ok(widths)
}

/// What a node computes, for messages.
fn op_name<T>(op: &Op<T>) -> &'static str {
    match op {
        Op::Dense(_) => "Dense",
        Op::Activation(_) => "Activation",
        Op::LayerNorm(_) => "LayerNorm",
        Op::BatchNorm(_) => "BatchNorm",
        Op::Add { .. } => "Residual (shortcut + alpha * body)",
    }
}

/// Runs the network on `x` of shape `(B, d_0)`.
pub fn forward<T: Float>(net: &Network<T>, x: ArrayView2<T>, stop: &Stop) -> Result<Trace<T>> {
    let batch = x.nrows();
    plan(
        net,
        x,
        |w| trace_bytes::<T>(w, batch),
        "the forward pass (every layer's output for every sample)",
        "pass fewer samples at a time",
    )?;
    forward_checked(net, x, false, stop)
}

/// [`forward`] on an input [`check_input`] already accepted (e.g. a tile of a checked batch);
/// with `keep_slopes`, every Activation also stores its slope for the backward pass (computed
/// with its value, from one exponential for tanh).
///
/// Every value the pass computes is checked: one that overflows the dtype (from finite inputs
/// and weights) raises an error naming the layer, so no `inf` or NaN can silently spread into
/// the gradients (`inf - inf`) or vanish again (`relu(NaN) = 0`).
pub fn forward_checked<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    keep_slopes: bool,
    stop: &Stop,
) -> Result<Trace<T>> {
    let mut values = Vec::with_capacity(net.num_slots());
    values.push(x.as_standard_layout().into_owned());
    let mut stats = Vec::with_capacity(net.nodes.len());
    let mut slopes = Vec::with_capacity(net.nodes.len());
    for node in &net.nodes {
        stop.check()?;
        let input = values[node.input].view();
        let (out, st) = match node.op {
            Op::Dense(i) => (
                kernels::dense_forward(input, &net.dense[i], net.dense_t[i].view()),
                None,
            ),
            Op::Activation(a) if keep_slopes => {
                let (y, d) = kernels::activation_forward_with_slopes(a, input);
                slopes.push(Some(d));
                (y, None)
            }
            Op::Activation(a) => (kernels::activation_forward(a, input), None),
            Op::LayerNorm(i) => {
                let (y, s) = kernels::layernorm_forward(input, &net.norms[i]);
                (y, Some(s))
            }
            Op::BatchNorm(i) => {
                let (y, s) = kernels::batchnorm_forward(input, &net.norms[i]);
                (y, Some(s))
            }
            Op::Add { shortcut, alpha } => (
                kernels::add_scaled(values[shortcut].view(), alpha, input),
                None,
            ),
        };
        debug_assert_eq!(values.len(), node.output);
        let checked_input = matches!(node.op, Op::Activation(a) if a.keeps_finite());
        let finite = checked_input
            || match out.as_slice() {
                Some(v) => all_finite(v),
                None => out.iter().all(|v| v.is_finite()),
            };
        if !finite {
            let ((_, c), v) = out
                .indexed_iter()
                .find(|(_, v)| !v.is_finite())
                .expect("a non-finite entry exists");
            let largest = x.iter().fold(0.0f64, |m, v| m.max(v.as_f64().abs()));
            return invalid!(
                "the forward pass left the range of {dtype}: {label} ({kind}) computed {v} in unit {c} \
                 from finite inputs (largest |x| = {largest:e}); its true values exceed what {dtype} can hold. \
                 Scale the input down{alt}",
                dtype = T::NAME,
                label = node.label,
                kind = op_name(&node.op),
                alt = if T::NAME == "float32" { " or use dtype='float64'" } else { "" },
            );
        }
        values.push(out);
        stats.push(st);
        slopes.resize(stats.len(), None);
    }
    Ok(Trace {
        values,
        stats,
        slopes,
    })
}
