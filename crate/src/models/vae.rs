//! diffusers `models/autoencoders/autoencoder_kl.py` + `vae.py`: `AutoencoderKL` (SD 2.1's VAE,
//! the content encoder and the frame decoder of I2VGen-XL).

use std::collections::BTreeMap;

use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::loading::config::{
    ConfigFile, MAX_LAYERS, MAX_WIDTH, check_divides, check_each, check_positive, check_range, expect_class_name,
    invalid,
};
use crate::loading::weights::{Weights, key};
use crate::models::attention::Attention;
use crate::models::nn::{Activation, Conv2d, GroupNorm, MAX_ELEMENTS};
use crate::models::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::models::vae_bands::{Bands, decode_bands, encode_bands};
use crate::{Error, Result};

/// The VAE's norms use eps 1e-6 (diffusers hard-codes it for Encoder/Decoder blocks).
const EPS: f64 = 1e-6;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AutoencoderKLConfig {
    #[serde(default = "defaults::three")]
    pub in_channels: usize,
    #[serde(default = "defaults::three")]
    pub out_channels: usize,
    #[serde(default = "defaults::down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "defaults::up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "defaults::block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "defaults::one")]
    pub layers_per_block: usize,
    #[serde(default = "defaults::act_fn")]
    pub act_fn: Activation,
    #[serde(default = "defaults::latent_channels")]
    pub latent_channels: usize,
    #[serde(default = "defaults::norm_num_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "defaults::scaling_factor")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "defaults::yes")]
    pub use_quant_conv: bool,
    #[serde(default = "defaults::yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "defaults::yes")]
    pub mid_block_add_attention: bool,
}

mod defaults {
    use crate::models::nn::Activation;
    pub fn three() -> usize {
        3
    }
    pub fn one() -> usize {
        1
    }
    pub fn down_block_types() -> Vec<String> {
        vec!["DownEncoderBlock2D".into()]
    }
    pub fn up_block_types() -> Vec<String> {
        vec!["UpDecoderBlock2D".into()]
    }
    pub fn block_out_channels() -> Vec<usize> {
        vec![64]
    }
    pub fn act_fn() -> Activation {
        Activation::Silu
    }
    pub fn latent_channels() -> usize {
        4
    }
    pub fn norm_num_groups() -> usize {
        32
    }
    pub fn scaling_factor() -> f64 {
        0.18215
    }
    pub fn yes() -> bool {
        true
    }
}

impl ConfigFile for AutoencoderKLConfig {
    const FILE: &'static str = "vae/config.json";
    const IGNORED: &'static [&'static str] = &["sample_size", "force_upcast", "latents_mean", "latents_std"];
    fn check_class(json: &BTreeMap<String, Value>) -> Result<()> {
        expect_class_name(Self::FILE, json, &["AutoencoderKL"])
    }

    fn validate(&self) -> Result<()> {
        let file = Self::FILE;
        let bad = |message: String| Err(Error::Config { file: file.into(), message });
        if self.act_fn != Activation::Silu {
            return bad(format!("act_fn {:?} is not supported (only silu)", self.act_fn));
        }
        // The page and the CLI hand the VAE RGB pictures and read RGB back.
        for (key, channels) in [("in_channels", self.in_channels), ("out_channels", self.out_channels)] {
            check_range(file, key, channels, 3..=3)?;
        }
        // 8 blocks already scale 128×; `downscale` shifts by the count.
        if !(1..=8).contains(&self.block_out_channels.len()) {
            let found = format!("{:?}", self.block_out_channels);
            return Err(invalid(file, "block_out_channels", found, "it must list 1 to 8 widths"));
        }
        check_each(file, "block_out_channels", &self.block_out_channels, 1..=MAX_WIDTH)?;
        if self.down_block_types.iter().any(|t| t != "DownEncoderBlock2D")
            || self.up_block_types.iter().any(|t| t != "UpDecoderBlock2D")
            || self.down_block_types.len() != self.block_out_channels.len()
            || self.up_block_types.len() != self.block_out_channels.len()
        {
            return bad(
                "only DownEncoderBlock2D/UpDecoderBlock2D, one per block_out_channels entry, are supported".into()
            );
        }
        check_range(file, "layers_per_block", self.layers_per_block, 1..=MAX_LAYERS)?;
        check_range(file, "latent_channels", self.latent_channels, 1..=MAX_WIDTH)?;
        check_divides(file, "norm_num_groups", self.norm_num_groups, "block_out_channels", &self.block_out_channels)?;
        check_positive(file, "scaling_factor", self.scaling_factor)?;
        if self.shift_factor.is_some_and(|s| s != 0.0) {
            return bad("shift_factor is not supported".into());
        }
        Ok(())
    }
}

