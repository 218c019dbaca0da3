//! `weights-tools convert-original`: an original MS-Vid2Vid-XL / VGen / ModelScope `UNetSD`
//! checkpoint (`.pth` torch pickle or `.safetensors`) → a diffusers `UNet3DConditionModel`
//! component folder (`config.json` + `diffusion_pytorch_model.safetensors`).
//!
//! The key mapping is the one of diffusers' `scripts/convert_ms_text_to_video_to_diffusers.py`,
//! read from the key structure rather than by substring: `input_blocks.{i}` is down block
//! `(i-1) / (layers_per_block+1)`, layer `(i-1) % (layers_per_block+1)`, with `.0` the resnet
//! (and its `temopral_conv` — sic — temporal convolution), `.1` the spatial transformer, `.2` the
//! temporal one and `.op` the downsampler; `middle_block.{0..3}` and `output_blocks.{i}` likewise.
//! The temporal transformers' Conv1d `proj_in`/`proj_out` become Linear weights. The result must
//! hold exactly the tensors, with the shapes, that the config's network takes (the library
//! builds it against the converted keys and shapes, with no values).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::Device;
use i2vgen::loading::config::parse;
use i2vgen::loading::weights::Weights;
use i2vgen::models::unet_3d_condition::{REFINER_CONFIG, UNet3DConditionModel, UNet3DConditionModelConfig};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// The prefix of the UNet's keys inside a full LDM-style checkpoint.
const UNET_PREFIX: &str = "model.diffusion_model.";

/// A tensor's place in the checkpoint: dtype, shape, and its key there.
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    original: String,
}

/// An opened checkpoint: every tensor's dtype and shape, the values read only when written.
enum Checkpoint {
    Safetensors(Vec<u8>),
    Pytorch(HashMap<String, pytorch_reader::Tensor>),
}

pub fn run(from: &Path, to: &Path, config: Option<&Path>) -> Result<()> {
    let config_text = match config {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read the UNet config {}", path.display()))?
        }
        None => REFINER_CONFIG.to_string(),
    };
    let parsed = parse::<UNet3DConditionModelConfig>(&config_text).context("the UNet config")?;
    let layers_per_block = parsed.config.unet.layers_per_block;

    let checkpoint = Checkpoint::open(from)?;
    let (original, skipped) = unet_tensors(checkpoint.entries(from)?);
    if !skipped.is_empty() {
        eprintln!("skipping {} tensors outside the UNet ({})", skipped.len(), summarize(&skipped));
    }
    let mut converted = BTreeMap::new();
    let mut unmapped = Vec::new();
    for (key, mut entry) in original {
        let Some(new_key) = diffusers_key(&key, layers_per_block) else {
            unmapped.push(key);
            continue;
        };
        if is_temporal_projection(&new_key) && entry.shape.len() == 3 && entry.shape[2] == 1 {
            entry.shape.pop(); // Conv1d [out, in, 1] → Linear [out, in]
        }
        if converted.insert(new_key.clone(), entry).is_some() {
            bail!("two tensors of {} map to `{new_key}`", from.display());
        }
    }
    if !unmapped.is_empty() {
        bail!(
            "{} has {} tensors that are not part of an original UNetSD layout: {}",
            from.display(),
            unmapped.len(),
            summarize(&unmapped)
        );
    }
    check_against_network(&converted, &parsed.config)
        .with_context(|| format!("{} does not match the UNet3DConditionModel of the config", from.display()))?;

    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    std::fs::write(to.join("config.json"), &config_text)?;
    let out = to.join("diffusion_pytorch_model.safetensors");
    let bytes = checkpoint.write(&converted, &out)?;
    eprintln!("wrote {} ({} tensors, {:.1} MB) and config.json", out.display(), converted.len(), bytes as f64 / 1e6);
    Ok(())
}

