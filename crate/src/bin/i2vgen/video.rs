//! Writing frames: a safetensors tensor for parity checks, or a looping GIF.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use burn::tensor::TensorData;

/// `frames`: each `[H, W, 3]` in [0, 1].
pub fn write(path: &Path, frames: &[TensorData], fps: usize) -> Result<()> {
    let shape = frames[0].shape().to_vec();
    let (height, width) = (shape[0], shape[1]);
    let values: Vec<Vec<f32>> = frames
        .iter()
        .map(|f| f.try_to_vec::<f32>().map_err(|e| anyhow!("{e:?}")))
        .collect::<Result<_>>()?;
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) {
        let all: Vec<f32> = values.concat();
        let data = TensorData::new(all, [frames.len(), height, width, 3]);
        return crate::tensors::write(path, vec![("frames", data)]);
    }
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = gif::Encoder::new(std::io::BufWriter::new(file), width as u16, height as u16, &[])
        .context("starting the GIF")?;
    encoder.set_repeat(gif::Repeat::Infinite).context("writing the GIF")?;
    // GIF delays are in 1/100 s.
    let delay = (100.0 / fps as f64).round().max(1.0) as u16;
    for frame in &values {
        let rgb: Vec<u8> = frame.iter().map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect();
        let mut gif_frame = gif::Frame::from_rgb_speed(width as u16, height as u16, &rgb, 10);
        gif_frame.delay = delay;
        encoder.write_frame(&gif_frame).context("writing the GIF")?;
    }
    Ok(())
}
