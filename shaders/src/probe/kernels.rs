//! The probe kernels and their launches: one thread per vec4, 2-D workgroup grids past WebGPU's
//! 65,535 workgroups per dimension.

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Cube, TensorMetadata};
use burn::cubecl;
use burn::cubecl::prelude::*;
use burn::tensor::{DType, Shape};

/// Eight independent chains of `acc = acc · a + b` per thread (a dependency only within a chain,
/// so a GPU's pipelines and a CPU's SIMD units stay full), `iterations` rounds, then their sum.
/// `a` < 1 keeps every value finite and normal: each chain converges to b / (1 − a).
#[cube(launch)]
fn fma_chain_kernel<N: Size>(seed: &[Vector<f32, N>], output: &mut [Vector<f32, N>], len: usize, iterations: usize) {
    let i = ABSOLUTE_POS;
    if i >= len {
        terminate!();
    }
    let a = Vector::<f32, N>::empty().fill(0.999);
    let b = Vector::<f32, N>::empty().fill(0.001);
    let x = seed[i];
    let mut c0 = x;
    let mut c1 = x + b;
    let mut c2 = x - b;
    let mut c3 = x * a;
    let mut c4 = x + a;
    let mut c5 = x - a;
    let mut c6 = x * b;
    let mut c7 = b - x;
    for _ in 0..iterations {
        c0 = fma(c0, a, b);
        c1 = fma(c1, a, b);
        c2 = fma(c2, a, b);
        c3 = fma(c3, a, b);
        c4 = fma(c4, a, b);
        c5 = fma(c5, a, b);
        c6 = fma(c6, a, b);
        c7 = fma(c7, a, b);
    }
    output[i] = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7));
}

/// `output[i] = input[i]`.
#[cube(launch)]
fn copy_kernel<N: Size>(input: &[Vector<f32, N>], output: &mut [Vector<f32, N>], len: usize) {
    let i = ABSOLUTE_POS;
    if i >= len {
        terminate!();
    }
    output[i] = input[i];
}

/// Launches [`fma_chain_kernel`]: one thread per vec4 of `seed` (f32, length a multiple of 4).
pub(super) fn fma_chain(seed: FloatTensor<Cube>, iterations: usize) -> FloatTensor<Cube> {
    let numel = seed.shape().num_elements();
    let input = flat(seed);
    let output = empty_like(&input, Shape::new([numel]));
    let client = input.client.clone();
    let len = numel / 4;
    let cube_dim = CubeDim::new(&client, len);
    fma_chain_kernel::launch(
        &client,
        cubecl::calculate_cube_count_elemwise(&client, len, cube_dim),
        cube_dim,
        4,
        input.into_buffer_arg(),
        output.clone().into_buffer_arg(),
        len,
        iterations,
    );
    output
}

/// Launches [`copy_kernel`] on `x` (f32, length a multiple of 4) into a new buffer.
pub(super) fn copy(x: FloatTensor<Cube>) -> FloatTensor<Cube> {
    let numel = x.shape().num_elements();
    let input = flat(x);
    let output = empty_like(&input, Shape::new([numel]));
    let client = input.client.clone();
    let len = numel / 4;
    let cube_dim = CubeDim::new(&client, len);
    copy_kernel::launch(
        &client,
        cubecl::calculate_cube_count_elemwise(&client, len, cube_dim),
        cube_dim,
        4,
        input.into_buffer_arg(),
        output.clone().into_buffer_arg(),
        len,
    );
    output
}

/// A new row-major f32 tensor of `shape` on `like`'s device.
fn empty_like(like: &FloatTensor<Cube>, shape: Shape) -> FloatTensor<Cube> {
    let handle = like.client.empty(shape.num_elements() * size_of::<f32>());
    FloatTensor::<Cube>::new_contiguous(like.client.clone(), like.device.clone(), shape, handle, DType::F32)
}

/// `t` as a flat row-major buffer: a metadata change when it already is one, else one copy.
fn flat(t: FloatTensor<Cube>) -> FloatTensor<Cube> {
    let len = t.shape().num_elements();
    Cube::float_reshape(t, Shape::new([len]))
}
