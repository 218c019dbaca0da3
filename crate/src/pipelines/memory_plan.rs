//! The GPU memory plan: from the device's limits, the precision, the request and the configs, the
//! peak bytes of every stage of a run (weights included) and the choices that keep it inside the
//! limits — whether the encoders stay resident, whether the guidance halves run apart, how many
//! row bands the VAE encode and decode use. One place for the CLI's `plan`, the page's size
//! tiers and the refusal of a request before anything is downloaded.
//!
//! Sizes are u64 throughout: a wasm32 `usize` is 32 bits and wraps above 4 GiB.
//!
//! The activation figures are a liveness model of our implementation (what is held whole at the
//! worst point of each stage, in the device's float width); allocator slack comes on top.

use i2vgen_shaders::conv::TILE_M;
use i2vgen_shaders::packed::COL_ALIGN;
use serde::Serialize;

use crate::loading::manifest::is_matrix_weight;
use crate::models::clip::{CLIPTextConfig, CLIPVisionConfig};
use crate::models::nn::MAX_ELEMENTS;
use crate::models::unet_3d_backbone::UNet3DConfig;
use crate::models::vae::AutoencoderKLConfig;
use crate::models::vae_bands::{decode_bands, encode_bands};
use crate::{Error, Result};

/// Decimal gigabytes, as the design brief counts them.
const GB: f64 = 1e9;

/// What the GPU allows: its largest buffer, its largest storage binding, and optionally the
/// memory the page may use (WebGPU does not say how much there is; the user or the page sets it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    pub max_buffer_bytes: u64,
    pub max_binding_bytes: u64,
    pub budget_bytes: Option<u64>,
}

impl DeviceLimits {
    /// What desktop browsers usually grant (1 GiB buffers and bindings), no budget.
    pub const WEBGPU: Self = Self { max_buffer_bytes: 1 << 30, max_binding_bytes: 1 << 30, budget_bytes: None };

    /// The largest tensor the device can hold and bind.
    pub fn max_tensor_bytes(&self) -> u64 {
        self.max_buffer_bytes.min(self.max_binding_bytes)
    }
}

/// How weights are stored and activations computed on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// f32 weights and activations (every GPU).
    F32,
    /// f16 weights and activations (`shader-f16`).
    F16,
    /// f16 weights packed two to a `u32`, unpacked in the kernels; f32 activations.
    PackedF16,
}

impl Precision {
    pub fn activation_bytes(self) -> u64 {
        if self == Self::F16 { 2 } else { 4 }
    }
}

/// Parameter counts of the networks (from the manifest, the safetensors headers or the configs);
/// `image_encoder` is 0 for the refiner, which has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Parameters {
    /// Every parameter of each network.
    #[serde(flatten)]
    pub counts: PerNetwork,
    /// Elements of the largest single weight tensor (CLIP's token embedding in the real model).
    pub largest_tensor: u64,
    /// Zeros the GPU holds beside the parameters: conv weights are stored with their output
    /// channels padded to whole tiles of the conv kernel (`i2vgen_shaders::conv::prepare_weight`).
    pub padding: PerNetwork,
    /// The parameters of the `Linear` and conv weights (`manifest::is_matrix_weight`): what
    /// packed-f16 holds as f16 pairs in u32 words; the rest stays f32.
    pub matrix: PerNetwork,
    /// The f16 values those take packed: each weight's output dimension is padded to whole
    /// 64-column rows (`i2vgen_shaders::packed::COL_ALIGN`).
    pub packed: PerNetwork,
}

/// Elements per network (see [`Parameters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PerNetwork {
    pub text_encoder: u64,
    pub image_encoder: u64,
    pub vae_encoder: u64,
    pub vae_decoder: u64,
    pub unet: u64,
}

