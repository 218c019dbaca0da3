//! `i2vgen forward`: run one component of a diffusers folder on named tensors, for parity checks.

use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::{Device, TensorData};
use clap::ValueEnum;
use i2vgen::models::clip::{CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection};
use i2vgen::models::unet_3d_backbone::UNet3DConfig;
use i2vgen::models::unet_3d_condition::{UNet3DConditionModel, UNet3DConditionModelConfig};
use i2vgen::models::unet_i2vgen_xl::{I2VGenXLUNet, I2VGenXLUNetConfig, I2VGenXLUNetInput};
use i2vgen::models::vae::{AutoencoderKL, AutoencoderKLConfig};

use i2vgen::loading::folder::{self, TensorSource};

use crate::model;
use crate::tensors::{TensorFile, write};

#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Component {
    /// input_ids [B,77] → last_hidden_state, penultimate_normed
    TextEncoder,
    /// pixel_values [B,3,S,S] → image_embeds
    ImageEncoder,
    /// sample [B,3,H,W] in [-1,1] → latent_mean, latent_logvar
    VaeEncode,
    /// latents [B,4,h,w] (unscaled) → sample
    VaeDecode,
    /// I2VGenXLUNet: sample, timestep, encoder_hidden_states, fps, image_latents,
    /// image_embeddings → sample; UNet3DConditionModel: sample, timestep, encoder_hidden_states
    /// → sample (chosen by the config's `_class_name`)
    Unet,
}

fn expect_dims(name: &str, dims: &[usize], rank: usize, check: impl Fn(&[usize]) -> Option<String>) -> Result<()> {
    if dims.len() != rank {
        bail!("`{name}` has shape {dims:?}; expected {rank} dimensions");
    }
    if let Some(problem) = check(dims) {
        bail!("`{name}` has shape {dims:?}: {problem}");
    }
    Ok(())
}

/// Build one component's network, with its notes on stderr.
fn network<C: i2vgen::loading::config::ConfigFile, N>(
    source: &mut dyn TensorSource,
    component: &str,
    device: &Device,
    load: impl FnOnce(&mut i2vgen::loading::weights::Weights, &C) -> i2vgen::Result<N>,
) -> Result<N> {
    let mut notes = Vec::new();
    let net = folder::network(source, component, device, &mut notes, load)?;
    notes.iter().for_each(|note| eprintln!("note: {note}"));
    Ok(net)
}

pub fn run(model_path: &Path, component: Component, inputs: &Path, output: &Path, device: &Device) -> Result<()> {
    let inputs = TensorFile::read(inputs)?;
    let mut source = model::open(model_path)?;
    let model = source.as_mut();
    let outputs: Vec<(&str, TensorData)> = match component {
        Component::TextEncoder => {
            let config: CLIPTextConfig = folder::config(model, &mut Vec::new())?;
            let max = config.max_position_embeddings;
            expect_dims("input_ids", &inputs.dims("input_ids")?, 2, |d| {
                (d[1] > max).then(|| format!("at most {max} tokens per prompt"))
            })?;
            let ids = inputs.int::<2>("input_ids", device)?;
            let net = network(model, "text_encoder", device, CLIPTextModel::load)?;
            let out = net.forward(ids);
            vec![
                ("last_hidden_state", out.last_hidden_state.into_data()),
                ("penultimate_normed", out.penultimate_normed.into_data()),
            ]
        }
        Component::ImageEncoder => {
            let config: CLIPVisionConfig = folder::config(model, &mut Vec::new())?;
            let (c, s) = (config.num_channels, config.image_size);
            expect_dims("pixel_values", &inputs.dims("pixel_values")?, 4, |d| {
                (d[1] != c || d[2] != s || d[3] != s).then(|| format!("expected [B, {c}, {s}, {s}]"))
            })?;
            let pixels = inputs.float::<4>("pixel_values", device)?;
            let net = network(model, "image_encoder", device, CLIPVisionModelWithProjection::load)?;
            vec![("image_embeds", net.forward(pixels).into_data())]
        }
        Component::VaeEncode | Component::VaeDecode => {
            let config: AutoencoderKLConfig = folder::config(model, &mut Vec::new())?;
            let f = config.downscale();
            let z = config.latent_channels;
            let vae = network(model, "vae", device, AutoencoderKL::load)?;
            if let Component::VaeEncode = component {
                expect_dims("sample", &inputs.dims("sample")?, 4, |d| {
                    (d[1] != config.in_channels || d[2] % f != 0 || d[3] % f != 0)
                        .then(|| format!("expected [B, {}, H, W] with H and W multiples of {f}", config.in_channels))
                })?;
                let dist = vae.encode(inputs.float::<4>("sample", device)?);
                vec![("latent_mean", dist.mean.into_data()), ("latent_logvar", dist.logvar.into_data())]
            } else {
                expect_dims("latents", &inputs.dims("latents")?, 4, |d| {
                    (d[1] != z).then(|| format!("expected [B, {z}, h, w]"))
                })?;
                vec![("sample", vae.decode(inputs.float::<4>("latents", device)?).into_data())]
            }
        }
        Component::Unet => vec![("sample", unet(model, &inputs, device)?.into_data())],
    };
    write(output, outputs)
}

