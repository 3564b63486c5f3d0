//! Empty: this package only holds the GEMM shoot-out bench (`cargo bench -p gsc-gemm-shootout`).