impl Parameters {
    /// Count one tensor of a component (`text_encoder`, `image_encoder`, `vae`, `unet`, the
    /// folder names), from a checkpoint's or manifest's key and shape; the VAE's `encoder.*` and
    /// `quant_conv.*` count as its encoder, the rest as its decoder. Other components are ignored.
    pub fn add(&mut self, component: &str, key: &str, shape: &[usize]) {
        let n = shape.iter().map(|&d| d as u64).product::<u64>();
        let network = match component {
            "text_encoder" | "image_encoder" | "unet" => component,
            "vae" if key.starts_with("encoder.") || key.starts_with("quant_conv.") => "vae_encoder",
            "vae" => "vae_decoder",
            _ => return,
        };
        *self.counts.get_mut(network) += n;
        let out = shape.first().map_or(0, |&d| d as u64);
        // A conv weight: `[C_out, C_in, kh, kw(, kt)]`.
        if key.ends_with(".weight") && shape.len() >= 4 && out > 0 {
            *self.padding.get_mut(network) += (out.next_multiple_of(TILE_M as u64) - out) * (n / out);
        }
        if is_matrix_weight(key, shape) && out > 0 {
            *self.matrix.get_mut(network) += n;
            *self.packed.get_mut(network) += out.next_multiple_of(COL_ALIGN as u64) * (n / out);
        }
        self.largest_tensor = self.largest_tensor.max(n);
    }

    /// The bytes the GPU holds of `network`'s weights in `precision`.
    fn held_bytes(&self, network: &str, precision: Precision) -> u64 {
        let params = self.counts.of(network);
        let (padding, matrix, packed) = (self.padding.of(network), self.matrix.of(network), self.packed.of(network));
        match precision {
            Precision::F32 => 4 * (params + padding),
            Precision::F16 => 2 * (params + padding),
            Precision::PackedF16 => 4 * (params - matrix) + 2 * packed,
        }
    }
}

impl PerNetwork {
    pub const ZERO: Self = Self { text_encoder: 0, image_encoder: 0, vae_encoder: 0, vae_decoder: 0, unet: 0 };

    fn get_mut(&mut self, network: &str) -> &mut u64 {
        match network {
            "text_encoder" => &mut self.text_encoder,
            "image_encoder" => &mut self.image_encoder,
            "vae_encoder" => &mut self.vae_encoder,
            "vae_decoder" => &mut self.vae_decoder,
            _ => &mut self.unet,
        }
    }

    fn of(mut self, network: &str) -> u64 {
        *self.get_mut(network)
    }
}

/// The configs the plan reads: the base pipeline's, or the refiner's (no image encoder).
pub struct Configs<'a> {
    pub text_encoder: &'a CLIPTextConfig,
    pub image_encoder: Option<&'a CLIPVisionConfig>,
    pub vae: &'a AutoencoderKLConfig,
    pub unet: &'a UNet3DConfig,
}

/// The video a run makes (pixels) and how it is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Video {
    pub frames: u64,
    pub height: u64,
    pub width: u64,
    /// Classifier-free guidance: two conditioning rows per step.
    pub guidance: bool,
    /// Step caching keeps the deep features between steps.
    pub deep_cache: bool,
}

/// One stage's memory: the weights it needs resident plus its activations at their worst point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StageMemory {
    pub stage: &'static str,
    pub weights_bytes: u64,
    pub activation_bytes: u64,
    pub peak_bytes: u64,
    pub max_tensor_bytes: u64,
}

/// The plan: per-stage figures, the whole run's peak, and the choices made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryPlan {
    pub precision: Precision,
    pub stages: Vec<StageMemory>,
    /// The run's peak on the GPU, weights included.
    pub peak_bytes: u64,
    /// The largest single tensor (a weight, an activation, or a chunk of one).
    pub max_tensor_bytes: u64,
    /// Every network's weights together.
    pub weights_bytes: u64,
    /// Every network stays on the GPU between runs. Else the base pipeline holds one phase at a
    /// time: the CLIP encoders are freed after encoding and the UNet after the run, each streamed
    /// back in from the cache when its phase comes again.
    pub keep_encoders: bool,
    /// The guidance halves run one after the other (batch 1 per UNet call).
    pub split_guidance: bool,
    /// Elements of one feed-forward or concatenation chunk.
    pub chunk_elements: u64,
    /// Row bands of the VAE encode (1 = untiled).
    pub vae_encode_bands: u64,
    /// Row bands of the VAE decode (1 = untiled).
    pub vae_decode_bands: u64,
}

