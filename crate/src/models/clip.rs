//! transformers `models/clip/modeling_clip.py`: `CLIPTextModel` (with the clip_skip output
//! I2VGen-XL uses) and `CLIPVisionModelWithProjection`.

use std::collections::BTreeMap;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Result;
use crate::loading::config::{
    ConfigFile, MAX_LAYERS, MAX_WIDTH, check_divides, check_positive, check_range, expect_model_type,
};
use crate::loading::tokenizer::CLIPTokenizer;
use crate::loading::weights::{Weights, key};
use crate::models::attention::multi_head;
use crate::models::nn::{Activation, Conv2d, LayerNorm, Linear};

const IGNORED: &[&str] = &[
    "architectures",
    "attention_dropout",
    "dropout",
    "initializer_factor",
    "initializer_range",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "model_type",
    "projection_dim",
    "output_hidden_states",
    "return_dict",
    "use_cache",
];

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CLIPTextConfig {
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "defaults::text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "defaults::text_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "defaults::text_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "defaults::text_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "defaults::max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "defaults::act")]
    pub hidden_act: Activation,
    #[serde(default = "defaults::eps")]
    pub layer_norm_eps: f64,
}

impl ConfigFile for CLIPTextConfig {
    const FILE: &'static str = "text_encoder/config.json";
    const IGNORED: &'static [&'static str] = IGNORED;
    fn check_class(json: &BTreeMap<String, Value>) -> Result<()> {
        expect_model_type(Self::FILE, json, "clip_text_model")
    }

    fn validate(&self) -> Result<()> {
        let file = Self::FILE;
        // CLIP's BPE vocabulary has 49,408 tokens; a million leaves room for any tokenizer.
        check_range(file, "vocab_size", self.vocab_size, 1..=1 << 20)?;
        // Prompts are 77 tokens; longer position tables exist, not thousands of entries.
        check_range(file, "max_position_embeddings", self.max_position_embeddings, 1..=MAX_POSITIONS)?;
        check_encoder(
            file,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.layer_norm_eps,
        )
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CLIPVisionConfig {
    #[serde(default = "defaults::vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "defaults::vision_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "defaults::vision_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "defaults::vision_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "defaults::channels")]
    pub num_channels: usize,
    #[serde(default = "defaults::image_size")]
    pub image_size: usize,
    #[serde(default = "defaults::patch_size")]
    pub patch_size: usize,
    #[serde(default = "defaults::projection_dim")]
    pub projection_dim: usize,
    #[serde(default = "defaults::act")]
    pub hidden_act: Activation,
    #[serde(default = "defaults::eps")]
    pub layer_norm_eps: f64,
}

impl ConfigFile for CLIPVisionConfig {
    const FILE: &'static str = "image_encoder/config.json";
    const IGNORED: &'static [&'static str] = IGNORED;
    fn check_class(json: &BTreeMap<String, Value>) -> Result<()> {
        expect_model_type(Self::FILE, json, "clip_vision_model")
    }

    fn validate(&self) -> Result<()> {
        let file = Self::FILE;
        // The pipeline hands the encoder RGB pixels.
        check_range(file, "num_channels", self.num_channels, 3..=3)?;
        check_range(file, "image_size", self.image_size, 1..=MAX_IMAGE_SIZE)?;
        check_range(file, "patch_size", self.patch_size, 1..=self.image_size)?;
        check_range(file, "projection_dim", self.projection_dim, 1..=MAX_WIDTH)?;
        check_encoder(
            file,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.layer_norm_eps,
        )
    }
}

/// The most positions a text encoder may have (real ones: 77).
const MAX_POSITIONS: usize = 4096;

/// The largest square the image encoder may look at (real ones: 224 to 336).
pub const MAX_IMAGE_SIZE: usize = 4096;

/// The encoder keys both CLIP configs share.
fn check_encoder(file: &str, hidden: usize, intermediate: usize, layers: usize, heads: usize, eps: f64) -> Result<()> {
    check_range(file, "hidden_size", hidden, 1..=MAX_WIDTH)?;
    check_range(file, "intermediate_size", intermediate, 1..=MAX_WIDTH)?;
    check_range(file, "num_hidden_layers", layers, 1..=MAX_LAYERS)?;
    check_divides(file, "num_attention_heads", heads, "hidden_size", &[hidden])?;
    check_positive(file, "layer_norm_eps", eps)
}

