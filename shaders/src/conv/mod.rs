//! `nn.Conv2d` (3×3 and 1×1 — any size — with any stride and per-side zero padding, optionally
//! reading its input through `Upsample2D`'s nearest upsampling) and the TemporalConvLayer's
//! `nn.Conv3d((3, 1, 1), padding (1, 0, 0))`, each call one implicit-GEMM launch with the bias and
//! an optional residual added in its epilogue.
//!
//! burn's WGSL conv (`conv_direct`) copies input and weight to channels-last on every call, runs
//! untiled with no shared memory, and returns channels-last memory that later reshapes copy
//! again. The kernel here reads NCHW, stages weight and input-patch tiles in shared memory, keeps
//! a 4×4 register tile of outputs per thread and writes NCHW: no im2col buffer, no layout copies.
//! Weights are rearranged once, at load, by [`prepare_weight`].
//!
//! Storage is f32 or f16 (activations, bias and residual in one dtype; the weight f32, f16 or
//! packed f16 on its own); the kernel widens each value as it loads it and sums in f32.

// NdArray is deprecated upstream but is the CPU reference backend the project tests against;
// the routing the extension macro generates names it too, so the allowance covers the module.
#![allow(deprecated)]

mod kernels;

pub use kernels::{TILE_K, TILE_M, TILE_N};

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Cube, Dispatch, ExtensionType, TensorMetadata, backend_extension};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{DType, Shape, Slice, Tensor};

use crate::packed::{PackedBackend, PackedF16};

#[cfg(not(target_arch = "wasm32"))]
use burn::backend::NdArray;

/// An optional tensor operand of the extension (its macro routes no `Option` of tensors).
#[derive(ExtensionType)]
pub enum Operand<B: Backend> {
    Tensor(FloatTensor<B>),
    Absent,
}

impl<B: Backend> Operand<B> {
    fn into_option(self) -> Option<FloatTensor<B>> {
        match self {
            Operand::Tensor(t) => Some(t),
            Operand::Absent => None,
        }
    }
}

impl Operand<Dispatch> {
    fn from_tensor<const D: usize>(t: Option<Tensor<D>>) -> Self {
        t.map_or(Operand::Absent, |t| Operand::Tensor(t.into_dispatch()))
    }
}

/// The convolution as a backend operation. `packed` is a [`ConvWeight`]'s `[C_in, kh, kw,
/// C_out_pad]`; `*_fused` is the fastest path the backend has (the kernel on a cubecl device),
/// `*_twin` burn's `conv2d` + add on any backend with the checkpoint's `[C_out, C_in, kh, kw]`,
/// the kernel's reference.
#[backend_extension(Cube, NdArray: cfg(not(target_arch = "wasm32")))]
pub trait ConvBackend: Backend + PackedBackend {
    fn conv2d_fused(
        x: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        #[extension_type] bias: Operand<Self>,
        #[extension_type] residual: Operand<Self>,
        c_out: usize,
        options: ConvOptions<2>,
        upsample: Option<[usize; 2]>,
    ) -> FloatTensor<Self>;

    /// [`Self::conv2d_fused`] with the weight as a [`PackedF16`]'s words `[C_in·kh·kw, M_pad / 2]`
    /// (`kernel` = `[kh, kw]`), computed in f32.
    #[allow(clippy::too_many_arguments)] // the extension's operands, routed one by one
    fn conv2d_fused_packed(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        #[extension_type] bias: Operand<Self>,
        #[extension_type] residual: Operand<Self>,
        c_out: usize,
        kernel: [usize; 2],
        options: ConvOptions<2>,
        upsample: Option<[usize; 2]>,
    ) -> FloatTensor<Self>;

    fn conv2d_twin(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: Operand<Self>,
        #[extension_type] residual: Operand<Self>,
        options: ConvOptions<2>,
        upsample: Option<[usize; 2]>,
    ) -> FloatTensor<Self> {
        twin::<Self>(x, weight, bias.into_option(), residual.into_option(), options, upsample)
    }
}

