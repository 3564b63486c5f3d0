//! Vector-Jacobian products: cotangents flow from a point back to the input, through every
//! node of the compiled program in reverse (SPEC §2).

use std::ops::Range;

use ndarray::{s, Array1, Array2, Array3, ArrayView2};
use rayon::prelude::*;

use crate::cancel::Stop;
use crate::error::{CoreError, Result};
use crate::float::Float;
use crate::forward::{self, Trace};
use crate::kernels::{self, Direction};
use crate::loss::{self, Loss, Targets};
use crate::memory;
use crate::network::{Network, Op, Slot};
use crate::scale::{descale, ldexp, Exponents};

/// Gradients of every Dense layer's parameters (depth-first), one per cotangent `k`:
/// `weights[l]` has shape `(K, d_out, d_in)`, `biases[l]` `(K, d_out)` or `None` without a bias.
/// With rescaling, the true gradients are these times `2^exponents[l]`.
#[derive(Debug, Clone)]
pub struct ParamGrads<T> {
    pub weights: Vec<Array3<T>>,
    pub biases: Vec<Option<Array2<T>>>,
    pub exponents: Vec<i32>,
}

impl<T: Float> ParamGrads<T> {
    /// The sum of two gradients (e.g. of two tiles of samples), aligned to the larger exponent
    /// of each layer by exact powers of two.
    pub fn add(self, other: ParamGrads<T>) -> Self {
        Self::sum_in_order(vec![self, other]).expect("two terms")
    }

    /// The sum of `parts` in their order (`None` for none), layer by layer in parallel: each
    /// layer's terms are added in the same fixed order, so the bits do not depend on the threads.
    pub fn sum_in_order(parts: Vec<ParamGrads<T>>) -> Option<Self> {
        let layers = parts.first()?.weights.len();
        let mut per_layer: Vec<Vec<LayerGrads<T>>> = (0..layers)
            .map(|_| Vec::with_capacity(parts.len()))
            .collect();
        for p in parts {
            let terms = p.weights.into_iter().zip(p.biases).zip(p.exponents);
            for (l, ((w, b), e)) in terms.enumerate() {
                per_layer[l].push((w, b, e));
            }
        }
        let summed: Vec<LayerGrads<T>> = per_layer
            .into_par_iter()
            .map(|terms| {
                let mut terms = terms.into_iter();
                let first = terms.next().expect("every part has every layer");
                terms.fold(first, |(mut w, mut b, e), (ow, ob, oe)| {
                    let top = e.max(oe);
                    let (f, of) = (
                        T::from_f64(((e - top) as f64).exp2()),
                        T::from_f64(((oe - top) as f64).exp2()),
                    );
                    if e == oe {
                        w += &ow; // the usual case: a plain (vectorised) sum
                        if let (Some(b), Some(ob)) = (b.as_mut(), ob.as_ref()) {
                            *b += ob;
                        }
                    } else {
                        w.zip_mut_with(&ow, |a, &o| *a = *a * f + o * of);
                        if let (Some(b), Some(ob)) = (b.as_mut(), ob.as_ref()) {
                            b.zip_mut_with(ob, |a, &o| *a = *a * f + o * of);
                        }
                    }
                    (w, b, top)
                })
            })
            .collect();
        let mut sum = ParamGrads {
            weights: Vec::with_capacity(layers),
            biases: Vec::with_capacity(layers),
            exponents: Vec::with_capacity(layers),
        };
        for (w, b, e) in summed {
            sum.weights.push(w);
            sum.biases.push(b);
            sum.exponents.push(e);
        }
        Some(sum)
    }
}

/// One Dense layer's gradients: weight, bias, exponent.
type LayerGrads<T> = (Array3<T>, Option<Array2<T>>, i32);

/// What a VJP computes besides the point blocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct VjpOptions {
    /// Also compute the Dense parameter gradients.
    pub params: bool,
    /// Rescale blocks by exact powers of two at every point so that they never overflow or
    /// underflow (see [`crate::scale`]); sinks then receive the exponents.
    pub rescale: bool,
    /// With `rescale`, also record every row's sum of squares
    /// ([`Exponents::row_sq_norms`]), not only every sample's.
    pub row_norms: bool,
}

