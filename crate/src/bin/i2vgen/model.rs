//! Model folders on disk: the library decides which files make a pipeline
//! (`i2vgen::loading::folder`); this module only reads them.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use i2vgen::loading::folder::{self, Files, Folder, PipelineKind, TensorSource};
use i2vgen::models::unet_3d_condition::UNet3DConditionModelConfig;
use i2vgen::models::vae::AutoencoderKLConfig;
use i2vgen::pipelines::consistency;
use i2vgen::pipelines::pipeline_i2vgen_xl::I2VGenXLPipeline;
use i2vgen::pipelines::pipeline_video_to_video::VideoToVideoSDPipeline;
use i2vgen::schedulers::SchedulerConfig;

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
    Ok(Box::new(open_folder(model)?))
}

fn open_folder(model: &Path) -> Result<Folder<Disk>> {
    if !model.is_dir() {
        bail!("{} is not a folder; --model must be a diffusers pipeline folder", model.display());
    }
    Folder::new(Disk(model.to_path_buf()), false).with_context(|| format!("in {}", model.display()))
}

/// Show what the loader noted (config keys this version ignores).
pub fn print_notes(model: &Path, notes: &[String]) {
    for note in notes {
        eprintln!("note: {}: {note}", model.display());
    }
}

/// Load a pipeline, with the folder in any error and its notes on stderr; `packed_f16`: its
/// `Linear` and conv weights as f16 pairs packed in u32 words (`--dtype packed-f16`), each packed
/// as it is read ([`Folder::set_packed_f16`]).
fn load<P>(
    model: &Path,
    device: &Device,
    packed_f16: bool,
    load: fn(&mut dyn TensorSource, &Device, &mut Vec<String>) -> i2vgen::Result<P>,
) -> Result<Rc<P>> {
    let mut notes = Vec::new();
    let mut source = open_folder(model)?;
    source.set_packed_f16(packed_f16);
    let pipeline = load(&mut source, device, &mut notes)
        .with_context(|| format!("loading {} (--model must be a diffusers pipeline folder)", model.display()))?;
    print_notes(model, &notes);
    Ok(Rc::new(pipeline))
}

/// The VAE's down-sampling factor of a base model folder, from its config alone (no weights are
/// read): what the request is checked against before the model loads.
pub fn vae_scale_factor(model: &Path) -> Result<usize> {
    let vae: AutoencoderKLConfig = folder::config(open(model)?.as_mut(), &mut Vec::new())
        .with_context(|| format!("{} (--model must be a diffusers I2VGenXLPipeline folder)", model.display()))?;
    Ok(vae.downscale())
}

/// Check a refiner folder from its configs and tokenizer alone (no weights are read), so a wrong
/// `--refine-model` is refused before the base run; returns its VAE's down-sampling factor.
pub fn check_refiner(model: &Path) -> Result<usize> {
    let mut source = open(model)?;
    let (source, notes) = (source.as_mut(), &mut Vec::new());
    let mut check = || -> i2vgen::Result<usize> {
        folder::config::<UNet3DConditionModelConfig>(source, notes)?;
        folder::config::<SchedulerConfig>(source, notes)?;
        consistency::check_folder(source, PipelineKind::VideoToVideoSD)?;
        Ok(folder::config::<AutoencoderKLConfig>(source, notes)?.downscale())
    };
    check().with_context(|| {
        format!("{}: refine needs a VideoToVideoSDPipeline folder (e.g. zeroscope_v2_XL)", model.display())
    })
}

pub fn base(model: &Path, device: &Device, packed_f16: bool) -> Result<Rc<I2VGenXLPipeline>> {
    load(model, device, packed_f16, I2VGenXLPipeline::load)
}

pub fn refiner(model: &Path, device: &Device, packed_f16: bool) -> Result<Rc<VideoToVideoSDPipeline>> {
    load(model, device, packed_f16, VideoToVideoSDPipeline::load)
}
