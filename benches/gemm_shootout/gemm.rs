//! GEMM backends on gsc_core's own shapes: GFLOP/s per shape/backend/dtype, and whether each
//! backend's results are bitwise independent of how the rows of the product are split into tiles.
//! (Thread-count independence only needs each backend to be deterministic for a given call, since
//! gsc-core's tiles depend on shapes only; tile-split invariance is the stronger property that a
//! row's result does not depend on how many other rows share its call, e.g. on the batch size.)
//!
//! Backends:
//! - `ndarray`   : `ndarray::linalg::general_mat_mul` (matrixmultiply; what gsc-core used before adopting `gemm`)
//! - `gemm`      : the `gemm` crate 0.19 with its `x86-v4` feature (AVX-512 kernels, runtime
//!   dispatch; without that feature it has AVX2 kernels only)
//! - `faer`      : `faer::linalg::matmul::matmul` (nano-gemm for tiny products, `private-gemm-x86`
//!   with AVX-512/AVX2 runtime dispatch otherwise)
//! - `oblas-sys` : the system OpenBLAS (`libopenblas.so.0`, Debian: libopenblas0, or the library at
//!   $GEMM_SYS_OPENBLAS) through its CBLAS interface, loaded with dlopen so that the
//!   bench builds and runs without it (skipped if absent); Debian 12 ships 0.3.21,
//!   which runs its Haswell kernels on Zen 5 unless OPENBLAS_CORETYPE=SkylakeX is set
//! - `oblas-new` : a recent OpenBLAS, the `libscipy_openblas` that SciPy's wheel ships, loaded with
//!   dlopen (reference only: found under ../.venv, or at $GEMM_NEW_OPENBLAS; skipped
//!   if absent)
//! - `gemm-pad`  : `gemm` with products of < 3 rows, 1 column or <= 256 outputs zero-padded out of
//!   gemm's special small-product kernels (`gemm_pad`; determinism checks only)
//!
//! Modes (columns of the table):
//! - `1t`      one call on the whole product, 1 thread
//! - `1t/T`    sequential loop over row tiles of T rows, 1 thread
//! - `2t/T`    rayon over row tiles of T rows, 2 threads, single-threaded GEMM per tile (timed
//!   from inside the pool, as gsc-core runs)
//! - `2t-int`  one call on the whole product with the backend's own 2 threads (reference only)
//!
//! Run: `cargo bench -p gsc-gemm-shootout --bench gemm` (Criterion, then the checks and the table), or
//! `GEMM_QUICK=1 cargo bench -p gsc-gemm-shootout --bench gemm` (checks and table only, 2-3 minutes).
//! `GEMM_FILTER=f64/ab_m2048,/gemm` keeps the cases whose `dtype/case/backend` id contains one of
//! the comma-separated texts
//! (ids: `ab_m{m}_n{n}`, `abt_m{m}_n{n}`, `atx_k{k}`, `peak_n{n}`; backends as above);
//! `GEMM_PEAK_N` sets the size of the square peak product (1024 quick, 2048 otherwise);
//! `GEMM_REPEAT=n` times everything n times and keeps each cell's best rate (for a busy machine).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis, LinalgScalar};
use rayon::prelude::*;

// OpenBLAS is loaded at run time (dlopen), so that the bench builds and runs without it.
extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
}

// ---------------------------------------------------------------------------------- backends

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Nd,
    Gemm,
    Faer,
    OblasSys,
    OblasNew,
    /// `gemm` with small products padded (`gemm_pad`; checked for determinism only).
    GemmPad,
}

impl Backend {
    const ALL: [Backend; 5] = [
        Backend::Nd,
        Backend::Gemm,
        Backend::Faer,
        Backend::OblasSys,
        Backend::OblasNew,
    ];
    fn name(self) -> &'static str {
        match self {
            Backend::Nd => "ndarray",
            Backend::Gemm => "gemm",
            Backend::Faer => "faer",
            Backend::OblasSys => "oblas-sys",
            Backend::OblasNew => "oblas-new",
            Backend::GemmPad => "gemm-pad",
        }
    }
    fn available(self) -> bool {
        match self {
            Backend::OblasSys => sys_blas().is_some(),
            Backend::OblasNew => new_blas().is_some(),
            _ => true,
        }
    }
    fn has_internal(self) -> bool {
        !matches!(self, Backend::Nd | Backend::GemmPad)
    }
}

type CblasFn<T> = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    T,
    *const T,
    c_int,
    *const T,
    c_int,
    T,
    *mut T,
    c_int,
);

/// An OpenBLAS loaded at run time: the system one (`prefix` "") or SciPy's (`prefix` "scipy_").
struct Blas {
    dgemm: CblasFn<f64>,
    sgemm: CblasFn<f32>,
    set_threads: unsafe extern "C" fn(c_int),
    describe: String,
}