/// A consumer of the block at each point: `(point, block, exponents)`; the true block is
/// `block * 2^exponents[b]` for the rows of sample `b`.
pub type Sink<'a, T> = dyn FnMut(usize, ArrayView2<T>, &Exponents) -> Result<()> + 'a;

/// Adds `alpha * g` to the cotangent of `slot` (a slot read by several nodes, e.g. a residual
/// block's input, collects one contribution from each), taking `g` over when it is the first.
fn accumulate<T: Float>(grads: &mut [Option<Array2<T>>], slot: Slot, alpha: T, mut g: Array2<T>) {
    match &mut grads[slot] {
        Some(acc) => kernels::add_assign_scaled(acc, alpha, g.view()),
        empty @ None => {
            if alpha != T::one() {
                g.par_mapv_inplace(|v| v * alpha);
            }
            *empty = Some(g);
        }
    }
}

/// Dense parameter gradients from a block whose samples may carry different exponents: rows are
/// first brought to the largest exponent (exact powers of two), which the result then carries.
fn dense_param_grads_scaled<T: Float>(
    g: ArrayView2<T>,
    x: ArrayView2<T>,
    k: usize,
    with_bias: bool,
    exps: &Exponents,
) -> (Array3<T>, Option<Array2<T>>, i32) {
    let top = exps.per_sample.iter().copied().max().unwrap_or(0);
    if exps.per_sample.iter().all(|&e| e == top) {
        let (dw, db) = kernels::dense_param_grads(g, x, k, with_bias);
        return (dw, db, top);
    }
    let mut aligned = g.to_owned();
    for (b, mut rows) in aligned
        .axis_chunks_iter_mut(ndarray::Axis(0), k)
        .enumerate()
    {
        let factor = T::from_f64(((exps.per_sample[b] - top) as f64).exp2());
        rows.mapv_inplace(|v| v * factor);
    }
    let (dw, db) = kernels::dense_param_grads(aligned.view(), x, k, with_bias);
    (dw, db, top)
}

/// Pulls the cotangent block `seed` (`(B*K, d_point)`, row `b*K + k`) on point `point` back to
/// every point `lowest..=point`, handing each point's block to `sink` from `point` down to
/// `lowest`. With `opts.params`, also returns the Dense parameter gradients (meant for
/// `lowest == 0`; layers after `point` get zeros).
#[allow(clippy::too_many_arguments)]
pub fn vjp<T: Float>(
    net: &Network<T>,
    trace: &Trace<T>,
    seed: Array2<T>,
    k: usize,
    point: usize,
    lowest: usize,
    opts: VjpOptions,
    sink: &mut Sink<'_, T>,
    stop: &Stop,
) -> Result<Option<ParamGrads<T>>> {
    vjp_rows(
        net,
        trace,
        0..trace.batch(),
        seed,
        k,
        point,
        lowest,
        opts,
        sink,
        stop,
    )
}

