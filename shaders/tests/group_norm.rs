//! The fused GroupNorm kernels against their burn-op twin on native wgpu (Mesa llvmpipe on the CI
//! machine), on random inputs at the UNet's shapes and odd ones, and the number of launches.
//!
//! Tolerance: max |kernel − reference| / max |reference| ≤ 1e-5 over the whole output (one
//! number per output, not elementwise), in f32, the reference being the twin on the same device
//! (or an f64 host computation where the twin itself is inaccurate, see
//! `temporal_conv_full_group`). The kernel merges Welford partials in a tree where burn's
//! reduction sums serially, so the two round differently; measured errors are 4e-7–2e-6.
//!
//! f16 (f16 storage, f32 statistics): the inputs are random f32 rounded to f16, the reference is
//! the twin in f32 on those same values (f64 on the host for the full TemporalConvLayer group),
//! the kernels' f16 output widened to f32; tolerance 2e-3 (the output's own rounding to f16 is
//! up to 2⁻¹¹ ≈ 4.9e-4 of each value).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor, TensorData, f16};
use i2vgen_shaders::group_norm::{group_norm, group_norm_twin};

const TOLERANCE: f32 = 1e-5;
const F16_TOLERANCE: f32 = 2e-3;

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
/// hold exactly, so the f16 kernels and the f32 twin see the same numbers.
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

/// Kernel vs twin on wgpu for every (affine, SiLU) combination at one shape.
fn check<const D: usize>(shape: [usize; D], groups: usize) {
    let channels = shape[1];
    // An offset mean (1.5) next to a unit spread: the variance must not cancel.
    let x = random(&shape, -0.5, 3.5);
    let weight = random(&[channels], 0.5, 1.5);
    let bias = random(&[channels], -1.0, 1.0);
    let device = wgpu();
    for (affine, silu) in [(false, false), (true, false), (false, true), (true, true)] {
        let params = || affine.then(|| (tensor(&weight, [channels], &device), tensor(&bias, [channels], &device)));
        let got = values(group_norm(tensor(&x, shape, &device), params(), groups, 1e-5, silu));
        let want = values(group_norm_twin(tensor(&x, shape, &device), params(), groups, 1e-5, silu));
        let err = relative_error(&got, &want);
        println!("{shape:?} groups {groups} affine {affine} silu {silu}: relative {err:.2e}");
        assert!(err <= TOLERANCE, "{shape:?} affine {affine} silu {silu}: relative error {err:e}");
    }
}

/// The kernels in f16 vs the twin in f32 on the same (f16-representable) values for every
/// (affine, SiLU) combination at one shape; the output must be f16 and of `x`'s shape.
fn check_f16<const D: usize>(shape: [usize; D], groups: usize) {
    let channels = shape[1];
    let x = f16_values(&random(&shape, -0.5, 3.5));
    let weight = f16_values(&random(&[channels], 0.5, 1.5));
    let bias = f16_values(&random(&[channels], -1.0, 1.0));
    let device = wgpu();
    for (affine, silu) in [(false, false), (true, false), (false, true), (true, true)] {
        let params = |f16: bool| {
            affine.then(|| {
                let (w, b) = (tensor(&weight, [channels], &device), tensor(&bias, [channels], &device));
                if f16 { (w.cast(FloatDType::F16), b.cast(FloatDType::F16)) } else { (w, b) }
            })
        };
        let out = group_norm(tensor_f16(&x, shape, &device), params(true), groups, 1e-5, silu);
        assert_eq!((out.dtype(), out.dims()), (DType::F16, shape), "the output's dtype and shape");
        let got = values(out);
        let want = values(group_norm_twin(tensor(&x, shape, &device), params(false), groups, 1e-5, silu));
        let err = relative_error(&got, &want);
        println!("f16 {shape:?} groups {groups} affine {affine} silu {silu}: relative {err:.2e}");
        assert!(err <= F16_TOLERANCE, "f16 {shape:?} affine {affine} silu {silu}: relative error {err:e}");
    }
}

#[test]
fn resnet_shapes() {
    check([2, 320, 32, 56], 32);
    check([2, 1280, 4, 7], 32);
}

#[test]
fn frames_folded_into_the_batch() {
    check([32, 320, 6, 10], 32);
}

#[test]
fn odd_sizes_and_four_channels() {
    check([1, 4, 33, 57], 4);
    check([1, 4, 33, 57], 2);
    check([3, 96, 7, 5], 32);
}