/// SciPy's `libscipy_openblas-*.so` in the project's virtualenv.
fn find_scipy_blas() -> Option<String> {
    let venv_lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
    for py in std::fs::read_dir(venv_lib).ok()?.flatten() {
        let libs = py.path().join("site-packages/scipy.libs");
        for f in std::fs::read_dir(libs).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("libscipy_openblas-") && name.ends_with(".so") {
                return Some(f.path().to_string_lossy().into_owned());
            }
        }
    }
    None
}

fn load_blas(path: &str, prefix: &str) -> Option<Blas> {
    unsafe {
        let c = CString::new(path).ok()?;
        let h = dlopen(c.as_ptr(), 2 /* RTLD_NOW */);
        if h.is_null() {
            eprintln!("dlopen {path} failed: {:?}", CStr::from_ptr(dlerror()));
            return None;
        }
        let sym = |n: &str| -> Option<*mut c_void> {
            let cn = CString::new(format!("{prefix}{n}")).ok()?;
            let p = dlsym(h, cn.as_ptr());
            (!p.is_null()).then_some(p)
        };
        type Str = unsafe extern "C" fn() -> *const c_char;
        let corename = std::mem::transmute::<*mut c_void, Str>(sym("openblas_get_corename")?);
        let config = std::mem::transmute::<*mut c_void, Str>(sym("openblas_get_config")?);
        let lib = Blas {
            dgemm: std::mem::transmute::<*mut c_void, CblasFn<f64>>(sym("cblas_dgemm")?),
            sgemm: std::mem::transmute::<*mut c_void, CblasFn<f32>>(sym("cblas_sgemm")?),
            set_threads: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int)>(sym(
                "openblas_set_num_threads",
            )?),
            describe: format!(
                "{} | {} | {path}",
                CStr::from_ptr(corename()).to_string_lossy(),
                CStr::from_ptr(config()).to_string_lossy()
            ),
        };
        (lib.set_threads)(1);
        Some(lib)
    }
}

/// The system OpenBLAS (Debian: libopenblas0), or the library at $GEMM_SYS_OPENBLAS.
fn sys_blas() -> Option<&'static Blas> {
    static LIB: OnceLock<Option<Blas>> = OnceLock::new();
    LIB.get_or_init(|| {
        let path = std::env::var("GEMM_SYS_OPENBLAS").unwrap_or_else(|_| "libopenblas.so.0".into());
        load_blas(&path, "")
    })
    .as_ref()
}

/// SciPy's OpenBLAS, or the library at $GEMM_NEW_OPENBLAS (symbols prefixed `scipy_`).
fn new_blas() -> Option<&'static Blas> {
    static LIB: OnceLock<Option<Blas>> = OnceLock::new();
    LIB.get_or_init(|| {
        let path = std::env::var("GEMM_NEW_OPENBLAS")
            .ok()
            .or_else(find_scipy_blas)?;
        load_blas(&path, "scipy_")
    })
    .as_ref()
}

fn blas(be: Backend) -> &'static Blas {
    match be {
        Backend::OblasSys => sys_blas(),
        _ => new_blas(),
    }
    .expect("OpenBLAS not loaded")
}

trait E:
    LinalgScalar + faer::traits::ComplexField + Send + Sync + std::fmt::Debug + PartialEq + 'static
{
    const NAME: &'static str;
    fn f(x: f64) -> Self;
    fn g(self) -> f64;
    fn bits(self) -> u64;
    fn cblas(lib: &Blas) -> CblasFn<Self>;
}

impl E for f64 {
    const NAME: &'static str = "f64";
    fn f(x: f64) -> Self {
        x
    }
    fn g(self) -> f64 {
        self
    }
    fn bits(self) -> u64 {
        self.to_bits()
    }
    fn cblas(lib: &Blas) -> CblasFn<Self> {
        lib.dgemm
    }
}

impl E for f32 {
    const NAME: &'static str = "f32";
    fn f(x: f64) -> Self {
        x as f32
    }
    fn g(self) -> f64 {
        self as f64
    }
    fn bits(self) -> u64 {
        self.to_bits() as u64
    }
    fn cblas(lib: &Blas) -> CblasFn<Self> {
        lib.sgemm
    }
}

/// `(transposed, leading dimension)` of a view as a row-major CBLAS operand, if it has one
/// (the stride of an axis of length 1 is arbitrary and ignored).
fn cblas_operand<T>(x: &ArrayView2<T>) -> Option<(bool, c_int)> {
    let (r, c) = x.dim();
    let st = x.strides();
    if (c <= 1 || st[1] == 1) && (r <= 1 || st[0] >= c as isize) {
        Some((
            false,
            if r <= 1 {
                c.max(1) as c_int
            } else {
                st[0] as c_int
            },
        ))
    } else if (r <= 1 || st[0] == 1) && (c <= 1 || st[1] >= r as isize) {
        Some((
            true,
            if c <= 1 {
                r.max(1) as c_int
            } else {
                st[1] as c_int
            },
        ))
    } else {
        None
    }
}

