//! diffusers `pipelines/i2vgen_xl/pipeline_i2vgen_xl.py`: `I2VGenXLPipeline` as a state machine the
//! caller drives — [`I2VGenXLPipeline::prepare`] → [`Stage::step`] × N →
//! [`Stage::decode_frame`] × F — so a CLI can show progress and a browser can await between
//! steps and cancel.

use std::collections::BTreeMap;
use std::rc::Rc;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::loading::config::ConfigFile;
use crate::loading::folder::{self, PipelineKind, TensorSource};
use crate::loading::tokenizer::{CLIPTokenizer, check_prompt};
use crate::media::image::{Filter, RgbImage};
use crate::models::clip::{CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection};
use crate::models::unet_3d_backbone::UNet3DConfig;
use crate::models::unet_i2vgen_xl::{I2VGenXLUNet, I2VGenXLUNetConfig, I2VGenXLUNetInput};
use crate::models::vae::AutoencoderKL;
use crate::pipelines::consistency;
use crate::pipelines::noise::Draws;
use crate::pipelines::sampling::Sampling;
use crate::pipelines::stage::{Denoising, Stage};
use crate::pipelines::{check_fps, check_guidance, check_size, check_steps, guidance_prompts};
use crate::schedulers::SchedulerConfig;
use crate::{Error, Result};

/// `feature_extractor/preprocessor_config.json` (`CLIPImageProcessor`): what the image encoder sees.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CLIPImageProcessorConfig {
    #[serde(default = "defaults::crop_size")]
    pub crop_size: CropSize,
    #[serde(default = "defaults::mean")]
    pub image_mean: [f32; 3],
    #[serde(default = "defaults::std")]
    pub image_std: [f32; 3],
}

/// `crop_size` is `224` in older configs and `{"height": 224, "width": 224}` in newer ones.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
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

#[allow(clippy::excessive_precision)] // transformers' OPENAI_CLIP_MEAN/STD, digit for digit.
mod defaults {
    use super::CropSize;
    pub fn crop_size() -> CropSize {
        CropSize::Square(224)
    }
    pub fn mean() -> [f32; 3] {
        [0.481_454_66, 0.457_827_5, 0.408_210_73]
    }
    pub fn std() -> [f32; 3] {
        [0.268_629_54, 0.261_302_58, 0.275_777_1]
    }
}

impl ConfigFile for CLIPImageProcessorConfig {
    const FILE: &'static str = "feature_extractor/preprocessor_config.json";
    /// The pipeline calls the processor with resize, crop and rescale off: only normalisation is used.
    const IGNORED: &'static [&'static str] = &[
        "do_center_crop",
        "do_convert_rgb",
        "do_normalize",
        "do_rescale",
        "do_resize",
        "feature_extractor_type",
        "image_processor_type",
        "resample",
        "rescale_factor",
        "size",
        "processor_class",
    ];
    fn check_class(_: &BTreeMap<String, Value>) -> Result<()> {
        Ok(())
    }

    /// A crop the image encoder can look at, and a normalisation that divides by no zero.
    fn validate(&self) -> Result<()> {
        use crate::loading::config::{check_positive, check_range, invalid};
        let (width, height) = self.crop_size.width_height();
        for (key, side) in [("crop_size width", width), ("crop_size height", height)] {
            check_range(Self::FILE, key, side, 1..=crate::models::clip::MAX_IMAGE_SIZE)?;
        }
        if let Some(mean) = self.image_mean.iter().find(|m| !m.is_finite()) {
            return Err(invalid(Self::FILE, "image_mean", mean, "every entry must be a number"));
        }
        self.image_std.iter().try_for_each(|&std| check_positive(Self::FILE, "image_std", f64::from(std)))
    }
}

/// Smaller pictures carry nothing to animate: they are refused with a sentence, not upscaled.
pub const MIN_IMAGE_SIDE: usize = 16;

/// The longest clip: I2VGen-XL learned its motion on 16-frame clips and its temporal attention
/// grows with the square of the frames; longer videos come from chaining clips.
pub const MAX_FRAMES: usize = 64;

