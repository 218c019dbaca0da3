//! diffusers `models/unets/unet_i2vgen_xl.py`: `I2VGenXLUNet` and its image path.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use burn::tensor::module::adaptive_avg_pool2d;
use i2vgen_shaders::epilogue::Act;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Result;
use crate::loading::config::{ConfigFile, expect_class_name};
use crate::loading::weights::{Weights, key};
use crate::models::attention::{Attention, FeedForward};
use crate::models::embeddings::timestep_embedding;
use crate::models::frame_chunks::FrameChunks;
use crate::models::nn::{Conv2d, LayerNorm, Linear, silu};
use crate::models::unet_3d_backbone::{UNet3DBackbone, UNet3DConfig, repeat_interleave};

/// `unet/config.json` of an `I2VGenXLUNet`: the shared 3D UNet keys only.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct I2VGenXLUNetConfig {
    #[serde(flatten)]
    pub unet: UNet3DConfig,
}

impl ConfigFile for I2VGenXLUNetConfig {
    const FILE: &'static str = "unet/config.json";
    /// `num_attention_heads` is ignored by diffusers itself (overwritten by attention_head_dim).
    const IGNORED: &'static [&'static str] = &["sample_size", "num_attention_heads"];
    fn check_class(json: &BTreeMap<String, Value>) -> Result<()> {
        expect_class_name(Self::FILE, json, &["I2VGenXLUNet"])
    }

    fn validate(&self) -> Result<()> {
        self.unet.validate(Self::FILE)
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
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None, Some(x));
        self.ff.forward_add(x.clone(), x)
    }
}

#[derive(Clone, Debug)]
pub struct I2VGenXLUNet {
    /// `conv_in` (sample and image-path channels), `time_embedding`, the blocks, `conv_out`.
    pub backbone: UNet3DBackbone,
    /// `image_latents_proj_in.{0,2,4}` (SiLU between).
    pub image_latents_proj_in: [Conv2d; 3],
    pub image_latents_temporal_encoder: I2VGenXLTransformerTemporalEncoder,
    /// `image_latents_context_embedding.{0,3,5}`: conv, SiLU, adaptive pool 32×32, conv s2, SiLU, conv s2.
    pub image_latents_context_embedding: [Conv2d; 3],
    /// `context_embedding.{0,2}`
    pub context_embedding: [Linear; 2],
    /// `fps_embedding.{0,2}`
    pub fps_embedding: [Linear; 2],
    pub config: UNet3DConfig,
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
    /// `[B, cross_attention_dim]`. diffusers' own pipeline passes `[B, 1, cross_attention_dim]`
    /// (`_encode_image` unsqueezes); `squeeze_dim(1)` it (as `i2vgen forward` does).
    pub image_embeddings: Tensor<2>,
}

impl I2VGenXLUNet {
    pub fn load(w: &mut Weights, config: &I2VGenXLUNetConfig) -> Result<Self> {
        let c = &config.unet;
        config.validate()?;
        let (c0, cin, temb) = (c.block_out_channels[0], c.in_channels, c.time_embed_dim());
        let conv = |w: &mut Weights, k: &str, i, o, s| Conv2d::load(w, k, i, o, 3, s, 1, true);

        Ok(Self {
            backbone: UNet3DBackbone::load(w, c, 2 * cin)?,
            image_latents_proj_in: [
                conv(w, "image_latents_proj_in.0", 4, 4 * cin, 1)?,
                conv(w, "image_latents_proj_in.2", 4 * cin, 4 * cin, 1)?,
                conv(w, "image_latents_proj_in.4", 4 * cin, cin, 1)?,
            ],
            image_latents_temporal_encoder: I2VGenXLTransformerTemporalEncoder::load(
                w,
                "image_latents_temporal_encoder",
                cin,
            )?,
            image_latents_context_embedding: [
                conv(w, "image_latents_context_embedding.0", 4, 8 * cin, 1)?,
                conv(w, "image_latents_context_embedding.3", 8 * cin, 16 * cin, 2)?,
                conv(w, "image_latents_context_embedding.5", 16 * cin, c.cross_attention_dim, 2)?,
            ],
            context_embedding: [
                Linear::load(w, "context_embedding.0", c.cross_attention_dim, temb, true)?,
                Linear::load(w, "context_embedding.2", temb, c.cross_attention_dim * cin, true)?,
            ],
            fps_embedding: [
                Linear::load(w, "fps_embedding.0", c0, temb, true)?,
                Linear::load(w, "fps_embedding.2", temb, temb, true)?,
            ],
            config: c.clone(),
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
        let image_tokens =
            l2.forward(l1.forward_act(image_embeddings, Act::Silu)).reshape([b, self.config.in_channels, dim]);
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
        self.forward_cached(input, None).0
    }

    /// [`Self::forward`] with DeepCache's step caching, and the deep features to pass to a later
    /// shallow step: `deep: None` is the full forward, `Some` a shallow step on features from an
    /// earlier step (see [`UNet3DBackbone::forward_cached`]). The embeddings, the context and the
    /// image path run on every step.
    ///
    /// # Shapes
    /// sample `[B, 4, F, h, w]`, deep `[B*F, deep_features_channels, h, w]`
    /// → (`[B, out_channels, F, h, w]`, deep `[B*F, deep_features_channels, h, w]`)
    pub fn forward_cached(&self, input: I2VGenXLUNetInput, deep: Option<FrameChunks>) -> (Tensor<5>, FrameChunks) {
        let I2VGenXLUNetInput { sample, timesteps, encoder_hidden_states, fps, image_latents, image_embeddings } =
            input;
        let [b, _, f, h, w] = sample.dims();
        let device = sample.device();
        let c0 = self.config.block_out_channels[0];

        // 1. time
        let t_emb = self.backbone.time_embedding.forward(timestep_embedding(&timesteps, c0, true, 0.0, &device));
        // 2. FPS
        let [f1, f2] = &self.fps_embedding;
        let fps_emb = f2.forward(f1.forward_act(timestep_embedding(&fps, c0, true, 0.0, &device), Act::Silu));
        // 3. time + FPS embeddings, one per frame
        let emb = repeat_interleave(t_emb + fps_emb, f);

        // 4. context embeddings: text + image-latent + image-embedding tokens, one per video
        //    (diffusers repeats them per frame; the cross-attention shares them instead)
        let context = self.context(encoder_hidden_states, &image_latents, image_embeddings);

        // 5.–9. the image latents beside the sample, then the shared backbone
        let x = Tensor::cat(vec![sample, self.image_path(image_latents)], 1);
        let x = x.swap_dims(1, 2).reshape([b * f, 2 * self.config.in_channels, h, w]);
        let (x, deep) = self.backbone.forward_cached(x, &emb, &context, f, deep);
        let c_out = self.config.out_channels;
        (x.reshape([b, f, c_out, h, w]).swap_dims(1, 2), deep)
    }
}