/// Plan a run of the base pipeline (`configs.image_encoder` set) or the refiner.
///
/// With a budget every network stays resident when everything fits, else the base pipeline's
/// phases take turns (see [`MemoryPlan::keep_encoders`]); without one the plan reports the
/// smaller, turn-taking figure. A run that cannot fit is an error
/// whose sentence names the budget and a size that fits.
pub fn plan(
    configs: &Configs,
    params: &Parameters,
    video: Video,
    precision: Precision,
    limits: DeviceLimits,
) -> Result<MemoryPlan> {
    check_video(video)?;
    let too_big = |bytes: u64| bytes > limits.max_tensor_bytes();
    let whole = |split| plan_with(configs, params, video, precision, limits, split);
    let split_needed = video.guidance && too_big(unet_whole_tensor(configs, video, false, precision));
    let mut chosen = whole(split_needed)?;
    let over_budget = |p: &MemoryPlan| limits.budget_bytes.is_some_and(|b| p.peak_bytes > b);
    if video.guidance && !chosen.split_guidance && over_budget(&chosen) {
        chosen = whole(true)?;
    }
    if too_big(chosen.max_tensor_bytes) {
        return Err(refusal(configs, params, video, precision, limits, &chosen, "one GPU buffer"));
    }
    if over_budget(&chosen) {
        return Err(refusal(configs, params, video, precision, limits, &chosen, "the memory budget"));
    }
    Ok(chosen)
}

fn check_video(video: Video) -> Result<()> {
    if video.frames == 0 || video.height < 8 || video.width < 8 {
        return Err(Error::request(
            "size",
            format!(
                "cannot plan {} frames at {}×{}: at least one frame of 8×8 pixels is needed",
                video.frames, video.width, video.height
            ),
        ));
    }
    Ok(())
}