/// `C = A B + beta C` through a CBLAS `?gemm` (row-major), any strides (copies what CBLAS can't take).
fn cblas_mm<T: E>(
    f: CblasFn<T>,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    beta: T,
    c: &mut ArrayViewMut2<T>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let ldc = match cblas_operand(&c.view()) {
        Some((false, ld)) => ld,
        Some((true, _)) => {
            // Column-major C: C^T = B^T A^T is row-major.
            let mut ct = c.view_mut().reversed_axes();
            return cblas_mm(f, b.t(), a.t(), beta, &mut ct);
        }
        None => {
            let mut tmp = Array2::zeros((m, n));
            tmp.assign(c);
            cblas_mm(f, a, b, beta, &mut tmp.view_mut());
            c.assign(&tmp);
            return;
        }
    };
    let (a_own, b_own);
    let (ta, lda, ap) = match cblas_operand(&a) {
        Some((t, ld)) => (t, ld, a.as_ptr()),
        None => {
            a_own = a.as_standard_layout().into_owned();
            (false, k.max(1) as c_int, a_own.as_ptr())
        }
    };
    let (tb, ldb, bp) = match cblas_operand(&b) {
        Some((t, ld)) => (t, ld, b.as_ptr()),
        None => {
            b_own = b.as_standard_layout().into_owned();
            (false, n.max(1) as c_int, b_own.as_ptr())
        }
    };
    let tr = |t: bool| if t { 112 } else { 111 };
    unsafe {
        f(
            101,
            tr(ta),
            tr(tb),
            m as c_int,
            n as c_int,
            k as c_int,
            T::f(1.0),
            ap,
            lda,
            bp,
            ldb,
            beta,
            c.as_mut_ptr(),
            ldc,
        )
    }
}

/// `C = A B + beta C` with `backend`; `internal2` asks the backend for its own 2 threads.
fn mm<T: E>(
    be: Backend,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    beta: T,
    c: &mut ArrayViewMut2<T>,
    internal2: bool,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert_eq!(b.nrows(), k);
    assert_eq!(c.dim(), (m, n));
    match be {
        Backend::Nd => general_mat_mul(T::f(1.0), &a, &b, beta, c),
        Backend::GemmPad => gemm_pad(a, b, beta, c),
        Backend::Gemm => unsafe {
            let (cs, as_, bs) = (
                c.strides().to_vec(),
                a.strides().to_vec(),
                b.strides().to_vec(),
            );
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                cs[1],
                cs[0],
                beta != T::f(0.0),
                a.as_ptr(),
                as_[1],
                as_[0],
                b.as_ptr(),
                bs[1],
                bs[0],
                beta,      // gemm's alpha multiplies dst
                T::f(1.0), // gemm's beta multiplies lhs * rhs
                false,
                false,
                false,
                if internal2 {
                    gemm::Parallelism::Rayon(2)
                } else {
                    gemm::Parallelism::None
                },
            )
        },
        Backend::Faer => {
            let accum = if beta == T::f(0.0) {
                faer::Accum::Replace
            } else {
                assert!(beta == T::f(1.0), "faer's matmul adds or replaces");
                faer::Accum::Add
            };
            let (cs, as_, bs) = (
                c.strides().to_vec(),
                a.strides().to_vec(),
                b.strides().to_vec(),
            );
            unsafe {
                let cm =
                    faer::MatMut::<'_, T>::from_raw_parts_mut(c.as_mut_ptr(), m, n, cs[0], cs[1]);
                let am = faer::MatRef::<'_, T>::from_raw_parts(a.as_ptr(), m, k, as_[0], as_[1]);
                let bm = faer::MatRef::<'_, T>::from_raw_parts(b.as_ptr(), k, n, bs[0], bs[1]);
                let par = if internal2 {
                    faer::Par::rayon(2)
                } else {
                    faer::Par::Seq
                };
                faer::linalg::matmul::matmul(cm, accum, am, bm, T::f(1.0), par);
            }
        }
        // OpenBLAS: its thread count is set around whole measurements (`blas_threads`), since
        // switching it on every call costs more than small products.
        Backend::OblasSys | Backend::OblasNew => cblas_mm(T::cblas(blas(be)), a, b, beta, c),
    }
}

