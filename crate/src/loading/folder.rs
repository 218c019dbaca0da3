//! A model folder → the pieces of a pipeline, decided once for every caller.
//!
//! A pipeline is built from a [`TensorSource`]: text files by path (configs, tokenizer) and each
//! component's weights. Two sources implement it:
//! - [`Folder`], read through [`Files`] (the CLI reads the disk): the Hugging Face diffusers
//!   layout (`unet/config.json`, `unet/diffusion_pytorch_model[.fp16].safetensors` or a sharded
//!   `*.safetensors.index.json`), or a folder written by `weights-tools convert`
//!   (`manifest.json` + shards);
//! - [`StreamedModel`]: files and tensors handed in one at a time (the browser streams them).
//!
//! [`PipelineKind`] says which files a pipeline needs, so a caller that has to fetch them (the
//! browser) asks here instead of knowing the layout itself.

use std::collections::BTreeMap;

use burn::tensor::Device;
use safetensors::Dtype;
use serde::Deserialize;

use crate::loading::config::{ConfigFile, parse};
use crate::loading::manifest::Manifest;
use crate::loading::tokenizer::CLIPTokenizer;
use crate::loading::weights::Weights;
use crate::{Error, Result};

/// The two pipelines of the cascade, as diffusers names their folders' `model_index.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineKind {
    /// `I2VGenXLPipeline`: the base stage.
    I2VGenXL,
    /// `VideoToVideoSDPipeline` with a `UNet3DConditionModel`: the refinement stage.
    VideoToVideoSD,
}

/// Tokenizer files a CLIP tokenizer may come with; only the first two are required.
const TOKENIZER_FILES: [(&str, bool); 4] = [
    ("tokenizer/vocab.json", true),
    ("tokenizer/merges.txt", true),
    ("tokenizer/tokenizer_config.json", false),
    ("tokenizer/special_tokens_map.json", false),
];

impl PipelineKind {
    /// `"i2vgen"` or `"refiner"`, the names the page and the CLI use.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "i2vgen" => Ok(Self::I2VGenXL),
            "refiner" => Ok(Self::VideoToVideoSD),
            other => Err(Error::Request {
                field: "kind",
                message: format!("unknown pipeline kind {other:?}; use \"i2vgen\" or \"refiner\""),
            }),
        }
    }

    /// diffusers' class name of the pipeline.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::I2VGenXL => "I2VGenXLPipeline",
            Self::VideoToVideoSD => "VideoToVideoSDPipeline",
        }
    }

    /// The components that carry weights, in load order.
    pub fn components(self) -> &'static [&'static str] {
        match self {
            Self::I2VGenXL => &["text_encoder", "image_encoder", "vae", "unet"],
            Self::VideoToVideoSD => &["text_encoder", "vae", "unet"],
        }
    }

    /// Every text file the pipeline reads, with whether it must exist.
    pub fn text_files(self) -> Vec<(String, bool)> {
        let mut files = vec![("scheduler/scheduler_config.json".to_string(), true)];
        if self == Self::I2VGenXL {
            files.push(("feature_extractor/preprocessor_config.json".to_string(), true));
        }
        files.extend(TOKENIZER_FILES.iter().map(|&(path, required)| (path.to_string(), required)));
        files.extend(self.components().iter().map(|c| (format!("{c}/config.json"), true)));
        files
    }
}

/// Where a pipeline's files come from.
pub trait TensorSource {
    /// A text file (config, tokenizer) by its path in the folder; `None` when there is none.
    fn text(&mut self, path: &str) -> Result<Option<String>>;
    /// Every tensor of `component`, on `device` (a source that uploaded them as they arrived
    /// hands over those).
    fn weights(&mut self, component: &str, device: &Device) -> Result<Weights>;
}

/// A required text file.
pub fn required_text(source: &mut dyn TensorSource, path: &str) -> Result<String> {
    source.text(path)?.ok_or_else(|| Error::MissingFile { path: path.to_string() })
}

