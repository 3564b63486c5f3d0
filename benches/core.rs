//! Criterion benches of the gsc-core numeric core: its elementwise and GEMM kernels, and the three
//! canonical workloads of `benches/compare.py` called from Rust, without Python or NumPy.
//!
//! Every network call runs the way the Python bindings run it: through `parallel::install`, inside
//! the gsc_core pool (every core by default; `CORE_THREADS=n` calls `parallel::set_num_threads(n)`
//! first). The kernels run on the calling thread, single-threaded, as the engine calls them on each
//! row tile.
//!
//! Benches (each in f32 and f64):
//! - `simd_tanh`: `simd::tanh_with_derivative_slice` on one 128x100 tile and on 1M
//!   elements (throughput: elements);
//! - `kernels_gemm`: `kernels::gemm` on the skinny Dense shapes (128x100)·(100x100) and (3200x100)·(100x100),
//!   1 thread, the right operand contiguous like the engine's `W.T`;
//! - `forward_w1`: `forward::forward` of the W1 network;
//! - `w1_profile`: `analysis::profile`, 50 Dense layers of width 100 (in 100, out 10), B = 2048,
//!   cross-entropy on integer classes;
//! - `w2_jacobian_norms`: `jacobian::jacobian_norms` to the output, 50 Dense of width 100 (out 100),
//!   B = 256;
//! - `w3_matrix`: `analysis::jacobian_log_sq_norm_matrix`, 32 Dense of width 100, B = 32.
//!
//! The networks are tanh MLPs (Dense, Tanh, ..., Dense: a tanh after every Dense but the last),
//! LeCun init (weights N(0, 1/d_in)), zero biases, Gaussian inputs, drawn in float64 by a small
//! deterministic generator and rounded to f32, so both dtypes see the same numbers.
//!
//! FLOP counts (the "elements" of every bench but `simd_tanh` are FLOPs, so Criterion's "elem/s" read as
//! FLOP/s): 2 m k n per GEMM, and for the workloads the nominal counts of `benches/compare.py`,
//! from 2 B d_in d_out per Dense GEMM: forward = sum over Dense; W1 = 3x that (forward, then input
//! and weight gradients); W2 = d_out x that (one VJP sweep per output unit); W3 = the same with
//! K = d_j for every end point j (about twice what gsc-core does, since it derives each tanh end
//! point from the preceding Dense end point's sweep).
//!
//! Before timing, each bench runs its call once and checks something cheap about the result
//! (finite, right shape, a known value), so a broken build does not benchmark garbage.
//!
//! Run: `cargo bench -p gsc-core --bench core` (about 2 minutes on 2 cores), or
//! `CORE_QUICK=1 cargo bench -p gsc-core --bench core` (shorter warm-up and measurement, about
//! 40 s). Criterion's own filter picks benches: `... --bench core -- w2_` (ids as above, e.g.
//! `w1_profile/f32`).
//!
//! The workloads use both cores: any other busy process on a 2-core machine shows in their times
//! (up to about twice as slow); run them on a quiet machine.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use ndarray::{s, Array1, Array2};

use gsc_core::analysis;
use gsc_core::forward;
use gsc_core::jacobian;
use gsc_core::kernels;
use gsc_core::loss::{Loss, Targets};
use gsc_core::parallel;
use gsc_core::simd;
use gsc_core::{Activation, DenseParams, Float, Layer, Network, Stop};

// ---------------------------------------------------------------------------------- data

/// Deterministic Gaussian inputs from the core's own generator (SplitMix64 + Box–Muller).
struct Rng(analysis::Gaussian);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(analysis::Gaussian::new(seed))
    }
    fn gaussian(&mut self) -> f64 {
        self.0.sample()
    }
    fn matrix<T: Float>(&mut self, rows: usize, cols: usize, std: f64) -> Array2<T> {
        Array2::from_shape_fn((rows, cols), |_| T::from_f64(std * self.gaussian()))
    }
}

fn dtype<T: Float>() -> &'static str {
    if std::mem::size_of::<T>() == 4 {
        "f32"
    } else {
        "f64"
    }
}

/// A tanh MLP with `dense` Dense layers (`d_in -> width -> ... -> width -> d_out`), LeCun init,
/// zero biases; with the `(d_in, d_out)` of each Dense layer.
fn tanh_mlp<T: Float>(
    seed: u64,
    dense: usize,
    d_in: usize,
    width: usize,
    d_out: usize,
) -> (Network<T>, Vec<(usize, usize)>) {
    let mut rng = Rng::new(seed);
    let mut layers = Vec::new();
    let mut shapes = Vec::new();
    for l in 0..dense {
        let fan_in = if l == 0 { d_in } else { width };
        let fan_out = if l + 1 == dense { d_out } else { width };
        layers.push(Layer::Dense(DenseParams {
            weight: rng.matrix::<T>(fan_out, fan_in, (1.0 / fan_in as f64).sqrt()),
            bias: Some(Array1::zeros(fan_out)),
        }));
        if l + 1 < dense {
            layers.push(Layer::Activation(Activation::Tanh));
        }
        shapes.push((fan_in, fan_out));
    }
    (Network::new(layers).expect("a valid MLP"), shapes)
}

