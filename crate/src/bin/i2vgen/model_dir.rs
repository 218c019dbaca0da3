//! Reading a diffusers pipeline folder: component configs and weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use i2vgen::config::{ConfigFile, parse};
use i2vgen::manifest::Manifest;
use i2vgen::tokenizer::CLIPTokenizer;
use i2vgen::weights::{WeightFiles, Weights, index_shards, select_weight_files};

fn component_dir(model: &Path, component: &str) -> Result<PathBuf> {
    let dir = model.join(component);
    if !dir.is_dir() {
        bail!("{} has no {component}/ folder; --model must be a diffusers pipeline folder", model.display());
    }
    Ok(dir)
}

/// Read a text file of a component (`tokenizer/vocab.json`), with the path in any error.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Parse `<component>/config.json`; unknown keys are reported on stderr, not fatal.
pub fn config<T: ConfigFile>(model: &Path, component: &str) -> Result<T> {
    let path = component_dir(model, component)?.join("config.json");
    let parsed = parse::<T>(&read_text(&path)?)?;
    if !parsed.unknown_keys.is_empty() {
        eprintln!("note: {} has keys this version ignores: {}", path.display(), parsed.unknown_keys.join(", "));
    }
    Ok(parsed.config)
}

/// `_class_name` of `<component>/config.json` (which network a folder holds).
pub fn class_name(model: &Path, component: &str) -> Result<String> {
    let path = component_dir(model, component)?.join("config.json");
    let json: serde_json::Value = serde_json::from_str(&read_text(&path)?).with_context(|| format!("{} is not JSON", path.display()))?;
    match json.get("_class_name").and_then(|v| v.as_str()) {
        Some(name) => Ok(name.to_string()),
        None => bail!("{} has no _class_name", path.display()),
    }
}

/// Parse a config file by path inside the model folder (scheduler, feature extractor).
pub fn config_file<T: ConfigFile>(model: &Path, relative: &str) -> Result<T> {
    let path = model.join(relative);
    let parsed = parse::<T>(&read_text(&path)?)?;
    if !parsed.unknown_keys.is_empty() {
        eprintln!("note: {} has keys this version ignores: {}", path.display(), parsed.unknown_keys.join(", "));
    }
    Ok(parsed.config)
}

/// The CLIP tokenizer of `tokenizer/`.
pub fn tokenizer(model: &Path) -> Result<CLIPTokenizer> {
    let dir = component_dir(model, "tokenizer")?;
    let read = |name: &str| read_text(&dir.join(name));
    let optional = |name: &str| dir.join(name).exists().then(|| read(name)).transpose();
    Ok(CLIPTokenizer::from_files(
        &read("vocab.json")?,
        &read("merges.txt")?,
        optional("tokenizer_config.json")?.as_deref(),
        optional("special_tokens_map.json")?.as_deref(),
    )?)
}

/// All weight tensors of a component, ready to be taken by its network: from the component
/// folder of a diffusers layout, or from the shards of a converted folder (`manifest.json`).
pub fn weights(model: &Path, component: &str, device: &Device) -> Result<Weights> {
    let manifest_path = model.join("manifest.json");
    if manifest_path.is_file() {
        let manifest = Manifest::parse(&read_text(&manifest_path)?)?;
        let mut shards = BTreeMap::new();
        for i in manifest.shards_of(component)? {
            let path = model.join(&manifest.shards[i].path);
            shards.insert(i, std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?);
        }
        return manifest.weights(component, &shards, device).with_context(|| format!("loading {component} from {}", manifest_path.display()));
    }
    let dir = component_dir(model, component)?;
    let names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    // Full-precision files first, else the hub's `*.fp16.safetensors` variant.
    let choice = select_weight_files(&names, None).or_else(|_| select_weight_files(&names, Some("fp16")));
    let files = match choice.with_context(|| format!("in {}", dir.display()))? {
        WeightFiles::Single(name) => vec![name],
        WeightFiles::Index(index) => index_shards(&read_text(&dir.join(&index))?)?,
    };
    let bytes = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).with_context(|| format!("cannot read {}", dir.join(f).display())))
        .collect::<Result<Vec<_>>>()?;
    let slices: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    Weights::from_safetensors(&slices, device).with_context(|| format!("loading {}", dir.display()))
}

/// Build a component's network from its config and weights; every tensor must be used.
pub fn network<C: ConfigFile, N>(model: &Path, component: &str, device: &Device, load: impl FnOnce(&mut Weights, &C) -> i2vgen::Result<N>) -> Result<N> {
    let config: C = config(model, component)?;
    let mut w = weights(model, component, device)?;
    let net = load(&mut w, &config).with_context(|| format!("loading {component}/"))?;
    w.finish().with_context(|| format!("loading {component}/"))?;
    Ok(net)
}
