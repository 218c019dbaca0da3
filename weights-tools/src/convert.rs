//! `weights-tools convert`: a diffusers pipeline folder (or one component folder) → a converted
//! folder (`i2vgen::loading::manifest`): configs and tokenizer files copied, weights re-stored as f32, f16
//! or q8 in safetensors shards of at most `--shard-mb`, and `manifest.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use i2vgen::loading::folder::{WeightFiles, index_shards, select_weight_files};
use i2vgen::loading::manifest::{
    FORMAT, FileEntry, Manifest, Q8_SCALE, StorageDType, TensorEntry, VERSION, is_matrix_weight, quantize_q8,
};
use i2vgen::loading::weights::to_f32;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::digest::sha256_hex;

/// One tensor ready to be written: its shard name, dtype, shape and bytes.
struct Stored {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// The component folders of `from`: its subfolders with a `config.json` (a pipeline), or `from`
/// itself (one component, named after the folder).
fn components(from: &Path) -> Result<Vec<(String, PathBuf)>> {
    if from.join("config.json").is_file() {
        let name = from.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        return Ok(vec![(name, from.to_path_buf())]);
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))? {
        let path = entry?.path();
        if path.join("config.json").is_file()
            || path.join("vocab.json").is_file()
            || path.join("scheduler_config.json").is_file()
            || path.join("preprocessor_config.json").is_file()
        {
            found.push((path.file_name().unwrap().to_string_lossy().into_owned(), path));
        }
    }
    if found.is_empty() {
        bail!("{} is neither a diffusers pipeline folder nor a component folder (no config.json)", from.display());
    }
    found.sort();
    Ok(found)
}

fn is_weight_file(name: &str) -> bool {
    name.ends_with(".safetensors")
        || name.ends_with(".safetensors.index.json")
        || name.ends_with(".bin")
        || name.ends_with(".ckpt")
        || name.ends_with(".pt")
        || name.ends_with(".pth")
}

/// The weight tensors of a component folder (none for tokenizer/scheduler folders), as stored.
fn component_tensors(component: &str, dir: &Path, dtype: StorageDType) -> Result<Vec<Stored>> {
    let names: Vec<String> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect();
    if !names.iter().any(|n| is_weight_file(n)) {
        return Ok(Vec::new());
    }
    let files = match select_weight_files(&names, false).with_context(|| format!("in {}", dir.display()))? {
        WeightFiles::Single(name) => vec![name],
        WeightFiles::Index(index) => index_shards(&std::fs::read_to_string(dir.join(&index))?, &index)?,
    };
    let mut out = Vec::new();
    for file in files {
        let bytes =
            std::fs::read(dir.join(&file)).with_context(|| format!("cannot read {}", dir.join(&file).display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not a safetensors file", dir.join(&file).display()))?;
        let mut tensors = st.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, view) in tensors {
            let values = to_f32(view.dtype(), view.data(), &key)?;
            let shape = view.shape().to_vec();
            let name = format!("{component}/{key}");
            match dtype {
                StorageDType::F32 => out.push(Stored {
                    name,
                    dtype: Dtype::F32,
                    shape,
                    bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                }),
                StorageDType::Q8 if is_matrix_weight(&key, &shape) => {
                    let (q, scales) = quantize_q8(&values, shape[0]);
                    out.push(Stored {
                        name: name.clone(),
                        dtype: Dtype::I8,
                        shape: shape.clone(),
                        bytes: q.iter().map(|&v| v as u8).collect(),
                    });
                    out.push(Stored {
                        name: format!("{name}{Q8_SCALE}"),
                        dtype: Dtype::F32,
                        shape: vec![shape[0]],
                        bytes: scales.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    });
                }
                StorageDType::F16 | StorageDType::Q8 => {
                    let bytes = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
                    out.push(Stored { name, dtype: Dtype::F16, shape, bytes });
                }
            }
        }
    }
    Ok(out)
}

/// Copy the component's non-weight files (configs, vocabulary), returning their entries.
fn copy_files(component: &str, dir: &Path, to: &Path) -> Result<Vec<FileEntry>> {
    let mut entries = Vec::new();
    let mut names: Vec<String> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect();
    names.sort();
    for name in names.into_iter().filter(|n| !is_weight_file(n) && dir.join(n).is_file()) {
        let bytes = std::fs::read(dir.join(&name))?;
        let path = format!("{component}/{name}");
        std::fs::create_dir_all(to.join(component))?;
        std::fs::write(to.join(&path), &bytes).with_context(|| format!("cannot write {}", to.join(&path).display()))?;
        entries.push(FileEntry { path, bytes: bytes.len() as u64, sha256: sha256_hex(&bytes) });
    }
    Ok(entries)
}

/// Write one shard and record where each of its tensors' bytes lie.
fn write_shard(index: usize, tensors: &[Stored], to: &Path, manifest: &mut Manifest) -> Result<()> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|t| Ok((t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.bytes)?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None)?;
    let path = format!("shard-{index:05}.safetensors");
    std::fs::write(to.join(&path), &bytes).with_context(|| format!("cannot write {}", to.join(&path).display()))?;
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) + 8;
    let (_, metadata) = SafeTensors::read_metadata(&bytes)?;
    for t in tensors {
        let info = metadata.info(&t.name).expect("written just now");
        let (component, key) = t.name.split_once('/').expect("component/key");
        manifest.components.entry(component.to_string()).or_default().push(TensorEntry {
            key: key.to_string(),
            dtype: format!("{:?}", t.dtype),
            shape: t.shape.clone(),
            shard: index,
            begin: header + info.data_offsets.0 as u64,
            end: header + info.data_offsets.1 as u64,
        });
    }
    manifest.shards.push(FileEntry { path, bytes: bytes.len() as u64, sha256: sha256_hex(&bytes) });
    Ok(())
}

pub fn run(from: &Path, to: &Path, dtype: StorageDType, shard_mb: u64) -> Result<()> {
    if to.join("manifest.json").exists() {
        bail!("{} already holds a converted model; choose an empty folder", to.display());
    }
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        dtype,
        files: Vec::new(),
        shards: Vec::new(),
        components: BTreeMap::new(),
    };
    if from.join("model_index.json").is_file() {
        let bytes = std::fs::read(from.join("model_index.json"))?;
        std::fs::write(to.join("model_index.json"), &bytes)?;
        manifest.files.push(FileEntry {
            path: "model_index.json".into(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
    }
    let limit = shard_mb.max(1) << 20;
    let (mut pending, mut pending_bytes) = (Vec::new(), 0u64);
    for (component, dir) in components(from)? {
        manifest.files.extend(copy_files(&component, &dir, to)?);
        for tensor in component_tensors(&component, &dir, dtype)? {
            let size = tensor.bytes.len() as u64;
            if !pending.is_empty() && pending_bytes + size > limit {
                write_shard(manifest.shards.len(), &pending, to, &mut manifest)?;
                (pending, pending_bytes) = (Vec::new(), 0);
            }
            pending_bytes += size;
            pending.push(tensor);
        }
        eprintln!("converted {component}");
    }
    if !pending.is_empty() {
        write_shard(manifest.shards.len(), &pending, to, &mut manifest)?;
    }
    let total: u64 = manifest.shards.iter().map(|s| s.bytes).sum();
    std::fs::write(to.join("manifest.json"), serde_json::to_string_pretty(&manifest)? + "\n")?;
    println!("{}: {} shards, {:.1} MB of {dtype:?} weights", to.display(), manifest.shards.len(), total as f64 / 1e6);
    Ok(())
}
