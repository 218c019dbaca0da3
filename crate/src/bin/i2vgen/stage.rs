//! The one loop over a prepared stage (`i2vgen::pipelines::stage::Stage`), with a progress bar.

use anyhow::Result;
use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::pipelines::noise::Draws;
use i2vgen::pipelines::pipeline_video_to_video::RefineRequest;
use i2vgen::pipelines::stage::Stage;

use crate::progress;

/// Run every denoising step, then decode every frame. `on_step(i, prediction)` sees each step's
/// UNet output (for `--trace`). Returns the frames, each `[H, W, 3]` in [0, 1].
pub fn run(stage: &mut dyn Stage, label: &str, mut on_step: impl FnMut(usize, Tensor<5>)) -> Result<Vec<TensorData>> {
    let (steps, frames) = (stage.num_steps(), stage.num_frames());
    let bar = progress::bar((steps + frames) as u64);
    for i in 0..steps {
        bar.set_message(format!("{label} {}/{steps}", i + 1));
        on_step(i, stage.step()?);
        // Reading one value waits for the GPU, so the bar and ETA show real progress.
        let _ = stage.fence().into_data();
        bar.inc(1);
    }
    let mut out = Vec::with_capacity(frames);
    for f in 0..frames {
        bar.set_message(format!("decode {}/{frames}", f + 1));
        out.push(stage.decode_frame(f)?.into_data());
        bar.inc(1);
    }
    bar.finish_with_message(format!("{label}: done"));
    Ok(out)
}

/// The refinement stage on `frames` (each `[H, W, 3]` in [0, 1]): load the refiner, draw its
/// noise (from `seed`, or the `noise_file` bytes), refine and decode.
pub fn refine(
    model: &std::path::Path,
    request: RefineRequest,
    frames: Vec<Tensor<3>>,
    seed: u64,
    noise_file: Option<&[u8]>,
    device: &Device,
    packed_f16: bool,
) -> Result<Vec<TensorData>> {
    let pipeline = crate::model::refiner(model, device, packed_f16)?;
    let noise = pipeline.draw_noise(&request, frames.len(), &mut Draws::new(seed, noise_file, device)?)?;
    eprintln!("refine: encoding the video…");
    let mut refinement = pipeline.prepare(request, frames, noise, device)?;
    run(&mut refinement, "refine", |_, _| {})
}