#[test]
fn scaled_down_720p() {
    check([1, 640, 23, 40], 32);
}

#[test]
fn five_dimensional() {
    check([1, 320, 16, 8, 14], 32);
}

/// Every f32 case's shape in f16.
#[test]
fn f16_shapes() {
    check_f16([2, 320, 32, 56], 32);
    check_f16([2, 1280, 4, 7], 32);
    check_f16([32, 320, 6, 10], 32);
    check_f16([1, 4, 33, 57], 4);
    check_f16([1, 4, 33, 57], 2);
    check_f16([3, 96, 7, 5], 32);
    check_f16([1, 640, 23, 40], 32);
    check_f16([1, 320, 16, 8, 14], 32);
}

/// The full TemporalConvLayer group in f16 against f64 on the host (the twin drifts there, see
/// `temporal_conv_full_group`): the f32 statistics keep the f16 kernels within the output's own
/// rounding.
#[test]
fn f16_temporal_conv_full_group() {
    let shape = [1, 320, 16, 32, 56];
    let x = f16_values(&random(&shape, -0.5, 3.5));
    let exact = reference_f64(&x.try_to_vec::<f32>().unwrap(), 32, 1e-5);
    let out = group_norm(tensor_f16(&x, shape, &wgpu()), None, 32, 1e-5, true);
    assert_eq!((out.dtype(), out.dims()), (DType::F16, shape), "the output's dtype and shape");
    let err = relative_error(&values(out), &exact);
    println!("f16 {shape:?}: kernel relative {err:.2e} (vs f64)");
    assert!(err <= F16_TOLERANCE, "relative error {err:e}");
}

/// The TemporalConvLayer norm at 16×256×448 latents: 286,720 floats per (sample, group), which
/// the kernel splits across 18 workgroups. Here the reference is GroupNorm + SiLU in f64 on the
/// host, not the twin: burn's wgpu reduction sums the 286,720 floats serially in f32 and its
/// output is off by ~0.2 (measured, printed below), far outside any useful tolerance.
#[test]
fn temporal_conv_full_group() {
    let shape = [1, 320, 16, 32, 56];
    let x = random(&shape, -0.5, 3.5);
    let device = wgpu();
    let exact = reference_f64(&x.try_to_vec::<f32>().unwrap(), 32, 1e-5);
    let got = values(group_norm(tensor(&x, shape, &device), None, 32, 1e-5, true));
    let twin = values(group_norm_twin(tensor(&x, shape, &device), None, 32, 1e-5, true));
    let err = relative_error(&got, &exact);
    println!("{shape:?}: kernel relative {err:.2e}, twin relative {:.2e}", relative_error(&twin, &exact));
    assert!(err <= TOLERANCE, "relative error {err:e}");
}

/// GroupNorm (no affine) + SiLU of one sample, `[C·...]` row-major, two-pass in f64.
fn reference_f64(x: &[f32], groups: usize, eps: f64) -> Vec<f32> {
    x.chunks(x.len() / groups)
        .flat_map(|group| {
            let len = group.len() as f64;
            let mean = group.iter().map(|&v| f64::from(v)).sum::<f64>() / len;
            let variance = group.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / len;
            group.iter().map(move |&v| {
                let y = (f64::from(v) - mean) / (variance + eps).sqrt();
                (y / (1.0 + (-y).exp())) as f32
            })
        })
        .collect()
}

/// Strided views are read in logical order (they are copied to row-major first): a conv output,
/// `[N, C, H, W]` over `[N, H, W, C]` memory, and a 5-D permute; with and without the affine.
#[test]
fn strided_inputs() {
    let device = wgpu();
    let (weight, bias) = (random(&[320], 0.5, 1.5), random(&[320], -1.0, 1.0));
    let affine = || (tensor(&weight, [320], &device), tensor(&bias, [320], &device));
    let nhwc = random(&[2, 12, 10, 320], -0.5, 3.5);
    let frames_first = random(&[1, 4, 320, 6, 10], -0.5, 3.5);
    for params in [None, Some(())] {
        let conv_out = || tensor(&nhwc, [2, 12, 10, 320], &device).permute([0, 3, 1, 2]);
        let got = values(group_norm(conv_out(), params.map(|()| affine()), 32, 1e-5, true));
        let want = values(group_norm_twin(conv_out(), params.map(|()| affine()), 32, 1e-5, true));
        let err = relative_error(&got, &want);
        assert!(err <= TOLERANCE, "conv output: relative error {err:e}");

        let permuted = || tensor(&frames_first, [1, 4, 320, 6, 10], &device).swap_dims(1, 2);
        let got = values(group_norm(permuted(), params.map(|()| affine()), 32, 1e-5, false));
        let want = values(group_norm_twin(permuted(), params.map(|()| affine()), 32, 1e-5, false));
        let err = relative_error(&got, &want);
        assert!(err <= TOLERANCE, "5-D permute: relative error {err:e}");
    }
}

