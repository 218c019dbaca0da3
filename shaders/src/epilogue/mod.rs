//! The elementwise tails of the networks' linear layers, each one launch instead of a chain of
//! burn ops:
//!
//! - [`bias_act`]: `act(x + bias) (+ residual)` after a bias-free matmul. `Linear` becomes a
//!   matmul and this kernel; `to_out(x) + residual` (attention, `proj_out`) one kernel instead
//!   of three; CLIP's `fc1` + quick_gelu/gelu one instead of 7–8.
//! - [`geglu`]: diffusers `GEGLU`, `hidden, gate = proj(x).chunk(2, dim=-1); hidden * gelu(gate)`
//!   with `proj`'s bias folded in, on the bias-free projection output.
//!
//! GELU is exact (erf), as in diffusers and burn; the erf is written out in `kernels.rs` (WGSL has
//! none, and cubecl's polyfill is Abramowitz–Stegun 7.1.26, 5e-7 off in f32).

// NdArray is deprecated upstream but is the CPU reference backend the project tests against;
// the routing the extension macro generates names it too, so the allowance covers the module.
#![allow(deprecated)]

mod kernels;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, ExtensionType, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape, Slice, Tensor};

#[cfg(not(target_arch = "wasm32"))]
use burn::backend::NdArray;

/// The activation of [`bias_act`] (the config names `hidden_act`, `act_fn` map onto it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    /// None: a plain bias (+ residual) epilogue.
    Identity,
    /// Exact GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
    Gelu,
    /// `x · sigmoid(1.702 x)`, the original OpenAI CLIP's.
    QuickGelu,
    /// `x · sigmoid(x)`.
    Silu,
}

/// An optional tensor argument of a backend extension: the extension macro routes tensors and
/// enums of tensors, not `Option`s.
#[derive(ExtensionType)]
pub enum Operand<B: Backend> {
    Absent,
    Present(FloatTensor<B>),
}

impl<B: Backend> Operand<B> {
    fn into_option(self) -> Option<FloatTensor<B>> {
        match self {
            Self::Absent => None,
            Self::Present(t) => Some(t),
        }
    }
}

impl Operand<Dispatch> {
    fn from<const D: usize>(t: Option<Tensor<D>>) -> Self {
        t.map_or(Self::Absent, |t| Self::Present(t.into_dispatch()))
    }
}

/// The fused epilogues as backend operations (shapes as on [`bias_act`] and [`geglu`]).
/// `*_fused` is the fastest path the backend has (the kernel on a cubecl device), `*_twin`
/// burn's ops on any backend, the kernel's reference.
#[backend_extension(Cube, NdArray: cfg(not(target_arch = "wasm32")))]
pub trait EpilogueBackend: Backend {
    fn bias_act_fused(
        x: FloatTensor<Self>,
        #[extension_type] bias: Operand<Self>,
        act: Act,
        #[extension_type] residual: Operand<Self>,
    ) -> FloatTensor<Self>;

    fn bias_act_twin(
        x: FloatTensor<Self>,
        #[extension_type] bias: Operand<Self>,
        act: Act,
        #[extension_type] residual: Operand<Self>,
    ) -> FloatTensor<Self> {
        bias_act_ops::<Self>(x, bias.into_option(), act, residual.into_option())
    }

    fn geglu_fused(h: FloatTensor<Self>, #[extension_type] bias: Operand<Self>) -> FloatTensor<Self>;

    fn geglu_twin(h: FloatTensor<Self>, #[extension_type] bias: Operand<Self>) -> FloatTensor<Self> {
        geglu_ops::<Self>(h, bias.into_option())
    }
}

/// The kernels store f32 or f16 (f32 arithmetic either way) when every operand has that one
/// dtype; other dtypes and mixed ones keep burn's ops.
impl EpilogueBackend for Cube {
    fn bias_act_fused(
        x: FloatTensor<Self>,
        bias: Operand<Self>,
        act: Act,
        residual: Operand<Self>,
    ) -> FloatTensor<Self> {
        let (bias, residual) = (bias.into_option(), residual.into_option());
        if kernel_dtype(&x, [&bias, &residual]) {
            kernels::bias_act(x, bias, act, residual)
        } else {
            bias_act_ops::<Self>(x, bias, act, residual)
        }
    }

    fn geglu_fused(h: FloatTensor<Self>, bias: Operand<Self>) -> FloatTensor<Self> {
        let bias = bias.into_option();
        if kernel_dtype(&h, [&bias]) { kernels::geglu(h, bias) } else { geglu_ops::<Self>(h, bias) }
    }
}

/// Whether `x` is f32 or f16 and every present operand has its dtype.
fn kernel_dtype<const K: usize>(x: &FloatTensor<Cube>, others: [&Option<FloatTensor<Cube>>; K]) -> bool {
    matches!(x.dtype, DType::F32 | DType::F16) && others.iter().all(|t| t.as_ref().is_none_or(|t| t.dtype == x.dtype))
}

#[cfg(not(target_arch = "wasm32"))]
impl EpilogueBackend for NdArray {
    fn bias_act_fused(
        x: FloatTensor<Self>,
        bias: Operand<Self>,
        act: Act,
        residual: Operand<Self>,
    ) -> FloatTensor<Self> {
        bias_act_ops::<Self>(x, bias.into_option(), act, residual.into_option())
    }

