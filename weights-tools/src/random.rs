//! `weights-tools random`: a model folder in the Hugging Face diffusers layout with seeded random
//! weights, so the real-size path runs without a download (ali-vilab/i2vgen-xl is 4.98 GB in f16).
//!
//! The configs and tokenizer files come from `--config`: `real` (ali-vilab/i2vgen-xl's, in
//! `crate/configs/i2vgen-xl/`), `refiner` (the `VideoToVideoSDPipeline` of the cascade's second
//! stage, `crate/configs/refiner/`) — both built into this binary, with the tokenizer of
//! `tests/fixtures/tiny-i2vgen/tokenizer/` (the real CLIP vocabulary) — or a pipeline folder whose
//! text files are copied (e.g. `tests/fixtures/tiny-i2vgen`). Each network's keys and shapes are
//! the ones the library takes when it builds that network from the config
//! ([`Weights::shapes`]), so the folder loads by construction.
//!
//! Values: uniform in ±1/√fan_in (fan_in = the elements per output channel, ±1 for vectors), as
//! [`Weights::random`] draws them, from a SplitMix64 stream per tensor seeded by `--seed` and the
//! key: the same seed gives the same bytes, and f16 holds the f32 values rounded. Norm weights are
//! drawn like the rest (not 1/0): activations stay in range, which is all a real-size run needs.
//! Each safetensors file is streamed (header, then each tensor in chunks through a `BufWriter`),
//! so memory stays at one chunk whatever the model's size.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::Device;
use clap::ValueEnum;
use i2vgen::loading::config::{ConfigFile, parse};
use i2vgen::loading::folder::PipelineKind;
use i2vgen::loading::weights::Weights;
use i2vgen::models::clip::{CLIPTextModel, CLIPVisionModelWithProjection};
use i2vgen::models::unet_3d_condition::UNet3DConditionModel;
use i2vgen::models::unet_i2vgen_xl::I2VGenXLUNet;
use i2vgen::models::vae::AutoencoderKL;
use serde_json::{Map, Value, json};

/// How the random weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DType {
    F16,
    F32,
}

