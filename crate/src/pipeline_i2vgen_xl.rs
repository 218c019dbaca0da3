//! diffusers `pipelines/i2vgen_xl/pipeline_i2vgen_xl.py`: `I2VGenXLPipeline` as a state machine the
//! caller drives — [`I2VGenXLPipeline::prepare`] → [`I2VGenXLPipeline::step`] × N →
//! [`I2VGenXLPipeline::decode_frame`] × F — so a CLI can show progress and a browser can await
//! between steps and cancel.

use std::collections::BTreeMap;

use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use serde::Deserialize;
use serde_json::Value;

use crate::clip::{CLIPTextModel, CLIPVisionModelWithProjection};
use crate::config::ConfigFile;
use crate::image::{Filter, RgbImage};
use crate::scheduler::{DDIMScheduler, DDIMSchedulerConfig};
use crate::tokenizer::CLIPTokenizer;
use crate::unet_i2vgen_xl::{I2VGenXLUNet, I2VGenXLUNetInput};
use crate::vae::AutoencoderKL;
use crate::{Error, Result};

/// `feature_extractor/preprocessor_config.json` (`CLIPImageProcessor`): what the image encoder sees.
#[derive(Clone, Debug, Deserialize)]
pub struct CLIPImageProcessorConfig {
    #[serde(default = "defaults::crop_size")]
    pub crop_size: CropSize,
    #[serde(default = "defaults::mean")]
    pub image_mean: [f32; 3],
    #[serde(default = "defaults::std")]
    pub image_std: [f32; 3],
}

/// `crop_size` is `224` in older configs and `{"height": 224, "width": 224}` in newer ones.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(untagged)]
pub enum CropSize {
    Square(usize),
    Sized { height: usize, width: usize },
}

impl CropSize {
    pub fn width_height(self) -> (usize, usize) {
        match self {
            Self::Square(s) => (s, s),
            Self::Sized { height, width } => (width, height),
        }
    }
}

mod defaults {
    use super::CropSize;
    pub fn crop_size() -> CropSize { CropSize::Square(224) }
    pub fn mean() -> [f32; 3] { [0.481_454_66, 0.457_827_5, 0.408_210_73] }
    pub fn std() -> [f32; 3] { [0.268_629_54, 0.261_302_58, 0.275_777_1] }
}

impl ConfigFile for CLIPImageProcessorConfig {
    const FILE: &'static str = "feature_extractor/preprocessor_config.json";
    /// The pipeline calls the processor with resize, crop and rescale off: only normalisation is used.
    const IGNORED: &'static [&'static str] = &[
        "do_center_crop", "do_convert_rgb", "do_normalize", "do_rescale", "do_resize",
        "feature_extractor_type", "image_processor_type", "resample", "rescale_factor", "size",
        "processor_class",
    ];
    const KNOWN: &'static [&'static str] = &["crop_size", "image_mean", "image_std"];
    fn check_class(_: &BTreeMap<String, Value>) -> Result<()> {
        Ok(())
    }
}

/// Smaller pictures carry nothing to animate: they are refused with a sentence, not upscaled.
pub const MIN_IMAGE_SIDE: usize = 16;

/// What to generate. `Default` gives I2VGen-XL's defaults (704×1280, 16 frames at 16 fps,
/// 50 steps, guidance 9).
#[derive(Clone, Debug)]
pub struct GenerationRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub height: usize,
    pub width: usize,
    pub num_frames: usize,
    pub target_fps: usize,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
}

impl Default for GenerationRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            height: 704,
            width: 1280,
            num_frames: 16,
            target_fps: 16,
            num_inference_steps: 50,
            guidance_scale: 9.0,
        }
    }
}

impl GenerationRequest {
    /// Classifier-free guidance runs when the scale is above 1, as in diffusers.
    pub fn do_classifier_free_guidance(&self) -> bool {
        self.guidance_scale > 1.0
    }

    /// diffusers' `check_inputs` and then some: every problem as a sentence that says what to do.
    pub fn validate(&self, vae_scale_factor: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Request(m));
        let multiple = vae_scale_factor.max(8);
        if self.height == 0 || self.width == 0 || self.height % multiple != 0 || self.width % multiple != 0 {
            return bad(format!(
                "height and width must be positive multiples of {multiple}, got {}×{}; try {}×{}",
                self.width,
                self.height,
                (self.width / multiple).max(1) * multiple,
                (self.height / multiple).max(1) * multiple
            ));
        }
        if self.num_frames < 2 {
            return bad(format!("frames must be at least 2, got {}", self.num_frames));
        }
        if self.num_inference_steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if !(self.guidance_scale >= 0.0 && self.guidance_scale.is_finite()) {
            return bad(format!("guidance must be a number ≥ 0, got {}", self.guidance_scale));
        }
        if self.target_fps == 0 {
            return bad("fps must be at least 1".into());
        }
        Ok(())
    }
}

