//! diffusers `models/autoencoders/vae.py` `Decoder.forward` and `Encoder.forward` by row bands:
//! the same sums as [`AutoencoderKL::decode`] and [`AutoencoderKL::encode`], with no tensor above
//! a byte limit (a 720p frame's last up blocks hold `[1, 256, 720, 1280]` whole: 944 MB, near
//! WebGPU's 1 GiB binding limit; the encoder's first block `[1, 128, 720, 1280]`: 472 MB).
//!
//! From the first up block on (the decode), up to the last down block (the encode), the
//! activation is a list of bands of whole latent rows. A 3×3 convolution reads its padding's
//! worth of halo rows from each neighbouring band, GroupNorm statistics are taken over all
//! bands, nearest upsampling doubles each band's rows, a stride-2 down-sampler halves them (every
//! band boundary is a multiple of the downscale factor, so even at each down-sampler's input).
//! Exact, unlike diffusers'
//! `enable_tiling` (overlapping tiles blended: its GroupNorm and attention see one tile); the
//! reference decodes I2VGen-XL's frames untiled.

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::models::nn::Conv2d;
use crate::models::resnet::ResnetBlock2D;
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig, LatentDist};

/// How one image's encode or decode is split: see [`encode_bands`] and [`decode_bands`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bands {
    /// Row bands up to the mid block (encode) or from the first up block on (decode); 1 is the
    /// untiled [`AutoencoderKL::encode`] or [`AutoencoderKL::decode`].
    pub bands: usize,
    /// Bytes of the largest tensor it holds.
    pub max_tensor_bytes: u64,
}

/// The fewest row bands for which no tensor of one image's decode exceeds `limit_bytes`, or
/// `None` when one latent row per band is still too much. Counted in u64 (wasm32's usize is 32
/// bits). The largest tensors are an up block's widest activation over a band and its two halo
/// rows, the latent-resolution ones (the mid block's attention scores are chunked apart, see
/// `nn::MAX_ELEMENTS`) and the concatenated output.
pub fn decode_bands(
    config: &AutoencoderKLConfig,
    h_latent: usize,
    w_latent: usize,
    bytes_per_element: usize,
    limit_bytes: u64,
) -> Option<Bands> {
    let (h, w, f) = (h_latent as u64, w_latent as u64, config.downscale() as u64);
    let ch: Vec<u64> = config.block_out_channels.iter().rev().map(|&c| c as u64).collect();
    let latent = ch[0].max(config.latent_channels as u64) * h * w;
    let whole = latent.max(config.out_channels as u64 * h * w * f * f);
    (1..=h).find_map(|bands| {
        let rows = h.div_ceil(bands);
        let halo = if bands > 1 { 2 } else { 0 };
        // Up block i runs at scale 2^i, from the previous block's channels to its own.
        let up = (0..ch.len()).map(|i| {
            let scale = 1 << i;
            ch[i].max(ch[i.saturating_sub(1)]) * (rows * scale + halo) * w * scale
        });
        let bytes = up.fold(whole, u64::max) * bytes_per_element as u64;
        (bytes <= limit_bytes).then_some(Bands { bands: bands as usize, max_tensor_bytes: bytes })
    })
}

/// The fewest row bands for which no tensor of the encode of one `height`×`width` picture
/// exceeds `limit_bytes`, or `None` when one latent row (`f` pixel rows) per band is still too
/// much. Counted in u64. Bands hold `ceil(h / bands)` latent rows each (`h = height / f`), the
/// last one the rest of the picture. The largest tensors are a down block's widest activation
/// over a band and its two halo rows, the input picture, and the latent-resolution ones (the mid
/// block's attention scores are chunked apart, see `nn::MAX_ELEMENTS`).
pub fn encode_bands(
    config: &AutoencoderKLConfig,
    height: usize,
    width: usize,
    bytes_per_element: usize,
    limit_bytes: u64,
) -> Option<Bands> {
    let (height, width, f) = (height as u64, width as u64, config.downscale() as u64);
    let (h, w) = (height / f, width / f);
    let ch: Vec<u64> = config.block_out_channels.iter().map(|&c| c as u64).collect();
    let latent = ch[ch.len() - 1].max(2 * config.latent_channels as u64) * h * w;
    let whole = latent.max(config.in_channels as u64 * height * width);
    (1..=h.max(1)).find_map(|bands| {
        let rows = h.div_ceil(bands) * f;
        let count = h.div_ceil((rows / f).max(1)).max(1);
        let halo = if count > 1 { 2 } else { 0 };
        // Down block i runs at scale 1/2^i (sizes floored by each stride-2 down-sampler), from
        // the previous block's channels to its own; the last band also holds the picture's
        // leftover rows below its last whole latent row.
        let down = (0..ch.len()).map(|i| {
            let band = (rows >> i).max((height >> i) - (((count - 1) * rows) >> i));
            ch[i].max(ch[i.saturating_sub(1)]) * (band + halo) * (width >> i)
        });
        let bytes = down.fold(whole, u64::max) * bytes_per_element as u64;
        (bytes <= limit_bytes).then_some(Bands { bands: bands as usize, max_tensor_bytes: bytes })
    })
}