/// Nominal FLOPs of one forward pass: 2 B d_in d_out per Dense GEMM.
fn forward_flops(shapes: &[(usize, usize)], batch: usize) -> u64 {
    shapes
        .iter()
        .map(|&(i, o)| 2 * (batch * i * o) as u64)
        .sum()
}

/// W3's nominal FLOPs (as benches/compare.py counts them): every end point `j` (`z_k` and
/// `tanh(z_k)` of each hidden Dense layer `k`, and the output) sweeps `d_j` cotangents back
/// through the Dense layers before it.
fn matrix_flops(shapes: &[(usize, usize)], batch: usize) -> u64 {
    let mut total = 0u64;
    for (k, &(_, d_out)) in shapes.iter().enumerate() {
        let cost = d_out as u64 * forward_flops(&shapes[..=k], batch);
        total += if k + 1 == shapes.len() {
            cost
        } else {
            2 * cost
        };
    }
    total
}

/// Runs `f` in the gsc_core pool, as the Python bindings do, and unwraps its result.
fn in_pool<R: Send>(what: &str, f: impl FnOnce() -> gsc_core::Result<R> + Send) -> R {
    match parallel::install(f).and_then(|r| r) {
        Ok(r) => r,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn all_finite<'a>(values: impl IntoIterator<Item = &'a f64>) -> bool {
    values.into_iter().all(|v| v.is_finite())
}

// ---------------------------------------------------------------------------------- settings

struct Settings {
    quick: bool,
}

impl Settings {
    /// Micro- to millisecond kernels.
    fn kernel(&self, g: &mut BenchmarkGroup<'_, WallTime>) {
        let (warm, measure, samples) = if self.quick {
            (300, 1000, 30)
        } else {
            (1000, 3000, 50)
        };
        g.warm_up_time(Duration::from_millis(warm))
            .measurement_time(Duration::from_millis(measure))
            .sample_size(samples);
    }
    /// Whole-network calls of 10-300 ms: few samples of a few iterations each.
    fn workload(&self, g: &mut BenchmarkGroup<'_, WallTime>) {
        let (warm, measure, samples) = if self.quick {
            (500, 2000, 10)
        } else {
            (1000, 8000, 20)
        };
        g.sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(warm))
            .measurement_time(Duration::from_millis(measure))
            .sample_size(samples);
    }
}

// ---------------------------------------------------------------------------------- kernels

fn bench_simd<T: Float>(g: &mut BenchmarkGroup<'_, WallTime>) {
    for (label, n) in [("128x100", 128 * 100), ("1M", 1_000_000)] {
        let mut rng = Rng::new(7);
        let input: Vec<T> = (0..n).map(|_| T::from_f64(rng.gaussian())).collect();
        let mut out = vec![T::zero(); n];
        let mut slope = vec![T::zero(); n];
        simd::tanh_with_derivative_slice(&input, &mut out, &mut slope);
        for ((&z, &t), &d) in input.iter().zip(&out).zip(&slope).step_by(97) {
            let (z, t, d) = (z.as_f64(), t.as_f64(), d.as_f64());
            let tol = if dtype::<T>() == "f32" { 1e-6 } else { 1e-14 };
            assert!(
                (t - z.tanh()).abs() <= tol && (d - (1.0 - z.tanh().powi(2))).abs() <= tol,
                "tanh_with_derivative_slice({z}) = ({t}, {d})"
            );
        }
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{}/{label}", dtype::<T>()), |b| {
            b.iter(|| {
                simd::tanh_with_derivative_slice(
                    black_box(&input[..]),
                    black_box(&mut out[..]),
                    black_box(&mut slope[..]),
                )
            })
        });
        black_box((&out, &slope));
    }
}

