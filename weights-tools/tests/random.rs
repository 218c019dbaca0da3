//! `weights-tools random` on the tiny fixtures' configs: the folder it writes loads as a pipeline
//! through the library's folder loader (every tensor present, none extra, shapes right), `inspect`
//! reads it, `convert` + `verify` accept it; the same seed writes the same bytes, f16 holds the f32
//! values rounded; a folder that is not empty is refused. The real-size folder is not written here
//! (5 GB): `a_random_real_folder_loads` loads one written by hand (ignored by default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use burn::tensor::Device;
use i2vgen::loading::folder::{self, Files};
use i2vgen::pipelines::pipeline_i2vgen_xl::I2VGenXLPipeline;
use i2vgen::pipelines::pipeline_video_to_video::VideoToVideoSDPipeline;
use safetensors::{Dtype, SafeTensors};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

fn weights_tools(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weights-tools")).args(args).output().expect("running weights-tools")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A fresh path in the temp folder: `name` tells the calling tests apart (they run in parallel).
fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("i2vgen-random-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

/// `weights-tools random --config <fixture> --dtype <dtype> --to <new folder>`.
fn random(fixture: &str, dtype: &str, seed: &str, name: &str) -> PathBuf {
    let to = temp(name);
    let config = format!("{FIXTURES}/{fixture}");
    let run =
        weights_tools(&["random", "--config", &config, "--to", to.to_str().unwrap(), "--dtype", dtype, "--seed", seed]);
    assert!(run.status.success(), "random: {}", text(&run));
    to
}

/// A folder on disk, as the `i2vgen` CLI reads one.
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
        Ok(Some(entries.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect()))
    }
}

fn cpu() -> Device {
    #[allow(deprecated)] // NdArray: the CPU reference backend.
    Device::ndarray()
}

/// Load the folder as the pipeline its `model_index.json` names; returns the loader's notes.
fn load(dir: &Path) -> Vec<String> {
    let index = std::fs::read_to_string(dir.join("model_index.json")).unwrap();
    let mut source = folder::open(Disk(dir.to_path_buf())).unwrap();
    let mut notes = Vec::new();
    if index.contains("\"I2VGenXLPipeline\"") {
        I2VGenXLPipeline::load(source.as_mut(), &cpu(), &mut notes).unwrap();
    } else {
        VideoToVideoSDPipeline::load(source.as_mut(), &cpu(), &mut notes).unwrap();
    }
    notes
}

/// Every tensor of a safetensors file: dtype, shape, bytes.
fn tensors(path: &Path) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.dtype(), view.shape().to_vec(), view.data().to_vec())))
        .collect()
}

const WEIGHT_FILES: [&str; 4] = [
    "text_encoder/model.safetensors",
    "image_encoder/model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
];

/// The fixture's text files are copied byte for byte; each weight file has the fixture's keys
/// and shapes (less CLIP's `position_ids` buffer), in `dtype`, with values inside ±1.
fn check_against_fixture(dir: &Path, dtype: Dtype) {
    let fixture = Path::new(FIXTURES).join("tiny-i2vgen");
    for path in [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "feature_extractor/preprocessor_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "unet/config.json",
        "text_encoder/config.json",
    ] {
        assert_eq!(std::fs::read(dir.join(path)).unwrap(), std::fs::read(fixture.join(path)).unwrap(), "{path}");
    }
    for file in WEIGHT_FILES {
        let written = tensors(&dir.join(file));
        let expected: BTreeMap<String, Vec<usize>> = tensors(&fixture.join(file))
            .into_iter()
            .filter(|(key, _)| !key.ends_with("position_ids"))
            .map(|(key, (_, shape, _))| (key, shape))
            .collect();
        let shapes: BTreeMap<String, Vec<usize>> =
            written.iter().map(|(key, (_, shape, _))| (key.clone(), shape.clone())).collect();
        assert_eq!(shapes, expected, "{file}");
        for (key, (found, shape, bytes)) in &written {
            assert_eq!(*found, dtype, "{file}: {key}");
            let values = i2vgen::loading::weights::to_f32(dtype, bytes, key).unwrap();
            let fan_in: usize = shape[1..].iter().product();
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            assert!(values.iter().all(|v| v.abs() <= bound * 1.001), "{file}: {key} outside ±{bound}");
            assert!(values.len() < 8 || values.iter().any(|&v| v != values[0]), "{file}: {key} is constant");
        }
    }
}

