//! The thread pool and the fixed work split that makes results independent of the thread count.
//!
//! Every parallel loop splits its rows into tasks whose size depends only on the shapes
//! ([`rows_per_task`]), never on the number of threads, and every reduction adds its partial
//! results in task order. So 1 thread and 64 threads compute bit-identical results.

use std::sync::{Arc, OnceLock, RwLock};

use ndarray::{ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::error::{CoreError, Result};
use crate::float::Float;

/// Target number of elements one parallel task touches.
pub const TASK_ELEMENTS: usize = 16 * 1024;

fn pool_slot() -> &'static RwLock<Option<Arc<rayon::ThreadPool>>> {
    static POOL: OnceLock<RwLock<Option<Arc<rayon::ThreadPool>>>> = OnceLock::new();
    POOL.get_or_init(|| RwLock::new(None))
}

fn build_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("gsc-core-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| CoreError::Internal(format!("could not start the thread pool: {e}")))
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The pool every parallel computation of gsc_core runs in.
pub fn pool() -> Result<Arc<rayon::ThreadPool>> {
    if let Some(p) = pool_slot().read().map_err(|_| poisoned())?.as_ref() {
        return Ok(p.clone());
    }
    let mut slot = pool_slot().write().map_err(|_| poisoned())?;
    if slot.is_none() {
        *slot = Some(build_pool(default_threads())?);
    }
    Ok(slot.as_ref().expect("just set").clone())
}

fn poisoned() -> CoreError {
    CoreError::Internal("thread-pool lock poisoned".into())
}

/// Uses `n >= 1` threads from now on (calls already running keep their pool).
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(CoreError::Invalid(
            "set_num_threads: n must be at least 1, got 0".into(),
        ));
    }
    let new = build_pool(n)?;
    *pool_slot().write().map_err(|_| poisoned())? = Some(new);
    Ok(())
}

pub fn num_threads() -> Result<usize> {
    Ok(pool()?.current_num_threads())
}

/// Runs `f` inside the gsc_core pool.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    Ok(pool()?.install(f))
}

/// Rows per task for rows of `row_len` elements, rounded to a multiple of `group` rows
/// (the `K` rows of one sample stay together).
pub fn rows_per_task(row_len: usize, group: usize) -> usize {
    let groups = (TASK_ELEMENTS / (row_len.max(1) * group.max(1))).max(1);
    groups * group.max(1)
}

/// Calls `f(first_row, chunk)` in parallel on consecutive chunks of `rows` rows of `out`.
pub fn for_row_chunks<T: Float>(
    mut out: ArrayViewMut2<'_, T>,
    rows: usize,
    f: impl Fn(usize, ArrayViewMut2<'_, T>) + Sync + Send,
) {
    let chunks: Vec<(usize, ArrayViewMut2<'_, T>)> = out
        .axis_chunks_iter_mut(Axis(0), rows.max(1))
        .enumerate()
        .map(|(i, c)| (i * rows.max(1), c))
        .collect();
    if chunks.len() == 1 {
        let (start, c) = chunks.into_iter().next().expect("one chunk");
        f(start, c);
    } else {
        chunks.into_par_iter().for_each(|(start, c)| f(start, c));
    }
}
