//! The math of every layer on blocks of rows: forward, and the linear maps the VJP and JVP apply.
//!
//! A *block* holds `K` vectors per sample: row `b * K + k` is vector `k` of sample `b`
//! (a `(B, K, d)` array seen as `(B * K, d)`). Trace values have one row per sample.
//! Every loop is split by [`rows_per_task`], which depends only on shapes (see `parallel`).

use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

use crate::activation::Activation;
use crate::float::Float;
use crate::network::{DenseParams, NormParams};
use crate::parallel::{for_row_chunks, rows_per_task};
use crate::simd::multiversion;

/// Per-normalisation statistics saved by the forward pass: per sample (LayerNorm) or per feature
/// (BatchNorm).
#[derive(Debug, Clone)]
pub struct NormStats<T> {
    pub mean: Array1<T>,
    /// `1 / sqrt(var + eps)`.
    pub rstd: Array1<T>,
}

/// Borrowed [`NormStats`], possibly of a range of samples only (LayerNorm on a sample tile).
#[derive(Debug, Clone, Copy)]
pub struct NormStatsView<'a, T> {
    pub mean: ArrayView1<'a, T>,
    pub rstd: ArrayView1<'a, T>,
}

impl<T: Float> NormStats<T> {
    pub fn view(&self) -> NormStatsView<'_, T> {
        NormStatsView {
            mean: self.mean.view(),
            rstd: self.rstd.view(),
        }
    }
    /// The statistics of samples `rows` (for per-sample statistics).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> NormStatsView<'_, T> {
        NormStatsView {
            mean: self.mean.slice(s![rows.clone()]),
            rstd: self.rstd.slice(s![rows]),
        }
    }
}

// ---------------------------------------------------------------- outputs

/// A `(rows, cols)` array (standard layout) that `fill` writes completely: no zero-filling pass
/// first. `fill` must assign every element and read none before it did (GEMMs with `beta = 0`
/// over all rows, elementwise kernels writing every entry); this is the only uninitialised memory
/// in the crate.
fn written_by<T: Float>(
    rows: usize,
    cols: usize,
    fill: impl FnOnce(ArrayViewMut2<T>),
) -> Array2<T> {
    let mut out = Array2::<T>::uninit((rows, cols));
    // SAFETY: the view covers exactly `out`'s allocation in its standard layout; `fill` assigns
    // every element without reading it first (the contract above), so all are initialised
    // before `assume_init`. Floats have no invalid bit patterns or drop glue.
    unsafe {
        fill(ArrayViewMut2::from_shape_ptr(
            (rows, cols),
            out.as_mut_ptr() as *mut T,
        ));
        out.assume_init()
    }
}

// ---------------------------------------------------------------- GEMM

/// `c = a @ b + beta * c` on one thread (callers parallelise over fixed row tiles), any strides.
///
/// The `gemm` crate (AVX-512/AVX2 kernels chosen at run time) is about twice as fast here as
/// ndarray's matrixmultiply (benches/gemm_shootout). Products it would hand to its gemv or
/// small-product kernels (one row or column, or at most 256 outputs) are zero-padded into its
/// general kernel, so a row's bits never depend on how many rows share the call — which is what
/// makes results independent of the tiling, hence of the thread count.
pub fn gemm<T: Float>(a: ArrayView2<T>, b: ArrayView2<T>, beta: T, mut c: ArrayViewMut2<T>) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert!(
        b.nrows() == k && c.dim() == (m, n),
        "gemm: inconsistent shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta == T::zero() {
            c.fill(T::zero()); // `c` is not read (it may be uninitialised, see `written_by`)
        } else {
            c.mapv_inplace(|v| v * beta);
        }
        return;
    }
    let n_padded = n.max(2);
    let m_padded = m.max(3).max(256 / n_padded + 1);
    if (m_padded, n_padded) == (m, n) {
        return gemm_unpadded(a, b, beta, c);
    }
    let mut ap = Array2::zeros((m_padded, k));
    ap.slice_mut(s![..m, ..]).assign(&a);
    let bp = (n_padded != n).then(|| {
        let mut x = Array2::zeros((k, n_padded));
        x.slice_mut(s![.., ..n]).assign(&b);
        x
    });
    let mut cp = Array2::zeros((m_padded, n_padded));
    if beta != T::zero() {
        cp.slice_mut(s![..m, ..n]).assign(&c);
    }
    gemm_unpadded(
        ap.view(),
        bp.as_ref().map_or(b, |x| x.view()),
        beta,
        cp.view_mut(),
    );
    c.assign(&cp.slice(s![..m, ..n]));
}

