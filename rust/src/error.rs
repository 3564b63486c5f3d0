//! Errors of the core. Every variant becomes a Python exception in the bindings
//! (`Invalid` -> `ValueError`, `Cancelled` -> `KeyboardInterrupt`, `OutOfMemory` -> `MemoryError`,
//! `Internal` -> `RuntimeError`).

/// What went wrong, in words a user can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// Bad input: wrong shapes, widths that do not chain, unknown names, NaN/Inf, empty batches.
    #[error("{0}")]
    Invalid(String),
    /// The caller asked the computation to stop (Ctrl-C).
    #[error("interrupted")]
    Cancelled,
    /// The request's buffers would not fit in memory (checked before allocating them, see
    /// [`crate::memory`]).
    #[error("{0}")]
    OutOfMemory(String),
    /// A bug in gsc_core (a caught panic): never the user's fault.
    #[error("internal error in gsc_core (please report it): {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;

/// Shorthand for `Err(CoreError::Invalid(format!(...)))`.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        Err($crate::error::CoreError::Invalid(format!($($arg)*)))
    };
}
