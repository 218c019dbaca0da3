//! diffusers `models/unets/unet_3d_condition.py`: `UNet3DConditionModel`, the text-to-video /
//! video-to-video UNet of ModelScope, zeroscope_v2 and MS-Vid2Vid-XL (the refinement stage).
//! The shared backbone conditioned on the time embedding and the text only.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::loading::config::{ConfigFile, expect_class_name};
use crate::loading::weights::Weights;
use crate::models::embeddings::timestep_embedding;
use crate::models::frame_chunks::FrameChunks;
use crate::models::unet_3d_backbone::{UNet3DBackbone, UNet3DConfig, repeat_interleave};
use crate::{Error, Result};

/// The real refiner UNet's config (zeroscope_v2_XL; MS-Vid2Vid-XL has the same architecture).
pub const REFINER_CONFIG: &str = include_str!("../../configs/refiner/unet/config.json");

/// `unet/config.json` of a `UNet3DConditionModel`: the shared keys, plus knobs that must keep
/// the values every released checkpoint uses (anything else is refused, not misread).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct UNet3DConditionModelConfig {
    #[serde(flatten)]
    pub unet: UNet3DConfig,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    /// diffusers refuses any value here (its legacy naming issue).
    #[serde(default)]
    pub num_attention_heads: Option<Value>,
}

fn one() -> usize {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn silu() -> String {
    "silu".into()
}
fn eps() -> f64 {
    1e-5
}

impl ConfigFile for UNet3DConditionModelConfig {
    const FILE: &'static str = "unet/config.json";
    const IGNORED: &'static [&'static str] = &["sample_size"];
    fn check_class(json: &BTreeMap<String, Value>) -> Result<()> {
        expect_class_name(Self::FILE, json, &["UNet3DConditionModel"])
    }

    fn validate(&self) -> Result<()> {
        self.unet.validate(Self::FILE)?;
        let unsupported = |key: &str, value: String, supported: &str| {
            Err(Error::Config {
                file: Self::FILE.into(),
                message: format!("{key} {value} is not supported (only {supported})"),
            })
        };
        if self.downsample_padding != 1 {
            return unsupported("downsample_padding", self.downsample_padding.to_string(), "1");
        }
        if self.mid_block_scale_factor != 1.0 {
            return unsupported("mid_block_scale_factor", self.mid_block_scale_factor.to_string(), "1");
        }
        if self.act_fn != "silu" {
            return unsupported("act_fn", format!("{:?}", self.act_fn), "\"silu\"");
        }
        if self.norm_eps != 1e-5 {
            return unsupported("norm_eps", self.norm_eps.to_string(), "1e-5");
        }
        if let Some(dim) = self.time_cond_proj_dim {
            return unsupported("time_cond_proj_dim", dim.to_string(), "null");
        }
        if let Some(heads) = self.num_attention_heads.as_ref().filter(|v| !v.is_null()) {
            return unsupported("num_attention_heads", heads.to_string(), "null; diffusers refuses it too");
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct UNet3DConditionModel {
    /// Every tensor of the checkpoint: this UNet is the backbone with no extra conditioning.
    pub backbone: UNet3DBackbone,
    pub config: UNet3DConfig,
}

impl UNet3DConditionModel {
    pub fn load(w: &mut Weights, config: &UNet3DConditionModelConfig) -> Result<Self> {
        config.validate()?;
        let c = &config.unet;
        Ok(Self { backbone: UNet3DBackbone::load(w, c, c.in_channels)?, config: c.clone() })
    }

    /// The noise (or v) prediction; one timestep per batch element.
    ///
    /// # Shapes
    /// sample `[B, C, F, h, w]`, encoder_hidden_states `[B, S, cross_attention_dim]`
    /// → `[B, out_channels, F, h, w]`
    pub fn forward(&self, sample: Tensor<5>, timesteps: &[f32], encoder_hidden_states: Tensor<3>) -> Tensor<5> {
        self.forward_cached(sample, timesteps, encoder_hidden_states, None).0
    }

    /// [`Self::forward`] with DeepCache's step caching, and the deep features to pass to a later
    /// shallow step: `deep: None` is the full forward, `Some` a shallow step on features from an
    /// earlier step (see [`UNet3DBackbone::forward_cached`]).
    ///
    /// # Shapes
    /// sample `[B, C, F, h, w]`, encoder_hidden_states `[B, S, cross_attention_dim]`,
    /// deep `[B*F, deep_features_channels, h, w]`
    /// → (`[B, out_channels, F, h, w]`, deep `[B*F, deep_features_channels, h, w]`)
    pub fn forward_cached(
        &self,
        sample: Tensor<5>,
        timesteps: &[f32],
        encoder_hidden_states: Tensor<3>,
        deep: Option<FrameChunks>,
    ) -> (Tensor<5>, FrameChunks) {
        let [b, c, f, h, w] = sample.dims();
        let c0 = self.config.block_out_channels[0];
        // 1. time, one embedding per frame; the text once per video (diffusers repeats it per
        //    frame; the cross-attention shares it instead)
        let t = timestep_embedding(timesteps, c0, true, 0.0, &sample.device());
        let emb = repeat_interleave(self.backbone.time_embedding.forward(t), f);
        // 2.–6. the shared backbone
        let x = sample.swap_dims(1, 2).reshape([b * f, c, h, w]);
        let (x, deep) = self.backbone.forward_cached(x, &emb, &encoder_hidden_states, f, deep);
        (x.reshape([b, f, self.config.out_channels, h, w]).swap_dims(1, 2), deep)
    }
}