fn gemm_unpadded<T: Float>(a: ArrayView2<T>, b: ArrayView2<T>, beta: T, mut c: ArrayViewMut2<T>) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
    let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    // SAFETY: each pointer is element [0, 0] of a view whose shape and strides (in elements) are
    // passed with it; `c` is a unique borrow, so it aliases neither `a` nor `b`. gemm's `alpha`
    // scales the destination (read only when `beta != 0`), its `beta` scales the product.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            beta != T::zero(),
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

// ---------------------------------------------------------------- Dense

/// `y = x @ W.T + b`, with `weight_t = W.T` stored contiguously (the faster operand layout).
pub fn dense_forward<T: Float>(
    x: ArrayView2<T>,
    p: &DenseParams<T>,
    weight_t: ArrayView2<T>,
) -> Array2<T> {
    let (d_out, d_in) = p.weight.dim();
    written_by(x.nrows(), d_out, |y| {
        for_row_chunks(y, rows_per_task(d_in.max(d_out), 1), |start, mut yc| {
            let xc = x.slice(s![start..start + yc.nrows(), ..]);
            let beta = match &p.bias {
                Some(b) => {
                    yc.assign(b);
                    T::one()
                }
                None => T::zero(),
            };
            gemm(xc, weight_t, beta, yc);
        })
    })
}

/// `block @ m` for any block of rows (`m` is `W` for a VJP, `W.T` for a JVP).
pub fn matmul_rows<T: Float>(block: ArrayView2<T>, m: ArrayView2<T>) -> Array2<T> {
    written_by(block.nrows(), m.ncols(), |out| {
        for_row_chunks(
            out,
            rows_per_task(m.nrows().max(m.ncols()), 1),
            |start, oc| {
                let bc = block.slice(s![start..start + oc.nrows(), ..]);
                gemm(bc, m, T::zero(), oc);
            },
        )
    })
}

/// Gradients of `sum_{b} <g_{b,k}, W x_b + bias>` for each `k`: `dW[k] = sum_b g_{b,k}^T x_b`
/// with shape `(K, d_out, d_in)`, and `db[k] = sum_b g_{b,k}` with shape `(K, d_out)`.
/// Each entry is reduced over the batch in one fixed order.
pub fn dense_param_grads<T: Float>(
    g: ArrayView2<T>,
    x: ArrayView2<T>,
    k: usize,
    with_bias: bool,
) -> (Array3<T>, Option<Array2<T>>) {
    let (batch, d_in) = x.dim();
    let d_out = g.ncols();
    let mut db = with_bias.then(|| Array2::zeros((k, d_out)));
    // Output rows per task: about 4M multiply-adds each, a multiple of 8 rows.
    let rows = ((1usize << 22) / (d_in * batch).max(1)).div_ceil(8).max(1) * 8;
    // dW[k] for each k is one (d_out, d_in) matrix: written as k * d_out rows
    let dw = written_by(k * d_out, d_in, |mut dw| {
        let mut tasks = Vec::new();
        for (kk, mut rest) in dw.axis_chunks_iter_mut(Axis(0), d_out.max(1)).enumerate() {
            let mut o0 = 0;
            while rest.nrows() > 0 {
                let n = rows.min(rest.nrows());
                let (head, tail) = rest.split_at(Axis(0), n);
                tasks.push((kk, o0, head));
                o0 += rows;
                rest = tail;
            }
        }
        tasks.into_par_iter().for_each(|(kk, o0, dw_c)| {
            let gk = g.slice(s![kk..;k, o0..o0 + dw_c.nrows()]);
            gemm(gk.t(), x, T::zero(), dw_c);
        });
    })
    .into_shape_with_order((k, d_out, d_in))
    .expect("standard layout");
    if let Some(db) = db.as_mut() {
        db.outer_iter_mut()
            .into_par_iter()
            .enumerate()
            .for_each(|(kk, mut row)| {
                for b in 0..batch {
                    row += &g.row(b * k + kk);
                }
            });
    }
    (dw, db)
}

// ---------------------------------------------------------------- Activation

/// `y = phi(z)`.
pub fn activation_forward<T: Float>(act: Activation, z: ArrayView2<T>) -> Array2<T> {
    written_by(z.nrows(), z.ncols(), |y| {
        for_row_chunks(y, rows_per_task(z.ncols(), 1), |start, mut yc| {
            for (r, mut yrow) in yc.rows_mut().into_iter().enumerate() {
                let zrow = z.row(start + r);
                match (zrow.as_slice(), yrow.as_slice_mut()) {
                    (Some(zs), Some(ys)) => act.apply_slice(zs, ys),
                    _ => Zip::from(&mut yrow)
                        .and(zrow)
                        .for_each(|y, &z| *y = act.apply(z)),
                }
            }
        })
    })
}