/// `C = A B + beta C` with the `gemm` crate, single-threaded, padded with zeros so that gemm always
/// takes its general kernels: it computes products with 1 row or 1 column with gemv kernels, and
/// those with at most 256 outputs (m n <= 256, some layouts) with "horizontal" dot-product kernels,
/// whose rounding differs from the general ones; a row's result would then depend on how many rows
/// share its call. (Products with k <= 2 take yet another path; not padded here.)
fn gemm_pad<T: E>(a: ArrayView2<T>, b: ArrayView2<T>, beta: T, c: &mut ArrayViewMut2<T>) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let n_p = n.max(2);
    let m_p = m.max(3).max(256 / n_p + 1);
    if m == 0 || n == 0 || (m_p, n_p) == (m, n) {
        return mm(Backend::Gemm, a, b, beta, c, false);
    }
    let mut ap = Array2::zeros((m_p, k));
    ap.slice_mut(s![..m, ..]).assign(&a);
    let bp_own;
    let bp = if n_p == n {
        b
    } else {
        let mut x = Array2::zeros((k, n_p));
        x.slice_mut(s![.., ..n]).assign(&b);
        bp_own = x;
        bp_own.view()
    };
    let mut cp = Array2::zeros((m_p, n_p));
    cp.slice_mut(s![..m, ..n]).assign(c);
    mm(
        Backend::Gemm,
        ap.view(),
        bp,
        beta,
        &mut cp.view_mut(),
        false,
    );
    c.assign(&cp.slice(s![..m, ..n]));
}

/// Runs `f` with OpenBLAS's own thread count at 2 when `mode` is `Internal2` (then back to 1,
/// and a pause so that its spinning workers go to sleep before the next measurement).
fn blas_threads<R>(be: Backend, mode: Mode, f: impl FnOnce() -> R) -> R {
    let set = |n: c_int| match be {
        Backend::OblasSys | Backend::OblasNew => unsafe { (blas(be).set_threads)(n) },
        _ => {}
    };
    if mode != Mode::Internal2 || !matches!(be, Backend::OblasSys | Backend::OblasNew) {
        return f();
    }
    set(2);
    let r = f();
    set(1);
    std::thread::sleep(Duration::from_millis(300));
    r
}

// ---------------------------------------------------------------------------------- cases

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `C = A B`, A (m x k), B (k x n) row-major.
    AB,
    /// `C = A W^T + bias` (beta = 1), W (n x k) row-major as in `DenseParams` (d_out, d_in).
    ABt,
    /// `C = G^T X`, G (k x m), X (k x n) row-major: weight gradient reduced over the batch k.
    AtX,
}

#[derive(Clone, Debug)]
struct Case {
    id: String,
    label: String,
    kind: Kind,
    m: usize,
    n: usize,
    k: usize,
    tiles: Vec<usize>,
    peak: bool,
    /// Checked for determinism only (not timed).
    check_only: bool,
}

impl Case {
    fn new(kind: Kind, m: usize, n: usize, k: usize, tiles: &[usize]) -> Case {
        let (id, label) = match kind {
            Kind::AB => (format!("ab_m{m}_n{n}"), format!("A·B    {m}x{k}·{k}x{n}")),
            Kind::ABt => (
                format!("abt_m{m}_n{n}"),
                format!("A·Wᵀ+b {m}x{k}·({n}x{k})ᵀ"),
            ),
            Kind::AtX => (format!("atx_k{k}"), format!("Gᵀ·X   ({k}x{m})ᵀ·{k}x{n}")),
        };
        Case {
            id,
            label,
            kind,
            m,
            n,
            k,
            tiles: tiles.to_vec(),
            peak: false,
            check_only: false,
        }
    }
    fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }
}

fn cases(peak_n: usize) -> Vec<Case> {
    let mut v = Vec::new();
    for m in [64, 256, 2048, 25600] {
        v.push(Case::new(Kind::AB, m, 100, 100, &[64, 256]));
    }
    for m in [64, 256, 2048, 25600] {
        v.push(Case::new(Kind::ABt, m, 100, 100, &[64, 256]));
    }
    v.push(Case::new(Kind::AB, 100, 100, 100, &[64, 256]));
    v.push(Case::new(Kind::AB, 3200, 100, 100, &[64, 256]));
    v.push(Case::new(Kind::AtX, 100, 100, 2048, &[16, 50]));
    // Narrow output layers (10 classes, 1 output): checked for determinism only.
    for n in [10, 1] {
        for kind in [Kind::AB, Kind::ABt] {
            let mut c = Case::new(kind, 512, n, 100, &[64, 256]);
            c.check_only = true;
            v.push(c);
        }
    }
    let mut p = Case::new(Kind::AB, peak_n, peak_n, peak_n, &[64, 256]);
    p.id = format!("peak_n{peak_n}");
    p.label = format!("peak   {peak_n}^3");
    p.peak = true;
    v.push(p);
    v
}

/// Operands of one case: `a` and `b` are views into these (`a` may be a transposed view).
struct Data<T> {
    a_store: Array2<T>,
    b_store: Array2<T>,
    c_init: Array2<T>,
    beta: T,
    kind: Kind,
}

