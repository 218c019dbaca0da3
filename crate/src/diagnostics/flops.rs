//! Analytic cost of one UNet forward: the multiply-adds of convolutions, linear layers and
//! attention (QKᵀ and AV), two FLOPs each, for the shapes our implementation runs (the
//! cross-attention keys and values once per video, shared by its frames). Norms, activations and element-wise ops are left out: together they are well under 1%.
//! Each UNet also has the cost of a DeepCache shallow step (`forward_cached` with cached deep
//! features) and the size of those features.

use crate::models::unet_3d_backbone::{DownBlockType, UNet3DConfig, UpBlockType};

/// A convolution producing `pixels` outputs per image for `n` images (`taps` = kernel elements).
fn conv(n: u64, c_in: usize, c_out: usize, taps: u64, pixels: u64) -> u64 {
    2 * n * c_in as u64 * c_out as u64 * taps * pixels
}

fn linear(tokens: u64, d_in: usize, d_out: usize) -> u64 {
    2 * tokens * d_in as u64 * d_out as u64
}

/// Scores and weighted sum for `seqs` sequences of `tq` queries over `tk` keys, `inner` wide.
fn attention(seqs: u64, tq: u64, tk: u64, inner: usize) -> u64 {
    4 * seqs * tq * tk * inner as u64
}

/// `BasicTransformerBlock` (self-attention, attention on `context` (tokens, width) of
/// `ctx_seqs` sequences, GEGLU).
fn basic_block(seqs: u64, t: u64, dim: usize, context: (u64, usize), ctx_seqs: u64) -> u64 {
    let tokens = seqs * t;
    let (ctx_tokens, ctx_dim) = context;
    let attn1 = 4 * linear(tokens, dim, dim) + attention(seqs, t, t, dim);
    let attn2 = 2 * linear(tokens, dim, dim)
        + 2 * linear(ctx_seqs * ctx_tokens, ctx_dim, dim)
        + attention(seqs, t, ctx_tokens, dim);
    let ff = linear(tokens, dim, 8 * dim) + linear(tokens, 4 * dim, dim);
    attn1 + attn2 + ff
}

/// Sizes that every block of one UNet forward shares.
struct Shape {
    batch: u64,
    frames: u64,
    context: (u64, usize),
}

impl Shape {
    fn images(&self) -> u64 {
        self.batch * self.frames
    }

    fn resnet(&self, pixels: u64, c_in: usize, c_out: usize) -> u64 {
        let shortcut = if c_in == c_out { 0 } else { conv(self.images(), c_in, c_out, 1, pixels) };
        conv(self.images(), c_in, c_out, 9, pixels) + conv(self.images(), c_out, c_out, 9, pixels) + shortcut
    }

    /// Four Conv3d (3,1,1).
    fn temporal_conv(&self, pixels: u64, c: usize) -> u64 {
        4 * conv(self.images(), c, c, 3, pixels)
    }

    fn transformer_2d(&self, pixels: u64, c: usize) -> u64 {
        2 * linear(self.images() * pixels, c, c) + basic_block(self.images(), pixels, c, self.context, self.batch)
    }

    /// `TransformerTemporalModel` (`double_self_attention`), `inner` wide inside.
    fn transformer_temporal(&self, pixels: u64, c: usize, inner: usize) -> u64 {
        let seqs = self.batch * pixels;
        2 * linear(seqs * self.frames, c, inner) + basic_block(seqs, self.frames, inner, (self.frames, inner), seqs)
    }

    /// One layer of a 3D block: resnet, temporal conv, and optionally both transformers.
    fn layer(&self, pixels: u64, c_in: usize, c_out: usize, attention: bool) -> u64 {
        let transformers = if attention {
            self.transformer_2d(pixels, c_out) + self.transformer_temporal(pixels, c_out, c_out)
        } else {
            0
        };
        self.resnet(pixels, c_in, c_out) + self.temporal_conv(pixels, c_out) + transformers
    }
}

