//! # gsc_core — the numeric core
//!
//! Exact forward passes, vector-Jacobian and Jacobian-vector products of deep networks
//! (Dense, elementwise activations, LayerNorm, BatchNorm, residual blocks), batched over samples
//! and over `K` vectors per sample, parallel on a rayon pool with results independent of the
//! thread count. No Python here: the `gsc-core-python` crate binds it.
//!
//! Where things are:
//! - [`network`]: the layer tree, its validation, and the flat program every pass walks;
//! - [`kernels`]: each layer's math on blocks of rows;
//! - [`forward`], [`backward`] (VJP, loss gradients), [`jvp`], [`jacobian`];
//! - [`parallel`]: the pool and the fixed work split; [`cancel`]: cooperative stopping.

pub mod activation;
pub mod analysis;
pub mod backward;
pub mod cancel;
pub mod error;
pub mod float;
pub mod forward;
pub mod jacobian;
pub mod jvp;
pub mod kernels;
pub mod loss;
pub mod memory;
pub mod network;
pub mod parallel;
pub mod scale;
pub mod simd;
pub mod theory;

pub use activation::Activation;
pub use cancel::Stop;
pub use error::{CoreError, Result};
pub use float::Float;
pub use network::{DenseParams, Layer, Network, NormParams};
