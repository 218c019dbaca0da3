//! `i2vgen kbench`: each of our kernels (`i2vgen_shaders`) against its burn-op twin at real UNet
//! shapes, timed interleaved (kernel, twin, kernel, twin, …) after one warm-up each, best of N,
//! and normalised to the adapter's own measured FMA peak and copy bandwidth (the two probes of
//! `i2vgen_shaders::probe`).
//!
//! Each case has an analytic minimum traffic (every input read once, the output written once)
//! and FLOP count; its arithmetic intensity against the adapter's ridge (peak FLOP/s ÷ copy
//! bandwidth) says whether it is memory- or compute-bound there. A CPU adapter (llvmpipe,
//! SwiftShader, lavapipe) runs compute the way a CPU does — SwiftShader measurably ranks a tiled
//! GEMM below a naive one — so there only the memory-bound cases are ranked.

use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use i2vgen_shaders::attention::{attention, attention_twin};
use i2vgen_shaders::conv::{
    conv2d, conv2d_twin, output_shape, prepare_weight, temporal_conv, temporal_conv_twin, temporal_taps,
    upsample_conv2d, upsample_conv2d_twin,
};
use i2vgen_shaders::epilogue::{Act, bias_act, bias_act_twin, geglu, geglu_twin};
use i2vgen_shaders::group_norm::{group_norm, group_norm_twin};
use i2vgen_shaders::layer_norm::{layer_norm, layer_norm_twin};
use i2vgen_shaders::probe;
use serde_json::{Value, json};

use crate::devices::Backend;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "wgpu")]
    backend: Backend,
    /// Timed runs of each side after one warm-up run each; the best one counts.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Also print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Only the cases whose name contains one of these comma-separated texts (the probes always
    /// run), e.g. `attention,layer_norm`.
    #[arg(long)]
    only: Option<String>,
    /// Shapes about 16× smaller than the UNet's (and smaller probes), for a quick check.
    #[arg(long)]
    small: bool,
}

/// The adapter: its name and whether it is a CPU.
struct Adapter {
    name: String,
    device_type: String,
    cpu: bool,
}

/// wgpu's device and adapter (as `devices::device_and_adapter`, plus the adapter's device type).
fn wgpu_device() -> Result<(Device, Adapter)> {
    let (device, setup) = Device::wgpu_options().init_with_setup().map_err(|err| {
        anyhow!("no GPU adapter for wgpu ({err}); install your GPU's Vulkan driver (on Linux without a GPU: mesa-vulkan-drivers)")
    })?;
    let info = setup.adapter.get_info();
    let device_type = format!("{:?}", info.device_type);
    let lower = info.name.to_lowercase();
    let cpu = device_type == "Cpu" || ["llvmpipe", "swiftshader", "lavapipe"].iter().any(|n| lower.contains(n));
    let name = format!("{} ({:?}, {})", info.name, info.backend, info.driver);
    Ok((device, Adapter { name, device_type, cpu }))
}

fn sync(device: &Device) -> Result<()> {
    device.sync().map_err(|err| anyhow!("the device failed: {err:?}"))
}

/// Seconds `f` takes with the device idle before and drained after.
fn time(device: &Device, f: &dyn Fn()) -> Result<f64> {
    sync(device)?;
    let start = Instant::now();
    f();
    sync(device)?;
    Ok(start.elapsed().as_secs_f64())
}

/// The two probes' results.
struct Probes {
    /// FLOP/s of the FMA chain.
    peak: f64,
    /// Bytes/s of the vec4 copy (read + write).
    bandwidth: f64,
    report: Value,
}

impl Probes {
    /// FLOPs per byte where the two roofs meet.
    fn ridge(&self) -> f64 {
        self.peak / self.bandwidth
    }
}

/// Threads of the FMA probe (`2^18` fills a large GPU several times over) and bytes of the copy
/// (under wgpu's default 128 MiB storage-binding limit: a larger binding fails without a word
/// on some adapters), full and `--small`.
const FMA_THREADS: [usize; 2] = [1 << 18, 1 << 14];
const COPY_BYTES: [usize; 2] = [64 << 20, 16 << 20];
/// A timed probe run lasts at least this long (longer chains, more copies between two syncs), so
/// the launch and sync overhead is a small part of it.
const PROBE_MIN_SECONDS: f64 = 0.05;

