//! What the two 3D UNets share (diffusers `I2VGenXLUNet` and `UNet3DConditionModel`): the
//! architecture keys of their configs and the backbone from `conv_in` to `conv_out`. Each model
//! adds its own conditioning (time only, or time + fps + the image path) around it.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::loading::config::{MAX_LAYERS, MAX_WIDTH, check_divides, check_each, check_range, invalid};
use crate::loading::weights::Weights;
use crate::models::embeddings::TimestepEmbedding;
use crate::models::frame_chunks::{FrameChunks, Split};
use crate::models::nn::{Conv2d, GroupNorm, MAX_BINDING_BYTES, MAX_ELEMENTS};
use crate::models::transformer_temporal::TransformerTemporalModel;
use crate::models::unet_3d_blocks::{BlockDims, DownBlock3D, UNetMidBlock3DCrossAttn, UpBlock3D};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum DownBlockType {
    CrossAttnDownBlock3D,
    DownBlock3D,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum UpBlockType {
    CrossAttnUpBlock3D,
    UpBlock3D,
}

/// The config keys both UNets read; the defaults are the real checkpoints' values.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct UNet3DConfig {
    #[serde(default = "defaults::four")]
    pub in_channels: usize,
    #[serde(default = "defaults::four")]
    pub out_channels: usize,
    #[serde(default = "defaults::down_block_types")]
    pub down_block_types: Vec<DownBlockType>,
    #[serde(default = "defaults::up_block_types")]
    pub up_block_types: Vec<UpBlockType>,
    #[serde(default = "defaults::block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "defaults::two")]
    pub layers_per_block: usize,
    #[serde(default = "defaults::norm_num_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "defaults::cross_attention_dim")]
    pub cross_attention_dim: usize,
    /// The channels per attention head, despite diffusers' legacy naming: both UNets pass this
    /// value as `num_attention_heads` and every block divides its width by it.
    #[serde(default = "defaults::attention_head_dim")]
    pub attention_head_dim: usize,
}

mod defaults {
    use super::{DownBlockType, UpBlockType};
    pub fn four() -> usize {
        4
    }
    pub fn two() -> usize {
        2
    }
    pub fn down_block_types() -> Vec<DownBlockType> {
        use DownBlockType::*;
        vec![CrossAttnDownBlock3D, CrossAttnDownBlock3D, CrossAttnDownBlock3D, DownBlock3D]
    }
    pub fn up_block_types() -> Vec<UpBlockType> {
        use UpBlockType::*;
        vec![UpBlock3D, CrossAttnUpBlock3D, CrossAttnUpBlock3D, CrossAttnUpBlock3D]
    }
    pub fn block_out_channels() -> Vec<usize> {
        vec![320, 640, 1280, 1280]
    }
    pub fn norm_num_groups() -> usize {
        32
    }
    pub fn cross_attention_dim() -> usize {
        1024
    }
    pub fn attention_head_dim() -> usize {
        64
    }
}