fn plan_with(
    configs: &Configs,
    params: &Parameters,
    video: Video,
    precision: Precision,
    limits: DeviceLimits,
    split_guidance: bool,
) -> Result<MemoryPlan> {
    let ab = precision.activation_bytes();
    let rows = if video.guidance { 2 } else { 1 };
    let chunk_elements = MAX_ELEMENTS as u64;
    let chunk = chunk_elements * ab;
    let f = configs.vae.downscale() as u64;
    let (h, w) = (video.height / f, video.width / f);
    let band_limit = limits.max_tensor_bytes().min(chunk);
    let bands = decode_bands(configs.vae, h as usize, w as usize, ab as usize, band_limit).ok_or_else(|| {
        Error::request(
            "size",
            format!(
                "one row of the VAE decode at width {} does not fit in {:.0} MiB; choose a narrower video",
                video.width,
                band_limit as f64 / (1 << 20) as f64
            ),
        )
    })?;
    let encode_bands = encode_bands(configs.vae, video.height as usize, video.width as usize, ab as usize, band_limit)
        .ok_or_else(|| {
            Error::request(
                "size",
                format!(
                    "one row of latents of the VAE encode ({f} rows of pixels) at width {} does not fit in {:.0} \
                     MiB; choose a narrower video",
                    video.width,
                    band_limit as f64 / (1 << 20) as f64
                ),
            )
        })?;

    let text = text_activations(configs.text_encoder, rows) * ab;
    let vision = configs.image_encoder.map(|c| vision_activations(c) * ab);
    // The base pipeline encodes one image; the refiner each frame of the video, one at a time.
    let encode = vae_encode_activations(configs.vae, video.height, video.width) * ab
        + if encode_bands.bands > 1 { encode_bands.max_tensor_bytes } else { 0 };
    let unet_rows = if split_guidance { 1 } else { rows };
    let deep = if video.deep_cache {
        rows * video.frames * configs.unet.deep_features_channels() as u64 * h * w * ab
    } else {
        0
    };
    let unet = unet_step_activations(configs.unet, video, unet_rows, h, w, chunk_elements) * ab + deep;
    let decode = 4 * vae_widest_channels(configs.vae) * video.height * video.width * ab;

    // The largest weight (CLIP's token embedding) is never packed: f32 in packed-f16.
    let largest_weight = params.largest_tensor * if precision == Precision::F16 { 2 } else { 4 };
    // What the GPU holds of each network: its parameters, its conv weights' padding, and in
    // packed-f16 its Linear and conv weights as padded f16 rows.
    let held = |network: &str| params.held_bytes(network, precision);
    let (text_w, image_w, vae_w, unet_w) =
        (held("text_encoder"), held("image_encoder"), held("vae_encoder") + held("vae_decoder"), held("unet"));
    let weights_bytes = text_w + image_w + vae_w + unet_w;
    // What the page holds in each phase: the encoders and the VAE while encoding, the UNet and
    // the VAE while denoising and decoding (`I2VGenXLPipeline`'s `Phase`); the refiner loads whole.
    let (encode_w, denoise_w) = if configs.image_encoder.is_some() {
        (text_w + image_w + vae_w, unet_w + vae_w)
    } else {
        (weights_bytes, weights_bytes)
    };

    // Chunks hold at most `chunk_elements`, and no more than the level-0 feed-forward hidden
    // state would whole (attention holds no score matrix).
    let (c0, tokens) = (configs.unet.block_out_channels[0] as u64, h * w);
    let unet_chunk = (unet_rows * video.frames * tokens * 8 * c0).min(chunk_elements) * ab;
    // The backbone's levels in pieces of frames where a tensor would pass the limit.
    let (frames, images) = (video.frames as usize, (unet_rows * video.frames) as usize);
    let levels = configs.unet.level_splits(images, frames, h as usize, w as usize, ab as usize, band_limit);
    let unet_tensor = levels.iter().map(|l| l.max_tensor_bytes).max().unwrap_or(0).max(unet_chunk);
    let mut stages = vec![stage("text_encoder", encode_w, text, chunk.min(text))];
    if let Some(vision) = vision {
        stages.push(stage("image_encoder", encode_w, vision, chunk.min(vision)));
    }
    stages.push(stage("vae_encoder", encode_w, encode, encode_bands.max_tensor_bytes));
    stages.push(stage("unet", denoise_w, unet, unet_tensor));
    stages.push(stage("vae_decoder", denoise_w, decode, bands.max_tensor_bytes));

    // Kept resident, every stage also holds every network's weights.
    let resident = weights_bytes + stages.iter().map(|s| s.activation_bytes).max().unwrap_or(0);
    let keep_encoders = limits.budget_bytes.is_some_and(|b| resident <= b);
    if keep_encoders {
        for s in &mut stages {
            s.weights_bytes = weights_bytes;
            s.peak_bytes = weights_bytes + s.activation_bytes;
        }
    }
    let max_tensor_bytes = stages.iter().map(|s| s.max_tensor_bytes).max().unwrap_or(0).max(largest_weight);
    Ok(MemoryPlan {
        precision,
        peak_bytes: stages.iter().map(|s| s.peak_bytes).max().unwrap_or(0),
        max_tensor_bytes,
        weights_bytes,
        keep_encoders,
        split_guidance,
        chunk_elements,
        vae_encode_bands: encode_bands.bands as u64,
        vae_decode_bands: bands.bands as u64,
        stages,
    })
}

fn stage(stage: &'static str, weights_bytes: u64, activation_bytes: u64, max_tensor_bytes: u64) -> StageMemory {
    StageMemory {
        stage,
        weights_bytes,
        activation_bytes,
        peak_bytes: weights_bytes + activation_bytes,
        max_tensor_bytes,
    }
}

