//! The sampling knobs on the tiny model through the library: with `guidance_until = 1` and
//! `cache_interval = 1` a run is bit for bit the plain loop (the UNet on [uncond, cond] at every
//! step, guidance, the DDIM update — what the pipeline did before the knobs existed), on both
//! backends; each knob, when it acts, changes the numbers and the rows the UNet sees.

use std::rc::Rc;

use burn::tensor::{Device, Tensor};
use i2vgen::media::image::RgbImage;
use i2vgen::models::unet_i2vgen_xl::I2VGenXLUNetInput;
use i2vgen::pipelines::defaults;
use i2vgen::pipelines::noise::Draws;
use i2vgen::pipelines::pipeline_i2vgen_xl::{Generation, GenerationRequest, I2VGenXLPipeline};
use i2vgen::pipelines::sampling::{Preset, Sampling, SchedulerKind};
use i2vgen::pipelines::stage::Stage;
use i2vgen::schedulers::SchedulerConfig;
use i2vgen::schedulers::scheduling_ddim::DDIMScheduler;

use crate::common;

fn pipeline(device: &Device) -> Rc<I2VGenXLPipeline> {
    let mut notes = Vec::new();
    Rc::new(I2VGenXLPipeline::load(common::open_fixture("tiny-i2vgen").as_mut(), device, &mut notes).unwrap())
}

pub fn image() -> RgbImage {
    let decoded = image::open(format!("{}/golden/image.png", common::FIXTURES)).unwrap().to_rgb8();
    let (w, h) = decoded.dimensions();
    RgbImage::new(w as usize, h as usize, decoded.into_raw()).unwrap()
}

pub fn request(steps: usize, sampling: Sampling) -> GenerationRequest {
    GenerationRequest { prompt: "a red fox in the snow".into(), num_inference_steps: steps, sampling, ..defaults::DEMO }
}

fn prepare(pipeline: &Rc<I2VGenXLPipeline>, request: GenerationRequest, device: &Device) -> Generation {
    let noise = pipeline.draw_noise(&request, &mut Draws::new(7, None, device).unwrap()).unwrap();
    pipeline.prepare(request, &image(), noise, device).unwrap()
}

fn values(t: Tensor<5>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().unwrap()
}

/// Run every step; the batch of each step's UNet prediction and the final latents.
pub fn run(generation: &mut Generation) -> (Vec<usize>, Vec<f32>) {
    let batches = (0..generation.num_steps()).map(|_| generation.step().unwrap().dims()[0]).collect();
    (batches, values(generation.denoising().latents().clone()))
}

/// The loop as written before the sampling knobs: both branches at every step, DDIM.
fn plain_loop(pipeline: &I2VGenXLPipeline, generation: &Generation, steps: usize) -> Vec<f32> {
    let SchedulerConfig::Ddim(config) = &pipeline.scheduler else { panic!("the tiny model ships DDIM") };
    let mut scheduler = DDIMScheduler::new(config.clone()).unwrap();
    scheduler.set_timesteps(steps).unwrap();
    let mut latents = generation.denoising().latents().clone();
    for &t in scheduler.timesteps() {
        let noise_pred = pipeline.unet.as_ref().expect("loaded").forward(I2VGenXLUNetInput {
            sample: Tensor::cat(vec![latents.clone(); 2], 0),
            timesteps: vec![t as f32; 2],
            encoder_hidden_states: generation.prompt_embeds().clone(),
            fps: vec![defaults::DEMO.target_fps as f32; 2],
            image_latents: generation.image_latents().clone(),
            image_embeddings: generation.image_embeddings().clone(),
        });
        let [uncond, text] = <[Tensor<5>; 2]>::try_from(noise_pred.chunk(2, 0)).unwrap();
        let guided = uncond.clone() + (text - uncond).mul_scalar(defaults::DEMO.guidance_scale);
        let (c_sample, c_model) = scheduler.step_coefficients(t);
        latents = latents.mul_scalar(c_sample as f32) + guided.mul_scalar(c_model as f32);
    }
    values(latents)
}

