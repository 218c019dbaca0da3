//! What the generating commands read: the image, a video, a noise file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::media::image::RgbImage;

use crate::tensors::TensorFile;

/// Read and decode a PNG, JPEG or WebP file (the library's decoder, with the path in errors).
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    i2vgen::media::image::decode(&bytes).with_context(|| format!("{}", path.display()))
}

/// The bytes of a `--noise` safetensors file, if one was given.
pub fn noise_file(path: Option<&Path>) -> Result<Option<Vec<u8>>> {
    path.map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))).transpose()
}

/// The frames of `--video`, each `[H, W, 3]` in [0, 1].
pub fn read_video(path: &Path, device: &Device) -> Result<Vec<Tensor<3>>> {
    let frame = |rgb: Vec<u8>, w: usize, h: usize| {
        let values: Vec<f32> = rgb.into_iter().map(|v| f32::from(v) / 255.0).collect();
        Tensor::<3>::from_data(TensorData::new(values, [h, w, 3]), device)
    };
    if path.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
            .collect();
        if names.is_empty() {
            bail!("{} has no .png frames", path.display());
        }
        // Numbered frames: order by the number in the name (frame2 before frame10).
        let number = |p: &PathBuf| -> u64 {
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            stem.chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
        };
        names.sort_by_key(|p| (number(p), p.clone()));
        return names
            .iter()
            .map(|p| {
                let image = load_image(p)?;
                Ok(frame(image.data, image.width, image.height))
            })
            .collect();
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "safetensors" => {
            let video = TensorFile::read(path)?.float::<4>("video", device)?;
            let [f, _, _, c] = video.dims();
            if c != 3 {
                bail!("`video` in {} has {c} channels; expected [F, H, W, 3] in [0, 1]", path.display());
            }
            Ok((0..f).map(|i| video.clone().slice([i..i + 1]).squeeze_dim(0)).collect())
        }
        "gif" => {
            let mut options = gif::DecodeOptions::new();
            options.set_color_output(gif::ColorOutput::RGBA);
            let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut decoder = options.read_info(file).with_context(|| format!("{} is not a GIF", path.display()))?;
            let (w, h) = (decoder.width() as usize, decoder.height() as usize);
            // Frames may cover part of the screen: compose them onto a canvas.
            let mut canvas = vec![0u8; w * h * 4];
            let mut frames = Vec::new();
            while let Some(f) =
                decoder.read_next_frame().with_context(|| format!("{} is a damaged GIF", path.display()))?
            {
                for y in 0..f.height as usize {
                    for x in 0..f.width as usize {
                        let (cx, cy) = (x + f.left as usize, y + f.top as usize);
                        let src = &f.buffer[(y * f.width as usize + x) * 4..][..4];
                        if cx < w && cy < h && src[3] > 0 {
                            canvas[(cy * w + cx) * 4..][..4].copy_from_slice(src);
                        }
                    }
                }
                let rgb = canvas.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
                frames.push(frame(rgb, w, h));
            }
            Ok(frames)
        }
        _ => bail!("{}: --video must be a .safetensors, a .gif or a folder of numbered PNGs", path.display()),
    }
}
