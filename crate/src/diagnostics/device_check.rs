//! A small, fixed computation that exercises the kernels the networks lean on (conv2d, GroupNorm,
//! SiLU, batched matmul, softmax attention) so a device can be checked against the CPU backend.
//!
//! Inputs come from a fixed integer generator, so every platform and backend computes the same
//! numbers; only the arithmetic differs. It always computes in f32, also on a device whose
//! default float type is f16, so its checksum can be compared with the CPU's to 1e-4.

use burn::tensor::module::{attention, conv2d};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{DType, Device, Tensor, TensorData, activation};

use crate::models::nn::group_norm;

const CHANNELS_IN: usize = 8;
const CHANNELS: usize = 16;
const HEIGHT: usize = 12;
const WIDTH: usize = 10;
const GROUPS: usize = 4;
const HEADS: usize = 2;
const EPS: f64 = 1e-5;

/// Deterministic values in [-1, 1): a 32-bit LCG, identical on every target.
pub fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn input<const D: usize>(shape: [usize; D], seed: u32, device: &Device) -> Tensor<D> {
    let len = shape.iter().product();
    Tensor::from_data(TensorData::new(pseudo_random(len, seed), shape), (device, DType::F32))
}

/// conv2d(3×3) → GroupNorm → SiLU → 2-head self-attention over the H·W positions.
///
/// # Shapes
/// returns `[1, HEADS, HEIGHT*WIDTH, CHANNELS/HEADS]`
pub fn forward(device: &Device) -> Tensor<4> {
    let x = input([1, CHANNELS_IN, HEIGHT, WIDTH], 1, device);
    let weight = input([CHANNELS, CHANNELS_IN, 3, 3], 2, device).mul_scalar(0.3);
    let bias = input([CHANNELS], 3, device);
    let x = conv2d(x, weight, Some(bias), ConvOptions::new([1, 1], [1, 1], [1, 1], 1));

    let tokens = HEIGHT * WIDTH;
    let normed = group_norm(x, GROUPS, EPS).reshape([1, CHANNELS, tokens]);
    let gamma = input([1, CHANNELS, 1], 4, device).add_scalar(1.0);
    let beta = input([1, CHANNELS, 1], 5, device);
    let x = activation::silu(normed * gamma + beta);

    // [1, C, T] → [1, T, C] → projections → [1, heads, T, head_dim]
    let x = x.swap_dims(1, 2);
    let head_dim = CHANNELS / HEADS;
    let project = |seed| {
        let w = input([1, CHANNELS, CHANNELS], seed, device).mul_scalar(0.25);
        x.clone().matmul(w).reshape([1, tokens, HEADS, head_dim]).swap_dims(1, 2)
    };
    let (q, k, v) = (project(6), project(7), project(8));
    attention(q, k, v, None, None, AttentionModuleOptions::default())
}

/// The number a page or CLI shows for a device: the mean square of [`forward`].
pub fn checksum(device: &Device) -> Tensor<1> {
    forward(device).square().mean()
}

#[cfg(test)]
mod tests {
    use burn::tensor::FloatDType;

    use super::*;

    /// The page switches WebGPU to f16 where the adapter has `shader-f16`; its device check must
    /// still match the CPU. (A unit test: configuring the dtype is global to the process's device.)
    #[test]
    fn checksum_stays_f32_on_an_f16_device() {
        let mut gpu = Device::wgpu_options().init().expect("no wgpu adapter: install mesa-vulkan-drivers");
        assert!(gpu.supports_dtype(FloatDType::F16), "this wgpu adapter has no shader-f16");
        gpu.configure(FloatDType::F16).unwrap();
        let on_gpu = checksum(&gpu);
        assert_eq!(on_gpu.dtype(), DType::F32);
        let on_gpu = on_gpu.into_scalar::<f32>();
        #[allow(deprecated)] // NdArray is our CPU reference backend.
        let on_cpu = checksum(&Device::ndarray()).into_scalar::<f32>();
        let rel = ((on_gpu - on_cpu) / on_cpu).abs();
        assert!(rel < 1e-5, "f16-configured wgpu {on_gpu} vs cpu {on_cpu}");
    }
}