impl AutoencoderKL {
    /// [`Self::encode`] with the down path in row bands of `ceil(h / bands)` latent rows each
    /// (`f` pixel rows per latent row, the last band the rest of the picture): equal within
    /// float rounding, and no tensor larger than one band's before the mid block.
    ///
    /// # Shapes
    /// sample `[N, 3, H, W]` in [-1, 1] → mean, logvar `[N, latent, H/f, W/f]`
    pub fn encode_banded(&self, sample: Tensor<4>, bands: usize) -> LatentDist {
        let e = &self.encoder;
        let f = self.config.downscale();
        let height = sample.dims()[2];
        let h = height / f;
        if h == 0 {
            return self.encode(sample);
        }
        // 1. bands of whole latent rows, in pixels; the last one down to the picture's bottom
        let rows = h.div_ceil(bands.max(1)) * f;
        let starts: Vec<usize> = (0..h * f).step_by(rows).collect();
        let ends = starts.iter().skip(1).copied().chain([height]);
        let x: Vec<Tensor<4>> =
            starts.iter().zip(ends).map(|(&start, end)| sample.clone().narrow(2, start, end - start)).collect();
        // 2. conv_in and the down blocks
        let mut x = conv_bands(&e.conv_in, &x);
        for block in &e.down_blocks {
            for resnet in &block.resnets {
                x = resnet_bands(resnet, x);
            }
            if let Some(down) = &block.downsampler {
                x = conv_bands(&down.conv, &x);
            }
        }
        // 3. latent resolution, whole
        self.encode_mid(Tensor::cat(x, 2))
    }

    /// [`Self::decode`] with the up path in row bands of `ceil(h / bands)` latent rows each (the
    /// last one shorter): equal within float rounding, and no tensor larger than one band's.
    ///
    /// # Shapes
    /// latents `[N, latent, h, w]` (unscaled) → sample `[N, 3, h*f, w*f]`
    pub fn decode_banded(&self, latents: Tensor<4>, bands: usize) -> Tensor<4> {
        let d = &self.decoder;
        // 1. latent resolution, whole
        let x = self.decode_mid(latents);
        // 2. bands of whole latent rows
        let h = x.dims()[2];
        let rows = h.div_ceil(bands.max(1));
        let mut x: Vec<Tensor<4>> =
            (0..h).step_by(rows).map(|start| x.clone().narrow(2, start, rows.min(h - start))).collect();
        // 3. up blocks
        for block in &d.up_blocks {
            for resnet in &block.resnets {
                x = resnet_bands(resnet, x);
            }
            if let Some(up) = &block.upsampler {
                x = conv_bands(&up.conv, &x.into_iter().map(nearest_x2).collect::<Vec<_>>());
            }
        }
        // 4. out
        Tensor::cat(conv_bands(&d.conv_out, &d.conv_norm_out.forward_bands(&x, true)), 2)
    }
}

/// Upsample2D's nearest ×2 of one band: its rows i ← i / 2, as in the whole image.
fn nearest_x2(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    interpolate(x, InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]))
}

/// `ResnetBlock2D` without time embedding over row bands.
fn resnet_bands(block: &ResnetBlock2D, x: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
    let h = conv_bands(&block.conv1, &block.norm1.forward_bands(&x, true));
    let h = conv_bands(&block.conv2, &block.norm2.forward_bands(&h, true));
    let shortcut = |x| match &block.conv_shortcut {
        Some(conv) => conv.forward(x),
        None => x,
    };
    x.into_iter().zip(h).map(|(x, h)| shortcut(x) + h).collect()
}

/// A 3×3 convolution over row bands: each band with as many halo rows from the band above as
/// the conv pads on top and from the band below as it pads at the bottom, zero rows (the conv's
/// padding) only at the image's top and bottom. Size-keeping (stride 1, padding 1), or the
/// encoder's stride-2 down-sampler (padding (0, 1)) over bands of even row counts but the last:
/// a band of rows [a, b) gives output rows [a/2, b/2).
fn conv_bands(conv: &Conv2d, x: &[Tensor<4>]) -> Vec<Tensor<4>> {
    let (p_top, p_bottom) = conv.options.padding[0];
    let last = x.len() - 1;
    let banded = x.iter().enumerate().map(|(k, band)| {
        let mut rows = vec![band.clone()];
        if k > 0 && p_top > 0 {
            let above = &x[k - 1];
            rows.insert(0, above.clone().narrow(2, above.dims()[2] - p_top, p_top));
        }
        if k < last && p_bottom > 0 {
            rows.push(x[k + 1].clone().narrow(2, 0, p_bottom));
        }
        let (top, bottom) = (if k == 0 { p_top } else { 0 }, if k == last { p_bottom } else { 0 });
        conv.forward_rows(Tensor::cat(rows, 2), (top, bottom))
    });
    banded.collect()
}
