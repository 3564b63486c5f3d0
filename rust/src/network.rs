//! The network model: the layer tree users describe (SPEC §1), validated and compiled into a flat
//! program of [`Node`]s over numbered *slots* (stored values). Forward passes, VJPs and JVPs all walk
//! that one program, so a `Residual` is handled once, here, and nowhere else.
//!
//! Slot 0 is the input `x`. Every node reads one slot (an `Add` node reads two) and writes a new one.
//! Point `p_i` (SPEC §1) is the slot written by the last node of the i-th top-level layer.

use ndarray::{Array1, Array2};

use crate::activation::Activation;
use crate::error::Result;
use crate::float::Float;
use crate::invalid;

/// A fully connected layer, `y = x @ weight.T + bias` (weight in PyTorch layout `(d_out, d_in)`).
#[derive(Debug, Clone)]
pub struct DenseParams<T> {
    pub weight: Array2<T>,
    pub bias: Option<Array1<T>>,
}

/// Shared parameters of LayerNorm and BatchNorm: `(x - mean) / sqrt(var + eps) * weight + bias`.
#[derive(Debug, Clone)]
pub struct NormParams<T> {
    pub eps: T,
    pub weight: Option<Array1<T>>,
    pub bias: Option<Array1<T>>,
}

/// A layer as the user describes it.
#[derive(Debug, Clone)]
pub enum Layer<T> {
    Dense(DenseParams<T>),
    Activation(Activation),
    /// Normalises each sample over its features.
    LayerNorm(NormParams<T>),
    /// Normalises each feature over the batch (training-mode statistics): couples the samples.
    BatchNorm(NormParams<T>),
    /// `y = shortcut(x) + alpha * body(x)`; the shortcut is the identity when `None`.
    Residual {
        body: Vec<Layer<T>>,
        alpha: T,
        shortcut: Option<DenseParams<T>>,
    },
}

impl<T> Layer<T> {
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Dense(_) => "Dense",
            Layer::Activation(_) => "Activation",
            Layer::LayerNorm(_) => "LayerNorm",
            Layer::BatchNorm(_) => "BatchNorm",
            Layer::Residual { .. } => "Residual",
        }
    }
}

/// Index of a stored value in a [`crate::forward::Trace`].
pub type Slot = usize;

/// One step of the compiled program.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op<T> {
    /// Index into [`Network::dense`] (depth-first order, SPEC §2).
    Dense(usize),
    Activation(Activation),
    /// Index into [`Network::norms`].
    LayerNorm(usize),
    /// Index into [`Network::norms`].
    BatchNorm(usize),
    /// `output = shortcut + alpha * input` (the end of a residual block; `input` is the body's output).
    Add {
        shortcut: Slot,
        alpha: T,
    },
}

#[derive(Debug, Clone)]
pub struct Node<T> {
    pub op: Op<T>,
    pub input: Slot,
    pub output: Slot,
    /// Where the layer sits, as Python spells it: `layers[3].body[1]`.
    pub label: String,
}

/// A validated network compiled into nodes.
#[derive(Debug, Clone)]
pub struct Network<T> {
    pub nodes: Vec<Node<T>>,
    /// Every Dense layer, depth-first: a Residual's body, then its shortcut.
    pub dense: Vec<DenseParams<T>>,
    /// Whether each Dense layer is a residual shortcut projection.
    pub dense_is_shortcut: Vec<bool>,
    /// `weight.T` of every Dense layer, contiguous: the fast operand layout for `x @ W.T`.
    pub dense_t: Vec<Array2<T>>,
    pub norms: Vec<NormParams<T>>,
    /// `point_slots[i]` holds `p_i`, `i = 0..=N`.
    pub point_slots: Vec<Slot>,
    /// Nodes of top-level layer `l` (1-based, as points) are `layer_nodes[l - 1]..layer_nodes[l]`.
    layer_nodes: Vec<usize>,
    /// Width of every slot; `None` only when no layer fixes a width (then all equal the input's).
    slot_width: Vec<Option<usize>>,
    /// Inputs of every Activation node, depth-first in execution order.
    pub pre_activation_slots: Vec<Slot>,
    /// Top-level layer index (1-based) and label of every BatchNorm, nested ones included.
    pub batchnorm_layers: Vec<(usize, String)>,
}

struct Compiler<T> {
    nodes: Vec<Node<T>>,
    dense: Vec<DenseParams<T>>,
    dense_is_shortcut: Vec<bool>,
    norms: Vec<NormParams<T>>,
    slot_width: Vec<Option<usize>>,
    /// The first width any layer fixed: every earlier slot has this width too.
    in_dim: Option<usize>,
    batchnorm_layers: Vec<(usize, String)>,
    top_level: usize,
}