/// A transformer encoder layer at its worst (elements): the residual, the normed input, q/k/v
/// (the fused attention holds no score matrix) and the MLP's hidden state (its activation runs
/// in place).
fn encoder_layer(rows: u64, tokens: u64, hidden: usize, intermediate: usize) -> u64 {
    let (d, i) = (hidden as u64, intermediate as u64);
    rows * (5 * tokens * d + tokens * i)
}

fn text_activations(c: &CLIPTextConfig, rows: u64) -> u64 {
    encoder_layer(rows, c.max_position_embeddings as u64, c.hidden_size, c.intermediate_size)
}

fn vision_activations(c: &CLIPVisionConfig) -> u64 {
    let patches = (c.image_size / c.patch_size.max(1)) as u64;
    let pixels = (c.num_channels * c.image_size * c.image_size) as u64;
    pixels + encoder_layer(1, patches * patches + 1, c.hidden_size, c.intermediate_size)
}

/// The VAE encoder's full-resolution tensor: `block_out_channels[0]` channels (elements).
fn vae_widest_encoder_tensor(c: &AutoencoderKLConfig, height: u64, width: u64) -> u64 {
    c.block_out_channels[0] as u64 * height * width
}

/// A resnet at full resolution holds its input, the norm's temporaries and the conv's output
/// and input copy: about five full-resolution tensors, whole or as row bands (then plus one
/// band's conv input with its halo rows, added by the caller).
fn vae_encode_activations(c: &AutoencoderKLConfig, height: u64, width: u64) -> u64 {
    3 * height * width + 5 * vae_widest_encoder_tensor(c, height, width)
}

/// The widest decoder tensor at full resolution is the up-sampled output of the second-to-last
/// up block: `block_out_channels[1]` channels (256 in SD's VAE).
fn vae_widest_channels(c: &AutoencoderKLConfig) -> u64 {
    c.block_out_channels[1.min(c.block_out_channels.len() - 1)] as u64
}

/// The UNet's largest activation (bytes) for one call held whole: `[rows·F, widest, h, w]`. The
/// backbone holds it in pieces when it passes the limit (`UNet3DConfig::level_splits`).
fn unet_whole_tensor(configs: &Configs, video: Video, split_guidance: bool, precision: Precision) -> u64 {
    let c = configs.unet;
    let rows = if video.guidance && !split_guidance { 2 } else { 1 };
    let widest = c.block_out_channels[1.min(c.block_out_channels.len() - 1)].max(c.block_out_channels[0]) as u64;
    let f = configs.vae.downscale() as u64;
    rows * video.frames * (video.height / f) * (video.width / f) * widest * precision.activation_bytes()
}