/// A config struct from its file (`T::FILE`). Keys it does not know are not fatal: they are
/// added to `notes` as a sentence for the caller to show.
pub fn config<T: ConfigFile>(source: &mut dyn TensorSource, notes: &mut Vec<String>) -> Result<T> {
    // A missing config means a missing component folder, as far as a user can tell.
    let folder = T::FILE.split_once('/').map_or(T::FILE, |(folder, _)| folder);
    let text = source.text(T::FILE)?.ok_or_else(|| Error::MissingFile { path: format!("{folder}/") })?;
    let parsed = parse::<T>(&text)?;
    if !parsed.unknown_keys.is_empty() {
        notes.push(format!("{} has keys this version ignores: {}", T::FILE, parsed.unknown_keys.join(", ")));
    }
    Ok(parsed.config)
}

/// `_class_name` of `<component>/config.json`: which network a folder holds.
pub fn class_name(source: &mut dyn TensorSource, component: &str) -> Result<String> {
    let file = format!("{component}/config.json");
    let json: serde_json::Value = serde_json::from_str(&required_text(source, &file)?)
        .map_err(|e| Error::Config { file: file.clone(), message: format!("not JSON: {e}") })?;
    json.get("_class_name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or(Error::Config { file, message: "has no _class_name".into() })
}

/// The CLIP tokenizer of `tokenizer/`.
pub fn tokenizer(source: &mut dyn TensorSource) -> Result<CLIPTokenizer> {
    let [vocab, merges, config, special] = TOKENIZER_FILES.map(|(path, _)| source.text(path));
    let required = |file: Result<Option<String>>, (path, _): (&str, bool)| {
        file?.ok_or_else(|| Error::MissingFile { path: path.to_string() })
    };
    CLIPTokenizer::from_files(
        &required(vocab, TOKENIZER_FILES[0])?,
        &required(merges, TOKENIZER_FILES[1])?,
        config?.as_deref(),
        special?.as_deref(),
    )
}

/// A network from its config and weights: every tensor must be taken.
pub fn network<C: ConfigFile, N>(
    source: &mut dyn TensorSource,
    component: &str,
    device: &Device,
    notes: &mut Vec<String>,
    load: impl FnOnce(&mut Weights, &C) -> Result<N>,
) -> Result<N> {
    let config = config::<C>(source, notes)?;
    let in_component = |error: Error| Error::Component { component: component.to_string(), source: Box::new(error) };
    let mut weights = source.weights(component, device).map_err(in_component)?;
    let net = load(&mut weights, &config).map_err(in_component)?;
    weights.finish().map_err(in_component)?;
    Ok(net)
}

/// Read access to a folder's files by relative, `/`-separated path. The library never touches a
/// disk or a network itself: the caller implements this.
pub trait Files {
    /// The bytes of a file; `Ok(None)` when it does not exist.
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// The names of the files directly inside `dir`; `Ok(None)` when there is no such folder.
    fn list(&self, dir: &str) -> std::io::Result<Option<Vec<String>>>;
}

fn read<F: Files + ?Sized>(files: &F, path: &str) -> Result<Option<Vec<u8>>> {
    files.read(path).map_err(|source| Error::File { path: path.to_string(), source })
}

fn read_required<F: Files + ?Sized>(files: &F, path: &str) -> Result<Vec<u8>> {
    read(files, path)?.ok_or_else(|| Error::MissingFile { path: path.to_string() })
}

fn read_text<F: Files + ?Sized>(files: &F, path: &str) -> Result<Option<String>> {
    read(files, path)?
        .map(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| Error::Config { file: path.to_string(), message: "is not UTF-8 text".into() })
        })
        .transpose()
}

