//! A pipeline built from what the JS worker streams in (the library's `StreamedModel`: text files
//! by path, weight tensors one at a time, each on the GPU as it arrives), and the requests of the
//! worker protocol that start a [`Stage`] on it.

use std::rc::Rc;

use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::diagnostics::flops;
use i2vgen::loading::folder::{PipelineKind, StreamedModel};
use i2vgen::media::image::RgbImage;
use i2vgen::models::unet_3d_backbone::UNet3DConfig;
use i2vgen::pipelines::consistency;
use i2vgen::pipelines::memory_plan::{self, Configs, DeviceLimits, MemoryPlan, Parameters, Precision, TIERS, Video};
use i2vgen::pipelines::model_sizes::{ConfigTexts, ModelSizes};
use i2vgen::pipelines::noise::Draws;
use i2vgen::pipelines::pipeline_i2vgen_xl::{Conditioning, GenerationRequest, I2VGenXLPipeline, Phase};
use i2vgen::pipelines::pipeline_video_to_video::{RefineRequest, VideoToVideoSDPipeline};
use i2vgen::pipelines::sampling::Sampling;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::readback::Readback;
use crate::stage::Stage;
use crate::{IntoJs, computes_in_f16, device, packs_f16};

#[wasm_bindgen]
pub struct ModelLoader {
    device: Device,
    model: StreamedModel,
    /// Counted as the tensors arrive, for the memory plan.
    params: Parameters,
}

/// A safetensors dtype name as the JS stream reports it.
fn dtype(name: &str) -> Result<Dtype, JsError> {
    match name {
        "F32" => Ok(Dtype::F32),
        "F16" => Ok(Dtype::F16),
        "BF16" => Ok(Dtype::BF16),
        "I8" => Ok(Dtype::I8),
        other => Err(JsError::new(&format!("a tensor is {other}; weights must be F32, F16, BF16 or I8"))),
    }
}

fn usize_shape(shape: Vec<u32>) -> Vec<usize> {
    shape.into_iter().map(|d| d as usize).collect()
}

#[wasm_bindgen]
impl ModelLoader {
    /// Start a model on the page's WebGPU device.
    pub async fn create() -> Result<ModelLoader, JsError> {
        let device = device().await?;
        let mut model = StreamedModel::new(&device);
        model.set_packed_f16(packs_f16(&device));
        Ok(Self { model, device, params: Parameters::default() })
    }

    /// A text file of the folder by its path (`unet/config.json`, `tokenizer/vocab.json`).
    #[wasm_bindgen(js_name = addFile)]
    pub fn add_file(&mut self, path: &str, text: String) {
        self.model.add_file(path, text);
    }

    /// One weight tensor of a component: safetensors dtype name (`F32`, `F16`, `BF16`, `I8`),
    /// shape and little-endian bytes. It goes to the GPU now.
    #[wasm_bindgen(js_name = addTensor)]
    pub fn add_tensor(
        &mut self,
        component: &str,
        key: &str,
        dtype_name: &str,
        shape: Vec<u32>,
        bytes: &[u8],
    ) -> Result<(), JsError> {
        let shape = usize_shape(shape);
        self.params.add(component, key, &shape);
        self.model.add_tensor(component, key, dtype(dtype_name)?, &shape, bytes).js()
    }

    /// Wait until the GPU has done everything asked of it so far (uploads, packing). The loader
    /// calls it every few hundred MB: tensors arrive from the cache faster than a slow GPU takes
    /// them, and each one waiting in the queue holds its upload's memory.
    pub async fn settle(&self) -> Result<(), JsError> {
        Readback::from(Tensor::<1>::zeros([1], &self.device)).read().await.map(drop)
    }

    /// One tensor of a converted shard, named `<component>/<key>`.
    #[wasm_bindgen(js_name = addShardTensor)]
    pub fn add_shard_tensor(
        &mut self,
        name: &str,
        dtype_name: &str,
        shape: Vec<u32>,
        bytes: &[u8],
    ) -> Result<(), JsError> {
        let shape = usize_shape(shape);
        if let Some((component, key)) = name.split_once('/') {
            self.params.add(component, key, &shape);
        }
        self.model.add_shard_tensor(name, dtype(dtype_name)?, &shape, bytes).js()
    }

