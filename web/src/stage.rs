//! A prepared run of either pipeline as the worker drives it: `step` → await the readback → …,
//! then `decodeFrame` for each frame. Every call only queues GPU work and returns; the worker
//! awaits a [`Readback`] between calls, which is where progress is reported and a cancel takes
//! effect. Freeing the stage returns its GPU memory to the pool.

use burn::tensor::Device;
use i2vgen::pipelines::stage::Stage as PipelineStage;
use wasm_bindgen::prelude::*;

use crate::IntoJs;
use crate::readback::Readback;

#[wasm_bindgen]
pub struct Stage {
    run: Box<dyn PipelineStage>,
    device: Device,
}

impl Stage {
    pub fn new(run: impl PipelineStage + 'static, device: &Device) -> Self {
        Self { run: Box::new(run), device: device.clone() }
    }
}

/// A finished run may hold the last reference to a network the model let go of (the UNet when
/// the memory plan frees it): its pages go back to the device, not only to burn's pool.
impl Drop for Stage {
    fn drop(&mut self) {
        self.device.memory_cleanup();
    }
}

#[wasm_bindgen]
impl Stage {
    /// Denoising steps this run makes.
    #[wasm_bindgen(getter)]
    pub fn steps(&self) -> usize {
        self.run.num_steps()
    }

    /// Frames it decodes.
    #[wasm_bindgen(getter)]
    pub fn frames(&self) -> usize {
        self.run.num_frames()
    }

    /// Queue one denoising step; await the returned one-value readback before the next.
    pub fn step(&mut self) -> Result<Readback, JsError> {
        self.run.step().js()?;
        Ok(self.run.fence().into())
    }

    /// The current latents as small RGB frames: `[F, h, w, 3]` in [0, 1] (see `shape`).
    pub fn preview(&self) -> Readback {
        self.run.preview().into()
    }

    /// Decode one frame of the finished latents: `[H, W, 3]` in [0, 1].
    #[wasm_bindgen(js_name = decodeFrame)]
    pub fn decode_frame(&self, frame: usize) -> Result<Readback, JsError> {
        Ok(self.run.decode_frame(frame).js()?.into())
    }
}
