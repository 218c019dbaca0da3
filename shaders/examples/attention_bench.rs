//! Multi-head attention: the fused kernel against its burn-op twin on the wgpu device, timed
//! interleaved (twin, kernel, twin, kernel, ...) after a warm-up, best of 3 each, with the
//! launches each dispatches and what the twin materialises.
//!
//! Attention is compute-bound (2·Tq·Tk·d multiply-adds per head against (2·Tq + 2·Tk)·d floats
//! moved), so a CPU adapter (llvmpipe, SwiftShader) cannot rank the two: its ALUs, not its
//! memory, set both times, and a GPU's balance is different. The numbers that carry over are the
//! launches and the bytes: "scores MiB" is one `[B, heads, Tq, Tk]` f32 score matrix, which the
//! twin writes and reads back about a dozen times (QKᵀ, scale, max, subtract, exp, sum, divide,
//! the masked-row guards, S·V) and the kernel never stores; "copies MiB" is what the twin's
//! head-split copies of q, k, v and the copy of its output back to `[B, T, heads·d]` write.
//!
//! Run: `cargo build --workspace --example attention_bench && target/debug/examples/attention_bench`

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use burn::tensor::{Device, Distribution, Tensor};
use i2vgen_shaders::attention::{attention, attention_twin};

const ROUNDS: usize = 3;
const MIB: f64 = (1 << 20) as f64;

fn main() {
    let device = Device::wgpu_options().init().unwrap_or_else(|err| panic!("no wgpu adapter: {err}"));
    println!(
        "{:<34} {:>9} {:>10} {:>8} {:>14} {:>11} {:>11}",
        "shape", "twin ms", "kernel ms", "speedup", "launches t→k", "scores MiB", "copies MiB"
    );
    // UNet spatial self-attention, first level at 128×224 latents (16×28) and the deepest (7×12)
    bench(&device, "spatial [2, 448, 320] h5", [2, 448, 448, 320], 5, false);
    bench(&device, "spatial [32, 84, 1280] h20", [32, 84, 84, 1280], 20, false);
    // cross-attention: 8 frames of 16×28 queries against the 77 text tokens
    bench(&device, "cross [2, 3584 | 77, 320] h5", [2, 3584, 77, 320], 5, false);
    // temporal attention: 16 frames per latent pixel
    bench(&device, "temporal [896, 16, 320] h5", [896, 16, 16, 320], 5, false);
    // CLIP text (causal) and vision (head dim 80)
    bench(&device, "clip text [2, 77, 1024] h16 causal", [2, 77, 77, 1024], 16, true);
    bench(&device, "clip vision [1, 257, 1280] h16", [1, 257, 257, 1280], 16, false);
}

fn bench(device: &Device, label: &str, [b, tq, tk, c]: [usize; 4], heads: usize, causal: bool) {
    let random = |t| Tensor::<3>::random([b, t, c], Distribution::Uniform(-1.0, 1.0), device);
    let (q, k, v) = (random(tq), random(tk), random(tk));
    let twin = || attention_twin(q.clone(), k.clone(), v.clone(), heads, causal);
    let kernel = || attention(q.clone(), k.clone(), v.clone(), heads, causal);
    let time = |f: &dyn Fn() -> Tensor<3>| {
        device.sync().expect("the device failed before timing");
        let start = Instant::now();
        drop(f());
        device.sync().expect("the device failed while timing");
        start.elapsed()
    };
    let (mut best_twin, mut best_kernel) = (Duration::MAX, Duration::MAX);
    for round in 0..=ROUNDS {
        let (t, k) = (time(&twin), time(&kernel));
        // Round 0 is the warm-up: it compiles the pipelines and sizes the memory pools.
        if round > 0 {
            (best_twin, best_kernel) = (best_twin.min(t), best_kernel.min(k));
        }
    }
    let (twin_launches, kernel_launches) = (launches(&twin), launches(&kernel));
    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    let scores = (b * heads * tq * tk * 4) as f64 / MIB;
    let copies = ((2 * tq + 2 * tk) * b * c * 4) as f64 / MIB;
    println!(
        "{:<34} {:>9.1} {:>10.1} {:>7.1}x {:>14} {:>11.1} {:>11.1}",
        label,
        ms(best_twin),
        ms(best_kernel),
        ms(best_twin) / ms(best_kernel),
        format!("{twin_launches} → {kernel_launches}"),
        scores,
        copies,
    );
}

/// Kernels launched on this thread while `f` runs (cubecl's launch observer).
struct Count(Mutex<usize>);

impl LaunchObserver for Count {
    fn launched(&self, _kernel: &'static str) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }
}

fn launches(f: &dyn Fn() -> Tensor<3>) -> usize {
    let count = Arc::new(Count(Mutex::new(0)));
    let observation = LaunchObservation::new(count.clone());
    let out = f();
    drop(observation);
    drop(out);
    *count.0.lock().unwrap_or_else(PoisonError::into_inner)
}
