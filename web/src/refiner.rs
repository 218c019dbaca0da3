//! The refinement stage as the worker drives it (VideoToVideoSDPipeline): the base video comes
//! back in as values, is resized to the refinement size, re-noised and denoised step by step.

use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::noise;
use i2vgen::pipeline_video_to_video::{RefineNoise, RefineRequest, Refinement, VideoToVideoSDPipeline, resize_frames};
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::generator::{Readback, readback};
use crate::js_error;

/// The `refine` part of the worker protocol's `generate` payload.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Request {
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

#[wasm_bindgen]
pub struct Refiner {
    pipeline: VideoToVideoSDPipeline,
    device: Device,
    refinement: Option<Refinement>,
}

impl Refiner {
    pub fn new(pipeline: VideoToVideoSDPipeline, device: Device) -> Self {
        Self { pipeline, device, refinement: None }
    }
}

#[wasm_bindgen]
impl Refiner {
    /// `frames`: `count` frames of `height`×`width`×3 values in [0, 1] (the base video). Resizes
    /// them (bicubic) to the request's size, encodes, re-noises; returns the steps that will run.
    pub fn prepare(&mut self, request: &str, frames: &[f32], count: usize, height: usize, width: usize) -> Result<usize, JsError> {
        self.refinement = None;
        let r: Request = serde_json::from_str(request).map_err(|e| js_error(&format!("invalid refine request: {e}")))?;
        if r.height == 0 || r.width == 0 || r.height % 8 != 0 || r.width % 8 != 0 {
            return Err(js_error(&format!("the refined size must be positive multiples of 8, got {}×{}", r.width, r.height)));
        }
        let size = height * width * 3;
        if count == 0 || frames.len() != count * size {
            return Err(js_error(&format!("expected {count} frames of {width}×{height}×3 values, got {} values", frames.len())));
        }
        let video: Vec<Tensor<3>> = frames
            .chunks(size)
            .map(|f| Tensor::from_data(TensorData::new(f.to_vec(), [height, width, 3]), &self.device))
            .collect();
        let video = resize_frames(video, r.height, r.width);
        let shape = self.pipeline.noise_shape(count, r.height, r.width);
        let mut rng = noise::rng(r.seed);
        let noise = noise::or_draw(None, shape, &mut rng, &self.device);
        let vae_sample_noise = noise::or_draw(None, shape, &mut rng, &self.device);
        let request = RefineRequest {
            prompt: r.prompt,
            negative_prompt: r.negative_prompt,
            strength: r.strength,
            num_inference_steps: r.steps,
            guidance_scale: r.guidance,
        };
        let steps = request.steps_to_run();
        let refinement = self
            .pipeline
            .prepare(request, &video, RefineNoise { noise, vae_sample_noise }, &self.device)
            .map_err(|e| js_error(&e.to_string()))?;
        self.refinement = Some(refinement);
        Ok(steps)
    }

    /// Queue one refinement step; await the returned one-value readback before the next.
    pub fn step(&mut self) -> Result<Readback, JsError> {
        let refinement = self.refinement.as_mut().ok_or_else(|| js_error("no refinement is running; call prepare first"))?;
        self.pipeline.step(refinement).map_err(|e| js_error(&e.to_string()))?;
        Ok(readback(refinement.latents.clone().slice([0..1, 0..1, 0..1, 0..1, 0..1])))
    }

    /// Decode one refined frame: `[H, W, 3]` in [0, 1].
    #[wasm_bindgen(js_name = decodeFrame)]
    pub fn decode_frame(&self, frame: usize) -> Result<Readback, JsError> {
        let refinement = self.refinement.as_ref().ok_or_else(|| js_error("no refinement is running; call prepare first"))?;
        if !refinement.is_done() {
            return Err(js_error("the refinement steps have not all run yet"));
        }
        Ok(readback(self.pipeline.decode_frame(refinement, frame)))
    }

    /// Drop the refinement in progress and its GPU memory.
    pub fn cancel(&mut self) {
        self.refinement = None;
    }
}