/// A model folder on a [`Files`]: the diffusers layout (one folder per component), or a folder
/// written by `weights-tools convert` (configs as they were, weights in shards listed by
/// `manifest.json`).
pub struct Folder<F> {
    files: F,
    /// `Some` for a converted folder.
    manifest: Option<Manifest>,
    /// Diffusers layout: take the `fp16` variant files where both exist.
    prefer_fp16: bool,
    /// See [`Folder::set_packed_f16`].
    packed_f16: bool,
}

impl<F: Files> Folder<F> {
    /// Converted when the folder has a `manifest.json`, else diffusers' layout.
    pub fn new(files: F, prefer_fp16: bool) -> Result<Self> {
        let manifest = read_text(&files, "manifest.json")?.map(|text| Manifest::parse(&text)).transpose()?;
        Ok(Self { files, manifest, prefer_fp16, packed_f16: false })
    }

    /// Hold the `Linear` and conv weights read from now on as packed f16 as each arrives, and
    /// build networks that keep them so ([`Weights::set_packed_f16`]): half the weight memory,
    /// computing in f32, and never a component's f32 weights all at once.
    pub fn set_packed_f16(&mut self, on: bool) {
        self.packed_f16 = on;
    }

    /// The safetensors files of a component in the diffusers layout.
    fn weight_files(&self, component: &str) -> Result<Vec<String>> {
        let names = self
            .files
            .list(component)
            .map_err(|source| Error::File { path: component.to_string(), source })?
            .ok_or_else(|| Error::MissingFile { path: format!("{component}/") })?;
        Ok(match select_weight_files(&names, self.prefer_fp16)? {
            WeightFiles::Single(name) => vec![format!("{component}/{name}")],
            WeightFiles::Index(index) => {
                let path = format!("{component}/{index}");
                let text = read_text(&self.files, &path)?.ok_or(Error::MissingFile { path: path.clone() })?;
                index_shards(&text, &path)?.into_iter().map(|shard| format!("{component}/{shard}")).collect()
            }
        })
    }
}

/// A model folder of either layout, full-precision weight files preferred (see
/// [`weight_file_candidates`]).
pub fn open<F: Files + 'static>(files: F) -> Result<Box<dyn TensorSource>> {
    Ok(Box::new(Folder::new(files, false)?))
}

impl<F: Files> TensorSource for Folder<F> {
    fn text(&mut self, path: &str) -> Result<Option<String>> {
        read_text(&self.files, path)
    }

    fn weights(&mut self, component: &str, device: &Device) -> Result<Weights> {
        let mut weights = Weights::new(device);
        weights.set_packed_f16(self.packed_f16);
        let Some(manifest) = &self.manifest else {
            for path in self.weight_files(component)? {
                weights.insert_file(&path, &read_required(&self.files, &path)?)?;
            }
            return Ok(weights);
        };
        let mut shards = BTreeMap::new();
        for i in manifest.shards_of(component)? {
            shards.insert(i, read_required(&self.files, &manifest.shards[i].path)?);
        }
        manifest.insert_into(component, &shards, &mut weights)?;
        Ok(weights)
    }
}

/// Files and tensors handed in one at a time, each tensor uploaded as it arrives, so the caller
/// never holds more than one tensor's bytes (the browser's streamed download).
pub struct StreamedModel {
    device: Device,
    files: BTreeMap<String, String>,
    weights: BTreeMap<String, Weights>,
    packed_f16: bool,
}

impl StreamedModel {
    pub fn new(device: &Device) -> Self {
        Self { device: device.clone(), files: BTreeMap::new(), weights: BTreeMap::new(), packed_f16: false }
    }

    /// Hold the `Linear` and conv weights added from now on as packed f16, and build networks
    /// that keep them so ([`Weights::set_packed_f16`]): half the weight memory, computing in f32.
    pub fn set_packed_f16(&mut self, on: bool) {
        self.packed_f16 = on;
    }

    /// A text file by its path in the folder.
    pub fn add_file(&mut self, path: &str, text: String) {
        self.files.insert(path.to_string(), text);
    }