    /// Refuse text files of the pipeline `kind` that disagree (a folder mixing two models): once
    /// they are added and before any weight, so it costs no download.
    #[wasm_bindgen(js_name = checkFiles)]
    pub fn check_files(&mut self, kind: &str) -> Result<(), JsError> {
        consistency::check_folder(&mut self.model, PipelineKind::parse(kind).js()?).js().map(drop)
    }

    /// The memory plan of a `generate` request (JSON, with the adapter's limits) from the base
    /// pipeline's configs alone, once they are added and before any weight: a run that cannot fit
    /// this GPU is refused with the plan's sentence before the download starts.
    #[wasm_bindgen(js_name = checkPlan)]
    pub fn check_plan(&self, request: &str) -> Result<(), JsError> {
        let r: GenerateRequest = parse(request, "generate")?;
        let file = |path: &str| {
            self.model.file(path).ok_or_else(|| JsError::new(&format!("{path} must be loaded before the weights")))
        };
        let texts = ConfigTexts {
            text_encoder: file("text_encoder/config.json")?,
            image_encoder: Some(file("image_encoder/config.json")?),
            vae: file("vae/config.json")?,
            unet: file("unet/config.json")?,
        };
        let sizes = ModelSizes::new(&texts, &self.device).js()?;
        sizes.plan(video(&r.request()), precision(&self.device), r.limits()).js().map(drop)
    }

    /// Build the networks of the pipeline `kind` (`"i2vgen"` or `"refiner"`); each checks that
    /// it used every tensor. For `"i2vgen"`, `phases` (`"encode"`, `"denoise"`) says which
    /// networks besides the VAE were streamed in; the others load later ([`Model::load_phase`]).
    pub fn build(mut self, kind: &str, phases: Vec<String>) -> Result<Model, JsError> {
        let mut notes = Vec::new();
        let pipeline = match PipelineKind::parse(kind).js()? {
            PipelineKind::I2VGenXL => {
                let phases = phases.iter().map(|p| Phase::parse(p)).collect::<i2vgen::Result<Vec<_>>>().js()?;
                Pipeline::Base(Box::new(
                    I2VGenXLPipeline::load_phases(&mut self.model, &self.device, &mut notes, &phases).js()?,
                ))
            }
            PipelineKind::VideoToVideoSD => Pipeline::Refiner(Rc::new(
                VideoToVideoSDPipeline::load(&mut self.model, &self.device, &mut notes).js()?,
            )),
        };
        // Hand back the pool's pages the load used for tensors on their way to the networks
        // (each weight arrives as f32 before it is packed or reshaped): burn keeps freed pages.
        self.device.memory_cleanup();
        Ok(Model { pipeline, device: self.device, notes, params: self.params })
    }
}

enum Pipeline {
    Base(Box<I2VGenXLPipeline>),
    Refiner(Rc<VideoToVideoSDPipeline>),
}

/// A loaded pipeline, ready to start runs.
#[wasm_bindgen]
pub struct Model {
    pipeline: Pipeline,
    device: Device,
    notes: Vec<String>,
    params: Parameters,
}

fn model_sampling() -> Sampling {
    Sampling::MODEL
}

/// The worker protocol's `generate` request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GenerateRequest {
    prompt: String,
    #[serde(default)]
    negative_prompt: String,
    width: usize,
    height: usize,
    frames: usize,
    fps: usize,
    steps: usize,
    guidance: f64,
    seed: u64,
    /// Scheduler, spacing, guidance window and cache interval (a preset's, from `defaults()`);
    /// absent: the model's scheduler with guidance and the whole UNet at every step.
    #[serde(default = "model_sampling")]
    sampling: Sampling,
    /// The adapter's `maxBufferSize` and `maxStorageBufferBindingSize` and the page's memory
    /// budget, in bytes, for the memory plan (absent: unlimited).
    #[serde(default)]
    max_buffer_bytes: Option<u64>,
    #[serde(default)]
    max_binding_bytes: Option<u64>,
    #[serde(default)]
    budget_bytes: Option<u64>,
}

/// One size the page offers, and whether the memory plan fits it on this GPU.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SizeTier {
    width: u64,
    height: u64,
    fits: bool,
    peak_bytes: Option<u64>,
    /// Why it does not fit (the plan's sentence).
    reason: Option<String>,
}

/// The worker protocol's `refine` request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RefineOptions {
    prompt: String,
    #[serde(default)]
    negative_prompt: String,
    strength: f64,
    steps: usize,
    guidance: f64,
    width: usize,
    height: usize,
    seed: u64,
}

