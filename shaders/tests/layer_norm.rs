//! The fused LayerNorm kernel against its burn-op twin on native wgpu (Mesa llvmpipe on the CI
//! machine), on random inputs at the UNet's and CLIP's shapes and odd ones, and its launches.
//!
//! Tolerance: max |kernel − reference| / max |reference| ≤ 1e-5 over the whole output, in f32,
//! the reference being the twin on the same device, or LayerNorm in f64 on the host where the
//! inputs' mean is so large next to their spread that the twin's f32 sums lose digits
//! (`large_offset_mean`). Kernel and twin are both two-pass but sum in different orders (a tree
//! here, serially in burn's reduction), so they round differently.
//!
//! f16 (f16 storage, f32 statistics): the inputs are random f32 rounded to f16, the reference is
//! the twin in f32 on those same values, the kernel's f16 output widened to f32; tolerance 2e-3
//! (the output's own rounding to f16 is up to 2⁻¹¹ ≈ 4.9e-4 of each value).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor, TensorData, f16};
use i2vgen_shaders::layer_norm::{layer_norm, layer_norm_twin};

const TOLERANCE: f32 = 1e-5;
const F16_TOLERANCE: f32 = 2e-3;
const EPS: f64 = 1e-5;

fn wgpu() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            Device::wgpu_options()
                .init()
                .unwrap_or_else(|err| panic!("no wgpu adapter ({err}); install mesa-vulkan-drivers for llvmpipe"))
        })
        .clone()
}

#[allow(deprecated)] // NdArray is the CPU reference backend.
fn cpu() -> Device {
    Device::ndarray()
}

/// Uniform on `[low, high)`, drawn on the CPU so every device sees the same numbers.
fn random(shape: &[usize], low: f64, high: f64) -> TensorData {
    Tensor::<1>::random([shape.iter().product::<usize>()], Distribution::Uniform(low, high), &cpu()).into_data()
}

fn tensor<const D: usize>(data: &TensorData, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::<1>::from_data(data.clone(), device).reshape(shape)
}

/// `data` rounded to f16 (to nearest, ties to even) and widened back: values f32 and f16 both
/// hold exactly, so the f16 kernel and the f32 twin see the same numbers.
fn f16_values(data: &TensorData) -> TensorData {
    data.clone().convert::<f16>().convert::<f32>()
}

