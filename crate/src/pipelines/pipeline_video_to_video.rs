//! diffusers `pipelines/text_to_video_synthesis/pipeline_text_to_video_synth_img2img.py`:
//! `VideoToVideoSDPipeline` (SDEdit on a video with a `UNet3DConditionModel`), the refinement
//! stage of the cascade. A state machine like the base pipeline: [`VideoToVideoSDPipeline::prepare`]
//! → [`Stage::step`] × N → [`Stage::decode_frame`] × F.

use std::rc::Rc;

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use crate::loading::folder::{self, PipelineKind, TensorSource};
use crate::loading::tokenizer::{CLIPTokenizer, check_prompt};
use crate::models::clip::CLIPTextModel;
use crate::models::unet_3d_condition::UNet3DConditionModel;
use crate::models::vae::AutoencoderKL;
use crate::pipelines::consistency;
use crate::pipelines::noise::Draws;
use crate::pipelines::sampling::Sampling;
use crate::pipelines::stage::{Denoising, Stage};
use crate::pipelines::{check_guidance, check_size, check_steps, guidance_prompts};
use crate::schedulers::SchedulerConfig;
use crate::{Error, Result};

/// How to refine. [`RefineRequest::DEFAULT`] gives the pipeline's defaults (strength 0.6,
/// 50 steps, guidance 15) and the cascade's refined size, 1280×720.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefineRequest {
    pub prompt: String,
    pub negative_prompt: String,
    /// How far the video is re-noised: 1 starts from pure noise, 0 changes nothing.
    pub strength: f64,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
    /// The refined size; the base video is resized (bicubic) to it.
    pub height: usize,
    pub width: usize,
}

impl RefineRequest {
    pub const DEFAULT: Self = Self {
        prompt: String::new(),
        negative_prompt: String::new(),
        strength: 0.6,
        num_inference_steps: 50,
        guidance_scale: 15.0,
        height: 720,
        width: 1280,
    };

    /// The denoising steps that run: the last `int(steps · strength)` of the schedule.
    pub fn steps_to_run(&self) -> usize {
        ((self.num_inference_steps as f64 * self.strength) as usize).min(self.num_inference_steps)
    }

    pub fn validate(&self) -> Result<()> {
        check_prompt("prompt", "the prompt", &self.prompt)?;
        check_prompt("negative_prompt", "the negative prompt", &self.negative_prompt)?;
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return Err(Error::request("strength", format!("strength must be in (0, 1], got {}", self.strength)));
        }
        check_steps(self.num_inference_steps)?;
        if self.steps_to_run() == 0 {
            return Err(Error::request(
                "steps",
                format!(
                    "steps × strength = {} × {} runs no denoising step; raise --steps or --strength",
                    self.num_inference_steps, self.strength
                ),
            ));
        }
        check_guidance(self.guidance_scale)?;
        check_size(self.width, self.height, 8)
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
    pipeline: Rc<VideoToVideoSDPipeline>,
    /// `[B, 77, D]`: the text encoder's last hidden state, [uncond, cond] with guidance.
    prompt_embeds: Tensor<3>,
    denoising: Denoising,
}

impl Stage for Refinement {
    fn denoising(&self) -> &Denoising {
        &self.denoising
    }

    /// The UNet on [uncond, cond], guidance, and the DDIM update.
    fn step(&mut self) -> Result<Tensor<5>> {
        let unet = &self.pipeline.unet;
        let [_, _, f, h, w] = self.denoising.latents().dims();
        let split = unet.config.split_guidance(f, h, w);
        let text = &self.prompt_embeds;
        self.denoising.step(split, &|sample, t, start, batch, deep| {
            unet.forward_cached(sample, &vec![t; batch], text.clone().narrow(0, start, batch), deep)
        })
    }

    fn vae(&self) -> &AutoencoderKL {
        &self.pipeline.vae
    }
}

/// The loaded networks and configs of a `VideoToVideoSDPipeline` folder.
pub struct VideoToVideoSDPipeline {
    pub tokenizer: CLIPTokenizer,
    pub text_encoder: CLIPTextModel,
    pub vae: AutoencoderKL,
    pub unet: UNet3DConditionModel,
    pub scheduler: SchedulerConfig,
}