impl DType {
    fn name(self) -> &'static str {
        match self {
            Self::F16 => "F16",
            Self::F32 => "F32",
        }
    }

    fn bytes(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

/// A text file of a pipeline folder: its path there and its bytes.
type TextFile = (&'static str, &'static [u8]);

/// The real CLIP tokenizer, as the tiny fixture carries it (shared by both stages).
const TOKENIZER: [TextFile; 4] = [
    ("tokenizer/vocab.json", include_bytes!("../../tests/fixtures/tiny-i2vgen/tokenizer/vocab.json")),
    ("tokenizer/merges.txt", include_bytes!("../../tests/fixtures/tiny-i2vgen/tokenizer/merges.txt")),
    (
        "tokenizer/tokenizer_config.json",
        include_bytes!("../../tests/fixtures/tiny-i2vgen/tokenizer/tokenizer_config.json"),
    ),
    (
        "tokenizer/special_tokens_map.json",
        include_bytes!("../../tests/fixtures/tiny-i2vgen/tokenizer/special_tokens_map.json"),
    ),
];

/// ali-vilab/i2vgen-xl's configs.
const REAL: [TextFile; 7] = [
    ("model_index.json", include_bytes!("../../crate/configs/i2vgen-xl/model_index.json")),
    (
        "scheduler/scheduler_config.json",
        include_bytes!("../../crate/configs/i2vgen-xl/scheduler/scheduler_config.json"),
    ),
    (
        "feature_extractor/preprocessor_config.json",
        include_bytes!("../../crate/configs/i2vgen-xl/feature_extractor/preprocessor_config.json"),
    ),
    ("text_encoder/config.json", include_bytes!("../../crate/configs/i2vgen-xl/text_encoder/config.json")),
    ("image_encoder/config.json", include_bytes!("../../crate/configs/i2vgen-xl/image_encoder/config.json")),
    ("vae/config.json", include_bytes!("../../crate/configs/i2vgen-xl/vae/config.json")),
    ("unet/config.json", include_bytes!("../../crate/configs/i2vgen-xl/unet/config.json")),
];

/// The refiner's configs: SD 2.1's text encoder and VAE, the MS-Vid2Vid-XL / zeroscope_v2_XL UNet
/// and DDIM scheduler.
const REFINER: [TextFile; 5] = [
    ("model_index.json", include_bytes!("../../crate/configs/refiner/model_index.json")),
    ("scheduler/scheduler_config.json", include_bytes!("../../crate/configs/refiner/scheduler/scheduler_config.json")),
    ("text_encoder/config.json", include_bytes!("../../crate/configs/refiner/text_encoder/config.json")),
    ("vae/config.json", include_bytes!("../../crate/configs/refiner/vae/config.json")),
    ("unet/config.json", include_bytes!("../../crate/configs/refiner/unet/config.json")),
];

/// A pipeline's text files, `model_index.json` first.
struct Texts {
    kind: PipelineKind,
    files: Vec<(String, Vec<u8>)>,
}

impl Texts {
    fn new(files: Vec<(String, Vec<u8>)>) -> Result<Self> {
        let index: Value = files
            .iter()
            .find(|(path, _)| path == "model_index.json")
            .map(|(_, bytes)| serde_json::from_slice(bytes))
            .ok_or_else(|| anyhow!("no model_index.json: --config must be a diffusers pipeline folder"))?
            .context("model_index.json is not JSON")?;
        let class = index.get("_class_name").and_then(Value::as_str).unwrap_or_default();
        let kind = [PipelineKind::I2VGenXL, PipelineKind::VideoToVideoSD]
            .into_iter()
            .find(|k| k.class_name() == class)
            .ok_or_else(|| {
                anyhow!("model_index.json names a {class:?}; random writes I2VGenXLPipeline or VideoToVideoSDPipeline")
            })?;
        Ok(Self { kind, files })
    }

    fn builtin(tables: &[&[TextFile]]) -> Result<Self> {
        Self::new(
            tables.iter().flat_map(|t| t.iter()).map(|&(path, bytes)| (path.to_string(), bytes.to_vec())).collect(),
        )
    }

    /// `model_index.json` and every text file the pipeline reads, from a folder.
    fn folder(dir: &Path) -> Result<Self> {
        let read = |path: &str| -> Result<Option<Vec<u8>>> {
            match std::fs::read(dir.join(path)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                other => other.map(Some).with_context(|| format!("cannot read {}", dir.join(path).display())),
            }
        };
        let index = read("model_index.json")?.ok_or_else(|| {
            anyhow!(
                "{} has no model_index.json; --config takes real, refiner or a diffusers pipeline folder",
                dir.display()
            )
        })?;
        let mut texts = Self::new(vec![("model_index.json".into(), index)])?;
        for (path, required) in texts.kind.text_files() {
            match read(&path)? {
                Some(bytes) => texts.files.push((path, bytes)),
                None if required => bail!("{} has no {path}", dir.display()),
                None => {}
            }
        }
        Ok(texts)
    }

    fn text(&self, path: &str) -> Result<&str> {
        let (_, bytes) = self.files.iter().find(|(p, _)| p == path).ok_or_else(|| anyhow!("no {path}"))?;
        std::str::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8"))
    }
}

/// The keys and shapes the network of `component` takes, as the library builds it from its config.
fn shapes(texts: &Texts, component: &str) -> Result<Vec<(String, Vec<usize>)>> {
    fn record<C: ConfigFile, N>(
        config: &str,
        load: fn(&mut Weights, &C) -> i2vgen::Result<N>,
    ) -> Result<Vec<(String, Vec<usize>)>> {
        #[allow(deprecated)] // NdArray: the CPU backend; the placeholders cost no memory.
        let mut weights = Weights::shapes(&Device::ndarray());
        load(&mut weights, &parse::<C>(config)?.config)?;
        Ok(weights.recorded())
    }
    let path = format!("{component}/config.json");
    let config = texts.text(&path)?;
    let shapes = match component {
        "text_encoder" => record(config, CLIPTextModel::load),
        "image_encoder" => record(config, CLIPVisionModelWithProjection::load),
        "vae" => record(config, AutoencoderKL::load),
        "unet" => {
            let json: Value = serde_json::from_str(config).context("not JSON")?;
            match json.get("_class_name").and_then(Value::as_str) {
                Some("I2VGenXLUNet") => record(config, I2VGenXLUNet::load),
                Some("UNet3DConditionModel") => record(config, UNet3DConditionModel::load),
                other => bail!("_class_name is {other:?}; expected I2VGenXLUNet or UNet3DConditionModel"),
            }
        }
        other => bail!("no network is known for the component {other:?}"),
    };
    shapes.with_context(|| format!("building the network of {path}"))
}

/// The file diffusers (unet, vae) or transformers (the CLIP encoders) saves a component's weights to.
fn weight_file(component: &str) -> &'static str {
    match component {
        "text_encoder" | "image_encoder" => "model.safetensors",
        _ => "diffusion_pytorch_model.safetensors",
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and good enough for weights.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The stream of one tensor: the seed and the key's FNV-1a hash, so the values do not depend
    /// on the order tensors are written in.
    fn for_tensor(seed: u64, key: &str) -> Self {
        let hash =
            key.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
        let mut mix = Self(seed ^ hash);
        Self(mix.next())
    }

    /// Uniform in [-bound, bound).
    fn uniform(&mut self, bound: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * unit - 1.0) * bound
    }
}

