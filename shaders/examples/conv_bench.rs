//! The implicit-GEMM conv against its burn-op twin (burn's `conv2d` + add; for the temporal conv
//! the crate's three tap matmuls): launches, issued / analytic FLOPs at the UNet's real shapes,
//! the bytes each side copies outside the GEMM, and twin vs kernel times on reduced shapes.
//!
//! The conv is compute-bound: times on a CPU adapter (llvmpipe, SwiftShader) are NOT a ranking
//! (perf.md §5.1: SwiftShader put a shared-memory tiled GEMM behind a naive one, the reverse of
//! every GPU). They are printed only to show the kernel runs at sizes the tests do not reach.
//! Launch counts, issued FLOPs and copied bytes are device-independent.
//!
//! Run: `cargo build --workspace --example conv_bench && target/debug/examples/conv_bench`

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use i2vgen_shaders::conv::{
    TILE_K, TILE_M, TILE_N, conv2d, conv2d_twin, prepare_weight, temporal_conv, temporal_conv_twin, temporal_taps,
};

const ROUNDS: usize = 2;
const GIGA: f64 = 1e9;

/// One conv of the UNet at 16 frames × 256×448 (latent 32×56), classifier-free guidance doubling
/// the batch: frames fold into the batch, N = 32 images (the temporal conv: B = 2, F = 16).
struct Layer {
    name: &'static str,
    images: usize,
    c_in: usize,
    c_out: usize,
    /// Output H', W'.
    size: [usize; 2],
    /// Kernel rows × columns (3×3, 1×1, or 3×1 for the temporal conv over frames).
    kernel: [usize; 2],
    /// How many such convs one UNet step runs.
    count: usize,
}

const fn layer(
    name: &'static str,
    c_in: usize,
    c_out: usize,
    size: [usize; 2],
    kernel: [usize; 2],
    count: usize,
) -> Layer {
    Layer { name, images: 32, c_in, c_out, size, kernel, count }
}

/// The distinct conv shapes of one I2VGen-XL UNet step (block_out_channels 320/640/1280/1280,
/// layers_per_block 2: 2 resnets per down block, 2 in the mid block, 3 per up block on the skip
/// concatenations, a TemporalConvLayer of 4 convs after each of the 22 resnets). The temporal
/// conv reads `[B, C, F, H·W]` as B = 2 images of F = 16 rows and H·W columns.
const LAYERS: &[Layer] = &[
    layer("conv_in 8→320", 8, 320, [32, 56], [3, 3], 1),
    layer("L0 320→320", 320, 320, [32, 56], [3, 3], 7),
    layer("L0 up 960→320", 960, 320, [32, 56], [3, 3], 1),
    layer("L0 up 640→320", 640, 320, [32, 56], [3, 3], 2),
    layer("L0 upsampler 640", 640, 640, [32, 56], [3, 3], 1),
    layer("conv_out 320→4", 320, 4, [32, 56], [3, 3], 1),
    layer("L0→1 down s2 320", 320, 320, [16, 28], [3, 3], 1),
    layer("L1 320→640", 320, 640, [16, 28], [3, 3], 1),
    layer("L1 640→640", 640, 640, [16, 28], [3, 3], 6),
    layer("L1 up 1920→640", 1920, 640, [16, 28], [3, 3], 1),
    layer("L1 up 1280→640", 1280, 640, [16, 28], [3, 3], 1),
    layer("L1 up 960→640", 960, 640, [16, 28], [3, 3], 1),
    layer("L1 upsampler 1280", 1280, 1280, [16, 28], [3, 3], 1),
    layer("L1→2 down s2 640", 640, 640, [8, 14], [3, 3], 1),
    layer("L2 640→1280", 640, 1280, [8, 14], [3, 3], 1),
    layer("L2 1280→1280", 1280, 1280, [8, 14], [3, 3], 6),
    layer("L2 up 2560→1280", 2560, 1280, [8, 14], [3, 3], 2),
    layer("L2 up 1920→1280", 1920, 1280, [8, 14], [3, 3], 1),
    layer("L2 upsampler 1280", 1280, 1280, [8, 14], [3, 3], 1),
    layer("L2→3 down s2 1280", 1280, 1280, [4, 7], [3, 3], 1),
    layer("L3 1280→1280 4×7", 1280, 1280, [4, 7], [3, 3], 11),
    layer("L3 up 2560→1280 4×7", 2560, 1280, [4, 7], [3, 3], 3),
    layer("1×1 320→640", 320, 640, [16, 28], [1, 1], 1),
    layer("1×1 640→1280", 640, 1280, [8, 14], [1, 1], 1),
    layer("1×1 2560→1280 4×7", 2560, 1280, [4, 7], [1, 1], 3),
    layer("1×1 2560→1280 8×14", 2560, 1280, [8, 14], [1, 1], 2),
    layer("1×1 1920→1280 8×14", 1920, 1280, [8, 14], [1, 1], 1),
    layer("1×1 1920→640", 1920, 640, [16, 28], [1, 1], 1),
    layer("1×1 1280→640", 1280, 640, [16, 28], [1, 1], 1),
    layer("1×1 960→640", 960, 640, [16, 28], [1, 1], 1),
    layer("1×1 960→320", 960, 320, [32, 56], [1, 1], 1),
    layer("1×1 640→320", 640, 320, [32, 56], [1, 1], 2),
    temporal("temporal 320 32×56", 320, 32 * 56, 5),
    temporal("temporal 640 16×28", 640, 16 * 28, 5),
    temporal("temporal 1280 8×14", 1280, 8 * 14, 5),
    temporal("temporal 1280 4×7", 1280, 4 * 7, 7),
];