/// `data` (f16-representable) as an f16 tensor on `device`.
fn tensor_f16<const D: usize>(data: &TensorData, shape: [usize; D], device: &Device) -> Tensor<D> {
    tensor(data, shape, device).cast(FloatDType::F16)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// max |a − b| / max |b|.
fn relative_error(got: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(got.len(), reference.len());
    assert!(got.iter().all(|v| v.is_finite()), "non-finite output");
    let diff = got.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    diff / reference.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Kernel vs twin on wgpu at one shape; returns the error.
fn check<const D: usize>(shape: [usize; D]) -> f32 {
    let channels = shape[D - 1];
    // An offset mean (1.5) next to a unit spread: the variance must not cancel.
    let x = random(&shape, -0.5, 3.5);
    let weight = random(&[channels], 0.5, 1.5);
    let bias = random(&[channels], -1.0, 1.0);
    let device = wgpu();
    let params = || (tensor(&weight, [channels], &device), tensor(&bias, [channels], &device));
    let (w, b) = params();
    let got = values(layer_norm(tensor(&x, shape, &device), w, b, EPS));
    let (w, b) = params();
    let want = values(layer_norm_twin(tensor(&x, shape, &device), w, b, EPS));
    let err = relative_error(&got, &want);
    println!("{shape:?}: relative {err:.2e}");
    assert!(err <= TOLERANCE, "{shape:?}: relative error {err:e}");
    err
}

/// The kernel in f16 vs the twin in f32 on the same (f16-representable) values at one shape; the
/// output must be f16 and of `x`'s shape. Returns the error.
fn check_f16<const D: usize>(shape: [usize; D]) -> f32 {
    let channels = shape[D - 1];
    let x = f16_values(&random(&shape, -0.5, 3.5));
    let weight = f16_values(&random(&[channels], 0.5, 1.5));
    let bias = f16_values(&random(&[channels], -1.0, 1.0));
    let device = wgpu();
    let (w, b) = (tensor_f16(&weight, [channels], &device), tensor_f16(&bias, [channels], &device));
    let out = layer_norm(tensor_f16(&x, shape, &device), w, b, EPS);
    assert_eq!((out.dtype(), out.dims()), (DType::F16, shape), "the output's dtype and shape");
    let got = values(out);
    let (w, b) = (tensor(&weight, [channels], &device), tensor(&bias, [channels], &device));
    let want = values(layer_norm_twin(tensor(&x, shape, &device), w, b, EPS));
    let err = relative_error(&got, &want);
    println!("f16 {shape:?}: relative {err:.2e}");
    assert!(err <= F16_TOLERANCE, "f16 {shape:?}: relative error {err:e}");
    err
}

/// The transformer blocks' norms: `[B·F, H·W, C]` tokens (a 32×56 latent, 2 frames' worth, at
/// C = 320), `[B·h·w, F, C]` in the temporal transformers.
#[test]
fn unet_shapes() {
    check([2 * 1792, 320]);
    check([150, 16, 640]);
    check([2, 112, 1280]);
}

/// CLIP: the text encoder's 77 tokens at 1024, the vision tower's 257 at 1280.
#[test]
fn clip_shapes() {
    check([5, 77, 1024]);
    check([3, 257, 1280]);
}

/// Rows of 57 floats (scalar loads, threads not a divisor of the row), 8 floats (two vec4s),
/// a single token.
#[test]
fn odd_sizes() {
    check([7, 33, 57]);
    check([4, 1, 8]);
    check([3, 5]);
    check([2, 2, 1]);
}

/// 70,000 rows: more workgroups than one grid dimension holds (65,535), at one row per thread
/// and at 8 threads per row.
#[test]
fn more_rows_than_one_grid_dimension() {
    check([70_000, 8]);
    check([600_000, 4]);
    check([70_000, 100]);
}

/// Every f32 case's shape in f16 (the UNet's, CLIP's, the odd ones, past 65,535 workgroups).
#[test]
fn f16_shapes() {
    check_f16([2 * 1792, 320]);
    check_f16([150, 16, 640]);
    check_f16([2, 112, 1280]);
    check_f16([5, 77, 1024]);
    check_f16([3, 257, 1280]);
    check_f16([7, 33, 57]);
    check_f16([4, 1, 8]);
    check_f16([3, 5]);
    check_f16([2, 2, 1]);
    check_f16([70_000, 8]);
    check_f16([600_000, 4]);
    check_f16([70_000, 100]);
}

/// A strided f16 view is read in logical order too.
#[test]
fn f16_strided_input() {
    let device = wgpu();
    let x = f16_values(&random(&[2, 8, 30, 320], -0.5, 3.5));
    let (weight, bias) = (f16_values(&random(&[320], 0.5, 1.5)), f16_values(&random(&[320], -1.0, 1.0)));
    let permuted = tensor_f16(&x, [2, 8, 30, 320], &device).swap_dims(1, 2);
    let out = layer_norm(permuted, tensor_f16(&weight, [320], &device), tensor_f16(&bias, [320], &device), EPS);
    assert_eq!(out.dtype(), DType::F16);
    let got = values(out);
    let permuted = tensor(&x, [2, 8, 30, 320], &device).swap_dims(1, 2);
    let want = values(layer_norm_twin(permuted, tensor(&weight, [320], &device), tensor(&bias, [320], &device), EPS));
    let err = relative_error(&got, &want);
    println!("f16 strided: relative {err:.2e}");
    assert!(err <= F16_TOLERANCE, "relative error {err:e}");
}

/// A mean of 1000 next to a spread of 1: the twin's f32 sums lose the variance's low digits,
/// the kernel's tree sums keep them; both against LayerNorm in f64 on the host.
#[test]
fn large_offset_mean() {
    let shape = [64, 1280];
    let x = random(&shape, 999.0, 1001.0);
    let (weight, bias) = (random(&[1280], 0.5, 1.5), random(&[1280], -1.0, 1.0));
    let device = wgpu();
    let host = |d: &TensorData| d.try_to_vec::<f32>().unwrap();
    let exact = reference_f64(&host(&x), &host(&weight), &host(&bias), EPS);
    let params = || (tensor(&weight, [1280], &device), tensor(&bias, [1280], &device));
    let (w, b) = params();
    let got = values(layer_norm(tensor(&x, shape, &device), w, b, EPS));
    let (w, b) = params();
    let twin = values(layer_norm_twin(tensor(&x, shape, &device), w, b, EPS));
    let err = relative_error(&got, &exact);
    println!("{shape:?} mean 1000: kernel relative {err:.2e}, twin relative {:.2e}", relative_error(&twin, &exact));
    assert!(err <= TOLERANCE, "relative error {err:e}");
}

/// LayerNorm + affine over rows of `weight.len()`, two-pass in f64.
fn reference_f64(x: &[f32], weight: &[f32], bias: &[f32], eps: f64) -> Vec<f32> {
    x.chunks(weight.len())
        .flat_map(|row| {
            let len = row.len() as f64;
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / len;
            let variance = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / len;
            row.iter().zip(weight).zip(bias).map(move |((&v, &w), &b)| {
                ((f64::from(v) - mean) / (variance + eps).sqrt() * f64::from(w) + f64::from(b)) as f32
            })
        })
        .collect()
}

/// A strided view (the temporal transformer's `[B·h·w, F, C]` is a permute of `[B, F, h·w, C]`)
/// is read in logical order.
#[test]
fn strided_input() {
    let device = wgpu();
    let x = random(&[2, 8, 30, 320], -0.5, 3.5);
    let (weight, bias) = (random(&[320], 0.5, 1.5), random(&[320], -1.0, 1.0));
    let permuted = || tensor(&x, [2, 8, 30, 320], &device).swap_dims(1, 2);
    let params = || (tensor(&weight, [320], &device), tensor(&bias, [320], &device));
    let (w, b) = params();
    let got = values(layer_norm(permuted(), w, b, EPS));
    let (w, b) = params();
    let want = values(layer_norm_twin(permuted(), w, b, EPS));
    let err = relative_error(&got, &want);
    assert!(err <= TOLERANCE, "relative error {err:e}");
}

/// `layer_norm` on the CPU backend (its twin route) agrees with the kernel on wgpu: the
/// extension routes each device to a working implementation.
#[test]
fn cpu_route_matches_wgpu_kernel() {
    let shape = [3, 77, 1024];
    let x = random(&shape, -0.5, 3.5);
    let (weight, bias) = (random(&[1024], 0.5, 1.5), random(&[1024], -1.0, 1.0));
    let run = |device: &Device| {
        let (w, b) = (tensor(&weight, [1024], device), tensor(&bias, [1024], device));
        values(layer_norm(tensor(&x, shape, device), w, b, EPS))
    };
    let err = relative_error(&run(&wgpu()), &run(&cpu()));
    assert!(err <= TOLERANCE, "relative error {err:e}");
}

/// The kernels one thread launches on any cubecl device while it lives (cubecl's launch
/// observer, filtered to this thread because tests run in parallel).
struct Launches {
    thread: ThreadId,
    names: Mutex<Vec<&'static str>>,
}

impl LaunchObserver for Launches {
    fn launched(&self, kernel: &'static str) {
        if std::thread::current().id() == self.thread {
            self.names.lock().unwrap_or_else(PoisonError::into_inner).push(kernel);
        }
    }
}

fn launches<const D: usize>(f: impl FnOnce() -> Tensor<D>) -> Vec<&'static str> {
    let launches = Arc::new(Launches { thread: std::thread::current().id(), names: Mutex::default() });
    let observation = LaunchObservation::new(launches.clone());
    let out = f();
    drop(observation);
    drop(out);
    launches.names.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

#[test]
fn one_launch_instead_of_nine() {
    let shape = [2, 1792, 320];
    let device = wgpu();
    let x = tensor(&random(&shape, -0.5, 3.5), shape, &device);
    let (weight, bias) = (Tensor::<1>::ones([320], &device), Tensor::<1>::zeros([320], &device));
    let twin = launches(|| layer_norm_twin(x.clone(), weight.clone(), bias.clone(), EPS));
    let fused = launches(|| layer_norm(x.clone(), weight.clone(), bias.clone(), EPS));
    println!("twin: {} launches {twin:?}\nkernel: {} launches {fused:?}", twin.len(), fused.len());
    assert_eq!(fused.len(), 1, "{fused:?}");
    assert!(twin.len() >= 9, "the twin's count is the baseline the README quotes: {twin:?}");
}

/// The f16 path runs the kernel too (one launch, as in f32), not the twin; the twin's f16 count
/// is printed.
#[test]
fn f16_one_launch() {
    let shape = [2, 1792, 320];
    let device = wgpu();
    let x = tensor_f16(&f16_values(&random(&shape, -0.5, 3.5)), shape, &device);
    let weight = Tensor::<1>::ones([320], &device).cast(FloatDType::F16);
    let bias = Tensor::<1>::zeros([320], &device).cast(FloatDType::F16);
    let twin = launches(|| layer_norm_twin(x.clone(), weight.clone(), bias.clone(), EPS));
    let fused = launches(|| layer_norm(x.clone(), weight.clone(), bias.clone(), EPS));
    println!("f16 twin: {} launches {twin:?}\nf16 kernel: {} launches {fused:?}", twin.len(), fused.len());
    assert_eq!(fused.len(), 1, "{fused:?}");
    assert!(twin.len() >= 9, "{twin:?}");
}