/// The random draws of a generation, made by the caller (seeded or given).
pub struct Noise {
    /// The initial latents, `[1, 4, F, h, w]`.
    pub latents: Tensor<5>,
    /// The N(0, 1) draw of the image-latent posterior sample, `[1, 4, h, w]`.
    pub vae_sample_noise: Tensor<4>,
}

/// A generation in progress: everything the denoising loop needs, and where it is.
pub struct Generation {
    pub request: GenerationRequest,
    /// `[1, 4, F, h, w]`
    pub latents: Tensor<5>,
    /// `[B, 77, D]`, B = 2 ([uncond, cond]) with guidance, else 1.
    prompt_embeds: Tensor<3>,
    /// `[B, D]`; zeros for the unconditional half.
    image_embeddings: Tensor<2>,
    /// `[B, 4, F, h, w]`: the first-frame latent then mask frames k/(F−1).
    image_latents: Tensor<5>,
    scheduler: DDIMScheduler,
    step: usize,
}

impl Generation {
    pub fn timesteps(&self) -> &[i64] {
        self.scheduler.timesteps()
    }

    /// Steps run so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step == self.scheduler.timesteps().len()
    }

    /// The text conditioning, `[B, 77, D]` ([uncond, cond] with guidance).
    pub fn prompt_embeds(&self) -> &Tensor<3> {
        &self.prompt_embeds
    }

    /// The CLIP image conditioning, `[B, D]` (zeros for uncond).
    pub fn image_embeddings(&self) -> &Tensor<2> {
        &self.image_embeddings
    }

    /// The first-frame latent and mask frames, `[B, 4, F, h, w]`.
    pub fn image_latents(&self) -> &Tensor<5> {
        &self.image_latents
    }

    /// A cheap look at the current latents, without the VAE: each latent pixel's 4 channels
    /// mapped linearly to RGB (the usual approximation for the SD VAE's latent space).
    ///
    /// # Shapes
    /// `[F, h, w, 3]` in [0, 1], at the latent size (1/8 of the output).
    pub fn preview(&self) -> Tensor<4> {
        const LATENT_RGB: [[f32; 3]; 4] =
            [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]];
        let [_, c, f, h, w] = self.latents.dims();
        let matrix = Tensor::<2>::from_data(TensorData::new(LATENT_RGB.concat(), [4, 3]), &self.latents.device());
        let pixels = self.latents.clone().reshape([c, f * h * w]).swap_dims(0, 1).matmul(matrix.narrow(0, 0, c.min(4)));
        pixels.clamp(-1.0, 1.0).add_scalar(1.0).div_scalar(2.0).reshape([f, h, w, 3]).cast(FloatDType::F32)
    }
}

/// The loaded networks and configs of an `I2VGenXLPipeline` folder.
pub struct I2VGenXLPipeline {
    pub tokenizer: CLIPTokenizer,
    pub text_encoder: CLIPTextModel,
    pub image_encoder: CLIPVisionModelWithProjection,
    pub vae: AutoencoderKL,
    pub unet: I2VGenXLUNet,
    pub scheduler: DDIMSchedulerConfig,
    pub feature_extractor: CLIPImageProcessorConfig,
}