impl ConvBackend for Cube {
    fn conv2d_fused(
        x: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        bias: Operand<Self>,
        residual: Operand<Self>,
        c_out: usize,
        options: ConvOptions<2>,
        upsample: Option<[usize; 2]>,
    ) -> FloatTensor<Self> {
        let (bias, residual) = (bias.into_option(), residual.into_option());
        if kernel_dtypes(&x, &bias, &residual) && matches!(packed.dtype, DType::F32 | DType::F16) {
            kernels::conv2d(x, kernels::Weight::Dense(packed), bias, residual, c_out, &options, upsample)
        } else {
            // The kernel reads f32 or f16 storage; other dtypes keep burn's conv.
            let weight = unpack::<Self>(packed, c_out);
            let weight = if weight.dtype == x.dtype { weight } else { Self::float_cast(weight, x.dtype.into()) };
            twin::<Self>(x, weight, bias, residual, options, upsample)
        }
    }

    fn conv2d_fused_packed(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        bias: Operand<Self>,
        residual: Operand<Self>,
        c_out: usize,
        kernel: [usize; 2],
        options: ConvOptions<2>,
        upsample: Option<[usize; 2]>,
    ) -> FloatTensor<Self> {
        let (bias, residual) = (bias.into_option(), residual.into_option());
        if kernel_dtypes(&x, &bias, &residual) {
            let weight = kernels::Weight::PackedF16(words, kernel);
            kernels::conv2d(x, weight, bias, residual, c_out, &options, upsample)
        } else {
            let weight = unpack_words::<Self>(words, c_out, kernel);
            let weight = Self::float_cast(weight, x.dtype.into());
            twin::<Self>(x, weight, bias, residual, options, upsample)
        }
    }
}

/// Whether the kernel takes these activations: all f32 or all f16 (f16 storage, f32 sums).
fn kernel_dtypes(
    x: &FloatTensor<Cube>,
    bias: &Option<FloatTensor<Cube>>,
    residual: &Option<FloatTensor<Cube>>,
) -> bool {
    matches!(x.dtype, DType::F32 | DType::F16) && [bias, residual].into_iter().flatten().all(|t| t.dtype == x.dtype)
}

#[cfg(not(target_arch = "wasm32"))]
impl ConvBackend for NdArray {
    fn conv2d_fused(
        x: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        bias: Operand<Self>,
        residual: Operand<Self>,
        c_out: usize,
        options: ConvOptions<2>,
        upsample: Option<[usize; 2]>,
    ) -> FloatTensor<Self> {
        // A strided view of the packed weight: NdArray's conv reads any strides.
        let weight = unpack::<Self>(packed, c_out);
        twin::<Self>(x, weight, bias.into_option(), residual.into_option(), options, upsample)
    }

    fn conv2d_fused_packed(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        bias: Operand<Self>,
        residual: Operand<Self>,
        c_out: usize,
        kernel: [usize; 2],
        options: ConvOptions<2>,
        upsample: Option<[usize; 2]>,
    ) -> FloatTensor<Self> {
        let weight = unpack_words::<Self>(words, c_out, kernel);
        twin::<Self>(x, weight, bias.into_option(), residual.into_option(), options, upsample)
    }
}

/// A packed-f16 conv weight's words `[C_in·kh·kw, M_pad / 2]` as the checkpoint's f32
/// `[C_out, C_in, kh, kw]` (a strided view of the unpacked `[K, C_out]`).
fn unpack_words<B: PackedBackend>(words: IntTensor<B>, c_out: usize, [kh, kw]: [usize; 2]) -> FloatTensor<B> {
    let k_len = words.shape()[0];
    let matrix = B::unpack_f16(words, c_out);
    let weight = B::float_reshape(matrix, Shape::new([k_len / (kh * kw), kh, kw, c_out]));
    B::float_permute(weight, &[3, 0, 1, 2])
}