/// Pixels per frame at each level of the UNet (stride-2 convs round up).
fn level_pixels(c: &UNet3DConfig, h: usize, w: usize) -> Vec<u64> {
    let (mut h, mut w) = (h as u64, w as u64);
    let mut pixels = vec![h * w];
    for _ in 1..c.block_out_channels.len() {
        (h, w) = (h.div_ceil(2), w.div_ceil(2));
        pixels.push(h * w);
    }
    pixels
}

/// One forward split as DeepCache splits it (`UNet3DBackbone::forward_cached`): `shallow` runs on
/// every step, `deep` only on full steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cost {
    shallow: u64,
    deep: u64,
}

impl Cost {
    fn full(self) -> u64 {
        self.shallow + self.deep
    }
}

/// `UNet3DBackbone`: conv_in … conv_out. Shallow: the pre-process, the first down block's
/// layers, the last up block and the post-process; deep: everything in between.
fn backbone(s: &Shape, c: &UNet3DConfig, pixels: &[u64], conv_in_channels: usize) -> Cost {
    let ch = &c.block_out_channels;
    let (n, c0, images) = (ch.len(), ch[0], s.images());
    let mut cost = Cost {
        shallow: conv(images, conv_in_channels, c0, 9, pixels[0])
            + s.transformer_temporal(pixels[0], c0, 8 * c.attention_head_dim),
        deep: 0,
    };

    let mut c_out = c0;
    for (i, kind) in c.down_block_types.iter().enumerate() {
        let c_in = c_out;
        c_out = ch[i];
        let attention = *kind == DownBlockType::CrossAttnDownBlock3D;
        let layers: u64 = (0..c.layers_per_block)
            .map(|layer| s.layer(pixels[i], if layer == 0 { c_in } else { c_out }, c_out, attention))
            .sum();
        let part = if i == 0 { &mut cost.shallow } else { &mut cost.deep };
        *part += layers;
        if i + 1 < n {
            cost.deep += conv(images, c_out, c_out, 9, pixels[i + 1]);
        }
    }

    let deepest = ch[n - 1];
    cost.deep += 2 * s.layer(pixels[n - 1], deepest, deepest, false)
        + s.transformer_2d(pixels[n - 1], deepest)
        + s.transformer_temporal(pixels[n - 1], deepest, deepest);

    let reversed: Vec<usize> = ch.iter().rev().copied().collect();
    let mut c_out = reversed[0];
    for (i, kind) in c.up_block_types.iter().enumerate() {
        let level = n - 1 - i;
        let prev = c_out;
        c_out = reversed[i];
        let skip_last = reversed[(i + 1).min(n - 1)];
        let attention = *kind == UpBlockType::CrossAttnUpBlock3D;
        let layers = c.layers_per_block + 1;
        let mut block: u64 = (0..layers)
            .map(|layer| {
                let below = if layer == 0 { prev } else { c_out };
                let skip = if layer == layers - 1 { skip_last } else { c_out };
                s.layer(pixels[level], below + skip, c_out, attention)
            })
            .sum();
        if i + 1 < n {
            block += conv(images, c_out, c_out, 9, pixels[level - 1]);
        }
        let part = if i + 1 == n { &mut cost.shallow } else { &mut cost.deep };
        *part += block;
    }
    cost.shallow += conv(images, c0, c.out_channels, 9, pixels[0]);
    cost
}

/// `I2VGenXLUNet`; its conditioning and image path run on every step, so they are shallow.
fn i2vgen_xl_unet_cost(c: &UNet3DConfig, batch: usize, frames: usize, h: usize, w: usize) -> Cost {
    let cin = c.in_channels;
    let pixels = level_pixels(c, h, w);
    let latent_tokens = 64;
    let s = Shape {
        batch: batch as u64,
        frames: frames as u64,
        context: (77 + latent_tokens + cin as u64, c.cross_attention_dim),
    };
    let (b, images) = (s.batch, s.images());
    // The image path: context tokens from the first frame, and the latents beside the sample.
    let context = conv(b, 4, 8 * cin, 9, pixels[0])
        + conv(b, 8 * cin, 16 * cin, 9, 16 * 16)
        + conv(b, 16 * cin, c.cross_attention_dim, 9, latent_tokens);
    let latents = conv(images, 4, 4 * cin, 9, pixels[0])
        + conv(images, 4 * cin, 4 * cin, 9, pixels[0])
        + conv(images, 4 * cin, cin, 9, pixels[0]);
    let backbone = backbone(&s, c, &pixels, 2 * cin);
    Cost {
        shallow: context + latents + temporal_encoder(b * pixels[0], s.frames, cin) + backbone.shallow,
        deep: backbone.deep,
    }
}

