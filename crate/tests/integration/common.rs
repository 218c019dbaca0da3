//! Devices for tests: every golden test runs on the CPU reference backend and on native wgpu
//! (Mesa llvmpipe on the CI machine). A missing wgpu adapter fails the test; it never skips.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use burn::tensor::{Device, Int, Tensor, TensorData};
use i2vgen::loading::config::ConfigFile;
use i2vgen::loading::folder::{self, Files, TensorSource};
use i2vgen::models::clip::{CLIPTextModel, CLIPVisionModelWithProjection};
use i2vgen::models::unet_3d_condition::UNet3DConditionModel;
use i2vgen::models::unet_i2vgen_xl::{I2VGenXLUNet, I2VGenXLUNetInput};
use i2vgen::models::vae::AutoencoderKL;
use safetensors::{Dtype, SafeTensors};

pub fn cpu() -> Device {
    #[allow(deprecated)] // NdArray is the CPU reference backend.
    Device::ndarray()
}

pub fn wgpu() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            Device::wgpu_options()
                .init()
                .unwrap_or_else(|err| panic!("no wgpu adapter ({err}); install mesa-vulkan-drivers for llvmpipe"))
        })
        .clone()
}

/// Both backends, named for assertion messages.
pub fn devices() -> [(&'static str, Device); 2] {
    [("cpu", cpu()), ("wgpu", wgpu())]
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

/// The float tensors of a safetensors file, as (shape, f32 values) by name.
pub fn read_f32(path: &std::path::Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .filter(|(_, v)| {
            matches!(v.dtype(), safetensors::Dtype::F32 | safetensors::Dtype::F16 | safetensors::Dtype::BF16)
        })
        .map(|(name, v)| {
            let values = i2vgen::loading::weights::to_f32(v.dtype(), v.data(), &name).unwrap();
            (name, (v.shape().to_vec(), values))
        })
        .collect()
}

/// Golden comparison: max |a - b| ≤ tol and max |a - b| / max |reference| ≤ tol.
pub fn assert_close(what: &str, got: &[f32], reference: &[f32], tol: f32) -> f32 {
    let diff = max_abs_diff(got, reference);
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    println!("{what}: max abs {diff:.3e}, relative {:.3e}", diff / scale);
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    assert!(diff <= tol && diff / scale <= tol, "{what}: max abs {diff}, relative {}", diff / scale);
    diff
}

/// A fixture model folder, read through the library's [`Files`] (what the CLI does on disk).
pub struct Disk(pub std::path::PathBuf);

impl Files for Disk {
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.0.join(path)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            other => other.map(Some),
        }
    }

    fn list(&self, dir: &str) -> std::io::Result<Option<Vec<String>>> {
        match std::fs::read_dir(self.0.join(dir)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            other => {
                Ok(Some(other?.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect()))
            }
        }
    }
}

/// A fixture folder (`tiny-i2vgen`, `tiny-vid2vid`) as the library opens it.
pub fn open_fixture(model: &str) -> Box<dyn TensorSource> {
    folder::open(Disk(std::path::Path::new(FIXTURES).join(model))).unwrap()
}

/// Build one network of a fixture through the production loader.
fn network<C: ConfigFile, N>(
    model: &str,
    component: &str,
    device: &Device,
    load: impl FnOnce(&mut i2vgen::loading::weights::Weights, &C) -> i2vgen::Result<N>,
) -> N {
    let mut notes = Vec::new();
    let net = folder::network(open_fixture(model).as_mut(), component, device, &mut notes, load)
        .unwrap_or_else(|e| panic!("{model}/{component}: {e}"));
    assert!(notes.is_empty(), "{notes:?}");
    net
}