fn bench_gemm<T: Float>(g: &mut BenchmarkGroup<'_, WallTime>) {
    for m in [128, 3200] {
        let (k, n) = (100, 100);
        let mut rng = Rng::new(11);
        let a = rng.matrix::<T>(m, k, 1.0);
        let b = rng.matrix::<T>(k, n, (1.0 / k as f64).sqrt());
        let mut c = Array2::<T>::zeros((m, n));
        kernels::gemm(a.view(), b.view(), T::zero(), c.view_mut());
        for (i, j) in [(0, 0), (m / 2, 37), (m - 1, n - 1)] {
            let want: f64 = (0..k)
                .map(|l| a[[i, l]].as_f64() * b[[l, j]].as_f64())
                .sum();
            let tol = if dtype::<T>() == "f32" { 1e-4 } else { 1e-12 };
            assert!(
                (c[[i, j]].as_f64() - want).abs() <= tol * (1.0 + want.abs()),
                "gemm c[{i}, {j}] = {} vs {want}",
                c[[i, j]]
            );
        }
        g.throughput(Throughput::Elements((2 * m * k * n) as u64)); // FLOPs
        g.bench_function(format!("{}/{m}x{k}x{n}", dtype::<T>()), |bn| {
            bn.iter(|| {
                kernels::gemm(
                    black_box(a.view()),
                    black_box(b.view()),
                    T::zero(),
                    black_box(c.view_mut()),
                )
            })
        });
        black_box(&c);
    }
}

// ---------------------------------------------------------------------------------- workloads

/// W1's network, inputs and classes (also the forward bench's).
struct W1<T: Float> {
    net: Network<T>,
    shapes: Vec<(usize, usize)>,
    x: Array2<T>,
    classes: Array1<i64>,
}

const W1_BATCH: usize = 2048;
const W1_CLASSES: usize = 10;

fn w1<T: Float>() -> W1<T> {
    let (net, shapes) = tanh_mlp::<T>(1, 50, 100, 100, W1_CLASSES);
    let mut rng = Rng::new(2);
    let x = rng.matrix::<T>(W1_BATCH, 100, 1.0);
    let classes =
        Array1::from_shape_fn(W1_BATCH, |_| (rng.0.next_u64() % W1_CLASSES as u64) as i64);
    W1 {
        net,
        shapes,
        x,
        classes,
    }
}

/// The whole batch's forward pass keeps every slot (W1: about 80 MB in f32, 160 MB in f64), so its
/// time is mostly page faults on fresh allocations and varies with the allocator's state (perf:
/// about one fault per 4 KiB of trace per call); `w1_profile` streams tiles and avoids that.
fn bench_forward<T: Float>(g: &mut BenchmarkGroup<'_, WallTime>, w: &W1<T>, stop: &Stop) {
    let (net, x) = (&w.net, w.x.view());
    let trace = in_pool("forward", || forward::forward(net, x, stop));
    let out = trace.point(net, net.num_layers());
    assert_eq!(trace.values.len(), net.num_slots());
    assert_eq!(out.dim(), (W1_BATCH, W1_CLASSES));
    assert!(
        out.iter().all(|v| v.is_finite()),
        "forward: non-finite output"
    );
    drop(trace);
    // FLOPs: 2 B d_in d_out per Dense GEMM
    g.throughput(Throughput::Elements(forward_flops(&w.shapes, W1_BATCH)));
    g.bench_function(dtype::<T>(), |b| {
        b.iter(|| in_pool("forward", || forward::forward(net, black_box(x), stop)))
    });
}

fn bench_w1<T: Float>(g: &mut BenchmarkGroup<'_, WallTime>, w: &W1<T>, stop: &Stop) {
    let (net, x) = (&w.net, w.x.view());
    let targets = Targets::Classes(w.classes.view());
    let run = || {
        in_pool("profile", || {
            analysis::profile(net, black_box(x), Loss::CrossEntropy, targets, stop)
        })
    };
    let p = run();
    let points = net.num_layers() + 1;
    assert_eq!(p.losses.len(), W1_BATCH);
    assert!(p.losses.iter().all(|&l| l.is_finite() && l > 0.0));
    assert_eq!(p.point_log_norms.dim(), (points, W1_BATCH));
    assert_eq!(p.grad_log_norms.dim(), (points, W1_BATCH));
    assert!(all_finite(&p.point_log_norms) && all_finite(&p.grad_log_norms));
    assert_eq!(p.weight_grad_log_norms.len(), 50);
    assert!(all_finite(&p.weight_grad_log_norms));
    assert_eq!(p.preactivations.unit_std.len(), 49);
    drop(p);
    // FLOPs: 3 x 2 B d_in d_out per Dense (forward, input gradients, weight gradients)
    g.throughput(Throughput::Elements(3 * forward_flops(&w.shapes, W1_BATCH)));
    g.bench_function(dtype::<T>(), |b| b.iter(run));
}

