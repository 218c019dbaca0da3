//! `x · W` with `W` held as packed f16 ([`PackedF16`]), computed in f32: the `Linear` layers'
//! matmul when their weights are packed (half the weight memory of f32 on every GPU).
//!
//! Issued work is whole tiles: `2 · ⌈M/64⌉·64 · ⌈N/64⌉·64 · ⌈K/16⌉·16` FLOPs, of which
//! `2·M·N·K` are useful (all of them at the UNet's shapes but the rows of small batches).

// NdArray is deprecated upstream but is the CPU reference backend the project tests against;
// the routing the extension macro generates names it too, so the allowance covers the module.
#![allow(deprecated)]

mod kernels;

pub use kernels::{TILE_K, TILE_M, TILE_N};

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Cube, Dispatch, backend_extension};
use burn::tensor::{DType, Tensor};

#[cfg(not(target_arch = "wasm32"))]
use burn::backend::NdArray;

use crate::packed::{PackedBackend, PackedF16};

/// The packed-weight matmul as a backend operation: `x` `[M, K]` f32, `words` a [`PackedF16`]'s
/// `[K, N_pad / 2]` → `[M, n]` f32. The kernel on a cubecl device; on the CPU backend the twin
/// (unpack, then burn's matmul).
#[backend_extension(Cube, NdArray: cfg(not(target_arch = "wasm32")))]
pub trait GemmBackend: Backend + PackedBackend {
    fn matmul_packed_fused(x: FloatTensor<Self>, words: IntTensor<Self>, n: usize) -> FloatTensor<Self>;
}

impl GemmBackend for Cube {
    fn matmul_packed_fused(x: FloatTensor<Self>, words: IntTensor<Self>, n: usize) -> FloatTensor<Self> {
        if x.dtype == DType::F32 {
            kernels::matmul_packed(x, words, n)
        } else {
            // The kernel is written for f32; other dtypes unpack and run burn's matmul.
            let w = Self::unpack_f16(words, n);
            let w = Self::float_cast(w, x.dtype.into());
            Self::float_matmul(x, w)
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl GemmBackend for NdArray {
    fn matmul_packed_fused(x: FloatTensor<Self>, words: IntTensor<Self>, n: usize) -> FloatTensor<Self> {
        Self::float_matmul(x, Self::unpack_f16(words, n))
    }
}

/// `x · w` for `x` `[M, K]` and packed `w` `[K, N]` → `[M, N]`, in f32 (each weight widened
/// exactly from its f16): one launch on a cubecl device (+1 copy of a strided `x`), the twin on
/// the CPU backend.
///
/// # Panics
/// When `x` has not K columns: model code builds both from one checked config.
pub fn matmul_packed(x: Tensor<2>, w: &PackedF16) -> Tensor<2> {
    let [k, n] = w.dims();
    assert_eq!(x.dims()[1], k, "matmul_packed: x {:?} against a [{k}, {n}] weight", x.dims());
    if crate::burn_ops() {
        return matmul_packed_twin(x, w);
    }
    Tensor::from_dispatch(Dispatch::matmul_packed_fused(x.into_dispatch(), w.words().clone().into_dispatch(), n))
}

/// [`matmul_packed`] through burn's ops on any backend: the weight unpacked to f32 (the same f16
/// values), then burn's matmul. The kernel's reference.
pub fn matmul_packed_twin(x: Tensor<2>, w: &PackedF16) -> Tensor<2> {
    x.matmul(w.unpack())
}