fn parse<T: for<'de> Deserialize<'de>>(json: &str, what: &str) -> Result<T, JsError> {
    serde_json::from_str(json).map_err(|e| {
        JsError::new(&format!("The {what} request is invalid ({e}); send the fields the worker protocol lists."))
    })
}

/// Check a `generate` request (JSON, as [`Model::generate`] takes it) before any model loads: its
/// field types and the library's checks, so a bad request costs no download. The size is checked
/// against the smallest VAE factor here and against the model's own once it is loaded.
#[wasm_bindgen(js_name = checkRequest)]
pub fn check_request(request: &str) -> Result<(), JsError> {
    parse::<GenerateRequest>(request, "generate")?.checked(1).map(drop)
}

impl GenerateRequest {
    /// The library's request, checked like diffusers' `check_inputs`.
    fn checked(&self, vae_scale_factor: usize) -> Result<GenerationRequest, JsError> {
        let request = self.request();
        request.validate(vae_scale_factor).js()?;
        Ok(request)
    }

    fn limits(&self) -> DeviceLimits {
        DeviceLimits {
            max_buffer_bytes: self.max_buffer_bytes.unwrap_or(u64::MAX),
            max_binding_bytes: self.max_binding_bytes.unwrap_or(u64::MAX),
            budget_bytes: self.budget_bytes,
        }
    }

    fn request(&self) -> GenerationRequest {
        GenerationRequest {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            height: self.height,
            width: self.width,
            num_frames: self.frames,
            target_fps: self.fps,
            num_inference_steps: self.steps,
            guidance_scale: self.guidance,
            sampling: self.sampling.clone(),
        }
    }
}

/// The cost of a run in whole `I2VGenXLUNet` evaluations at batch 1 (a guided reference run of
/// 50 steps is 100): a DeepCache shallow step counts its FLOPs over a full one's at the
/// request's latent size.
pub(crate) fn unet_equivalents(config: &UNet3DConfig, request: &GenerationRequest, vae_scale_factor: usize) -> f64 {
    let (frames, h, w) = (request.num_frames, request.height / vae_scale_factor, request.width / vae_scale_factor);
    let full = flops::i2vgen_xl_unet(config, 1, frames, h, w) as f64;
    let shallow = flops::i2vgen_xl_unet_shallow(config, 1, frames, h, w) as f64;
    let cfg = request.guidance_scale > 1.0;
    request.sampling.unet_equivalents(request.num_inference_steps, cfg, shallow / full.max(1.0))
}

#[wasm_bindgen]
impl Model {
    /// Config keys this version ignores, one sentence per file (for the console).
    #[wasm_bindgen(getter)]
    pub fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// Check the request and the image, and encode prompt and image ([`Model::denoise`] starts
    /// the run from what this returns). The encoders are freed after, unless the memory plan
    /// keeps every network on this GPU. `request` is JSON (`prompt`, `negativePrompt`, `width`, `height`, `frames`, `fps`, `steps`,
    /// `guidance`, `seed`, optionally `sampling`); `image` the bytes of a PNG, JPEG or WebP file;
    /// `noise` optionally a safetensors file with `latents` [1,4,F,h,w] and/or `vae_sample_noise`
    /// [1,4,h,w], the same as `i2vgen generate --noise`.
    pub fn encode(&mut self, request: &str, image: &[u8], noise: Option<Vec<u8>>) -> Result<Encoded, JsError> {
        self.start(request, i2vgen::media::image::decode(image).js(), noise)
    }

    /// [`Model::encode`] from `width`×`height` 8-bit RGBA pixels (alpha is dropped): the last
    /// frame of a video, to continue it.
    #[wasm_bindgen(js_name = encodeFromPixels)]
    pub fn encode_from_pixels(
        &mut self,
        request: &str,
        rgba: &[u8],
        width: usize,
        height: usize,
        noise: Option<Vec<u8>>,
    ) -> Result<Encoded, JsError> {
        let image = if rgba.len() == width * height * 4 {
            RgbImage::new(width, height, rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()).js()
        } else {
            Err(JsError::new(&format!(
                "{width}×{height} RGBA pixels are {} bytes, got {}",
                width * height * 4,
                rgba.len()
            )))
        };
        self.start(request, image, noise)
    }