fn bench_w2<T: Float>(g: &mut BenchmarkGroup<'_, WallTime>, stop: &Stop) {
    let batch = 256;
    let (net, shapes) = tanh_mlp::<T>(3, 50, 100, 100, 100);
    let x = Rng::new(4).matrix::<T>(batch, 100, 1.0);
    let (net, x) = (&net, x.view());
    let run = || {
        in_pool("jacobian_norms", || {
            jacobian::jacobian_norms(net, black_box(x), -1, stop)
        })
    };
    let norms = run();
    assert_eq!(norms.dim(), (net.num_layers() + 1, batch));
    assert!(norms.iter().all(|v| v.is_finite() && *v > T::zero()));
    // d out / d out is the 100 x 100 identity: Frobenius norm 10
    let last = norms.row(net.num_layers());
    assert!(
        last.iter().all(|v| (v.as_f64() - 10.0).abs() < 1e-4),
        "{last}"
    );
    drop(norms);
    // FLOPs: d_out = 100 cotangents per sample, 2 B d_in d_out per Dense each
    g.throughput(Throughput::Elements(100 * forward_flops(&shapes, batch)));
    g.bench_function(dtype::<T>(), |b| b.iter(run));
}

fn bench_w3<T: Float>(g: &mut BenchmarkGroup<'_, WallTime>, stop: &Stop) {
    let batch = 32;
    let (net, shapes) = tanh_mlp::<T>(5, 32, 100, 100, 100);
    let x = Rng::new(6).matrix::<T>(batch, 100, 1.0);
    let (net, x) = (&net, x.view());
    let run = || {
        in_pool("jacobian_log_sq_norm_matrix", || {
            analysis::jacobian_log_sq_norm_matrix(net, black_box(x), stop)
        })
    };
    let (matrix, points) = run();
    let p = net.num_layers() + 1;
    assert_eq!(matrix.dim(), (p, p, batch));
    assert_eq!(points.dim(), (p, batch));
    for i in 0..p {
        // ln ||I_100||_F^2 on the diagonal, finite above it, NaN below
        let diag = matrix.slice(s![i, i, ..]);
        assert!(
            diag.iter().all(|v| (v - 100f64.ln()).abs() < 1e-9),
            "{diag}"
        );
        assert!(all_finite(matrix.slice(s![i, i.., ..])));
        assert!(matrix.slice(s![i, ..i, ..]).iter().all(|v| v.is_nan()));
    }
    drop((matrix, points));
    // FLOPs: the nominal count (an end point j sweeps d_j cotangents through the Dense layers
    // before it); gsc-core derives the tanh end points and does about half
    g.throughput(Throughput::Elements(matrix_flops(&shapes, batch)));
    g.bench_function(dtype::<T>(), |b| b.iter(run));
}

// ---------------------------------------------------------------------------------- main

fn main() {
    let quick = std::env::var("CORE_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if let Some(n) = std::env::var("CORE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        parallel::set_num_threads(n).expect("CORE_THREADS");
    }
    println!(
        "== gsc-core benches: pool of {} threads, SIMD level {:?}{}",
        parallel::num_threads().expect("the gsc_core pool"),
        simd::level(),
        if quick { ", quick (CORE_QUICK)" } else { "" }
    );
    let settings = Settings { quick };
    let stop = Stop::new();
    let mut c = Criterion::default().configure_from_args();

    {
        let mut g = c.benchmark_group("simd_tanh");
        settings.kernel(&mut g);
        bench_simd::<f32>(&mut g);
        bench_simd::<f64>(&mut g);
        g.finish();
    }
    {
        let mut g = c.benchmark_group("kernels_gemm");
        settings.kernel(&mut g);
        bench_gemm::<f32>(&mut g);
        bench_gemm::<f64>(&mut g);
        g.finish();
    }
    let (w1_32, w1_64) = (w1::<f32>(), w1::<f64>());
    {
        let mut g = c.benchmark_group("forward_w1");
        settings.workload(&mut g);
        bench_forward(&mut g, &w1_32, &stop);
        bench_forward(&mut g, &w1_64, &stop);
        g.finish();
    }
    {
        let mut g = c.benchmark_group("w1_profile");
        settings.workload(&mut g);
        bench_w1(&mut g, &w1_32, &stop);
        bench_w1(&mut g, &w1_64, &stop);
        g.finish();
    }
    drop((w1_32, w1_64));
    {
        let mut g = c.benchmark_group("w2_jacobian_norms");
        settings.workload(&mut g);
        bench_w2::<f32>(&mut g, &stop);
        bench_w2::<f64>(&mut g, &stop);
        g.finish();
    }
    {
        let mut g = c.benchmark_group("w3_matrix");
        settings.workload(&mut g);
        bench_w3::<f32>(&mut g, &stop);
        bench_w3::<f64>(&mut g, &stop);
        g.finish();
    }
    c.final_summary();
}