/// A convolution weight in the layout the kernel reads: `[C_in, kh, kw, C_out_pad]` row-major,
/// i.e. the GEMM's `[K, M]` with K ordered (c_in, ky, kx) as the input patches are gathered and
/// output channels contiguous (vec4 loads), zero-padded to a whole number of [`TILE_M`] tiles so
/// the kernel's weight loads need no bounds check on M. Built once at load by [`prepare_weight`]
/// on every backend; the CPU route reads it back as a strided view (no copy). It keeps the
/// weight's dtype: an f16 weight (the crate's f16 networks) is held in f16, half the bytes, and
/// the kernel widens it as it loads it.
///
/// [`prepare_weight_packed`] holds the same `[K, C_out_pad]` matrix as f16 pairs in u32 words
/// ([`PackedF16`], two output channels per word, half the bytes); the kernel reads two words for
/// its four channels and widens them, computing in f32 as before.
#[derive(Clone, Debug)]
pub struct ConvWeight {
    storage: Storage,
    c_out: usize,
}

#[derive(Clone, Debug)]
enum Storage {
    /// `[C_in, kh, kw, C_out_pad]` in the checkpoint weight's dtype (f32, or f16: half the bytes).
    Dense(Tensor<4>),
    /// `[C_in·kh·kw, C_out]` as packed f16, and `[C_in, kh, kw]`.
    PackedF16(PackedF16, [usize; 3]),
}

impl ConvWeight {
    /// The checkpoint's `[C_out, C_in, kh, kw]` weight: a view of the dense one, or the packed
    /// one unpacked to f32 (each value an f16).
    pub fn weight(&self) -> Tensor<4> {
        match &self.storage {
            Storage::Dense(packed) => packed.clone().narrow(3, 0, self.c_out).permute([3, 0, 1, 2]),
            Storage::PackedF16(words, [c_in, kh, kw]) => {
                words.unpack().reshape([*c_in, *kh, *kw, self.c_out]).permute([3, 0, 1, 2])
            }
        }
    }

    /// The dense `[C_in, kh, kw, C_out_pad]` tensor the kernel reads (`None` when packed).
    pub fn packed(&self) -> Option<&Tensor<4>> {
        match &self.storage {
            Storage::Dense(packed) => Some(packed),
            Storage::PackedF16(..) => None,
        }
    }

    /// The packed-f16 words (`None` when dense).
    pub fn packed_f16(&self) -> Option<&PackedF16> {
        match &self.storage {
            Storage::Dense(_) => None,
            Storage::PackedF16(words, _) => Some(words),
        }
    }

    /// `[C_out, C_in, kh, kw]`.
    pub fn dims(&self) -> [usize; 4] {
        let [c_in, kh, kw] = match &self.storage {
            Storage::Dense(packed) => {
                let [c_in, kh, kw, _] = packed.dims();
                [c_in, kh, kw]
            }
            Storage::PackedF16(_, dims) => *dims,
        };
        [self.c_out, c_in, kh, kw]
    }
}

/// Rearranges a checkpoint conv weight once into the kernel's layout (see [`ConvWeight`]): one
/// copy at load instead of burn's weight permute on every call.
///
/// # Shapes
/// `weight`: `[C_out, C_in, kh, kw]`; a Conv3d `(3, 1, 1)` weight enters as `[C_out, C_in, 3, 1]`.
pub fn prepare_weight(weight: Tensor<4>) -> ConvWeight {
    let [c_out, c_in, kh, kw] = weight.dims();
    let pad = c_out.next_multiple_of(TILE_M) - c_out;
    // `[K, C_out]` materialises the permute (a reshape of a strided view copies on every backend).
    let matrix = weight.permute([1, 2, 3, 0]).reshape([c_in * kh * kw, c_out]);
    let matrix = if pad > 0 {
        // In the weight's dtype: an f16 weight stays f16 (half the bytes; the kernel widens it).
        let zeros = Tensor::zeros([c_in * kh * kw, pad], (&matrix.device(), matrix.dtype()));
        Tensor::cat(vec![matrix, zeros], 1)
    } else {
        matrix
    };
    ConvWeight { storage: Storage::Dense(matrix.reshape([c_in, kh, kw, c_out + pad])), c_out }
}