impl UNet3DConfig {
    /// `file` names the config in messages (both UNets read these keys from `unet/config.json`).
    pub fn validate(&self, file: &str) -> Result<()> {
        let widths = &self.block_out_channels;
        let n = widths.len();
        // 8 levels already down-sample 128×; real UNets have 4.
        if !(1..=8).contains(&n) {
            return Err(invalid(file, "block_out_channels", format!("{widths:?}"), "it must list 1 to 8 widths"));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            let message = "block_out_channels, down_block_types and up_block_types must have the same length";
            return Err(Error::Config { file: file.into(), message: message.into() });
        }
        check_each(file, "block_out_channels", widths, 1..=MAX_WIDTH)?;
        for (key, channels) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("cross_attention_dim", self.cross_attention_dim),
        ] {
            check_range(file, key, channels, 1..=MAX_WIDTH)?;
        }
        check_range(file, "layers_per_block", self.layers_per_block, 1..=MAX_LAYERS)?;
        check_divides(file, "norm_num_groups", self.norm_num_groups, "block_out_channels", widths)?;
        check_divides(file, "attention_head_dim", self.attention_head_dim, "block_out_channels", widths)
    }

    /// Latent down-sampling steps between the input and the deepest block.
    pub fn num_upsamplers(&self) -> usize {
        self.block_out_channels.len() - 1
    }

    /// f32 bytes of the largest activation a forward holds whole: `[B·F, block_out_channels[1],
    /// h, w]`, the first up-sampled tensor back at full latent size (the concatenations and the
    /// feed-forward are computed in chunks, see `nn::MAX_ELEMENTS`; attention holds no scores).
    pub fn largest_activation_bytes(&self, batch: usize, frames: usize, h: usize, w: usize) -> usize {
        let widest = self.block_out_channels[1.min(self.block_out_channels.len() - 1)];
        4 * batch * frames * h * w * widest.max(self.block_out_channels[0])
    }

    /// Whether a guided step runs the two halves (uncond, cond) one after the other: exact (they
    /// never interact inside the UNet) and halves the largest activation, needed when batch 2
    /// would exceed [`MAX_BINDING_BYTES`] (16 frames at 720p: 1.18 GB in one piece).
    pub fn split_guidance(&self, frames: usize, h: usize, w: usize) -> bool {
        self.largest_activation_bytes(2, frames, h, w) > MAX_BINDING_BYTES
    }

    /// Channels of the deep features DeepCache keeps between steps (see
    /// [`UNet3DBackbone::forward_cached`]): the output width of the second-to-last up block,
    /// `block_out_channels[1]` (the mid block's width when there is a single block).
    pub fn deep_features_channels(&self) -> usize {
        self.block_out_channels[1.min(self.block_out_channels.len() - 1)]
    }

    /// How each level of one call (`rows` = B·F images of `frames`-frame videos, latents
    /// `h`×`w`, `bytes` per element) splits its activation into pieces of frames and its
    /// temporal layers into row bands (see `frame_chunks`) so that no tensor exceeds
    /// `limit_bytes`: whole where it fits. Counted in u64 (wasm32's usize is 32 bits). The widest
    /// tensor of a level has its own width, the down-sampled input from above, the up-sampled one
    /// from below, and at the first level `transformer_in`'s (8 heads); concatenations and
    /// feed-forwards are chunked apart (`nn::MAX_ELEMENTS`). When even one frame or one row does
    /// not fit, the level is split as far as it goes and its `max_tensor_bytes` says by how much.
    pub fn level_splits(
        &self,
        rows: usize,
        frames: usize,
        h: usize,
        w: usize,
        bytes: usize,
        limit_bytes: u64,
    ) -> Vec<LevelSplit> {
        let ch: Vec<u64> = self.block_out_channels.iter().map(|&c| c as u64).collect();
        let (videos, f) = ((rows / frames.max(1)) as u64, frames as u64);
        let (mut hl, mut wl) = (h as u64, w as u64);
        let mut levels = Vec::with_capacity(ch.len());
        for level in 0..ch.len() {
            let mut widest = ch[level].max(ch[level.saturating_sub(1)]).max(ch[(level + 1).min(ch.len() - 1)]);
            if level == 0 {
                widest = widest.max(8 * self.attention_head_dim as u64);
            }
            let per_frame = widest * hl * wl * bytes as u64;
            let whole = videos * f * per_frame;
            levels.push(if whole <= limit_bytes {
                LevelSplit { split: Split::WHOLE, max_tensor_bytes: whole }
            } else {
                let piece = |p: u64| f.div_ceil(p) * per_frame;
                let band = |b: u64| videos * f * widest * hl.div_ceil(b) * wl * bytes as u64;
                let pieces = (1..=f).find(|&p| piece(p) <= limit_bytes).unwrap_or(f);
                let bands = (1..=hl).find(|&b| band(b) <= limit_bytes).unwrap_or(hl);
                LevelSplit {
                    split: Split { pieces: pieces as usize, bands: bands as usize },
                    max_tensor_bytes: piece(pieces).max(band(bands)),
                }
            });
            (hl, wl) = (hl.div_ceil(2), wl.div_ceil(2));
        }
        levels
    }

    /// Width of the time embedding (4 × the first block's).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }
}

/// One level's [`Split`] and the bytes of its largest tensor under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelSplit {
    pub split: Split,
    pub max_tensor_bytes: u64,
}

/// `conv_in`, `time_embedding`, `transformer_in`, the down, mid and up blocks, `conv_norm_out`
/// and `conv_out`. Their tensors sit at the root of the UNet's state dict.
#[derive(Clone, Debug)]
pub struct UNet3DBackbone {
    pub conv_in: Conv2d,
    pub time_embedding: TimestepEmbedding,
    pub transformer_in: TransformerTemporalModel,
    pub down_blocks: Vec<DownBlock3D>,
    pub mid_block: UNetMidBlock3DCrossAttn,
    pub up_blocks: Vec<UpBlock3D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    /// The widths the levels are split by (see [`UNet3DConfig::level_splits`]).
    pub config: UNet3DConfig,
    /// No activation of a call above this many bytes: larger videos run their levels in pieces
    /// of frames (see `frame_chunks`). [`MAX_ELEMENTS`] f32 values (256 MiB) unless changed.
    pub max_tensor_bytes: u64,
}