impl AutoencoderKLConfig {
    /// The spatial factor between pixels and latents (8 for SD's VAE).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// `UNetMidBlock2D` of the VAE: resnet → self-attention (one head over all channels) → resnet.
#[derive(Clone, Debug)]
pub struct UNetMidBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    /// `attentions.0.group_norm` and its `Attention`.
    pub group_norm: Option<GroupNorm>,
    pub attention: Option<Attention>,
}

impl UNetMidBlock2D {
    fn load(w: &mut Weights, prefix: &str, c: usize, groups: usize, attention: bool) -> Result<Self> {
        let resnet = |w: &mut Weights, i: usize| {
            ResnetBlock2D::load(w, &key(prefix, &format!("resnets.{i}")), c, c, None, groups, EPS)
        };
        let first = resnet(w, 0)?;
        let attn = key(prefix, "attentions.0");
        let (group_norm, attention) = if attention {
            (
                Some(GroupNorm::load(w, &key(&attn, "group_norm"), groups, c, EPS)?),
                Some(Attention::load(w, &attn, c, c, 1, c, true)?),
            )
        } else {
            (None, None)
        };
        Ok(Self { resnets: vec![first, resnet(w, 1)?], group_norm, attention })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x, None);
        if let (Some(norm), Some(attn)) = (&self.group_norm, &self.attention) {
            let [n, c, h, w] = x.dims();
            let tokens = norm.forward(x.clone()).reshape([n, c, h * w]).swap_dims(1, 2);
            let out = attn.forward(tokens, None, None).swap_dims(1, 2).reshape([n, c, h, w]);
            x = x + out;
        }
        self.resnets[1].forward(x, None)
    }
}

/// One `DownEncoderBlock2D` or `UpDecoderBlock2D`: resnets then an optional resampler.
#[derive(Clone, Debug)]
pub struct VaeBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsampler: Option<Downsample2D>,
    pub upsampler: Option<Upsample2D>,
}

#[derive(Clone, Debug)]
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<VaeBlock>,
    pub mid_block: UNetMidBlock2D,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

#[derive(Clone, Debug)]
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: UNetMidBlock2D,
    pub up_blocks: Vec<VaeBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

#[derive(Clone, Debug)]
pub struct AutoencoderKL {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quant_conv: Option<Conv2d>,
    pub post_quant_conv: Option<Conv2d>,
    pub config: AutoencoderKLConfig,
    /// No tensor of [`Self::decode_video_frame`] or [`Self::encode_within_limit`] above this many
    /// bytes: larger frames decode and encode in row bands (see `vae_bands`). [`MAX_ELEMENTS`] f32 values (256 MiB) unless changed.
    pub max_tensor_bytes: u64,
}

/// The encoder's diagonal Gaussian, unscaled (multiply a sample by `scaling_factor`).
pub struct LatentDist {
    /// `[N, latent, h, w]`
    pub mean: Tensor<4>,
    /// `[N, latent, h, w]`, clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor<4>,
}

impl LatentDist {
    /// `mean + std * noise` with `noise` ~ N(0, 1) drawn by the caller.
    pub fn sample(&self, noise: Tensor<4>) -> Tensor<4> {
        self.mean.clone() + self.logvar.clone().mul_scalar(0.5).exp() * noise
    }
}

