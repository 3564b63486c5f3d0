//! `gsc_core._core`: the private native module behind the `gsc_core` Python package.
//!
//! A thin translation layer: NumPy arrays in, `gsc_core` (the Rust crate) calls, NumPy arrays out.
//! Every call runs on a worker thread with the GIL released while this thread polls for Ctrl-C
//! ([`run`]); core errors become `ValueError` (`MemoryError` for requests too large for memory), a
//! stop `KeyboardInterrupt`, a panic `RuntimeError`.

mod theory;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::Duration;

use gsc_core::{
    analysis, backward, forward, jacobian, jvp, loss, parallel, Activation, CoreError, DenseParams,
    Float, Layer, Network, NormParams, Stop,
};
use ndarray::{Array1, Array2};
use numpy::{Element, IntoPyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{
    PyKeyboardInterrupt, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

/// Maps a core error to the Python exception users catch.
pub(crate) fn to_py_err(e: CoreError) -> PyErr {
    match e {
        CoreError::Invalid(msg) => PyValueError::new_err(msg),
        CoreError::Cancelled => PyKeyboardInterrupt::new_err("interrupted"),
        CoreError::OutOfMemory(msg) => PyMemoryError::new_err(msg),
        CoreError::Internal(msg) => PyRuntimeError::new_err(format!(
            "internal error in gsc_core (please report it): {msg}"
        )),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Runs `f` on a worker thread inside the gsc_core pool with the GIL released, checking for
/// Ctrl-C every 20 ms: on a signal, asks `f` to stop, waits for it, and raises the signal's
/// exception (`KeyboardInterrupt`). Panics become `RuntimeError`.
pub(crate) fn run<R: Send>(
    py: Python<'_>,
    f: impl FnOnce(&Stop) -> gsc_core::Result<R> + Send,
) -> PyResult<R> {
    let stop = Stop::new();
    std::thread::scope(|scope| {
        let (tx, rx) = channel();
        let stop = &stop;
        scope.spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| parallel::install(|| f(stop))));
            let _ = tx.send(outcome);
        });
        let mut rx = rx;
        loop {
            let (got, back) = py.detach(move || (rx.recv_timeout(Duration::from_millis(20)), rx));
            rx = back;
            match got {
                Ok(Ok(Ok(result))) => return result.map_err(to_py_err),
                Ok(Ok(Err(pool_error))) => return Err(to_py_err(pool_error)),
                Ok(Err(payload)) => {
                    return Err(to_py_err(CoreError::Internal(panic_message(payload))))
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(signal) = py.check_signals() {
                        stop.request();
                        py.detach(move || {
                            let _ = rx.recv();
                        });
                        return Err(signal);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(to_py_err(CoreError::Internal(
                        "the worker thread ended without a result".into(),
                    )))
                }
            }
        }
    })
}

// ------------------------------------------------------------------ arrays

fn array2<'py, T: Float + Element>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<PyReadonlyArray2<'py, T>> {
    obj.extract::<PyReadonlyArray2<'py, T>>()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be a 2-D {} NumPy array", T::NAME)))
}

fn array1<'py, T: Float + Element>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<Option<Array1<T>>> {
    if obj.is_none() {
        return Ok(None);
    }
    let a = obj.extract::<PyReadonlyArray1<'py, T>>().map_err(|_| {
        PyTypeError::new_err(format!("{name} must be a 1-D {} NumPy array", T::NAME))
    })?;
    Ok(Some(a.as_array().to_owned()))
}

fn list_of_arrays<'py, T: Float + Element, I>(
    py: Python<'py>,
    items: I,
) -> PyResult<Bound<'py, PyList>>
where
    I: IntoIterator<Item = Option<ndarray::ArrayD<T>>>,
{
    let objs: Vec<Py<PyAny>> = items
        .into_iter()
        .map(|a| match a {
            Some(a) => a.into_pyarray(py).into_any().unbind(),
            None => py.None(),
        })
        .collect();
    PyList::new(py, objs)
}

// ------------------------------------------------------------------ layer specs

fn parse_dense<T: Float + Element>(spec: &Bound<'_, PyTuple>) -> PyResult<DenseParams<T>> {
    let weight = array2::<T>(&spec.get_item(1)?, "Dense weight")?
        .as_array()
        .to_owned();
    let bias = array1::<T>(&spec.get_item(2)?, "Dense bias")?;
    Ok(DenseParams { weight, bias })
}