fn rand_matrix<T: E>(r: usize, c: usize, seed: u64) -> Array2<T> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Array2::from_shape_fn((r, c), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        T::f(((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
    })
}

impl<T: E> Data<T> {
    fn new(case: &Case) -> Data<T> {
        let (m, n, k) = (case.m, case.n, case.k);
        match case.kind {
            Kind::AB => Data {
                a_store: rand_matrix(m, k, 1),
                b_store: rand_matrix(k, n, 2),
                c_init: Array2::zeros((m, n)),
                beta: T::f(0.0),
                kind: case.kind,
            },
            Kind::ABt => {
                let bias = rand_matrix::<T>(1, n, 3);
                Data {
                    a_store: rand_matrix(m, k, 1),
                    b_store: rand_matrix(n, k, 2),
                    c_init: bias.broadcast((m, n)).unwrap().to_owned(),
                    beta: T::f(1.0),
                    kind: case.kind,
                }
            }
            Kind::AtX => Data {
                a_store: rand_matrix(k, m, 1),
                b_store: rand_matrix(k, n, 2),
                c_init: Array2::zeros((m, n)),
                beta: T::f(0.0),
                kind: case.kind,
            },
        }
    }
    fn a(&self) -> ArrayView2<'_, T> {
        match self.kind {
            Kind::AtX => self.a_store.t(),
            _ => self.a_store.view(),
        }
    }
    fn b(&self) -> ArrayView2<'_, T> {
        match self.kind {
            Kind::ABt => self.b_store.t(),
            _ => self.b_store.view(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Whole1,
    Tiles1(usize),
    Tiles2(usize),
    Internal2,
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Whole1 => "1t".into(),
            Mode::Tiles1(t) => format!("1t/{t}"),
            Mode::Tiles2(t) => format!("2t/{t}"),
            Mode::Internal2 => "2t-int".into(),
        }
    }
}

fn tiles<'a, T: E>(mut c: ArrayViewMut2<'a, T>, t: usize) -> Vec<(usize, ArrayViewMut2<'a, T>)> {
    let mut v = Vec::new();
    let mut r0 = 0;
    while c.nrows() > 0 {
        let n = t.min(c.nrows());
        let (head, rest) = c.split_at(Axis(0), n);
        v.push((r0, head));
        r0 += n;
        c = rest;
    }
    v
}

fn run<T: E>(
    be: Backend,
    mode: Mode,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    beta: T,
    c: &mut Array2<T>,
    pool2: &rayon::ThreadPool,
) {
    match mode {
        Mode::Whole1 => mm(be, a, b, beta, &mut c.view_mut(), false),
        Mode::Internal2 => pool2.install(|| mm(be, a, b, beta, &mut c.view_mut(), true)),
        Mode::Tiles1(t) => {
            for (r0, mut cc) in tiles(c.view_mut(), t) {
                mm(
                    be,
                    a.slice(s![r0..r0 + cc.nrows(), ..]),
                    b,
                    beta,
                    &mut cc,
                    false,
                );
            }
        }
        Mode::Tiles2(t) => pool2.install(|| {
            tiles(c.view_mut(), t)
                .into_par_iter()
                .for_each(|(r0, mut cc)| {
                    mm(
                        be,
                        a.slice(s![r0..r0 + cc.nrows(), ..]),
                        b,
                        beta,
                        &mut cc,
                        false,
                    );
                })
        }),
    }
}

/// Runs `f` inside the 2-thread pool for the 2-thread modes, on the calling thread otherwise.
fn in_pool<R: Send>(mode: Mode, pool2: &rayon::ThreadPool, f: impl FnOnce() -> R + Send) -> R {
    match mode {
        Mode::Tiles2(_) | Mode::Internal2 => pool2.install(f),
        _ => f(),
    }
}

fn modes(case: &Case, be: Backend) -> Vec<Mode> {
    let mut v = vec![Mode::Whole1];
    if let Some(&t) = case.tiles.first() {
        v.push(Mode::Tiles1(t));
    }
    v.extend(case.tiles.iter().map(|&t| Mode::Tiles2(t)));
    if be.has_internal() {
        v.push(Mode::Internal2);
    }
    v
}

// ---------------------------------------------------------------------------------- timing