    /// What a `generate` request (JSON, as [`Model::generate`] takes it) costs before it runs, in
    /// whole UNet evaluations at batch 1: 100 for 50 guided steps with the whole UNet each.
    #[wasm_bindgen(js_name = unetEquivalents)]
    pub fn unet_equivalents(&self, request: &str) -> Result<f64, JsError> {
        let pipeline = self.base()?;
        let request = parse::<GenerateRequest>(request, "generate")?.checked(pipeline.vae_scale_factor())?;
        Ok(unet_equivalents(&pipeline.configs.unet, &request, pipeline.vae_scale_factor()))
    }

    /// Refuse a `generate` request (JSON, with the adapter's limits) that the memory plan says
    /// cannot fit this GPU, with the plan's sentence (the worker answers it as `too-large`).
    #[wasm_bindgen(js_name = checkPlan)]
    pub fn check_plan(&self, request: &str) -> Result<(), JsError> {
        // Only the plan: the request's own problems are reported by `encode`, as what they are.
        let r: GenerateRequest = parse(request, "generate")?;
        self.plan(self.base()?, video(&r.request()), r.limits()).js().map(drop)
    }

    /// The components to stream in before `phase` (`"encode"` or `"denoise"`) can run: none
    /// when its networks are loaded.
    pub fn missing(&self, phase: &str) -> Result<Vec<String>, JsError> {
        let (pipeline, phase) = (self.base()?, Phase::parse(phase).js()?);
        let missing = if pipeline.has(phase) { &[][..] } else { phase.components() };
        Ok(missing.iter().map(|c| c.to_string()).collect())
    }

    /// Build the networks of `phase` from `loader`, into which the worker streamed the
    /// components [`Model::missing`] named (from the cache).
    #[wasm_bindgen(js_name = loadPhase)]
    pub fn load_phase(&mut self, phase: &str, mut loader: ModelLoader) -> Result<(), JsError> {
        let phase = Phase::parse(phase).js()?;
        let pipeline = self.base_mut()?;
        pipeline.load_phase(phase, &mut loader.model, &loader.device).js()?;
        loader.device.memory_cleanup();
        Ok(())
    }

    /// Start the denoising loop of an encoded request. The model lets go of its UNet when the
    /// plan said not to keep it: the run holds it, so it is freed when the run is.
    pub fn denoise(&mut self, encoded: Encoded) -> Result<Stage, JsError> {
        let pipeline = self.base_mut()?;
        let stage = pipeline.denoise(encoded.conditioning).js()?;
        if !encoded.keep {
            pipeline.free(Phase::Denoise);
        }
        Ok(Stage::new(stage, &self.device))
    }

    /// The sizes the page offers (`memory_plan::TIERS`) for a `generate` request (JSON, its size
    /// ignored, its limits used): whether each fits this GPU, its peak bytes, or why not.
    pub fn sizes(&self, request: &str) -> Result<String, JsError> {
        let pipeline = self.base()?;
        let r: GenerateRequest = parse(request, "generate")?;
        let tiers: Vec<SizeTier> = TIERS
            .iter()
            .map(|&(width, height)| {
                let size = Video { width, height, ..video(&r.request()) };
                match self.plan(pipeline, size, r.limits()) {
                    Ok(plan) => SizeTier { width, height, fits: true, peak_bytes: Some(plan.peak_bytes), reason: None },
                    Err(err) => {
                        SizeTier { width, height, fits: false, peak_bytes: None, reason: Some(err.to_string()) }
                    }
                }
            })
            .collect();
        serde_json::to_string(&tiers).map_err(|e| JsError::new(&e.to_string()))
    }

    /// `frames`: `count` frames of `height`×`width`×3 values in [0, 1] (the base video). The
    /// refiner resizes them (bicubic) to the request's size, encodes and re-noises them.
    pub fn refine(
        &self,
        request: &str,
        frames: &[f32],
        count: usize,
        height: usize,
        width: usize,
    ) -> Result<Stage, JsError> {
        let Pipeline::Refiner(pipeline) = &self.pipeline else {
            return Err(JsError::new("this model is not a refiner; load a VideoToVideoSDPipeline to refine"));
        };
        let r: RefineOptions = parse(request, "refine")?;
        let request = RefineRequest {
            prompt: r.prompt,
            negative_prompt: r.negative_prompt,
            strength: r.strength,
            num_inference_steps: r.steps,
            guidance_scale: r.guidance,
            height: r.height,
            width: r.width,
        };
        request.validate().js()?;
        let size = height * width * 3;
        if count == 0 || frames.len() != count * size {
            return Err(JsError::new(&format!(
                "expected {count} frames of {width}×{height}×3 values, got {} values",
                frames.len()
            )));
        }
        let video: Vec<Tensor<3>> = frames
            .chunks(size)
            .map(|f| Tensor::from_data(TensorData::new(f.to_vec(), [height, width, 3]), &self.device))
            .collect();
        let noise = pipeline.draw_noise(&request, count, &mut Draws::new(r.seed, None, &self.device).js()?).js()?;
        Ok(Stage::new(pipeline.prepare(request, video, noise, &self.device).js()?, &self.device))
    }
}

