//! `nn.GroupNorm` (+ affine, + optional SiLU) over `[N, C, ...]`, the norm every ResnetBlock,
//! TemporalConvLayer and transformer of the UNet and the VAE opens with.
//!
//! burn's ops spend 9 launches on it (mean, sub, square, mean, +eps, sqrt, div, ×w, +b), with
//! reductions that run one thread per (sample, group) serially over up to 286,720 floats, and 7
//! more on a SiLU. The kernels here take 3: per-block partial statistics, their combination per
//! (sample, group), and one elementwise pass that normalises, applies the affine and the SiLU.

mod kernels;

use burn::backend::Backend;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape, Tensor};

#[cfg(not(target_arch = "wasm32"))]
use burn::backend::NdArray;
use burn::backend::{Cube, Dispatch, backend_extension};

/// The fused GroupNorm as a backend operation. Both methods take `x` as `[N, C, ...]`, `weight`
/// and `bias` as `[C]` (both or neither), and return the shape of `x`.
#[backend_extension(Cube, NdArray: cfg(not(target_arch = "wasm32")))]
pub trait GroupNormBackend: Backend {
    /// The fastest implementation the backend has: the kernels on a cubecl device, the twin elsewhere.
    fn group_norm_fused(
        x: FloatTensor<Self>,
        weight: Option<FloatTensor<Self>>,
        bias: Option<FloatTensor<Self>>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self>;

    /// The burn-op twin on any backend: the reference the kernels are tested against.
    fn group_norm_twin(
        x: FloatTensor<Self>,
        weight: Option<FloatTensor<Self>>,
        bias: Option<FloatTensor<Self>>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self>;
}

impl GroupNormBackend for Cube {
    fn group_norm_fused(
        x: FloatTensor<Self>,
        weight: Option<FloatTensor<Self>>,
        bias: Option<FloatTensor<Self>>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        // The kernels are written for f32; an f16 model keeps burn's ops until they have an f16 path.
        let f32_affine = [&weight, &bias].iter().all(|t| t.as_ref().is_none_or(|t| t.dtype == DType::F32));
        if x.dtype == DType::F32 && f32_affine {
            kernels::group_norm(x, weight.zip(bias), groups, eps, silu)
        } else {
            twin::<Self>(x, weight, bias, groups, eps, silu)
        }
    }

    fn group_norm_twin(
        x: FloatTensor<Self>,
        weight: Option<FloatTensor<Self>>,
        bias: Option<FloatTensor<Self>>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        twin::<Self>(x, weight, bias, groups, eps, silu)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl GroupNormBackend for NdArray {
    fn group_norm_fused(
        x: FloatTensor<Self>,
        weight: Option<FloatTensor<Self>>,
        bias: Option<FloatTensor<Self>>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        twin::<Self>(x, weight, bias, groups, eps, silu)
    }

    fn group_norm_twin(
        x: FloatTensor<Self>,
        weight: Option<FloatTensor<Self>>,
        bias: Option<FloatTensor<Self>>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        twin::<Self>(x, weight, bias, groups, eps, silu)
    }
}

/// `nn.GroupNorm(groups, C, eps)` on `x`, then `weight`/`bias` per channel when given, then SiLU
/// when `silu`: the kernels on a cubecl device, burn's ops on the CPU backend.
///
/// # Shapes
/// `x`: `[N, C, ...]` (4-D `[N, C, H, W]` or 5-D `[N, C, F, H, W]`), `weight`, `bias`: `[C]`.
///
/// # Panics
/// When `groups` does not divide `C`, or `weight` and `bias` are not both given or both absent:
/// model code builds these from a checked config, so either is a programming error.
pub fn group_norm<const D: usize>(x: Tensor<D>, affine: Option<(Tensor<1>, Tensor<1>)>, groups: usize, eps: f64, silu: bool) -> Tensor<D> {
    call(x, affine, groups, eps, silu, Dispatch::group_norm_fused)
}

/// [`group_norm`] through burn's ops on any backend: the reference for the kernels' tests and
/// benchmarks.
pub fn group_norm_twin<const D: usize>(
    x: Tensor<D>,
    affine: Option<(Tensor<1>, Tensor<1>)>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Tensor<D> {
    call(x, affine, groups, eps, silu, Dispatch::group_norm_twin)
}

type Operation = fn(
    FloatTensor<Dispatch>,
    Option<FloatTensor<Dispatch>>,
    Option<FloatTensor<Dispatch>>,
    usize,
    f64,
    bool,
) -> FloatTensor<Dispatch>;

fn call<const D: usize>(
    x: Tensor<D>,
    affine: Option<(Tensor<1>, Tensor<1>)>,
    groups: usize,
    eps: f64,
    silu: bool,
    operation: Operation,
) -> Tensor<D> {
    let channels = x.dims()[1];
    assert!(D >= 3 && groups > 0 && channels % groups == 0, "GroupNorm: {groups} groups do not divide {channels} channels");
    if let Some((weight, bias)) = &affine {
        assert_eq!([weight.dims(), bias.dims()], [[channels]; 2], "GroupNorm: affine parameters must be [C]");
    }
    let (weight, bias) = affine.map(|(w, b)| (w.into_dispatch(), b.into_dispatch())).unzip();
    Tensor::from_dispatch(operation(x.into_dispatch(), weight, bias, groups, eps, silu))
}

/// The burn-op GroupNorm that `crate/src/models/nn.rs` computes today (two-pass: mean, then the
/// mean of the centred squares), plus the affine and SiLU the callers apply after it.
fn twin<B: Backend>(
    x: FloatTensor<B>,
    weight: Option<FloatTensor<B>>,
    bias: Option<FloatTensor<B>>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> FloatTensor<B> {
    let shape = x.shape();
    let (n, channels) = (shape[0], shape[1]);
    let per_group = shape.num_elements() / (n * groups);
    let grouped = B::float_reshape(x, Shape::new([n, groups, per_group]));
    let centered = B::float_sub(grouped.clone(), B::float_mean_dim(grouped, 2));
    let variance = B::float_mean_dim(B::float_powi_scalar(centered.clone(), 2.into()), 2);
    let normed = B::float_div(centered, B::float_sqrt(B::float_add_scalar(variance, eps.into())));
    let mut y = B::float_reshape(normed, shape.clone());
    if let (Some(weight), Some(bias)) = (weight, bias) {
        let mut affine = vec![1; shape.num_dims()];
        affine[1] = channels;
        y = B::float_add(
            B::float_mul(y, B::float_reshape(weight, Shape::from(affine.clone()))),
            B::float_reshape(bias, Shape::from(affine)),
        );
    }
    if silu { B::float_mul(y.clone(), B::sigmoid(y)) } else { y }
}
