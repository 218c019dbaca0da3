//! The epilogue kernels and their launches: one thread per output vector, vec4 when the row
//! length allows it, the activation chosen at compile time.
//!
//! Each kernel is generic over its storage float `F` (f32 or f16, chosen at launch from the
//! tensor's dtype): values are widened to f32 right after each load, everything is computed in
//! f32, and the result is rounded to `F` once, at the store. For f32 the casts are no-ops.

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Cube, TensorMetadata};
use burn::cubecl;
use burn::cubecl::ir::FloatKind;
use burn::cubecl::prelude::*;
use burn::tensor::{DType, Shape};

use super::Act;

/// `output[i] = act(input[i] + bias[i % cols]) + residual[i]` over `len` vectors in rows of
/// `cols`. Without `has_bias` / `has_residual` those bindings are bound but never read.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // the kernel's bindings: one launch, no struct to group them
fn bias_act_kernel<F: Float, N: Size>(
    input: &[Vector<F, N>],
    bias: &[Vector<F, N>],
    residual: &[Vector<F, N>],
    output: &mut [Vector<F, N>],
    len: usize,
    cols: usize,
    #[comptime] has_bias: bool,
    #[comptime] act: Act,
    #[comptime] has_residual: bool,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= len {
        terminate!();
    }
    let mut y = Vector::<f32, N>::cast_from(input[i]);
    if has_bias {
        y += Vector::<f32, N>::cast_from(bias[i % cols]);
    }
    y = activate::<N>(y, act);
    if has_residual {
        y += Vector::<f32, N>::cast_from(residual[i]);
    }
    output[i] = Vector::<F, N>::cast_from(y);
}

/// `output[r, j] = (input[r, j] + bias[j]) · gelu(input[r, inner + j] + bias[inner + j])` over
/// `len` output vectors in rows of `inner` (input rows of `2·inner`).
#[cube(launch)]
fn geglu_kernel<F: Float, N: Size>(
    input: &[Vector<F, N>],
    bias: &[Vector<F, N>],
    output: &mut [Vector<F, N>],
    len: usize,
    inner: usize,
    #[comptime] has_bias: bool,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= len {
        terminate!();
    }
    // Output (row, j) = i reads input (row, j) at 2·row·inner + j = i + row·inner.
    let j = i % inner;
    let at = i + (i - j);
    let mut value = Vector::<f32, N>::cast_from(input[at]);
    let mut gate = Vector::<f32, N>::cast_from(input[at + inner]);
    if has_bias {
        value += Vector::<f32, N>::cast_from(bias[j]);
        gate += Vector::<f32, N>::cast_from(bias[j + inner]);
    }
    output[i] = Vector::<F, N>::cast_from(value * gelu::<N>(gate));
}