impl Model {
    /// The memory plan of a base-pipeline run on this device; refuses what cannot fit.
    fn plan(&self, pipeline: &I2VGenXLPipeline, video: Video, limits: DeviceLimits) -> i2vgen::Result<MemoryPlan> {
        let configs = Configs {
            text_encoder: &pipeline.configs.text_encoder,
            image_encoder: Some(&pipeline.configs.image_encoder),
            vae: &pipeline.vae.config,
            unet: &pipeline.configs.unet,
        };
        memory_plan::plan(&configs, &self.params, video, precision(&self.device), limits)
    }

    fn base(&self) -> Result<&I2VGenXLPipeline, JsError> {
        match &self.pipeline {
            Pipeline::Base(pipeline) => Ok(pipeline),
            Pipeline::Refiner(_) => Err(not_base()),
        }
    }

    fn base_mut(&mut self) -> Result<&mut I2VGenXLPipeline, JsError> {
        match &mut self.pipeline {
            Pipeline::Base(pipeline) => Ok(pipeline),
            Pipeline::Refiner(_) => Err(not_base()),
        }
    }

    /// Check the request, then the image, and encode them.
    fn start(
        &mut self,
        request: &str,
        image: Result<RgbImage, JsError>,
        noise: Option<Vec<u8>>,
    ) -> Result<Encoded, JsError> {
        let pipeline = self.base()?;
        let r: GenerateRequest = parse(request, "generate")?;
        let request = r.checked(pipeline.vae_scale_factor())?;
        let keep = self.plan(pipeline, video(&request), r.limits()).js()?.keep_encoders;
        let image = image?;
        let noise =
            pipeline.draw_noise(&request, &mut Draws::new(r.seed, noise.as_deref(), &self.device).js()?).js()?;
        let conditioning = pipeline.encode(request, &image, noise, &self.device).js()?;
        if !keep {
            self.base_mut()?.free(Phase::Encode);
            self.device.memory_cleanup();
        }
        Ok(Encoded { conditioning, keep })
    }
}

fn not_base() -> JsError {
    JsError::new("this model is a refiner; load an I2VGenXLPipeline to generate")
}

/// A request encoded by [`Model::encode`], for [`Model::denoise`].
#[wasm_bindgen]
pub struct Encoded {
    conditioning: Conditioning,
    /// The memory plan keeps every network on the GPU between runs.
    keep: bool,
}

/// The sizes the page offers (`memory_plan::TIERS`), JSON `[{width, height}]`, for the form
/// before a model is loaded ([`Model::sizes`] then says which fit).
#[wasm_bindgen(js_name = sizeTiers)]
pub fn size_tiers() -> String {
    let tiers: Vec<_> =
        TIERS.iter().map(|&(width, height)| serde_json::json!({"width": width, "height": height})).collect();
    serde_json::Value::from(tiers).to_string()
}

/// The components whose weights `phase` (`"encode"`, `"denoise"`) of the base pipeline needs
/// besides the VAE: the worker streams the others in first and these when the phase comes.
#[wasm_bindgen(js_name = phaseComponents)]
pub fn phase_components(phase: &str) -> Result<Vec<String>, JsError> {
    Ok(Phase::parse(phase).js()?.components().iter().map(|c| c.to_string()).collect())
}

/// The weights' precision on this device, as the memory plan counts it.
fn precision(device: &Device) -> Precision {
    if computes_in_f16(device) {
        Precision::F16
    } else if packs_f16(device) {
        Precision::PackedF16
    } else {
        Precision::F32
    }
}

/// What the memory plan needs of a request: its size and how it is sampled.
fn video(request: &GenerationRequest) -> Video {
    Video {
        frames: request.num_frames as u64,
        height: request.height as u64,
        width: request.width as u64,
        guidance: request.guidance_scale > 1.0,
        deep_cache: request.sampling.cache_interval > 1,
    }
}
