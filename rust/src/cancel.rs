//! Cooperative cancellation: long computations check a [`Stop`] between layers and chunks.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{CoreError, Result};

/// A flag the caller sets (e.g. on Ctrl-C) to make a running computation return
/// [`CoreError::Cancelled`] at its next check.
#[derive(Debug, Default)]
pub struct Stop(AtomicBool);

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// `Err(Cancelled)` once a stop was requested.
    pub fn check(&self) -> Result<()> {
        if self.requested() {
            Err(CoreError::Cancelled)
        } else {
            Ok(())
        }
    }
}