/// Refuse a first frame too small to animate (callers check it before loading the model too).
pub fn check_image(image: &RgbImage) -> Result<()> {
    if image.width < MIN_IMAGE_SIDE || image.height < MIN_IMAGE_SIDE {
        return Err(Error::request(
            "image",
            format!(
                "the image is {}×{} pixels; use one at least {MIN_IMAGE_SIDE} pixels on each side (ideally near the output size)",
                image.width, image.height
            ),
        ));
    }
    Ok(())
}

/// What to generate. [`GenerationRequest::DEFAULT`] gives I2VGen-XL's defaults (704×1280,
/// 16 frames at 16 fps, 50 steps, guidance 9): the one place the CLI, the page and the widget
/// take them from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub height: usize,
    pub width: usize,
    pub num_frames: usize,
    pub target_fps: usize,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
    pub sampling: Sampling,
}

impl GenerationRequest {
    pub const DEFAULT: Self = Self {
        prompt: String::new(),
        negative_prompt: String::new(),
        height: 704,
        width: 1280,
        num_frames: 16,
        target_fps: 16,
        num_inference_steps: 50,
        guidance_scale: 9.0,
        sampling: Sampling::MODEL,
    };

    /// diffusers' `check_inputs` and then some: every problem as a sentence that says what to do.
    pub fn validate(&self, vae_scale_factor: usize) -> Result<()> {
        check_prompt("prompt", "the prompt", &self.prompt)?;
        check_prompt("negative_prompt", "the negative prompt", &self.negative_prompt)?;
        check_size(self.width, self.height, vae_scale_factor)?;
        if self.num_frames < 2 {
            return Err(Error::request("frames", format!("frames must be at least 2, got {}", self.num_frames)));
        }
        if self.num_frames > MAX_FRAMES {
            return Err(Error::request(
                "frames",
                format!(
                    "frames must be at most {MAX_FRAMES}, got {}; for a longer video chain clips, each starting from the last frame",
                    self.num_frames
                ),
            ));
        }
        check_steps(self.num_inference_steps)?;
        check_guidance(self.guidance_scale)?;
        check_fps(self.target_fps)?;
        self.sampling.validate()
    }
}

/// The random draws of a generation, made by the caller (seeded or given).
pub struct Noise {
    /// The initial latents, `[1, 4, F, h, w]`.
    pub latents: Tensor<5>,
    /// The N(0, 1) draw of the image-latent posterior sample, `[1, 4, h, w]`.
    pub vae_sample_noise: Tensor<4>,
}

/// What the encoders make of a request: the conditioning of every UNet call and the start of
/// the loop. [`I2VGenXLPipeline::encode`] makes it, [`I2VGenXLPipeline::denoise`] starts the run
/// from it: the encoders and the UNet need not be on the GPU at the same time.
pub struct Conditioning {
    target_fps: usize,
    /// `[B, 77, D]`, B = 2 ([uncond, cond]) with guidance, else 1.
    prompt_embeds: Tensor<3>,
    /// `[B, D]`; zeros for the unconditional half.
    image_embeddings: Tensor<2>,
    /// `[B, 4, F, h, w]`: the first-frame latent then mask frames k/(F−1).
    image_latents: Tensor<5>,
    denoising: Denoising,
}

/// A generation in progress: the UNet and VAE it runs, the conditioning, the denoising state.
pub struct Generation {
    unet: Rc<I2VGenXLUNet>,
    vae: Rc<AutoencoderKL>,
    conditioning: Conditioning,
}

impl Generation {
    /// The text conditioning, `[B, 77, D]` ([uncond, cond] with guidance).
    pub fn prompt_embeds(&self) -> &Tensor<3> {
        &self.conditioning.prompt_embeds
    }

    /// The CLIP image conditioning, `[B, D]` (zeros for uncond).
    pub fn image_embeddings(&self) -> &Tensor<2> {
        &self.conditioning.image_embeddings
    }