impl UNet3DBackbone {
    /// `conv_in_channels`: the sample's channels plus whatever the model concatenates to it.
    pub fn load(w: &mut Weights, c: &UNet3DConfig, conv_in_channels: usize) -> Result<Self> {
        let ch = &c.block_out_channels;
        let (c0, n) = (ch[0], ch.len());
        let temb = c.time_embed_dim();
        let g = c.norm_num_groups;
        let d = BlockDims {
            temb_channels: temb,
            groups: g,
            cross_attention_dim: c.cross_attention_dim,
            head_dim: c.attention_head_dim,
        };

        let mut down_blocks = Vec::new();
        let mut c_out = c0;
        for (i, kind) in c.down_block_types.iter().enumerate() {
            let c_in = c_out;
            c_out = ch[i];
            let attention = *kind == DownBlockType::CrossAttnDownBlock3D;
            down_blocks.push(DownBlock3D::load(
                w,
                &format!("down_blocks.{i}"),
                c.layers_per_block,
                c_in,
                c_out,
                attention,
                i + 1 < n,
                d,
            )?);
        }
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut c_out = reversed[0];
        for (i, kind) in c.up_block_types.iter().enumerate() {
            let prev = c_out;
            c_out = reversed[i];
            let c_in = reversed[(i + 1).min(n - 1)];
            let attention = *kind == UpBlockType::CrossAttnUpBlock3D;
            up_blocks.push(UpBlock3D::load(
                w,
                &format!("up_blocks.{i}"),
                c.layers_per_block + 1,
                c_in,
                prev,
                c_out,
                attention,
                i + 1 < n,
                d,
            )?);
        }
        Ok(Self {
            conv_in: Conv2d::load(w, "conv_in", conv_in_channels, c0, 3, 1, 1, true)?,
            time_embedding: TimestepEmbedding::load(w, "time_embedding", c0, temb)?,
            transformer_in: TransformerTemporalModel::load(w, "transformer_in", 8, c.attention_head_dim, c0, g)?,
            down_blocks,
            mid_block: UNetMidBlock3DCrossAttn::load(w, "mid_block", ch[n - 1], d)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(w, "conv_norm_out", g, c0, 1e-5)?,
            conv_out: Conv2d::load(w, "conv_out", c0, c.out_channels, 3, 1, 1, true)?,
            config: c.clone(),
            max_tensor_bytes: 4 * MAX_ELEMENTS as u64,
        })
    }

    /// # Shapes
    /// x `[B*F, conv_in_channels, h, w]`, emb `[B*F, time_embed_dim]`, context `[B, S, D]` (one per video)
    /// → `[B*F, out_channels, h, w]`
    pub fn forward(&self, x: Tensor<4>, emb: &Tensor<2>, context: &Tensor<3>, frames: usize) -> Tensor<4> {
        self.forward_cached(x, emb, context, frames, None).0
    }