fn input<const D: usize>(inputs: &SafeTensors, name: &str, device: &Device) -> Tensor<D> {
    let view = inputs.tensor(name).unwrap_or_else(|e| panic!("input `{name}`: {e}"));
    let values = i2vgen::loading::weights::to_f32(view.dtype(), view.data(), name).unwrap();
    let shape: [usize; D] = view.shape().try_into().unwrap();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// An integer or float input as f64 values (token ids, timesteps, fps).
fn numbers(inputs: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f64>) {
    let view = inputs.tensor(name).unwrap_or_else(|e| panic!("input `{name}`: {e}"));
    let bytes = view.data();
    let values = match view.dtype() {
        Dtype::I64 => bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        Dtype::I32 => bytes.chunks_exact(4).map(|b| f64::from(i32::from_le_bytes(b.try_into().unwrap()))).collect(),
        Dtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
        other => i2vgen::loading::weights::to_f32(other, bytes, name).unwrap().into_iter().map(f64::from).collect(),
    };
    (view.shape().to_vec(), values)
}

/// A scalar input given once or once per batch element, as `b` values.
fn per_batch(inputs: &SafeTensors, name: &str, b: usize) -> Vec<f32> {
    let values: Vec<f32> = numbers(inputs, name).1.into_iter().map(|v| v as f32).collect();
    if values.len() == 1 { vec![values[0]; b] } else { values }
}

fn output<const D: usize>(tensor: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let data = tensor.into_data().convert::<f32>();
    (data.shape().to_vec(), data.try_to_vec::<f32>().unwrap())
}

/// The library on a component's golden inputs: its outputs by name.
fn run_component(
    model: &str,
    component: &str,
    inputs: &SafeTensors,
    device: &Device,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = BTreeMap::new();
    match component {
        "text_encoder" => {
            let (shape, ids) = numbers(inputs, "input_ids");
            let ids = Tensor::<2, Int>::from_data(
                TensorData::new(ids.into_iter().map(|v| v as i64).collect::<Vec<_>>(), [shape[0], shape[1]]),
                device,
            );
            let result = network(model, component, device, CLIPTextModel::load).forward(ids);
            out.insert("last_hidden_state".into(), output(result.last_hidden_state));
            out.insert("penultimate_normed".into(), output(result.penultimate_normed));
        }
        "image_encoder" => {
            let net = network(model, component, device, CLIPVisionModelWithProjection::load);
            out.insert("image_embeds".into(), output(net.forward(input::<4>(inputs, "pixel_values", device))));
        }
        "vae_encode" => {
            let dist = network(model, "vae", device, AutoencoderKL::load).encode(input::<4>(inputs, "sample", device));
            out.insert("latent_mean".into(), output(dist.mean));
            out.insert("latent_logvar".into(), output(dist.logvar));
        }
        "vae_decode" => {
            let vae = network(model, "vae", device, AutoencoderKL::load);
            out.insert("sample".into(), output(vae.decode(input::<4>(inputs, "latents", device))));
        }
        "unet" => {
            let sample = input::<5>(inputs, "sample", device);
            let b = sample.dims()[0];
            let text = input::<3>(inputs, "encoder_hidden_states", device);
            let timesteps = per_batch(inputs, "timestep", b);
            let class = folder::class_name(open_fixture(model).as_mut(), "unet").unwrap();
            let result = if class == "UNet3DConditionModel" {
                network(model, component, device, UNet3DConditionModel::load).forward(sample, &timesteps, text)
            } else {
                network(model, component, device, I2VGenXLUNet::load).forward(I2VGenXLUNetInput {
                    sample,
                    timesteps,
                    encoder_hidden_states: text,
                    fps: per_batch(inputs, "fps", b),
                    image_latents: input::<5>(inputs, "image_latents", device),
                    image_embeddings: input::<2>(inputs, "image_embeddings", device),
                })
            };
            out.insert("sample".into(), output(result));
        }
        other => panic!("no component {other}"),
    }
    out
}

/// Golden test of one component through the library: build it from a fixture model folder
/// (`tiny-i2vgen`, `tiny-vid2vid`) with the production loader, run it on a golden file's inputs
/// (a name in `tests/fixtures/golden/`) on both backends, and compare each (output, reference)
/// pair at 1e-4.
pub fn check_component(model: &str, component: &str, golden_file: &str, pairs: &[(&str, &str)]) {
    let golden = std::path::Path::new(FIXTURES).join("golden").join(golden_file);
    let reference = read_f32(&golden);
    let bytes = std::fs::read(&golden).unwrap();
    let inputs = SafeTensors::deserialize(&bytes).unwrap();
    for (backend, device) in devices() {
        let got = run_component(model, component, &inputs, &device);
        compare(component, backend, &got, &reference, pairs);
    }
}

fn compare(
    component: &str,
    backend: &str,
    got: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    reference: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pairs: &[(&str, &str)],
) {
    for (name, reference_name) in pairs {
        let (shape, values) = &got[*name];
        let (ref_shape, ref_values) = &reference[*reference_name];
        assert_eq!(shape, ref_shape, "{component}.{name} shape");
        assert_close(&format!("{component}.{name} [{backend}]"), values, ref_values, 1e-4);
    }
}

/// The same check through the CLI, `i2vgen forward --component <component>` (which also reads
/// its inputs from a safetensors file: int32 ids, `[B, 1, D]` image embeddings), for a golden
/// file's inputs given by path.
pub fn check_forward_cli(
    model: &str,
    component: &str,
    inputs: &std::path::Path,
    golden_file: &str,
    pairs: &[(&str, &str)],
) {
    use std::path::Path;
    let model = Path::new(FIXTURES).join(model);
    let reference = read_f32(&Path::new(FIXTURES).join("golden").join(golden_file));
    for backend in ["cpu", "wgpu"] {
        let out = std::env::temp_dir().join(format!("i2vgen-{component}-{backend}-{}.safetensors", std::process::id()));
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_i2vgen"))
            .args(["forward", "--model"])
            .arg(&model)
            .args(["--component", component, "--backend", backend, "--inputs"])
            .arg(inputs)
            .arg("--output")
            .arg(&out)
            .status()
            .expect("running i2vgen");
        assert!(status.success(), "i2vgen forward --component {component} --backend {backend} failed");
        let got = read_f32(&out);
        std::fs::remove_file(&out).ok();
        compare(component, backend, &got, &reference, pairs);
    }
}

/// A command failed the way users should see: exit code 1 and one clear sentence, never a panic.
pub fn assert_clear_error(what: &str, out: &std::process::Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert!(stderr.contains(expect), "{what}: expected {expect:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && stderr.matches("error: ").count() == 1,
        "{what}: not one error line: {stderr}"
    );
}
