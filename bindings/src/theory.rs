//! Python bindings of `gsc_core::theory` (mean-field predictions, SPEC §6).

use pyo3::prelude::*;

/// Adds the theory functions to the native module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