/// `(phi(z), phi'(z))`: the forward value and the slope a backward pass will need, in one pass.
pub fn activation_forward_with_slopes<T: Float>(
    act: Activation,
    z: ArrayView2<T>,
) -> (Array2<T>, Array2<T>) {
    let z = z.as_standard_layout();
    let (rows, cols) = z.dim();
    let mut d = None;
    let y = written_by(rows, cols, |mut y| {
        d = Some(written_by(rows, cols, |mut d| {
            act.apply_with_derivative_slice(
                z.as_slice().expect("standard layout"),
                y.as_slice_mut().expect("standard layout"),
                d.as_slice_mut().expect("standard layout"),
            )
        }))
    });
    (y, d.expect("written"))
}

/// `block[b, k] *= slopes[b]`: an activation's tangent map with the slopes a forward pass kept.
pub fn scale_by_slopes<T: Float>(slopes: ArrayView2<T>, k: usize, block: &mut Array2<T>) {
    let d = slopes.ncols();
    for_row_chunks(block.view_mut(), rows_per_task(d, k), |start, mut chunk| {
        for (s, mut rows) in chunk.axis_chunks_iter_mut(Axis(0), k).enumerate() {
            let slope = slopes.row(start / k + s);
            match (rows.as_slice_mut(), slope.as_slice()) {
                (Some(g), Some(slope)) => scale_rows(g, slope),
                _ => rows
                    .rows_mut()
                    .into_iter()
                    .for_each(|mut g| Zip::from(&mut g).and(slope).for_each(|g, &s| *g *= s)),
            }
        }
    });
}

/// `block[b, k] *= phi'(z[b])` in place: the activation's Jacobian is diagonal, so the VJP and
/// the JVP are the same map.
pub fn activation_tangent<T: Float>(
    act: Activation,
    z: ArrayView2<T>,
    k: usize,
    block: &mut Array2<T>,
) {
    let d = z.ncols();
    for_row_chunks(block.view_mut(), rows_per_task(d, k), |start, mut chunk| {
        let mut slope = vec![T::zero(); d];
        // `start` is a multiple of `k`: the chunk holds whole samples.
        for (s, mut rows) in chunk.axis_chunks_iter_mut(Axis(0), k).enumerate() {
            let zrow = z.row(start / k + s);
            match zrow.as_slice() {
                Some(zs) => act.derivative_slice(zs, &mut slope),
                None => slope
                    .iter_mut()
                    .zip(zrow)
                    .for_each(|(s, &z)| *s = act.derivative(z)),
            }
            match rows.as_slice_mut() {
                Some(g) => scale_rows(g, &slope),
                None => rows
                    .rows_mut()
                    .into_iter()
                    .for_each(|mut g| Zip::from(&mut g).and(&slope).for_each(|g, &s| *g *= s)),
            }
        }
    });
}

multiversion!(
    /// `g[r * d + j] *= slope[j]` for every row `r` (`d = slope.len()`).
    fn scale_rows<T: Float>(g: &mut [T], slope: &[T]) -> () = scale_rows_kernel
);

#[inline(always)]
fn scale_rows_kernel<T: Float>(g: &mut [T], slope: &[T]) {
    for row in g.chunks_exact_mut(slope.len()) {
        for (g, &s) in row.iter_mut().zip(slope) {
            *g *= s;
        }
    }
}

// ---------------------------------------------------------------- LayerNorm

/// `(x - mean) * rstd * weight + bias` elementwise for one row.
fn normalise_row<T: Float>(
    x: ArrayView1<T>,
    mean: T,
    rstd: T,
    p: &NormParams<T>,
    mut y: ndarray::ArrayViewMut1<T>,
) {
    Zip::from(&mut y)
        .and(x)
        .for_each(|y, &x| *y = (x - mean) * rstd);
    if let Some(w) = &p.weight {
        y *= w;
    }
    if let Some(b) = &p.bias {
        y += b;
    }
}