fn check_finite<T: Float>(
    values: impl IntoIterator<Item = T>,
    what: &str,
    label: &str,
) -> Result<()> {
    for (i, v) in values.into_iter().enumerate() {
        if !v.is_finite() {
            return invalid!("{label}: {what} contains a non-finite value ({v}) at flat index {i}");
        }
    }
    Ok(())
}

impl<T: Float> Compiler<T> {
    fn new_slot(&mut self, width: Option<usize>) -> Slot {
        self.slot_width.push(width);
        self.slot_width.len() - 1
    }

    /// Checks that the current width is `want` (fixing it if still unknown).
    fn expect_width(
        &mut self,
        current: Option<usize>,
        want: usize,
        label: &str,
        what: &str,
    ) -> Result<usize> {
        match current {
            Some(w) if w != want => {
                invalid!("{label}: {what} expects width {want}, but its input has width {w}")
            }
            Some(w) => Ok(w),
            None => {
                // Only width-preserving, parameter-free layers came before: they all have width `want`.
                self.in_dim = Some(want);
                Ok(want)
            }
        }
    }

    fn dense(
        &mut self,
        p: DenseParams<T>,
        input: Slot,
        width: Option<usize>,
        label: String,
        shortcut: bool,
    ) -> Result<(Slot, Option<usize>)> {
        let (d_out, d_in) = p.weight.dim();
        if d_out == 0 || d_in == 0 {
            return invalid!("{label}: Dense weight has shape ({d_out}, {d_in}); zero-width layers are not allowed");
        }
        if let Some(b) = &p.bias {
            if b.len() != d_out {
                return invalid!("{label}: Dense bias has shape ({},) but weight has shape ({d_out}, {d_in}); expected ({d_out},)", b.len());
            }
            check_finite(b.iter().copied(), "bias", &label)?;
        }
        check_finite(p.weight.iter().copied(), "weight", &label)?;
        self.expect_width(
            width,
            d_in,
            &label,
            &format!("Dense with weight of shape ({d_out}, {d_in})"),
        )?;
        let output = self.new_slot(Some(d_out));
        self.dense.push(p);
        self.dense_is_shortcut.push(shortcut);
        self.nodes.push(Node {
            op: Op::Dense(self.dense.len() - 1),
            input,
            output,
            label,
        });
        Ok((output, Some(d_out)))
    }

    fn layer(
        &mut self,
        layer: Layer<T>,
        input: Slot,
        width: Option<usize>,
        label: String,
    ) -> Result<(Slot, Option<usize>)> {
        let label = format!("{label} ({})", layer.kind());
        match layer {
            Layer::Dense(p) => self.dense(p, input, width, label, false),
            Layer::Activation(a) => {
                let output = self.new_slot(width);
                self.nodes.push(Node {
                    op: Op::Activation(a),
                    input,
                    output,
                    label,
                });
                Ok((output, width))
            }
            Layer::LayerNorm(p) => self.norm(p, input, width, label, false),
            Layer::BatchNorm(p) => self.norm(p, input, width, label, true),
            Layer::Residual {
                body,
                alpha,
                shortcut,
            } => {
                if !alpha.is_finite() {
                    return invalid!("{label}: alpha must be finite, got {alpha}");
                }
                let body_label = label.trim_end_matches(" (Residual)").to_string();
                let (mut slot, mut w) = (input, width);
                for (k, inner) in body.into_iter().enumerate() {
                    (slot, w) = self.layer(inner, slot, w, format!("{body_label}.body[{k}]"))?;
                }
                let (shortcut_slot, shortcut_width) = match shortcut {
                    None => (input, width),
                    Some(p) => self.dense(
                        p,
                        input,
                        width,
                        format!("{body_label}.shortcut (Dense)"),
                        true,
                    )?,
                };
                // Widths may have been fixed inside the body after `width` was read.
                let shortcut_width = shortcut_width.or(self.in_dim);
                let w = w.or(self.in_dim);
                if let (Some(a), Some(b)) = (shortcut_width, w) {
                    if a != b {
                        let what = if shortcut_slot == input {
                            "input (identity shortcut)"
                        } else {
                            "shortcut output"
                        };
                        return invalid!("{label}: body output has width {b} but the {what} has width {a}; they must match");
                    }
                }
                let output = self.new_slot(w);
                self.nodes.push(Node {
                    op: Op::Add {
                        shortcut: shortcut_slot,
                        alpha,
                    },
                    input: slot,
                    output,
                    label,
                });
                Ok((output, w))
            }
        }
    }

