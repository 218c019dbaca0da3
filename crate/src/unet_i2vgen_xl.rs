//! diffusers `models/unets/unet_i2vgen_xl.py`: `I2VGenXLUNet` and its image path.

use std::collections::BTreeMap;

use burn::tensor::activation::silu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::Tensor;
use serde::Deserialize;
use serde_json::Value;

use crate::attention::{Attention, FeedForward};
use crate::config::{ConfigFile, expect_class_name};
use crate::embeddings::{TimestepEmbedding, timestep_embedding};
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::transformer_temporal::TransformerTemporalModel;
use crate::unet_3d_blocks::{BlockDims, DownBlock3D, UNetMidBlock3DCrossAttn, UpBlock3D};
use crate::weights::{Weights, key};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum DownBlockType {
    CrossAttnDownBlock3D,
    DownBlock3D,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum UpBlockType {
    CrossAttnUpBlock3D,
    UpBlock3D,
}

#[derive(Clone, Debug, Deserialize)]
pub struct I2VGenXLUNetConfig {
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
    /// The channels per attention head, despite diffusers' legacy naming: the UNet overwrites
    /// `num_attention_heads` with this value and every block divides its width by it.
    #[serde(default = "defaults::attention_head_dim")]
    pub attention_head_dim: usize,
}

mod defaults {
    use super::{DownBlockType, UpBlockType};
    pub fn four() -> usize { 4 }
    pub fn two() -> usize { 2 }
    pub fn down_block_types() -> Vec<DownBlockType> {
        use DownBlockType::*;
        vec![CrossAttnDownBlock3D, CrossAttnDownBlock3D, CrossAttnDownBlock3D, DownBlock3D]
    }
    pub fn up_block_types() -> Vec<UpBlockType> {
        use UpBlockType::*;
        vec![UpBlock3D, CrossAttnUpBlock3D, CrossAttnUpBlock3D, CrossAttnUpBlock3D]
    }
    pub fn block_out_channels() -> Vec<usize> { vec![320, 640, 1280, 1280] }
    pub fn norm_num_groups() -> usize { 32 }
    pub fn cross_attention_dim() -> usize { 1024 }
    pub fn attention_head_dim() -> usize { 64 }
}

impl ConfigFile for I2VGenXLUNetConfig {
    const FILE: &'static str = "unet/config.json";
    /// `num_attention_heads` is ignored by diffusers itself (overwritten by attention_head_dim).
    const IGNORED: &'static [&'static str] = &["sample_size", "num_attention_heads"];
    const KNOWN: &'static [&'static str] = &[
        "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
        "layers_per_block", "norm_num_groups", "cross_attention_dim", "attention_head_dim",
    ];
    fn check_class(json: &BTreeMap<String, Value>) -> Result<()> {
        expect_class_name(Self::FILE, json, &["I2VGenXLUNet"])
    }
}

impl I2VGenXLUNetConfig {
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        let bad = |message: &str| Err(Error::Config { file: Self::FILE.into(), message: message.into() });
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad("block_out_channels, down_block_types and up_block_types must have the same length");
        }
        if self.block_out_channels.iter().any(|c| c % self.attention_head_dim != 0 || c % self.norm_num_groups != 0) {
            return bad("every block width must be a multiple of attention_head_dim and norm_num_groups");
        }
        Ok(())
    }

    /// Latent down-sampling between the input and the deepest block.
    pub fn num_upsamplers(&self) -> usize {
        self.block_out_channels.len() - 1
    }
}

/// `I2VGenXLTransformerTemporalEncoder`: self-attention over frames then a GELU feed-forward
/// (no norm before it), each with a residual.
#[derive(Clone, Debug)]
pub struct I2VGenXLTransformerTemporalEncoder {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub ff: FeedForward,
}

impl I2VGenXLTransformerTemporalEncoder {
    fn load(w: &mut Weights, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::load(w, &key(prefix, "norm1"), dim, 1e-5)?,
            attn1: Attention::load(w, &key(prefix, "attn1"), dim, dim, 2, dim, false)?,
            ff: FeedForward::load(w, &key(prefix, "ff"), dim, 4 * dim, false)?,
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.attn1.forward(self.norm1.forward(x), None);
        x.clone() + self.ff.forward(x)
    }
}

