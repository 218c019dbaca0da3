//! Converted weights (`weights-tools convert`): a folder with the diffusers configs and tokenizer
//! files copied as they are, safetensors shards of at most a few tens of MB, and `manifest.json`
//! naming every shard (size, sha256), every copied file, and every tensor (component, key, dtype,
//! shape, shard, byte range inside the shard file), so a browser can fetch and check piece by piece.
//!
//! Inside a shard a tensor is named `<component>/<key>`. Storage dtypes:
//! - `f32`, `f16`: every tensor in that dtype.
//! - `q8`: Linear and Conv weights (`*.weight` with 2 or more dimensions, outside CLIP's
//!   `embeddings.`) as int8, symmetric per output channel: `w ≈ q · scale[o]` with
//!   `scale[o] = max|w[o, …]| / 127` stored beside as f32 `<key>.q8_scale` `[out]`; every other
//!   tensor (norms, biases, embeddings) in f16.

use std::collections::BTreeMap;

use burn::tensor::Device;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::loading::weights::Weights;
use crate::{Error, Result};

pub const FORMAT: &str = "i2vgen-weights";
pub const VERSION: u32 = 1;
/// Suffix of a q8 tensor's per-output-channel scales.
pub const Q8_SCALE: &str = ".q8_scale";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageDType {
    F32,
    F16,
    Q8,
}