/// One UNet call's activations at its worst point (elements): the larger of the start of the up
/// path (every skip held, little else) and the first level of the last up block (that level's
/// skips, plus the worst of: the up-sampler's input and output (the conv reads its input
/// through the upsampling); the hidden state, a concatenation chunk with its norm's temporaries
/// and the resnet's output; attention's input, normed input, q/k/v; a level-0 feed-forward) and
/// the temporal transformer at the input (its input, and the worse of its attention and its
/// feed-forward, `8 · attention_head_dim` wide). Measured at kernel granularity by `i2vgen bench
/// --pipeline` (its `peak_bytes_in_use`): at the fixture's sizes that feed-forward is the worst.
fn unet_step_activations(c: &UNet3DConfig, video: Video, rows: u64, h: u64, w: u64, chunk: u64) -> u64 {
    let ch: Vec<u64> = c.block_out_channels.iter().map(|&c| c as u64).collect();
    let lpb = c.layers_per_block as u64;
    let images = rows * video.frames;
    let mut pixels = Vec::with_capacity(ch.len());
    let (mut ph, mut pw) = (h, w);
    for _ in 0..ch.len() {
        pixels.push(images * ph * pw);
        (ph, pw) = (ph.div_ceil(2), pw.div_ceil(2));
    }
    // Skips: conv_in's output, each down layer's output, each down-sampler's output.
    let mut skips = ch[0] * pixels[0];
    for (i, &c_i) in ch.iter().enumerate() {
        skips += lpb * c_i * pixels[i];
        if i + 1 < ch.len() {
            skips += c_i * pixels[i + 1];
        }
    }
    let n0 = pixels[0];
    let (c0, c1) = (ch[0], ch[1.min(ch.len() - 1)]);
    let level0_skips = (lpb + 1) * c0 * n0;
    let upsample = c1 * n0 + c1 * pixels[1.min(ch.len() - 1)];
    let concat = c1 * n0 + 3 * ((c0 + c1) * n0).min(chunk.max((c0 + c1) * h * w)) + c0 * n0;
    // A feed-forward of width `d` at level 0: its input and residual, a chunk of the GEGLU
    // projection (8·d wide) and of the GEGLU's output (half of it).
    let feed_forward = |d: u64| 2 * d * n0 + (8 * d * n0).min(chunk) * 3 / 2;
    let attention = (5 * c0 * n0).max(feed_forward(c0));
    let d_in = 8 * c.attention_head_dim as u64;
    let temporal_in = c0 * n0 + (5 * d_in * n0).max(feed_forward(d_in));
    let inputs = 4 * images * (c.in_channels as u64) * h * w;
    inputs + skips.max(level0_skips + upsample.max(concat).max(attention)).max(temporal_in)
}

/// The sizes offered in the page and the widget, smallest first: 16:9, 9:16 and 1:1.
pub const TIERS: [(u64, u64); 12] = [
    (448, 256),
    (512, 288),
    (640, 352),
    (1280, 704),
    (256, 448),
    (288, 512),
    (352, 640),
    (704, 1280),
    (256, 256),
    (320, 320),
    (384, 384),
    (704, 704),
];

