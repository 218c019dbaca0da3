//! `i2vgen compare A B`: per-frame PSNR and SSIM and a temporal-difference score between two
//! videos, to judge a faster sampler against the reference one. Reads `.safetensors` frames, GIF,
//! a folder of PNGs, H.264 MP4 (OpenH264) and, through an `ffmpeg` on the PATH, WebM.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::{Tensor, TensorData};
use i2vgen::media::quality::{self, Comparison, Frame};

use crate::tensors::TensorFile;

#[derive(clap::Args)]
pub struct Args {
    /// The reference video: `.safetensors` (`frames` [F,H,W,3] in [0,1], as `generate` writes),
    /// `.gif`, `.mp4` (H.264), `.webm` (needs ffmpeg) or a folder of numbered PNGs.
    a: PathBuf,
    /// The video to judge, in any of the same formats; same frame count and size as A.
    b: PathBuf,
    /// Print one JSON object (frames, psnr, ssim, mean_psnr, mean_ssim, temporal_difference)
    /// instead of the table; an infinite PSNR (identical frames) is written as null.
    #[arg(long)]
    json: bool,
}

/// Decoded frames, each `[height, width, 3]` in [0, 1], one after another.
struct Video {
    width: usize,
    height: usize,
    values: Vec<f32>,
}

impl Video {
    /// `rgb`: 8-bit frames of `width * height * 3` bytes each, concatenated.
    fn from_u8(rgb: &[u8], width: usize, height: usize) -> Self {
        Self { width, height, values: rgb.iter().map(|&v| f32::from(v) / 255.0).collect() }
    }

    fn frames(&self) -> Result<Vec<Frame<'_>>> {
        let frame = (self.width * self.height * 3).max(1);
        let frames = self.values.chunks(frame).map(|rgb| Frame::new(self.width, self.height, rgb));
        frames.collect::<i2vgen::Result<_>>().map_err(Into::into)
    }

    fn count(&self) -> usize {
        self.values.len() / (self.width * self.height * 3).max(1)
    }
}

pub fn run(args: Args) -> Result<()> {
    let (a, b) = (read(&args.a)?, read(&args.b)?);
    let (frames_a, frames_b) = (a.frames()?, b.frames()?);
    let Comparison { psnr, ssim, mean_psnr, mean_ssim, temporal_difference } =
        quality::compare(&frames_a, &frames_b)
            .with_context(|| format!("comparing {} with {}", args.a.display(), args.b.display()))?;
    if args.json {
        // JSON has no infinity: identical frames (PSNR = inf) are written as null.
        let finite = |v: f64| if v.is_finite() { Some(v) } else { None };
        let report = serde_json::json!({
            "frames": psnr.len(),
            "psnr": psnr.iter().map(|&v| finite(v)).collect::<Vec<_>>(),
            "ssim": ssim,
            "mean_psnr": finite(mean_psnr),
            "mean_ssim": mean_ssim,
            "temporal_difference": temporal_difference,
        });
        println!("{}", serde_json::to_string(&report).context("encoding JSON")?);
        return Ok(());
    }
    println!("A: {} ({} frames, {}×{})", args.a.display(), a.count(), a.width, a.height);
    println!("B: {} ({} frames, {}×{})", args.b.display(), b.count(), b.width, b.height);
    println!("frame  PSNR (dB)     SSIM");
    for (i, (p, s)) in psnr.iter().zip(&ssim).enumerate() {
        println!("{i:>5}  {p:>9.3}  {s:>7.5}");
    }
    println!("{:>5}  {mean_psnr:>9.3}  {mean_ssim:>7.5}", "mean");
    println!("temporal difference: {temporal_difference:.6} (mean |motion A − motion B| per frame pair, 0 = same)");
    Ok(())
}

/// A video by its extension, or a folder of PNG frames.
fn read(path: &Path) -> Result<Video> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    if path.is_dir() {
        return tensors(path);
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "safetensors" => safetensors(path),
        "gif" => tensors(path),
        "mp4" => mp4(path),
        "webm" => ffmpeg(path),
        _ => bail!("{}: compare reads .safetensors, .gif, .mp4, .webm or a folder of numbered PNGs", path.display()),
    }
}

/// GIF and PNG folders through `--video`'s reader (GIF frames composed on the canvas, PNGs in the
/// order of the number in their names), read back from the CPU device.
fn tensors(path: &Path) -> Result<Video> {
    #[allow(deprecated)] // NdArray is our CPU reference backend.
    let device = burn::tensor::Device::ndarray();
    let frames = crate::inputs::read_video(path, &device)?;
    from_tensors(path, frames)
}

fn from_tensors(path: &Path, frames: Vec<Tensor<3>>) -> Result<Video> {
    let Some(first) = frames.first() else { bail!("{} holds no frames", path.display()) };
    let [height, width, _] = first.dims();
    let mut values = Vec::with_capacity(frames.len() * height * width * 3);
    for (i, frame) in frames.into_iter().enumerate() {
        let [h, w, _] = frame.dims();
        if (w, h) != (width, height) {
            bail!("{}: frame {i} is {w}×{h} but frame 0 is {width}×{height}", path.display());
        }
        values.extend(to_vec(frame.into_data())?);
    }
    Ok(Video { width, height, values })
}

fn to_vec(data: TensorData) -> Result<Vec<f32>> {
    data.convert::<f32>().try_to_vec::<f32>().map_err(|e| anyhow!("{e:?}"))
}