impl AutoencoderKL {
    pub fn load(w: &mut Weights, config: &AutoencoderKLConfig) -> Result<Self> {
        config.validate()?;
        let c = config;
        let g = c.norm_num_groups;
        let ch = &c.block_out_channels;
        let last = *ch.last().expect("validated non-empty");
        let z = c.latent_channels;

        // Encoder
        let mut down_blocks = Vec::new();
        let mut c_out = ch[0];
        for (i, &block_out) in ch.iter().enumerate() {
            let prefix = format!("encoder.down_blocks.{i}");
            let c_in = c_out;
            c_out = block_out;
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    let input = if j == 0 { c_in } else { c_out };
                    ResnetBlock2D::load(w, &format!("{prefix}.resnets.{j}"), input, c_out, None, g, EPS)
                })
                .collect::<Result<_>>()?;
            let downsampler = (i + 1 < ch.len())
                .then(|| Downsample2D::load(w, &format!("{prefix}.downsamplers.0"), c_out, 0))
                .transpose()?;
            down_blocks.push(VaeBlock { resnets, downsampler, upsampler: None });
        }
        let encoder = Encoder {
            conv_in: Conv2d::load(w, "encoder.conv_in", c.in_channels, ch[0], 3, 1, 1, true)?,
            down_blocks,
            mid_block: UNetMidBlock2D::load(w, "encoder.mid_block", last, g, c.mid_block_add_attention)?,
            conv_norm_out: GroupNorm::load(w, "encoder.conv_norm_out", g, last, EPS)?,
            conv_out: Conv2d::load(w, "encoder.conv_out", last, 2 * z, 3, 1, 1, true)?,
        };

        // Decoder: channels reversed, layers_per_block + 1 resnets per block.
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut c_out = reversed[0];
        for (i, &block_out) in reversed.iter().enumerate() {
            let prefix = format!("decoder.up_blocks.{i}");
            let c_in = c_out;
            c_out = block_out;
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    let input = if j == 0 { c_in } else { c_out };
                    ResnetBlock2D::load(w, &format!("{prefix}.resnets.{j}"), input, c_out, None, g, EPS)
                })
                .collect::<Result<_>>()?;
            let upsampler = (i + 1 < reversed.len())
                .then(|| Upsample2D::load(w, &format!("{prefix}.upsamplers.0"), c_out))
                .transpose()?;
            up_blocks.push(VaeBlock { resnets, downsampler: None, upsampler });
        }
        let decoder = Decoder {
            conv_in: Conv2d::load(w, "decoder.conv_in", z, last, 3, 1, 1, true)?,
            mid_block: UNetMidBlock2D::load(w, "decoder.mid_block", last, g, c.mid_block_add_attention)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(w, "decoder.conv_norm_out", g, ch[0], EPS)?,
            conv_out: Conv2d::load(w, "decoder.conv_out", ch[0], c.out_channels, 3, 1, 1, true)?,
        };

        Ok(Self {
            encoder,
            decoder,
            quant_conv: c
                .use_quant_conv
                .then(|| Conv2d::load(w, "quant_conv", 2 * z, 2 * z, 1, 1, 0, true))
                .transpose()?,
            post_quant_conv: c
                .use_post_quant_conv
                .then(|| Conv2d::load(w, "post_quant_conv", z, z, 1, 1, 0, true))
                .transpose()?,
            config: config.clone(),
            max_tensor_bytes: 4 * MAX_ELEMENTS as u64,
        })
    }

    /// # Shapes
    /// sample `[N, 3, H, W]` in [-1, 1] → mean, logvar `[N, latent, H/f, W/f]`
    pub fn encode(&self, sample: Tensor<4>) -> LatentDist {
        let e = &self.encoder;
        let mut x = e.conv_in.forward(sample);
        for block in &e.down_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x, None);
            }
            if let Some(down) = &block.downsampler {
                x = down.forward(x);
            }
        }
        self.encode_mid(x)
    }

    /// [`Self::encode`], in row bands ([`Self::encode_banded`]) when the untiled encode would
    /// hold a tensor above [`Self::max_tensor_bytes`] (one latent row per band when even that is
    /// too much).
    ///
    /// # Shapes
    /// sample `[N, 3, H, W]` in [-1, 1] → mean, logvar `[N, latent, H/f, W/f]`
    pub fn encode_within_limit(&self, sample: Tensor<4>) -> LatentDist {
        let [_, _, height, width] = sample.dims();
        match encode_bands(&self.config, height, width, sample.dtype().size(), self.max_tensor_bytes) {
            Some(Bands { bands: 1, .. }) => self.encode(sample),
            plan => {
                let bands = plan.map_or(height / self.config.downscale(), |plan| plan.bands);
                self.encode_banded(sample, bands)
            }
        }
    }

    /// The latent-resolution part of [`Self::encode`]: mid block, `conv_norm_out`, `conv_out`,
    /// `quant_conv`, the split into mean and clamped logvar.
    ///
    /// # Shapes
    /// `[N, block_out_channels[-1], h, w]` → mean, logvar `[N, latent, h, w]`
    pub(crate) fn encode_mid(&self, x: Tensor<4>) -> LatentDist {
        let e = &self.encoder;
        let mut x = e.mid_block.forward(x);
        x = e.conv_out.forward(e.conv_norm_out.forward_silu(x));
        if let Some(quant) = &self.quant_conv {
            x = quant.forward(x);
        }
        let z = self.config.latent_channels;
        let [n, _, h, w] = x.dims();
        let mean = x.clone().slice([0..n, 0..z, 0..h, 0..w]);
        let logvar = x.slice([0..n, z..2 * z, 0..h, 0..w]).clamp(-30.0, 20.0);
        LatentDist { mean, logvar }
    }

    /// # Shapes
    /// latents `[N, latent, h, w]` (unscaled) → sample `[N, 3, h*f, w*f]`
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        let d = &self.decoder;
        let mut x = self.decode_mid(latents);
        for block in &d.up_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x, None);
            }
            if let Some(up) = &block.upsampler {
                x = up.forward(x, None);
            }
        }
        d.conv_out.forward(d.conv_norm_out.forward_silu(x))
    }

    /// The latent-resolution part of [`Self::decode`]: `post_quant_conv`, `conv_in`, mid block.
    ///
    /// # Shapes
    /// latents `[N, latent, h, w]` → `[N, block_out_channels[-1], h, w]`
    pub(crate) fn decode_mid(&self, latents: Tensor<4>) -> Tensor<4> {
        let d = &self.decoder;
        let x = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents),
            None => latents,
        };
        d.mid_block.forward(d.conv_in.forward(x))
    }

    /// One frame of scaled video latents as a picture: `latents / scaling_factor` through the
    /// decoder, mapped from [-1, 1] to [0, 1] (diffusers' `postprocess_video`), in f32 whatever
    /// the device computes in. In row bands when the untiled decode would hold a tensor above
    /// [`Self::max_tensor_bytes`] (one row of latents per band when even that is too much).
    ///
    /// # Shapes
    /// latents `[1, latent, F, h, w]` → `[H, W, 3]`
    pub fn decode_video_frame(&self, latents: &Tensor<5>, frame: usize) -> Tensor<3> {
        let [_, c, _, h, w] = latents.dims();
        let latent = latents.clone().slice([0..1, 0..c, frame..frame + 1]).reshape([1, c, h, w]);
        let latent = latent.div_scalar(self.config.scaling_factor);
        let image = match decode_bands(&self.config, h, w, latent.dtype().size(), self.max_tensor_bytes) {
            Some(Bands { bands: 1, .. }) => self.decode(latent),
            plan => self.decode_banded(latent, plan.map_or(h, |plan| plan.bands)),
        };
        let [_, channels, height, width] = image.dims();
        let image = (image.div_scalar(2.0).add_scalar(0.5)).clamp(0.0, 1.0);
        image.reshape([channels, height, width]).permute([1, 2, 0]).cast(FloatDType::F32)
    }

    /// The scaled latents of one video frame (`[H, W, 3]` in [0, 1]): the posterior sampled with
    /// `noise`, times `scaling_factor`. In row bands when the untiled encode would hold a tensor
    /// above [`Self::max_tensor_bytes`] ([`Self::encode_within_limit`]).
    ///
    /// # Shapes
    /// frame `[H, W, 3]`, noise `[1, latent, h, w]` → `[1, latent, h, w]`
    pub fn encode_video_frame(&self, frame: Tensor<3>, noise: Tensor<4>) -> Tensor<4> {
        let [height, width, channels] = frame.dims();
        let x = frame.permute([2, 0, 1]).reshape([1, channels, height, width]).mul_scalar(2.0).sub_scalar(1.0);
        self.encode_within_limit(x).sample(noise).mul_scalar(self.config.scaling_factor)
    }
}