/// [`prepare_weight`] with the weight rounded to f16 and packed two channels to a u32 word
/// ([`PackedF16`], `[C_in·kh·kw, C_out_pad / 2]`): half the memory; the kernel computes in f32.
///
/// # Shapes
/// As [`prepare_weight`].
pub fn prepare_weight_packed(weight: Tensor<4>) -> ConvWeight {
    let [c_out, c_in, kh, kw] = weight.dims();
    let matrix = weight.permute([1, 2, 3, 0]).reshape([c_in * kh * kw, c_out]);
    ConvWeight { storage: Storage::PackedF16(PackedF16::pack(matrix), [c_in, kh, kw]), c_out }
}

/// `nn.Conv2d` with groups 1 and dilation 1, then `+ residual` when given: the implicit-GEMM
/// kernel on a cubecl device (one launch, plus one copy for each strided `x` or `residual`),
/// burn's `conv2d` and an add on the CPU backend.
///
/// # Shapes
/// `x`: `[N, C_in, H, W]`, `bias`: `[C_out]`, `residual` and the result: `[N, C_out, H', W']` with
/// `H' = (H + pad_top + pad_bottom − kh) / stride + 1` (likewise W'). The result is contiguous NCHW.
///
/// # Panics
/// When the options ask for groups or dilation, or the shapes disagree: model code builds them
/// from a checked config, so either is a programming error.
pub fn conv2d(
    x: Tensor<4>,
    weight: &ConvWeight,
    bias: Option<Tensor<1>>,
    options: &ConvOptions<2>,
    residual: Option<Tensor<4>>,
) -> Tensor<4> {
    fused(x, weight, bias, options, residual, None)
}

/// `Upsample2D`'s nearest interpolation of `x` to `size`, then [`conv2d`]: on a cubecl device the
/// kernel reads `x` through the upsampling (`floor(y · H / size)`, as burn's and PyTorch's
/// `nearest`), so the 4× larger upsampled tensor is never written.
///
/// # Shapes
/// `x`: `[N, C_in, H, W]`; the conv sees `[N, C_in, size[0], size[1]]`.
pub fn upsample_conv2d(
    x: Tensor<4>,
    size: [usize; 2],
    weight: &ConvWeight,
    bias: Option<Tensor<1>>,
    options: &ConvOptions<2>,
    residual: Option<Tensor<4>>,
) -> Tensor<4> {
    fused(x, weight, bias, options, residual, Some(size))
}

/// [`conv2d`] through burn's ops on any backend with the checkpoint-layout weight, as
/// `nn::Conv2d::forward` computes it today plus the residual add: the kernel's reference.
pub fn conv2d_twin(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: &ConvOptions<2>,
    residual: Option<Tensor<4>>,
) -> Tensor<4> {
    twin_dispatch(x, weight, bias, options, residual, None)
}

/// [`upsample_conv2d`] through burn's ops (`interpolate`, `conv2d`, add) on any backend.
pub fn upsample_conv2d_twin(
    x: Tensor<4>,
    size: [usize; 2],
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: &ConvOptions<2>,
    residual: Option<Tensor<4>>,
) -> Tensor<4> {
    twin_dispatch(x, weight, bias, options, residual, Some(size))
}

