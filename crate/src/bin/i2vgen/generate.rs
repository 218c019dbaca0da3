//! `i2vgen generate`: image + prompt → video with I2VGen-XL, with a progress bar.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor};
use i2vgen::image::RgbImage;
use i2vgen::noise;
use i2vgen::pipeline_i2vgen_xl::{GenerationRequest, I2VGenXLPipeline, Noise};
use i2vgen::pipeline_video_to_video::RefineRequest;

use crate::{model_dir, progress, refine};
use crate::tensors::TensorFile;
use crate::video;

#[derive(clap::Args)]
pub struct Args {
    /// The diffusers I2VGenXLPipeline folder (e.g. a download of ali-vilab/i2vgen-xl).
    #[arg(long)]
    model: PathBuf,
    /// The first frame: PNG, JPEG or WebP.
    #[arg(long)]
    image: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    #[arg(long, default_value_t = 16)]
    frames: usize,
    #[arg(long, default_value_t = 704)]
    height: usize,
    #[arg(long, default_value_t = 1280)]
    width: usize,
    /// Frames per second: conditions the model and sets the output video's rate.
    #[arg(long, default_value_t = 16)]
    fps: usize,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 9.0)]
    guidance: f64,
    /// A safetensors file whose `latents` [1,4,F,h,w] and/or `vae_sample_noise` [1,4,h,w]
    /// replace the random draws.
    #[arg(long)]
    noise: Option<PathBuf>,
    #[command(flatten)]
    run: crate::RunArgs,
    /// Also write the intermediates (prompt_embeds, image_embeddings, image_latents, each step's
    /// UNet output noise_pred.i) to this safetensors file, to localise a parity drift.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Refine the base video with this VideoToVideoSDPipeline folder (the cascade's second stage).
    #[arg(long)]
    refine_model: Option<PathBuf>,
    /// The refinement prompt (default: --prompt).
    #[arg(long)]
    refine_prompt: Option<String>,
    #[arg(long, default_value_t = 0.6)]
    refine_strength: f64,
    /// Refinement schedule length; with strength s only the last int(steps·s) run.
    #[arg(long, default_value_t = 50)]
    refine_steps: usize,
    #[arg(long, default_value_t = 15.0)]
    refine_guidance: f64,
    /// Refined output size (multiples of 8); the base video is upscaled (bicubic) to it.
    #[arg(long, default_value_t = 720)]
    refine_height: usize,
    #[arg(long, default_value_t = 1280)]
    refine_width: usize,
}

/// Read and decode a PNG, JPEG or WebP file (the library's decoder, with the path in errors).
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    i2vgen::image::decode(&bytes).with_context(|| format!("{}", path.display()))
}

/// The explicit draws from `--noise`, else seeded ones.
fn noise(args: &Args, latent: [usize; 5], device: &Device) -> Result<Noise> {
    let file = args.noise.as_deref().map(TensorFile::read).transpose()?;
    let has = |name: &str| file.as_ref().is_some_and(|f| f.dims(name).is_ok());
    let mut rng = noise::rng(args.run.seed);
    let latents = has("latents").then(|| file.as_ref().unwrap().float::<5>("latents", device)).transpose()?;
    let latents = noise::or_draw(latents, latent, &mut rng, device);
    let vae = has("vae_sample_noise").then(|| file.as_ref().unwrap().float::<4>("vae_sample_noise", device)).transpose()?;
    let vae_sample_noise = noise::or_draw(vae, [1, latent[1], latent[3], latent[4]], &mut rng, device);
    Ok(Noise { latents, vae_sample_noise })
}

pub fn load_pipeline(model: &Path, device: &Device) -> Result<I2VGenXLPipeline> {
    use i2vgen::clip::{CLIPTextModel, CLIPVisionModelWithProjection};
    use i2vgen::unet_i2vgen_xl::I2VGenXLUNet;
    use i2vgen::vae::AutoencoderKL;
    Ok(I2VGenXLPipeline {
        tokenizer: model_dir::tokenizer(model)?,
        text_encoder: model_dir::network(model, "text_encoder", device, CLIPTextModel::load)?,
        image_encoder: model_dir::network(model, "image_encoder", device, CLIPVisionModelWithProjection::load)?,
        vae: model_dir::network(model, "vae", device, AutoencoderKL::load)?,
        unet: model_dir::network(model, "unet", device, I2VGenXLUNet::load)?,
        scheduler: model_dir::config_file(model, "scheduler/scheduler_config.json")?,
        feature_extractor: model_dir::config_file(model, "feature_extractor/preprocessor_config.json")?,
    })
}

