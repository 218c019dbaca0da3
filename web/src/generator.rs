//! The pipeline as the worker drives it: prepare → step → … → decode each frame. Every call only
//! queues GPU work and returns; the worker awaits a [`Readback`] between calls, which is where
//! progress is reported and a cancel takes effect.

use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::noise;
use i2vgen::pipeline_i2vgen_xl::{Generation, GenerationRequest, I2VGenXLPipeline, Noise};
use safetensors::SafeTensors;
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::js_error;

/// What the page asks for; the keys of the worker protocol's `generate` payload.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Request {
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
    /// The adapter's `maxStorageBufferBindingSize`: larger buffers cannot be bound.
    #[serde(default)]
    max_binding_bytes: Option<f64>,
}

/// A tensor whose values are on their way back from the GPU.
#[wasm_bindgen]
pub struct Readback {
    tensor: Tensor<1>,
}

#[wasm_bindgen]
impl Readback {
    /// Wait for the GPU and return the values (flat, row-major).
    pub async fn read(self) -> Result<Vec<f32>, JsError> {
        let data = self.tensor.into_data_async().await.map_err(|e| js_error(&format!("reading back from the GPU failed: {e:?}")))?;
        data.try_into_vec::<f32>().map_err(|e| js_error(&format!("unexpected GPU result: {e:?}")))
    }
}

pub(crate) fn readback<const D: usize>(tensor: Tensor<D>) -> Readback {
    let n: usize = tensor.dims().iter().product();
    Readback { tensor: tensor.reshape([n]) }
}

#[wasm_bindgen]
pub struct Generator {
    pipeline: I2VGenXLPipeline,
    device: Device,
    generation: Option<Generation>,
}

impl Generator {
    pub fn new(pipeline: I2VGenXLPipeline, device: Device) -> Self {
        Self { pipeline, device, generation: None }
    }

    fn generation(&self) -> Result<&Generation, JsError> {
        self.generation.as_ref().ok_or_else(|| js_error("no generation is running; call prepare first"))
    }
}

#[wasm_bindgen]
impl Generator {
    /// Check the request and the image, encode prompt and image, and set up the denoising loop.
    /// `request` is JSON (`prompt`, `negativePrompt`, `width`, `height`, `frames`, `fps`, `steps`,
    /// `guidance`, `seed`); `image` the bytes of a PNG, JPEG or WebP file; `noise` optionally a
    /// safetensors file with `latents` [1,4,F,h,w] and/or `vae_sample_noise` [1,4,h,w], the same
    /// as `i2vgen generate --noise`. Returns the number of denoising steps.
    pub fn prepare(&mut self, request: &str, image: &[u8], noise: Option<Vec<u8>>) -> Result<usize, JsError> {
        self.generation = None;
        let r: Request = serde_json::from_str(request).map_err(|e| js_error(&format!("invalid request: {e}")))?;
        let request = GenerationRequest {
            prompt: r.prompt,
            negative_prompt: r.negative_prompt,
            height: r.height,
            width: r.width,
            num_frames: r.frames,
            target_fps: r.fps,
            num_inference_steps: r.steps,
            guidance_scale: r.guidance,
        };
        request.validate(self.pipeline.vae_scale_factor()).map_err(|e| js_error(&e.to_string()))?;
        if let Some(limit) = r.max_binding_bytes {
            // One guidance half at a time is the least the UNet can hold whole.
            let f = self.pipeline.vae_scale_factor();
            let f32_bytes = self.pipeline.unet.config.largest_activation_bytes(1, request.num_frames, request.height / f, request.width / f);
            // Counted in f32; the f16 path (see `device`) stores half.
            let needed = if crate::computes_in_f16(&self.device) { f32_bytes / 2 } else { f32_bytes };
            if needed as f64 > limit {
                let mib = |b: f64| b / f64::from(1u32 << 20);
                return Err(js_error(&format!(
                    "{} frames at {}×{} need a {:.0} MiB GPU buffer, but this GPU allows at most {:.0} MiB in one buffer; choose fewer frames or a smaller size",
                    request.num_frames,
                    request.width,
                    request.height,
                    mib(needed as f64),
                    mib(limit)
                )));
            }
        }
        let image = i2vgen::image::decode(image).map_err(|e| js_error(&e.to_string()))?;
        let shape = self.pipeline.latent_shape(&request);
        let given = noise.as_deref().map(NoiseFile::parse).transpose()?;
        let mut rng = noise::rng(r.seed);
        let latents = given.as_ref().map(|f| f.tensor::<5>("latents", &self.device)).transpose()?.flatten();
        let latents = noise::or_draw(latents, shape, &mut rng, &self.device);
        let vae = given.as_ref().map(|f| f.tensor::<4>("vae_sample_noise", &self.device)).transpose()?.flatten();
        let vae_sample_noise = noise::or_draw(vae, [1, shape[1], shape[3], shape[4]], &mut rng, &self.device);
        let generation = self
            .pipeline
            .prepare(request, &image, Noise { latents, vae_sample_noise }, &self.device)
            .map_err(|e| js_error(&e.to_string()))?;
        let steps = generation.timesteps().len();
        self.generation = Some(generation);
        Ok(steps)
    }