fn fused(
    x: Tensor<4>,
    weight: &ConvWeight,
    bias: Option<Tensor<1>>,
    options: &ConvOptions<2>,
    residual: Option<Tensor<4>>,
    upsample: Option<[usize; 2]>,
) -> Tensor<4> {
    if crate::burn_ops() {
        return twin_dispatch(x, weight.weight(), bias, options, residual, upsample);
    }
    check(conv_input(&x, upsample), weight.dims(), bias.as_ref(), options, residual.as_ref());
    let dense = match &weight.storage {
        Storage::Dense(packed) => packed,
        Storage::PackedF16(words, [_, kh, kw]) => {
            return Tensor::from_dispatch(Dispatch::conv2d_fused_packed(
                x.into_dispatch(),
                words.words().clone().into_dispatch(),
                Operand::from_tensor(bias),
                Operand::from_tensor(residual),
                weight.c_out,
                [*kh, *kw],
                options.clone(),
                upsample,
            ));
        }
    };
    Tensor::from_dispatch(Dispatch::conv2d_fused(
        x.into_dispatch(),
        dense.clone().into_dispatch(),
        Operand::from_tensor(bias),
        Operand::from_tensor(residual),
        weight.c_out,
        options.clone(),
        upsample,
    ))
}

fn twin_dispatch(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: &ConvOptions<2>,
    residual: Option<Tensor<4>>,
    upsample: Option<[usize; 2]>,
) -> Tensor<4> {
    check(conv_input(&x, upsample), weight.dims(), bias.as_ref(), options, residual.as_ref());
    Tensor::from_dispatch(Dispatch::conv2d_twin(
        x.into_dispatch(),
        weight.into_dispatch(),
        Operand::from_tensor(bias),
        Operand::from_tensor(residual),
        options.clone(),
        upsample,
    ))
}

/// The shape the convolution itself sees: `x`'s, or its upsampling's.
fn conv_input(x: &Tensor<4>, upsample: Option<[usize; 2]>) -> [usize; 4] {
    let [n, c, h, w] = x.dims();
    let [h, w] = upsample.unwrap_or([h, w]);
    [n, c, h, w]
}

/// The TemporalConvLayer's `Conv3d((3, 1, 1), padding (1, 0, 0))` over frames, then `+ residual`:
/// `out[b, :, f, p] = bias + Σ_tap W_tap · x[b, :, f + tap − 1, p]` (zero outside the frames) as
/// ONE implicit GEMM with K = 3·C_in — the same kernel, reading `[B, C, F, H·W]` as an image of
/// F rows and a (3, 1) kernel with one row of padding each side.
///
/// # Shapes
/// `x`: `[B, C_in, F, H, W]`, `weight`: prepared from `[C_out, C_in, 3, 1]` (the checkpoint's
/// `[C_out, C_in, 3, 1, 1]` with the last axis dropped), `residual` and the result:
/// `[B, C_out, F, H, W]`.
pub fn temporal_conv(
    x: Tensor<5>,
    weight: &ConvWeight,
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<5>>,
) -> Tensor<5> {
    let [b, _, f, h, w] = x.dims();
    let c_out = weight.c_out;
    let as_image = |t: Tensor<5>| {
        let [b, c, f, h, w] = t.dims();
        t.reshape([b, c, f, h * w])
    };
    let y = conv2d(as_image(x), weight, bias, &temporal_options(), residual.map(as_image));
    y.reshape([b, c_out, f, h, w])
}

/// [`temporal_conv`] as `crate/src/models/resnet.rs` `TemporalConv` computes it today: three
/// `[1, C_out, C_in]` tap matmuls over the zero-padded, time-shifted frames, summed, plus the
/// bias, plus the residual. `taps` are split once at load, as the crate does ([`temporal_taps`]).
pub fn temporal_conv_twin(
    x: Tensor<5>,
    taps: &[Tensor<3>; 3],
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<5>>,
) -> Tensor<5> {
    let [b, c, f, h, w] = x.dims();
    let [_, c_out, _] = taps[0].dims();
    let zeros = Tensor::<5>::zeros([b, c, 1, h, w], &x.device());
    let padded = Tensor::cat(vec![zeros.clone(), x, zeros], 2);
    let tap = |k: usize| taps[k].clone().matmul(padded.clone().narrow(2, k, f).reshape([b, c, f * h * w]));
    let mut y = tap(0) + tap(1) + tap(2);
    if let Some(bias) = bias {
        y = y + bias.reshape([1, c_out, 1]);
    }
    let y = y.reshape([b, c_out, f, h, w]);
    match residual {
        Some(r) => y + r,
        None => y,
    }
}