fn unet_3d_condition_cost(c: &UNet3DConfig, batch: usize, frames: usize, h: usize, w: usize) -> Cost {
    let s = Shape { batch: batch as u64, frames: frames as u64, context: (77, c.cross_attention_dim) };
    backbone(&s, c, &level_pixels(c, h, w), c.in_channels)
}

/// FLOPs of one `I2VGenXLUNet` forward on `batch` videos of `frames` latents of `h`×`w`
/// (a classifier-free-guided step is batch 2).
pub fn i2vgen_xl_unet(c: &UNet3DConfig, batch: usize, frames: usize, h: usize, w: usize) -> u64 {
    i2vgen_xl_unet_cost(c, batch, frames, h, w).full()
}

/// FLOPs of one DeepCache shallow step of `I2VGenXLUNet` (`forward_cached` with cached deep
/// features), same arguments as [`i2vgen_xl_unet`].
pub fn i2vgen_xl_unet_shallow(c: &UNet3DConfig, batch: usize, frames: usize, h: usize, w: usize) -> u64 {
    i2vgen_xl_unet_cost(c, batch, frames, h, w).shallow
}

/// FLOPs of one `UNet3DConditionModel` forward (77 text tokens of context).
pub fn unet_3d_condition(c: &UNet3DConfig, batch: usize, frames: usize, h: usize, w: usize) -> u64 {
    unet_3d_condition_cost(c, batch, frames, h, w).full()
}

/// FLOPs of one DeepCache shallow step of `UNet3DConditionModel`.
pub fn unet_3d_condition_shallow(c: &UNet3DConfig, batch: usize, frames: usize, h: usize, w: usize) -> u64 {
    unet_3d_condition_cost(c, batch, frames, h, w).shallow
}

/// Bytes of the deep features DeepCache keeps between steps, `[batch·frames,
/// deep_features_channels, h, w]` at `bytes_per_element` (4 for f32, 2 for f16): one tensor per
/// UNet call (a guided step run as two halves keeps two of half the size).
pub fn deep_features_bytes(
    c: &UNet3DConfig,
    batch: usize,
    frames: usize,
    h: usize,
    w: usize,
    bytes_per_element: usize,
) -> u64 {
    [batch, frames, c.deep_features_channels(), h, w, bytes_per_element].iter().map(|&v| v as u64).product()
}