/// How deep residual blocks may nest (as `gsc_core.network.MAX_NESTING`): the parser and the
/// compiler recurse once per level, on the caller's stack.
const MAX_NESTING: usize = 100;

/// A layer from its spec tuple (built by `gsc_core.network._native_layer`).
fn parse_layer<T: Float + Element>(obj: &Bound<'_, PyAny>) -> PyResult<Layer<T>> {
    parse_layer_at::<T>(obj, 0)
}

fn parse_layer_at<T: Float + Element>(
    obj: &Bound<'_, PyAny>,
    nesting: usize,
) -> PyResult<Layer<T>> {
    if nesting > MAX_NESTING {
        return Err(PyValueError::new_err(format!(
            "residual blocks nested more than {MAX_NESTING} deep"
        )));
    }
    let spec = obj
        .cast::<PyTuple>()
        .map_err(|_| PyTypeError::new_err("layer spec must be a tuple"))?;
    let kind: String = spec.get_item(0)?.extract()?;
    Ok(match kind.as_str() {
        "dense" => Layer::Dense(parse_dense(spec)?),
        "activation" => {
            let name: String = spec.get_item(1)?.extract()?;
            let params: Vec<(String, f64)> = spec.get_item(2)?.extract()?;
            Layer::Activation(Activation::from_name(&name, &params).map_err(to_py_err)?)
        }
        "layernorm" | "batchnorm" => {
            let norm = NormParams {
                eps: T::from_f64(spec.get_item(1)?.extract::<f64>()?),
                weight: array1::<T>(&spec.get_item(2)?, "norm weight")?,
                bias: array1::<T>(&spec.get_item(3)?, "norm bias")?,
            };
            if kind == "layernorm" {
                Layer::LayerNorm(norm)
            } else {
                Layer::BatchNorm(norm)
            }
        }
        "residual" => {
            let body = spec
                .get_item(1)?
                .try_iter()?
                .map(|l| parse_layer_at::<T>(&l?, nesting + 1))
                .collect::<PyResult<Vec<_>>>()?;
            let alpha = T::from_f64(spec.get_item(2)?.extract::<f64>()?);
            let shortcut = spec.get_item(3)?;
            let shortcut = if shortcut.is_none() {
                None
            } else {
                Some(parse_dense::<T>(shortcut.cast::<PyTuple>().map_err(
                    |_| PyTypeError::new_err("shortcut spec must be a tuple"),
                )?)?)
            };
            Layer::Residual {
                body,
                alpha,
                shortcut,
            }
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown layer kind '{other}'"
            )))
        }
    })
}

// ------------------------------------------------------------------ network

enum AnyNetwork {
    F32(Network<f32>),
    F64(Network<f64>),
}

/// Calls a generic function with the network of either dtype.
macro_rules! with_net {
    ($self:expr, $net:ident => $body:expr) => {
        match &$self.inner {
            AnyNetwork::F32($net) => $body,
            AnyNetwork::F64($net) => $body,
        }
    };
}

/// A validated network in one dtype. Build it through `gsc_core.Network`.
#[pyclass(module = "gsc_core._core", name = "Network", frozen)]
struct PyNetwork {
    inner: AnyNetwork,
}

fn build<T: Float + Element>(layers: &Bound<'_, PyAny>) -> PyResult<Network<T>> {
    let layers = layers
        .try_iter()?
        .map(|l| parse_layer::<T>(&l?))
        .collect::<PyResult<Vec<_>>>()?;
    Network::new(layers).map_err(to_py_err)
}

fn forward_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let x = array2::<T>(x, "x")?;
    let xv = x.as_array();
    let trace = run(py, |stop| forward::forward(net, xv, stop))?;
    let mut arrays: Vec<Option<Py<PyAny>>> = (0..trace.values.len()).map(|_| None).collect();
    let mut values: Vec<Option<Array2<T>>> = trace.values.into_iter().map(Some).collect();
    let mut get = |slot: usize| -> Py<PyAny> {
        arrays[slot]
            .get_or_insert_with(|| {
                values[slot]
                    .take()
                    .expect("each slot converted once")
                    .into_pyarray(py)
                    .into_any()
                    .unbind()
            })
            .clone_ref(py)
    };
    let points: Vec<Py<PyAny>> = net.point_slots.iter().map(|&s| get(s)).collect();
    let pre: Vec<Py<PyAny>> = net.pre_activation_slots.iter().map(|&s| get(s)).collect();
    PyTuple::new(
        py,
        [
            PyList::new(py, points)?.into_any(),
            PyList::new(py, pre)?.into_any(),
        ],
    )
}

