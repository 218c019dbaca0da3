//! The fused epilogue kernels (`bias_act`, `geglu`) against their burn-op twins on native wgpu
//! (Mesa llvmpipe on the CI machine), on random inputs at the UNet's and CLIP's shapes and odd
//! ones, GELU against the f64 erf on the host, and the launches.
//!
//! Tolerance: max |kernel − twin| / max |twin| ≤ 1e-5 over the whole output, in f32. The GELU
//! paths differ by their erf (the kernel's is within 1 ulp, burn's wgpu one Abramowitz–Stegun
//! 7.1.26 at 5e-7) and the sigmoids by their formula (`1/(1 + e^−x)` here, burn's
//! `exp(−log(1 + e^−x))`), so measured errors are 1e-7–1e-6.
//!
//! f16 (f16 storage, f32 arithmetic): the inputs are random f32 rounded to f16, the reference is
//! the twin in f32 on those same values, the kernel's f16 output widened to f32; tolerance 2e-3
//! (the output's own rounding to f16 is up to 2⁻¹¹ ≈ 4.9e-4 of each value).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor, TensorData, f16};
use i2vgen_shaders::epilogue::{Act, bias_act, bias_act_twin, geglu, geglu_twin};

const TOLERANCE: f32 = 1e-5;
const F16_TOLERANCE: f32 = 2e-3;
const ACTS: [Act; 4] = [Act::Identity, Act::Gelu, Act::QuickGelu, Act::Silu];

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

