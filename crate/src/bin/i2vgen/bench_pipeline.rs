//! `i2vgen bench --pipeline --model DIR`: the base pipeline once (load, encode, one denoising step,
//! one decoded frame) with the device's memory pool read after each stage, next to the memory
//! plan's figure for that stage with every network resident (as this run keeps them).
//!
//! burn reports what is in use now and what its pool has reserved; the pool keeps pages once
//! reserved, so *reserved* after a stage is the high-water mark so far (plus page slack).

use std::path::Path;

use anyhow::{Result, anyhow};
use burn::tensor::Device;
use i2vgen::diagnostics::launches::PeakMemory;
use i2vgen::media::image::RgbImage;
use i2vgen::pipelines::memory_plan::{DeviceLimits, Precision, Video};
use i2vgen::pipelines::noise::Draws;
use i2vgen::pipelines::pipeline_i2vgen_xl::GenerationRequest;
use i2vgen::pipelines::sampling::Sampling;
use i2vgen::pipelines::stage::Stage;

#[derive(Clone, Copy)]
pub struct Size {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
}

/// One stage's measurement.
struct Measured {
    stage: &'static str,
    /// The most bytes in use at any kernel launch of the stage ([`PeakMemory`]).
    peak: u64,
    in_use: u64,
    reserved: u64,
}

pub fn run(model: &Path, size: Size, precision: Precision, device: &Device, json: bool) -> Result<()> {
    let sizes = crate::plan::base(model)?;
    let video = Video {
        frames: size.frames as u64,
        height: size.height as u64,
        width: size.width as u64,
        guidance: true,
        deep_cache: false,
    };
    // Every network stays loaded in this run: plan with room for all of them.
    let limits = DeviceLimits { budget_bytes: Some(u64::MAX), ..DeviceLimits::WEBGPU };
    let plan = sizes.plan(video, precision, limits)?;

    let mut measured = Vec::new();
    let watch = PeakMemory::start(device);
    let mut record = |stage: &'static str| -> Result<()> {
        device.sync().map_err(|err| anyhow!("{err:?}"))?;
        let usage = device.memory_pool_usage().ok_or_else(|| anyhow!("this backend reports no memory pool"))?;
        let peak = watch.take();
        measured.push(Measured { stage, peak, in_use: usage.bytes_in_use, reserved: usage.bytes_reserved });
        Ok(())
    };
    let pipeline = crate::model::base(model, device, precision == Precision::PackedF16)?;
    record("weights")?;
    let request = GenerationRequest {
        height: size.height,
        width: size.width,
        num_frames: size.frames,
        num_inference_steps: 1,
        sampling: Sampling::MODEL,
        ..GenerationRequest::DEFAULT
    };
    let gray = RgbImage::new(size.width, size.height, vec![128; size.width * size.height * 3])?;
    let noise = pipeline.draw_noise(&request, &mut Draws::new(0, None, device)?)?;
    let mut generation = pipeline.prepare(request, &gray, noise, device)?;
    record("encoders")?;
    generation.step()?;
    let _ = generation.fence().into_data();
    record("unet")?;
    let _ = generation.decode_frame(0)?.into_data();
    record("vae_decoder")?;

    let planned = |stage: &str| match stage {
        "weights" => Some(plan.weights_bytes),
        "encoders" => plan.stages.iter().filter(|s| s.stage.ends_with("encoder")).map(|s| s.peak_bytes).max(),
        stage => plan.stages.iter().find(|s| s.stage == stage).map(|s| s.peak_bytes),
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "{} frames at {}×{}, {precision:?}: device memory in each stage (peak: the most in use at any kernel \
         launch; in use and reserved after it)",
        size.frames, size.width, size.height
    );
    for m in &measured {
        let p = planned(m.stage).unwrap_or(0);
        println!(
            "  {:<12} peak {:>9.1} MiB  in use {:>9.1} MiB  reserved {:>9.1} MiB  planned peak {:>9.1} MiB  \
             planned/peak {:.2}",
            m.stage,
            mib(m.peak),
            mib(m.in_use),
            mib(m.reserved),
            mib(p),
            p as f64 / m.peak.max(1) as f64
        );
    }
    if json {
        let stages: Vec<serde_json::Value> = measured
            .iter()
            .map(|m| {
                serde_json::json!({
                    "stage": m.stage, "peak_bytes_in_use": m.peak, "bytes_in_use": m.in_use, "bytes_reserved": m.reserved,
                    "planned_peak_bytes": planned(m.stage),
                })
            })
            .collect();
        let report = serde_json::json!({
            "pipeline": "I2VGenXLPipeline", "dtype": precision, "frames": size.frames,
            "height": size.height, "width": size.width, "stages": stages,
            "peak_bytes": measured.iter().map(|m| m.peak).max(),
            "peak_bytes_reserved": measured.iter().map(|m| m.reserved).max(), "planned_peak_bytes": plan.peak_bytes,
        });
        println!("{report}");
    }
    Ok(())
}