impl Checkpoint {
    /// A `.safetensors` file or a torch pickle (`.pth`, `.pt`, `.bin`, `.ckpt`).
    fn open(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "safetensors") {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            SafeTensors::deserialize(&bytes)
                .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
            return Ok(Self::Safetensors(bytes));
        }
        let reader = pytorch_reader::PytorchReader::new(path)
            .map_err(|e| anyhow!("{} is not a readable torch checkpoint: {e}", path.display()))?;
        Ok(Self::Pytorch(reader.into_tensors()))
    }

    fn entries(&self, path: &Path) -> Result<BTreeMap<String, Entry>> {
        let entry = |key: &str, dtype, shape: &[usize]| {
            (key.to_string(), Entry { dtype, shape: shape.to_vec(), original: key.to_string() })
        };
        let mut out = BTreeMap::new();
        match self {
            Self::Safetensors(bytes) => {
                for (key, view) in SafeTensors::deserialize(bytes)?.tensors() {
                    let dtype = match view.dtype() {
                        dtype @ (Dtype::F32 | Dtype::F16 | Dtype::BF16) => dtype,
                        other => {
                            bail!("tensor `{key}` of {} is {other:?}; weights must be f32, f16 or bf16", path.display())
                        }
                    };
                    out.extend([entry(&key, dtype, view.shape())]);
                }
            }
            Self::Pytorch(tensors) => {
                for (key, tensor) in tensors {
                    use pytorch_reader::DType as T;
                    let dtype = match tensor.dtype() {
                        T::F32 => Dtype::F32,
                        T::F16 => Dtype::F16,
                        T::BF16 => Dtype::BF16,
                        other => {
                            bail!("tensor `{key}` of {} is {other:?}; weights must be f32, f16 or bf16", path.display())
                        }
                    };
                    out.extend([entry(key, dtype, tensor.shape())]);
                }
            }
        }
        Ok(out)
    }

    /// Write the converted tensors as one safetensors file; returns the bytes of tensor data.
    fn write(&self, converted: &BTreeMap<String, Entry>, out: &Path) -> Result<usize> {
        // A safetensors checkpoint is written from its own bytes; a pickle's tensors are read
        // one by one (torch writes native-endian bytes: little-endian on every supported host).
        let values: Vec<Cow<[u8]>> = match self {
            Self::Safetensors(bytes) => {
                let file = SafeTensors::deserialize(bytes)?;
                // The views borrow `bytes`, not `file`: they outlive it.
                #[allow(clippy::let_and_return)]
                let values = converted
                    .values()
                    .map(|e| Ok(Cow::Borrowed(file.tensor(&e.original)?.data())))
                    .collect::<Result<_>>()?;
                values
            }
            Self::Pytorch(tensors) => converted
                .values()
                .map(|e| {
                    Ok(Cow::Owned(tensors[&e.original].read().with_context(|| format!("reading `{}`", e.original))?))
                })
                .collect::<Result<_>>()?,
        };
        let views = converted
            .iter()
            .zip(&values)
            .map(|((key, e), bytes)| Ok((key.clone(), TensorView::new(e.dtype, e.shape.clone(), bytes)?)))
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize_to_file(views, None, out).with_context(|| format!("cannot write {}", out.display()))?;
        Ok(values.iter().map(|v| v.len()).sum())
    }
}

/// The UNet's tensors, with the wrappers checkpoints put around them removed (`state_dict.`,
/// `module.`, and in a full LDM checkpoint `model.diffusion_model.`, whose other tensors —
/// VAE, text encoder, EMA copies — are returned as skipped).
fn unet_tensors(tensors: BTreeMap<String, Entry>) -> (BTreeMap<String, Entry>, Vec<String>) {
    let unwrap = |key: &str| -> String {
        let mut key = key;
        for prefix in ["state_dict.", "module."] {
            key = key.strip_prefix(prefix).unwrap_or(key);
        }
        key.to_string()
    };
    let full = tensors.keys().any(|k| unwrap(k).starts_with(UNET_PREFIX));
    let (mut kept, mut skipped) = (BTreeMap::new(), Vec::new());
    for (key, tensor) in tensors {
        let key = unwrap(&key);
        match key.strip_prefix(UNET_PREFIX) {
            Some(inner) => {
                kept.insert(inner.to_string(), tensor);
            }
            None if full => skipped.push(key),
            None => {
                kept.insert(key, tensor);
            }
        }
    }
    (kept, skipped)
}