/// `data` (f16-representable) as a tensor of `dtype` on `device`.
fn tensor_as<const D: usize>(data: &TensorData, shape: [usize; D], device: &Device, dtype: FloatDType) -> Tensor<D> {
    tensor(data, shape, device).cast(dtype)
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

/// `bias_act` vs its twin on wgpu at one shape, for `acts` × (bias, residual) present or not.
/// Pre-activations span [-6, 6) plus a bias in [-1, 1): both tails of every activation.
fn check_bias_act<const D: usize>(shape: [usize; D], acts: &[Act]) {
    let channels = shape[D - 1];
    let x = random(&shape, -6.0, 6.0);
    let bias = random(&[channels], -1.0, 1.0);
    let residual = random(&shape, -2.0, 2.0);
    let device = wgpu();
    for &act in acts {
        for (with_bias, with_residual) in [(false, false), (true, false), (false, true), (true, true)] {
            let b = || with_bias.then(|| tensor(&bias, [channels], &device));
            let r = || with_residual.then(|| tensor(&residual, shape, &device));
            let got = values(bias_act(tensor(&x, shape, &device), b(), act, r()));
            let want = values(bias_act_twin(tensor(&x, shape, &device), b(), act, r()));
            let err = relative_error(&got, &want);
            println!("{shape:?} {act:?} bias {with_bias} residual {with_residual}: relative {err:.2e}");
            assert!(err <= TOLERANCE, "{shape:?} {act:?} bias {with_bias} residual {with_residual}: {err:e}");
        }
    }
}

/// `geglu` vs its twin on wgpu, with and without the projection's bias.
fn check_geglu<const D: usize>(shape: [usize; D]) {
    let width = shape[D - 1];
    let h = random(&shape, -6.0, 6.0);
    let bias = random(&[width], -1.0, 1.0);
    let device = wgpu();
    for with_bias in [false, true] {
        let b = || with_bias.then(|| tensor(&bias, [width], &device));
        let got = values(geglu(tensor(&h, shape, &device), b()));
        let want = values(geglu_twin(tensor(&h, shape, &device), b()));
        let err = relative_error(&got, &want);
        println!("geglu {shape:?} bias {with_bias}: relative {err:.2e}");
        assert!(err <= TOLERANCE, "geglu {shape:?} bias {with_bias}: {err:e}");
    }
}

/// `bias_act` in f16 on wgpu vs its twin in f32 on the same (f16-representable) values, for
/// `acts` × (bias, residual) present or not; the output must be f16 and of `x`'s shape.
fn check_bias_act_f16<const D: usize>(shape: [usize; D], acts: &[Act]) {
    let channels = shape[D - 1];
    let x = f16_values(&random(&shape, -6.0, 6.0));
    let bias = f16_values(&random(&[channels], -1.0, 1.0));
    let residual = f16_values(&random(&shape, -2.0, 2.0));
    let device = wgpu();
    for &act in acts {
        for (with_bias, with_residual) in [(false, false), (true, false), (false, true), (true, true)] {
            let b = |dtype| with_bias.then(|| tensor_as(&bias, [channels], &device, dtype));
            let r = |dtype| with_residual.then(|| tensor_as(&residual, shape, &device, dtype));
            let out =
                bias_act(tensor_as(&x, shape, &device, FloatDType::F16), b(FloatDType::F16), act, r(FloatDType::F16));
            assert_eq!((out.dtype(), out.dims()), (DType::F16, shape), "{act:?}: the output's dtype and shape");
            let got = values(out);
            let want = values(bias_act_twin(tensor(&x, shape, &device), b(FloatDType::F32), act, r(FloatDType::F32)));
            let err = relative_error(&got, &want);
            println!("f16 {shape:?} {act:?} bias {with_bias} residual {with_residual}: relative {err:.2e}");
            assert!(err <= F16_TOLERANCE, "f16 {shape:?} {act:?} bias {with_bias} residual {with_residual}: {err:e}");
        }
    }
}

/// `geglu` in f16 on wgpu vs its twin in f32 on the same values, with and without the bias.
fn check_geglu_f16<const D: usize>(shape: [usize; D]) {
    let width = shape[D - 1];
    let mut out_shape = shape;
    out_shape[D - 1] = width / 2;
    let h = f16_values(&random(&shape, -6.0, 6.0));
    let bias = f16_values(&random(&[width], -1.0, 1.0));
    let device = wgpu();
    for with_bias in [false, true] {
        let b = |dtype| with_bias.then(|| tensor_as(&bias, [width], &device, dtype));
        let out = geglu(tensor_as(&h, shape, &device, FloatDType::F16), b(FloatDType::F16));
        assert_eq!((out.dtype(), out.dims()), (DType::F16, out_shape), "the output's dtype and shape");
        let got = values(out);
        let want = values(geglu_twin(tensor(&h, shape, &device), b(FloatDType::F32)));
        let err = relative_error(&got, &want);
        println!("f16 geglu {shape:?} bias {with_bias}: relative {err:.2e}");
        assert!(err <= F16_TOLERANCE, "f16 geglu {shape:?} bias {with_bias}: {err:e}");
    }
}

/// The attention's `to_out` + residual and the feed-forward's `net.2` + residual at the UNet's
/// token counts (C = 320, 640, 1280), every activation.
#[test]
fn bias_act_unet_shapes() {
    check_bias_act([2 * 1792, 320], &ACTS);
    check_bias_act([150, 16, 640], &ACTS);
    check_bias_act([2, 112, 1280], &[Act::Identity, Act::Gelu]);
}

/// CLIP's MLP (`fc1` + quick_gelu or gelu) at the text and vision towers' widths.
#[test]
fn bias_act_clip_shapes() {
    check_bias_act([5, 77, 1024], &[Act::Identity, Act::Gelu, Act::QuickGelu]);
    check_bias_act([3, 257, 1280], &[Act::Gelu, Act::QuickGelu]);
}

/// Rows of 57 (scalar loads), 8 and 1, and 70,000 of them.
#[test]
fn bias_act_odd_sizes() {
    check_bias_act([7, 33, 57], &ACTS);
    check_bias_act([4, 1, 8], &ACTS);
    check_bias_act([5, 1], &ACTS);
    check_bias_act([70_000, 8], &[Act::Gelu]);
}

/// The f32 cases' shapes in f16.
#[test]
fn f16_bias_act_unet_shapes() {
    check_bias_act_f16([2 * 1792, 320], &ACTS);
    check_bias_act_f16([150, 16, 640], &ACTS);
    check_bias_act_f16([2, 112, 1280], &[Act::Identity, Act::Gelu]);
}

#[test]
fn f16_bias_act_clip_shapes() {
    check_bias_act_f16([5, 77, 1024], &[Act::Identity, Act::Gelu, Act::QuickGelu]);
    check_bias_act_f16([3, 257, 1280], &[Act::Gelu, Act::QuickGelu]);
}

#[test]
fn f16_bias_act_odd_sizes() {
    check_bias_act_f16([7, 33, 57], &ACTS);
    check_bias_act_f16([4, 1, 8], &ACTS);
    check_bias_act_f16([5, 1], &ACTS);
    check_bias_act_f16([70_000, 8], &[Act::Gelu]);
}

/// 18 million scalar outputs: more workgroups (70,274 of 256 threads) than one grid dimension's
/// 65,535 hold, so the launch spreads them over two. (GEGLU cannot get there on this adapter: its
/// input, twice the output, would pass llvmpipe's 128 MiB binding limit first.)
#[test]
fn more_workgroups_than_one_grid_dimension() {
    let device = wgpu();
    let shape = [70_000, 257];
    let (x, bias, residual) = (random(&shape, -6.0, 6.0), random(&[257], -1.0, 1.0), random(&shape, -2.0, 2.0));
    let run = |f: fn(Tensor<2>, Option<Tensor<1>>, Act, Option<Tensor<2>>) -> Tensor<2>| {
        let b = Some(tensor(&bias, [257], &device));
        values(f(tensor(&x, shape, &device), b, Act::Silu, Some(tensor(&residual, shape, &device))))
    };
    let err = relative_error(&run(bias_act), &run(bias_act_twin));
    assert!(err <= TOLERANCE, "bias_act {shape:?}: relative error {err:e}");
}

/// The UNet's GEGLU (inner = 4·C: 1280, 2560, 5120) and odd widths (inner 5 and 57: scalar loads).
#[test]
fn geglu_shapes() {
    check_geglu([2, 300, 2 * 1280]);
    check_geglu([150, 16, 2 * 2560]);
    check_geglu([40, 2 * 5120]);
    check_geglu([7, 33, 2 * 5]);
    check_geglu([3, 2 * 57]);
    check_geglu([70_000, 2 * 4]);
}

#[test]
fn f16_geglu_shapes() {
    check_geglu_f16([2, 300, 2 * 1280]);
    check_geglu_f16([150, 16, 2 * 2560]);
    check_geglu_f16([40, 2 * 5120]);
    check_geglu_f16([7, 33, 2 * 5]);
    check_geglu_f16([3, 2 * 57]);
    check_geglu_f16([70_000, 2 * 4]);
}

/// The kernel's GELU against `x · Φ(x)` in f64 on the host (libm's erf), elementwise: at most
/// 1e-6 · max(|x|, 1) off, over [-10, 10) and the whole f32 range's tails; burn's twin (on
/// wgpu, Abramowitz–Stegun) is printed next to it.
#[test]
fn gelu_matches_f64_erf() {
    let x: Vec<f32> = (0..80_000).map(|i| -10.0 + i as f32 / 4000.0).chain([-1e30, -100.0, 100.0, 1e30]).collect();
    let n = x.len();
    let device = wgpu();
    let input = || Tensor::<1>::from_data(TensorData::new(x.clone(), [n]), &device).reshape([1, n]);
    let got = values(bias_act(input(), None, Act::Gelu, None));
    let twin = values(bias_act_twin(input(), None, Act::Gelu, None));
    let worst = |y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(&x, &y)| {
                let x = f64::from(x);
                let exact = 0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2));
                (f64::from(y) - exact).abs() / x.abs().max(1.0)
            })
            .fold(0.0, f64::max)
    };
    let (kernel, burn) = (worst(&got), worst(&twin));
    println!("gelu vs f64: kernel {kernel:.2e}, burn's twin {burn:.2e}");
    assert!(kernel <= 1e-6, "kernel gelu off by {kernel:e}");
}