    /// A text file added so far (e.g. a config, before any weight arrives).
    pub fn file(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    /// One tensor of a component, from its little-endian safetensors bytes.
    pub fn add_tensor(
        &mut self,
        component: &str,
        key: &str,
        dtype: Dtype,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<()> {
        let weights = self.weights.entry(component.to_string()).or_insert_with(|| {
            let mut weights = Weights::new(&self.device);
            weights.set_packed_f16(self.packed_f16);
            weights
        });
        weights
            .insert(key, dtype, shape, bytes)
            .map_err(|e| Error::Component { component: component.to_string(), source: Box::new(e) })
    }

    /// A tensor of a converted shard, named `<component>/<key>`.
    pub fn add_shard_tensor(&mut self, name: &str, dtype: Dtype, shape: &[usize], bytes: &[u8]) -> Result<()> {
        let (component, key) = name.split_once('/').ok_or_else(|| Error::Tensor {
            key: name.to_string(),
            message: "a converted shard names its tensors `<component>/<key>`".into(),
        })?;
        self.add_tensor(component, key, dtype, shape, bytes)
    }
}

impl TensorSource for StreamedModel {
    fn text(&mut self, path: &str) -> Result<Option<String>> {
        Ok(self.files.get(path).cloned())
    }

    fn weights(&mut self, component: &str, _device: &Device) -> Result<Weights> {
        self.weights.remove(component).ok_or_else(|| Error::MissingFile { path: format!("{component}/ weights") })
    }
}

/// Which files hold a component's weights, from the names in its folder.
#[derive(Debug, PartialEq)]
pub enum WeightFiles {
    /// Read this `*.safetensors.index.json`, then the shards it names ([`index_shards`]).
    Index(String),
    /// Read this one file.
    Single(String),
}

/// The weight files a component folder may have, most preferred first: the full-precision files
/// and diffusers' `fp16` variant, in the order `prefer_fp16` says (as `from_pretrained(variant=
/// "fp16")` with a fallback); in each, a sharded index before a single file, diffusers'
/// `diffusion_pytorch_model` stem before transformers' `model`.
pub fn weight_file_candidates(prefer_fp16: bool) -> Vec<WeightFiles> {
    let variants = if prefer_fp16 { [".fp16", ""] } else { ["", ".fp16"] };
    let mut candidates = Vec::new();
    for v in variants {
        for stem in ["diffusion_pytorch_model", "model"] {
            candidates.push(WeightFiles::Index(format!("{stem}{v}.safetensors.index.json")));
            candidates.push(WeightFiles::Single(format!("{stem}{v}.safetensors")));
        }
    }
    candidates
}

/// Pick the weight file(s) of a component folder from the names in it
/// ([`weight_file_candidates`]' first match).
pub fn select_weight_files(names: &[String], prefer_fp16: bool) -> Result<WeightFiles> {
    weight_file_candidates(prefer_fp16)
        .into_iter()
        .find(|c| {
            let (WeightFiles::Index(n) | WeightFiles::Single(n)) = c;
            names.contains(n)
        })
        .ok_or(Error::NoWeightFiles)
}

/// The shard file names a `*.safetensors.index.json` refers to, sorted, each once.
pub fn index_shards(index_json: &str, file: &str) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let index: Index = serde_json::from_str(index_json)
        .map_err(|e| Error::Config { file: file.to_string(), message: format!("not a safetensors index: {e}") })?;
    let mut shards: Vec<String> = index.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        let message = "has an empty weight_map, so it names no shard; download the index again".into();
        return Err(Error::Config { file: file.to_string(), message });
    }
    if shards.iter().any(|s| s.is_empty() || s.contains('/') || s.contains("..")) {
        return Err(Error::Config { file: file.to_string(), message: "names a shard outside its folder".into() });
    }
    Ok(shards)
}
