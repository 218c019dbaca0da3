//! Devices for tests: every golden test runs on the CPU reference backend and on native wgpu
//! (Mesa llvmpipe on the CI machine). A missing wgpu adapter fails the test; it never skips.

use std::sync::OnceLock;

use burn::tensor::Device;

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

/// Run `i2vgen forward --component <component>` on a fixture model folder (`tiny-i2vgen`,
/// `tiny-vid2vid`) with a golden file's inputs (a name in `tests/fixtures/golden/`, or an absolute
/// path), on both backends, and compare each (output, reference) pair at 1e-4.
pub fn check_component(model: &str, component: &str, golden_file: &str, pairs: &[(&str, &str)]) {
    use std::path::Path;
    let model = Path::new(FIXTURES).join(model);
    let golden = Path::new(FIXTURES).join("golden").join(golden_file);
    let reference = read_f32(&golden);
    for backend in ["cpu", "wgpu"] {
        let out = std::env::temp_dir().join(format!("i2vgen-{component}-{backend}-{}.safetensors", std::process::id()));
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_i2vgen"))
            .args(["forward", "--model"])
            .arg(&model)
            .args(["--component", component, "--backend", backend, "--inputs"])
            .arg(&golden)
            .arg("--output")
            .arg(&out)
            .status()
            .expect("running i2vgen");
        assert!(status.success(), "i2vgen forward --component {component} --backend {backend} failed");
        let got = read_f32(&out);
        std::fs::remove_file(&out).ok();
        for (name, reference_name) in pairs {
            let (shape, values) = &got[*name];
            let (ref_shape, ref_values) = &reference[*reference_name];
            assert_eq!(shape, ref_shape, "{component}.{name} shape");
            assert_close(&format!("{component}.{name} [{backend}]"), values, ref_values, 1e-4);
        }
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