/// `frames` [F, H, W, 3] in [0, 1] (what `generate --output x.safetensors` writes), or `video`
/// (what `refine --video` reads).
fn safetensors(path: &Path) -> Result<Video> {
    let file = TensorFile::read(path)?;
    let name = if file.dims("frames").is_err() && file.dims("video").is_ok() { "video" } else { "frames" };
    #[allow(deprecated)] // NdArray is our CPU reference backend.
    let device = burn::tensor::Device::ndarray();
    let tensor = file.float::<4>(name, &device)?;
    let [_, height, width, channels] = tensor.dims();
    if channels != 3 || width == 0 || height == 0 {
        bail!("`{name}` in {} has shape {:?}; expected [F, H, W, 3] in [0, 1]", path.display(), tensor.dims());
    }
    Ok(Video { width, height, values: to_vec(tensor.into_data())? })
}

/// H.264 MP4: the `mp4` crate demuxes, OpenH264 decodes. Other codecs go through ffmpeg.
fn mp4(path: &Path) -> Result<Video> {
    use openh264::formats::YUVSource;

    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let size = file.metadata().with_context(|| format!("cannot read {}", path.display()))?.len();
    let mut reader = mp4::Mp4Reader::read_header(std::io::BufReader::new(file), size)
        .map_err(|err| anyhow!("{} is not a readable MP4 file ({err})", path.display()))?;
    let track = reader
        .tracks()
        .values()
        .filter(|t| matches!(t.track_type(), Ok(mp4::TrackType::Video)))
        .min_by_key(|t| t.track_id())
        .with_context(|| format!("{} has no video track", path.display()))?;
    if !matches!(track.media_type(), Ok(mp4::MediaType::H264)) {
        return ffmpeg(path);
    }
    let (id, count) = (track.track_id(), track.sample_count());
    // avcC holds the parameter sets; samples hold 4-byte-length-prefixed NAL units.
    let start_code = |nal: &[u8]| [&[0, 0, 0, 1][..], nal].concat();
    let damaged = || format!("{} holds damaged H.264 data", path.display());
    let undecodable = || {
        format!(
            "OpenH264 cannot decode {} (it reads baseline-profile H.264, as `generate` writes); \
             export GIF, PNG frames or safetensors instead",
            path.display()
        )
    };
    let mut stream = [
        start_code(track.sequence_parameter_set().with_context(damaged)?),
        start_code(track.picture_parameter_set().with_context(damaged)?),
    ]
    .concat();
    let mut decoder = openh264::decoder::Decoder::new().context("starting the H.264 decoder")?;
    let mut rgb = Vec::new();
    let mut size: Option<(usize, usize)> = None;
    let mut keep = |yuv: &openh264::decoder::DecodedYUV, rgb: &mut Vec<u8>| -> Result<()> {
        let (w, h) = yuv.dimensions();
        if *size.get_or_insert((w, h)) != (w, h) {
            bail!("{} changes its frame size mid-stream; compare needs one size", path.display());
        }
        let start = rgb.len();
        rgb.resize(start + w * h * 3, 0);
        yuv.write_rgb8(&mut rgb[start..]);
        Ok(())
    };
    for i in 1..=count {
        let sample = reader.read_sample(id, i).with_context(damaged)?.with_context(damaged)?;
        let mut rest = &sample.bytes[..];
        while rest.len() >= 4 {
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let nal = rest.get(4..4 + n).with_context(damaged)?;
            stream.extend(start_code(nal));
            rest = &rest[4 + n..];
        }
        if let Some(yuv) = decoder.decode(&stream).with_context(undecodable)? {
            keep(&yuv, &mut rgb)?;
        }
        stream.clear();
    }
    for yuv in decoder.flush_remaining().with_context(undecodable)? {
        keep(&yuv, &mut rgb)?;
    }
    let Some((width, height)) = size else { bail!("{} has no decodable video frames", path.display()) };
    Ok(Video::from_u8(&rgb, width, height))
}

const NO_FFMPEG: &str = "needs ffmpeg and ffprobe on the PATH to decode it (no pure-Rust decoder here); \
    install ffmpeg, or export the videos as GIF, PNG frames or safetensors";

/// Any format ffmpeg reads (WebM/AV1 here): ffprobe gives the size, ffmpeg the raw RGB frames.
fn ffmpeg(path: &Path) -> Result<Video> {
    let run = |program: &str, before: &[&str], after: &[&str]| -> Result<Vec<u8>> {
        let out = match Command::new(program).args(before).arg(path).args(after).output() {
            Err(err) if err.kind() == ErrorKind::NotFound => bail!("{} {NO_FFMPEG}", path.display()),
            other => other.with_context(|| format!("cannot run {program}"))?,
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let reason = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message").trim();
            bail!("{program} cannot decode {}: {reason}", path.display());
        }
        Ok(out.stdout)
    };
    let probe = ["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height"];
    let probe = run("ffprobe", &probe, &["-of", "csv=p=0"])?;
    let probe = String::from_utf8_lossy(&probe);
    let size: Vec<usize> =
        probe.lines().next().unwrap_or("").split(',').filter_map(|v| v.trim().parse().ok()).take(2).collect();
    let [width, height] = size[..] else { bail!("ffprobe finds no video stream in {}", path.display()) };
    if width == 0 || height == 0 {
        bail!("ffprobe reports a {width}×{height} video in {}", path.display());
    }
    let rgb = run(
        "ffmpeg",
        &["-nostdin", "-v", "error", "-i"],
        &["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
    )?;
    if rgb.is_empty() || rgb.len() % (width * height * 3) != 0 {
        bail!("ffmpeg decoded {} bytes from {}, not whole {width}×{height} RGB frames", rgb.len(), path.display());
    }
    Ok(Video::from_u8(&rgb, width, height))
}