    /// The first-frame latent and mask frames, `[B, 4, F, h, w]`.
    pub fn image_latents(&self) -> &Tensor<5> {
        &self.conditioning.image_latents
    }
}

impl Stage for Generation {
    fn denoising(&self) -> &Denoising {
        &self.conditioning.denoising
    }

    /// The UNet on [uncond, cond], guidance, and the DDIM update.
    fn step(&mut self) -> Result<Tensor<5>> {
        let unet = &self.unet;
        let c = &mut self.conditioning;
        let [_, _, f, h, w] = c.denoising.latents().dims();
        let split = unet.config.split_guidance(f, h, w);
        let fps = c.target_fps as f32;
        let (text, image_latents, image) = (&c.prompt_embeds, &c.image_latents, &c.image_embeddings);
        c.denoising.step(split, &|sample, t, start, batch, deep| {
            let input = I2VGenXLUNetInput {
                sample,
                timesteps: vec![t; batch],
                encoder_hidden_states: text.clone().narrow(0, start, batch),
                fps: vec![fps; batch],
                image_latents: image_latents.clone().narrow(0, start, batch),
                image_embeddings: image.clone().narrow(0, start, batch),
            };
            unet.forward_cached(input, deep)
        })
    }

    fn vae(&self) -> &AutoencoderKL {
        &self.vae
    }
}

/// The two CLIP encoders: needed only to encode a request, so a GPU short of memory frees them
/// before the UNet runs (the memory plan's `keep_encoders`).
pub struct Encoders {
    pub text_encoder: CLIPTextModel,
    pub image_encoder: CLIPVisionModelWithProjection,
}

/// The networks a run needs at one time: [`Phase::Encode`] the encoders and the VAE,
/// [`Phase::Denoise`] the UNet and the VAE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Encode,
    Denoise,
}

impl Phase {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "encode" => Ok(Self::Encode),
            "denoise" => Ok(Self::Denoise),
            other => Err(Error::request("phase", format!("unknown phase {other:?}; use \"encode\" or \"denoise\""))),
        }
    }

    /// The weight-carrying components this phase needs besides the VAE.
    pub fn components(self) -> &'static [&'static str] {
        match self {
            Self::Encode => &["text_encoder", "image_encoder"],
            Self::Denoise => &["unet"],
        }
    }
}

/// The configs of every network, kept while a network is freed (plans and costs read them).
pub struct NetworkConfigs {
    pub text_encoder: CLIPTextConfig,
    pub image_encoder: CLIPVisionConfig,
    pub unet: UNet3DConfig,
}

/// The loaded networks and configs of an `I2VGenXLPipeline` folder. The encoders and the UNet
/// are optional: a caller short of GPU memory loads each for its [`Phase`] and frees it after;
/// the VAE (small; it encodes the image and decodes the video) stays.
pub struct I2VGenXLPipeline {
    pub tokenizer: CLIPTokenizer,
    pub encoders: Option<Encoders>,
    pub vae: Rc<AutoencoderKL>,
    pub unet: Option<Rc<I2VGenXLUNet>>,
    pub configs: NetworkConfigs,
    pub scheduler: SchedulerConfig,
    pub feature_extractor: CLIPImageProcessorConfig,
}

impl I2VGenXLPipeline {
    /// Build every network of an `I2VGenXLPipeline` folder; config keys this version ignores
    /// are added to `notes`.
    pub fn load(source: &mut dyn TensorSource, device: &Device, notes: &mut Vec<String>) -> Result<Self> {
        Self::load_phases(source, device, notes, &[Phase::Encode, Phase::Denoise])
    }

