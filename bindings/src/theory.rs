//! Python bindings of `gsc_core::theory` (mean-field predictions, SPEC §6).
//!
//! Every function takes the activation as its name and a list of `(parameter, value)` pairs (as
//! `gsc_core.Activation` holds them) followed by plain floats; the public, documented wrappers are in
//! `python/gsc_core/theory.py`. Invalid input (unknown names, negative or non-finite variances)
//! raises `ValueError` from the core's checks; the computations run through [`crate::run`], so they
//! release the GIL, stop on Ctrl-C and turn a panic into `RuntimeError`.

use gsc_core::theory;
use gsc_core::Activation;
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::{run, to_py_err};

fn activation(name: &str, params: &[(String, f64)]) -> PyResult<Activation> {
    Activation::from_name(name, params).map_err(to_py_err)
}

/// `[q^1, ..., q^layers]` with `q^1 = sigma_w2 * q0 + sigma_b2` and `q^{l+1} = F(q^l)`.
#[pyfunction]
fn theory_length_map<'py>(
    py: Python<'py>,
    name: &str,
    params: Vec<(String, f64)>,
    sigma_w2: f64,
    sigma_b2: f64,
    q0: f64,
    layers: usize,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let act = activation(name, &params)?;
    let out = run(py, |stop| {
        theory::length_map(&act, sigma_w2, sigma_b2, q0, layers, stop)
    })?;
    Ok(out.into_pyarray(py))
}

/// The fixed point q* of the length map reached from `q^1 = sigma_w2 * q0 + sigma_b2` (inf if it diverges).
#[pyfunction]
fn theory_fixed_point(
    py: Python<'_>,
    name: &str,
    params: Vec<(String, f64)>,
    sigma_w2: f64,
    sigma_b2: f64,
    q0: f64,
) -> PyResult<f64> {
    let act = activation(name, &params)?;
    run(py, |_| theory::fixed_point(&act, sigma_w2, sigma_b2, q0))
}

/// `chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]`.
#[pyfunction]
fn theory_chi1(
    py: Python<'_>,
    name: &str,
    params: Vec<(String, f64)>,
    sigma_w2: f64,
    sigma_b2: f64,
    q0: f64,
) -> PyResult<f64> {
    let act = activation(name, &params)?;
    run(py, |_| theory::chi1(&act, sigma_w2, sigma_b2, q0))
}

/// The sigma_w2 at which chi_1 = 1 for this sigma_b2.
#[pyfunction]
fn theory_edge_of_chaos(
    py: Python<'_>,
    name: &str,
    params: Vec<(String, f64)>,
    sigma_b2: f64,
    q0: f64,
) -> PyResult<f64> {
    let act = activation(name, &params)?;
    run(py, |_| theory::edge_of_chaos(&act, sigma_b2, q0))
}

/// `(q_star, chi_1, chi_q, c_star, chi_c, xi_q, xi_c, xi_grad)`.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn theory_mean_field(
    py: Python<'_>,
    name: &str,
    params: Vec<(String, f64)>,
    sigma_w2: f64,
    sigma_b2: f64,
    q0: f64,
) -> PyResult<(f64, f64, f64, f64, f64, f64, f64, f64)> {
    let act = activation(name, &params)?;
    let m = run(py, |_| theory::mean_field(&act, sigma_w2, sigma_b2, q0))?;
    Ok((
        m.q_star, m.chi_1, m.chi_q, m.c_star, m.chi_c, m.xi_q, m.xi_c, m.xi_grad,
    ))
}

/// One step of the correlation map at variance q: `(sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q`.
#[pyfunction]
fn theory_correlation_map(
    py: Python<'_>,
    name: &str,
    params: Vec<(String, f64)>,
    sigma_w2: f64,
    sigma_b2: f64,
    q: f64,
    c: f64,
) -> PyResult<f64> {
    let act = activation(name, &params)?;
    run(py, |_| {
        theory::correlation_map(&act, sigma_w2, sigma_b2, q, c)
    })
}

/// `(E[phi(u)^2], E[phi'(u)^2], E[phi'(u)^2 + phi(u) phi''(u)])` for `u ~ N(0, q)`.
#[pyfunction]
fn theory_gaussian_expectations(
    py: Python<'_>,
    name: &str,
    params: Vec<(String, f64)>,
    q: f64,
) -> PyResult<(f64, f64, f64)> {
    let act = activation(name, &params)?;
    run(py, |_| {
        Ok((
            theory::moment(&act, theory::Moment::Phi2, q)?,
            theory::moment(&act, theory::Moment::Dphi2, q)?,
            theory::moment(&act, theory::Moment::Dphi2PhiD2phi, q)?,
        ))
    })
}

/// `(E[phi(u1) phi(u2)], E[phi'(u1) phi'(u2)])` for `(u1, u2)` Gaussian, variances q, correlation c.
#[pyfunction]
fn theory_bivariate_expectations(
    py: Python<'_>,
    name: &str,
    params: Vec<(String, f64)>,
    q: f64,
    c: f64,
) -> PyResult<(f64, f64)> {
    let act = activation(name, &params)?;
    run(py, |_| {
        Ok((
            theory::moment2(&act, theory::Moment2::PhiPhi, q, c)?,
            theory::moment2(&act, theory::Moment2::DphiDphi, q, c)?,
        ))
    })
}

/// Adds the theory functions to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(theory_length_map, m)?)?;
    m.add_function(wrap_pyfunction!(theory_fixed_point, m)?)?;
    m.add_function(wrap_pyfunction!(theory_chi1, m)?)?;
    m.add_function(wrap_pyfunction!(theory_edge_of_chaos, m)?)?;
    m.add_function(wrap_pyfunction!(theory_mean_field, m)?)?;
    m.add_function(wrap_pyfunction!(theory_correlation_map, m)?)?;
    m.add_function(wrap_pyfunction!(theory_gaussian_expectations, m)?)?;
    m.add_function(wrap_pyfunction!(theory_bivariate_expectations, m)?)?;
    Ok(())
}