/// The sentence for a run that does not fit, naming the limit and the largest tier of the same
/// orientation that does.
fn refusal(
    configs: &Configs,
    params: &Parameters,
    video: Video,
    precision: Precision,
    limits: DeviceLimits,
    chosen: &MemoryPlan,
    what: &str,
) -> Error {
    let orientation = |w: u64, h: u64| w.cmp(&h);
    let fits = TIERS
        .iter()
        .filter(|&&(w, h)| orientation(w, h) == orientation(video.width, video.height))
        .filter(|&&(w, h)| w * h < video.width * video.height)
        .filter_map(|&(width, height)| {
            let smaller = Video { width, height, ..video };
            plan(configs, params, smaller, precision, limits).ok().map(|p| (width, height, p.peak_bytes))
        })
        .max_by_key(|&(w, h, _)| w * h);
    let limit = match (what, limits.budget_bytes) {
        ("the memory budget", Some(b)) => format!("the memory budget is {:.1} GB", b as f64 / GB),
        _ => format!("this GPU allows {:.0} MiB in one buffer", limits.max_tensor_bytes() as f64 / (1 << 20) as f64),
    };
    let need = if what == "one GPU buffer" {
        format!("a {:.0} MiB buffer", chosen.max_tensor_bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} GB of GPU memory", chosen.peak_bytes as f64 / GB)
    };
    let suggestion = match fits {
        Some((w, h, peak)) => format!("; {w}×{h} fits ({:.1} GB)", peak as f64 / GB),
        None => "; no smaller size fits either: choose fewer frames or a GPU with more memory".into(),
    };
    Error::request(
        "size",
        format!(
            "{} frames at {}×{} in {:?} need {need}, but {limit}{suggestion}",
            video.frames, video.width, video.height, precision
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loading::config::parse;
    use crate::models::unet_3d_condition::{REFINER_CONFIG, UNet3DConditionModelConfig};
    use crate::models::unet_i2vgen_xl::I2VGenXLUNetConfig;

    struct Real {
        text: CLIPTextConfig,
        refiner_text: CLIPTextConfig,
        vision: CLIPVisionConfig,
        vae: AutoencoderKLConfig,
        unet: UNet3DConfig,
        refiner: UNet3DConfig,
    }

    fn real() -> Real {
        Real {
            text: parse(include_str!("../../configs/i2vgen-xl/text_encoder/config.json")).unwrap().config,
            refiner_text: parse(include_str!("../../configs/refiner/text_encoder/config.json")).unwrap().config,
            vision: parse(include_str!("../../configs/i2vgen-xl/image_encoder/config.json")).unwrap().config,
            vae: parse(include_str!("../../configs/i2vgen-xl/vae/config.json")).unwrap().config,
            unet: parse::<I2VGenXLUNetConfig>(include_str!("../../configs/i2vgen-xl/unet/config.json"))
                .unwrap()
                .config
                .unet,
            refiner: parse::<UNet3DConditionModelConfig>(REFINER_CONFIG).unwrap().config.unet,
        }
    }

    /// ali-vilab/i2vgen-xl's parameter counts (DESIGN.md; the VAE split into encoder and decoder),
    /// every one counted as a matrix weight packing with no padding.
    const COUNTS: PerNetwork = PerNetwork {
        text_encoder: 353_000_000,
        image_encoder: 632_100_000,
        vae_encoder: 34_200_000,
        vae_decoder: 49_500_000,
        unet: 1_420_500_000,
    };
    const BASE: Parameters = Parameters {
        counts: COUNTS,
        largest_tensor: 49408 * 1024,
        padding: PerNetwork::ZERO,
        matrix: COUNTS,
        packed: COUNTS,
    };

    fn video(frames: u64, height: u64, width: u64) -> Video {
        Video { frames, height, width, guidance: true, deep_cache: false }
    }

    fn base(r: &Real) -> Configs<'_> {
        Configs { text_encoder: &r.text, image_encoder: Some(&r.vision), vae: &r.vae, unet: &r.unet }
    }

    #[test]
    fn the_real_model_at_256x448_fits_the_briefs_budgets_with_the_encoders_freed() {
        let r = real();
        let at = |precision| plan(&base(&r), &BASE, video(16, 256, 448), precision, DeviceLimits::WEBGPU).unwrap();
        let (f32, f16, packed) = (at(Precision::F32), at(Precision::F16), at(Precision::PackedF16));
        assert!(!f32.keep_encoders && !f32.split_guidance);
        assert!(f32.peak_bytes <= 7_500_000_000, "{}", f32.peak_bytes);
        assert!(f16.peak_bytes <= 4_000_000_000, "{}", f16.peak_bytes);
        // Packed f16 weights save half the f32 weights of the denoise phase (UNet and VAE): 3.0 GB.
        assert_eq!(f32.peak_bytes - packed.peak_bytes, 2 * (COUNTS.unet + COUNTS.vae_encoder + COUNTS.vae_decoder));
        // The peak is the UNet step: its weights and the VAE's, plus about 1.1 GB.
        let unet = f32.stages.iter().find(|s| s.stage == "unet").unwrap();
        assert_eq!(unet.peak_bytes, f32.peak_bytes);
        assert!((0.9e9..1.5e9).contains(&(unet.activation_bytes as f64)), "{}", unet.activation_bytes);
    }

    #[test]
    fn sizes_above_4_gib_do_not_wrap() {
        let r = real();
        let p = plan(&base(&r), &BASE, video(16, 704, 1280), Precision::F32, DeviceLimits::WEBGPU).unwrap();
        assert!(p.split_guidance);
        assert!(p.peak_bytes > u64::from(u32::MAX) && p.weights_bytes > u64::from(u32::MAX));
        assert_eq!(p.weights_bytes, 4 * 2_489_300_000);
    }

    #[test]
    fn a_budget_keeps_the_encoders_when_everything_fits() {
        let r = real();
        let limits = DeviceLimits { budget_bytes: Some(24_000_000_000), ..DeviceLimits::WEBGPU };
        let p = plan(&base(&r), &BASE, video(16, 256, 448), Precision::F16, limits).unwrap();
        assert!(p.keep_encoders);
        assert!(p.stages.iter().all(|s| s.weights_bytes == p.weights_bytes));
    }

    #[test]
    fn a_run_over_the_budget_is_refused_with_a_size_that_fits() {
        let r = real();
        let limits = DeviceLimits { budget_bytes: Some(8_000_000_000), ..DeviceLimits::WEBGPU };
        let err = plan(&base(&r), &BASE, video(16, 704, 1280), Precision::F32, limits).unwrap_err().to_string();
        assert!(err.starts_with("16 frames at 1280×704 in F32 need "), "{err}");
        assert!(err.contains("but the memory budget is 8.0 GB; 640×352 fits ("), "{err}");
        let limits = DeviceLimits { budget_bytes: Some(1_000_000_000), ..DeviceLimits::WEBGPU };
        let err = plan(&base(&r), &BASE, video(16, 256, 448), Precision::F16, limits).unwrap_err().to_string();
        assert!(err.ends_with("no smaller size fits either: choose fewer frames or a GPU with more memory"), "{err}");
    }

    #[test]
    fn a_tensor_over_the_binding_is_refused() {
        let r = real();
        // llvmpipe's 128 MiB binding cannot hold the real CLIP's token embedding in f32 (202 MB).
        let limits = DeviceLimits { max_buffer_bytes: 1 << 30, max_binding_bytes: 128 << 20, budget_bytes: None };
        let err = plan(&base(&r), &BASE, video(2, 64, 64), Precision::F32, limits).unwrap_err().to_string();
        assert!(err.contains("need a 193 MiB buffer, but this GPU allows 128 MiB in one buffer"), "{err}");
    }

    #[test]
    fn the_refiner_at_720p_holds_no_tensor_above_256_mib() {
        let r = real();
        let configs = Configs { text_encoder: &r.refiner_text, image_encoder: None, vae: &r.vae, unet: &r.refiner };
        let counts = PerNetwork { image_encoder: 0, unet: 1_413_000_000, text_encoder: 340_400_000, ..COUNTS };
        let params = Parameters { counts, ..BASE };
        let p = plan(&configs, &params, video(16, 720, 1280), Precision::F32, DeviceLimits::WEBGPU).unwrap();
        let decode = p.stages.iter().find(|s| s.stage == "vae_decoder").unwrap();
        assert!(p.vae_decode_bands > 1);
        assert!(decode.max_tensor_bytes <= 256 << 20, "{}", decode.max_tensor_bytes);
        // Untiled, the encoder's first block holds [1, 128, 720, 1280] f32: 472 MB.
        let encode = p.stages.iter().find(|s| s.stage == "vae_encoder").unwrap();
        assert!(p.vae_encode_bands > 1);
        assert!(encode.max_tensor_bytes <= 256 << 20, "{}", encode.max_tensor_bytes);
        assert!(p.split_guidance);
        // Whole, the UNet's first level holds [16, 640, 90, 160] f32 (590 MB): in pieces of frames.
        let unet = p.stages.iter().find(|s| s.stage == "unet").unwrap();
        assert!(unet.max_tensor_bytes <= 256 << 20, "{}", unet.max_tensor_bytes);
        assert!(p.max_tensor_bytes <= 256 << 20, "{}", p.max_tensor_bytes);
    }

    #[test]
    fn nothing_to_plan_is_a_sentence() {
        let r = real();
        let err = plan(&base(&r), &BASE, video(0, 256, 448), Precision::F32, DeviceLimits::WEBGPU).unwrap_err();
        assert_eq!(err.to_string(), "cannot plan 0 frames at 448×256: at least one frame of 8×8 pixels is needed");
    }
}
