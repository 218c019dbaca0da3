//! diffusers `pipelines/text_to_video_synthesis/pipeline_text_to_video_synth_img2img.py`:
//! `VideoToVideoSDPipeline` (SDEdit on a video with a `UNet3DConditionModel`), the refinement
//! stage of the cascade. A state machine like the base pipeline: [`VideoToVideoSDPipeline::prepare`]
//! → [`VideoToVideoSDPipeline::step`] × N → [`VideoToVideoSDPipeline::decode_frame`] × F.

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use crate::clip::CLIPTextModel;
use crate::scheduler::{DDIMScheduler, DDIMSchedulerConfig};
use crate::tokenizer::CLIPTokenizer;
use crate::unet_3d_condition::UNet3DConditionModel;
use crate::vae::AutoencoderKL;
use crate::{Error, Result};

/// How to refine. `Default` gives the pipeline's defaults (strength 0.6, 50 steps, guidance 15).
#[derive(Clone, Debug)]
pub struct RefineRequest {
    pub prompt: String,
    pub negative_prompt: String,
    /// How far the video is re-noised: 1 starts from pure noise, 0 changes nothing.
    pub strength: f64,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
}

impl Default for RefineRequest {
    fn default() -> Self {
        Self { prompt: String::new(), negative_prompt: String::new(), strength: 0.6, num_inference_steps: 50, guidance_scale: 15.0 }
    }
}

impl RefineRequest {
    pub fn do_classifier_free_guidance(&self) -> bool {
        self.guidance_scale > 1.0
    }

    /// The denoising steps that run: the last `int(steps · strength)` of the schedule.
    pub fn steps_to_run(&self) -> usize {
        ((self.num_inference_steps as f64 * self.strength) as usize).min(self.num_inference_steps)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Request(m));
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return bad(format!("strength must be in (0, 1], got {}", self.strength));
        }
        if self.num_inference_steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if self.steps_to_run() == 0 {
            return bad(format!(
                "steps × strength = {} × {} runs no denoising step; raise --steps or --strength",
                self.num_inference_steps, self.strength
            ));
        }
        if !(self.guidance_scale >= 0.0 && self.guidance_scale.is_finite()) {
            return bad(format!("guidance must be a number ≥ 0, got {}", self.guidance_scale));
        }
        Ok(())
    }
}

/// The random draws of a refinement, frame-major as diffusers makes them.
pub struct RefineNoise {
    /// The SDEdit noise added to the video latents, `[F, 4, h, w]`.
    pub noise: Tensor<4>,
    /// The N(0, 1) draws of the per-frame posterior samples, `[F, 4, h, w]`.
    pub vae_sample_noise: Tensor<4>,
}

/// A refinement in progress.
pub struct Refinement {
    pub request: RefineRequest,
    /// `[1, 4, F, h, w]`
    pub latents: Tensor<5>,
    /// `[B, 77, D]`: the text encoder's last hidden state, [uncond, cond] with guidance.
    prompt_embeds: Tensor<3>,
    scheduler: DDIMScheduler,
    /// The timesteps that run (the tail of the schedule that `strength` selects).
    timesteps: Vec<i64>,
    step: usize,
}

impl Refinement {
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    pub fn steps_done(&self) -> usize {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step == self.timesteps.len()
    }
}

/// The loaded networks and configs of a `VideoToVideoSDPipeline` folder.
pub struct VideoToVideoSDPipeline {
    pub tokenizer: CLIPTokenizer,
    pub text_encoder: CLIPTextModel,
    pub vae: AutoencoderKL,
    pub unet: UNet3DConditionModel,
    pub scheduler: DDIMSchedulerConfig,
}