/// [`vjp`] for the samples `rows` of the trace only (a tile: samples are independent unless a
/// BatchNorm couples them, which then needs all rows). Parameter gradients are summed over `rows`.
#[allow(clippy::too_many_arguments)]
pub fn vjp_rows<T: Float>(
    net: &Network<T>,
    trace: &Trace<T>,
    rows: Range<usize>,
    seed: Array2<T>,
    k: usize,
    point: usize,
    lowest: usize,
    opts: VjpOptions,
    sink: &mut Sink<'_, T>,
    stop: &Stop,
) -> Result<Option<ParamGrads<T>>> {
    let batch = rows.len();
    debug_assert_eq!(seed.nrows(), batch * k);
    debug_assert!(lowest <= point);
    if net.has_batchnorm() && rows != (0..trace.batch()) {
        return Err(CoreError::Internal(
            "a BatchNorm network needs all samples in one VJP".into(),
        ));
    }
    let value = |slot: Slot| trace.values[slot].slice(s![rows.clone(), ..]);
    let mut exps = Exponents::new(batch, net.has_batchnorm());
    exps.row_norms = opts.row_norms;
    let mut grads: Vec<Option<Array2<T>>> = vec![None; net.num_slots()];
    let mut seed = seed;
    if opts.rescale {
        exps.rescale(&mut seed, k);
    }
    sink(point, seed.view(), &exps)?;
    grads[net.point_slots[point]] = Some(seed);
    // filled layer by layer below; layers the cotangent never reaches get zeros at the end
    let mut param_grads = opts.params.then(|| ParamGrads {
        weights: vec![Array3::zeros((0, 0, 0)); net.dense.len()],
        biases: vec![None; net.dense.len()],
        exponents: vec![0; net.dense.len()],
    });
    let mut reached = vec![false; net.dense.len()];
    for layer in (lowest + 1..=point).rev() {
        for n in net.nodes_of_layers(layer, layer).rev() {
            stop.check()?;
            let node = &net.nodes[n];
            let g = grads[node.output].take().ok_or_else(|| {
                CoreError::Internal(format!("no cotangent reached {}", node.label))
            })?;
            let input = value(node.input);
            let stats = || {
                trace.stats[n]
                    .as_ref()
                    .ok_or_else(|| CoreError::Internal("missing statistics".into()))
            };
            match node.op {
                Op::Dense(i) => {
                    let p = &net.dense[i];
                    if let Some(pg) = param_grads.as_mut() {
                        let (dw, db, e) =
                            dense_param_grads_scaled(g.view(), input, k, p.bias.is_some(), &exps);
                        pg.weights[i] = dw;
                        pg.biases[i] = db;
                        pg.exponents[i] = e;
                        reached[i] = true;
                    }
                    let gi = kernels::matmul_rows(g.view(), p.weight.view());
                    accumulate(&mut grads, node.input, T::one(), gi);
                }
                Op::Activation(a) => {
                    let mut g = g;
                    match &trace.slopes[n] {
                        Some(slopes) => {
                            kernels::scale_by_slopes(slopes.slice(s![rows.clone(), ..]), k, &mut g)
                        }
                        None => kernels::activation_tangent(a, input, k, &mut g),
                    }
                    accumulate(&mut grads, node.input, T::one(), g);
                }
                Op::LayerNorm(i) => {
                    let gi = kernels::layernorm_tangent(
                        input,
                        stats()?.rows(rows.clone()),
                        &net.norms[i],
                        k,
                        g.view(),
                        Direction::Vjp,
                    );
                    accumulate(&mut grads, node.input, T::one(), gi);
                }
                Op::BatchNorm(i) => {
                    let gi = kernels::batchnorm_tangent(
                        input,
                        stats()?.view(),
                        &net.norms[i],
                        k,
                        g.view(),
                    );
                    accumulate(&mut grads, node.input, T::one(), gi);
                }
                Op::Add { shortcut, alpha } => {
                    accumulate(&mut grads, shortcut, T::one(), g.clone());
                    accumulate(&mut grads, node.input, alpha, g);
                }
            }
        }
        // Between layers the point's block is the only live one: rescale it, hand it over.
        let slot = net.point_slots[layer - 1];
        let g = grads[slot].as_mut().ok_or_else(|| {
            CoreError::Internal(format!("no cotangent reached point {}", layer - 1))
        })?;
        if opts.rescale {
            exps.rescale(g, k);
        }
        sink(layer - 1, g.view(), &exps)?;
    }
    if let Some(pg) = param_grads.as_mut() {
        for (i, p) in net.dense.iter().enumerate().filter(|&(i, _)| !reached[i]) {
            pg.weights[i] = Array3::zeros((k, p.weight.nrows(), p.weight.ncols()));
            pg.biases[i] = p.bias.as_ref().map(|b| Array2::zeros((k, b.len())));
        }
    }
    Ok(param_grads)
}

/// Parameter gradients with their rescaling undone: true values, `inf`/`0` only where they
/// overflow/underflow the dtype.
fn descale_params<T: Float>(mut p: ParamGrads<T>) -> ParamGrads<T> {
    for ((w, b), e) in p
        .weights
        .iter_mut()
        .zip(p.biases.iter_mut())
        .zip(p.exponents.iter_mut())
    {
        if *e != 0 {
            let shift = *e as i64;
            w.par_mapv_inplace(|v| ldexp(v, shift));
            if let Some(b) = b {
                b.mapv_inplace(|v| ldexp(v, shift));
            }
            *e = 0;
        }
    }
    p
}