    fn norm(
        &mut self,
        p: NormParams<T>,
        input: Slot,
        mut width: Option<usize>,
        label: String,
        batch: bool,
    ) -> Result<(Slot, Option<usize>)> {
        if !(p.eps > T::zero() && p.eps.is_finite()) {
            return invalid!("{label}: eps must be positive and finite, got {}", p.eps);
        }
        for (what, v) in [("weight", &p.weight), ("bias", &p.bias)] {
            if let Some(v) = v {
                if v.is_empty() {
                    return invalid!("{label}: {what} is empty; zero-width layers are not allowed");
                }
                width = Some(self.expect_width(
                    width,
                    v.len(),
                    &label,
                    &format!("{what} of shape ({},)", v.len()),
                )?);
                check_finite(v.iter().copied(), what, &label)?;
            }
        }
        self.norms.push(p);
        let index = self.norms.len() - 1;
        let output = self.new_slot(width);
        if batch {
            self.batchnorm_layers.push((self.top_level, label.clone()));
        }
        let op = if batch {
            Op::BatchNorm(index)
        } else {
            Op::LayerNorm(index)
        };
        self.nodes.push(Node {
            op,
            input,
            output,
            label,
        });
        Ok((output, width))
    }
}

impl<T: Float> Network<T> {
    /// Validates `layers` (widths chain, shapes agree, parameters finite) and compiles them.
    pub fn new(layers: Vec<Layer<T>>) -> Result<Self> {
        let mut c = Compiler {
            nodes: vec![],
            dense: vec![],
            dense_is_shortcut: vec![],
            norms: vec![],
            slot_width: vec![None],
            in_dim: None,
            batchnorm_layers: vec![],
            top_level: 0,
        };
        let mut point_slots = vec![0];
        let mut layer_nodes = vec![0];
        let (mut slot, mut width) = (0, None);
        for (l, layer) in layers.into_iter().enumerate() {
            c.top_level = l + 1;
            (slot, width) = c.layer(layer, slot, width, format!("layers[{l}]"))?;
            width = width.or(c.in_dim);
            point_slots.push(slot);
            layer_nodes.push(c.nodes.len());
        }
        // Slots before the first width-fixing layer share the input's width.
        let slot_width = c.slot_width.iter().map(|w| w.or(c.in_dim)).collect();
        let pre_activation_slots = c
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Activation(_)))
            .map(|n| n.input)
            .collect();
        Ok(Network {
            nodes: c.nodes,
            dense_t: c
                .dense
                .iter()
                .map(|p| p.weight.t().as_standard_layout().into_owned())
                .collect(),
            dense: c.dense,
            dense_is_shortcut: c.dense_is_shortcut,
            norms: c.norms,
            point_slots,
            layer_nodes,
            slot_width,
            pre_activation_slots,
            batchnorm_layers: c.batchnorm_layers,
        })
    }

    /// `N`, the number of top-level layers.
    pub fn num_layers(&self) -> usize {
        self.point_slots.len() - 1
    }

    pub fn num_slots(&self) -> usize {
        self.slot_width.len()
    }

    /// For every point `i`, the number of Dense layers in top-level layers `i+1..=N`, counting
    /// residual bodies (nested too) but not shortcuts: the compositional depth from `p_i` to the
    /// output, which the explosion rate is fitted against (SPEC §3).
    pub fn dense_layers_after(&self) -> Vec<usize> {
        let n = self.num_layers();
        let on_path =
            |node: &Node<T>| matches!(node.op, Op::Dense(i) if !self.dense_is_shortcut[i]);
        let per_layer: Vec<usize> = (1..=n)
            .map(|l| {
                self.nodes[self.nodes_of_layers(l, l)]
                    .iter()
                    .filter(|nd| on_path(nd))
                    .count()
            })
            .collect();
        (0..=n).map(|i| per_layer[i..].iter().sum()).collect()
    }

    /// The activation if top-level layer `l` (1-based) is an Activation layer (a diagonal Jacobian).
    pub fn top_level_activation(&self, l: usize) -> Option<Activation> {
        if l == 0 {
            return None;
        }
        match self.nodes[self.nodes_of_layers(l, l)] {
            [Node {
                op: Op::Activation(a),
                ..
            }] => Some(a),
            _ => None,
        }
    }

    /// For every slot, the point it holds, if any.
    pub fn slot_points(&self) -> Vec<Option<usize>> {
        let mut of = vec![None; self.num_slots()];
        for (i, &s) in self.point_slots.iter().enumerate() {
            of[s] = Some(i);
        }
        of
    }

    /// The input width if some layer fixes it.
    pub fn in_dim(&self) -> Option<usize> {
        self.slot_width[0]
    }

    /// The width of every slot for an input of width `d0` (checked against [`Self::in_dim`]).
    pub fn slot_widths(&self, d0: usize) -> Result<Vec<usize>> {
        if d0 == 0 {
            return invalid!("x has zero features; zero-width inputs are not allowed");
        }
        if let Some(d) = self.in_dim() {
            if d != d0 {
                return invalid!("x has {d0} features but the network expects {d} (the input width of its first layer with parameters)");
            }
        }
        Ok(self.slot_width.iter().map(|w| w.unwrap_or(d0)).collect())
    }

    /// Nodes of top-level layers `first..=last` (1-based), in execution order.
    pub fn nodes_of_layers(&self, first: usize, last: usize) -> std::ops::Range<usize> {
        if first > last {
            return 0..0;
        }
        self.layer_nodes[first - 1]..self.layer_nodes[last]
    }

    /// The first BatchNorm inside top-level layers `first..=last` (1-based), if any.
    pub fn batchnorm_between(&self, first: usize, last: usize) -> Option<&str> {
        self.batchnorm_layers
            .iter()
            .find(|(l, _)| *l >= first && *l <= last)
            .map(|(_, label)| label.as_str())
    }

    pub fn has_batchnorm(&self) -> bool {
        !self.batchnorm_layers.is_empty()
    }

    /// Resolves a Python-style point index (negative counts from the end) to `0..=N`.
    pub fn resolve_point(&self, point: i64, what: &str) -> Result<usize> {
        let n = self.num_layers() as i64;
        let p = if point < 0 { point + n + 1 } else { point };
        if p < 0 || p > n {
            return invalid!(
                "{what}={point} is out of range: this network has points 0..={n} (or -{}..=-1)",
                n + 1
            );
        }
        Ok(p as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn dense(d_out: usize, d_in: usize) -> Layer<f64> {
        Layer::Dense(DenseParams {
            weight: Array2::ones((d_out, d_in)),
            bias: None,
        })
    }

    #[test]
    fn widths_chain_through_residuals() {
        let net = Network::new(vec![
            Layer::Activation(Activation::Tanh),
            dense(4, 3),
            Layer::Residual {
                body: vec![dense(4, 4), Layer::Activation(Activation::Relu)],
                alpha: 0.5,
                shortcut: None,
            },
            Layer::Residual {
                body: vec![dense(2, 4)],
                alpha: 1.0,
                shortcut: Some(DenseParams {
                    weight: Array2::ones((2, 4)),
                    bias: None,
                }),
            },
        ])
        .unwrap();
        assert_eq!(net.num_layers(), 4);
        assert_eq!(net.in_dim(), Some(3));
        let widths = net.slot_widths(3).unwrap();
        let points: Vec<usize> = net.point_slots.iter().map(|&s| widths[s]).collect();
        assert_eq!(points, vec![3, 3, 4, 4, 2]);
        assert_eq!(net.dense.len(), 4);
        assert_eq!(net.pre_activation_slots.len(), 2);
        assert!(net.slot_widths(5).is_err());
    }

    #[test]
    fn mismatched_widths_name_the_layer() {
        let err = Network::new(vec![dense(4, 3), dense(2, 5)]).unwrap_err();
        assert!(format!("{err}").contains("layers[1] (Dense)"), "{err}");
        let err = Network::new(vec![
            dense(4, 3),
            Layer::Residual {
                body: vec![dense(2, 4)],
                alpha: 1.0,
                shortcut: None,
            },
        ])
        .unwrap_err();
        assert!(format!("{err}").contains("layers[1] (Residual)"), "{err}");
        let err = Network::new(vec![Layer::LayerNorm(NormParams {
            eps: 1e-5,
            weight: Some(array![1.0, 2.0]),
            bias: Some(array![1.0]),
        })])
        .unwrap_err();
        assert!(format!("{err}").contains("bias"), "{err}");
    }

    #[test]
    fn non_finite_weights_are_rejected() {
        let mut w = Array2::ones((2, 2));
        w[[1, 0]] = f64::NAN;
        let err = Network::new(vec![Layer::Dense(DenseParams {
            weight: w,
            bias: None,
        })])
        .unwrap_err();
        assert!(format!("{err}").contains("non-finite"));
    }
}
