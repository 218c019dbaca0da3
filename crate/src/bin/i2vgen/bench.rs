//! `i2vgen bench`: a real-size UNet (the base I2VGen-XL one or the refiner's) with random
//! weights (nothing to download), timed over warm classifier-free-guided denoising steps, against
//! its analytic FLOPs and the kernels it dispatches (measured through cubecl's launch observer,
//! and counted from the shapes by `diagnostics::kernels`; `--count-only` counts without a device).

use std::time::Instant;

use crate::bench_pipeline::Size;
use crate::devices::DType;
use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::{Distribution, Tensor};
use i2vgen::diagnostics::launches::LaunchCounter;
use i2vgen::diagnostics::{flops, kernels};
use i2vgen::loading::config::parse;
use i2vgen::loading::weights::Weights;
use i2vgen::models::frame_chunks::FrameChunks;
use i2vgen::models::unet_3d_backbone::UNet3DConfig;
use i2vgen::models::unet_3d_condition::{UNet3DConditionModel, UNet3DConditionModelConfig};
use i2vgen::models::unet_i2vgen_xl::{I2VGenXLUNet, I2VGenXLUNetConfig, I2VGenXLUNetInput};
use i2vgen::pipelines::memory_plan::Precision;
use i2vgen::pipelines::sampling::Preset;

/// `unet/config.json` of ali-vilab/i2vgen-xl.
const BASE_UNET_CONFIG: &str = include_str!("../../../configs/i2vgen-xl/unet/config.json");

#[derive(clap::Args)]
pub struct Args {
    /// `real` (ali-vilab/i2vgen-xl's UNet), `refiner` (a real-size UNet3DConditionModel), or
    /// the path of a UNet `config.json` of either class.
    #[arg(long, default_value = "real")]
    pub(crate) unet_config: String,
    #[arg(long, default_value_t = 16)]
    pub(crate) frames: usize,
    /// Video height in pixels (the latents are 8× smaller).
    #[arg(long, default_value_t = 256)]
    pub(crate) height: usize,
    #[arg(long, default_value_t = 448)]
    pub(crate) width: usize,
    /// Timed steps after one warm-up step.
    #[arg(long, default_value_t = 3)]
    pub(crate) steps: usize,
    #[arg(long, value_enum, default_value = "wgpu")]
    pub(crate) backend: crate::devices::Backend,
    #[arg(long, value_enum, default_value = "f32")]
    pub(crate) dtype: DType,
    /// The preset whose cost per video is reported (`unet_equivalents_per_video`); with step
    /// caching a shallow step is timed too.
    #[arg(long, value_enum, default_value = "reference")]
    pub(crate) preset: crate::sampling::PresetArg,
    /// Also print one JSON object on the last line of stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Count dispatches, issued FLOPs and non-GEMM bytes of one guided step from the shapes and
    /// burn's launch rules, without a device and without running anything.
    #[arg(long, conflicts_with = "pipeline")]
    pub(crate) count_only: bool,
    /// With `--count-only`: the device's memory alignment in bytes (256 in browsers; llvmpipe
    /// has 32): narrows at offsets that are not multiples of it are copies.
    #[arg(long, default_value_t = crate::bench_count::WEBGPU_ALIGNMENT, requires = "count_only")]
    pub(crate) alignment: u64,
    /// Run the whole base pipeline of `--model` once instead (1 step, one decoded frame) and
    /// print the device memory after each stage next to the memory plan's figure.
    #[arg(long, requires = "model")]
    pub(crate) pipeline: bool,
    /// The model folder for `--pipeline`.
    #[arg(long)]
    pub(crate) model: Option<std::path::PathBuf>,
    /// Whose kernels run the step: ours (`i2vgen_shaders`), burn's default ones (each of our
    /// kernels' burn-op twin), or both, burn's first, in this process (the JSON's top level is
    /// ours, burn's figures under `burn_kernels`).
    #[arg(long, value_enum, default_value = "ours")]
    pub(crate) kernels: Kernels,
    /// The UNet's largest activation in bytes: its levels run in pieces of frames above it (see
    /// `frame_chunks`; 256 MiB by default). A large value runs every level whole, to time the
    /// pieces' cost.
    #[arg(long, conflicts_with_all = ["pipeline", "count_only"])]
    pub(crate) max_tensor_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kernels {
    Ours,
    Burn,
    Both,
}

/// Kernel launches per kernel name.
type Launches = std::collections::BTreeMap<String, u64>;

/// The UNet under test.
enum Net {
    Base(Box<I2VGenXLUNet>),
    Refiner(Box<UNet3DConditionModel>),
}

fn config_text(arg: &str) -> Result<String> {
    Ok(match arg {
        "real" => BASE_UNET_CONFIG.to_string(),
        "refiner" => i2vgen::models::unet_3d_condition::REFINER_CONFIG.to_string(),
        path => std::fs::read_to_string(path).with_context(|| format!("cannot read the UNet config {path}"))?,
    })
}

/// The config named by `--unet-config`, of either class.
pub(crate) enum Config {
    Base(I2VGenXLUNetConfig),
    Refiner(UNet3DConditionModelConfig),
}

impl Config {
    fn read(arg: &str) -> Result<Self> {
        let text = config_text(arg)?;
        let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{arg} is not JSON"))?;
        let note = |unknown: Vec<String>| {
            if !unknown.is_empty() {
                eprintln!("note: {arg}: ignoring unknown config keys {unknown:?}");
            }
        };
        Ok(match json.get("_class_name").and_then(|v| v.as_str()) {
            Some("UNet3DConditionModel") => {
                let parsed = parse::<UNet3DConditionModelConfig>(&text)?;
                note(parsed.unknown_keys);
                Self::Refiner(parsed.config)
            }
            _ => {
                let parsed = parse::<I2VGenXLUNetConfig>(&text)?;
                note(parsed.unknown_keys);
                Self::Base(parsed.config)
            }
        })
    }

