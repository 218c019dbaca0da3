//! `i2vgen generate`: image + prompt → video with I2VGen-XL, with a progress bar; with
//! `--refine-model`, the whole cascade.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::{Tensor, TensorData};
use i2vgen::pipelines::chain;
use i2vgen::pipelines::check_size;
use i2vgen::pipelines::noise::Draws;
use i2vgen::pipelines::pipeline_i2vgen_xl::{GenerationRequest, check_image};
use i2vgen::pipelines::pipeline_video_to_video::RefineRequest;

use crate::devices::DType;
use crate::{inputs, model, stage, video};

const BASE: GenerationRequest = GenerationRequest::DEFAULT;
const REFINE: RefineRequest = RefineRequest::DEFAULT;

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
    #[arg(long, default_value_t = BASE.num_frames)]
    frames: usize,
    #[arg(long, default_value_t = BASE.height)]
    height: usize,
    #[arg(long, default_value_t = BASE.width)]
    width: usize,
    /// Frames per second: conditions the model and sets the output video's rate.
    #[arg(long, default_value_t = BASE.target_fps)]
    fps: usize,
    #[command(flatten)]
    sampling: crate::sampling::SamplingArgs,
    #[arg(long, default_value_t = BASE.guidance_scale)]
    guidance: f64,
    /// A safetensors file whose `latents` [1,4,F,h,w] and/or `vae_sample_noise` [1,4,h,w]
    /// replace the random draws (`clipK.latents`, `clipK.vae_sample_noise` for clip K ≥ 2).
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Chain this many clips: each next clip starts from the last frame of the one before (same
    /// prompt; clip K is seeded seed + K − 1) and the video is N·frames − (N − 1) frames long.
    #[arg(long, default_value_t = 1)]
    clips: usize,
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
    #[arg(long, default_value_t = REFINE.strength)]
    refine_strength: f64,
    /// Refinement schedule length; with strength s only the last int(steps·s) run.
    #[arg(long, default_value_t = REFINE.num_inference_steps)]
    refine_steps: usize,
    #[arg(long, default_value_t = REFINE.guidance_scale)]
    refine_guidance: f64,
    /// Refined output size (multiples of 8); the base video is upscaled (bicubic) to it.
    #[arg(long, default_value_t = REFINE.height)]
    refine_height: usize,
    #[arg(long, default_value_t = REFINE.width)]
    refine_width: usize,
}

pub fn run(args: Args) -> Result<()> {
    // Every argument, the output path and the model folders' configs are checked before anything
    // loads, so a mistake costs seconds, not a generation.
    video::check_output(&args.run.output)?;
    let (num_inference_steps, sampling) = args.sampling.resolve();
    let request = GenerationRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        height: args.height,
        width: args.width,
        num_frames: args.frames,
        target_fps: args.fps,
        num_inference_steps,
        guidance_scale: args.guidance,
        sampling,
    };
    request.validate(model::vae_scale_factor(&args.model)?)?;
    let refine_request = args.refine_model.as_ref().map(|_| RefineRequest {
        prompt: args.refine_prompt.clone().unwrap_or_else(|| args.prompt.clone()),
        negative_prompt: args.negative_prompt.clone(),
        strength: args.refine_strength,
        num_inference_steps: args.refine_steps,
        guidance_scale: args.refine_guidance,
        height: args.refine_height,
        width: args.refine_width,
    });
    if let (Some(model), Some(r)) = (&args.refine_model, &refine_request) {
        r.validate()?;
        check_size(r.width, r.height, model::check_refiner(model)?)?;
    }
    chain::check_clips(args.clips, args.frames)?;
    let mut image = inputs::load_image(&args.image)?;
    check_image(&image).with_context(|| args.image.display().to_string())?;
    let noise_file = inputs::noise_file(args.noise.as_deref())?;
    let device = crate::devices::device(args.run.backend, args.run.dtype)?;
    let started = Instant::now();
    let packed_f16 = args.run.dtype == DType::PackedF16;
    let pipeline = model::base(&args.model, &device, packed_f16)?;

    let mut trace = Vec::new();
    let mut frames: Vec<TensorData> = Vec::new();
    for k in 0..args.clips {
        let (label, prefix) = match args.clips {
            1 => ("step".to_string(), String::new()),
            n => (format!("clip {}/{n} step", k + 1), format!("clip{}.", k + 1)),
        };
        let draws_prefix = if k == 0 { String::new() } else { prefix.clone() };
        let clip = (|| -> Result<Vec<TensorData>> {
            let mut draws = Draws::new(chain::clip_seed(args.run.seed, k), noise_file.as_deref(), &device)?
                .with_prefix(draws_prefix);
            let noise = pipeline.draw_noise(&request, &mut draws)?;
            eprintln!("{}encoding the prompt and the image…", if args.clips > 1 { &prefix } else { "" });
            let mut generation = pipeline.prepare(request.clone(), &image, noise, &device)?;
            if args.trace.is_some() {
                trace.push((format!("{prefix}prompt_embeds"), generation.prompt_embeds().to_data()));
                trace.push((format!("{prefix}image_embeddings"), generation.image_embeddings().to_data()));
                trace.push((format!("{prefix}image_latents"), generation.image_latents().to_data()));
            }
            stage::run(&mut generation, &label, |i, noise_pred| {
                if args.trace.is_some() {
                    trace.push((format!("{prefix}noise_pred.{i}"), noise_pred.into_data()));
                }
            })
        })();
        match clip {
            Ok(clip) => {
                let last = clip.last().expect("a clip has frames").clone().convert::<f32>();
                let last = last.try_to_vec::<f32>().map_err(|e| anyhow!("{e:?}"))?;
                image = chain::next_image(&last, request.width, request.height)?;
                chain::append_clip(&mut frames, clip);
            }
            // Clips that finished are the result: write them, then report the failure.
            Err(err) if k > 0 => {
                video::write(&args.run.output, &frames, args.fps)?;
                bail!(
                    "clip {} of {} failed: {err:#}; the {k} finished clip(s), {} frames, were written to {}",
                    k + 1,
                    args.clips,
                    frames.len(),
                    args.run.output.display()
                );
            }
            Err(err) => return Err(err),
        }
    }
    drop(pipeline);
    if let Some(path) = &args.trace {
        crate::tensors::write(path, trace.iter().map(|(name, data)| (name.as_str(), data.clone())).collect())?;
    }
    let frames = match (&args.refine_model, refine_request) {
        (Some(model), Some(request)) => {
            let base: Vec<Tensor<3>> = frames.iter().map(|f| Tensor::from_data(f.clone(), &device)).collect();
            // The refiner's draws come from the seed after the clips', so a run is one seed end to end.
            match stage::refine(
                model,
                request,
                base,
                chain::clip_seed(args.run.seed, args.clips),
                None,
                &device,
                packed_f16,
            ) {
                Ok(refined) => refined,
                // The base video is a result: write it, then report why the refinement failed.
                Err(err) => {
                    video::write(&args.run.output, &frames, args.fps).with_context(|| {
                        format!("the refinement failed ({err:#}), then writing the base video failed")
                    })?;
                    bail!(
                        "the refinement failed: {err:#}; the base video ({} frames, {}×{}) was written to {} instead",
                        frames.len(),
                        args.width,
                        args.height,
                        args.run.output.display()
                    );
                }
            }
        }
        _ => frames,
    };
    video::write(&args.run.output, &frames, args.fps)?;
    eprintln!(
        "wrote {} ({} frames, {:.1} s)",
        args.run.output.display(),
        frames.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
