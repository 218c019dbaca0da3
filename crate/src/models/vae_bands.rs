//! diffusers `models/autoencoders/vae.py` `Decoder.forward` by row bands: the same sums as
//! [`AutoencoderKL::decode`], with no tensor above a byte limit (a 720p frame's last up blocks
//! hold `[1, 256, 720, 1280]` whole: 944 MB, near WebGPU's 1 GiB binding limit).
//!
//! From the first up block on, the activation is a list of bands of whole latent rows. A 3×3
//! convolution reads one halo row from each neighbouring band, GroupNorm statistics are taken
//! over all bands, nearest upsampling doubles each band's rows. Exact, unlike diffusers'
//! `enable_tiling` (overlapping tiles blended: its GroupNorm and attention see one tile); the
//! reference decodes I2VGen-XL's frames untiled.

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::models::nn::{Conv2d, GroupNorm};
use crate::models::resnet::ResnetBlock2D;
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};

/// How one image's decode is split: see [`decode_bands`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeBands {
    /// Row bands from the first up block on; 1 is the untiled [`AutoencoderKL::decode`].
    pub bands: usize,
    /// Bytes of the largest tensor the decode holds.
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
) -> Option<DecodeBands> {
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
        (bytes <= limit_bytes).then_some(DecodeBands { bands: bands as usize, max_tensor_bytes: bytes })
    })
}

impl AutoencoderKL {
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
        Tensor::cat(conv_bands(&d.conv_out, &norm_silu_bands(&d.conv_norm_out, &x)), 2)
    }
}

/// Upsample2D's nearest ×2 of one band: its rows i ← i / 2, as in the whole image.
fn nearest_x2(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    interpolate(x, InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]))
}

/// `ResnetBlock2D` without time embedding over row bands.
fn resnet_bands(block: &ResnetBlock2D, x: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
    let h = conv_bands(&block.conv1, &norm_silu_bands(&block.norm1, &x));
    let h = conv_bands(&block.conv2, &norm_silu_bands(&block.norm2, &h));
    let shortcut = |x| match &block.conv_shortcut {
        Some(conv) => conv.forward(x),
        None => x,
    };
    x.into_iter().zip(h).map(|(x, h)| shortcut(x) + h).collect()
}

/// GroupNorm then SiLU over row bands, with the statistics of all of them.
fn norm_silu_bands(norm: &GroupNorm, x: &[Tensor<4>]) -> Vec<Tensor<4>> {
    norm.forward_bands(x, true)
}

/// A stride-1, size-keeping convolution (3×3, padding 1) over row bands: each band with
/// `padding` halo rows from each neighbour, zero rows (the conv's padding) only at the image's
/// top and bottom.
fn conv_bands(conv: &Conv2d, x: &[Tensor<4>]) -> Vec<Tensor<4>> {
    let p = conv.options.padding[0].0;
    let last = x.len() - 1;
    let banded = x.iter().enumerate().map(|(k, band)| {
        let mut rows = vec![band.clone()];
        if k > 0 {
            let above = &x[k - 1];
            rows.insert(0, above.clone().narrow(2, above.dims()[2] - p, p));
        }
        if k < last {
            rows.push(x[k + 1].clone().narrow(2, 0, p));
        }
        let (top, bottom) = (if k == 0 { p } else { 0 }, if k == last { p } else { 0 });
        conv.forward_rows(Tensor::cat(rows, 2), (top, bottom))
    });
    banded.collect()
}
