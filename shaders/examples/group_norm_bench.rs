//! GroupNorm + affine + SiLU: the kernels against their burn-op twin on the wgpu device, timed
//! interleaved (twin, kernels, twin, kernels, ...) after a warm-up, best of 5 each.
//!
//! GroupNorm is memory-bound, so its ranking carries over from a CPU adapter (llvmpipe,
//! SwiftShader) to a GPU; absolute times do not. "useful GB/s" counts the 8 bytes per element any
//! implementation must move (read `x` once, write `y` once) over the time taken; the kernels move
//! 12 (they read `x` twice), the twin about 27 tensor passes' worth plus its serial reductions.
//! "copy" is one elementwise kernel over `x` (`x * 1.5`), the adapter's floor for 8 bytes per
//! element; "vs copy" is the kernels' time over it (1.5 would be the traffic bound).
//!
//! Run: `cargo build --workspace --example group_norm_bench && target/debug/examples/group_norm_bench`

use std::time::{Duration, Instant};

use burn::tensor::{Device, Distribution, Tensor};
use i2vgen_shaders::group_norm::{group_norm, group_norm_twin};

const ROUNDS: usize = 5;

fn main() {
    let device = Device::wgpu_options().init().unwrap_or_else(|err| panic!("no wgpu adapter: {err}"));
    println!(
        "{:<24} {:>9} {:>11} {:>8} {:>10} {:>12} {:>9} {:>8} {:>8}",
        "shape", "twin ms", "kernels ms", "copy ms", "twin GB/s", "kernels GB/s", "copy GB/s", "speedup", "vs copy"
    );
    let random = |shape| Tensor::random(shape, Distribution::Uniform(-0.5, 3.5), &device);
    bench(&device, "[2, 320, 32, 56]", random([2, 320, 32, 56]));
    // What a conv2d returns: `[N, C, H, W]` over `[N, H, W, C]` memory.
    bench(&device, "[2, 320, 32, 56] NHWC", random([2, 32, 56, 320]).permute([0, 3, 1, 2]));
    bench(&device, "[2, 1280, 4, 7]", random([2, 1280, 4, 7]));
    bench(&device, "[1, 640, 45, 80]", random([1, 640, 45, 80]));
    let x = Tensor::<5>::random([2, 320, 16, 32, 56], Distribution::Uniform(-0.5, 3.5), &device);
    bench(&device, "[2, 320, 16, 32, 56]", x);
}

fn bench<const D: usize>(device: &Device, label: &str, x: Tensor<D>) {
    let shape = x.dims();
    let channels = shape[1];
    let weight = Tensor::<1>::random([channels], Distribution::Uniform(0.5, 1.5), device);
    let bias = Tensor::<1>::random([channels], Distribution::Uniform(-1.0, 1.0), device);
    let affine = || Some((weight.clone(), bias.clone()));
    let twin = || drop(group_norm_twin(x.clone(), affine(), 32, 1e-5, true));
    let kernels = || drop(group_norm(x.clone(), affine(), 32, 1e-5, true));
    // The adapter's own floor for one read and one write of `x`: a single elementwise kernel.
    let copy = || drop(x.clone().mul_scalar(1.5));
    let time = |f: &dyn Fn()| {
        device.sync().expect("the device failed before timing");
        let start = Instant::now();
        f();
        device.sync().expect("the device failed while timing");
        start.elapsed()
    };
    let (mut best_twin, mut best_kernels, mut best_copy) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for round in 0..=ROUNDS {
        let (t, k, c) = (time(&twin), time(&kernels), time(&copy));
        // Round 0 is the warm-up: it compiles the pipelines and sizes the memory pools.
        if round > 0 {
            (best_twin, best_kernels, best_copy) = (best_twin.min(t), best_kernels.min(k), best_copy.min(c));
        }
    }
    let useful = 8.0 * shape.iter().product::<usize>() as f64;
    let gbps = |t: Duration| useful / t.as_secs_f64() / 1e9;
    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    println!(
        "{:<24} {:>9.2} {:>11.2} {:>8.2} {:>10.2} {:>12.2} {:>9.2} {:>7.1}x {:>8.1}x",
        label,
        ms(best_twin),
        ms(best_kernels),
        ms(best_copy),
        gbps(best_twin),
        gbps(best_kernels),
        gbps(best_copy),
        ms(best_twin) / ms(best_kernels),
        ms(best_kernels) / ms(best_copy),
    );
}
