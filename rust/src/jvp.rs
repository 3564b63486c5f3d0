//! Jacobian-vector products: tangents flow from a point forward to the output (SPEC §2).

use ndarray::{Array2, ArrayView2};

use crate::backward::Sink;
use crate::cancel::Stop;
use crate::error::{CoreError, Result};
use crate::float::Float;
use crate::forward::{self, Trace};
use crate::kernels::{self, Direction};
use crate::network::{Network, Op};
use crate::scale::{descale, Exponents};

/// Pushes the tangent block `seed` (`(B*K, d_point)`, row `b*K + k`) on point `point` forward to
/// every point `point..=highest`, handing each to `sink(j, block, exponents)` in increasing `j`.
/// Tangents are dropped as soon as no later node reads them. With `rescale`, blocks are kept in
/// range by exact powers of two at every point (see [`crate::scale`]).
#[allow(clippy::too_many_arguments)]
pub fn jvp<T: Float>(
    net: &Network<T>,
    trace: &Trace<T>,
    seed: Array2<T>,
    k: usize,
    point: usize,
    highest: usize,
    rescale: bool,
    sink: &mut Sink<'_, T>,
    stop: &Stop,
) -> Result<()> {
    let nodes = net.nodes_of_layers(point + 1, highest);
    let mut exps = Exponents::new(trace.batch(), net.has_batchnorm());
    let mut last_use = vec![usize::MAX; net.num_slots()];
    for n in nodes.clone() {
        let node = &net.nodes[n];
        last_use[node.input] = n;
        if let Op::Add { shortcut, .. } = node.op {
            last_use[shortcut] = n;
        }
    }
    let slot_point = net.slot_points();
    let mut tangents: Vec<Option<Array2<T>>> = vec![None; net.num_slots()];
    let mut seed = seed;
    if rescale {
        exps.rescale(&mut seed, k);
    }
    sink(point, seed.view(), &exps)?;
    tangents[net.point_slots[point]] = Some(seed);
    for n in nodes {
        stop.check()?;
        let node = &net.nodes[n];
        let missing = || CoreError::Internal(format!("no tangent reached {}", node.label));
        let t = tangents[node.input].as_ref().ok_or_else(missing)?.view();
        let input = trace.values[node.input].view();
        let stats = || {
            trace.stats[n]
                .as_ref()
                .ok_or_else(|| CoreError::Internal("missing statistics".into()))
        };
        let mut out = match node.op {
            Op::Dense(i) => kernels::matmul_rows(t, net.dense_t[i].view()),
            Op::Activation(a) => {
                let mut out = t.to_owned();
                kernels::activation_tangent(a, input, k, &mut out);
                out
            }
            Op::LayerNorm(i) => kernels::layernorm_tangent(
                input,
                stats()?.view(),
                &net.norms[i],
                k,
                t,
                Direction::Jvp,
            ),
            Op::BatchNorm(i) => {
                kernels::batchnorm_tangent(input, stats()?.view(), &net.norms[i], k, t)
            }
            Op::Add { shortcut, alpha } => {
                let ts = tangents[shortcut].as_ref().ok_or_else(missing)?.view();
                kernels::add_scaled(ts, alpha, t)
            }
        };
        if let Some(j) = slot_point[node.output] {
            // A point's tangent is the only one later nodes read: rescaling it is consistent.
            if rescale {
                exps.rescale(&mut out, k);
            }
            sink(j, out.view(), &exps)?;
        }
        tangents[node.output] = Some(out);
        if last_use[node.input] == n {
            tangents[node.input] = None;
        }
        if let Op::Add { shortcut, .. } = node.op {
            if last_use[shortcut] == n {
                tangents[shortcut] = None;
            }
        }
    }
    Ok(())
}

/// The JVP of SPEC §2 from user input: `tangent` (`(B*K, d_point)`) on point `point` (Python style).
/// Returns the block at every point, `None` before `point`: true values, `inf`/`0` only where
/// they overflow/underflow the dtype.
pub fn jvp_all_points<T: Float>(
    net: &Network<T>,
    x: ArrayView2<T>,
    tangent: ArrayView2<T>,
    k: usize,
    point: i64,
    stop: &Stop,
) -> Result<Vec<Option<Array2<T>>>> {
    let point = net.resolve_point(point, "point")?;
    forward::check_input(net, x)?;
    forward::check_block(net, x, tangent, k, point, "tangent")?;
    let batch = x.nrows();
    forward::plan(
        net,
        x,
        |w| crate::backward::products_bytes(net, batch, k, w, false),
        &format!("jvp with K={k} tangents per sample (a block per point)"),
        "pass fewer tangents or samples at a time",
    )?;
    let trace = forward::forward(net, x, stop)?;
    let n = net.num_layers();
    let mut points = vec![None; n + 1];
    // Rescaled on the way (no inf - inf = NaN at extreme depth), handed back as true values.
    jvp(
        net,
        &trace,
        tangent.to_owned(),
        k,
        point,
        n,
        true,
        &mut |j, t, exps| {
            let mut t = t.to_owned();
            descale(&mut t, k, exps);
            points[j] = Some(t);
            Ok(())
        },
        stop,
    )?;
    Ok(points)
}