/// transformers' `__init__` defaults (the configs of openai/clip-vit-base-patch32).
mod defaults {
    use crate::models::nn::Activation;
    pub fn vocab_size() -> usize {
        49408
    }
    pub fn text_hidden() -> usize {
        512
    }
    pub fn text_intermediate() -> usize {
        2048
    }
    pub fn text_layers() -> usize {
        12
    }
    pub fn text_heads() -> usize {
        8
    }
    pub fn max_positions() -> usize {
        77
    }
    pub fn vision_hidden() -> usize {
        768
    }
    pub fn vision_intermediate() -> usize {
        3072
    }
    pub fn vision_layers() -> usize {
        12
    }
    pub fn vision_heads() -> usize {
        12
    }
    pub fn channels() -> usize {
        3
    }
    pub fn image_size() -> usize {
        224
    }
    pub fn patch_size() -> usize {
        32
    }
    pub fn projection_dim() -> usize {
        512
    }
    pub fn act() -> Activation {
        Activation::QuickGelu
    }
    pub fn eps() -> f64 {
        1e-5
    }
}

/// `CLIPAttention`: q/k/v/out projections, scale head_dim^-0.5.
#[derive(Clone, Debug)]
pub struct CLIPAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    heads: usize,
}

/// `CLIPEncoderLayer`: pre-norm self-attention and MLP, each with a residual.
#[derive(Clone, Debug)]
pub struct CLIPEncoderLayer {
    pub layer_norm1: LayerNorm,
    pub self_attn: CLIPAttention,
    pub layer_norm2: LayerNorm,
    /// `mlp.fc1`, `mlp.fc2`
    pub fc1: Linear,
    pub fc2: Linear,
    act: Activation,
}

impl CLIPEncoderLayer {
    fn load(
        w: &mut Weights,
        prefix: &str,
        hidden: usize,
        inter: usize,
        heads: usize,
        act: Activation,
        eps: f64,
    ) -> Result<Self> {
        let attn = key(prefix, "self_attn");
        let proj = |w: &mut Weights, name: &str| Linear::load(w, &key(&attn, name), hidden, hidden, true);
        Ok(Self {
            layer_norm1: LayerNorm::load(w, &key(prefix, "layer_norm1"), hidden, eps)?,
            self_attn: CLIPAttention {
                q_proj: proj(w, "q_proj")?,
                k_proj: proj(w, "k_proj")?,
                v_proj: proj(w, "v_proj")?,
                out_proj: proj(w, "out_proj")?,
                heads,
            },
            layer_norm2: LayerNorm::load(w, &key(prefix, "layer_norm2"), hidden, eps)?,
            fc1: Linear::load(w, &key(prefix, "mlp.fc1"), hidden, inter, true)?,
            fc2: Linear::load(w, &key(prefix, "mlp.fc2"), inter, hidden, true)?,
            act,
        })
    }

    /// # Shapes
    /// `[B, T, hidden]` → `[B, T, hidden]`
    fn forward(&self, x: Tensor<3>, causal: bool) -> Tensor<3> {
        let h = self.layer_norm1.forward(x.clone());
        let a = &self.self_attn;
        let h =
            multi_head(a.q_proj.forward(h.clone()), a.k_proj.forward(h.clone()), a.v_proj.forward(h), a.heads, causal);
        let x = a.out_proj.forward_add(h, x);
        let h = self.fc1.forward_act(self.layer_norm2.forward(x.clone()), self.act.act());
        self.fc2.forward_add(h, x)
    }
}

#[allow(clippy::too_many_arguments)]
fn load_layers(
    w: &mut Weights,
    prefix: &str,
    n: usize,
    hidden: usize,
    inter: usize,
    heads: usize,
    act: Activation,
    eps: f64,
) -> Result<Vec<CLIPEncoderLayer>> {
    (0..n)
        .map(|i| {
            CLIPEncoderLayer::load(w, &key(prefix, &format!("encoder.layers.{i}")), hidden, inter, heads, act, eps)
        })
        .collect()
}

/// `CLIPTextModel` in the hub layout (`text_model.` prefix).
#[derive(Clone, Debug)]
pub struct CLIPTextModel {
    pub token_embedding: Tensor<2>,
    pub position_embedding: Tensor<2>,
    pub layers: Vec<CLIPEncoderLayer>,
    pub final_layer_norm: LayerNorm,
    pub config: CLIPTextConfig,
}

/// What I2VGen-XL and the refiner read from the text encoder.
pub struct CLIPTextOutput {
    /// `final_layer_norm(hidden_states[-1])`: `[B, 77, hidden]`.
    pub last_hidden_state: Tensor<3>,
    /// `final_layer_norm(hidden_states[-2])` (clip_skip = 1): `[B, 77, hidden]`.
    pub penultimate_normed: Tensor<3>,
}