fn params_to_py<'py, T: Float + Element>(
    py: Python<'py>,
    p: backward::ParamGrads<T>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
    let weights = list_of_arrays(py, p.weights.into_iter().map(|w| Some(w.into_dyn())))?;
    let biases = list_of_arrays(py, p.biases.into_iter().map(|b| b.map(|b| b.into_dyn())))?;
    Ok((weights, biases))
}

fn loss_and_grad_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
    loss_name: &str,
    values: &Bound<'py, PyAny>,
    classes: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let kind = loss::Loss::from_name(loss_name).map_err(to_py_err)?;
    let x = array2::<T>(x, "x")?;
    let (values, classes) = optional_targets::<T>(values, classes)?;
    let targets = targets_from(&values, &classes);
    let xv = x.as_array();
    let out = run(py, |stop| {
        backward::loss_and_grad(net, xv, kind, targets, stop)
    })?;
    let losses = out.losses.into_pyarray(py).into_any();
    let points = list_of_arrays(py, out.points.into_iter().map(|g| Some(g.into_dyn())))?;
    let (weights, biases) = params_to_py(py, out.params)?;
    PyTuple::new(
        py,
        [
            losses,
            points.into_any(),
            weights.into_any(),
            biases.into_any(),
        ],
    )
}

fn vjp_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
    cot: &Bound<'py, PyAny>,
    k: usize,
    point: i64,
) -> PyResult<Bound<'py, PyTuple>> {
    let x = array2::<T>(x, "x")?;
    let cot = array2::<T>(cot, "cotangent")?;
    let (xv, cv) = (x.as_array(), cot.as_array());
    let (points, params) = run(py, |stop| {
        backward::vjp_all_points(net, xv, cv, k, point, stop)
    })?;
    let points = list_of_arrays(py, points.into_iter().map(|g| g.map(|g| g.into_dyn())))?;
    let (weights, biases) = params_to_py(py, params)?;
    PyTuple::new(
        py,
        [points.into_any(), weights.into_any(), biases.into_any()],
    )
}

fn jvp_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
    tangent: &Bound<'py, PyAny>,
    k: usize,
    point: i64,
) -> PyResult<Bound<'py, PyList>> {
    let x = array2::<T>(x, "x")?;
    let t = array2::<T>(tangent, "tangent")?;
    let (xv, tv) = (x.as_array(), t.as_array());
    let points = run(py, |stop| jvp::jvp_all_points(net, xv, tv, k, point, stop))?;
    list_of_arrays(py, points.into_iter().map(|t| t.map(|t| t.into_dyn())))
}

fn jacobian_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
    start: i64,
    end: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let x = array2::<T>(x, "x")?;
    let xv = x.as_array();
    let j = run(py, |stop| jacobian::jacobian(net, xv, start, end, stop))?;
    Ok(j.into_pyarray(py).into_any())
}

fn jacobian_scaled_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
    start: i64,
    end: i64,
) -> PyResult<Bound<'py, PyTuple>> {
    let x = array2::<T>(x, "x")?;
    let xv = x.as_array();
    let (j, exps) = run(py, |stop| {
        jacobian::jacobian_scaled(net, xv, start, end, stop)
    })?;
    let exps: Array1<i64> = exps.per_sample.iter().map(|&e| e as i64).collect();
    PyTuple::new(
        py,
        [
            j.into_pyarray(py).into_any(),
            exps.into_pyarray(py).into_any(),
        ],
    )
}

fn jacobian_norms_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
    end: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let x = array2::<T>(x, "x")?;
    let xv = x.as_array();
    let n = run(py, |stop| jacobian::jacobian_norms(net, xv, end, stop))?;
    Ok(n.into_pyarray(py).into_any())
}