/// Bytes of a VJP/JVP from user input with `k` vectors per sample: the forward trace, the block
/// handed back at every point, the live blocks, and (with `params`) the `(K, d_out, d_in)`
/// parameter gradients.
pub fn products_bytes<T: Float>(
    net: &Network<T>,
    batch: usize,
    k: usize,
    widths: &[usize],
    params: bool,
) -> u128 {
    let size = std::mem::size_of::<T>();
    let points: u128 = net
        .point_slots
        .iter()
        .map(|&s| memory::product(&[batch, k, widths[s], size]))
        .sum();
    let live = memory::product(&[3, batch, k, *widths.iter().max().unwrap_or(&1), size]);
    let p: u128 = if params {
        net.dense
            .iter()
            .map(|d| memory::product(&[k, d.weight.nrows(), d.weight.ncols() + 1, size]))
            .sum()
    } else {
        0
    };
    forward::trace_bytes::<T>(widths, batch)
        .saturating_add(points)
        .saturating_add(live)
        .saturating_add(p)
}

/// The VJP of SPEC §2 from user input: `cotangent` (`(B*K, d_point)`) on point `point` (Python
/// style, negative from the end). Returns the block at every point (`None` after `point`) and the
/// Dense parameter gradients. Blocks are rescaled by exact powers of two on the way (so no
/// intermediate overflows into `inf - inf = NaN` at extreme depth) and handed back as true values.
pub fn vjp_all_points<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    cotangent: ArrayView2<T>,
    k: usize,
    point: i64,
    stop: &Stop,
) -> Result<(Vec<Option<Array2<T>>>, ParamGrads<T>)> {
    let point = net.resolve_point(point, "point")?;
    forward::check_input(net, x)?;
    forward::check_block(net, x, cotangent, k, point, "cotangent")?;
    forward::plan(
        net,
        x,
        |w| products_bytes(net, x.nrows(), k, w, true),
        &format!("vjp with K={k} cotangents per sample (a block per point and (K, d_out, d_in) weight gradients)"),
        "pass fewer cotangents or samples at a time",
    )?;
    let trace = forward::forward(net, x, stop)?;
    let mut points = vec![None; net.num_layers() + 1];
    let opts = VjpOptions {
        params: true,
        rescale: true,
        ..VjpOptions::default()
    };
    let params = vjp(
        net,
        &trace,
        cotangent.to_owned(),
        k,
        point,
        0,
        opts,
        &mut |i, g, exps| {
            let mut g = g.to_owned();
            descale(&mut g, k, exps);
            points[i] = Some(g);
            Ok(())
        },
        stop,
    )?
    .expect("params were requested");
    Ok((points, descale_params(params)))
}

/// Gradients of a loss: per-sample losses, `dL/dp_i` for every point, and parameter gradients.
pub struct LossGradients<T> {
    pub losses: Array1<T>,
    pub points: Vec<Array2<T>>,
    pub params: ParamGrads<T>,
    pub trace: Trace<T>,
}

/// Forward pass, per-sample losses and the gradients of their sum (SPEC §2). Rescaled on the way
/// and handed back as true values (see [`vjp_all_points`]).
pub fn loss_and_grad<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    loss: Loss,
    targets: Targets<T>,
    stop: &Stop,
) -> Result<LossGradients<T>> {
    forward::plan(
        net,
        x,
        |w| products_bytes(net, x.nrows(), 1, w, true),
        "loss_and_grad (the gradient at every point and of every weight)",
        "pass fewer samples at a time",
    )?;
    let trace = forward::forward(net, x, stop)?;
    let n = net.num_layers();
    let (losses, seed) = loss::loss_and_output_grad(trace.point(net, n), loss, targets)?;
    let mut points = vec![Array2::zeros((0, 0)); n + 1];
    let opts = VjpOptions {
        params: true,
        rescale: true,
        ..VjpOptions::default()
    };
    let params = vjp(
        net,
        &trace,
        seed,
        1,
        n,
        0,
        opts,
        &mut |i, g, exps| {
            let mut g = g.to_owned();
            descale(&mut g, 1, exps);
            points[i] = g;
            Ok(())
        },
        stop,
    )?
    .expect("params were requested");
    Ok(LossGradients {
        losses,
        points,
        params: descale_params(params),
        trace,
    })
}