/// Strided f16 views (a conv output over `[N, H, W, C]` memory) are read in logical order too.
#[test]
fn f16_strided_input() {
    let device = wgpu();
    let nhwc = f16_values(&random(&[2, 12, 10, 320], -0.5, 3.5));
    let (weight, bias) = (f16_values(&random(&[320], 0.5, 1.5)), f16_values(&random(&[320], -1.0, 1.0)));
    let affine = Some((tensor_f16(&weight, [320], &device), tensor_f16(&bias, [320], &device)));
    let conv_out = tensor_f16(&nhwc, [2, 12, 10, 320], &device).permute([0, 3, 1, 2]);
    let out = group_norm(conv_out, affine, 32, 1e-5, true);
    assert_eq!(out.dtype(), DType::F16);
    let got = values(out);
    let affine = Some((tensor(&weight, [320], &device), tensor(&bias, [320], &device)));
    let conv_out = tensor(&nhwc, [2, 12, 10, 320], &device).permute([0, 3, 1, 2]);
    let want = values(group_norm_twin(conv_out, affine, 32, 1e-5, true));
    let err = relative_error(&got, &want);
    println!("f16 conv output: relative {err:.2e}");
    assert!(err <= F16_TOLERANCE, "conv output: relative error {err:e}");
}

/// `group_norm` on the CPU backend (its twin route) agrees with the kernels on wgpu: the
/// extension routes each device to a working implementation.
#[test]
fn cpu_route_matches_wgpu_kernel() {
    let shape = [2, 64, 9, 11];
    let x = random(&shape, -0.5, 3.5);
    let on_cpu = values(group_norm(tensor(&x, shape, &cpu()), None, 32, 1e-6, true));
    let on_wgpu = values(group_norm(tensor(&x, shape, &wgpu()), None, 32, 1e-6, true));
    let err = relative_error(&on_wgpu, &on_cpu);
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
fn three_launches_instead_of_sixteen() {
    let shape = [2, 320, 32, 56];
    let device = wgpu();
    let x = tensor(&random(&shape, -0.5, 3.5), shape, &device);
    let (weight, bias) = (Tensor::ones([320], &device), Tensor::zeros([320], &device));
    let affine = || Some((weight.clone(), bias.clone()));
    let twin = launches(|| group_norm_twin(x.clone(), affine(), 32, 1e-5, true));
    let fused = launches(|| group_norm(x.clone(), affine(), 32, 1e-5, true));
    println!("twin: {} launches {twin:?}\nkernels: {} launches {fused:?}", twin.len(), fused.len());
    assert_eq!(fused.len(), 3, "{fused:?}");
    assert!(twin.len() >= 9 + 2, "the twin's count is the baseline the README quotes: {twin:?}");
}

/// The f16 path runs the kernels too (three launches, as in f32), not the twin; the twin's f16
/// count is printed.
#[test]
fn f16_three_launches() {
    let shape = [2, 320, 32, 56];
    let device = wgpu();
    let x = tensor_f16(&f16_values(&random(&shape, -0.5, 3.5)), shape, &device);
    let weight = Tensor::<1>::ones([320], &device).cast(FloatDType::F16);
    let bias = Tensor::<1>::zeros([320], &device).cast(FloatDType::F16);
    let affine = || Some((weight.clone(), bias.clone()));
    let twin = launches(|| group_norm_twin(x.clone(), affine(), 32, 1e-5, true));
    let fused = launches(|| group_norm(x.clone(), affine(), 32, 1e-5, true));
    println!("f16 twin: {} launches {twin:?}\nf16 kernels: {} launches {fused:?}", twin.len(), fused.len());
    assert_eq!(fused.len(), 3, "{fused:?}");
    assert!(twin.len() >= 9 + 2, "{twin:?}");
}