/// erf in f64: the Taylor series below 3, the continued fraction of erfc above (both to
/// 1e-15 there), so the test needs no libm binding.
fn libm_erf(x: f64) -> f64 {
    let a = x.abs();
    let value = if a < 3.0 {
        let (mut term, mut sum, mut k) = (a, a, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            k += 1.0;
            term *= -a * a / k;
            sum += term / (2.0 * k + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = e^−a² / √π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + 2/(a + ...)))))
        let mut fraction = a;
        for k in (1..60).rev() {
            fraction = a + f64::from(k) / 2.0 / fraction;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / fraction
    };
    value.copysign(x)
}

/// Strided views (a transposed projection output, a sliced residual) are read in logical order.
#[test]
fn strided_inputs() {
    let device = wgpu();
    let x = random(&[2, 320, 60], -6.0, 6.0);
    let residual = random(&[2, 60, 330], -2.0, 2.0);
    let bias = random(&[320], -1.0, 1.0);
    let transposed = || tensor(&x, [2, 320, 60], &device).swap_dims(1, 2);
    let sliced = || Some(tensor(&residual, [2, 60, 330], &device).narrow(2, 5, 320));
    let b = || Some(tensor(&bias, [320], &device));
    let got = values(bias_act(transposed(), b(), Act::Gelu, sliced()));
    let want = values(bias_act_twin(transposed(), b(), Act::Gelu, sliced()));
    let err = relative_error(&got, &want);
    assert!(err <= TOLERANCE, "bias_act: relative error {err:e}");

    let h = random(&[2, 40, 64], -6.0, 6.0);
    let transposed = || tensor(&h, [2, 40, 64], &device).swap_dims(1, 2);
    let err = relative_error(&values(geglu(transposed(), None)), &values(geglu_twin(transposed(), None)));
    assert!(err <= TOLERANCE, "geglu: relative error {err:e}");
}