    /// Queue one denoising step; await the returned one-value readback before the next.
    pub fn step(&mut self) -> Result<Readback, JsError> {
        let generation = self.generation.as_mut().ok_or_else(|| js_error("no generation is running; call prepare first"))?;
        self.pipeline.step(generation).map_err(|e| js_error(&e.to_string()))?;
        Ok(readback(generation.latents.clone().slice([0..1, 0..1, 0..1, 0..1, 0..1])))
    }

    /// The current latents as small RGB frames: `[F, h, w, 3]` in [0, 1].
    pub fn preview(&self) -> Result<Readback, JsError> {
        Ok(readback(self.generation()?.preview()))
    }

    /// Decode one frame of the finished latents: `[H, W, 3]` in [0, 1].
    #[wasm_bindgen(js_name = decodeFrame)]
    pub fn decode_frame(&self, frame: usize) -> Result<Readback, JsError> {
        let generation = self.generation()?;
        if !generation.is_done() {
            return Err(js_error("the denoising steps have not all run yet"));
        }
        Ok(readback(self.pipeline.decode_frame(generation, frame)))
    }

    /// Drop the generation in progress; its GPU memory returns to the pool for the next run.
    pub fn cancel(&mut self) {
        self.generation = None;
    }
}

/// A `--noise` safetensors file.
struct NoiseFile<'a>(SafeTensors<'a>);

impl<'a> NoiseFile<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, JsError> {
        SafeTensors::deserialize(bytes).map(Self).map_err(|e| js_error(&format!("the noise file is not a safetensors file: {e}")))
    }

    fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Result<Option<Tensor<D>>, JsError> {
        let Ok(view) = self.0.tensor(name) else { return Ok(None) };
        let values = i2vgen::weights::to_f32(view.dtype(), view.data(), name).map_err(|e| js_error(&e.to_string()))?;
        let shape: [usize; D] = view
            .shape()
            .try_into()
            .map_err(|_| js_error(&format!("noise `{name}` has shape {:?}; it needs {D} dimensions", view.shape())))?;
        Ok(Some(Tensor::from_data(TensorData::new(values, shape), device)))
    }
}

/// 8-bit RGB frames (`count` of `width`×`height`, concatenated) → a looping GIF.
#[wasm_bindgen(js_name = encodeGif)]
pub fn encode_gif(rgb: &[u8], width: usize, height: usize, count: usize, fps: usize) -> Vec<u8> {
    let size = width * height * 3;
    let frames: Vec<Vec<u8>> = rgb.chunks(size).take(count).map(<[u8]>::to_vec).collect();
    i2vgen::video::gif(&frames, width, height, fps)
}

/// Decode an image file only to check it (before any model is loaded): `[width, height]`, or
/// the sentence that says what is wrong with it.
#[wasm_bindgen(js_name = checkImage)]
pub fn check_image(bytes: &[u8]) -> Result<Vec<u32>, JsError> {
    let image = i2vgen::image::decode(bytes).map_err(|e| js_error(&e.to_string()))?;
    Ok(vec![image.width as u32, image.height as u32])
}
