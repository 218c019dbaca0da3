//! Multi-head scaled-dot-product attention, softmax(q kᵀ/√d) v per head, on the `[B, T, heads·d]`
//! layout the projections produce: the core of diffusers' `Attention` (the UNet's spatial,
//! cross and temporal attention) and of CLIP's `CLIPAttention` (causal for the text encoder).
//!
//! burn's ops spend about 17 launches on it (head-split copies of q and k, QKᵀ, scale, max, exp,
//! sum, divide and the masked-row guards on the materialised score matrix, copies before S·V,
//! S·V) plus the copy back to `[B, T, heads·d]`, and the score matrix is so large at the first
//! UNet level that the crate computes it in query chunks. The kernel here is one launch with an
//! online softmax: no score matrix, no head-split copies.

// NdArray is deprecated upstream but is the CPU reference backend the project tests against;
// the routing the extension macro generates names it too, so the allowance covers the module.
#![allow(deprecated)]

mod kernels;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, TensorMetadata, backend_extension};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Shape, Tensor};

#[cfg(not(target_arch = "wasm32"))]
use burn::backend::NdArray;

/// Fused attention as a backend operation (shapes as [`attention`]). `attention_fused` is the
/// fastest path the backend has (the kernel on a cubecl device), `attention_twin` burn's ops on
/// any backend, the kernel's reference.
#[backend_extension(Cube, NdArray: cfg(not(target_arch = "wasm32")))]
pub trait AttentionBackend: Backend {
    fn attention_fused(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
        causal: bool,
    ) -> FloatTensor<Self>;

    fn attention_twin(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
        causal: bool,
    ) -> FloatTensor<Self> {
        twin::<Self>(q, k, v, heads, causal)
    }
}

impl AttentionBackend for Cube {
    /// The kernel reads f32 or f16 storage (all three alike; it computes in f32) with head dims
    /// up to 128; anything else keeps burn's ops.
    fn attention_fused(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
        causal: bool,
    ) -> FloatTensor<Self> {
        let kernel_dtype = matches!(q.dtype, DType::F32 | DType::F16) && k.dtype == q.dtype && v.dtype == q.dtype;
        if kernel_dtype && q.shape()[2] / heads <= kernels::MAX_HEAD_DIM {
            kernels::attention(q, k, v, heads, causal)
        } else {
            twin::<Self>(q, k, v, heads, causal)
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl AttentionBackend for NdArray {
    fn attention_fused(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
        causal: bool,
    ) -> FloatTensor<Self> {
        twin::<Self>(q, k, v, heads, causal)
    }
}

/// softmax(q kᵀ / √d) v over `heads` heads of `d = C / heads` columns each, with the causal
/// mask when `causal` (key `j` is seen by query `i` when `j ≤ i + Tk − Tq`, burn's alignment; a
/// query that sees no key gives 0): the kernel on a cubecl device, burn's ops on the CPU backend.
///
/// # Shapes
/// q `[B, Tq, heads·d]`, k and v `[B, Tk, heads·d]` → `[B, Tq, heads·d]`
///
/// # Panics
/// When `heads` does not divide `C` or the shapes disagree: model code builds both from a
/// checked config, so either is a programming error.
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, causal: bool) -> Tensor<3> {
    if crate::burn_ops() {
        return attention_twin(q, k, v, heads, causal);
    }
    check(&q, &k, &v, heads);
    Tensor::from_dispatch(Dispatch::attention_fused(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        heads,
        causal,
    ))
}

/// [`attention`] through burn's ops on any backend: the reference for the kernel's tests and
/// benchmarks.
pub fn attention_twin(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, causal: bool) -> Tensor<3> {
    check(&q, &k, &v, heads);
    Tensor::from_dispatch(Dispatch::attention_twin(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        heads,
        causal,
    ))
}

fn check(q: &Tensor<3>, k: &Tensor<3>, v: &Tensor<3>, heads: usize) {
    let [b, _, c] = q.dims();
    let [kb, tk, kc] = k.dims();
    assert!(heads > 0 && c.is_multiple_of(heads), "attention: {heads} heads do not divide {c} channels");
    assert_eq!(k.dims(), v.dims(), "attention: k and v must have the same shape");
    assert!(kb == b && kc == c && tk > 0, "attention: k {:?} does not fit q {:?}", k.dims(), q.dims());
}

/// The burn-op attention that `crate/src/models/attention.rs` `multi_head` computes today, in one
/// piece (no query chunks): split the heads with `reshape([b, t, heads, d]).swap_dims(1, 2)`,
/// burn's `attention` module op, and back.
fn twin<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    heads: usize,
    causal: bool,
) -> FloatTensor<B> {
    let shape = q.shape();
    let (b, tq, c) = (shape[0], shape[1], shape[2]);
    let tk = k.shape()[1];
    let d = c / heads;
    let split =
        |x: FloatTensor<B>, t: usize| B::float_swap_dims(B::float_reshape(x, Shape::new([b, t, heads, d])), 1, 2);
    let options = AttentionModuleOptions { is_causal: causal, ..Default::default() };
    let out = B::attention(split(q, tq), split(k, tk), split(v, tk), None, None, options);
    B::float_reshape(B::float_swap_dims(out, 1, 2), shape)
}