    /// [`Self::forward`] with DeepCache's step caching: returns the output and the deep features,
    /// the input of the last up block (the second-to-last up block's up-sampled output), which
    /// depends on everything below the first level.
    ///
    /// `deep: None` runs the full UNet, exactly the ops of [`Self::forward`] in the same order.
    /// `deep: Some(features)` runs a shallow step: `conv_in`, `transformer_in`, the first down
    /// block's layers (its downsampler output is only a skip of a deeper up block), then the last
    /// up block on `features` and the fresh skips, and the post-process. The down blocks below,
    /// the mid block and the other up blocks are skipped; `features` come back unchanged.
    ///
    /// Each level runs whole, or in pieces of frames when one of its tensors would pass
    /// [`Self::max_tensor_bytes`] ([`UNet3DConfig::level_splits`]).
    ///
    /// # Shapes
    /// x `[B*F, conv_in_channels, h, w]`, emb `[B*F, time_embed_dim]`, context `[B, S, D]` (one per video),
    /// deep `[B*F, deep_features_channels, h, w]` (see [`UNet3DConfig::deep_features_channels`])
    /// → (`[B*F, out_channels, h, w]`, deep `[B*F, deep_features_channels, h, w]`)
    pub fn forward_cached(
        &self,
        x: Tensor<4>,
        emb: &Tensor<2>,
        context: &Tensor<3>,
        frames: usize,
        deep: Option<FrameChunks>,
    ) -> (Tensor<4>, FrameChunks) {
        // Phases 5–9 of diffusers' `I2VGenXLUNet.forward` (2–6 of `UNet3DConditionModel.forward`).
        let (first_down, deeper_down) = self.down_blocks.split_first().expect("validated: at least one block");
        let (last_up, deeper_up) = self.up_blocks.split_last().expect("validated: as many up as down blocks");
        let [n, _, h, w] = x.dims();
        let splits: Vec<Split> = self
            .config
            .level_splits(n, frames, h, w, x.dtype().size(), self.max_tensor_bytes)
            .iter()
            .map(|level| level.split)
            .collect();

        // 5. pre-process
        let x = FrameChunks::new(x, frames, splits[0]).map(|x, _| self.conv_in.forward(x));
        let transformer_in = &self.transformer_in;
        let x = x.temporal(|x| transformer_in.forward(x, frames), |bands| transformer_in.forward_bands(bands, frames));

        // 6. down: the first block's layers on every step, their skips feed the last up block
        let mut skips = vec![x.clone()];
        let (x, first_skips) = first_down.forward_layers(x, emb, context);
        skips.extend(first_skips);
        let deep = match deep {
            Some(deep) => {
                let ([n, _, h, w], [deep_n, _, deep_h, deep_w]) = (x.dims(), deep.dims());
                assert_eq!([deep_n, deep_h, deep_w], [n, h, w], "deep features cached for another shape");
                deep.resplit(splits[0])
            }
            None => {
                let below = |level: usize| splits[(level + 1).min(splits.len() - 1)];
                let mut x = first_down.downsample(x, &mut skips, below(0));
                for (i, block) in deeper_down.iter().enumerate() {
                    let (out, block_skips) = block.forward(x, emb, context, below(i + 1));
                    x = out;
                    skips.extend(block_skips);
                }
                // 7. mid
                let mut x = self.mid_block.forward(x, emb, context);
                // 8. up, all but the last block; up block i runs at level n-1-i, up-samples to the one above
                let levels = splits.len();
                for (i, block) in deeper_up.iter().enumerate() {
                    x = block.forward(x, &mut skips, emb, context, splits[levels - 2 - i]);
                }
                x
            }
        };
        // 8. up: the last block, on the deep features and the first level's skips
        let x = last_up.forward(deep.clone(), &mut skips, emb, context, splits[0]);
        // 9. post-process
        let out = x.map(|x, _| self.conv_out.forward(self.conv_norm_out.forward_silu(x)));
        (out.whole(), deep)
    }
}

/// `repeat_interleave(n, dim=0)`: each batch element n times in a row (per-frame conditioning).
pub fn repeat_interleave<const D: usize>(x: Tensor<D>, n: usize) -> Tensor<D> {
    let dims = x.dims();
    let rest: usize = dims[1..].iter().product();
    let mut expanded = dims;
    expanded[0] *= n;
    x.reshape([dims[0], 1, rest]).repeat_dim(1, n).reshape(expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real UNet's guided step splits at 720p and 704×1280 (16 frames), not at 256×448.
    #[test]
    fn guidance_splits_only_when_batch_two_passes_the_binding() {
        let real: UNet3DConfig = serde_json::from_str("{}").unwrap();
        assert!(real.split_guidance(16, 90, 160));
        assert!(real.split_guidance(16, 88, 160));
        assert!(!real.split_guidance(16, 32, 56));
        assert_eq!(real.largest_activation_bytes(1, 16, 90, 160), 589_824_000);
    }

    /// 16 frames at 720p in f32, one guidance half: levels 0 (`[16, 640, 90, 160]`, 590 MB
    /// whole) and 1 (`[16, 1280, 45, 80]`, 295 MB) split under 256 MiB, the deeper ones stay
    /// whole; at 256×448 every level is whole.
    #[test]
    fn a_720p_step_splits_its_first_two_levels_under_256_mib() {
        let real: UNet3DConfig = serde_json::from_str("{}").unwrap();
        let limit = 256 << 20;
        let levels = real.level_splits(16, 16, 90, 160, 4, limit);
        let splits: Vec<Split> = levels.iter().map(|l| l.split).collect();
        assert_eq!(splits, [Split { pieces: 3, bands: 3 }, Split { pieces: 2, bands: 2 }, Split::WHOLE, Split::WHOLE]);
        assert!(levels.iter().all(|l| l.max_tensor_bytes <= limit), "{levels:?}");
        let small = real.level_splits(32, 16, 32, 56, 4, limit);
        assert!(small.iter().all(|l| l.split == Split::WHOLE), "{small:?}");
    }
}
