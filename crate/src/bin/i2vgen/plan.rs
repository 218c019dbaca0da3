//! `i2vgen plan`: the GPU memory plan of a run (`pipelines::memory_plan`) for the real model's
//! configs or a model folder's, without a GPU and without weights: the networks are built with
//! `Weights::shapes`, which lists their tensors at no memory cost.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use i2vgen::loading::config::ConfigFile;
use i2vgen::models::clip::{CLIPTextConfig, CLIPVisionConfig};
use i2vgen::models::unet_3d_condition::REFINER_CONFIG;
use i2vgen::models::unet_i2vgen_xl::I2VGenXLUNetConfig;
use i2vgen::models::vae::AutoencoderKLConfig;
use i2vgen::pipelines::memory_plan::{DeviceLimits, MemoryPlan, Parameters, Precision, Video};
use i2vgen::pipelines::model_sizes::{ConfigTexts, ModelSizes};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// I2VGen-XL: image and prompt to video.
    Base,
    /// The refiner (VideoToVideoSD with a UNet3DConditionModel).
    Refine,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PlanDType {
    F32,
    F16,
    /// f16 weights packed in u32, computed in f32 (GPUs without shader-f16).
    PackedF16,
}

#[derive(clap::Args)]
pub struct Args {
    /// `real`: ali-vilab/i2vgen-xl's configs (the refiner's with `--stage refine`).
    #[arg(long, conflicts_with = "model", required_unless_present = "model")]
    config: Option<String>,
    /// A model folder in the diffusers layout (its configs are read; no weights are needed).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "base")]
    stage: Stage,
    #[arg(long, default_value_t = 16)]
    frames: u64,
    #[arg(long, default_value_t = 256)]
    height: u64,
    #[arg(long, default_value_t = 448)]
    width: u64,
    #[arg(long, value_enum, default_value = "f32")]
    dtype: PlanDType,
    /// The GPU memory the run may use, in bytes.
    #[arg(long)]
    budget: Option<u64>,
    /// The GPU's largest storage binding (and buffer), in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    max_binding: u64,
    /// Classifier-free guidance scale (above 1: two rows per step).
    #[arg(long, default_value_t = 9.0)]
    guidance: f64,
    /// The sampling preset (step caching keeps deep features between steps).
    #[arg(long, value_enum, default_value = "balanced")]
    preset: crate::sampling::PresetArg,
    /// Print one JSON object on one line.
    #[arg(long)]
    json: bool,
}

/// The config texts of one pipeline.
struct Texts {
    text_encoder: String,
    image_encoder: Option<String>,
    vae: String,
    unet: String,
}

fn folder_texts(dir: &Path, stage: Stage) -> Result<Texts> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).with_context(|| format!("cannot read {}", dir.join(file).display()))
    };
    Ok(Texts {
        text_encoder: read(CLIPTextConfig::FILE)?,
        image_encoder: (stage == Stage::Base).then(|| read(CLIPVisionConfig::FILE)).transpose()?,
        vae: read(AutoencoderKLConfig::FILE)?,
        unet: read(I2VGenXLUNetConfig::FILE)?,
    })
}

fn texts(args: &Args) -> Result<Texts> {
    if let Some(dir) = &args.model {
        return folder_texts(dir, args.stage);
    }
    match (args.config.as_deref(), args.stage) {
        (Some("real"), Stage::Base) => Ok(Texts {
            text_encoder: include_str!("../../../configs/i2vgen-xl/text_encoder/config.json").into(),
            image_encoder: Some(include_str!("../../../configs/i2vgen-xl/image_encoder/config.json").into()),
            vae: include_str!("../../../configs/i2vgen-xl/vae/config.json").into(),
            unet: include_str!("../../../configs/i2vgen-xl/unet/config.json").into(),
        }),
        (Some("real"), Stage::Refine) => Ok(Texts {
            text_encoder: include_str!("../../../configs/refiner/text_encoder/config.json").into(),
            image_encoder: None,
            vae: include_str!("../../../configs/refiner/vae/config.json").into(),
            unet: REFINER_CONFIG.into(),
        }),
        (other, _) => bail!("--config takes `real` (got {other:?}); for another model pass --model DIR"),
    }
}

/// Parse a pipeline's configs and count the parameters of the networks they build.
fn sizes(t: &Texts) -> Result<ModelSizes> {
    let texts = ConfigTexts {
        text_encoder: &t.text_encoder,
        image_encoder: t.image_encoder.as_deref(),
        vae: &t.vae,
        unet: &t.unet,
    };
    #[allow(deprecated)] // NdArray: placeholders only, nothing is computed.
    let device = Device::ndarray();
    Ok(ModelSizes::new(&texts, &device)?)
}

/// The base pipeline of a model folder.
pub fn base(dir: &Path) -> Result<ModelSizes> {
    sizes(&folder_texts(dir, Stage::Base)?)
}

pub fn run(args: Args) -> Result<()> {
    let sizes = sizes(&texts(&args)?)?;
    let video = Video {
        frames: args.frames,
        height: args.height,
        width: args.width,
        guidance: args.guidance > 1.0,
        deep_cache: args.preset.preset().sampling().cache_interval > 1,
    };
    let precision = match args.dtype {
        PlanDType::F32 => Precision::F32,
        PlanDType::F16 => Precision::F16,
        PlanDType::PackedF16 => Precision::PackedF16,
    };
    let limits = DeviceLimits {
        max_buffer_bytes: args.max_binding,
        max_binding_bytes: args.max_binding,
        budget_bytes: args.budget,
    };
    let plan = sizes.plan(video, precision, limits)?;
    print(&args, &sizes.params, &plan)
}

fn print(args: &Args, params: &Parameters, plan: &MemoryPlan) -> Result<()> {
    if args.json {
        let mut json = serde_json::to_value(plan)?;
        json["parameters"] = serde_json::to_value(params)?;
        println!("{}", serde_json::to_string(&json)?);
        return Ok(());
    }
    let gb = |b: u64| format!("{:.2} GB", b as f64 / 1e9);
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1 << 20) as f64);
    println!(
        "{:?} stage, {} frames at {}×{}, {:?}: peak {} (weights {} in all), largest tensor {}",
        args.stage,
        args.frames,
        args.width,
        args.height,
        plan.precision,
        gb(plan.peak_bytes),
        gb(plan.weights_bytes),
        mib(plan.max_tensor_bytes)
    );
    for s in &plan.stages {
        println!(
            "  {:<14} weights {:>9}  activations {:>9}  peak {:>9}  largest tensor {:>8}",
            s.stage,
            gb(s.weights_bytes),
            gb(s.activation_bytes),
            gb(s.peak_bytes),
            mib(s.max_tensor_bytes)
        );
    }
    println!(
        "encoders {}, guidance halves {}, VAE encode in {} and decode in {} row band(s), chunks of {} elements",
        if plan.keep_encoders { "kept resident" } else { "freed after use" },
        if plan.split_guidance { "apart" } else { "together" },
        plan.vae_encode_bands,
        plan.vae_decode_bands,
        plan.chunk_elements
    );
    Ok(())
}