fn targets_from<'a, 'py, T: Float + Element>(
    values: &'a Option<PyReadonlyArray2<'py, T>>,
    classes: &'a Option<PyReadonlyArray1<'py, i64>>,
) -> loss::Targets<'a, T> {
    match (values, classes) {
        (Some(v), _) => loss::Targets::Values(v.as_array()),
        (None, Some(c)) => loss::Targets::Classes(c.as_array()),
        (None, None) => loss::Targets::Zeros,
    }
}

fn optional_targets<'py, T: Float + Element>(
    values: &Bound<'py, PyAny>,
    classes: &Bound<'py, PyAny>,
) -> PyResult<(
    Option<PyReadonlyArray2<'py, T>>,
    Option<PyReadonlyArray1<'py, i64>>,
)> {
    let values = if values.is_none() {
        None
    } else {
        Some(array2::<T>(values, "y")?)
    };
    let classes = if classes.is_none() {
        None
    } else {
        Some(
            classes
                .extract::<PyReadonlyArray1<'py, i64>>()
                .map_err(|_| PyTypeError::new_err("y must be a 1-D int64 array"))?,
        )
    };
    Ok((values, classes))
}

fn stats_to_py<'py>(
    py: Python<'py>,
    s: analysis::PreactivationStats,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
    let std = list_of_arrays(py, s.unit_std.into_iter().map(|a| Some(a.into_dyn())))?;
    let sign = list_of_arrays(
        py,
        s.unit_sign_diversity
            .into_iter()
            .map(|a| Some(a.into_dyn())),
    )?;
    Ok((std, sign))
}

fn profile_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
    loss_name: &str,
    values: &Bound<'py, PyAny>,
    classes: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let kind = loss::Loss::from_name(loss_name).map_err(to_py_err)?;
    let x = array2::<T>(x, "x")?;
    let (values, classes) = optional_targets::<T>(values, classes)?;
    let targets = targets_from(&values, &classes);
    let xv = x.as_array();
    let p = run(py, |stop| analysis::profile(net, xv, kind, targets, stop))?;
    let d = PyDict::new(py);
    d.set_item("losses", p.losses.into_pyarray(py))?;
    d.set_item("log_losses", p.log_losses.into_pyarray(py))?;
    d.set_item("point_log_norms", p.point_log_norms.into_pyarray(py))?;
    d.set_item("grad_log_norms", p.grad_log_norms.into_pyarray(py))?;
    d.set_item(
        "point_log_batch_norms",
        p.point_log_batch_norms.into_pyarray(py),
    )?;
    d.set_item(
        "grad_log_batch_norms",
        p.grad_log_batch_norms.into_pyarray(py),
    )?;
    d.set_item("weight_grad_log_norms", p.weight_grad_log_norms)?;
    d.set_item("weight_log_norms", p.weight_log_norms)?;
    let (std, sign) = stats_to_py(py, p.preactivations)?;
    d.set_item("unit_std", std)?;
    d.set_item("unit_sign_diversity", sign)?;
    d.set_item("dilution", p.dilution)?;
    Ok(d)
}

fn log_norm_matrix_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let x = array2::<T>(x, "x")?;
    let xv = x.as_array();
    let (m, p) = run(py, |stop| {
        analysis::jacobian_log_sq_norm_matrix(net, xv, stop)
    })?;
    PyTuple::new(
        py,
        [m.into_pyarray(py).into_any(), p.into_pyarray(py).into_any()],
    )
}

fn probes_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
    probes: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let x = array2::<T>(x, "x")?;
    let xv = x.as_array();
    let e = run(py, |stop| {
        analysis::probe_log_sq_norms(net, xv, probes, seed, stop)
    })?;
    let d = PyDict::new(py);
    d.set_item("sample_log_mean", e.sample_log_mean.into_pyarray(py))?;
    d.set_item("sample_rel_var", e.sample_rel_var.into_pyarray(py))?;
    d.set_item("batch_log_mean", e.batch_log_mean.into_pyarray(py))?;
    d.set_item("batch_rel_var", e.batch_rel_var.into_pyarray(py))?;
    d.set_item("point_log_norms", e.point_log_norms.into_pyarray(py))?;
    Ok(d)
}

