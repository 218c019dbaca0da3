//! `i2vgen refine`: a video + a brief prompt → a refined video (VideoToVideoSDPipeline with a
//! UNet3DConditionModel), and the refinement half of `generate --refine-model`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::pipeline_video_to_video::{RefineNoise, RefineRequest, VideoToVideoSDPipeline};

use crate::model_dir;
use crate::progress;
use crate::tensors::TensorFile;
use crate::video;

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
    #[arg(long, default_value_t = 0.6)]
    strength: f64,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 15.0)]
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

pub fn load_pipeline(model: &Path, device: &Device) -> Result<VideoToVideoSDPipeline> {
    use i2vgen::clip::CLIPTextModel;
    use i2vgen::unet_3d_condition::UNet3DConditionModel;
    use i2vgen::vae::AutoencoderKL;
    let class = model_dir::class_name(model, "unet")?;
    if class != "UNet3DConditionModel" {
        bail!("{}/unet is a {class}; refine needs a VideoToVideoSDPipeline folder (a UNet3DConditionModel, e.g. zeroscope_v2_XL)", model.display());
    }
    Ok(VideoToVideoSDPipeline {
        tokenizer: model_dir::tokenizer(model)?,
        text_encoder: model_dir::network(model, "text_encoder", device, CLIPTextModel::load)?,
        vae: model_dir::network(model, "vae", device, AutoencoderKL::load)?,
        unet: model_dir::network(model, "unet", device, UNet3DConditionModel::load)?,
        scheduler: model_dir::config_file(model, "scheduler/scheduler_config.json")?,
    })
}

/// The frames of `--video`, each `[H, W, 3]` in [0, 1].
pub fn read_video(path: &Path, device: &Device) -> Result<Vec<Tensor<3>>> {
    let frame = |rgb: Vec<u8>, w: usize, h: usize| {
        let values: Vec<f32> = rgb.into_iter().map(|v| f32::from(v) / 255.0).collect();
        Tensor::<3>::from_data(TensorData::new(values, [h, w, 3]), device)
    };
    if path.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
            .collect();
        if names.is_empty() {
            bail!("{} has no .png frames", path.display());
        }
        // Numbered frames: order by the number in the name (frame2 before frame10).
        let number = |p: &PathBuf| -> u64 {
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            stem.chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
        };
        names.sort_by_key(|p| (number(p), p.clone()));
        return names
            .iter()
            .map(|p| {
                let image = crate::generate::load_image(p)?;
                Ok(frame(image.data, image.width, image.height))
            })
            .collect();
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "safetensors" => {
            let video = TensorFile::read(path)?.float::<4>("video", device)?;
            let [f, _, _, c] = video.dims();
            if c != 3 {
                bail!("`video` in {} has {c} channels; expected [F, H, W, 3] in [0, 1]", path.display());
            }
            Ok((0..f).map(|i| video.clone().slice([i..i + 1]).squeeze_dim(0)).collect())
        }
        "gif" => {
            let mut options = gif::DecodeOptions::new();
            options.set_color_output(gif::ColorOutput::RGBA);
            let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut decoder = options.read_info(file).with_context(|| format!("{} is not a GIF", path.display()))?;
            let (w, h) = (decoder.width() as usize, decoder.height() as usize);
            // Frames may cover part of the screen: compose them onto a canvas.
            let mut canvas = vec![0u8; w * h * 4];
            let mut frames = Vec::new();
            while let Some(f) = decoder.read_next_frame().with_context(|| format!("{} is a damaged GIF", path.display()))? {
                for y in 0..f.height as usize {
                    for x in 0..f.width as usize {
                        let (cx, cy) = (x + f.left as usize, y + f.top as usize);
                        let src = &f.buffer[(y * f.width as usize + x) * 4..][..4];
                        if cx < w && cy < h && src[3] > 0 {
                            canvas[(cy * w + cx) * 4..][..4].copy_from_slice(src);
                        }
                    }
                }
                let rgb = canvas.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
                frames.push(frame(rgb, w, h));
            }
            Ok(frames)
        }
        _ => bail!("{}: --video must be a .safetensors, a .gif or a folder of numbered PNGs", path.display()),
    }
}

/// The draws from `noise_file`, else seeded ones.
pub fn noise(noise_file: Option<&Path>, seed: u64, shape: [usize; 4], device: &Device) -> Result<RefineNoise> {
    let file = noise_file.map(TensorFile::read).transpose()?;
    let mut rng = i2vgen::noise::rng(seed);
    let mut draw = |name: &str| -> Result<Tensor<4>> {
        let given = match &file {
            Some(f) if f.dims(name).is_ok() => Some(f.float::<4>(name, device)?),
            _ => None,
        };
        Ok(i2vgen::noise::or_draw(given, shape, &mut rng, device))
    };
    Ok(RefineNoise { noise: draw("noise")?, vae_sample_noise: draw("vae_sample_noise")? })
}

/// Refine `frames` with a progress bar; returns the decoded frames.
pub fn refine(pipeline: &VideoToVideoSDPipeline, request: RefineRequest, frames: &[Tensor<3>], noise: RefineNoise, device: &Device) -> Result<Vec<TensorData>> {
    let steps = request.steps_to_run();
    let bar = progress::bar((steps + frames.len()) as u64);
    bar.set_message("refine: encoding");
    let mut refinement = pipeline.prepare(request, frames, noise, device)?;
    for i in 0..steps {
        bar.set_message(format!("refine {}/{steps}", i + 1));
        pipeline.step(&mut refinement)?;
        // Reading one value waits for the GPU, so the bar and ETA show real progress.
        let _ = refinement.latents.clone().slice([0..1, 0..1, 0..1, 0..1, 0..1]).into_data();
        bar.inc(1);
    }
    let mut out = Vec::with_capacity(frames.len());
    for f in 0..frames.len() {
        bar.set_message(format!("decode {}/{}", f + 1, frames.len()));
        out.push(pipeline.decode_frame(&refinement, f).into_data());
        bar.inc(1);
    }
    bar.finish_with_message("refined");
    Ok(out)
}

pub fn run(args: Args) -> Result<()> {
    video::Format::of(&args.run.output)?;
    let request = RefineRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        strength: args.strength,
        num_inference_steps: args.steps,
        guidance_scale: args.guidance,
    };
    request.validate()?;
    let device = crate::devices::device(args.run.backend, args.run.dtype)?;
    let started = Instant::now();
    let frames = read_video(&args.video, &device)?;
    let Some(first) = frames.first() else { bail!("{} has no frames", args.video.display()) };
    let [h, w, _] = first.dims();
    let (height, width) = (args.height.unwrap_or(h), args.width.unwrap_or(w));
    if height % 8 != 0 || width % 8 != 0 || height == 0 || width == 0 {
        bail!("the output size {width}×{height} is not a multiple of 8; pass --height and --width (e.g. {}×{})", (width / 8).max(1) * 8, (height / 8).max(1) * 8);
    }
    let frames = i2vgen::pipeline_video_to_video::resize_frames(frames, height, width);
    let pipeline = load_pipeline(&args.model, &device)?;
    let noise = noise(args.noise.as_deref(), args.run.seed, pipeline.noise_shape(frames.len(), height, width), &device)?;
    let out = refine(&pipeline, request, &frames, noise, &device)?;
    video::write(&args.run.output, &out, args.fps)?;
    eprintln!("wrote {} ({} frames, {:.1} s)", args.run.output.display(), out.len(), started.elapsed().as_secs_f64());
    Ok(())
}