fn run_probes(device: &Device, repeats: usize, small: bool) -> Result<Probes> {
    let missing = || anyhow!("the probes need a cubecl device");
    let threads = FMA_THREADS[small as usize];
    let seed = Tensor::<1>::random([4 * threads], Distribution::Uniform(0.0, 1.0), device);
    let out = probe::fma_probe(seed.clone(), 16).ok_or_else(missing)?;
    let magnitude = out.abs().max().into_scalar::<f32>();
    if !(magnitude.is_finite() && magnitude > 0.0) {
        bail!("the FMA probe returned {magnitude} (expected a finite, nonzero sum): the adapter did not run it");
    }
    let fma = |iterations: usize| time(device, &|| drop(probe::fma_probe(seed.clone(), iterations)));
    // Longer chains until one run takes PROBE_MIN_SECONDS.
    let mut iterations = 256;
    while fma(iterations)? < PROBE_MIN_SECONDS && iterations < 1 << 24 {
        iterations *= 4;
    }
    let mut fma_best = f64::MAX;
    for _ in 0..repeats {
        fma_best = fma_best.min(fma(iterations)?);
    }
    let flops = probe::fma_probe_flops(threads, iterations) as f64;

    let bytes = COPY_BYTES[small as usize];
    let x = Tensor::<1>::random([bytes / 4], Distribution::Uniform(0.5, 1.0), device);
    let copied = probe::copy_probe(x.clone()).ok_or_else(missing)?;
    let diff = (copied - x.clone()).abs().max().into_scalar::<f32>();
    if diff != 0.0 {
        bail!("the copy probe's output differs from its input by {diff}: the adapter did not run it");
    }
    let copy = |copies: usize| {
        time(device, &|| {
            for _ in 0..copies {
                drop(probe::copy_probe(x.clone()));
            }
        })
    };
    // More copies between two syncs until one run takes PROBE_MIN_SECONDS.
    let mut copies = 1;
    while copy(copies)? < PROBE_MIN_SECONDS && copies < 1 << 12 {
        copies *= 2;
    }
    let mut copy_best = f64::MAX;
    for _ in 0..repeats {
        copy_best = copy_best.min(copy(copies)?);
    }
    let moved = (2 * bytes * copies) as f64;
    let probes = Probes {
        peak: flops / fma_best,
        bandwidth: moved / copy_best,
        report: json!({
            "fma": { "threads": threads, "iterations": iterations, "flops": flops, "ms": fma_best * 1e3 },
            "copy": { "bytes": bytes, "copies": copies, "moved_bytes": moved, "ms": copy_best * 1e3 },
        }),
    };
    Ok(probes)
}

/// One measured case.
struct Measured {
    name: String,
    bytes: f64,
    flops: f64,
    kernel: f64,
    twin: f64,
    /// max |kernel − twin| / max |twin| on the warm-up outputs (NaN when the twin's are all zero).
    error: f32,
    /// The most `error` a correct pair shows here.
    tolerance: f32,
}

/// Kernel and twin agree to this (f32; the tests hold them to 1e-5): a case past its tolerance,
/// or one whose outputs are all zero or not finite, did not run as intended and is not ranked.
const TOLERANCE: f32 = 1e-4;

/// Runs the cases `--only` selects, interleaved and best of `repeats`.
struct Bencher<'a> {
    device: &'a Device,
    repeats: usize,
    only: Option<&'a str>,
    results: Vec<Measured>,
}

