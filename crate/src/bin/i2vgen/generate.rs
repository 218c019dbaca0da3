//! `i2vgen generate`: image + prompt → video with I2VGen-XL, with a progress bar.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::image::RgbImage;
use i2vgen::pipeline_i2vgen_xl::{GenerationRequest, I2VGenXLPipeline, Noise};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::model_dir;
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
    /// Seed for the random draws (initial latents, image-latent sample).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A safetensors file whose `latents` [1,4,F,h,w] and/or `vae_sample_noise` [1,4,h,w]
    /// replace the random draws.
    #[arg(long)]
    noise: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "wgpu")]
    backend: crate::devices::Backend,
    /// `.safetensors` (frames [F,H,W,3] in [0,1]) or `.gif`.
    #[arg(long)]
    output: PathBuf,
}

pub fn load_image(path: &Path) -> Result<RgbImage> {
    let decoded = image::ImageReader::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("{} is not a PNG, JPEG or WebP image this build can decode", path.display()))?
        .to_rgb8();
    let (w, h) = decoded.dimensions();
    Ok(RgbImage::new(w as usize, h as usize, decoded.into_raw())?)
}

fn normal(shape: &[usize], rng: &mut StdRng) -> Vec<f32> {
    (0..shape.iter().product::<usize>()).map(|_| StandardNormal.sample(rng)).collect()
}

/// The explicit draws from `--noise`, else seeded ones.
fn noise(args: &Args, latent: [usize; 5], device: &Device) -> Result<Noise> {
    let file = args.noise.as_deref().map(TensorFile::read).transpose()?;
    let has = |name: &str| file.as_ref().is_some_and(|f| f.dims(name).is_ok());
    let mut rng = StdRng::seed_from_u64(args.seed);
    let latents = if has("latents") {
        file.as_ref().unwrap().float::<5>("latents", device)?
    } else {
        Tensor::from_data(TensorData::new(normal(&latent, &mut rng), latent), device)
    };
    let shape = [1, latent[1], latent[3], latent[4]];
    let vae_sample_noise = if has("vae_sample_noise") {
        file.as_ref().unwrap().float::<4>("vae_sample_noise", device)?
    } else {
        Tensor::from_data(TensorData::new(normal(&shape, &mut rng), shape), device)
    };
    Ok(Noise { latents, vae_sample_noise })
}

pub fn load_pipeline(model: &Path, device: &Device) -> Result<I2VGenXLPipeline> {
    use i2vgen::clip::{CLIPTextModel, CLIPVisionModelWithProjection};
    use i2vgen::unet_i2vgen_xl::I2VGenXLUNet;
    use i2vgen::vae::AutoencoderKL;
    macro_rules! component {
        ($name:literal, $ty:ty) => {{
            let config = model_dir::config(model, $name)?;
            let mut w = model_dir::weights(model, $name, device)?;
            let net = <$ty>::load(&mut w, &config).with_context(|| format!("loading {}/", $name))?;
            w.finish().with_context(|| format!("loading {}/", $name))?;
            net
        }};
    }
    Ok(I2VGenXLPipeline {
        tokenizer: model_dir::tokenizer(model)?,
        text_encoder: component!("text_encoder", CLIPTextModel),
        image_encoder: component!("image_encoder", CLIPVisionModelWithProjection),
        vae: component!("vae", AutoencoderKL),
        unet: component!("unet", I2VGenXLUNet),
        scheduler: model_dir::config_file(model, "scheduler/scheduler_config.json")?,
        feature_extractor: model_dir::config_file(model, "feature_extractor/preprocessor_config.json")?,
    })
}

pub fn run(args: Args) -> Result<()> {
    let extension = args.output.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if !matches!(extension.as_str(), "safetensors" | "gif") {
        bail!("--output must end in .safetensors or .gif (WebM/MP4 encoding is not built yet; the web app writes WebM)");
    }
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
    let image = load_image(&args.image)?;
    let device = crate::devices::device(args.backend)?;
    let started = Instant::now();
    let pipeline = load_pipeline(&args.model, &device)?;
    request.validate(pipeline.vae_scale_factor())?;
    let noise = noise(&args, pipeline.latent_shape(&request), &device)?;

    let bar = ProgressBar::new((args.steps + args.frames) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({elapsed} elapsed, ETA {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("encoding");
    let mut generation = pipeline.prepare(request, &image, noise, &device)?;
    for i in 0..args.steps {
        bar.set_message(format!("step {}/{}", i + 1, args.steps));
        pipeline.step(&mut generation)?;
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
    video::write(&args.output, &frames, args.fps)?;
    eprintln!("wrote {} ({} frames, {:.1} s)", args.output.display(), args.frames, started.elapsed().as_secs_f64());
    Ok(())
}
