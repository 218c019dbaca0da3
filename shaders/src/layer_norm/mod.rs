//! `nn.LayerNorm` (affine) over the last dimension: the norm in front of every attention and
//! feed-forward of the UNet's transformer blocks (`norm1`–`norm3`) and of CLIP's encoder layers.
//!
//! burn's ops spend 9 launches on it (burn-backend's default `layer_norm`: mean, sub, square,
//! mean, +eps, sqrt, div, ×γ, +β). The kernel here takes one: a workgroup row per tensor row
//! reduces the row's mean and variance in shared memory (two passes over the row, which stays in
//! cache) and writes the normalised, affine row.

// NdArray is deprecated upstream but is the CPU reference backend the project tests against;
// the routing the extension macro generates names it too, so the allowance covers the module.
#![allow(deprecated)]

mod kernels;

use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, backend_extension};
use burn::tensor::{DType, Tensor};

#[cfg(not(target_arch = "wasm32"))]
use burn::backend::NdArray;

/// The fused LayerNorm as a backend operation: `x` is `[..., C]`, `weight` and `bias` are `[C]`,
/// the result has the shape of `x`. `*_fused` is the fastest path the backend has (the kernel on
/// a cubecl device), `*_twin` burn's ops on any backend, the kernel's reference.
#[backend_extension(Cube, NdArray: cfg(not(target_arch = "wasm32")))]
pub trait LayerNormBackend: Backend {
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    fn layer_norm_twin(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, weight, Some(bias), eps)
    }
}

/// The kernel stores f32 or f16 (f32 statistics either way) when all three tensors have that one
/// dtype; other dtypes and mixed ones keep burn's ops.
impl LayerNormBackend for Cube {
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        if matches!(x.dtype, DType::F32 | DType::F16) && [weight.dtype, bias.dtype] == [x.dtype; 2] {
            kernels::layer_norm(x, weight, bias, eps)
        } else {
            Self::layer_norm(x, weight, Some(bias), eps)
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl LayerNormBackend for NdArray {
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, weight, Some(bias), eps)
    }
}

/// `nn.LayerNorm(C, eps)` over the last dimension of `x`, then `weight` and `bias`: the kernel on
/// a cubecl device, burn's ops on the CPU backend.
///
/// # Shapes
/// `x`: `[..., C]`, `weight`, `bias`: `[C]`.
///
/// # Panics
/// When `weight` or `bias` is not `[C]`: model code builds both from a checked checkpoint, so
/// either is a programming error.
pub fn layer_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, bias: Tensor<1>, eps: f64) -> Tensor<D> {
    if crate::burn_ops() {
        return layer_norm_twin(x, weight, bias, eps);
    }
    check(&x, &weight, &bias);
    Tensor::from_dispatch(Dispatch::layer_norm_fused(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        eps,
    ))
}

/// [`layer_norm`] through burn's ops on any backend (`burn::tensor::module::layer_norm`, what
/// `crate/src/models/nn.rs` calls today): the reference for the kernel's tests and benchmarks.
pub fn layer_norm_twin<const D: usize>(x: Tensor<D>, weight: Tensor<1>, bias: Tensor<1>, eps: f64) -> Tensor<D> {
    check(&x, &weight, &bias);
    Tensor::from_dispatch(Dispatch::layer_norm_twin(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        eps,
    ))
}

fn check<const D: usize>(x: &Tensor<D>, weight: &Tensor<1>, bias: &Tensor<1>) {
    let channels = x.dims()[D - 1];
    assert_eq!([weight.dims(), bias.dims()], [[channels]; 2], "LayerNorm: the affine parameters must be [C]");
}