impl I2VGenXLPipeline {
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config.downscale()
    }

    /// `[1, 4, F, h, w]` for a request: the shape of `Noise::latents`.
    pub fn latent_shape(&self, request: &GenerationRequest) -> [usize; 5] {
        let f = self.vae_scale_factor();
        [1, self.unet.config.in_channels, request.num_frames, request.height / f, request.width / f]
    }

    /// Encode the prompts, the image (twice: for CLIP and for the VAE), and set up the loop.
    pub fn prepare(&self, request: GenerationRequest, image: &RgbImage, noise: Noise, device: &Device) -> Result<Generation> {
        request.validate(self.vae_scale_factor())?;
        if image.width < MIN_IMAGE_SIDE || image.height < MIN_IMAGE_SIDE {
            return Err(Error::Request(format!(
                "the image is {}×{} pixels; use one at least {MIN_IMAGE_SIDE} pixels on each side (ideally near the output size)",
                image.width,
                image.height
            )));
        }
        let shape = self.latent_shape(&request);
        let expect = |name: &str, got: &[usize], want: &[usize]| {
            if got == want { Ok(()) } else { Err(Error::Request(format!("noise `{name}` has shape {got:?}, expected {want:?}"))) }
        };
        expect("latents", &noise.latents.dims(), &shape)?;
        expect("vae_sample_noise", &noise.vae_sample_noise.dims(), &[1, shape[1], shape[3], shape[4]])?;
        let cfg = request.do_classifier_free_guidance();
        let (width, height) = (request.width, request.height);

        // 1. prompts → penultimate hidden state, final-normed (clip_skip = 1); [uncond, cond]
        let mut prompts = vec![request.prompt.as_str()];
        if cfg {
            prompts.insert(0, request.negative_prompt.as_str());
        }
        let prompt_embeds = self.text_encoder.encode_prompts(&self.tokenizer, &prompts, device).penultimate_normed;

        // 2. CLIP image embedding of the centre square, resized bilinearly; zeros for uncond
        let (cw, ch) = self.feature_extractor.crop_size.width_height();
        let pixels = clip_pixel_values(image, width, &self.feature_extractor);
        let pixels = Tensor::<4>::from_data(TensorData::new(pixels, [1, 3, ch, cw]), device);
        let mut image_embeddings = self.image_encoder.forward(pixels);
        if cfg {
            image_embeddings = Tensor::cat(vec![image_embeddings.zeros_like(), image_embeddings], 0);
        }

        // 3. image latents: posterior sample × scaling_factor, then mask frames k/(F−1)
        let planes = vae_pixel_values(image, width, height);
        let frame = Tensor::<4>::from_data(TensorData::new(planes, [1, 3, height, width]), device);
        let latent = self.vae.encode(frame).sample(noise.vae_sample_noise).mul_scalar(self.vae.config.scaling_factor);
        let [_, c, _, h, w] = shape;
        let f = request.num_frames;
        let mut frames = vec![latent.clone().reshape([1, c, 1, h, w])];
        for k in 1..f {
            let scale = k as f64 / (f - 1) as f64;
            frames.push(Tensor::<5>::ones([1, c, 1, h, w], device).mul_scalar(scale));
        }
        let mut image_latents = Tensor::cat(frames, 2);
        if cfg {
            image_latents = Tensor::cat(vec![image_latents.clone(), image_latents], 0);
        }

        // 4. timesteps; latents × init_noise_sigma (1 for DDIM)
        let mut scheduler = DDIMScheduler::new(self.scheduler.clone())?;
        scheduler.set_timesteps(request.num_inference_steps)?;
        Ok(Generation {
            request,
            latents: noise.latents,
            prompt_embeds,
            image_embeddings,
            image_latents,
            scheduler,
            step: 0,
        })
    }

    /// One denoising step: the UNet on [uncond, cond], guidance, and the DDIM update. Returns
    /// the UNet's prediction before guidance (`[B, 4, F, h, w]`), for parity traces.
    pub fn step(&self, g: &mut Generation) -> Result<Tensor<5>> {
        if g.is_done() {
            return Err(Error::Request("all denoising steps have run; decode the frames".into()));
        }
        let t = g.scheduler.timesteps()[g.step];
        let cfg = g.request.do_classifier_free_guidance();
        let [_, _, f, h, w] = g.latents.dims();
        // Batch elements `start..start + batch` of the conditioning.
        let run = |start: usize, batch: usize| {
            self.unet.forward(I2VGenXLUNetInput {
                sample: Tensor::cat(vec![g.latents.clone(); batch], 0),
                timesteps: vec![t as f32; batch],
                encoder_hidden_states: g.prompt_embeds.clone().narrow(0, start, batch),
                fps: vec![g.request.target_fps as f32; batch],
                image_latents: g.image_latents.clone().narrow(0, start, batch),
                image_embeddings: g.image_embeddings.clone().narrow(0, start, batch),
            })
        };
        let noise_pred = if cfg && self.unet.config.split_guidance(f, h, w) {
            Tensor::cat(vec![run(0, 1), run(1, 1)], 0)
        } else {
            run(0, if cfg { 2 } else { 1 })
        };
        let guided = if cfg {
            let [uncond, text] = <[Tensor<5>; 2]>::try_from(noise_pred.clone().chunk(2, 0)).expect("two halves");
            uncond.clone() + (text - uncond).mul_scalar(g.request.guidance_scale)
        } else {
            noise_pred.clone()
        };
        g.latents = g.scheduler.step(guided, t, g.latents.clone());
        g.step += 1;
        Ok(noise_pred)
    }

    /// Decode one frame of the (finished) latents: `[H, W, 3]` in [0, 1].
    pub fn decode_frame(&self, g: &Generation, frame: usize) -> Tensor<3> {
        self.vae.decode_video_frame(&g.latents, frame)
    }
}

/// The image encoder's input: `_center_crop_wide(image, (width, width))`, PIL bilinear resize to
/// the crop size, then `(x − mean) / std` per channel in f32 like transformers' `normalize`.
///
/// # Shapes
/// → `[3, crop_h, crop_w]` flattened
pub fn clip_pixel_values(image: &RgbImage, width: usize, config: &CLIPImageProcessorConfig) -> Vec<f32> {
    let (cw, ch) = config.crop_size.width_height();
    let square = image.center_crop_wide(width, width).resize(cw, ch, Filter::Bilinear);
    let mut planes = square.to_planes();
    for (c, chunk) in planes.chunks_mut(cw * ch).enumerate() {
        for v in chunk {
            *v = (*v - config.image_mean[c]) / config.image_std[c];
        }
    }
    planes
}

/// The VAE's input: `_center_crop_wide(image, (width, height))` in [-1, 1].
///
/// # Shapes
/// → `[3, height, width]` flattened
pub fn vae_pixel_values(image: &RgbImage, width: usize, height: usize) -> Vec<f32> {
    image.center_crop_wide(width, height).to_planes().into_iter().map(|v| 2.0 * v - 1.0).collect()
}