impl Bencher<'_> {
    fn wants(&self, name: &str) -> bool {
        self.only.is_none_or(|only| only.split(',').any(|part| name.contains(part.trim())))
    }

    /// `bytes`: the minimum traffic, `flops` the analytic FLOPs of the op.
    fn case<const D: usize>(
        &mut self,
        name: &str,
        bytes: usize,
        flops: f64,
        kernel: impl Fn() -> Tensor<D>,
        twin: impl Fn() -> Tensor<D>,
    ) -> Result<()> {
        self.case_within(name, TOLERANCE, bytes, flops, kernel, twin)
    }

    /// [`Self::case`] where kernel and twin may differ by up to `tolerance` (relative).
    fn case_within<const D: usize>(
        &mut self,
        name: &str,
        tolerance: f32,
        bytes: usize,
        flops: f64,
        kernel: impl Fn() -> Tensor<D>,
        twin: impl Fn() -> Tensor<D>,
    ) -> Result<()> {
        eprintln!("kbench: {name}");
        // One warm-up each (it compiles the pipelines and sizes the memory pools), whose outputs
        // are compared.
        let (a, b) = (kernel(), twin());
        let diff = (a - b.clone()).abs().max().into_scalar::<f32>();
        let error = diff / b.abs().max().into_scalar::<f32>();
        let (kernel, twin) = (|| drop(kernel()), || drop(twin()));
        let (mut best_kernel, mut best_twin) = (f64::MAX, f64::MAX);
        for _ in 0..self.repeats {
            best_kernel = best_kernel.min(time(self.device, &kernel)?);
            best_twin = best_twin.min(time(self.device, &twin)?);
        }
        self.results.push(Measured {
            name: name.to_string(),
            bytes: bytes as f64,
            flops,
            kernel: best_kernel,
            twin: best_twin,
            error,
            tolerance,
        });
        Ok(())
    }
}

fn uniform<const D: usize>(shape: [usize; D], low: f64, high: f64, device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Uniform(low, high), device)
}