impl VideoToVideoSDPipeline {
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config.downscale()
    }

    /// `[F, 4, h, w]` for a video of `frames` × `height` × `width`: the shape of both noises.
    pub fn noise_shape(&self, frames: usize, height: usize, width: usize) -> [usize; 4] {
        let f = self.vae_scale_factor();
        [frames, self.unet.config.in_channels, height / f, width / f]
    }

    /// Encode the prompts and every frame, and noise the latents to the first timestep that runs.
    /// `frames`: each `[H, W, 3]` in [0, 1], already at the output size.
    pub fn prepare(&self, request: RefineRequest, frames: &[Tensor<3>], noise: RefineNoise, device: &Device) -> Result<Refinement> {
        request.validate()?;
        let Some(first) = frames.first() else {
            return Err(Error::Request("the video has no frames".into()));
        };
        let [height, width, _] = first.dims();
        let multiple = self.vae_scale_factor().max(8);
        if height % multiple != 0 || width % multiple != 0 {
            return Err(Error::Request(format!(
                "the video is {width}×{height}; refine needs sizes that are multiples of {multiple} (resize it first)"
            )));
        }
        if frames.iter().any(|f| f.dims() != first.dims()) {
            return Err(Error::Request("every frame of the video must have the same size".into()));
        }
        let shape = self.noise_shape(frames.len(), height, width);
        for (name, got) in [("noise", noise.noise.dims()), ("vae_sample_noise", noise.vae_sample_noise.dims())] {
            if got != shape {
                return Err(Error::Request(format!("noise `{name}` has shape {got:?}, expected {shape:?}")));
            }
        }
        let cfg = request.do_classifier_free_guidance();

        // 1. prompts → last hidden state; [uncond, cond]
        let mut prompts = vec![request.prompt.as_str()];
        if cfg {
            prompts.insert(0, request.negative_prompt.as_str());
        }
        let prompt_embeds = self.text_encoder.encode_prompts(&self.tokenizer, &prompts, device).last_hidden_state;

        // 2. timesteps: the tail that strength selects
        let mut scheduler = DDIMScheduler::new(self.scheduler.clone())?;
        scheduler.set_timesteps(request.num_inference_steps)?;
        let timesteps = scheduler.get_timesteps(request.strength);

        // 3. latents: each frame's posterior sample × scaling_factor, noised to the first timestep
        let [f, c, h, w] = shape;
        let latents: Vec<Tensor<4>> = frames
            .iter()
            .enumerate()
            .map(|(i, frame)| self.vae.encode_video_frame(frame.clone(), noise.vae_sample_noise.clone().slice([i..i + 1])))
            .collect();
        let latents = scheduler.add_noise(Tensor::cat(latents, 0), noise.noise, timesteps[0]);
        let latents = latents.reshape([1, f, c, h, w]).swap_dims(1, 2);
        Ok(Refinement { request, latents, prompt_embeds, scheduler, timesteps, step: 0 })
    }

    /// One denoising step: the UNet on [uncond, cond], guidance, and the DDIM update.
    pub fn step(&self, r: &mut Refinement) -> Result<()> {
        if r.is_done() {
            return Err(Error::Request("all denoising steps have run; decode the frames".into()));
        }
        let t = r.timesteps[r.step];
        let cfg = r.request.do_classifier_free_guidance();
        let [_, _, f, h, w] = r.latents.dims();
        let run = |batch: usize, text: Tensor<3>| {
            let sample = Tensor::cat(vec![r.latents.clone(); batch], 0);
            self.unet.forward(sample, &vec![t as f32; batch], text)
        };
        let noise_pred = if cfg && self.unet.config.split_guidance(f, h, w) {
            let halves = (0..2).map(|i| run(1, r.prompt_embeds.clone().narrow(0, i, 1))).collect();
            Tensor::cat(halves, 0)
        } else {
            run(if cfg { 2 } else { 1 }, r.prompt_embeds.clone())
        };
        let noise_pred = if cfg {
            let [uncond, text] = <[Tensor<5>; 2]>::try_from(noise_pred.chunk(2, 0)).expect("two halves");
            uncond.clone() + (text - uncond).mul_scalar(r.request.guidance_scale)
        } else {
            noise_pred
        };
        r.latents = r.scheduler.step(noise_pred, t, r.latents.clone());
        r.step += 1;
        Ok(())
    }

    /// Decode one frame of the (finished) latents: `[H, W, 3]` in [0, 1].
    pub fn decode_frame(&self, r: &Refinement, frame: usize) -> Tensor<3> {
        self.vae.decode_video_frame(&r.latents, frame)
    }
}

/// Bicubic resize of each frame (`[H, W, 3]` in [0, 1]) to `height`×`width`, clamped to [0, 1]:
/// how the cascade brings the base video to the refinement size (nothing when it already matches).
pub fn resize_frames(frames: Vec<Tensor<3>>, height: usize, width: usize) -> Vec<Tensor<3>> {
    frames
        .into_iter()
        .map(|f| {
            let [h, w, c] = f.dims();
            if (h, w) == (height, width) {
                return f;
            }
            let x = f.permute([2, 0, 1]).reshape([1, c, h, w]);
            let x = interpolate(x, InterpolateOptions::new(InterpolateMode::Bicubic).with_output_size([height, width]));
            x.clamp(0.0, 1.0).reshape([c, height, width]).permute([1, 2, 0])
        })
        .collect()
}
