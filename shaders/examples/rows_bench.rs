//! The row-wise kernels (LayerNorm, the bias + activation + residual epilogue, GEGLU) against
//! their burn-op twins on the wgpu device, timed interleaved (twin, kernel, copy, twin, ...)
//! after a warm-up round, best of 5 each.
//!
//! All three are memory-bound, so their ranking carries over from a CPU adapter (llvmpipe,
//! SwiftShader) to a GPU; absolute times do not. "useful GB/s" counts the bytes any
//! implementation must move (each input read once, the output written once) over the time.
//! "copy" is one elementwise kernel over the op's main input (`x * 1.5`: 8 bytes per element),
//! the adapter's floor for that tensor; "vs copy" is the kernel's time over it. LayerNorm moves
//! the copy's bytes, `bias_act` with a residual 1.5× them, GEGLU 0.75× (it reads `h` and writes
//! half of it).
//!
//! Run: `cargo build --workspace --example rows_bench && target/debug/examples/rows_bench`

use std::time::{Duration, Instant};

use burn::tensor::{Device, Distribution, Tensor};
use i2vgen_shaders::epilogue::{Act, bias_act, bias_act_twin, geglu, geglu_twin};
use i2vgen_shaders::layer_norm::{layer_norm, layer_norm_twin};

const ROUNDS: usize = 5;

fn main() {
    let device = Device::wgpu_options().init().unwrap_or_else(|err| panic!("no wgpu adapter: {err}"));
    println!(
        "{:<44} {:>9} {:>10} {:>8} {:>10} {:>11} {:>9} {:>8} {:>8}",
        "op [shape]", "twin ms", "kernel ms", "copy ms", "twin GB/s", "kernel GB/s", "copy GB/s", "speedup", "vs copy"
    );
    let random = |shape: [usize; 2], low, high| Tensor::<2>::random(shape, Distribution::Uniform(low, high), &device);
    let vector = |len: usize, low, high| Tensor::<1>::random([len], Distribution::Uniform(low, high), &device);

    // LayerNorm: the transformer blocks' norms at C = 320 (2 × 16 frames at 32×56 latents would
    // be 16× this) and 1280, CLIP's vision tower.
    for (label, rows, c) in [
        ("layer_norm [8·1792, 320]", 8 * 1792, 320),
        ("layer_norm [4·112, 1280]", 4 * 112, 1280),
        ("layer_norm [257, 1280]", 257, 1280),
    ] {
        let x = random([rows, c], -0.5, 3.5);
        let (w, b) = (vector(c, 0.5, 1.5), vector(c, -1.0, 1.0));
        bench(
            &device,
            label,
            8 * rows * c,
            || drop(layer_norm_twin(x.clone(), w.clone(), b.clone(), 1e-5)),
            || drop(layer_norm(x.clone(), w.clone(), b.clone(), 1e-5)),
            || drop(x.clone().mul_scalar(1.5)),
        );
    }

    // Epilogues: `to_out` / `proj_out` + bias + residual, GELU / quick_gelu MLPs, SiLU.
    for (label, rows, c, act, residual) in [
        ("bias+residual [8·1792, 320]", 8 * 1792, 320, Act::Identity, true),
        ("bias+gelu [8·1792, 1280]", 8 * 1792, 1280, Act::Gelu, false),
        ("bias+quick_gelu [257, 5120]", 257, 5120, Act::QuickGelu, false),
        ("bias+silu+residual [8·1792, 320]", 8 * 1792, 320, Act::Silu, true),
    ] {
        let x = random([rows, c], -6.0, 6.0);
        let b = vector(c, -1.0, 1.0);
        let r = residual.then(|| random([rows, c], -2.0, 2.0));
        bench(
            &device,
            label,
            (if residual { 12 } else { 8 }) * rows * c,
            || drop(bias_act_twin(x.clone(), Some(b.clone()), act, r.clone())),
            || drop(bias_act(x.clone(), Some(b.clone()), act, r.clone())),
            || drop(x.clone().mul_scalar(1.5)),
        );
    }

    // GEGLU: the feed-forward's `net.0` at C = 320 (inner 1280) and C = 1280 (inner 5120).
    for (label, rows, inner) in
        [("geglu+bias [4·1792, 2·1280]", 4 * 1792, 1280), ("geglu+bias [4·112, 2·5120]", 4 * 112, 5120)]
    {
        let h = random([rows, 2 * inner], -6.0, 6.0);
        let b = vector(2 * inner, -1.0, 1.0);
        bench(
            &device,
            label,
            12 * rows * inner,
            || drop(geglu_twin(h.clone(), Some(b.clone()))),
            || drop(geglu(h.clone(), Some(b.clone()))),
            || drop(h.clone().mul_scalar(1.5)),
        );
    }
}

fn bench(device: &Device, label: &str, useful_bytes: usize, twin: impl Fn(), kernel: impl Fn(), copy: impl Fn()) {
    let time = |f: &dyn Fn()| {
        device.sync().expect("the device failed before timing");
        let start = Instant::now();
        f();
        device.sync().expect("the device failed while timing");
        start.elapsed()
    };
    let (mut best_twin, mut best_kernel, mut best_copy) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for round in 0..=ROUNDS {
        let (t, k, c) = (time(&twin), time(&kernel), time(&copy));
        // Round 0 is the warm-up: it compiles the pipelines and sizes the memory pools.
        if round > 0 {
            (best_twin, best_kernel, best_copy) = (best_twin.min(t), best_kernel.min(k), best_copy.min(c));
        }
    }
    let gbps = |t: Duration| useful_bytes as f64 / t.as_secs_f64() / 1e9;
    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    println!(
        "{:<44} {:>9.2} {:>10.2} {:>8.2} {:>10.2} {:>11.2} {:>9.2} {:>7.1}x {:>7.1}x",
        label,
        ms(best_twin),
        ms(best_kernel),
        ms(best_copy),
        gbps(best_twin),
        gbps(best_kernel),
        gbps(best_copy),
        ms(best_twin) / ms(best_kernel),
        ms(best_kernel) / ms(best_copy),
    );
}