/// The first few keys and the count, for messages.
fn summarize(keys: &[String]) -> String {
    let shown: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
    let more = if keys.len() > shown.len() { format!(" and {} more", keys.len() - shown.len()) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

/// `transformer_in` and the `temp_attentions`: original Conv1d projections, diffusers Linear.
fn is_temporal_projection(key: &str) -> bool {
    (key.starts_with("transformer_in.") || key.contains(".temp_attentions."))
        && (key.ends_with(".proj_in.weight") || key.ends_with(".proj_out.weight"))
}

/// A resnet's inner names: `ResBlock` → `ResnetBlock2D`.
fn resnet(rest: &[&str]) -> Option<String> {
    let (renamed, tail) = match rest {
        ["in_layers", "0", tail @ ..] => ("norm1", tail),
        ["in_layers", "2", tail @ ..] => ("conv1", tail),
        ["out_layers", "0", tail @ ..] => ("norm2", tail),
        ["out_layers", "3", tail @ ..] => ("conv2", tail),
        ["emb_layers", "1", tail @ ..] => ("time_emb_proj", tail),
        ["skip_connection", tail @ ..] => ("conv_shortcut", tail),
        _ => return None,
    };
    Some(join(renamed, tail))
}

fn join(prefix: &str, rest: &[&str]) -> String {
    if rest.is_empty() { prefix.to_string() } else { format!("{prefix}.{}", rest.join(".")) }
}

/// The diffusers key of an original `UNetSD` key, or `None` if it is not one.
fn diffusers_key(key: &str, layers_per_block: usize) -> Option<String> {
    let parts: Vec<&str> = key.split('.').collect();
    let per_block = layers_per_block + 1;
    let index = |s: &str| s.parse::<usize>().ok();
    // A resnet position: its temporal convolution, or the resnet itself.
    let resnet_or_temporal = |block: &str, layer: usize, rest: &[&str]| match rest {
        ["temopral_conv", tail @ ..] => Some(join(&format!("{block}.temp_convs.{layer}"), tail)),
        _ => Some(format!("{block}.resnets.{layer}.{}", resnet(rest)?)),
    };
    match parts.as_slice() {
        ["time_embed", "0", rest @ ..] => Some(join("time_embedding.linear_1", rest)),
        ["time_embed", "2", rest @ ..] => Some(join("time_embedding.linear_2", rest)),
        ["out", "0", rest @ ..] => Some(join("conv_norm_out", rest)),
        ["out", "2", rest @ ..] => Some(join("conv_out", rest)),
        ["input_blocks", "0", "0", rest @ ..] => Some(join("conv_in", rest)),
        ["input_blocks", "0", "1", rest @ ..] => Some(join("transformer_in", rest)),
        ["input_blocks", i, rest @ ..] => {
            let i = index(i)?.checked_sub(1)?;
            let (block, layer) = (format!("down_blocks.{}", i / per_block), i % per_block);
            match rest {
                ["op", tail @ ..] if layer == layers_per_block => {
                    Some(join(&format!("{block}.downsamplers.0.conv"), tail))
                }
                ["0", tail @ ..] if layer < layers_per_block => resnet_or_temporal(&block, layer, tail),
                ["1", tail @ ..] if layer < layers_per_block => {
                    Some(join(&format!("{block}.attentions.{layer}"), tail))
                }
                ["2", tail @ ..] if layer < layers_per_block => {
                    Some(join(&format!("{block}.temp_attentions.{layer}"), tail))
                }
                _ => None,
            }
        }
        ["middle_block", j, rest @ ..] => match index(j)? {
            0 => resnet_or_temporal("mid_block", 0, rest),
            1 => Some(join("mid_block.attentions.0", rest)),
            2 => Some(join("mid_block.temp_attentions.0", rest)),
            3 => resnet_or_temporal("mid_block", 1, rest),
            _ => None,
        },
        ["output_blocks", i, j, rest @ ..] => {
            let i = index(i)?;
            let (block, layer) = (format!("up_blocks.{}", i / per_block), i % per_block);
            match (index(j)?, rest) {
                // The upsampler follows the last layer: `.1` without attention, `.3` with.
                (1 | 3, ["conv", tail @ ..]) if layer == layers_per_block => {
                    Some(join(&format!("{block}.upsamplers.0.conv"), tail))
                }
                (0, _) => resnet_or_temporal(&block, layer, rest),
                (1, _) => Some(join(&format!("{block}.attentions.{layer}"), rest)),
                (2, _) => Some(join(&format!("{block}.temp_attentions.{layer}"), rest)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Build the config's network against the converted keys and shapes (no values): a missing,
/// unused or wrong-shaped tensor is an error that names it.
fn check_against_network(converted: &BTreeMap<String, Entry>, config: &UNet3DConditionModelConfig) -> Result<()> {
    #[allow(deprecated)] // NdArray: the CPU backend; declared tensors cost no memory until used.
    let device = Device::ndarray();
    let mut weights = Weights::new(&device);
    for (key, tensor) in converted {
        weights.declare(key, &tensor.shape)?;
    }
    UNet3DConditionModel::load(&mut weights, config)?;
    weights.finish()?;
    Ok(())
}