/// The checkpoint's Conv3d weight (as `[C_out, C_in, 3, 1]`) as the twin's three contiguous
/// `[1, C_out, C_in]` taps over time.
pub fn temporal_taps(weight: Tensor<4>) -> [Tensor<3>; 3] {
    let [c_out, c_in, ..] = weight.dims();
    // `narrow` is a view; the reshape of it copies (contiguous taps, as the crate's loader makes).
    [0, 1, 2].map(|k| weight.clone().narrow(2, k, 1).reshape([1, c_out, c_in]))
}

/// Padding one frame before and after, none across H·W.
fn temporal_options() -> ConvOptions<2> {
    ConvOptions::new_with_padding([1, 1], [(1, 1), (0, 0)], [1, 1], 1)
}

/// `[N, C_out, H', W']` for `x` `[N, C_in, H, W]` and a `[kh, kw]` kernel.
pub fn output_shape(x: [usize; 4], c_out: usize, kernel: [usize; 2], options: &ConvOptions<2>) -> [usize; 4] {
    let out = |axis: usize| {
        let (begin, end) = options.padding[axis];
        (x[2 + axis] + begin + end - kernel[axis]) / options.stride[axis] + 1
    };
    [x[0], c_out, out(0), out(1)]
}

fn check(
    dims: [usize; 4],
    [c_out, c_in, kh, kw]: [usize; 4],
    bias: Option<&Tensor<1>>,
    options: &ConvOptions<2>,
    residual: Option<&Tensor<4>>,
) {
    assert_eq!(dims[1], c_in, "conv2d: x has {} channels, the weight {c_in}", dims[1]);
    assert!(
        options.groups == 1 && options.dilation == [1, 1],
        "conv2d: groups and dilation are not supported ({options:?})"
    );
    for axis in 0..2 {
        let (begin, end) = options.padding[axis];
        assert!(
            dims[2 + axis] + begin + end >= [kh, kw][axis],
            "conv2d: the padded input {dims:?} is smaller than the kernel {kh}×{kw}"
        );
    }
    if let Some(bias) = bias {
        assert_eq!(bias.dims(), [c_out], "conv2d: the bias must be [C_out]");
    }
    if let Some(residual) = residual {
        assert_eq!(
            residual.dims(),
            output_shape(dims, c_out, [kh, kw], options),
            "conv2d: the residual must have the output's shape"
        );
    }
}

/// The packed `[C_in, kh, kw, C_out_pad]` weight as the checkpoint's `[C_out, C_in, kh, kw]`
/// (a strided view).
fn unpack<B: Backend>(packed: FloatTensor<B>, c_out: usize) -> FloatTensor<B> {
    let channels = B::float_slice(packed, &[Slice::from(..), Slice::from(..), Slice::from(..), Slice::from(0..c_out)]);
    B::float_permute(channels, &[3, 0, 1, 2])
}

/// burn's nearest `interpolate` when asked, its `conv2d` (which adds the bias), then the residual.
fn twin<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    residual: Option<FloatTensor<B>>,
    options: ConvOptions<2>,
    upsample: Option<[usize; 2]>,
) -> FloatTensor<B> {
    let x = match upsample {
        Some(size) => B::interpolate(x, size, InterpolateOptions::new(InterpolateMode::Nearest)),
        None => x,
    };
    let y = B::conv2d(x, weight, bias, options);
    match residual {
        Some(r) => B::float_add(y, r),
        None => y,
    }
}