impl VideoToVideoSDPipeline {
    /// Build every network of a `VideoToVideoSDPipeline` folder, once its files are known to
    /// agree ([`consistency::check_folder`]); config keys this version ignores are added to `notes`.
    pub fn load(source: &mut dyn TensorSource, device: &Device, notes: &mut Vec<String>) -> Result<Self> {
        let class = folder::class_name(source, "unet")?;
        if class != "UNet3DConditionModel" {
            return Err(Error::Config {
                file: "unet/config.json".into(),
                message: format!(
                    "the unet is a {class}; refine needs a VideoToVideoSDPipeline folder (a UNet3DConditionModel, e.g. zeroscope_v2_XL)"
                ),
            });
        }
        let tokenizer = consistency::check_folder(source, PipelineKind::VideoToVideoSD)?;
        Ok(Self {
            tokenizer,
            text_encoder: folder::network(source, "text_encoder", device, notes, CLIPTextModel::load)?,
            vae: folder::network(source, "vae", device, notes, AutoencoderKL::load)?,
            unet: folder::network(source, "unet", device, notes, UNet3DConditionModel::load)?,
            scheduler: folder::config(source, notes)?,
        })
    }

    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config.downscale()
    }

    /// `[F, 4, h, w]` for a video of `frames` × `height` × `width`: the shape of both noises.
    pub fn noise_shape(&self, frames: usize, height: usize, width: usize) -> [usize; 4] {
        let f = self.vae_scale_factor();
        [frames, self.unet.config.in_channels, height / f, width / f]
    }

    /// The draws a refinement of `frames` frames needs, in order: `noise`, then
    /// `vae_sample_noise`.
    pub fn draw_noise(&self, request: &RefineRequest, frames: usize, draws: &mut Draws) -> Result<RefineNoise> {
        let shape = self.noise_shape(frames, request.height, request.width);
        Ok(RefineNoise { noise: draws.draw("noise", shape)?, vae_sample_noise: draws.draw("vae_sample_noise", shape)? })
    }

    /// Resize the frames to the request's size, encode the prompts and every frame, and noise
    /// the latents to the first timestep that runs. `frames`: each `[H, W, 3]` in [0, 1].
    pub fn prepare(
        self: &Rc<Self>,
        request: RefineRequest,
        frames: Vec<Tensor<3>>,
        noise: RefineNoise,
        device: &Device,
    ) -> Result<Refinement> {
        request.validate()?;
        check_size(request.width, request.height, self.vae_scale_factor())?;
        let Some(first) = frames.first() else {
            return Err(Error::request("video", "the video has no frames"));
        };
        if frames.iter().any(|f| f.dims() != first.dims()) {
            return Err(Error::request("video", "every frame of the video must have the same size"));
        }
        let frames = resize_frames(frames, request.height, request.width);
        let shape = self.noise_shape(frames.len(), request.height, request.width);
        for (name, got) in [("noise", noise.noise.dims()), ("vae_sample_noise", noise.vae_sample_noise.dims())] {
            if got != shape {
                return Err(Error::request("noise", format!("noise `{name}` has shape {got:?}, expected {shape:?}")));
            }
        }
        let cfg = request.guidance_scale > 1.0;

        // 1. prompts → last hidden state; [uncond, cond]
        let prompts = guidance_prompts(&request.prompt, &request.negative_prompt, cfg);
        let prompt_embeds = self.text_encoder.encode_prompts(&self.tokenizer, &prompts, device).last_hidden_state;

        // 2. timesteps: the tail that strength selects
        let mut scheduler = self.scheduler.build(request.num_inference_steps)?;
        let timesteps = scheduler.begin_at_strength(request.strength);

        // 3. latents: each frame's posterior sample × scaling_factor, noised to the first timestep
        let [f, c, h, w] = shape;
        let latents: Vec<Tensor<4>> = frames
            .into_iter()
            .enumerate()
            .map(|(i, frame)| self.vae.encode_video_frame(frame, noise.vae_sample_noise.clone().slice([i..i + 1])))
            .collect();
        let (latents, noise) = (Tensor::cat(latents, 0).reshape([1, f, c, h, w]), noise.noise.reshape([1, f, c, h, w]));
        let latents = scheduler.add_noise(latents, noise, timesteps[0])?.swap_dims(1, 2);
        Ok(Refinement {
            pipeline: Rc::clone(self),
            prompt_embeds,
            denoising: Denoising::new(latents, scheduler, timesteps, request.guidance_scale, &Sampling::MODEL),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(request: &RefineRequest) -> (&'static str, String) {
        match request.validate() {
            Err(Error::Request { field, message }) => (field, message),
            other => panic!("expected a request error, got {other:?}"),
        }
    }

    #[test]
    fn prompts_over_2000_characters_are_refused_with_a_sentence() {
        let at_most =
            RefineRequest { prompt: "é".repeat(2_000), negative_prompt: "x".repeat(2_000), ..RefineRequest::DEFAULT };
        assert!(at_most.validate().is_ok());

        let long = RefineRequest { prompt: "a".repeat(2_001), ..RefineRequest::DEFAULT };
        let expected = "the prompt has 2,001 characters; at most 2,000 are read — shorten it";
        assert_eq!(refusal(&long), ("prompt", expected.to_owned()));

        let long = RefineRequest { negative_prompt: "n".repeat(1_000_000), ..RefineRequest::DEFAULT };
        let expected = "the negative prompt has 1,000,000 characters; at most 2,000 are read — shorten it";
        assert_eq!(refusal(&long), ("negative_prompt", expected.to_owned()));
    }
}