/// `layers` TemporalConvLayers (4 Conv3d(3,1,1) each) of `c` channels over `pixels` per frame.
const fn temporal(name: &'static str, c: usize, pixels: usize, layers: usize) -> Layer {
    Layer { name, images: 2, c_in: c, c_out: c, size: [16, pixels], kernel: [3, 1], count: 4 * layers }
}

fn main() {
    flops_table();
    let device = Device::wgpu_options().init().unwrap_or_else(|err| panic!("no wgpu adapter: {err}"));
    println!();
    println!("Twin vs kernel on this adapter. CPU-adapter times of a compute-bound kernel are NOT a ranking;");
    println!("on a GPU the tiled kernel is expected to win by its launches, copies and FLOP rate alike.");
    println!(
        "{:<32} {:>8} {:>9} {:>11} {:>9} {:>11} {:>13}",
        "shape", "GFLOP", "twin ms", "kernel ms", "twin #", "kernel #", "twin copy MB"
    );
    let p1 = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let s2 = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
    let p0 = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    bench(&device, "[2,320,32,56] k3 +res", [2, 320, 32, 56], 320, 3, &p1, true);
    bench(&device, "[8,1280,4,7] k3 +res", [8, 1280, 4, 7], 1280, 3, &p1, true);
    bench(&device, "[4,640,16,28] k3 s2", [4, 640, 16, 28], 640, 3, &s2, false);
    bench(&device, "[8,640,8,14] 1×1 →1280", [8, 640, 8, 14], 1280, 1, &p0, false);
    bench_temporal(&device, [1, 320, 16, 8, 14]);
}

/// Issued FLOPs (every multiply-add of every tile, padding included) against the analytic
/// 2·C_out·K·pixels, per layer and over one step.
fn flops_table() {
    println!("Implicit GEMM, tiles M×N×K = {TILE_M}×{TILE_N}×{TILE_K}; UNet step at 16×256×448 (latent 32×56), N = 32");
    println!(
        "{:<26} {:>5} {:>12} {:>12} {:>8} {:>14}",
        "layer", "count", "analytic GF", "issued GF", "issued/", "twin moves MB"
    );
    let (mut analytic_total, mut issued_total, mut moved_total) = (0.0, 0.0, 0.0);
    for l in LAYERS {
        let k = l.c_in * l.kernel[0] * l.kernel[1];
        let pixels = l.images * l.size[0] * l.size[1];
        let analytic = 2.0 * (l.c_out * k * pixels) as f64;
        let issued = 2.0
            * (l.c_out.next_multiple_of(TILE_M) * k.next_multiple_of(TILE_K) * pixels.next_multiple_of(TILE_N)) as f64;
        // What the twin moves per call outside the GEMM, in floats. burn's conv2d re-packs the
        // input (and a k×k weight) to channels-last, read + write each, and returns channels-last
        // memory that the next GroupNorm copies again (not counted). The crate's temporal conv:
        // the zero-padded frame cat (read x, write the padded copy), three tap-slice copies, two
        // tap adds and the bias add (19 passes over the output, rounded). The kernel: none.
        let moved = if l.kernel == [3, 1] {
            19.0 * (l.c_out * pixels) as f64
        } else {
            let input_pixels = l.images * (l.size[0] * l.size[1]) * if l.name.contains(" s2 ") { 4 } else { 1 };
            let weight = if l.kernel == [1, 1] { 0 } else { l.c_out * k };
            2.0 * (l.c_in * input_pixels + weight) as f64
        };
        println!(
            "{:<26} {:>5} {:>12.1} {:>12.1} {:>8.3} {:>14.1}",
            l.name,
            l.count,
            analytic / GIGA,
            issued / GIGA,
            issued / analytic,
            moved * 4.0 / 1e6
        );
        analytic_total += analytic * l.count as f64;
        issued_total += issued * l.count as f64;
        moved_total += moved * 4.0 * l.count as f64;
    }
    println!(
        "{:<26} {:>5} {:>12.1} {:>12.1} {:>8.3} {:>14.1}",
        "one step",
        "",
        analytic_total / GIGA,
        issued_total / GIGA,
        issued_total / analytic_total,
        moved_total / 1e6
    );
}