impl std::str::FromStr for StorageDType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8" => Ok(Self::Q8),
            other => Err(format!("unknown dtype {other:?}; use f32, f16 or q8")),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub dtype: StorageDType,
    /// Copied files (configs, tokenizer), by path relative to the folder.
    pub files: Vec<FileEntry>,
    /// Shard files in order; `TensorEntry::shard` indexes this list.
    pub shards: Vec<FileEntry>,
    /// Tensors by component (`unet`, `vae`, …), in shard order.
    pub components: BTreeMap<String, Vec<TensorEntry>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TensorEntry {
    /// The state-dict key inside the component (`down_blocks.0.resnets.0.conv1.weight`).
    pub key: String,
    /// `F32`, `F16` or `I8`, as safetensors spells them.
    pub dtype: String,
    pub shape: Vec<usize>,
    pub shard: usize,
    /// Byte range of the values in the shard file (header included in the offsets).
    pub begin: u64,
    pub end: u64,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Self> {
        let error = |message: String| Error::Config { file: "manifest.json".into(), message };
        let manifest: Self = serde_json::from_str(text).map_err(|e| error(format!("invalid: {e}")))?;
        if manifest.format != FORMAT || manifest.version != VERSION {
            return Err(error(format!(
                "is {} version {}; this build reads {FORMAT} version {VERSION}",
                manifest.format, manifest.version
            )));
        }
        manifest.validate().map_err(error)?;
        Ok(manifest)
    }

    /// Every path inside the folder, every hash well formed, every tensor entry inside its shard
    /// with as many bytes as its dtype and shape need: a damaged or hostile manifest is refused
    /// before anything is fetched or read.
    fn validate(&self) -> std::result::Result<(), String> {
        let damaged = "; the manifest is damaged, convert the model again with weights-tools";
        for file in self.files.iter().chain(&self.shards) {
            let path = &file.path;
            let inside = !path.is_empty()
                && !path.starts_with('/')
                && !path.contains('\\')
                && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
            if !inside {
                return Err(format!("the path {path:?} leaves the model folder{damaged}"));
            }
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(format!("{path}: sha256 {:?} is not 64 lowercase hex digits{damaged}", file.sha256));
            }
        }
        for (component, tensors) in &self.components {
            if component.is_empty() || component.contains('/') {
                return Err(format!("the component name {component:?} is not a folder name{damaged}"));
            }
            for t in tensors {
                let name = format!("{component}/{}", t.key);
                let shard = self.shards.get(t.shard).ok_or_else(|| {
                    format!("`{name}` names shard {}, but only {} are listed{damaged}", t.shard, self.shards.len())
                })?;
                let value_bytes: u64 = match t.dtype.as_str() {
                    "F32" => 4,
                    "F16" => 2,
                    "I8" => 1,
                    other => return Err(format!("`{name}` has dtype {other:?}; use F32, F16 or I8{damaged}")),
                };
                let bytes = t.shape.iter().try_fold(value_bytes, |n, &d| n.checked_mul(d as u64));
                if t.begin > t.end || t.end > shard.bytes || bytes != Some(t.end - t.begin) {
                    return Err(format!(
                        "`{name}` (shape {:?}, {}) lies at bytes {}..{} of {} ({} bytes){damaged}",
                        t.shape, t.dtype, t.begin, t.end, shard.path, shard.bytes
                    ));
                }
            }
        }
        Ok(())
    }

    /// The shards a component's tensors live in, in order.
    pub fn shards_of(&self, component: &str) -> Result<Vec<usize>> {
        let tensors = self.tensors_of(component)?;
        let mut shards: Vec<usize> = tensors.iter().map(|t| t.shard).collect();
        shards.dedup();
        if let Some(bad) = shards.iter().find(|&&i| i >= self.shards.len()) {
            return Err(Error::Config {
                file: "manifest.json".into(),
                message: format!("`{component}` names shard {bad}, but only {} are listed", self.shards.len()),
            });
        }
        Ok(shards)
    }

    fn tensors_of(&self, component: &str) -> Result<&[TensorEntry]> {
        self.components
            .get(component)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::MissingFile { path: format!("{component}/ weights (manifest.json lists none)") })
    }

    /// A component's weights from its shard files (`shards[i]` is the bytes of shard i, for
    /// every i that [`Manifest::shards_of`] names); q8 tensors dequantise when taken.
    pub fn weights(&self, component: &str, shards: &BTreeMap<usize, Vec<u8>>, device: &Device) -> Result<Weights> {
        let mut weights = Weights::new(device);
        self.insert_into(component, shards, &mut weights)?;
        Ok(weights)
    }

    /// [`Self::weights`] into `weights` (e.g. one that packs f16 as they arrive).
    pub fn insert_into(&self, component: &str, shards: &BTreeMap<usize, Vec<u8>>, weights: &mut Weights) -> Result<()> {
        let mut parsed = BTreeMap::new();
        for (&i, bytes) in shards {
            let file = SafeTensors::deserialize(bytes)
                .map_err(|source| Error::Safetensors { file: format!("shard {i}"), source })?;
            parsed.insert(i, file);
        }
        for entry in self.tensors_of(component)? {
            let name = format!("{component}/{}", entry.key);
            let file = parsed.get(&entry.shard).ok_or_else(|| Error::Tensor {
                key: name.clone(),
                message: format!("its shard {} was not given", entry.shard),
            })?;
            let view = file
                .tensor(&name)
                .map_err(|e| Error::Tensor { key: name.clone(), message: format!("shard {}: {e}", entry.shard) })?;
            weights.insert(&entry.key, view.dtype(), view.shape(), view.data())?;
        }
        Ok(())
    }
}

/// Whether this is a `Linear` or conv weight (not an embedding): what `q8` stores as int8 and
/// packed-f16 weights hold packed ([`crate::loading::weights::Weights::set_packed_f16`]).
pub fn is_matrix_weight(key: &str, shape: &[usize]) -> bool {
    key.ends_with(".weight") && shape.len() >= 2 && !key.contains("embeddings.")
}

/// Symmetric int8 per output channel (dimension 0): `(q, scales)`.
pub fn quantize_q8(values: &[f32], out_channels: usize) -> (Vec<i8>, Vec<f32>) {
    let per = values.len() / out_channels.max(1);
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(out_channels);
    for row in values.chunks(per.max(1)) {
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        q.extend(row.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8));
        scales.push(scale);
    }
    (q, scales)
}