pub fn run(args: Args) -> Result<()> {
    video::Format::of(&args.run.output)?;
    let request = GenerationRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        height: args.height,
        width: args.width,
        num_frames: args.frames,
        target_fps: args.fps,
        num_inference_steps: args.steps,
        guidance_scale: args.guidance,
    };
    let refine_request = args.refine_model.as_ref().map(|_| RefineRequest {
        prompt: args.refine_prompt.clone().unwrap_or_else(|| args.prompt.clone()),
        negative_prompt: args.negative_prompt.clone(),
        strength: args.refine_strength,
        num_inference_steps: args.refine_steps,
        guidance_scale: args.refine_guidance,
    });
    if let Some(r) = &refine_request {
        r.validate()?;
        let (h, w) = (args.refine_height, args.refine_width);
        if h == 0 || w == 0 || h % 8 != 0 || w % 8 != 0 {
            bail!("--refine-height and --refine-width must be positive multiples of 8, got {w}×{h}");
        }
    }
    let image = load_image(&args.image)?;
    let device = crate::devices::device(args.run.backend, args.run.dtype)?;
    let started = Instant::now();
    let pipeline = load_pipeline(&args.model, &device)?;
    request.validate(pipeline.vae_scale_factor())?;
    let noise = noise(&args, pipeline.latent_shape(&request), &device)?;

    let bar = progress::bar((args.steps + args.frames) as u64);
    bar.set_message("encoding");
    let mut generation = pipeline.prepare(request, &image, noise, &device)?;
    let mut trace = Vec::new();
    if args.trace.is_some() {
        trace.push(("prompt_embeds".to_string(), generation.prompt_embeds().to_data()));
        trace.push(("image_embeddings".to_string(), generation.image_embeddings().to_data()));
        trace.push(("image_latents".to_string(), generation.image_latents().to_data()));
    }
    for i in 0..args.steps {
        bar.set_message(format!("step {}/{}", i + 1, args.steps));
        let noise_pred = pipeline.step(&mut generation)?;
        if args.trace.is_some() {
            trace.push((format!("noise_pred.{i}"), noise_pred.into_data()));
        }
        // Reading one value waits for the GPU, so the bar and ETA show real progress.
        let _ = generation.latents.clone().slice([0..1, 0..1, 0..1, 0..1, 0..1]).into_data();
        bar.inc(1);
    }
    let mut frames = Vec::with_capacity(args.frames);
    for f in 0..args.frames {
        bar.set_message(format!("decode {}/{}", f + 1, args.frames));
        frames.push(pipeline.decode_frame(&generation, f).into_data());
        bar.inc(1);
    }
    bar.finish_with_message("done");
    drop((generation, pipeline));
    if let Some(path) = &args.trace {
        crate::tensors::write(path, trace.iter().map(|(name, data)| (name.as_str(), data.clone())).collect())?;
    }
    let frames = match (&args.refine_model, refine_request) {
        (Some(model), Some(request)) => {
            let base: Vec<Tensor<3>> = frames.into_iter().map(|f| Tensor::from_data(f, &device)).collect();
            let base = i2vgen::pipeline_video_to_video::resize_frames(base, args.refine_height, args.refine_width);
            let pipeline = refine::load_pipeline(model, &device)?;
            let shape = pipeline.noise_shape(base.len(), args.refine_height, args.refine_width);
            // The refiner's draws come from the next seed, so a run is one seed end to end.
            let noise = refine::noise(None, args.run.seed.wrapping_add(1), shape, &device)?;
            refine::refine(&pipeline, request, &base, noise, &device)?
        }
        _ => frames,
    };
    video::write(&args.run.output, &frames, args.fps)?;
    eprintln!("wrote {} ({} frames, {:.1} s)", args.run.output.display(), args.frames, started.elapsed().as_secs_f64());
    Ok(())
}