#[test]
fn an_f32_folder_loads_and_passes_inspect_convert_and_verify() {
    let dir = random("tiny-i2vgen", "f32", "0", "f32");
    check_against_fixture(&dir, Dtype::F32);
    assert_eq!(load(&dir), Vec::<String>::new());

    let inspect = weights_tools(&["inspect", dir.to_str().unwrap()]);
    assert!(inspect.status.success(), "inspect: {}", text(&inspect));
    for component in ["text_encoder", "image_encoder", "vae", "unet"] {
        assert!(text(&inspect).contains(component), "inspect names {component}: {}", text(&inspect));
    }
    let converted = temp("f32-converted");
    let convert = weights_tools(&["convert", "--from", dir.to_str().unwrap(), "--to", converted.to_str().unwrap()]);
    assert!(convert.status.success(), "convert: {}", text(&convert));
    let verify = weights_tools(&["verify", converted.to_str().unwrap()]);
    assert!(verify.status.success(), "verify: {}", text(&verify));
    assert_eq!(load(&converted), Vec::<String>::new());
    std::fs::remove_dir_all(&converted).ok();
    std::fs::remove_dir_all(&dir).ok();
}

/// f16 holds the f32 run's values rounded (the same seed draws the same numbers), a second run
/// with that seed writes the same bytes, another seed other values.
#[test]
fn an_f16_folder_loads_and_is_the_f32_one_rounded() {
    let f16 = random("tiny-i2vgen", "f16", "7", "f16");
    check_against_fixture(&f16, Dtype::F16);
    assert_eq!(load(&f16), Vec::<String>::new());
    let inspect = weights_tools(&["inspect", f16.to_str().unwrap()]);
    assert!(inspect.status.success(), "inspect: {}", text(&inspect));

    let f32 = random("tiny-i2vgen", "f32", "7", "f16-as-f32");
    let again = random("tiny-i2vgen", "f16", "7", "f16-again");
    let other = random("tiny-i2vgen", "f16", "8", "f16-other-seed");
    for file in WEIGHT_FILES {
        let read = |dir: &Path| std::fs::read(dir.join(file)).unwrap();
        assert_eq!(read(&again), read(&f16), "{file}: same seed, same bytes");
        assert_ne!(read(&other), read(&f16), "{file}: another seed");
        let (halves, singles) = (tensors(&f16.join(file)), tensors(&f32.join(file)));
        for (key, (_, _, bytes)) in &halves {
            let rounded: Vec<u8> = singles[key]
                .2
                .chunks_exact(4)
                .flat_map(|b| half::f16::from_f32(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes())
                .collect();
            assert!(rounded == *bytes, "{file}: {key} is not the f32 values rounded");
        }
    }
    for dir in [f16, f32, again, other] {
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn a_refiner_folder_loads() {
    let dir = random("tiny-vid2vid", "f16", "0", "refiner");
    assert!(!dir.join("image_encoder").exists());
    assert_eq!(load(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_folder_that_is_not_empty_is_refused() {
    let to = temp("not-empty");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::write(to.join("keep.txt"), "mine").unwrap();
    let config = format!("{FIXTURES}/tiny-i2vgen");
    let run = weights_tools(&["random", "--config", &config, "--to", to.to_str().unwrap()]);
    assert!(!run.status.success());
    assert!(text(&run).contains("not an empty folder"), "{}", text(&run));
    assert_eq!(std::fs::read_dir(&to).unwrap().count(), 1, "nothing written");

    let nowhere = to.join("nowhere");
    let unused = to.join("unused");
    let run = weights_tools(&["random", "--config", nowhere.to_str().unwrap(), "--to", unused.to_str().unwrap()]);
    assert!(!run.status.success());
    assert!(text(&run).contains("model_index.json"), "{}", text(&run));
    std::fs::remove_dir_all(&to).ok();
}

/// The real-size folder written by hand
/// (`weights-tools random --config real --to DIR`), loaded on the CPU: about 10 GB of memory
/// as f32. Run with `I2VGEN_RANDOM_MODEL=DIR cargo test -p weights-tools --test random --
/// --ignored --nocapture`.
#[test]
#[ignore = "needs a real-size folder written by `weights-tools random --config real` and ~13 GB of memory"]
fn a_random_real_folder_loads() {
    let dir = PathBuf::from(std::env::var("I2VGEN_RANDOM_MODEL").expect("I2VGEN_RANDOM_MODEL=<folder>"));
    let start = Instant::now();
    let notes = load(&dir);
    println!("loaded {} in {:.1} s; notes: {notes:?}", dir.display(), start.elapsed().as_secs_f64());
    assert_eq!(notes, Vec::<String>::new());
}
