//! GPU kernels for the I2VGen-XL networks, each a cubecl `#[cube]` kernel behind a burn backend
//! extension (`#[backend_extension(Cube, NdArray)]`): on a cubecl device (wgpu, WebGPU) the kernel
//! runs, on the CPU reference backend its burn-op twin does, and the twin stays callable on every
//! backend as the reference the kernel is tested against.

pub mod attention;
pub mod cases;
pub mod conv;
pub mod epilogue;
pub mod gemm;
pub mod group_norm;
pub mod layer_norm;
pub mod packed;
pub mod probe;

use std::sync::atomic::{AtomicBool, Ordering};

static BURN_OPS: AtomicBool = AtomicBool::new(false);

/// Which implementation the public ops of every module run from now on, process-wide: `true`
/// routes each to its burn-op twin on every backend (burn's default kernels on a cubecl device,
/// what the networks ran before these kernels), `false` (the default) to the fastest path the
/// backend has. For benchmarks that compare the two in one process (`i2vgen bench --kernels`).
pub fn use_burn_ops(on: bool) {
    BURN_OPS.store(on, Ordering::Relaxed);
}

/// Whether [`use_burn_ops`] is on.
pub fn burn_ops() -> bool {
    BURN_OPS.load(Ordering::Relaxed)
}
