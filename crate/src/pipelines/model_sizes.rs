//! A pipeline's parameter counts from its configs alone: the networks are built with
//! [`Weights::shapes`], which records every tensor's shape at no memory cost. The memory plan can
//! then size a run before a single weight is downloaded (the page) or without weights at all
//! (`i2vgen plan`).

use burn::tensor::Device;

use crate::Result;
use crate::loading::config::parse;
use crate::loading::weights::Weights;
use crate::models::clip::{CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection};
use crate::models::unet_3d_backbone::UNet3DConfig;
use crate::models::unet_3d_condition::{UNet3DConditionModel, UNet3DConditionModelConfig};
use crate::models::unet_i2vgen_xl::{I2VGenXLUNet, I2VGenXLUNetConfig};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::pipelines::consistency;
use crate::pipelines::memory_plan::{self, Configs, DeviceLimits, MemoryPlan, Parameters, Precision, Video};

/// The config texts of one pipeline: the base model's (with an image encoder and an
/// `I2VGenXLUNet`) or the refiner's (none, and a `UNet3DConditionModel`).
pub struct ConfigTexts<'a> {
    pub text_encoder: &'a str,
    pub image_encoder: Option<&'a str>,
    pub vae: &'a str,
    pub unet: &'a str,
}

/// The configs of one pipeline and the parameters they build, ready to plan.
pub struct ModelSizes {
    text: CLIPTextConfig,
    vision: Option<CLIPVisionConfig>,
    vae: AutoencoderKLConfig,
    unet: UNet3DConfig,
    pub params: Parameters,
}

impl ModelSizes {
    /// Parse the configs, check that they agree ([`consistency::check`]) and count what their
    /// networks take. `device` only holds one-element placeholders; nothing is computed on it.
    pub fn new(texts: &ConfigTexts, device: &Device) -> Result<Self> {
        let text: CLIPTextConfig = parse(texts.text_encoder)?.config;
        let vision: Option<CLIPVisionConfig> = texts.image_encoder.map(parse).transpose()?.map(|p| p.config);
        let vae: AutoencoderKLConfig = parse(texts.vae)?.config;
        let unet = match vision {
            Some(_) => UNetConfig::Base(parse(texts.unet)?.config),
            None => UNetConfig::Refiner(parse(texts.unet)?.config),
        };
        let configs = Configs { text_encoder: &text, image_encoder: vision.as_ref(), vae: &vae, unet: unet.shared() };
        consistency::check(&configs, None, None)?;
        let mut params = Parameters::default();
        count(&mut params, "text_encoder", device, |w| CLIPTextModel::load(w, &text).map(drop))?;
        if let Some(vision) = &vision {
            count(&mut params, "image_encoder", device, |w| CLIPVisionModelWithProjection::load(w, vision).map(drop))?;
        }
        count(&mut params, "vae", device, |w| AutoencoderKL::load(w, &vae).map(drop))?;
        match &unet {
            UNetConfig::Base(c) => count(&mut params, "unet", device, |w| I2VGenXLUNet::load(w, c).map(drop))?,
            UNetConfig::Refiner(c) => {
                count(&mut params, "unet", device, |w| UNet3DConditionModel::load(w, c).map(drop))?
            }
        }
        let unet = unet.shared().clone();
        Ok(Self { text, vision, vae, unet, params })
    }

    /// The memory plan of a run of this pipeline; refuses what cannot fit, with its sentence.
    pub fn plan(&self, video: Video, precision: Precision, limits: DeviceLimits) -> Result<MemoryPlan> {
        let configs =
            Configs { text_encoder: &self.text, image_encoder: self.vision.as_ref(), vae: &self.vae, unet: &self.unet };
        memory_plan::plan(&configs, &self.params, video, precision, limits)
    }
}

/// `unet/config.json` of either pipeline.
enum UNetConfig {
    Base(I2VGenXLUNetConfig),
    Refiner(UNet3DConditionModelConfig),
}

impl UNetConfig {
    /// The keys both UNets read.
    fn shared(&self) -> &UNet3DConfig {
        match self {
            Self::Base(c) => &c.unet,
            Self::Refiner(c) => &c.unet,
        }
    }
}

/// Build one network with `Weights::shapes` and count its tensors into `params`.
fn count(
    params: &mut Parameters,
    component: &str,
    device: &Device,
    build: impl FnOnce(&mut Weights) -> Result<()>,
) -> Result<()> {
    let mut weights = Weights::shapes(device);
    build(&mut weights)?;
    for (key, shape) in weights.recorded() {
        params.add(component, &key, &shape);
    }
    Ok(())
}