/// The CPU backend (the twins' route) agrees with the kernels on wgpu: the extension routes each
/// device to a working implementation.
#[test]
fn cpu_route_matches_wgpu_kernels() {
    let shape = [3, 77, 64];
    let (x, bias, residual) = (random(&shape, -6.0, 6.0), random(&[64], -1.0, 1.0), random(&shape, -2.0, 2.0));
    for act in ACTS {
        let run = |device: &Device| {
            let b = Some(tensor(&bias, [64], device));
            values(bias_act(tensor(&x, shape, device), b, act, Some(tensor(&residual, shape, device))))
        };
        let err = relative_error(&run(&wgpu()), &run(&cpu()));
        assert!(err <= TOLERANCE, "{act:?}: relative error {err:e}");
    }
    let run = |device: &Device| values(geglu(tensor(&x, shape, device), Some(tensor(&bias, [64], device))));
    let err = relative_error(&run(&wgpu()), &run(&cpu()));
    assert!(err <= TOLERANCE, "geglu: relative error {err:e}");
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

/// One launch per epilogue; the twins' counts (printed) are the baseline the README quotes.
#[test]
fn one_launch_each() {
    let device = wgpu();
    let shape = [2, 1792, 320];
    let x = tensor(&random(&shape, -6.0, 6.0), shape, &device);
    let residual = tensor(&random(&shape, -2.0, 2.0), shape, &device);
    let bias = tensor(&random(&[320], -1.0, 1.0), [320], &device);
    for act in ACTS {
        let twin = launches(|| bias_act_twin(x.clone(), Some(bias.clone()), act, Some(residual.clone())));
        let fused = launches(|| bias_act(x.clone(), Some(bias.clone()), act, Some(residual.clone())));
        println!("bias_act {act:?} + bias + residual: twin {} launches, kernel {}", twin.len(), fused.len());
        assert_eq!(fused.len(), 1, "{fused:?}");
        assert!(twin.len() >= 2, "{twin:?}");
    }
    let h = tensor(&random(&[2, 1792, 2560], -6.0, 6.0), [2, 1792, 2560], &device);
    let proj_bias = tensor(&random(&[2560], -1.0, 1.0), [2560], &device);
    let twin = launches(|| geglu_twin(h.clone(), Some(proj_bias.clone())));
    let fused = launches(|| geglu(h.clone(), Some(proj_bias.clone())));
    println!("geglu + bias: twin {} launches {twin:?}, kernel {}", twin.len(), fused.len());
    assert_eq!(fused.len(), 1, "{fused:?}");
    assert!(twin.len() >= 7, "{twin:?}");
}

/// The f16 path runs the kernels too (one launch each, as in f32), not the twins; the twins'
/// f16 counts are printed.
#[test]
fn f16_one_launch_each() {
    let device = wgpu();
    let shape = [2, 1792, 320];
    let f16 = |data: &TensorData, shape| tensor_as(&f16_values(data), shape, &device, FloatDType::F16);
    let x = f16(&random(&shape, -6.0, 6.0), shape);
    let residual = f16(&random(&shape, -2.0, 2.0), shape);
    let bias = tensor_as(&f16_values(&random(&[320], -1.0, 1.0)), [320], &device, FloatDType::F16);
    for act in ACTS {
        let twin = launches(|| bias_act_twin(x.clone(), Some(bias.clone()), act, Some(residual.clone())));
        let fused = launches(|| bias_act(x.clone(), Some(bias.clone()), act, Some(residual.clone())));
        println!("f16 bias_act {act:?} + bias + residual: twin {} launches, kernel {}", twin.len(), fused.len());
        assert_eq!(fused.len(), 1, "{fused:?}");
        assert!(twin.len() >= 2, "{twin:?}");
    }
    let h = f16(&random(&[2, 1792, 2560], -6.0, 6.0), [2, 1792, 2560]);
    let proj_bias = tensor_as(&f16_values(&random(&[2560], -1.0, 1.0)), [2560], &device, FloatDType::F16);
    let twin = launches(|| geglu_twin(h.clone(), Some(proj_bias.clone())));
    let fused = launches(|| geglu(h.clone(), Some(proj_bias.clone())));
    println!("f16 geglu + bias: twin {} launches {twin:?}, kernel {}", twin.len(), fused.len());
    assert_eq!(fused.len(), 1, "{fused:?}");
    assert!(twin.len() >= 7, "{twin:?}");
}

/// An input nothing else holds is overwritten in place; one still held (here `x`, used again
/// after the call) is left as it was.
#[test]
fn in_place_only_when_unshared() {
    let device = wgpu();
    let shape = [33, 64];
    let (data, bias) = (random(&shape, -6.0, 6.0), random(&[64], -1.0, 1.0));
    let x = tensor(&data, shape, &device);
    let b = || Some(tensor(&bias, [64], &device));
    let want = values(bias_act_twin(tensor(&data, shape, &device), b(), Act::Silu, None));
    let shared = values(bias_act(x.clone(), b(), Act::Silu, None));
    assert_eq!(values(x), data.try_to_vec::<f32>().unwrap(), "a held input was overwritten");
    let owned = bias_act(tensor(&data, shape, &device), b(), Act::Silu, None);
    assert_eq!(owned.dims(), shape, "the in-place output keeps the input's shape");
    let owned = values(owned);
    for got in [shared, owned] {
        let err = relative_error(&got, &want);
        assert!(err <= TOLERANCE, "relative error {err:e}");
    }
}
