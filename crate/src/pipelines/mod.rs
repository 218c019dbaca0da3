//! The two stages of the cascade as state machines the caller drives: prepare → step × N →
//! decode frame × F, through one [`stage::Stage`] shape so a caller writes its loop once.

pub mod chain;
pub mod consistency;
pub mod memory_plan;
pub mod model_sizes;
pub mod noise;
pub mod pipeline_i2vgen_xl;
pub mod pipeline_video_to_video;
pub mod sampling;
pub mod stage;

use crate::{Error, Result};

/// The longest output side: well above the model's 1280×704 and the refiner's 1280×720, and a
/// bound on the work a typo (12800) asks for before the memory plan or a GPU limit is consulted.
pub const MAX_SIDE: usize = 2048;

/// The most denoising steps: the schedulers' training grid has 1000 timesteps
/// (`num_train_timesteps`), and a schedule cannot be finer than its grid.
pub const MAX_STEPS: usize = 1000;

/// Check an output size: both sides positive multiples of `multiple` (the VAE's down-sampling,
/// at least 8) and at most [`MAX_SIDE`]; the sentence suggests the nearest smaller size that is.
pub fn check_size(width: usize, height: usize, multiple: usize) -> Result<()> {
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(Error::request(
            "size",
            format!(
                "the size {width}×{height} is too large: width and height must be at most {MAX_SIDE}; try {}×{}",
                width.min(MAX_SIDE),
                height.min(MAX_SIDE)
            ),
        ));
    }
    let multiple = multiple.max(8);
    if width == 0 || height == 0 || !width.is_multiple_of(multiple) || !height.is_multiple_of(multiple) {
        return Err(Error::request(
            "size",
            format!(
                "the size {width}×{height} is not a multiple of {multiple}: height and width must be positive \
                 multiples of {multiple}; try {}×{}",
                (width / multiple).max(1) * multiple,
                (height / multiple).max(1) * multiple
            ),
        ));
    }
    Ok(())
}

/// A number of denoising steps a schedule can have: 1 to [`MAX_STEPS`].
fn check_steps(steps: usize) -> Result<()> {
    if !(1..=MAX_STEPS).contains(&steps) {
        return Err(Error::request("steps", format!("steps must be between 1 and {MAX_STEPS}, got {steps}")));
    }
    Ok(())
}

/// The highest frame rate: screens show at most 60 frames per second, and the rate is also the
/// model's fps conditioning, learned on ordinary video rates (the MP4 muxer fails far above).
pub const MAX_FPS: usize = 60;

/// A frame rate for the fps conditioning and the written video: 1 to [`MAX_FPS`].
pub fn check_fps(fps: usize) -> Result<()> {
    if !(1..=MAX_FPS).contains(&fps) {
        return Err(Error::request("fps", format!("fps must be between 1 and {MAX_FPS}, got {fps}")));
    }
    Ok(())
}

/// A guidance scale diffusers accepts: a finite number ≥ 0.
fn check_guidance(guidance_scale: f64) -> Result<()> {
    if !(guidance_scale >= 0.0 && guidance_scale.is_finite()) {
        return Err(Error::request("guidance", format!("guidance must be a number ≥ 0, got {guidance_scale}")));
    }
    Ok(())
}

/// The prompts the text encoder sees, in diffusers' order: `[negative, prompt]` with
/// classifier-free guidance, else `[prompt]`.
fn guidance_prompts<'a>(prompt: &'a str, negative_prompt: &'a str, guidance: bool) -> Vec<&'a str> {
    if guidance { vec![negative_prompt, prompt] } else { vec![prompt] }
}

/// Request defaults by purpose, the one place the CLI, the page and the widget take them from
/// (the page gets them through the wasm façade's `defaults()`).
pub mod defaults {
    use super::pipeline_i2vgen_xl::GenerationRequest;
    use super::pipeline_video_to_video::RefineRequest;
    use super::sampling::{Preset, Sampling};

    /// The seed of a run whose caller names none.
    pub const SEED: u64 = 8888;

    /// I2VGen-XL's own defaults (diffusers'): 1280×704, 16 frames, 50 steps, guidance 9.
    pub const REFERENCE: GenerationRequest = GenerationRequest::DEFAULT;

    /// What a laptop GPU can run: 448×256 with the balanced preset (DPM-Solver++ 2M, 25
    /// trailing steps), otherwise the reference.
    pub const BROWSER: GenerationRequest = GenerationRequest {
        prompt: String::new(),
        negative_prompt: String::new(),
        height: 256,
        width: 448,
        num_frames: 16,
        target_fps: 16,
        num_inference_steps: Preset::Balanced.num_inference_steps(),
        guidance_scale: 9.0,
        sampling: Preset::Balanced.sampling(),
    };

    /// The bundled tiny demo model: 40×24, 4 frames, 3 steps (it runs in seconds).
    pub const DEMO: GenerationRequest = GenerationRequest {
        prompt: String::new(),
        negative_prompt: String::new(),
        height: 24,
        width: 40,
        num_frames: 4,
        target_fps: 16,
        num_inference_steps: 3,
        guidance_scale: 9.0,
        sampling: Sampling::MODEL,
    };

    /// The refinement stage: the pipeline's defaults at 1280×720.
    pub const REFINE: RefineRequest = RefineRequest::DEFAULT;

    /// The demo refiner: 80×48, 5 steps.
    pub const REFINE_DEMO: RefineRequest = RefineRequest {
        prompt: String::new(),
        negative_prompt: String::new(),
        strength: 0.6,
        num_inference_steps: 5,
        guidance_scale: 15.0,
        height: 48,
        width: 80,
    };
}