#[derive(Clone, Debug)]
pub struct I2VGenXLUNet {
    pub conv_in: Conv2d,
    pub transformer_in: TransformerTemporalModel,
    /// `image_latents_proj_in.{0,2,4}` (SiLU between).
    pub image_latents_proj_in: [Conv2d; 3],
    pub image_latents_temporal_encoder: I2VGenXLTransformerTemporalEncoder,
    /// `image_latents_context_embedding.{0,3,5}`: conv, SiLU, adaptive pool 32×32, conv s2, SiLU, conv s2.
    pub image_latents_context_embedding: [Conv2d; 3],
    pub time_embedding: TimestepEmbedding,
    /// `context_embedding.{0,2}`
    pub context_embedding: [Linear; 2],
    /// `fps_embedding.{0,2}`
    pub fps_embedding: [Linear; 2],
    pub down_blocks: Vec<DownBlock3D>,
    pub mid_block: UNetMidBlock3DCrossAttn,
    pub up_blocks: Vec<UpBlock3D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    pub config: I2VGenXLUNetConfig,
}

/// The conditioning the UNet is called with, per batch element.
pub struct I2VGenXLUNetInput {
    /// `[B, 4, F, h, w]`
    pub sample: Tensor<5>,
    /// One timestep per batch element.
    pub timesteps: Vec<f32>,
    /// `[B, 77, cross_attention_dim]`
    pub encoder_hidden_states: Tensor<3>,
    /// One fps per batch element.
    pub fps: Vec<f32>,
    /// `[B, 4, F, h, w]`: the first-frame latent then the mask frames.
    pub image_latents: Tensor<5>,
    /// `[B, cross_attention_dim]`
    pub image_embeddings: Tensor<2>,
}

impl I2VGenXLUNet {
    pub fn load(w: &mut Weights, config: &I2VGenXLUNetConfig) -> Result<Self> {
        config.validate()?;
        let c = config;
        let ch = &c.block_out_channels;
        let (c0, n) = (ch[0], ch.len());
        let cin = c.in_channels;
        let temb = 4 * c0;
        let g = c.norm_num_groups;
        let d = BlockDims { temb_channels: temb, groups: g, cross_attention_dim: c.cross_attention_dim, head_dim: c.attention_head_dim };
        let conv = |w: &mut Weights, k: &str, i, o, s| Conv2d::load(w, k, i, o, 3, s, 1, true);

        let mut down_blocks = Vec::new();
        let mut c_out = c0;
        for (i, kind) in c.down_block_types.iter().enumerate() {
            let c_in = c_out;
            c_out = ch[i];
            let attention = *kind == DownBlockType::CrossAttnDownBlock3D;
            down_blocks.push(DownBlock3D::load(w, &format!("down_blocks.{i}"), c.layers_per_block, c_in, c_out, attention, i + 1 < n, d)?);
        }
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut c_out = reversed[0];
        for (i, kind) in c.up_block_types.iter().enumerate() {
            let prev = c_out;
            c_out = reversed[i];
            let c_in = reversed[(i + 1).min(n - 1)];
            let attention = *kind == UpBlockType::CrossAttnUpBlock3D;
            up_blocks.push(UpBlock3D::load(w, &format!("up_blocks.{i}"), c.layers_per_block + 1, c_in, prev, c_out, attention, i + 1 < n, d)?);
        }

        Ok(Self {
            conv_in: conv(w, "conv_in", 2 * cin, c0, 1)?,
            transformer_in: TransformerTemporalModel::load(w, "transformer_in", 8, c.attention_head_dim, c0, g)?,
            image_latents_proj_in: [
                conv(w, "image_latents_proj_in.0", 4, 4 * cin, 1)?,
                conv(w, "image_latents_proj_in.2", 4 * cin, 4 * cin, 1)?,
                conv(w, "image_latents_proj_in.4", 4 * cin, cin, 1)?,
            ],
            image_latents_temporal_encoder: I2VGenXLTransformerTemporalEncoder::load(w, "image_latents_temporal_encoder", cin)?,
            image_latents_context_embedding: [
                conv(w, "image_latents_context_embedding.0", 4, 8 * cin, 1)?,
                conv(w, "image_latents_context_embedding.3", 8 * cin, 16 * cin, 2)?,
                conv(w, "image_latents_context_embedding.5", 16 * cin, c.cross_attention_dim, 2)?,
            ],
            time_embedding: TimestepEmbedding::load(w, "time_embedding", c0, temb)?,
            context_embedding: [
                Linear::load(w, "context_embedding.0", c.cross_attention_dim, temb, true)?,
                Linear::load(w, "context_embedding.2", temb, c.cross_attention_dim * cin, true)?,
            ],
            fps_embedding: [
                Linear::load(w, "fps_embedding.0", c0, temb, true)?,
                Linear::load(w, "fps_embedding.2", temb, temb, true)?,
            ],
            down_blocks,
            mid_block: UNetMidBlock3DCrossAttn::load(w, "mid_block", ch[n - 1], d)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(w, "conv_norm_out", g, c0, 1e-5)?,
            conv_out: conv(w, "conv_out", c0, c.out_channels, 1)?,
            config: config.clone(),
        })
    }

