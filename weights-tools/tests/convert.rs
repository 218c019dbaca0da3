//! `weights-tools convert` → `verify` → loading through the manifest, on the fixture model: the
//! I2VGenXLUNet built from converted shards gives the diffusers golden output — identical to the
//! folder's for f32, within 1e-2 relative for f16; q8's error is printed (and bounded loosely).
//! A damaged shard fails `verify` with its name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::loading::config::parse;
use i2vgen::loading::manifest::Manifest;
use i2vgen::models::unet_i2vgen_xl::{I2VGenXLUNet, I2VGenXLUNetConfig, I2VGenXLUNetInput};
use safetensors::SafeTensors;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

fn weights_tools(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weights-tools")).args(args).output().expect("running weights-tools")
}

/// Convert the fixture model into a folder of its own: `test` names the calling test, as tests
/// run in parallel in one process.
fn convert(dtype: &str, test: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("i2vgen-convert-{test}-{dtype}-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let model = format!("{FIXTURES}/tiny-i2vgen");
    let run = weights_tools(&[
        "convert",
        "--from",
        &model,
        "--to",
        out.to_str().unwrap(),
        "--dtype",
        dtype,
        "--shard-mb",
        "1",
    ]);
    assert!(run.status.success(), "convert: {}", String::from_utf8_lossy(&run.stderr));
    let verify = weights_tools(&["verify", out.to_str().unwrap()]);
    assert!(verify.status.success(), "verify: {}", String::from_utf8_lossy(&verify.stderr));
    out
}

/// The golden UNet inputs and diffusers' output.
struct Golden(BTreeMap<String, (Vec<usize>, Vec<f32>)>);

impl Golden {
    fn load() -> Self {
        let bytes = std::fs::read(format!("{FIXTURES}/golden/unet.safetensors")).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        Self(
            file.tensors()
                .into_iter()
                .map(|(name, v)| {
                    let values = match v.dtype() {
                        safetensors::Dtype::I64 => {
                            v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect()
                        }
                        dtype => i2vgen::loading::weights::to_f32(dtype, v.data(), &name).unwrap(),
                    };
                    (name, (v.shape().to_vec(), values))
                })
                .collect(),
        )
    }

    fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let (shape, values) = &self.0[name];
        Tensor::from_data(TensorData::new(values.clone(), shape.clone()), device)
    }

    fn run(&self, unet: &I2VGenXLUNet, device: &Device) -> Vec<f32> {
        let out = unet.forward(I2VGenXLUNetInput {
            sample: self.tensor("sample", device),
            timesteps: self.0["timestep"].1.clone(),
            encoder_hidden_states: self.tensor("encoder_hidden_states", device),
            fps: self.0["fps"].1.clone(),
            image_latents: self.tensor("image_latents", device),
            image_embeddings: self.tensor("image_embeddings", device),
        });
        out.into_data().try_to_vec::<f32>().unwrap()
    }
}

fn config() -> I2VGenXLUNetConfig {
    parse::<I2VGenXLUNetConfig>(&std::fs::read_to_string(format!("{FIXTURES}/tiny-i2vgen/unet/config.json")).unwrap())
        .unwrap()
        .config
}

/// The UNet of a converted folder, loaded strictly through its manifest.
fn converted_unet(dir: &Path, device: &Device) -> I2VGenXLUNet {
    let manifest = Manifest::parse(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let shards = manifest
        .shards_of("unet")
        .unwrap()
        .into_iter()
        .map(|i| (i, std::fs::read(dir.join(&manifest.shards[i].path)).unwrap()))
        .collect();
    let mut w = manifest.weights("unet", &shards, device).unwrap();
    let unet = I2VGenXLUNet::load(&mut w, &config()).unwrap();
    w.finish().unwrap();
    unet
}

fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

#[test]
fn converted_models_load_and_match() {
    #[allow(deprecated)] // NdArray is the CPU reference backend.
    let device = Device::ndarray();
    let golden = Golden::load();
    let reference = &golden.0["out_sample"].1;

    let bytes = std::fs::read(format!("{FIXTURES}/tiny-i2vgen/unet/diffusion_pytorch_model.safetensors")).unwrap();
    let mut w = i2vgen::loading::weights::Weights::from_safetensors(&[&bytes], &device).unwrap();
    let folder = golden.run(&I2VGenXLUNet::load(&mut w, &config()).unwrap(), &device);

    for (dtype, tolerance) in [("f32", 0.0), ("f16", 1e-2), ("q8", 0.1)] {
        let dir = convert(dtype, "load");
        let got = golden.run(&converted_unet(&dir, &device), &device);
        let (vs_folder, vs_diffusers) = (relative_error(&got, &folder), relative_error(&got, reference));
        println!(
            "{dtype}: max error relative to the largest output: {vs_folder:.3e} vs the folder, {vs_diffusers:.3e} vs diffusers"
        );
        assert!(vs_folder <= tolerance, "{dtype}: {vs_folder}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn verify_names_a_damaged_shard_and_convert_refuses_a_used_folder() {
    let dir = convert("f16", "damaged");
    let shard = dir.join("shard-00001.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&shard, bytes).unwrap();
    let out = weights_tools(&["verify", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("shard-00001.safetensors: sha256 differs"), "{stderr}");

    let again =
        weights_tools(&["convert", "--from", &format!("{FIXTURES}/tiny-i2vgen"), "--to", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a converted model"));
    std::fs::remove_dir_all(&dir).ok();
}
