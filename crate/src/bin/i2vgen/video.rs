//! Writing frames: a safetensors tensor for parity checks, a looping GIF, an AV1 WebM (rav1e
//! encodes, libwebm through the `webm` crate writes the container) or an H.264 MP4 (OpenH264
//! encodes, muxide writes the container).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::TensorData;

/// The output formats, from the file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    Gif,
    Webm,
    Mp4,
}

impl Format {
    pub fn of(path: &Path) -> Result<Self> {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        Ok(match extension.as_str() {
            "safetensors" => Self::Safetensors,
            "gif" => Self::Gif,
            "webm" => Self::Webm,
            "mp4" => Self::Mp4,
            _ => bail!("{}: the output must end in .webm, .mp4, .gif or .safetensors", path.display()),
        })
    }
}

/// Check before any work that `path` can be written: a known extension, an existing folder, and
/// permission to write there (a probe file created next to it and removed at once; an existing
/// file opened for writing without truncating it).
pub fn check_output(path: &Path) -> Result<Format> {
    let format = Format::of(path)?;
    if path.is_dir() {
        bail!("{} is a folder; --output must be a file name such as {}/video.webm", path.display(), path.display());
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!("{}: the folder {} does not exist; create it or choose another --output", path.display(), dir.display());
    }
    let cannot_write =
        || format!("cannot write to {}; choose an --output in a folder you can write to", path.display());
    if path.exists() {
        std::fs::OpenOptions::new().write(true).open(path).with_context(cannot_write)?;
    } else {
        let probe = dir.join(format!(".i2vgen-write-check-{}", std::process::id()));
        std::fs::File::create(&probe).with_context(cannot_write)?;
        std::fs::remove_file(&probe).ok();
    }
    Ok(format)
}

/// `frames`: each `[H, W, 3]` in [0, 1].
pub fn write(path: &Path, frames: &[TensorData], fps: usize) -> Result<()> {
    let format = Format::of(path)?;
    let shape = frames[0].shape().to_vec();
    let (height, width) = (shape[0], shape[1]);
    let values: Vec<Vec<f32>> =
        frames.iter().map(|f| f.try_to_vec::<f32>().map_err(|e| anyhow!("{e:?}"))).collect::<Result<_>>()?;
    if format == Format::Safetensors {
        let data = TensorData::new(values.concat(), [frames.len(), height, width, 3]);
        return crate::tensors::write(path, vec![("frames", data)]);
    }
    let rgb: Vec<Vec<u8>> = values.iter().map(|frame| i2vgen::media::video::to_u8(frame)).collect();
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let file = std::io::BufWriter::new(file);
    match format {
        Format::Gif => {
            let mut file = file;
            std::io::Write::write_all(&mut file, &i2vgen::media::video::gif(&rgb, width, height, fps))
                .context("writing the GIF")
        }
        Format::Webm => crate::webm::write(file, &rgb, width, height, fps).context("writing the WebM"),
        _ => mp4(file, &rgb, width, height, fps).context("writing the MP4"),
    }
}

/// H.264 (constrained baseline, every frame coded, one keyframe) in an MP4 with fast start.
fn mp4(file: impl std::io::Write, frames: &[Vec<u8>], width: usize, height: usize, fps: usize) -> Result<()> {
    use openh264::OpenH264API;
    use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, FrameType};
    use openh264::formats::{RgbSliceU8, YUVBuffer};

    // About 0.3 bits per pixel: sharp at 1280×720, 16 fps (≈ 4.4 Mbit/s).
    let bps = (0.3 * (width * height * fps) as f64).max(500_000.0) as u32;
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(bps))
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .skip_frames(false);
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)?;
    let mut muxer = muxide::api::MuxerBuilder::new(file)
        .video(muxide::api::VideoCodec::H264, width as u32, height as u32, fps as f64)
        .with_fast_start(true)
        .build()?;
    for (i, rgb) in frames.iter().enumerate() {
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(rgb, (width, height)));
        let encoded = encoder.encode(&yuv)?;
        let keyframe = matches!(encoded.frame_type(), FrameType::IDR | FrameType::I);
        muxer.write_video(i as f64 / fps as f64, &encoded.to_vec(), keyframe)?;
    }
    muxer.finish()?;
    Ok(())
}