fn time_per_call(mut f: impl FnMut(), min_batch: Duration, batches: usize) -> f64 {
    f();
    let t = Instant::now();
    f();
    let one = t.elapsed().as_secs_f64().max(1e-9);
    let reps = ((min_batch.as_secs_f64() / one).ceil() as usize).clamp(1, 1_000_000);
    // Long calls: at least 3 batches, else about the time the short ones take in all.
    let budget = min_batch.as_secs_f64() * batches as f64;
    let batches = batches.min(((budget / (reps as f64 * one)).ceil() as usize).max(3));
    let mut best = f64::INFINITY;
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

struct Row {
    dtype: &'static str,
    case: Case,
    backend: Backend,
    gflops: Vec<(Mode, f64)>,
}

fn measure<T: E>(
    case: &Case,
    be: Backend,
    pool2: &rayon::ThreadPool,
    batch: Duration,
    batches: usize,
) -> Row {
    let d = Data::<T>::new(case);
    let mut c = d.c_init.clone();
    let mut out = Vec::new();
    for mode in modes(case, be) {
        // 2-thread modes are timed from inside the pool, as gsc-core runs (no hand-off per call).
        let sec = blas_threads(be, mode, || {
            in_pool(mode, pool2, || {
                time_per_call(
                    || run(be, mode, d.a(), d.b(), d.beta, black_box(&mut c), pool2),
                    batch,
                    batches,
                )
            })
        });
        out.push((mode, case.flops() / sec / 1e9));
    }
    Row {
        dtype: T::NAME,
        case: case.clone(),
        backend: be,
        gflops: out,
    }
}

// ---------------------------------------------------------------------------------- determinism

fn bits_equal<T: E>(x: &Array2<T>, y: &Array2<T>) -> usize {
    x.iter()
        .zip(y.iter())
        .filter(|(a, b)| a.bits() != b.bits())
        .count()
}

/// Compares, bitwise, the whole product against row-tiled ones (and against itself, and the
/// backend's own threading); returns one line per case and the number of mismatching checks.
/// Mismatch counts of one case: (tilings we use + repeat, single tiles of any size, own threads).
struct Verdict {
    line: String,
    tiled: usize,
    single: usize,
    internal: usize,
}

fn determinism<T: E>(case: &Case, be: Backend, pool2: &rayon::ThreadPool) -> Verdict {
    let d = Data::<T>::new(case);
    let fresh = |mode: Mode| {
        let mut c = d.c_init.clone();
        blas_threads(be, mode, || {
            run(be, mode, d.a(), d.b(), d.beta, &mut c, pool2)
        });
        c
    };
    let whole = fresh(Mode::Whole1);
    let nd = {
        let mut c = d.c_init.clone();
        run(
            Backend::Nd,
            Mode::Whole1,
            d.a(),
            d.b(),
            d.beta,
            &mut c,
            pool2,
        );
        c
    };
    let scale = nd
        .iter()
        .fold(0.0f64, |m, x| m.max(x.g().abs()))
        .max(1e-300);
    let err = whole
        .iter()
        .zip(nd.iter())
        .fold(0.0f64, |m, (x, y)| m.max((x.g() - y.g()).abs()))
        / scale;
    let mut checks: Vec<(String, usize)> =
        vec![("again".into(), bits_equal(&whole, &fresh(Mode::Whole1)))];
    for &t in &case.tiles {
        checks.push((
            format!("1t/{t}"),
            bits_equal(&whole, &fresh(Mode::Tiles1(t))),
        ));
    }
    for &t in &case.tiles {
        checks.push((
            format!("2t/{t}"),
            bits_equal(&whole, &fresh(Mode::Tiles2(t))),
        ));
    }
    if be.has_internal() {
        let i1 = fresh(Mode::Internal2);
        checks.push(("2t-int".into(), bits_equal(&whole, &i1)));
        checks.push((
            "2t-int again".into(),
            bits_equal(&i1, &fresh(Mode::Internal2)),
        ));
    }
    // Single tiles of r rows at row offsets 0, 1 and 37, each against the same rows of `whole`.
    let sizes: Vec<usize> = (1..=70)
        .chain([96, 100, 128, 163, 256])
        .filter(|&r| r <= case.m)
        .collect();
    let mut odd_rows = Vec::new();
    for &r in &sizes {
        let differs = [0, 1, 37]
            .into_iter()
            .filter(|&o| o + r <= case.m)
            .any(|o| {
                let mut c = d.c_init.slice(s![o..o + r, ..]).to_owned();
                mm(
                    be,
                    d.a().slice(s![o..o + r, ..]),
                    d.b(),
                    d.beta,
                    &mut c.view_mut(),
                    false,
                );
                bits_equal(&c, &whole.slice(s![o..o + r, ..]).to_owned()) > 0
            });
        if differs {
            odd_rows.push(r.to_string());
        }
    }
    let shown = if odd_rows.len() > 10 {
        format!(
            "{},… ({} of {} sizes)",
            odd_rows[..8].join(","),
            odd_rows.len(),
            sizes.len()
        )
    } else {
        odd_rows.join(",")
    };
    checks.push((
        format!("single r-row tiles (offsets 0,1,37) ≠ whole for r in [{shown}]"),
        usize::from(!odd_rows.is_empty()),
    ));
    let count = |f: &dyn Fn(&str) -> bool| checks.iter().filter(|(k, n)| *n > 0 && f(k)).count();
    let tiled = count(&|k| !k.starts_with("single") && !k.starts_with("2t-int"));
    let single = count(&|k| k.starts_with("single"));
    let internal = count(&|k| k.starts_with("2t-int"));
    let desc: Vec<String> = checks
        .iter()
        .map(|(k, n)| {
            if k.starts_with("single") {
                k.clone()
            } else if *n == 0 {
                format!("{k}=")
            } else {
                format!("{k}≠({n})")
            }
        })
        .collect();
    let line = format!(
        "  {:<3} {:<10} {:<27} max|Δ|/max|C| vs ndarray {:7.1e}  {}",
        T::NAME,
        be.name(),
        case.label,
        err,
        desc.join(" ")
    );
    Verdict {
        line,
        tiled,
        single,
        internal,
    }
}

// ---------------------------------------------------------------------------------- output

fn print_table(rows: &[Row]) {
    let cols = ["1t", "1t/T", "2t/T1", "2t/T2", "2t-int"];
    for dtype in ["f64", "f32"] {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.dtype == dtype).collect();
        if rs.is_empty() {
            continue;
        }
        // Peak: the best rate on the peak product, for 1 thread and for 2 threads.
        let best = |pred: &dyn Fn(Mode) -> bool| {
            rs.iter()
                .filter(|r| r.case.peak)
                .flat_map(|r| r.gflops.iter().filter(|(m, _)| pred(*m)).map(|(_, g)| *g))
                .fold(0.0f64, f64::max)
        };
        let pk1 = best(&|m| matches!(m, Mode::Whole1 | Mode::Tiles1(_)));
        let pk2 = best(&|_| true);
        println!();
        println!("{dtype}: GFLOP/s (T1/T2 = tile rows in brackets; %pk = best deterministic 2-thread rate / best 2-thread rate on the peak product = {pk2:.1}; 1-thread peak {pk1:.1})");
        println!(
            "{:<26} {:<10} {:>7} {:>7} {:>7} {:>7} {:>7} {:>5}",
            "shape", "backend", cols[0], cols[1], cols[2], cols[3], cols[4], "%pk"
        );
        let mut last = String::new();
        for r in rs {
            let cell = |f: &dyn Fn(Mode) -> bool| {
                r.gflops
                    .iter()
                    .find(|(m, _)| f(*m))
                    .map(|(_, g)| format!("{g:7.1}"))
                    .unwrap_or(format!("{:>7}", "-"))
            };
            let t = &r.case.tiles;
            let t1 = t.first().copied();
            let t2 = t.get(1).copied();
            let det2 = r
                .gflops
                .iter()
                .filter(|(m, _)| matches!(m, Mode::Tiles2(_)))
                .map(|(_, g)| *g)
                .fold(0.0f64, f64::max);
            let label = format!(
                "{} [{}]",
                r.case.label,
                t.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let shown = if label == last {
                String::new()
            } else {
                label.clone()
            };
            last = label;
            println!(
                "{:<26} {:<10} {} {} {} {} {} {}",
                shown,
                r.backend.name(),
                cell(&|m| m == Mode::Whole1),
                cell(&|m| Some(m) == t1.map(Mode::Tiles1)),
                cell(&|m| Some(m) == t1.map(Mode::Tiles2)),
                cell(&|m| Some(m) == t2.map(Mode::Tiles2)),
                cell(&|m| m == Mode::Internal2),
                if pk2 > 0.0 {
                    format!("{:4.0}%", 100.0 * det2 / pk2)
                } else {
                    "    -".into()
                }
            );
        }
    }
}

fn selected(filter: &Option<String>, dtype: &str, case: &Case, be: Backend) -> bool {
    let id = format!("{dtype}/{}/{}", case.id, be.name());
    filter
        .as_ref()
        .is_none_or(|f| f.split(',').any(|part| id.contains(part)))
}

fn main() {
    let quick = std::env::var("GEMM_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let filter = std::env::var("GEMM_FILTER").ok().filter(|f| !f.is_empty());
    let peak_n = std::env::var("GEMM_PEAK_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1024 } else { 2048 });
    let pool2 = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    let cases = cases(peak_n);
    let backends: Vec<Backend> = Backend::ALL.into_iter().filter(|b| b.available()).collect();
    let checked: Vec<Backend> = backends.iter().copied().chain([Backend::GemmPad]).collect();

    println!("== GEMM backends on gsc_core shapes");
    println!(
        "cpu: avx2 {} fma {} avx512f {}",
        is_x86_feature_detected!("avx2"),
        is_x86_feature_detected!("fma"),
        is_x86_feature_detected!("avx512f")
    );
    match sys_blas() {
        Some(l) => println!("oblas-sys: {}", l.describe),
        None => println!(
            "oblas-sys: not found (apt-get install libopenblas0, or set GEMM_SYS_OPENBLAS)"
        ),
    }
    match new_blas() {
        Some(l) => println!("oblas-new: {}", l.describe),
        None => println!("oblas-new: not found (set GEMM_NEW_OPENBLAS to a libscipy_openblas .so)"),
    }

    if !quick {
        let mut cr = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .configure_from_args();
        for case in cases.iter().filter(|c| !c.check_only) {
            for dtype in ["f64", "f32"] {
                let mut g = cr.benchmark_group(format!("gemm/{dtype}/{}", case.id));
                g.throughput(Throughput::Elements(case.flops() as u64));
                for &be in &backends {
                    if !selected(&filter, dtype, case, be) {
                        continue;
                    }
                    macro_rules! bench {
                        ($t:ty) => {{
                            let d = Data::<$t>::new(case);
                            let mut c = d.c_init.clone();
                            for mode in modes(case, be) {
                                blas_threads(be, mode, || {
                                    g.bench_function(
                                        format!("{}/{}", be.name(), mode.name()),
                                        |bn| {
                                            in_pool(mode, &pool2, || {
                                                bn.iter(|| {
                                                    run(
                                                        be,
                                                        mode,
                                                        d.a(),
                                                        d.b(),
                                                        d.beta,
                                                        black_box(&mut c),
                                                        &pool2,
                                                    )
                                                })
                                            })
                                        },
                                    );
                                });
                            }
                        }};
                    }
                    if dtype == "f64" {
                        bench!(f64)
                    } else {
                        bench!(f32)
                    }
                }
                g.finish();
            }
        }
        cr.final_summary();
    }

    println!();
    println!("== determinism: bitwise equality of the whole product (1 call, 1 thread) with row-tiled ones");
    println!("   ('again' = the same call repeated; 1t/T = sequential T-row tiles; 2t/T = rayon, 2 threads; 2t-int = backend's own 2 threads;");
    println!("    single r-row tiles: rows o..o+r alone vs the same rows of the whole product, r in 1..=70 and 96,100,128,163,256)");
    let mut summary = Vec::new();
    for &be in &checked {
        for dtype in ["f64", "f32"] {
            let (mut tiled, mut single, mut internal, mut ran) = (Vec::new(), 0, 0, 0);
            for case in cases.iter().filter(|c| !c.peak || c.m <= 1024) {
                if !selected(&filter, dtype, case, be) {
                    continue;
                }
                let v = if dtype == "f64" {
                    determinism::<f64>(case, be, &pool2)
                } else {
                    determinism::<f32>(case, be, &pool2)
                };
                println!("{}", v.line);
                ran += 1;
                if v.tiled > 0 {
                    tiled.push(format!("{}x{}x{}", case.m, case.k, case.n));
                }
                single += v.single;
                internal += v.internal;
            }
            let yn = |n: usize| if n == 0 { "yes" } else { "NO" };
            if ran == 0 {
                continue;
            }
            summary.push(format!(
                "  {:<10} {dtype}: any single tile of 1..70 rows: {:<3}  own 2 threads == 1 thread: {:<3}  equal under our tilings (1 and 2 threads): {}",
                be.name(),
                yn(single),
                if be.has_internal() { yn(internal) } else { "n/a" },
                if tiled.is_empty() { "yes".to_string() } else { format!("NO for m x k x n = {}", tiled.join(", ")) }
            ));
        }
    }
    println!("{}", summary.join("\n"));

    // Many short batches, best one kept: robust to other processes sharing the 2 cores.
    let (batch, batches) = if quick {
        (Duration::from_millis(4), 25)
    } else {
        (Duration::from_millis(10), 30)
    };
    // GEMM_REPEAT=n sweeps n times and keeps each cell's best rate (a busy machine's noise).
    let repeat: usize = std::env::var("GEMM_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut rows: Vec<Row> = Vec::new();
    for sweep in 0..repeat {
        let mut i = 0;
        for case in cases.iter().filter(|c| !c.check_only) {
            for dtype in ["f64", "f32"] {
                for &be in &backends {
                    if !selected(&filter, dtype, case, be) {
                        continue;
                    }
                    let r = if dtype == "f64" {
                        measure::<f64>(case, be, &pool2, batch, batches)
                    } else {
                        measure::<f32>(case, be, &pool2, batch, batches)
                    };
                    if sweep == 0 {
                        rows.push(r);
                    } else {
                        for (cell, new) in rows[i].gflops.iter_mut().zip(r.gflops) {
                            cell.1 = cell.1.max(new.1);
                        }
                    }
                    i += 1;
                }
            }
        }
    }
    print_table(&rows);
}