fn preact_impl<'py, T: Float + Element>(
    py: Python<'py>,
    net: &Network<T>,
    x: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let x = array2::<T>(x, "x")?;
    let xv = x.as_array();
    let s = run(py, |stop| analysis::preactivation_stats_of(net, xv, stop))?;
    let (std, sign) = stats_to_py(py, s)?;
    PyTuple::new(py, [std.into_any(), sign.into_any()])
}

#[pymethods]
impl PyNetwork {
    #[new]
    fn new(layers: &Bound<'_, PyAny>, dtype: &str) -> PyResult<Self> {
        let inner = match dtype {
            "float32" => AnyNetwork::F32(build::<f32>(layers)?),
            "float64" => AnyNetwork::F64(build::<f64>(layers)?),
            other => {
                return Err(PyValueError::new_err(format!(
                    "dtype must be 'float64' or 'float32', got '{other}'"
                )))
            }
        };
        Ok(PyNetwork { inner })
    }

    /// N, the number of top-level layers.
    #[getter]
    fn num_layers(&self) -> usize {
        with_net!(self, net => net.num_layers())
    }

    /// The input width, or None when no layer fixes it.
    #[getter]
    fn in_dim(&self) -> Option<usize> {
        with_net!(self, net => net.in_dim())
    }

    /// Widths of the points p_0..p_N for an input of width `in_dim`.
    fn point_widths(&self, in_dim: usize) -> PyResult<Vec<usize>> {
        with_net!(self, net => {
            let widths = net.slot_widths(in_dim).map_err(to_py_err)?;
            Ok(net.point_slots.iter().map(|&s| widths[s]).collect())
        })
    }

    /// Labels of the BatchNorm layers (`layers[3].body[0] (BatchNorm)`), in order.
    #[getter]
    fn batchnorm_layers(&self) -> Vec<String> {
        with_net!(self, net => net.batchnorm_layers.iter().map(|(_, l)| l.clone()).collect())
    }

    /// (points, pre_activations).
    fn forward<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        with_net!(self, net => forward_impl(py, net, x))
    }

    /// (losses, point gradients, weight gradients (1, d_out, d_in), bias gradients (1, d_out) or None).
    fn loss_and_grad<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        loss: &str,
        values: &Bound<'py, PyAny>,
        classes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        with_net!(self, net => loss_and_grad_impl(py, net, x, loss, values, classes))
    }

    /// (points (None after `point`), weights (K, d_out, d_in), biases (K, d_out) or None).
    fn vjp<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        cotangent: &Bound<'py, PyAny>,
        k: usize,
        point: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        with_net!(self, net => vjp_impl(py, net, x, cotangent, k, point))
    }

    /// Tangents at every point (None before `point`).
    fn jvp<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        tangent: &Bound<'py, PyAny>,
        k: usize,
        point: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        with_net!(self, net => jvp_impl(py, net, x, tangent, k, point))
    }

    /// Per-sample Jacobians (B, d_end, d_start).
    fn jacobian<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        start: i64,
        end: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        with_net!(self, net => jacobian_impl(py, net, x, start, end))
    }

    /// Per-sample Jacobians as (mantissas (B, d_end, d_start), exponents (B,)): the true Jacobian
    /// of sample b is J[b] * 2**exponents[b], in range at any depth.
    fn jacobian_scaled<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        start: i64,
        end: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        with_net!(self, net => jacobian_scaled_impl(py, net, x, start, end))
    }

    /// One forward and one backward pass of a loss, as log norms (see gsc_core::analysis::Profile).
    fn profile<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        loss: &str,
        values: &Bound<'py, PyAny>,
        classes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        with_net!(self, net => profile_impl(py, net, x, loss, values, classes))
    }

    /// (ln ||dp_j/dp_i||_F^2 per sample [i, j, b], ln ||p_i,b|| [i, b]).
    fn jacobian_log_sq_norm_matrix<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        with_net!(self, net => log_norm_matrix_impl(py, net, x))
    }

    /// Gaussian-probe estimates of ln ||dp_j/dp_i||_F^2 (see gsc_core::analysis::ProbeEstimates).
    fn probe_log_sq_norms<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        probes: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        with_net!(self, net => probes_impl(py, net, x, probes, seed))
    }

    /// (unit std per Activation, unit sign diversity per Activation).
    fn preactivation_stats<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        with_net!(self, net => preact_impl(py, net, x))
    }

    /// Number of Dense layers in top-level layers i+1..N for every point i (residual bodies
    /// counted, shortcuts not: the compositional depth between point i and the output).
    fn dense_layers_after(&self) -> Vec<usize> {
        with_net!(self, net => net.dense_layers_after())
    }

    /// Per-sample ||dp_end/dp_i||_F for i = 0..=end, shape (end + 1, B).
    fn jacobian_norms<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        end: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        with_net!(self, net => jacobian_norms_impl(py, net, x, end))
    }
}