    pub(crate) fn unet(&self) -> &UNet3DConfig {
        match self {
            Self::Base(c) => &c.unet,
            Self::Refiner(c) => &c.unet,
        }
    }

    pub(crate) fn kind(&self) -> kernels::UNet {
        match self {
            Self::Base(_) => kernels::UNet::I2VGenXL,
            Self::Refiner(_) => kernels::UNet::UNet3DCondition,
        }
    }

    /// Build the network with `weights` (random ones, or shapes only to count its parameters).
    fn build(&self, weights: &mut Weights) -> Result<Net> {
        Ok(match self {
            Self::Base(c) => Net::Base(Box::new(I2VGenXLUNet::load(weights, c)?)),
            Self::Refiner(c) => Net::Refiner(Box::new(UNet3DConditionModel::load(weights, c)?)),
        })
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub fn run(args: Args) -> Result<()> {
    i2vgen::pipelines::check_size(args.width, args.height, 8)?;
    if args.frames < 1 || args.steps < 1 {
        bail!("--frames and --steps must be at least 1");
    }
    let config = Config::read(&args.unet_config)?;
    if args.count_only {
        return crate::bench_count::run(&args, &config);
    }
    let (device, adapter) = crate::devices::device_and_adapter(args.backend, args.dtype)?;
    if let Some(model) = args.model.as_deref().filter(|_| args.pipeline) {
        let dtype = match args.dtype {
            DType::F32 => Precision::F32,
            DType::F16 => Precision::F16,
            DType::PackedF16 => Precision::PackedF16,
        };
        let size = Size { frames: args.frames, height: args.height, width: args.width };
        return crate::bench_pipeline::run(model, size, dtype, &device, args.json);
    }

    let start = Instant::now();
    let mut weights = Weights::random(&device);
    weights.set_packed_f16(args.dtype == DType::PackedF16);
    let mut net = config.build(&mut weights)?;
    if let Some(bytes) = args.max_tensor_bytes {
        match &mut net {
            Net::Base(unet) => unet.backbone.max_tensor_bytes = bytes,
            Net::Refiner(unet) => unet.backbone.max_tensor_bytes = bytes,
        }
    }
    device.sync().map_err(|err| anyhow!("{err:?}"))?;
    let built = start.elapsed().as_secs_f64();
    // What the network holds on the device before any input exists: its weights.
    let weights_bytes = device.memory_pool_usage().map(|m| m.bytes_in_use);

    let (b, f, h, w) = (2, args.frames, args.height / 8, args.width / 8);
    let config_unet = config.unet();
    let (name, flops, shallow_flops) = match net {
        Net::Base(_) => (
            "I2VGenXLUNet",
            flops::i2vgen_xl_unet(config_unet, b, f, h, w),
            flops::i2vgen_xl_unet_shallow(config_unet, b, f, h, w),
        ),
        Net::Refiner(_) => (
            "UNet3DConditionModel",
            flops::unet_3d_condition(config_unet, b, f, h, w),
            flops::unet_3d_condition_shallow(config_unet, b, f, h, w),
        ),
    };
    let shallow_fraction = shallow_flops as f64 / flops as f64;
    println!(
        "{name} {:?}, {f} frames at {}×{} (latents {h}×{w}), CFG batch {b}, {:?} on {:?} ({})",
        config_unet.block_out_channels, args.height, args.width, args.dtype, args.backend, adapter.name
    );
    println!("built with random weights in {built:.1} s");
    if let Some(bytes) = weights_bytes {
        println!("weights on the device: {} ({bytes} B)", gib(bytes));
    }
    println!("analytic cost: {:.1} GFLOP per step", flops as f64 / 1e9);

    let normal = |shape: [usize; 5]| Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let dim = config_unet.cross_attention_dim;
    // One guided UNet call at timestep t: a full one, or a shallow one on given deep features.
    // The inputs are drawn before the launch counter starts: it counts the UNet's kernels only.
    let forward = |t: f32, deep: Option<FrameChunks>| -> (Tensor<5>, FrameChunks, Launches) {
        let text = Tensor::random([b, 77, dim], Distribution::Normal(0.0, 1.0), &device);
        match &net {
            Net::Base(unet) => {
                let input = I2VGenXLUNetInput {
                    sample: normal([b, 4, f, h, w]),
                    timesteps: vec![t; b],
                    encoder_hidden_states: text,
                    fps: vec![16.0; b],
                    image_latents: normal([b, 4, f, h, w]),
                    image_embeddings: Tensor::random([b, dim], Distribution::Normal(0.0, 1.0), &device),
                };
                let counter = LaunchCounter::start();
                let (out, deep) = unet.forward_cached(input, deep);
                (out, deep, counter.by_kernel())
            }
            Net::Refiner(unet) => {
                let sample = normal([b, config_unet.in_channels, f, h, w]);
                let counter = LaunchCounter::start();
                let (out, deep) = unet.forward_cached(sample, &vec![t; b], text, deep);
                (out, deep, counter.by_kernel())
            }
        }
    };
    // Reading one value back waits for the whole step.
    let timed = |label: &str, deep: Option<FrameChunks>, t: f32| -> Result<(f64, FrameChunks, Launches)> {
        device.sync().map_err(|err| anyhow!("{err:?}"))?;
        let start = Instant::now();
        let (out, deep, launches) = forward(t, deep);
        let _ = out.sum().into_data();
        let seconds = start.elapsed().as_secs_f64();
        println!("{label}: {:.0} ms", seconds * 1e3);
        Ok((seconds, deep, launches))
    };
    // A warm-up step, then the timed ones: their mean, the last deep features, the first
    // one's launches (NdArray launches no kernels: the CPU backend measures none).
    let run_steps = |kernels: &str| -> Result<(f64, FrameChunks, Launches, Option<u64>)> {
        let (_, mut deep, _) = timed(&format!("{kernels}: warm-up"), None, 981.0)?;
        let mut times = Vec::new();
        let mut launches = None;
        for step in 1..=args.steps {
            let (seconds, features, counted) =
                timed(&format!("{kernels}: step {step}/{}", args.steps), None, 981.0 - 20.0 * step as f32)?;
            times.push(seconds);
            deep = features;
            launches.get_or_insert(counted);
        }
        let launches = launches.expect("at least one timed step");
        let dispatches = adapter.alignment.map(|_| launches.values().sum::<u64>());
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        println!("{kernels}: mean {:.0} ms/step, {:.1} GFLOP/s", mean * 1e3, flops as f64 / mean / 1e9);
        Ok((mean, deep, launches, dispatches))
    };
    let burn = if args.kernels == Kernels::Ours {
        None
    } else {
        i2vgen_shaders::use_burn_ops(true);
        let (mean, _, _, dispatches) = run_steps("burn's kernels")?;
        i2vgen_shaders::use_burn_ops(false);
        let memory = device.memory_pool_usage();
        println!("burn's kernels: {} dispatches per guided step", dispatches.unwrap_or(0));
        device.memory_cleanup();
        Some(serde_json::json!({
            "dispatches_per_step": dispatches,
            "ms_per_step": mean * 1e3,
            "peak_bytes": memory.as_ref().map(|m| m.bytes_reserved),
        }))
    };
    if args.kernels == Kernels::Burn {
        if args.json {
            println!("{}", serde_json::json!({ "adapter": adapter.name, "burn_kernels": burn }));
        }
        return Ok(());
    }
    let (mean, deep, launches, dispatches) = run_steps("our kernels")?;

    let preset = args.preset.preset();
    let sampling = preset.sampling();
    let shallow_seconds = if sampling.cache_interval > 1 {
        let (seconds, _, _) = timed("shallow step (cached deep features)", Some(deep), 941.0)?;
        Some(seconds)
    } else {
        None
    };
    let cost = |p: Preset| p.sampling().unet_equivalents(p.num_inference_steps(), true, shallow_fraction);
    println!(
        "shallow step: {:.1} GFLOP ({:.1}% of a full one); cached deep features {:.1} MiB (f32)",
        shallow_flops as f64 / 1e9,
        100.0 * shallow_fraction,
        flops::deep_features_bytes(config_unet, b, f, h, w, 4) as f64 / (1 << 20) as f64
    );
    for p in Preset::ALL {
        println!("{}: {:.1} UNet evaluations (batch 1) per video", p.name(), cost(p));
    }
    // A batch-1 evaluation takes about half a guided step.
    let seconds_per_video = cost(preset) * mean / 2.0;
    println!("{}: about {seconds_per_video:.0} s of UNet per video at this size", preset.name());
    let memory = device.memory_pool_usage();
    match &memory {
        Some(usage) => {
            println!("device memory: {} in use, {} reserved", gib(usage.bytes_in_use), gib(usage.bytes_reserved))
        }
        None => println!("device memory: not reported by this backend"),
    }
    let alignment = adapter.alignment.unwrap_or(crate::bench_count::WEBGPU_ALIGNMENT);
    let counted = crate::bench_count::count(&args, &config, alignment);
    match dispatches {
        Some(dispatches) => {
            println!(
                "dispatches per guided step: {dispatches} measured, {} counted (memory alignment {alignment} B)",
                counted.dispatches
            );
            crate::bench_count::print_by_kernel(&launches, &counted);
        }
        None => {
            println!("dispatches per guided step: none on the CPU backend; {} counted for WebGPU", counted.dispatches)
        }
    }
    if args.json {
        let presets: serde_json::Map<String, serde_json::Value> =
            Preset::ALL.into_iter().map(|p| (p.name().to_string(), cost(p).into())).collect();
        let mut report = crate::bench_count::report(&args, name, flops, &counted);
        let measured = serde_json::json!({
            "adapter": adapter.name,
            "dispatches_per_step": dispatches,
            "counted_dispatches_per_step": counted.dispatches,
            "shallow_flops_per_step": shallow_flops,
            "ms_per_step": mean * 1e3,
            "ms_per_shallow_step": shallow_seconds.map(|s| s * 1e3),
            "deep_features_bytes": flops::deep_features_bytes(config_unet, b, f, h, w, 4),
            "preset": preset.name(),
            "steps_per_video": preset.num_inference_steps(),
            "unet_equivalents_per_video": cost(preset),
            "unet_equivalents_per_preset": presets,
            "unet_seconds_per_video": seconds_per_video,
            "peak_bytes": memory.as_ref().map(|m| m.bytes_reserved),
            "weights_bytes": weights_bytes,
            "burn_kernels": burn,
        });
        if let (Some(report), serde_json::Value::Object(measured)) = (report.as_object_mut(), measured) {
            report.extend(measured);
        }
        println!("{report}");
    }
    Ok(())
}