    fn geglu_fused(h: FloatTensor<Self>, bias: Operand<Self>) -> FloatTensor<Self> {
        geglu_ops::<Self>(h, bias.into_option())
    }
}

/// `act(x + bias) + residual`: the kernel on a cubecl device, burn's ops on the CPU backend.
/// `bias` broadcasts over the last dimension; without it, without `residual` and with
/// [`Act::Identity`] the result is a copy of `x`.
///
/// # Shapes
/// `x`: `[..., C]`, `bias`: `[C]`, `residual`: the shape of `x`.
///
/// # Panics
/// When `bias` is not `[C]` or `residual` not the shape of `x` (programming errors).
pub fn bias_act<const D: usize>(
    x: Tensor<D>,
    bias: Option<Tensor<1>>,
    act: Act,
    residual: Option<Tensor<D>>,
) -> Tensor<D> {
    if crate::burn_ops() {
        return bias_act_twin(x, bias, act, residual);
    }
    check_bias_act(&x, bias.as_ref(), residual.as_ref());
    Tensor::from_dispatch(Dispatch::bias_act_fused(
        x.into_dispatch(),
        Operand::from(bias),
        act,
        Operand::from(residual),
    ))
}

/// [`bias_act`] through burn's ops on any backend (the crate's `linear` bias add, `Activation`,
/// `+ residual`): the reference for the kernel's tests and benchmarks.
pub fn bias_act_twin<const D: usize>(
    x: Tensor<D>,
    bias: Option<Tensor<1>>,
    act: Act,
    residual: Option<Tensor<D>>,
) -> Tensor<D> {
    check_bias_act(&x, bias.as_ref(), residual.as_ref());
    Tensor::from_dispatch(Dispatch::bias_act_twin(x.into_dispatch(), Operand::from(bias), act, Operand::from(residual)))
}

fn check_bias_act<const D: usize>(x: &Tensor<D>, bias: Option<&Tensor<1>>, residual: Option<&Tensor<D>>) {
    if let Some(bias) = bias {
        assert_eq!(bias.dims(), [x.dims()[D - 1]], "bias_act: the bias must be [C]");
    }
    if let Some(residual) = residual {
        assert_eq!(residual.dims(), x.dims(), "bias_act: the residual must have the shape of x");
    }
}

/// diffusers `GEGLU` on the bias-free projection output `h`: `(h[..., :inner] + bias[:inner]) ·
/// gelu(h[..., inner:] + bias[inner:])`, exact (erf) GELU. The kernel on a cubecl device, burn's
/// ops on the CPU backend.
///
/// # Shapes
/// `h`: `[..., 2·inner]`, `bias`: `[2·inner]` → `[..., inner]`.
///
/// # Panics
/// When the last dimension of `h` is odd or `bias` is not `[2·inner]` (programming errors).
pub fn geglu<const D: usize>(h: Tensor<D>, bias: Option<Tensor<1>>) -> Tensor<D> {
    if crate::burn_ops() {
        return geglu_twin(h, bias);
    }
    check_geglu(&h, bias.as_ref());
    Tensor::from_dispatch(Dispatch::geglu_fused(h.into_dispatch(), Operand::from(bias)))
}

/// [`geglu`] through burn's ops on any backend (the crate's bias add, `chunk(2)`, `value *
/// gelu(gate)`): the reference for the kernel's tests and benchmarks.
pub fn geglu_twin<const D: usize>(h: Tensor<D>, bias: Option<Tensor<1>>) -> Tensor<D> {
    check_geglu(&h, bias.as_ref());
    Tensor::from_dispatch(Dispatch::geglu_twin(h.into_dispatch(), Operand::from(bias)))
}

fn check_geglu<const D: usize>(h: &Tensor<D>, bias: Option<&Tensor<1>>) {
    let width = h.dims()[D - 1];
    assert!(width.is_multiple_of(2), "geglu: the projection's width {width} is odd");
    if let Some(bias) = bias {
        assert_eq!(bias.dims(), [width], "geglu: the bias must be [2·inner]");
    }
}

/// `bias` reshaped to broadcast over the last dimension of a rank-`rank` tensor.
fn row_bias<B: Backend>(bias: FloatTensor<B>, rank: usize) -> FloatTensor<B> {
    let mut shape = vec![1; rank];
    shape[rank - 1] = bias.shape()[0];
    B::float_reshape(bias, Shape::from(shape))
}

/// The burn ops `crate/src/models/nn.rs` runs today: `linear`'s bias add, `Activation::forward`
/// (`activation::gelu`, `x · sigmoid(1.702 x)`, `activation::silu`), then the block's residual add.
fn bias_act_ops<B: Backend>(
    x: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    act: Act,
    residual: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let rank = x.shape().num_dims();
    let mut y = match bias {
        Some(bias) => B::float_add(x, row_bias::<B>(bias, rank)),
        None => x,
    };
    y = match act {
        Act::Identity => y,
        Act::Gelu => B::gelu(y),
        Act::QuickGelu => B::float_mul(y.clone(), B::sigmoid(B::float_mul_scalar(y, 1.702.into()))),
        Act::Silu => B::float_mul(y.clone(), B::sigmoid(y)),
    };
    match residual {
        Some(residual) => B::float_add(y, residual),
        None => y,
    }
}

/// The burn ops of `FeedForward::forward_rows` in `crate/src/models/attention.rs`: `proj`'s bias
/// add, `chunk(2, -1)` (two slices) and `value * gelu(gate)`.
fn geglu_ops<B: Backend>(h: FloatTensor<B>, bias: Option<FloatTensor<B>>) -> FloatTensor<B> {
    let shape = h.shape();
    let rank = shape.num_dims();
    let inner = shape[rank - 1] / 2;
    let h = match bias {
        Some(bias) => B::float_add(h, row_bias::<B>(bias, rank)),
        None => h,
    };
    let half = |start: usize| {
        let mut slices = vec![Slice::full(); rank];
        slices[rank - 1] = Slice::new(start as isize, Some((start + inner) as isize), 1);
        B::float_slice(h.clone(), &slices)
    };
    let (value, gate) = (half(0), half(inner));
    B::float_mul(value, B::gelu(gate))
}