    /// The 145 context tokens per batch element: 77 text, 64 from the first-frame latent, and
    /// `in_channels` from the CLIP image embedding.
    ///
    /// # Shapes
    /// → `[B, 77 + 64 + in_channels, cross_attention_dim]`
    fn context(&self, text: Tensor<3>, image_latents: &Tensor<5>, image_embeddings: Tensor<2>) -> Tensor<3> {
        let [b, c, _, h, w] = image_latents.dims();
        let dim = self.config.cross_attention_dim;
        let first = image_latents.clone().slice([0..b, 0..c, 0..1]).reshape([b, c, h, w]);
        let [c1, c2, c3] = &self.image_latents_context_embedding;
        let x = adaptive_avg_pool2d(silu(c1.forward(first)), [32, 32]);
        let x = c3.forward(silu(c2.forward(x)));
        let [_, _, gh, gw] = x.dims();
        let latent_tokens = x.reshape([b, dim, gh * gw]).swap_dims(1, 2);
        let [l1, l2] = &self.context_embedding;
        let image_tokens = l2.forward(silu(l1.forward(image_embeddings))).reshape([b, self.config.in_channels, dim]);
        Tensor::cat(vec![text, latent_tokens, image_tokens], 1)
    }

    /// The image latents through `image_latents_proj_in` and the temporal encoder.
    ///
    /// # Shapes
    /// `[B, 4, F, h, w]` → `[B, in_channels, F, h, w]`
    fn image_path(&self, image_latents: Tensor<5>) -> Tensor<5> {
        let [b, c, f, h, w] = image_latents.dims();
        let mut x = image_latents.swap_dims(1, 2).reshape([b * f, c, h, w]);
        for (i, conv) in self.image_latents_proj_in.iter().enumerate() {
            x = conv.forward(x);
            if i < 2 {
                x = silu(x);
            }
        }
        let cin = self.config.in_channels;
        let x = x.reshape([b, f, cin, h, w]).permute([0, 3, 4, 1, 2]).reshape([b * h * w, f, cin]);
        let x = self.image_latents_temporal_encoder.forward(x);
        x.reshape([b, h, w, f, cin]).permute([0, 4, 3, 1, 2])
    }

    /// The noise (or v) prediction.
    ///
    /// # Shapes
    /// sample `[B, 4, F, h, w]` → `[B, out_channels, F, h, w]`
    pub fn forward(&self, input: I2VGenXLUNetInput) -> Tensor<5> {
        let I2VGenXLUNetInput { sample, timesteps, encoder_hidden_states, fps, image_latents, image_embeddings } = input;
        let [b, _, f, h, w] = sample.dims();
        let device = sample.device();
        let c0 = self.config.block_out_channels[0];

        // 1. time and 2. fps, one embedding per frame
        let t_emb = self.time_embedding.forward(timestep_embedding(&timesteps, c0, true, 0.0, &device));
        let [f1, f2] = &self.fps_embedding;
        let fps_emb = f2.forward(silu(f1.forward(timestep_embedding(&fps, c0, true, 0.0, &device))));
        let emb = repeat_interleave(t_emb + fps_emb, f);

        // 3. context: text + image-latent + image-embedding tokens, per frame
        let context = repeat_interleave(self.context(encoder_hidden_states, &image_latents, image_embeddings), f);

        // 4. image latents beside the sample, then conv_in and transformer_in
        let x = Tensor::cat(vec![sample, self.image_path(image_latents)], 1);
        let x = x.swap_dims(1, 2).reshape([b * f, 2 * self.config.in_channels, h, w]);
        let x = self.transformer_in.forward(self.conv_in.forward(x), f);

        // 5. down
        let mut skips = vec![x.clone()];
        let mut x = x;
        for block in &self.down_blocks {
            let (out, block_skips) = block.forward(x, &emb, &context, f);
            x = out;
            skips.extend(block_skips);
        }

        // 6. mid
        let mut x = self.mid_block.forward(x, &emb, &context, f);

        // 7. up
        for block in &self.up_blocks {
            x = block.forward(x, &mut skips, &emb, &context, f);
        }

        // 8. post-process
        let x = self.conv_out.forward(silu(self.conv_norm_out.forward(x)));
        let c_out = self.config.out_channels;
        x.reshape([b, f, c_out, h, w]).swap_dims(1, 2)
    }
}

/// `repeat_interleave(n, dim=0)`: each batch element n times in a row.
fn repeat_interleave<const D: usize>(x: Tensor<D>, n: usize) -> Tensor<D> {
    let dims = x.dims();
    let rest: usize = dims[1..].iter().product();
    let mut expanded = dims;
    expanded[0] *= n;
    x.reshape([dims[0], 1, rest]).repeat_dim(1, n).reshape(expanded)
}