fn bench(
    device: &Device,
    label: &str,
    x_shape: [usize; 4],
    c_out: usize,
    kernel: usize,
    options: &ConvOptions<2>,
    residual: bool,
) {
    let x = Tensor::<4>::random(x_shape, Distribution::Uniform(-0.5, 1.5), device);
    let weight = Tensor::<4>::random([c_out, x_shape[1], kernel, kernel], Distribution::Uniform(-0.05, 0.05), device);
    let packed = prepare_weight(weight.clone());
    let bias = Tensor::<1>::random([c_out], Distribution::Uniform(-1.0, 1.0), device);
    let out = i2vgen_shaders::conv::output_shape(x_shape, c_out, [kernel; 2], options);
    let res = Tensor::<4>::random(out, Distribution::Uniform(-1.0, 1.0), device);
    let res = || residual.then(|| res.clone());
    let twin = || conv2d_twin(x.clone(), weight.clone(), Some(bias.clone()), options, res());
    let fused = || conv2d(x.clone(), &packed, Some(bias.clone()), options, res());
    let pixels = out[0] * out[2] * out[3];
    let flops = 2.0 * (c_out * x_shape[1] * kernel * kernel * pixels) as f64;
    let weight_copy = if kernel > 1 { c_out * x_shape[1] * kernel * kernel } else { 0 };
    let copies = 2.0 * (x_shape.iter().product::<usize>() + weight_copy) as f64 * 4.0;
    report(device, label, flops, copies, twin, fused);
}

fn bench_temporal(device: &Device, shape: [usize; 5]) {
    let [b, c, f, h, w] = shape;
    let x = Tensor::<5>::random(shape, Distribution::Uniform(-0.5, 1.5), device);
    let weight = Tensor::<4>::random([c, c, 3, 1], Distribution::Uniform(-0.05, 0.05), device);
    let packed = prepare_weight(weight.clone());
    let taps = temporal_taps(weight);
    let bias = Tensor::<1>::random([c], Distribution::Uniform(-1.0, 1.0), device);
    let twin = || temporal_conv_twin(x.clone(), &taps, Some(bias.clone()), Some(x.clone()));
    let fused = || temporal_conv(x.clone(), &packed, Some(bias.clone()), Some(x.clone()));
    let flops = 2.0 * (c * 3 * c * b * f * h * w) as f64;
    let copies = (2.0 * (c * (f + 2) * h * w * b) as f64 + 9.0 * (c * b * f * h * w) as f64) * 4.0;
    report(device, &format!("temporal {shape:?} +res"), flops, copies, twin, fused);
}

fn report<const D: usize>(
    device: &Device,
    label: &str,
    flops: f64,
    copy_bytes: f64,
    twin: impl Fn() -> Tensor<D>,
    fused: impl Fn() -> Tensor<D>,
) {
    let time = |f: &dyn Fn() -> Tensor<D>| {
        device.sync().expect("the device failed before timing");
        let start = Instant::now();
        drop(f());
        device.sync().expect("the device failed while timing");
        start.elapsed()
    };
    let (mut best_twin, mut best_fused) = (Duration::MAX, Duration::MAX);
    for round in 0..=ROUNDS {
        let (t, k) = (time(&twin), time(&fused));
        // Round 0 is the warm-up: it compiles the pipelines and sizes the memory pools.
        if round > 0 {
            (best_twin, best_fused) = (best_twin.min(t), best_fused.min(k));
        }
    }
    let (twin_launches, fused_launches) = (launches(&twin), launches(&fused));
    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    println!(
        "{:<32} {:>8.2} {:>9.1} {:>11.1} {:>9} {:>11} {:>13.1}",
        label,
        flops / GIGA,
        ms(best_twin),
        ms(best_fused),
        twin_launches,
        fused_launches,
        copy_bytes / 1e6
    );
}

/// The kernels this thread launches while `f` runs (cubecl's launch observer).
struct Launches {
    thread: ThreadId,
    count: Mutex<usize>,
}

impl LaunchObserver for Launches {
    fn launched(&self, _kernel: &'static str) {
        if std::thread::current().id() == self.thread {
            *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        }
    }
}

fn launches<const D: usize>(f: &impl Fn() -> Tensor<D>) -> usize {
    let launches = Arc::new(Launches { thread: std::thread::current().id(), count: Mutex::default() });
    let observation = LaunchObservation::new(launches.clone());
    drop(f());
    drop(observation);
    *launches.count.lock().unwrap_or_else(PoisonError::into_inner)
}
