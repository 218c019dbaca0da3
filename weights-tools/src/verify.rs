//! `weights-tools verify`: every shard and copied file has the size and sha256 the manifest
//! states, and every tensor entry matches its shard's own header (name, dtype, shape, bytes).
//! Whether the keys fit the configs is checked by loading (`i2vgen forward` refuses missing,
//! extra or wrong-shaped tensors by name).

use std::path::Path;

use anyhow::{Context, Result, bail};
use i2vgen::loading::manifest::Manifest;
use safetensors::SafeTensors;

use crate::digest::sha256_hex;

pub fn run(dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(dir.join("manifest.json"))
        .with_context(|| format!("{} has no manifest.json", dir.display()))?;
    let manifest = Manifest::parse(&text)?;
    let mut problems = Vec::new();
    let mut shards = Vec::new();
    for entry in manifest.files.iter().chain(&manifest.shards) {
        match std::fs::read(dir.join(&entry.path)) {
            Err(err) => problems.push(format!("{}: cannot read ({err})", entry.path)),
            Ok(bytes) if bytes.len() as u64 != entry.bytes => {
                problems.push(format!("{}: {} bytes, the manifest says {}", entry.path, bytes.len(), entry.bytes))
            }
            Ok(bytes) if sha256_hex(&bytes) != entry.sha256 => {
                problems.push(format!("{}: sha256 differs from the manifest (damaged file)", entry.path))
            }
            Ok(bytes) => {
                if entry.path.starts_with("shard-") {
                    shards.push((entry.path.clone(), bytes));
                }
            }
        }
    }
    if problems.is_empty() {
        for (component, tensors) in &manifest.components {
            for t in tensors {
                let Some((path, bytes)) = shards.get(t.shard) else {
                    problems.push(format!("{component}/{}: shard {} is not in the manifest", t.key, t.shard));
                    continue;
                };
                let file =
                    SafeTensors::deserialize(bytes).with_context(|| format!("{path} is not a safetensors file"))?;
                let name = format!("{component}/{}", t.key);
                match file.tensor(&name) {
                    Err(_) => problems.push(format!("{name}: not in {path}")),
                    Ok(view) => {
                        let offset = view.data().as_ptr() as u64 - bytes.as_ptr() as u64;
                        let (begin, end) = (offset, offset + view.data().len() as u64);
                        if view.shape() != t.shape.as_slice()
                            || format!("{:?}", view.dtype()) != t.dtype
                            || (begin, end) != (t.begin, t.end)
                        {
                            problems.push(format!("{name}: the manifest entry disagrees with {path}'s header"));
                        }
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!("{} problem(s) in {}:\n  {}", problems.len(), dir.display(), problems.join("\n  "));
    }
    let tensors: usize = manifest.components.values().map(Vec::len).sum();
    println!(
        "{}: ok ({} shards, {} files, {tensors} tensors, {:?})",
        dir.display(),
        manifest.shards.len(),
        manifest.files.len(),
        manifest.dtype
    );
    Ok(())
}