    /// Build the VAE and the networks of `phases` (the source need hold no other weights), once
    /// every config is read and the files are known to agree ([`consistency::check_folder`]).
    pub fn load_phases(
        source: &mut dyn TensorSource,
        device: &Device,
        notes: &mut Vec<String>,
        phases: &[Phase],
    ) -> Result<Self> {
        let tokenizer = consistency::check_folder(source, PipelineKind::I2VGenXL)?;
        let configs = NetworkConfigs {
            text_encoder: folder::config(source, notes)?,
            image_encoder: folder::config(source, notes)?,
            unet: folder::config::<I2VGenXLUNetConfig>(source, notes)?.unet,
        };
        let mut pipeline = Self {
            tokenizer,
            encoders: None,
            vae: Rc::new(folder::network(source, "vae", device, notes, AutoencoderKL::load)?),
            unet: None,
            configs,
            scheduler: folder::config(source, notes)?,
            feature_extractor: folder::config(source, notes)?,
        };
        for &phase in phases {
            pipeline.load_phase(phase, source, device)?;
        }
        Ok(pipeline)
    }

    /// Build the networks of `phase` from `source` (which need hold only theirs), unless loaded.
    pub fn load_phase(&mut self, phase: Phase, source: &mut dyn TensorSource, device: &Device) -> Result<()> {
        // The configs were read (and their notes given) when the pipeline was built.
        let notes = &mut Vec::new();
        match phase {
            Phase::Encode if self.encoders.is_none() => {
                self.encoders = Some(Encoders {
                    text_encoder: folder::network(source, "text_encoder", device, notes, CLIPTextModel::load)?,
                    image_encoder: folder::network(
                        source,
                        "image_encoder",
                        device,
                        notes,
                        CLIPVisionModelWithProjection::load,
                    )?,
                });
            }
            Phase::Denoise if self.unet.is_none() => {
                self.unet = Some(Rc::new(folder::network(source, "unet", device, notes, I2VGenXLUNet::load)?));
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the networks of `phase` are loaded.
    pub fn has(&self, phase: Phase) -> bool {
        match phase {
            Phase::Encode => self.encoders.is_some(),
            Phase::Denoise => self.unet.is_some(),
        }
    }

    /// Free the networks of `phase` (a run in progress keeps the UNet it holds until it ends).
    pub fn free(&mut self, phase: Phase) {
        match phase {
            Phase::Encode => self.encoders = None,
            Phase::Denoise => self.unet = None,
        }
    }

    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config.downscale()
    }

    /// `[1, 4, F, h, w]` for a request: the shape of `Noise::latents`.
    pub fn latent_shape(&self, request: &GenerationRequest) -> [usize; 5] {
        let f = self.vae_scale_factor();
        [1, self.configs.unet.in_channels, request.num_frames, request.height / f, request.width / f]
    }

    /// The draws a request needs, in diffusers' order: `latents`, then `vae_sample_noise`.
    pub fn draw_noise(&self, request: &GenerationRequest, draws: &mut Draws) -> Result<Noise> {
        let shape = self.latent_shape(request);
        let latents = draws.draw("latents", shape)?;
        let vae_sample_noise = draws.draw("vae_sample_noise", [1, shape[1], shape[3], shape[4]])?;
        Ok(Noise { latents, vae_sample_noise })
    }

    /// [`Self::encode`] then [`Self::denoise`]: both phases' networks must be loaded.
    pub fn prepare(
        &self,
        request: GenerationRequest,
        image: &RgbImage,
        noise: Noise,
        device: &Device,
    ) -> Result<Generation> {
        self.denoise(self.encode(request, image, noise, device)?)
    }

    /// Start the denoising loop of an encoded request on the UNet.
    pub fn denoise(&self, conditioning: Conditioning) -> Result<Generation> {
        let unet = self.unet.clone().ok_or_else(|| not_loaded(Phase::Denoise))?;
        Ok(Generation { unet, vae: Rc::clone(&self.vae), conditioning })
    }

    /// Encode the prompts, the image (twice: for CLIP and for the VAE), and set up the loop.
    pub fn encode(
        &self,
        request: GenerationRequest,
        image: &RgbImage,
        noise: Noise,
        device: &Device,
    ) -> Result<Conditioning> {
        let encoders = self.encoders.as_ref().ok_or_else(|| not_loaded(Phase::Encode))?;
        request.validate(self.vae_scale_factor())?;
        check_image(image)?;
        let shape = self.latent_shape(&request);
        let expect = |name: &str, got: &[usize], want: &[usize]| {
            if got == want {
                Ok(())
            } else {
                Err(Error::request("noise", format!("noise `{name}` has shape {got:?}, expected {want:?}")))
            }
        };
        expect("latents", &noise.latents.dims(), &shape)?;
        expect("vae_sample_noise", &noise.vae_sample_noise.dims(), &[1, shape[1], shape[3], shape[4]])?;
        let cfg = request.guidance_scale > 1.0;
        let (width, height) = (request.width, request.height);

        // 1. prompts → penultimate hidden state, final-normed (clip_skip = 1); [uncond, cond]
        let prompts = guidance_prompts(&request.prompt, &request.negative_prompt, cfg);
        let prompt_embeds = encoders.text_encoder.encode_prompts(&self.tokenizer, &prompts, device).penultimate_normed;

        // 2. CLIP image embedding of the centre square, resized bilinearly; zeros for uncond
        let (cw, ch) = self.feature_extractor.crop_size.width_height();
        let pixels = clip_pixel_values(image, width, &self.feature_extractor);
        let pixels = Tensor::<4>::from_data(TensorData::new(pixels, [1, 3, ch, cw]), device);
        let mut image_embeddings = encoders.image_encoder.forward(pixels);
        if cfg {
            image_embeddings = Tensor::cat(vec![image_embeddings.zeros_like(), image_embeddings], 0);
        }

        // 3. image latents: posterior sample × scaling_factor, then mask frames k/(F−1)
        let planes = vae_pixel_values(image, width, height);
        let frame = Tensor::<4>::from_data(TensorData::new(planes, [1, 3, height, width]), device);
        let latent = self
            .vae
            .encode_within_limit(frame)
            .sample(noise.vae_sample_noise)
            .mul_scalar(self.vae.config.scaling_factor);
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

        // 4. timesteps; latents × init_noise_sigma (1 for every scheduler here)
        let scheduler = request.sampling.scheduler_config(&self.scheduler)?.build(request.num_inference_steps)?;
        let timesteps = scheduler.timesteps().to_vec();
        Ok(Conditioning {
            target_fps: request.target_fps,
            prompt_embeds,
            image_embeddings,
            image_latents,
            denoising: Denoising::new(noise.latents, scheduler, timesteps, request.guidance_scale, &request.sampling),
        })
    }
}

/// The sentence for a phase whose networks were freed.
fn not_loaded(phase: Phase) -> Error {
    Error::request(
        "model",
        format!(
            "the {} networks are not loaded; load them (load_phase) before this call",
            phase.components().join(" and ")
        ),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(request: &GenerationRequest) -> (&'static str, String) {
        match request.validate(8) {
            Err(Error::Request { field, message }) => (field, message),
            other => panic!("expected a request error, got {other:?}"),
        }
    }

    #[test]
    fn prompts_over_2000_characters_are_refused_with_a_sentence() {
        // Characters, not bytes: 2,000 two-byte letters pass.
        let at_most = GenerationRequest {
            prompt: "é".repeat(2_000),
            negative_prompt: "x".repeat(2_000),
            ..GenerationRequest::DEFAULT
        };
        assert!(at_most.validate(8).is_ok());

        let long = GenerationRequest { prompt: "a".repeat(2_001), ..GenerationRequest::DEFAULT };
        let expected = "the prompt has 2,001 characters; at most 2,000 are read — shorten it";
        assert_eq!(refusal(&long), ("prompt", expected.to_owned()));

        let long = GenerationRequest { negative_prompt: "blurry ".repeat(20_000), ..GenerationRequest::DEFAULT };
        let expected = "the negative prompt has 140,000 characters; at most 2,000 are read — shorten it";
        assert_eq!(refusal(&long), ("negative_prompt", expected.to_owned()));
    }
}