/// Elements generated and written at a time.
const CHUNK: usize = 1 << 16;

/// Stream one safetensors file: the header (tensors in key order, data in that order), then each
/// tensor's values. Returns the bytes written.
fn write_safetensors(path: &Path, shapes: &[(String, Vec<usize>)], dtype: DType, seed: u64) -> Result<u64> {
    let mut tensors: Vec<&(String, Vec<usize>)> = shapes.iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0usize;
    for (key, shape) in &tensors {
        let end = offset + shape.iter().product::<usize>() * dtype.bytes();
        header.insert(key.clone(), json!({ "dtype": dtype.name(), "shape": shape, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut header = serde_json::to_string(&header)?.into_bytes();
    // The data starts 8-byte aligned: the header is padded with spaces, as the format allows.
    header.resize(header.len().next_multiple_of(8), b' ');

    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    let mut buffer = Vec::with_capacity(CHUNK * dtype.bytes());
    for (key, shape) in tensors {
        let fan_in: usize = shape[1..].iter().product();
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let mut rng = SplitMix64::for_tensor(seed, key);
        let mut left: usize = shape.iter().product();
        while left > 0 {
            let n = left.min(CHUNK);
            buffer.clear();
            for _ in 0..n {
                let v = rng.uniform(bound);
                match dtype {
                    DType::F32 => buffer.extend_from_slice(&v.to_le_bytes()),
                    DType::F16 => buffer.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                }
            }
            out.write_all(&buffer).with_context(|| format!("cannot write {}", path.display()))?;
            left -= n;
        }
    }
    out.flush().with_context(|| format!("cannot write {}", path.display()))?;
    let written = 8 + header.len() as u64 + offset as u64;
    let on_disk = std::fs::metadata(path)?.len();
    if on_disk != written {
        bail!("{} has {on_disk} bytes after writing {written}", path.display());
    }
    Ok(written)
}

pub fn run(config: &str, to: &Path, dtype: DType, seed: u64) -> Result<()> {
    let start = Instant::now();
    let texts = match config {
        "real" => Texts::builtin(&[&REAL, &TOKENIZER])?,
        "refiner" => Texts::builtin(&[&REFINER, &TOKENIZER])?,
        dir => Texts::folder(Path::new(dir))?,
    };
    if to.exists() && (!to.is_dir() || std::fs::read_dir(to)?.next().is_some()) {
        bail!("{} already exists and is not an empty folder; choose a new or empty one", to.display());
    }
    // Build every network before writing anything: a config the library refuses writes nothing.
    let networks = texts
        .kind
        .components()
        .iter()
        .map(|&component| Ok((component, shapes(&texts, component)?)))
        .collect::<Result<Vec<_>>>()?;

    for (path, bytes) in &texts.files {
        let target = to.join(path);
        std::fs::create_dir_all(target.parent().expect("a path in the folder"))?;
        std::fs::write(&target, bytes).with_context(|| format!("cannot write {}", target.display()))?;
    }
    let mut summary = Vec::new();
    for (component, shapes) in &networks {
        let params: usize = shapes.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        let file = format!("{component}/{}", weight_file(component));
        eprintln!(
            "{component}: {} tensors, {:.1} M parameters → {file} ({dtype:?})",
            shapes.len(),
            params as f64 / 1e6
        );
        let began = Instant::now();
        let bytes = write_safetensors(&to.join(&file), shapes, dtype, seed)?;
        let seconds = began.elapsed().as_secs_f64();
        eprintln!("{component}: {bytes} bytes written in {seconds:.1} s");
        summary.push((file, params, bytes));
    }
    println!("{} with random weights ({dtype:?}, seed {seed}) in {}:", texts.kind.class_name(), to.display());
    for (file, params, bytes) in &summary {
        println!("  {file:<50} {:>8.1} M params {:>14} bytes", *params as f64 / 1e6, bytes);
    }
    let total: u64 = summary.iter().map(|(_, _, b)| b).sum();
    println!("  total {total} bytes ({:.2} GB) in {:.1} s", total as f64 / 1e9, start.elapsed().as_secs_f64());
    Ok(())
}