#[test]
fn full_guidance_and_no_cache_are_bit_identical_to_the_plain_loop() {
    for (name, device) in common::devices() {
        let pipeline = pipeline(&device);
        let knobs = Sampling { guidance_until: 1.0, cache_interval: 1, ..Sampling::MODEL };
        let mut generation = prepare(&pipeline, request(3, knobs), &device);
        let plain = plain_loop(&pipeline, &generation, 3);
        let (batches, latents) = run(&mut generation);
        assert_eq!(batches, [2, 2, 2], "{name}");
        assert!(latents == plain, "{name}: latents differ from the plain loop");
    }
}

#[test]
fn guidance_window_runs_the_conditional_row_alone_after_it() {
    let device = common::cpu();
    let pipeline = pipeline(&device);
    let full = run(&mut prepare(&pipeline, request(4, Sampling::MODEL), &device));
    let half = Sampling { guidance_until: 0.5, ..Sampling::MODEL };
    let (batches, latents) = run(&mut prepare(&pipeline, request(4, half.clone()), &device));
    assert_eq!(batches, [2, 2, 1, 1]);
    assert!(latents != full.1, "the window changed nothing");
    // ceil(0.3 · 4) = 2 guided steps as well; deterministic.
    let again = run(&mut prepare(&pipeline, request(4, Sampling { guidance_until: 0.3, ..half }), &device));
    assert_eq!(again.0, [2, 2, 1, 1]);
    assert!(again.1 == latents);
}

#[test]
fn step_caching_reuses_deep_features_between_full_steps() {
    for (name, device) in common::devices() {
        let pipeline = pipeline(&device);
        let full = run(&mut prepare(&pipeline, request(4, Sampling::MODEL), &device)).1;
        let cached = Sampling { cache_interval: 2, ..Sampling::MODEL };
        let (batches, latents) = run(&mut prepare(&pipeline, request(4, cached.clone()), &device));
        assert_eq!(batches, [2, 2, 2, 2], "{name}");
        assert!(latents != full, "{name}: caching changed nothing");
        let difference = common::max_abs_diff(&latents, &full);
        assert!(difference < 1.0, "{name}: cached run strays by {difference}");
        // With the guidance window too: the cond row's cache outlives the uncond row.
        let both = Sampling { cache_interval: 3, guidance_until: 0.5, ..cached };
        let (batches, _) = run(&mut prepare(&pipeline, request(5, both), &device));
        assert_eq!(batches, [2, 2, 2, 1, 1], "{name}");
    }
}

#[test]
fn presets_run_their_schedulers() {
    let device = common::cpu();
    let pipeline = pipeline(&device);
    for preset in [Preset::Balanced, Preset::Fast] {
        let mut generation = prepare(&pipeline, request(6, preset.sampling()), &device);
        // DPM-Solver++ with trailing spacing starts at the last training timestep.
        assert_eq!(generation.denoising().timesteps()[0], 999, "{preset:?}");
        let (_, latents) = run(&mut generation);
        assert!(latents.iter().all(|v| v.is_finite()), "{preset:?}");
    }
    let unipc = Sampling { scheduler: Some(SchedulerKind::UniPCMultistep), ..Sampling::MODEL };
    let (_, latents) = run(&mut prepare(&pipeline, request(4, unipc), &device));
    assert!(latents.iter().all(|v| v.is_finite()));
}

#[test]
fn bad_knobs_are_sentences() {
    let device = common::cpu();
    let pipeline = pipeline(&device);
    for (sampling, expect) in [
        (Sampling { guidance_until: 0.0, ..Sampling::MODEL }, "guidance_until must be in (0, 1]"),
        (Sampling { guidance_until: 1.5, ..Sampling::MODEL }, "guidance_until must be in (0, 1]"),
        (Sampling { cache_interval: 0, ..Sampling::MODEL }, "cache_interval must be at least 1"),
    ] {
        let request = request(3, sampling);
        let noise = pipeline.draw_noise(&request, &mut Draws::new(7, None, &device).unwrap()).unwrap();
        let error = pipeline.prepare(request, &image(), noise, &device).err().expect("refused").to_string();
        assert!(error.contains(expect), "{error}");
    }
}