/// Every case at the UNet's shapes (16 frames at 256×448, latents 32×56, CFG batch 2 → 32
/// images) where llvmpipe runs them in seconds, smaller where it would take minutes (spatial
/// attention and the convolutions: 2 images); `small` divides them further.
fn run_cases(bench: &mut Bencher, small: bool) -> Result<()> {
    let device = bench.device;
    let pick = |full: usize, reduced: usize| if small { reduced } else { full };
    const F32: usize = 4;

    // GroupNorm(32) + affine + SiLU. Traffic: x read, y written. FLOPs per element: the
    // statistics 3 (centre, square, accumulate), the apply 2 (one FMA), SiLU 4.
    for (name, shape) in [
        ("group_norm_silu 4d", vec![pick(32, 2), 320, pick(32, 16), pick(56, 28)]),
        ("group_norm_silu 5d", vec![2, 320, pick(16, 2), pick(32, 16), pick(56, 28)]),
    ] {
        let label = format!("{name} {shape:?}");
        if !bench.wants(&label) {
            continue;
        }
        let numel: usize = shape.iter().product();
        let (w, b) = (uniform([320], 0.5, 1.5, device), uniform([320], -1.0, 1.0, device));
        let affine = || Some((w.clone(), b.clone()));
        let flops = 9.0 * numel as f64;
        if shape.len() == 4 {
            let x = uniform::<4>([shape[0], shape[1], shape[2], shape[3]], -0.5, 3.5, device);
            bench.case(
                &label,
                2 * F32 * numel,
                flops,
                || group_norm(x.clone(), affine(), 32, 1e-5, true),
                || group_norm_twin(x.clone(), affine(), 32, 1e-5, true),
            )?;
        } else {
            let x = uniform::<5>([shape[0], shape[1], shape[2], shape[3], shape[4]], -0.5, 3.5, device);
            // At the full shape a group holds 10 × 16·32·56 = 286,720 floats, and the twin's serial
            // f32 sum over them is itself off by 0.14–0.19 (relative) from an f64 reference while
            // the kernel is at 6e-7 (shaders/README.md, `group_norm`): a wrong twin, not a run
            // that failed, which would differ by 1 (zeros) or NaN.
            bench.case_within(
                &label,
                if small { TOLERANCE } else { 0.25 },
                2 * F32 * numel,
                flops,
                || group_norm(x.clone(), affine(), 32, 1e-5, true),
                || group_norm_twin(x.clone(), affine(), 32, 1e-5, true),
            )?;
        }
    }

    // LayerNorm over C = 320 (the transformer norms): x read, y written; FLOPs per element:
    // mean 1, variance 3, normalise + affine 3.
    let rows = pick(32 * 1792, 2 * 448);
    let label = format!("layer_norm [{rows}, 320]");
    if bench.wants(&label) {
        let x = uniform([rows, 320], -0.5, 3.5, device);
        let (w, b) = (uniform([320], 0.5, 1.5, device), uniform([320], -1.0, 1.0, device));
        bench.case(
            &label,
            2 * F32 * rows * 320,
            7.0 * (rows * 320) as f64,
            || layer_norm(x.clone(), w.clone(), b.clone(), 1e-5),
            || layer_norm_twin(x.clone(), w.clone(), b.clone(), 1e-5),
        )?;
    }

    // `to_out` + bias + residual: x and the residual read, y written; 2 FLOPs per element.
    let label = format!("bias_act identity+residual [{rows}, 320]");
    if bench.wants(&label) {
        let x = uniform([rows, 320], -6.0, 6.0, device);
        let r = uniform([rows, 320], -2.0, 2.0, device);
        let b = uniform([320], -1.0, 1.0, device);
        bench.case(
            &label,
            3 * F32 * rows * 320,
            2.0 * (rows * 320) as f64,
            || bias_act(x.clone(), Some(b.clone()), Act::Identity, Some(r.clone())),
            || bias_act_twin(x.clone(), Some(b.clone()), Act::Identity, Some(r.clone())),
        )?;
    }

    // The MLP's bias + exact GELU at 1280: x read, y written; FLOPs per element: the bias 1,
    // GELU's erf (a rational approximation, about 20) and the products 3.
    let rows = pick(8 * 1792, 448);
    let label = format!("bias_act gelu [{rows}, 1280]");
    if bench.wants(&label) {
        let x = uniform([rows, 1280], -6.0, 6.0, device);
        let b = uniform([1280], -1.0, 1.0, device);
        bench.case(
            &label,
            2 * F32 * rows * 1280,
            24.0 * (rows * 1280) as f64,
            || bias_act(x.clone(), Some(b.clone()), Act::Gelu, None),
            || bias_act_twin(x.clone(), Some(b.clone()), Act::Gelu, None),
        )?;
    }

    // GEGLU + bias, inner 1280: h read (2 per output), y written; FLOPs per output: the two bias
    // adds, GELU about 23, the product.
    let rows = pick(4 * 1792, 448);
    let label = format!("geglu [{rows}, 2·1280]");
    if bench.wants(&label) {
        let h = uniform([rows, 2 * 1280], -6.0, 6.0, device);
        let b = uniform([2 * 1280], -1.0, 1.0, device);
        bench.case(
            &label,
            3 * F32 * rows * 1280,
            26.0 * (rows * 1280) as f64,
            || geglu(h.clone(), Some(b.clone())),
            || geglu_twin(h.clone(), Some(b.clone())),
        )?;
    }

    // Attention at C = 320, 5 heads of 64: spatial self (1792 tokens, 2 images), temporal (16
    // frames, a sequence per pixel), cross (77 text tokens). Traffic: q, k, v read, the output
    // written. FLOPs: q·kᵀ and p·v, 2 each per (query, key, channel), plus the softmax (about 5
    // per score: scale, subtract, exp, sum, divide).
    for (name, [b, tq, tk]) in [
        ("attention spatial", [pick(2, 1), pick(1792, 448), pick(1792, 448)]),
        ("attention temporal", [pick(896, 112), 16, 16]),
        ("attention cross", [pick(2, 1), pick(1792, 448), 77]),
    ] {
        let (c, heads) = (320, 5);
        let label = format!("{name} [{b}, {tq}|{tk}, {c}] h{heads}");
        if !bench.wants(&label) {
            continue;
        }
        let q = uniform([b, tq, c], -1.0, 1.0, device);
        let (k, v) = (uniform([b, tk, c], -1.0, 1.0, device), uniform([b, tk, c], -1.0, 1.0, device));
        let flops = (4 * b * tq * tk * c + 5 * b * heads * tq * tk) as f64;
        bench.case(
            &label,
            F32 * (2 * b * tq * c + 2 * b * tk * c),
            flops,
            || attention(q.clone(), k.clone(), v.clone(), heads, false),
            || attention_twin(q.clone(), k.clone(), v.clone(), heads, false),
        )?;
    }

    // Conv2d 3×3 320→320 + bias + residual (ResnetBlock2D's conv2 at the top level). Traffic: x,
    // the weight, the residual read, y written. FLOPs: 2 per multiply-add.
    let p1 = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let x_shape = [pick(2, 1), 320, pick(32, 16), pick(56, 28)];
    let label = format!("conv2d 3x3 320→320 +res {x_shape:?}");
    if bench.wants(&label) {
        let x = uniform(x_shape, -0.5, 1.5, device);
        let weight = uniform([320, 320, 3, 3], -0.05, 0.05, device);
        let packed = prepare_weight(weight.clone());
        let bias = uniform([320], -1.0, 1.0, device);
        let out = output_shape(x_shape, 320, [3, 3], &p1);
        let res = uniform(out, -1.0, 1.0, device);
        let (numel_x, numel_out): (usize, usize) = (x_shape.iter().product(), out.iter().product());
        bench.case(
            &label,
            F32 * (numel_x + 320 * 320 * 9 + 2 * numel_out),
            2.0 * (320 * 9 * numel_out) as f64,
            || conv2d(x.clone(), &packed, Some(bias.clone()), &p1, Some(res.clone())),
            || conv2d_twin(x.clone(), weight.clone(), Some(bias.clone()), &p1, Some(res.clone())),
        )?;
    }

    // Upsample2D: nearest 2× then conv 3×3 320→320. Traffic: the small x, the weight, y.
    let x_shape = [pick(2, 1), 320, pick(16, 8), pick(28, 14)];
    let size = [2 * x_shape[2], 2 * x_shape[3]];
    let label = format!("upsample conv 3x3 320→320 {x_shape:?}→{size:?}");
    if bench.wants(&label) {
        let x = uniform(x_shape, -0.5, 1.5, device);
        let weight = uniform([320, 320, 3, 3], -0.05, 0.05, device);
        let packed = prepare_weight(weight.clone());
        let bias = uniform([320], -1.0, 1.0, device);
        let numel_x: usize = x_shape.iter().product();
        let numel_out = x_shape[0] * 320 * size[0] * size[1];
        bench.case(
            &label,
            F32 * (numel_x + 320 * 320 * 9 + numel_out),
            2.0 * (320 * 9 * numel_out) as f64,
            || upsample_conv2d(x.clone(), size, &packed, Some(bias.clone()), &p1, None),
            || upsample_conv2d_twin(x.clone(), size, weight.clone(), Some(bias.clone()), &p1, None),
        )?;
    }

    // TemporalConvLayer's Conv3d (3,1,1) 320→320 + bias + residual. Traffic: x, the weight, the
    // residual (x again here, counted once), y.
    let shape = [1, 320, pick(16, 8), pick(16, 8), pick(28, 14)];
    let label = format!("temporal conv 320 +res {shape:?}");
    if bench.wants(&label) {
        let x = uniform(shape, -0.5, 1.5, device);
        let weight = uniform([320, 320, 3, 1], -0.05, 0.05, device);
        let packed = prepare_weight(weight.clone());
        let taps = temporal_taps(weight);
        let bias = uniform([320], -1.0, 1.0, device);
        let numel: usize = shape.iter().product();
        bench.case(
            &label,
            F32 * (2 * numel + 320 * 320 * 3),
            2.0 * (320 * 3 * numel) as f64,
            || temporal_conv(x.clone(), &packed, Some(bias.clone()), Some(x.clone())),
            || temporal_conv_twin(x.clone(), &taps, Some(bias.clone()), Some(x.clone())),
        )?;
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    if args.repeats < 1 {
        bail!("--repeats must be at least 1");
    }
    let (device, adapter) = match args.backend {
        Backend::Cpu => {
            println!("no GPU kernels on the CPU backend: our kernels run only on a cubecl device (--backend wgpu)");
            if args.json {
                println!("{}", json!({ "adapter": "burn NdArray", "kernels": false, "cases": [] }));
            }
            return Ok(());
        }
        Backend::Wgpu => wgpu_device()?,
    };
    println!("adapter: {} [{}]{}", adapter.name, adapter.device_type, if adapter.cpu { ", a CPU adapter" } else { "" });

    let probes = run_probes(&device, args.repeats, args.small)?;
    println!(
        "probes: FMA peak {:.1} GFLOP/s, copy bandwidth {:.1} GB/s, ridge {:.2} FLOP/byte",
        probes.peak / 1e9,
        probes.bandwidth / 1e9,
        probes.ridge()
    );

    let mut bench = Bencher { device: &device, repeats: args.repeats, only: args.only.as_deref(), results: Vec::new() };
    run_cases(&mut bench, args.small)?;
    if bench.results.is_empty() {
        bail!("no case matches --only {:?}", args.only.unwrap_or_default());
    }

    println!(
        "{:<52} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>7}  rank",
        "case",
        "kernel ms",
        "twin ms",
        "speedup",
        "rel diff",
        "MB",
        "GFLOP",
        "FLOP/B",
        "GB/s",
        "GFLOP/s",
        "of BW",
        "of peak"
    );
    let mut cases = Vec::new();
    for m in &bench.results {
        let intensity = m.flops / m.bytes;
        let compute_bound = intensity >= probes.ridge();
        let agree = m.error <= m.tolerance;
        let rankable = agree && !(adapter.cpu && compute_bound);
        let speedup = m.twin / m.kernel;
        let order = if m.kernel <= m.twin { ["kernel", "twin"] } else { ["twin", "kernel"] };
        let rank = if !agree {
            format!("not ranked: kernel and twin disagree (max rel diff {:.1e})", m.error)
        } else if rankable {
            format!("{} faster ({:.2}×)", order[0], speedup.max(1.0 / speedup))
        } else {
            "not rankable on a CPU adapter".to_string()
        };
        let side = |seconds: f64| {
            let (gbps, gflops) = (m.bytes / seconds / 1e9, m.flops / seconds / 1e9);
            json!({
                "ms": seconds * 1e3,
                "gb_per_s": gbps,
                "gflop_per_s": gflops,
                "bandwidth_fraction": gbps * 1e9 / probes.bandwidth,
                "peak_fraction": gflops * 1e9 / probes.peak,
            })
        };
        let (kernel, twin) = (side(m.kernel), side(m.twin));
        println!(
            "{:<52} {:>9.2} {:>9.2} {:>7.2}× {:>8.1e} {:>9.1} {:>9.3} {:>7.2} {:>9.2} {:>9.2} {:>6.1}% {:>6.1}%  {} ({}-bound)",
            m.name,
            m.kernel * 1e3,
            m.twin * 1e3,
            speedup,
            m.error,
            m.bytes / 1e6,
            m.flops / 1e9,
            intensity,
            kernel["gb_per_s"].as_f64().unwrap_or(0.0),
            kernel["gflop_per_s"].as_f64().unwrap_or(0.0),
            100.0 * kernel["bandwidth_fraction"].as_f64().unwrap_or(0.0),
            100.0 * kernel["peak_fraction"].as_f64().unwrap_or(0.0),
            rank,
            if compute_bound { "compute" } else { "memory" },
        );
        cases.push(json!({
            "name": m.name,
            "bytes": m.bytes,
            "flops": m.flops,
            "intensity": intensity,
            "bound": if compute_bound { "compute" } else { "memory" },
            "kernel": kernel,
            "twin": twin,
            "speedup": speedup,
            "max_rel_diff": m.error,
            "tolerance": m.tolerance,
            "agree": agree,
            "rankable": rankable,
            "rank": if rankable { json!(order) } else { Value::Null },
        }));
    }
    println!(
        "GB/s, GFLOP/s and the fractions are the kernel's (the JSON has the twin's too); speedup = twin ms / kernel ms; \
         rel diff = max |kernel − twin| / max |twin| (ranked up to {TOLERANCE:.0e}; 0.25 for the full 5-D GroupNorm, whose twin drifts)"
    );
    if adapter.cpu {
        println!(
            "a CPU adapter: compute-bound cases are not ranked (its compute is not a GPU's); memory-bound ones are"
        );
    }
    if args.json {
        println!(
            "{}",
            json!({
                "adapter": adapter.name,
                "device_type": adapter.device_type,
                "cpu_adapter": adapter.cpu,
                "repeats": args.repeats,
                "small": args.small,
                "probes": {
                    "fma_gflop_per_s": probes.peak / 1e9,
                    "copy_gb_per_s": probes.bandwidth / 1e9,
                    "ridge_flop_per_byte": probes.ridge(),
                    "runs": probes.report,
                },
                "cases": cases,
            })
        );
    }
    Ok(())
}