/// Mean and `1 / sqrt(var + eps)` (population variance) of a vector, two-pass. Values so large
/// that their sum or squares overflow the dtype (e.g. 1e20 in float32) take a scaled path, so the
/// normalised output stays exact instead of collapsing to 0 or NaN.
fn mean_rstd<T: Float>(v: impl Iterator<Item = T> + Clone, n: usize, eps: T) -> (T, T) {
    let nf = T::from_usize(n);
    let mut mean = v.clone().fold(T::zero(), |a, x| a + x) / nf;
    if !mean.is_finite() {
        let m = v.clone().fold(T::zero(), |a, x| a.max(x.abs()));
        mean = v.clone().fold(T::zero(), |a, x| a + x / m) / nf * m;
    }
    let var = v
        .clone()
        .fold(T::zero(), |a, x| a + (x - mean) * (x - mean))
        / nf;
    if var.is_finite() {
        return (mean, T::one() / (var + eps).sqrt());
    }
    // var = m^2 s with m the largest deviation: 1/sqrt(var + eps) = (1/m) / sqrt(s + eps/m^2)
    let m = v.clone().fold(T::zero(), |a, x| a.max((x - mean).abs()));
    let s = v.fold(T::zero(), |a, x| {
        let r = (x - mean) / m;
        a + r * r
    }) / nf;
    (mean, T::one() / m / (s + eps / m / m).sqrt())
}

pub fn layernorm_forward<T: Float>(
    x: ArrayView2<T>,
    p: &NormParams<T>,
) -> (Array2<T>, NormStats<T>) {
    let (batch, d) = x.dim();
    let mut stats = Array2::zeros((batch, 2));
    for_row_chunks(stats.view_mut(), rows_per_task(d, 1), |start, mut sc| {
        for (r, mut srow) in sc.rows_mut().into_iter().enumerate() {
            let (mean, rstd) = mean_rstd(x.row(start + r).iter().copied(), d, p.eps);
            srow[0] = mean;
            srow[1] = rstd;
        }
    });
    let stats = NormStats {
        mean: stats.column(0).to_owned(),
        rstd: stats.column(1).to_owned(),
    };
    let mut y = Array2::zeros((batch, d));
    for_row_chunks(y.view_mut(), rows_per_task(d, 1), |start, mut yc| {
        for (r, yrow) in yc.rows_mut().into_iter().enumerate() {
            let b = start + r;
            normalise_row(x.row(b), stats.mean[b], stats.rstd[b], p, yrow);
        }
    });
    (y, stats)
}

/// Which side of the normalisation the affine weight sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Cotangents flow back: multiply by the weight, then project.
    Vjp,
    /// Tangents flow forward: project, then multiply by the weight.
    Jvp,
}

/// LayerNorm's Jacobian per sample is `diag(w) P` with the symmetric
/// `P = rstd (I - 1 1^T / d - xhat xhat^T / d)`; the VJP applies `P diag(w)`, the JVP `diag(w) P`.
pub fn layernorm_tangent<T: Float>(
    x: ArrayView2<T>,
    stats: NormStatsView<'_, T>,
    p: &NormParams<T>,
    k: usize,
    block: ArrayView2<T>,
    direction: Direction,
) -> Array2<T> {
    let d = x.ncols();
    let inv_d = T::one() / T::from_usize(d);
    let mut out = Array2::zeros(block.raw_dim());
    for_row_chunks(out.view_mut(), rows_per_task(d, k), |start, mut oc| {
        let mut xhat = Array1::zeros(d);
        for (r, mut orow) in oc.rows_mut().into_iter().enumerate() {
            let row = start + r;
            let b = row / k;
            let rstd = stats.rstd[b];
            if row % k == 0 || r == 0 {
                let mean = stats.mean[b];
                Zip::from(&mut xhat)
                    .and(x.row(b))
                    .for_each(|h, &x| *h = (x - mean) * rstd);
            }
            orow.assign(&block.row(row));
            if let (Direction::Vjp, Some(w)) = (direction, &p.weight) {
                orow *= w;
            }
            let m1 = orow.sum() * inv_d;
            let m2 = orow.dot(&xhat) * inv_d;
            Zip::from(&mut orow)
                .and(&xhat)
                .for_each(|o, &h| *o = (*o - m1 - h * m2) * rstd);
            if let (Direction::Jvp, Some(w)) = (direction, &p.weight) {
                orow *= w;
            }
        }
    });
    out
}

// ---------------------------------------------------------------- BatchNorm

