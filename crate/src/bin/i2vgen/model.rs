//! Model folders on disk: the library decides which files make a pipeline
//! (`i2vgen::loading::folder`); this module only reads them.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use i2vgen::loading::folder::{self, Files, TensorSource};
use i2vgen::pipelines::pipeline_i2vgen_xl::I2VGenXLPipeline;
use i2vgen::pipelines::pipeline_video_to_video::VideoToVideoSDPipeline;

/// A folder on disk, read by relative path.
struct Disk(PathBuf);

impl Files for Disk {
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.0.join(path)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            other => other.map(Some),
        }
    }

    fn list(&self, dir: &str) -> std::io::Result<Option<Vec<String>>> {
        let entries = match std::fs::read_dir(self.0.join(dir)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other?,
        };
        let names = entries.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect();
        Ok(Some(names))
    }
}

/// A model folder (diffusers layout or converted by `weights-tools convert`).
pub fn open(model: &Path) -> Result<Box<dyn TensorSource>> {
    if !model.is_dir() {
        bail!("{} is not a folder; --model must be a diffusers pipeline folder", model.display());
    }
    folder::open(Disk(model.to_path_buf())).with_context(|| format!("in {}", model.display()))
}

/// Show what the loader noted (config keys this version ignores).
pub fn print_notes(model: &Path, notes: &[String]) {
    for note in notes {
        eprintln!("note: {}: {note}", model.display());
    }
}

/// Load a pipeline, with the folder in any error and its notes on stderr.
fn load<P>(
    model: &Path,
    device: &Device,
    load: fn(&mut dyn TensorSource, &Device, &mut Vec<String>) -> i2vgen::Result<P>,
) -> Result<Rc<P>> {
    let mut notes = Vec::new();
    let pipeline = load(open(model)?.as_mut(), device, &mut notes)
        .with_context(|| format!("loading {} (--model must be a diffusers pipeline folder)", model.display()))?;
    print_notes(model, &notes);
    Ok(Rc::new(pipeline))
}

pub fn base(model: &Path, device: &Device) -> Result<Rc<I2VGenXLPipeline>> {
    load(model, device, I2VGenXLPipeline::load)
}

pub fn refiner(model: &Path, device: &Device) -> Result<Rc<VideoToVideoSDPipeline>> {
    load(model, device, VideoToVideoSDPipeline::load)
}