/// The most threads `set_num_threads` accepts (more only cost memory and scheduling).
const MAX_THREADS: i64 = 1024;

/// Uses `n` threads (`1 <= n <= 1024`) for every following call.
#[pyfunction]
fn set_num_threads(n: &Bound<'_, PyAny>) -> PyResult<()> {
    if n.is_instance_of::<pyo3::types::PyBool>()
        || !n.is_instance_of::<pyo3::types::PyInt>() && !n.hasattr("__index__")?
    {
        return Err(PyTypeError::new_err(format!(
            "set_num_threads: n must be an integer, got {}",
            n.repr()?
        )));
    }
    let n = match n.extract::<i64>() {
        Ok(v) => v,
        // an integer beyond i64: far too many threads
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(n.py()) => i64::MAX,
        Err(e) => {
            return Err(PyTypeError::new_err(format!(
                "set_num_threads: n must be an integer ({e})"
            )))
        }
    };
    if !(1..=MAX_THREADS).contains(&n) {
        return Err(PyValueError::new_err(format!(
            "set_num_threads: n must be between 1 and {MAX_THREADS}, got {}",
            if n == i64::MAX {
                "a huge number".to_string()
            } else {
                n.to_string()
            }
        )));
    }
    parallel::set_num_threads(n as usize).map_err(to_py_err)
}

/// The number of threads gsc_core computes with.
#[pyfunction]
fn get_num_threads() -> PyResult<usize> {
    parallel::num_threads().map_err(to_py_err)
}

/// Fails on purpose inside the core, for testing that no failure escapes as anything but a Python
/// exception: `kind="panic"` panics on the call's worker thread, `"pool_panic"` inside a parallel
/// job on a pool thread, `"internal"` returns the core's internal error (`RuntimeError` for all
/// three), `"memory"` a request larger than any memory (`MemoryError`).
#[pyfunction]
#[pyo3(signature = (kind = "panic"))]
fn _panic_for_testing(py: Python<'_>, kind: &str) -> PyResult<()> {
    match kind {
        "panic" => run(py, |_| -> gsc_core::Result<()> {
            panic!("deliberate panic for testing")
        }),
        "pool_panic" => run(py, |_| -> gsc_core::Result<()> {
            use rayon::prelude::*;
            let total: u64 = (0..64u64)
                .into_par_iter()
                .map(|i| {
                    if i == 37 {
                        panic!("deliberate panic in a pool job for testing")
                    }
                    i
                })
                .sum();
            Err(CoreError::Internal(format!(
                "the pool job did not panic ({total})"
            )))
        }),
        "internal" => run(py, |_| -> gsc_core::Result<()> {
            Err(CoreError::Internal(
                "deliberate internal error for testing".into(),
            ))
        }),
        "memory" => run(py, |_| -> gsc_core::Result<()> {
            gsc_core::memory::ensure_fits(
                u128::MAX,
                "a deliberately absurd test request",
                "ask for less",
            )?;
            Err(CoreError::Internal(
                "no memory budget is known on this platform".into(),
            ))
        }),
        other => Err(PyValueError::new_err(format!(
            "unknown kind {other:?}; expected 'panic', 'pool_panic', 'internal' or 'memory'"
        ))),
    }
}

/// The instruction-set level of the elementwise kernels in this process: "scalar", "avx2" or
/// "avx512" (the best the CPU has, or what `GSC_CORE_SIMD` forces; for tests and bug reports).
#[pyfunction]
fn _simd_level() -> &'static str {
    match gsc_core::simd::level() {
        gsc_core::simd::Level::Scalar => "scalar",
        gsc_core::simd::Level::Avx2 => "avx2",
        gsc_core::simd::Level::Avx512 => "avx512",
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyNetwork>()?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_testing, m)?)?;
    m.add_function(wrap_pyfunction!(_simd_level, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    theory::register(m)?;
    Ok(())
}
