//! Two probes of what an adapter can do, for `i2vgen kbench` to normalise its timings against:
//! the FMA peak (an ALU-bound kernel that reads and writes almost nothing) and the copy bandwidth
//! (a memory-bound kernel that computes nothing). Each is one launch; the caller times it. A
//! probe has no twin: on a backend without cubecl kernels (the CPU reference backend) there is
//! nothing to measure and the functions return `None`.

mod kernels;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, backend_extension};
use burn::tensor::{DType, Device, Tensor};

/// FMAs each thread's loop body issues: 8 independent vec4 accumulators.
pub const FMA_PER_ITERATION: u64 = 8 * 4;

/// The probes as a backend operation, on cubecl devices only ([`fma_probe`] and [`copy_probe`]
/// check the device before dispatching).
#[backend_extension(Cube)]
pub trait ProbeBackend: Backend {
    fn fma_probe_kernel(seed: FloatTensor<Self>, iterations: usize) -> FloatTensor<Self>;
    fn copy_probe_kernel(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl ProbeBackend for Cube {
    fn fma_probe_kernel(seed: FloatTensor<Self>, iterations: usize) -> FloatTensor<Self> {
        kernels::fma_chain(seed, iterations)
    }

    fn copy_probe_kernel(x: FloatTensor<Self>) -> FloatTensor<Self> {
        kernels::copy(x)
    }
}

/// Whether `device` runs cubecl kernels (native wgpu, WebGPU, any cubecl runtime).
#[allow(unreachable_patterns)] // where the cubecl backend is the only one compiled in
pub fn runs_kernels(device: &Device) -> bool {
    matches!(device.as_dispatch(), burn::backend::DispatchDevice::Cube(_))
}

/// The FMA-peak probe: one thread per vec4 of `seed` (`[4·threads]`, f32), each running
/// `iterations` rounds of 8 independent vec4 FMAs on accumulators in registers, then writing
/// their sum (`[4·threads]`), so nothing is optimised away. It issues [`fma_probe_flops`]
/// floating-point operations and moves 32 bytes per thread. `None` on a device without cubecl
/// kernels, or when `seed` is not f32 with a length that is a multiple of 4.
pub fn fma_probe(seed: Tensor<1>, iterations: usize) -> Option<Tensor<1>> {
    let [len] = seed.dims();
    if !runs_kernels(&seed.device()) || seed.dtype() != DType::F32 || !len.is_multiple_of(4) {
        return None;
    }
    Some(Tensor::from_dispatch(Dispatch::fma_probe_kernel(seed.into_dispatch(), iterations)))
}

/// Floating-point operations (an FMA counts two) of [`fma_probe`] on a `[4·threads]` seed.
pub fn fma_probe_flops(threads: usize, iterations: usize) -> u64 {
    2 * FMA_PER_ITERATION * iterations as u64 * threads as u64
}

/// The copy-bandwidth probe: a plain vec4 copy of `x` (f32, a length that is a multiple of 4)
/// into a new buffer, reading and writing `4·len` bytes each. `None` on a device without cubecl
/// kernels or for another dtype or length.
pub fn copy_probe(x: Tensor<1>) -> Option<Tensor<1>> {
    let [len] = x.dims();
    if !runs_kernels(&x.device()) || x.dtype() != DType::F32 || !len.is_multiple_of(4) {
        return None;
    }
    Some(Tensor::from_dispatch(Dispatch::copy_probe_kernel(x.into_dispatch())))
}