#[cube]
fn activate<N: Size>(x: Vector<f32, N>, #[comptime] act: Act) -> Vector<f32, N> {
    match act {
        Act::Identity => x,
        Act::Gelu => gelu::<N>(x),
        Act::QuickGelu => x / (splat::<N>(1.0) + Vector::exp(x * splat::<N>(-1.702))),
        Act::Silu => x / (splat::<N>(1.0) + Vector::exp(-x)),
    }
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`.
#[cube]
fn gelu<N: Size>(x: Vector<f32, N>) -> Vector<f32, N> {
    x * splat::<N>(0.5) * (splat::<N>(1.0) + erf::<N>(x * splat::<N>(core::f32::consts::FRAC_1_SQRT_2)))
}

#[cube]
fn splat<N: Size>(#[comptime] value: f32) -> Vector<f32, N> {
    Vector::<f32, N>::empty().fill(value)
}

/// erf in f32 to within 1 ulp: N. Juffa's minimax approximation
/// (<https://stackoverflow.com/a/35148199>; also MLX's and PyTorch MPS's `erf`), measured 6e-8
/// from the f64 erf over [-8, 8] without fused multiply-adds, where cubecl's polyfill
/// (Abramowitz–Stegun 7.1.26, what burn's `gelu` runs on wgpu) is 5e-7 off. Both branches are
/// evaluated and one is selected per lane (a vector's lanes may fall either side).
#[cube]
#[allow(clippy::excessive_precision)] // the published coefficients, verbatim: each names one f32
fn erf<N: Size>(a: Vector<f32, N>) -> Vector<f32, N> {
    let t = Vector::abs(a);
    let s = a * a;

    // |a| > 0.927734375: 1 − exp(polynomial), the sign of a
    let mut r = splat::<N>(-1.72853470e-5) * t + splat::<N>(3.83197126e-4);
    let u = splat::<N>(-3.88396438e-3) * t + splat::<N>(2.42546219e-2);
    r = r * s + u;
    r = r * t + splat::<N>(-1.06777877e-1);
    r = r * t + splat::<N>(-6.34846687e-1);
    r = r * t + splat::<N>(-1.28717512e-1);
    r = r * t - t;
    let tail = splat::<N>(1.0) - Vector::exp(r);
    let tail = select_many(a.less_than(&splat::<N>(0.0)), -tail, tail);

    // |a| ≤ 0.927734375: a · (1 + polynomial in a²)
    let mut p = splat::<N>(-5.96761703e-4);
    p = p * s + splat::<N>(4.99119423e-3);
    p = p * s + splat::<N>(-2.67681349e-2);
    p = p * s + splat::<N>(1.12819925e-1);
    p = p * s + splat::<N>(-3.76125336e-1);
    p = p * s + splat::<N>(1.28379166e-1);
    let core = p * a + a;

    select_many(t.greater_than(&splat::<N>(0.927734375)), tail, core)
}

/// Launches [`bias_act_kernel`] on `x`'s device. All tensors have one dtype, f32 or f16.
pub(super) fn bias_act(
    x: FloatTensor<Cube>,
    bias: Option<FloatTensor<Cube>>,
    act: Act,
    residual: Option<FloatTensor<Cube>>,
) -> FloatTensor<Cube> {
    let shape = x.shape();
    let numel = shape.num_elements();
    let channels = shape[shape.num_dims() - 1];
    let vector = if channels.is_multiple_of(4) { 4 } else { 1 };
    let dtype = x.dtype;
    let input = flat(x);
    // An input nothing else holds (a matmul's output, as in `Linear`) is overwritten in place,
    // as burn's elementwise ops do: no second buffer of its size while the kernel runs.
    let in_place = input.can_mut();
    let output = if in_place { Cube::float_reshape(input.clone(), shape) } else { empty_like(&input, shape) };
    let (has_bias, has_residual) = (bias.is_some(), residual.is_some());
    // Absent operands: a one-vector buffer stands in for the bindings the kernel never reads (not
    // the input, which may be bound read-write here).
    let bias = flat(bias.unwrap_or_else(|| empty_like(&input, Shape::new([vector]))));
    let residual = flat(residual.unwrap_or_else(|| empty_like(&input, Shape::new([vector]))));
    let client = input.client.clone();
    let len = numel / vector;
    let cube_dim = CubeDim::new(&client, len);
    bias_act_kernel::launch(
        &client,
        cubecl::calculate_cube_count_elemwise(&client, len, cube_dim),
        cube_dim,
        vector,
        input.into_buffer_arg(),
        bias.into_buffer_arg(),
        residual.into_buffer_arg(),
        if in_place { BufferArg::alias(0, numel) } else { output.clone().into_buffer_arg() },
        len,
        channels / vector,
        has_bias,
        act,
        has_residual,
        storage(dtype),
    );
    output
}

/// Launches [`geglu_kernel`] on `h`'s device. Both tensors have one dtype, f32 or f16.
pub(super) fn geglu(h: FloatTensor<Cube>, bias: Option<FloatTensor<Cube>>) -> FloatTensor<Cube> {
    let mut shape = h.shape();
    let rank = shape.num_dims();
    let inner = shape[rank - 1] / 2;
    shape[rank - 1] = inner;
    let vector = if inner.is_multiple_of(4) { 4 } else { 1 };
    let dtype = h.dtype;
    let input = flat(h);
    let output = empty_like(&input, shape.clone());
    let has_bias = bias.is_some();
    let bias = flat(bias.unwrap_or_else(|| input.clone()));
    let client = input.client.clone();
    let len = shape.num_elements() / vector;
    let cube_dim = CubeDim::new(&client, len);
    geglu_kernel::launch(
        &client,
        cubecl::calculate_cube_count_elemwise(&client, len, cube_dim),
        cube_dim,
        vector,
        input.into_buffer_arg(),
        bias.into_buffer_arg(),
        output.clone().into_buffer_arg(),
        len,
        inner / vector,
        has_bias,
        storage(dtype),
    );
    output
}

/// A new row-major tensor of `shape` and `like`'s dtype on `like`'s device.
fn empty_like(like: &FloatTensor<Cube>, shape: Shape) -> FloatTensor<Cube> {
    let handle = like.client.empty(shape.num_elements() * like.dtype.size());
    FloatTensor::<Cube>::new_contiguous(like.client.clone(), like.device.clone(), shape, handle, like.dtype)
}

/// The kernels' storage float for a tensor dtype: f16 for F16, f32 otherwise (the callers
/// launch only f32 and f16 tensors).
fn storage(dtype: DType) -> ElemType {
    match dtype {
        DType::F16 => ElemType::Float(FloatKind::F16),
        _ => ElemType::Float(FloatKind::F32),
    }
}

/// `t` as a flat row-major buffer: a metadata change when it already is one, else one copy.
fn flat(t: FloatTensor<Cube>) -> FloatTensor<Cube> {
    let len = t.shape().num_elements();
    Cube::float_reshape(t, Shape::new([len]))
}