fn unet(model: &mut dyn TensorSource, inputs: &TensorFile, device: &Device) -> Result<burn::tensor::Tensor<5>> {
    let class = folder::class_name(model, "unet")?;
    if class == "UNet3DConditionModel" {
        let config: UNet3DConditionModelConfig = folder::config(model, &mut Vec::new())?;
        let b = check_unet_inputs(&config.unet, inputs)?;
        let timesteps = per_batch(inputs, "timestep", b)?;
        let net = network(model, "unet", device, UNet3DConditionModel::load)?;
        let sample = inputs.float::<5>("sample", device)?;
        return Ok(net.forward(sample, &timesteps, inputs.float::<3>("encoder_hidden_states", device)?));
    }
    let config: I2VGenXLUNetConfig = folder::config(model, &mut Vec::new())?;
    let b = check_unet_inputs(&config.unet, inputs)?;
    let sample = inputs.dims("sample")?;
    let dim = config.unet.cross_attention_dim;
    expect_dims("image_latents", &inputs.dims("image_latents")?, 5, |d| {
        (d[0] != b || d[1] != 4 || d[2..] != sample[2..])
            .then(|| format!("expected [{b}, 4, {}, {}, {}]", sample[2], sample[3], sample[4]))
    })?;
    // diffusers' UNet takes `[B, D]` and, from its own pipeline, `[B, 1, D]`.
    let embeddings = inputs.dims("image_embeddings")?;
    let rank = if embeddings.len() == 3 { 3 } else { 2 };
    expect_dims("image_embeddings", &embeddings, rank, |d| {
        (d[0] != b || d[rank - 1] != dim || (rank == 3 && d[1] != 1))
            .then(|| format!("expected [{b}, {dim}] or [{b}, 1, {dim}]"))
    })?;
    let image_embeddings = match rank {
        3 => inputs.float::<3>("image_embeddings", device)?.squeeze_dim(1),
        _ => inputs.float::<2>("image_embeddings", device)?,
    };
    let (timesteps, fps) = (per_batch(inputs, "timestep", b)?, per_batch(inputs, "fps", b)?);
    let net = network(model, "unet", device, I2VGenXLUNet::load)?;
    Ok(net.forward(I2VGenXLUNetInput {
        sample: inputs.float::<5>("sample", device)?,
        timesteps,
        encoder_hidden_states: inputs.float::<3>("encoder_hidden_states", device)?,
        fps,
        image_latents: inputs.float::<5>("image_latents", device)?,
        image_embeddings,
    }))
}

/// `sample` and `encoder_hidden_states`, which both UNets take; returns the batch size.
fn check_unet_inputs(config: &UNet3DConfig, inputs: &TensorFile) -> Result<usize> {
    let cin = config.in_channels;
    let sample = inputs.dims("sample")?;
    expect_dims("sample", &sample, 5, |d| (d[1] != cin).then(|| format!("expected [B, {cin}, F, h, w]")))?;
    let (b, dim) = (sample[0], config.cross_attention_dim);
    expect_dims("encoder_hidden_states", &inputs.dims("encoder_hidden_states")?, 3, |d| {
        (d[0] != b || d[2] != dim).then(|| format!("expected [{b}, T, {dim}]"))
    })?;
    Ok(b)
}

/// A scalar input given once or once per batch element.
fn per_batch(inputs: &TensorFile, name: &str, b: usize) -> Result<Vec<f32>> {
    let values = inputs.scalars(name)?;
    match values.len() {
        1 => Ok(vec![values[0]; b]),
        n if n == b => Ok(values),
        n => bail!("`{name}` has {n} values; give one, or one per batch element ({b})"),
    }
}