pub fn batchnorm_forward<T: Float>(
    x: ArrayView2<T>,
    p: &NormParams<T>,
) -> (Array2<T>, NormStats<T>) {
    let (batch, d) = x.dim();
    let mut mean = Array1::zeros(d);
    let mut rstd = Array1::zeros(d);
    // Per feature, summed over the batch in row order.
    Zip::from(&mut mean)
        .and(&mut rstd)
        .and(x.columns())
        .par_for_each(|m, r, col| {
            (*m, *r) = mean_rstd(col.iter().copied(), batch, p.eps);
        });
    let stats = NormStats { mean, rstd };
    let mut y = Array2::zeros((batch, d));
    for_row_chunks(y.view_mut(), rows_per_task(d, 1), |start, mut yc| {
        for (r, mut yrow) in yc.rows_mut().into_iter().enumerate() {
            let b = start + r;
            Zip::from(&mut yrow)
                .and(x.row(b))
                .and(&stats.mean)
                .and(&stats.rstd)
                .for_each(|y, &x, &m, &s| *y = (x - m) * s);
            if let Some(w) = &p.weight {
                yrow *= w;
            }
            if let Some(bias) = &p.bias {
                yrow += bias;
            }
        }
    });
    (y, stats)
}

/// BatchNorm's Jacobian over the whole batch, per feature `j`:
/// `w_j rstd_j (I - 1 1^T / B - xhat_j xhat_j^T / B)`, symmetric, so the VJP and the JVP are the
/// same map. Each of the `K` vectors per sample is one batch-wide vector.
pub fn batchnorm_tangent<T: Float>(
    x: ArrayView2<T>,
    stats: NormStatsView<'_, T>,
    p: &NormParams<T>,
    k: usize,
    block: ArrayView2<T>,
) -> Array2<T> {
    let (batch, d) = x.dim();
    let inv_b = T::one() / T::from_usize(batch);
    let mut xhat = Array2::zeros((batch, d));
    Zip::from(xhat.rows_mut())
        .and(x.rows())
        .for_each(|mut h, xr| {
            Zip::from(&mut h)
                .and(xr)
                .and(&stats.mean)
                .and(&stats.rstd)
                .for_each(|h, &x, &m, &s| *h = (x - m) * s);
        });
    let mut out = Array2::zeros(block.raw_dim());
    let block3 = block
        .into_shape_with_order((batch, k, d))
        .expect("block has B*K rows");
    let mut out3 = out
        .view_mut()
        .into_shape_with_order((batch, k, d))
        .expect("block has B*K rows");
    let pairs: Vec<_> = out3
        .axis_iter_mut(Axis(1))
        .zip(block3.axis_iter(Axis(1)))
        .collect();
    pairs.into_par_iter().for_each(|(mut o, v)| {
        let mut s1 = Array1::<T>::zeros(d);
        let mut s2 = Array1::<T>::zeros(d);
        for b in 0..batch {
            Zip::from(&mut s1)
                .and(&mut s2)
                .and(v.row(b))
                .and(xhat.row(b))
                .for_each(|s1, s2, &v, &h| {
                    *s1 += v;
                    *s2 += v * h;
                });
        }
        for b in 0..batch {
            Zip::from(o.row_mut(b))
                .and(v.row(b))
                .and(xhat.row(b))
                .and(&s1)
                .and(&s2)
                .and(&stats.rstd)
                .for_each(|o, &v, &h, &s1, &s2, &r| *o = (v - s1 * inv_b - h * s2 * inv_b) * r);
            if let Some(w) = &p.weight {
                let mut orow = o.row_mut(b);
                orow *= w;
            }
        }
    });
    out
}

// ---------------------------------------------------------------- Residual

/// `shortcut + alpha * body`.
pub fn add_scaled<T: Float>(shortcut: ArrayView2<T>, alpha: T, body: ArrayView2<T>) -> Array2<T> {
    let mut out = Array2::zeros(body.raw_dim());
    for_row_chunks(
        out.view_mut(),
        rows_per_task(body.ncols(), 1),
        |start, mut oc| {
            let n = oc.nrows();
            Zip::from(&mut oc)
                .and(shortcut.slice(s![start..start + n, ..]))
                .and(body.slice(s![start..start + n, ..]))
                .for_each(|o, &s, &b| *o = s + alpha * b);
        },
    );
    out
}

/// `acc += alpha * v`, in parallel.
pub fn add_assign_scaled<T: Float>(acc: &mut Array2<T>, alpha: T, v: ArrayView2<T>) {
    let d = acc.ncols();
    for_row_chunks(acc.view_mut(), rows_per_task(d, 1), |start, mut ac| {
        let n = ac.nrows();
        Zip::from(&mut ac)
            .and(v.slice(s![start..start + n, ..]))
            .for_each(|a, &v| *a += alpha * v);
    });
}
