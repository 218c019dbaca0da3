//! `i2vgen refine`: a video + a brief prompt → a refined video (VideoToVideoSDPipeline with a
//! UNet3DConditionModel).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use i2vgen::pipelines::pipeline_video_to_video::RefineRequest;
use i2vgen::pipelines::{check_fps, check_size};

use crate::devices::DType;
use crate::{inputs, stage, video};

const REFINE: RefineRequest = RefineRequest::DEFAULT;

#[derive(clap::Args)]
pub struct Args {
    /// The diffusers VideoToVideoSDPipeline folder (unet, vae, text_encoder, tokenizer, scheduler).
    #[arg(long)]
    model: PathBuf,
    /// `.safetensors` with `video` [F,H,W,3] in [0,1], a GIF, or a folder of numbered PNGs.
    #[arg(long)]
    video: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// How far the video is re-noised (1: from pure noise).
    #[arg(long, default_value_t = REFINE.strength)]
    strength: f64,
    #[arg(long, default_value_t = REFINE.num_inference_steps)]
    steps: usize,
    #[arg(long, default_value_t = REFINE.guidance_scale)]
    guidance: f64,
    /// Output height; the video is resized (bicubic) when it differs. Default: the video's.
    #[arg(long)]
    height: Option<usize>,
    #[arg(long)]
    width: Option<usize>,
    /// Frame rate of the written video.
    #[arg(long, default_value_t = 16)]
    fps: usize,
    /// A safetensors file whose `noise` [F,4,h,w] (the SDEdit noise) and/or `vae_sample_noise`
    /// [F,4,h,w] replace the random draws.
    #[arg(long)]
    noise: Option<PathBuf>,
    #[command(flatten)]
    run: crate::RunArgs,
}

pub fn run(args: Args) -> Result<()> {
    // The output path, the rate and the refiner's configs are checked before anything loads.
    video::check_output(&args.run.output)?;
    check_fps(args.fps)?;
    let vae_scale_factor = crate::model::check_refiner(&args.model)?;
    let device = crate::devices::device(args.run.backend, args.run.dtype)?;
    let started = Instant::now();
    let frames = inputs::read_video(&args.video, &device)?;
    let Some(first) = frames.first() else { bail!("{} has no frames", args.video.display()) };
    let [h, w, _] = first.dims();
    let request = RefineRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        strength: args.strength,
        num_inference_steps: args.steps,
        guidance_scale: args.guidance,
        height: args.height.unwrap_or(h),
        width: args.width.unwrap_or(w),
    };
    request.validate()?;
    check_size(request.width, request.height, vae_scale_factor)?;
    let noise_file = inputs::noise_file(args.noise.as_deref())?;
    let out = stage::refine(
        &args.model,
        request,
        frames,
        args.run.seed,
        noise_file.as_deref(),
        &device,
        args.run.dtype == DType::PackedF16,
    )?;
    video::write(&args.run.output, &out, args.fps)?;
    eprintln!("wrote {} ({} frames, {:.1} s)", args.run.output.display(), out.len(), started.elapsed().as_secs_f64());
    Ok(())
}