impl CLIPTextModel {
    pub fn load(w: &mut Weights, c: &CLIPTextConfig) -> Result<Self> {
        let p = "text_model";
        w.discard("text_model.embeddings.position_ids");
        let h = c.hidden_size;
        Ok(Self {
            token_embedding: w.take("text_model.embeddings.token_embedding.weight", [c.vocab_size, h])?,
            position_embedding: w
                .take("text_model.embeddings.position_embedding.weight", [c.max_position_embeddings, h])?,
            layers: load_layers(
                w,
                p,
                c.num_hidden_layers,
                h,
                c.intermediate_size,
                c.num_attention_heads,
                c.hidden_act,
                c.layer_norm_eps,
            )?,
            final_layer_norm: LayerNorm::load(w, "text_model.final_layer_norm", h, c.layer_norm_eps)?,
            config: c.clone(),
        })
    }

    /// # Shapes
    /// input_ids `[B, T]` (T ≤ max_position_embeddings) → outputs `[B, T, hidden]`
    /// Tokenize `prompts` (padded to the tokenizer's length) and encode them as one batch.
    pub fn encode_prompts(&self, tokenizer: &CLIPTokenizer, prompts: &[&str], device: &Device) -> CLIPTextOutput {
        let ids: Vec<i64> = prompts.iter().flat_map(|p| tokenizer.encode(p)).map(i64::from).collect();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(ids, [prompts.len(), tokenizer.model_max_length()]), device);
        self.forward(ids)
    }

    pub fn forward(&self, input_ids: Tensor<2, Int>) -> CLIPTextOutput {
        let [b, t] = input_ids.dims();
        let hidden = self.token_embedding.dims()[1];
        // 1. embeddings
        let tokens = self.token_embedding.clone().select(0, input_ids.reshape([b * t])).reshape([b, t, hidden]);
        let positions = self.position_embedding.clone().slice([0..t]).unsqueeze::<3>();
        let mut x = tokens + positions;
        // 2. causal encoder; keep the input of the last layer (hidden_states[-2])
        let mut penultimate = x.clone();
        for layer in &self.layers {
            penultimate = x.clone();
            x = layer.forward(x, true);
        }
        // 3. final norm on both
        CLIPTextOutput {
            last_hidden_state: self.final_layer_norm.forward(x),
            penultimate_normed: self.final_layer_norm.forward(penultimate),
        }
    }
}

/// `CLIPVisionModelWithProjection` → `image_embeds`.
#[derive(Clone, Debug)]
pub struct CLIPVisionModelWithProjection {
    pub class_embedding: Tensor<1>,
    pub patch_embedding: Conv2d,
    pub position_embedding: Tensor<2>,
    /// Upstream's spelling.
    pub pre_layrnorm: LayerNorm,
    pub layers: Vec<CLIPEncoderLayer>,
    pub post_layernorm: LayerNorm,
    pub visual_projection: Linear,
    pub config: CLIPVisionConfig,
}

impl CLIPVisionModelWithProjection {
    pub fn load(w: &mut Weights, c: &CLIPVisionConfig) -> Result<Self> {
        let p = "vision_model";
        w.discard("vision_model.embeddings.position_ids");
        let h = c.hidden_size;
        let positions = (c.image_size / c.patch_size).pow(2) + 1;
        Ok(Self {
            class_embedding: w.take("vision_model.embeddings.class_embedding", [h])?,
            patch_embedding: Conv2d::load(
                w,
                "vision_model.embeddings.patch_embedding",
                c.num_channels,
                h,
                c.patch_size,
                c.patch_size,
                0,
                false,
            )?,
            position_embedding: w.take("vision_model.embeddings.position_embedding.weight", [positions, h])?,
            pre_layrnorm: LayerNorm::load(w, "vision_model.pre_layrnorm", h, c.layer_norm_eps)?,
            layers: load_layers(
                w,
                p,
                c.num_hidden_layers,
                h,
                c.intermediate_size,
                c.num_attention_heads,
                c.hidden_act,
                c.layer_norm_eps,
            )?,
            post_layernorm: LayerNorm::load(w, "vision_model.post_layernorm", h, c.layer_norm_eps)?,
            visual_projection: Linear::load(w, "visual_projection", h, c.projection_dim, false)?,
            config: c.clone(),
        })
    }

    /// # Shapes
    /// pixel_values `[B, 3, S, S]` (normalised) → image_embeds `[B, projection_dim]`
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<2> {
        // 1. patches + class token + positions
        let patches = self.patch_embedding.forward(pixel_values);
        let [b, h, gh, gw] = patches.dims();
        let patches = patches.reshape([b, h, gh * gw]).swap_dims(1, 2);
        let class = self.class_embedding.clone().reshape([1, 1, h]).expand([b, 1, h]);
        let x = Tensor::cat(vec![class, patches], 1) + self.position_embedding.clone().unsqueeze::<3>();
        // 2. encoder
        let mut x = self.pre_layrnorm.forward(x);
        for layer in &self.layers {
            x = layer.forward(x, false);
        }
        // 3. pooled class token → projection
        let pooled = self.post_layernorm.forward(x.slice([0..b, 0..1]).reshape([b, h]));
        self.visual_projection.forward(pooled)
    }
}
