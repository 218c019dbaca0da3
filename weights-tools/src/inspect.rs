//! `weights-tools inspect`: a summary of every `*.safetensors` file under a folder, grouped by
//! component (the first folder below the root, as in the diffusers layout).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use safetensors::tensor::Metadata;

/// Read only the JSON header of a safetensors file: 8 bytes of length, then the header.
pub fn read_header(path: &Path) -> Result<Metadata> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).with_context(|| format!("{} is too short to be a safetensors file", path.display()))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        bail!("{} has a {len}-byte header: not a safetensors file", path.display());
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).with_context(|| format!("{} ends inside its header", path.display()))?;
    serde_json::from_slice(&header).with_context(|| format!("{} has an invalid safetensors header", path.display()))
}

fn safetensors_files(root: &Path) -> Result<Vec<PathBuf>> {
    if root.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "safetensors") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[derive(Default)]
struct Summary {
    tensors: usize,
    params: u64,
    bytes_by_dtype: BTreeMap<String, u64>,
    largest: (u64, String, Vec<usize>),
}

pub fn run(root: &Path) -> Result<()> {
    let files = safetensors_files(root)?;
    if files.is_empty() {
        bail!("no .safetensors files under {}; point at a diffusers model folder", root.display());
    }
    let mut components: BTreeMap<String, Summary> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(root).unwrap_or(file);
        let component = match relative.components().count() {
            0 | 1 => ".".to_string(),
            _ => relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned(),
        };
        let summary = components.entry(component).or_default();
        let header = read_header(file)?;
        for (name, info) in header.tensors() {
            let params: u64 = info.shape.iter().map(|&d| d as u64).product();
            let bytes = (info.data_offsets.1 - info.data_offsets.0) as u64;
            summary.tensors += 1;
            summary.params += params;
            *summary.bytes_by_dtype.entry(format!("{:?}", info.dtype)).or_default() += bytes;
            if bytes > summary.largest.0 {
                summary.largest = (bytes, name.clone(), info.shape.clone());
            }
        }
    }
    let mut total = (0u64, 0u64);
    for (component, s) in &components {
        let bytes: u64 = s.bytes_by_dtype.values().sum();
        total = (total.0 + s.params, total.1 + bytes);
        let dtypes: Vec<String> = s.bytes_by_dtype.iter().map(|(d, b)| format!("{d} {}", human(*b))).collect();
        println!(
            "{component:<16} {:>6} tensors {:>14} params {:>10}  ({})",
            s.tensors,
            group_digits(s.params),
            human(bytes),
            dtypes.join(", ")
        );
        println!("{:<16} largest: {} {:?} {}", "", s.largest.1, s.largest.2, human(s.largest.0));
    }
    println!("{:<16} {:>6}         {:>14} params {:>10}", "total", "", group_digits(total.0), human(total.1));
    Ok(())
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
