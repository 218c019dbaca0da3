//! `nn.GroupNorm` (+ affine, + optional SiLU) over `[N, C, ...]`, the norm every ResnetBlock,
//! TemporalConvLayer and transformer of the UNet and the VAE opens with.
//!
//! burn's ops spend 9 launches on it (mean, sub, square, mean, +eps, sqrt, div, ×w, +b), with
//! reductions that run one thread per (sample, group) serially over up to 286,720 floats, and 7
//! more on a SiLU. The kernels here take 3: per-block partial statistics, their combination per
//! (sample, group), and one elementwise pass that normalises, applies the affine and the SiLU.
//! `i2vgen::models::nn::GroupNorm` (`forward`, `forward_silu`) calls [`group_norm`].

// NdArray is deprecated upstream but is the CPU reference backend the project tests against;
// the routing the extension macro generates names it too, so the allowance covers the module.
#![allow(deprecated)]

mod kernels;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape, Tensor};

#[cfg(not(target_arch = "wasm32"))]
use burn::backend::NdArray;

/// The fused GroupNorm as a backend operation: `x` is `[N, C, ...]`, `weight` and `bias` are
/// `[C]`, the result has the shape of `x`. `*_fused` is the fastest path the backend has (the
/// kernels on a cubecl device), `*_twin` burn's ops on any backend, the kernels' reference.
/// (Separate affine methods: the extension macro does not unwrap `Option` tensor arguments.)
#[backend_extension(Cube, NdArray: cfg(not(target_arch = "wasm32")))]
pub trait GroupNormBackend: Backend {
    fn group_norm_fused(x: FloatTensor<Self>, groups: usize, eps: f64, silu: bool) -> FloatTensor<Self>;

    fn group_norm_affine_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self>;

    fn group_norm_twin(x: FloatTensor<Self>, groups: usize, eps: f64, silu: bool) -> FloatTensor<Self> {
        twin::<Self>(x, None, groups, eps, silu)
    }

    fn group_norm_affine_twin(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        twin::<Self>(x, Some((weight, bias)), groups, eps, silu)
    }
}

impl GroupNormBackend for Cube {
    fn group_norm_fused(x: FloatTensor<Self>, groups: usize, eps: f64, silu: bool) -> FloatTensor<Self> {
        cube(x, None, groups, eps, silu)
    }

    fn group_norm_affine_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        cube(x, Some((weight, bias)), groups, eps, silu)
    }
}

/// The kernels store f32 or f16 (f32 statistics either way) when `x` and the affine parameters
/// have that one dtype; other dtypes and mixed ones keep burn's ops.
fn cube(
    x: FloatTensor<Cube>,
    affine: Option<(FloatTensor<Cube>, FloatTensor<Cube>)>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> FloatTensor<Cube> {
    let same_affine = affine.as_ref().is_none_or(|(w, b)| w.dtype == x.dtype && b.dtype == x.dtype);
    if matches!(x.dtype, DType::F32 | DType::F16) && same_affine {
        kernels::group_norm(x, affine, groups, eps, silu)
    } else {
        twin::<Cube>(x, affine, groups, eps, silu)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl GroupNormBackend for NdArray {
    fn group_norm_fused(x: FloatTensor<Self>, groups: usize, eps: f64, silu: bool) -> FloatTensor<Self> {
        twin::<Self>(x, None, groups, eps, silu)
    }

    fn group_norm_affine_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        twin::<Self>(x, Some((weight, bias)), groups, eps, silu)
    }
}

/// `nn.GroupNorm(groups, C, eps)` on `x`, then `weight`/`bias` per channel when given, then SiLU
/// when `silu`: the kernels on a cubecl device, burn's ops on the CPU backend.
///
/// # Shapes
/// `x`: `[N, C, ...]` (4-D `[N, C, H, W]` or 5-D `[N, C, F, H, W]`), `weight`, `bias`: `[C]`.
///
/// # Panics
/// When `groups` does not divide `C` or the affine parameters are not `[C]`: model code builds
/// both from a checked config, so either is a programming error.
pub fn group_norm<const D: usize>(
    x: Tensor<D>,
    affine: Option<(Tensor<1>, Tensor<1>)>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Tensor<D> {
    if crate::burn_ops() {
        return group_norm_twin(x, affine, groups, eps, silu);
    }
    check(&x, affine.as_ref(), groups);
    Tensor::from_dispatch(match affine {
        None => Dispatch::group_norm_fused(x.into_dispatch(), groups, eps, silu),
        Some((w, b)) => Dispatch::group_norm_affine_fused(
            x.into_dispatch(),
            w.into_dispatch(),
            b.into_dispatch(),
            groups,
            eps,
            silu,
        ),
    })
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
    check(&x, affine.as_ref(), groups);
    Tensor::from_dispatch(match affine {
        None => Dispatch::group_norm_twin(x.into_dispatch(), groups, eps, silu),
        Some((w, b)) => {
            Dispatch::group_norm_affine_twin(x.into_dispatch(), w.into_dispatch(), b.into_dispatch(), groups, eps, silu)
        }
    })
}

fn check<const D: usize>(x: &Tensor<D>, affine: Option<&(Tensor<1>, Tensor<1>)>, groups: usize) {
    let channels = x.dims()[1];
    assert!(
        D >= 3 && groups > 0 && channels.is_multiple_of(groups),
        "GroupNorm: {groups} groups do not divide {channels} channels"
    );
    if let Some((weight, bias)) = affine {
        assert_eq!([weight.dims(), bias.dims()], [[channels]; 2], "GroupNorm: the affine parameters must be [C]");
    }
}

/// The burn-op GroupNorm `crate/src/models/nn.rs` computed before it called [`group_norm`]
/// (two-pass: mean, then the mean of the centred squares), plus the affine and SiLU its callers
/// applied after it.
fn twin<B: Backend>(
    x: FloatTensor<B>,
    affine: Option<(FloatTensor<B>, FloatTensor<B>)>,
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
    if let Some((weight, bias)) = affine {
        let mut affine = vec![1; shape.num_dims()];
        affine[1] = channels;
        y = B::float_add(
            B::float_mul(y, B::float_reshape(weight, Shape::from(affine.clone()))),
            B::float_reshape(bias, Shape::from(affine)),
        );
    }
    if silu { B::float_mul(y.clone(), B::sigmoid(y)) } else { y }
}