/// `I2VGenXLTransformerTemporalEncoder`: self-attention over frames then a 4× GELU feed-forward.
fn temporal_encoder(seqs: u64, frames: u64, dim: usize) -> u64 {
    let tokens = seqs * frames;
    4 * linear(tokens, dim, dim) + attention(seqs, frames, frames, dim) + 2 * linear(tokens, dim, 4 * dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brief's figures for the real UNet, 16 frames with guidance (batch 2): 17.5 TFLOP per
    /// step at 256×448 and 176 TFLOP at 704×1280.
    #[test]
    fn real_unet_costs_what_the_design_brief_says() {
        let config: UNet3DConfig = serde_json::from_str("{}").unwrap();
        let small = i2vgen_xl_unet(&config, 2, 16, 32, 56) as f64 / 1e12;
        let large = i2vgen_xl_unet(&config, 2, 16, 88, 160) as f64 / 1e12;
        assert!((small / 17.5 - 1.0).abs() < 0.03, "{small} TFLOP");
        assert!((large / 176.0 - 1.0).abs() < 0.03, "{large} TFLOP");
    }

    /// The real UNets' configs: ali-vilab/i2vgen-xl's and the refiner's.
    fn real_configs() -> (UNet3DConfig, UNet3DConfig) {
        use crate::loading::config::parse;
        use crate::models::{unet_3d_condition, unet_i2vgen_xl::I2VGenXLUNetConfig};
        let base = parse::<I2VGenXLUNetConfig>(include_str!("../../configs/i2vgen-xl/unet/config.json"));
        let refiner = parse::<unet_3d_condition::UNet3DConditionModelConfig>(unet_3d_condition::REFINER_CONFIG);
        (base.unwrap().config.unet, refiner.unwrap().config.unet)
    }

    /// 16 frames at 256×448, one UNet call (batch 1): a shallow step costs 35% of a full one
    /// (the first level, full-resolution attention and all, is the costliest), and DeepCache
    /// keeps 70 MiB of f32 features (`[16, 640, 32, 56]`).
    #[test]
    fn real_shallow_step_is_a_fraction_of_a_full_one() {
        let (base, refiner) = real_configs();
        let (b, f, h, w) = (1, 16, 32, 56);
        for (name, full, shallow, c) in [
            ("I2VGenXLUNet", i2vgen_xl_unet(&base, b, f, h, w), i2vgen_xl_unet_shallow(&base, b, f, h, w), &base),
            (
                "UNet3DConditionModel",
                unet_3d_condition(&refiner, b, f, h, w),
                unet_3d_condition_shallow(&refiner, b, f, h, w),
                &refiner,
            ),
        ] {
            let bytes = deep_features_bytes(c, b, f, h, w, 4);
            println!(
                "{name}, batch {b}, {f} frames of {h}×{w} latents: full {:.1} GFLOP, shallow {:.1} GFLOP \
                 ({:.1}%), deep features {bytes} bytes in f32",
                full as f64 / 1e9,
                shallow as f64 / 1e9,
                100.0 * shallow as f64 / full as f64,
            );
            assert!(0 < shallow && 5 * shallow < 2 * full, "{name}: {shallow} of {full}");
            assert_eq!(bytes, 16 * 640 * 32 * 56 * 4, "{name}");
        }
    }

    /// A shallow step is exactly what `forward_cached` runs on one: summed here by hand from the
    /// per-layer costs (the first down block's two layers; the last up block's three, on the
    /// 640-wide deep features then 320-wide, each beside a 320-wide skip), and untouched by the
    /// widths below the second level, which only the full step pays for.
    #[test]
    fn shallow_step_is_the_first_level_only() {
        let (base, refiner) = real_configs();
        let (b, f, h, w) = (1, 16, 32, 56);
        let (images, pixels) = ((b * f) as u64, (h * w) as u64);
        let s = Shape { batch: b as u64, frames: f as u64, context: (77, 1024) };
        let by_hand = conv(images, 4, 320, 9, pixels)
            + s.transformer_temporal(pixels, 320, 8 * 64)
            + 2 * s.layer(pixels, 320, 320, true)
            + s.layer(pixels, 640 + 320, 320, true)
            + 2 * s.layer(pixels, 320 + 320, 320, true)
            + conv(images, 320, 4, 9, pixels);
        assert_eq!(unet_3d_condition_shallow(&refiner, b, f, h, w), by_hand);

        let wider = |c: &UNet3DConfig| UNet3DConfig { block_out_channels: vec![320, 640, 2560, 2560], ..c.clone() };
        let cost = |c: &UNet3DConfig, i2vgen: bool| {
            if i2vgen { i2vgen_xl_unet_cost(c, b, f, h, w) } else { unet_3d_condition_cost(c, b, f, h, w) }
        };
        for (c, i2vgen) in [(&base, true), (&refiner, false)] {
            let (real, wide) = (cost(c, i2vgen), cost(&wider(c), i2vgen));
            assert_eq!(real.shallow, wide.shallow);
            assert!(real.deep < wide.deep);
        }
    }
}
