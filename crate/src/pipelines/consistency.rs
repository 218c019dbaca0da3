//! The dimensions two files of a model folder must agree on, checked from the configs and the
//! tokenizer alone, before any weight is read. Each file can be valid on its own and the folder
//! still mix two models (a text encoder of one checkpoint, a UNet of another): without this the
//! mismatch would surface as a shape panic deep in a forward pass, after the whole download,
//! and a panic in the browser kills the worker.

use crate::loading::config::ConfigFile;
use crate::loading::folder::{self, PipelineKind, TensorSource};
use crate::loading::tokenizer::CLIPTokenizer;
use crate::models::clip::{CLIPTextConfig, CLIPVisionConfig};
use crate::models::unet_3d_condition::UNet3DConditionModelConfig;
use crate::models::unet_i2vgen_xl::I2VGenXLUNetConfig;
use crate::models::vae::AutoencoderKLConfig;
use crate::pipelines::memory_plan::Configs;
use crate::pipelines::pipeline_i2vgen_xl::CLIPImageProcessorConfig;
use crate::{Error, Result};

/// The latent channels `I2VGenXLUNet`'s image path reads: diffusers builds
/// `image_latents_proj_in.0` and `image_latents_context_embedding.0` as `nn.Conv2d(4, …)` whatever
/// the config says, and feeds them the VAE's latent of the first frame.
pub const IMAGE_LATENT_CHANNELS: usize = 4;

const TEXT: &str = CLIPTextConfig::FILE;
const VISION: &str = CLIPVisionConfig::FILE;
const VAE: &str = AutoencoderKLConfig::FILE;
/// Both UNet config types are read from this file.
const UNET: &str = UNet3DConditionModelConfig::FILE;
const PROCESSOR: &str = CLIPImageProcessorConfig::FILE;
const TOKENIZER_CONFIG: &str = "tokenizer/tokenizer_config.json";

/// Every dimension two of the pipeline's files must agree on. `configs.image_encoder` is `Some`
/// for the base pipeline (an `I2VGenXLUNet`), `None` for the refiner; `tokenizer` and
/// `feature_extractor` are checked where the caller has them (the memory plan reads only the
/// four network configs).
pub fn check(
    configs: &Configs,
    tokenizer: Option<&CLIPTokenizer>,
    feature_extractor: Option<&CLIPImageProcessorConfig>,
) -> Result<()> {
    let Configs { text_encoder: text, image_encoder: vision, vae, unet } = *configs;
    equal(
        (TEXT, "hidden_size", text.hidden_size),
        (UNET, "cross_attention_dim", unet.cross_attention_dim),
        "the UNet's cross-attention reads the text encoder's hidden states",
    )?;
    equal(
        (VAE, "latent_channels", vae.latent_channels),
        (UNET, "in_channels", unet.in_channels),
        "the UNet denoises the VAE's latents",
    )?;
    equal(
        (VAE, "latent_channels", vae.latent_channels),
        (UNET, "out_channels", unet.out_channels),
        "each step updates the latents with the UNet's prediction",
    )?;
    if let Some(vision) = vision {
        equal(
            (VISION, "projection_dim", vision.projection_dim),
            (UNET, "cross_attention_dim", unet.cross_attention_dim),
            "the UNet's context_embedding reads the image embedding",
        )?;
        if vae.latent_channels != IMAGE_LATENT_CHANNELS {
            return Err(mismatch(
                VAE,
                format!("`latent_channels` is {}", vae.latent_channels),
                format!("an I2VGenXLUNet ({UNET}) reads {IMAGE_LATENT_CHANNELS}-channel image latents"),
            ));
        }
        if let Some(processor) = feature_extractor {
            let (width, height) = processor.crop_size.width_height();
            for (key, side) in [("crop_size width", width), ("crop_size height", height)] {
                equal(
                    (VISION, "image_size", vision.image_size),
                    (PROCESSOR, key, side),
                    "the image encoder's position embeddings are made for that size",
                )?;
            }
        }
    }
    if let Some(tokenizer) = tokenizer {
        let length = tokenizer.model_max_length();
        if length > text.max_position_embeddings {
            return Err(mismatch(
                TOKENIZER_CONFIG,
                format!("`model_max_length` is {length}"),
                format!(
                    "{TEXT} has `max_position_embeddings` {}, one per token of a prompt padded to `model_max_length`",
                    text.max_position_embeddings
                ),
            ));
        }
        let id = tokenizer.max_token_id() as usize;
        if id >= text.vocab_size {
            return Err(mismatch(
                "tokenizer",
                format!("the vocabulary and added tokens (vocab.json, tokenizer_config.json) give ids up to {id}"),
                format!("{TEXT} has `vocab_size` {}, so the text encoder has no embedding for them", text.vocab_size),
            ));
        }
    }
    Ok(())
}

/// Read the text files of a `kind` folder (configs and tokenizer, no weight) and [`check`] that
/// they agree; the tokenizer it read is returned for the caller to keep. A pipeline's `load`
/// calls it before building any network; a caller that streams weights can call it once the
/// text files are in, before the download.
pub fn check_folder(source: &mut dyn TensorSource, kind: PipelineKind) -> Result<CLIPTokenizer> {
    // Unknown keys are noted when the networks are built; noting them here too would repeat them.
    let notes = &mut Vec::new();
    let tokenizer = folder::tokenizer(source)?;
    let text: CLIPTextConfig = folder::config(source, notes)?;
    let vae: AutoencoderKLConfig = folder::config(source, notes)?;
    match kind {
        PipelineKind::I2VGenXL => {
            let vision: CLIPVisionConfig = folder::config(source, notes)?;
            let unet: I2VGenXLUNetConfig = folder::config(source, notes)?;
            let processor: CLIPImageProcessorConfig = folder::config(source, notes)?;
            let configs = Configs { text_encoder: &text, image_encoder: Some(&vision), vae: &vae, unet: &unet.unet };
            check(&configs, Some(&tokenizer), Some(&processor))?;
        }
        PipelineKind::VideoToVideoSD => {
            let unet: UNet3DConditionModelConfig = folder::config(source, notes)?;
            let configs = Configs { text_encoder: &text, image_encoder: None, vae: &vae, unet: &unet.unet };
            check(&configs, Some(&tokenizer), None)?;
        }
    }
    Ok(tokenizer)
}

/// `(file, key, value)` of `a` equals that of `b`, because `why`; the error is about `b`'s file.
fn equal(a: (&str, &str, usize), b: (&str, &str, usize), why: &str) -> Result<()> {
    let ((a_file, a_key, a_value), (b_file, b_key, b_value)) = (a, b);
    if a_value == b_value {
        return Ok(());
    }
    Err(mismatch(
        b_file,
        format!("`{b_key}` is {b_value}"),
        format!("{a_file} has `{a_key}` {a_value}, and they must be equal: {why}"),
    ))
}

/// One sentence naming both files: what `file` says, what the other file says, and what to do.
fn mismatch(file: &str, found: String, other: String) -> Error {
    Error::Config {
        file: file.to_string(),
        message: format!("{found} but {other}; the model folder mixes files of different models — download it again."),
    }
}
