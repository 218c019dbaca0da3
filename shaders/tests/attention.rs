//! The fused attention kernel against its burn-op twin on native wgpu (Mesa llvmpipe on the CI
//! machine), on random inputs at the UNet's and CLIP's shapes and odd ones, and the number of
//! launches.
//!
//! Tolerance: max |kernel − reference| / max |reference| ≤ 1e-5 over the whole output (one
//! number per output, not elementwise), in f32, the reference being the twin on the same device.
//! The kernel sums the dot products and the softmax in another order than burn's GEMMs and
//! reductions (and rescales its running sums tile by tile), so the two round differently.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};
use i2vgen_shaders::attention::{attention, attention_twin};

const TOLERANCE: f32 = 1e-5;

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

/// q `[b, tq, c]`, k and v `[b, tk, c]`, uniform on [-1, 1) with q scaled by `q_scale`.
struct Inputs {
    q: TensorData,
    k: TensorData,
    v: TensorData,
    shapes: ([usize; 3], [usize; 3]),
}

impl Inputs {
    fn new(b: usize, tq: usize, tk: usize, c: usize, q_scale: f64) -> Self {
        Self {
            q: random(&[b, tq, c], -q_scale, q_scale),
            k: random(&[b, tk, c], -1.0, 1.0),
            v: random(&[b, tk, c], -1.0, 1.0),
            shapes: ([b, tq, c], [b, tk, c]),
        }
    }

    fn on(&self, device: &Device) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let (q, kv) = self.shapes;
        (tensor(&self.q, q, device), tensor(&self.k, kv, device), tensor(&self.v, kv, device))
    }
}

/// Kernel vs twin on wgpu at one shape; returns the relative error.
fn check(b: usize, tq: usize, tk: usize, c: usize, heads: usize, causal: bool, q_scale: f64) -> f32 {
    let inputs = Inputs::new(b, tq, tk, c, q_scale);
    let device = wgpu();
    let (q, k, v) = inputs.on(&device);
    let got = values(attention(q.clone(), k.clone(), v.clone(), heads, causal));
    let want = values(attention_twin(q, k, v, heads, causal));
    let err = relative_error(&got, &want);
    let d = c / heads;
    println!("b {b} tq {tq} tk {tk} heads {heads} d {d} causal {causal} q×{q_scale}: relative {err:.2e}");
    assert!(err <= TOLERANCE, "b {b} tq {tq} tk {tk} c {c} heads {heads} causal {causal}: relative error {err:e}");
    err
}

/// UNet spatial self-attention: the deepest level's 6×10 latents, and 33×7 (not a multiple of
/// any tile), 5 heads of 64.
#[test]
fn spatial_self_attention() {
    check(2, 60, 60, 320, 5, false, 1.0);
    check(2, 231, 231, 320, 5, false, 1.0);
}

/// Cross-attention: two frames' 6×10 queries of one video against its 77 text tokens.
#[test]
fn cross_attention() {
    check(2, 120, 77, 640, 10, false, 1.0);
}

/// Temporal attention: 16 frames per pixel, 150 pixels; several (pixel, head) pairs share a
/// workgroup. Also 2 frames.
#[test]
fn temporal_attention() {
    check(150, 16, 16, 320, 5, false, 1.0);
    check(40, 2, 2, 320, 5, false, 1.0);
}

/// CLIP's text encoder: 77 tokens, causal, 16 heads of 64.
#[test]
fn clip_text_causal() {
    check(2, 77, 77, 1024, 16, true, 1.0);
}

/// CLIP's vision tower: 257 patches + class token, 16 heads of 80.
#[test]
fn clip_vision_head_dim_80() {
    check(1, 257, 257, 1280, 16, false, 1.0);
}

/// The tiny test models: head dims 8 and 5 (not a multiple of 4: scalar loads), a few tokens;
/// and the causal mask when Tq ≠ Tk (burn aligns it at the bottom-right corner; with Tq > Tk the
/// first rows see no key and are 0).
#[test]
fn tiny_and_odd_head_dims() {
    check(1, 5, 5, 16, 2, false, 1.0);
    check(3, 7, 9, 15, 3, false, 1.0);
    check(2, 7, 9, 15, 3, true, 1.0);
    check(2, 9, 5, 16, 2, true, 1.0);
}

/// Scores of magnitude ~10 (q ×30): exp of a raw score would lose all precision or overflow
/// in f16; the online softmax only ever exponentiates score − running max ≤ 0. Peaked softmaxes
/// pass the scores' own f32 rounding (~1e-6 of a dot product of magnitude ~80) straight to the
/// weights, on both sides; an f64 evaluation on the host shows the kernel is as close to the
/// exact result as the twin.
#[test]
fn large_magnitude_scores() {
    for (b, t, c, heads, causal) in [(2, 60, 320, 5, false), (2, 77, 1024, 16, true)] {
        let inputs = Inputs::new(b, t, t, c, 30.0);
        let (q, k, v) = inputs.on(&wgpu());
        let got = values(attention(q.clone(), k.clone(), v.clone(), heads, causal));
        let twin = values(attention_twin(q, k, v, heads, causal));
        let exact = reference_f64(&inputs, heads, causal);
        let err = relative_error(&got, &twin);
        let (exact_err, twin_exact_err) = (relative_error(&got, &exact), relative_error(&twin, &exact));
        println!(
            "t {t} heads {heads} causal {causal} q×30: relative {err:.2e}; vs f64: kernel {exact_err:.2e}, twin {twin_exact_err:.2e}"
        );
        assert!(err <= TOLERANCE, "t {t} causal {causal}: relative error {err:e}");
        assert!(exact_err <= TOLERANCE, "t {t} causal {causal}: relative error to f64 {exact_err:e}");
    }
}

/// softmax(q kᵀ/√d) v per head in f64 on the host, causal for Tq = Tk.
fn reference_f64(inputs: &Inputs, heads: usize, causal: bool) -> Vec<f32> {
    let ([b, tq, c], [_, tk, _]) = inputs.shapes;
    let d = c / heads;
    let host =
        |data: &TensorData| data.clone().try_into_vec::<f32>().unwrap().into_iter().map(f64::from).collect::<Vec<_>>();
    let (q, k, v) = (host(&inputs.q), host(&inputs.k), host(&inputs.v));
    let mut out = vec![0.0f32; b * tq * c];
    for (batch, h, i) in (0..b).flat_map(|batch| (0..heads).flat_map(move |h| (0..tq).map(move |i| (batch, h, i)))) {
        let row = |t: usize, j: usize| (batch * t + j) * c + h * d;
        let seen = if causal { i + 1 } else { tk };
        let scores: Vec<f64> = (0..seen)
            .map(|j| (0..d).map(|e| q[row(tq, i) + e] * k[row(tk, j) + e]).sum::<f64>() / (d as f64).sqrt())
            .collect();
        let max = scores.iter().copied().fold(f64::MIN, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        for e in 0..d {
            let value: f64 = weights.iter().enumerate().map(|(j, w)| w * v[row(tk, j) + e]).sum();
            out[row(tq, i) + e] = (value / sum) as f32;
        }
    }
    out
}

/// Strided views are read in logical order (copied to row-major first): q as the transpose of a
/// `[B, C, T]` tensor (a conv output flattened), k and v as slices of a wider projection.
#[test]
fn strided_inputs() {
    let device = wgpu();
    let channels_first = random(&[2, 320, 60], -1.0, 1.0);
    let fused_kv = random(&[2, 77, 1280], -1.0, 1.0);
    let q = || tensor(&channels_first, [2, 320, 60], &device).swap_dims(1, 2);
    let kv = || tensor(&fused_kv, [2, 77, 1280], &device);
    let k = || kv().slice([0..2, 0..77, 0..320]);
    let v = || kv().slice([0..2, 0..77, 640..960]);
    let got = values(attention(q(), k(), v(), 5, false));
    let want = values(attention_twin(q(), k(), v(), 5, false));
    let err = relative_error(&got, &want);
    println!("strided: relative {err:.2e}");
    assert!(err <= TOLERANCE, "relative error {err:e}");
}

/// `attention` on the CPU backend (its twin route) agrees with the kernel on wgpu: the extension
/// routes each device to a working implementation.
#[test]
fn cpu_route_matches_wgpu_kernel() {
    let inputs = Inputs::new(2, 33, 33, 128, 1.0);
    for causal in [false, true] {
        let on = |device: &Device| {
            let (q, k, v) = inputs.on(device);
            values(attention(q, k, v, 2, causal))
        };
        let err = relative_error(&on(&wgpu()), &on(&cpu()));
        println!("cpu vs wgpu causal {causal}: relative {err:.2e}");
        assert!(err <= TOLERANCE, "causal {causal}: relative error {err:e}");
    }
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
fn one_launch() {
    let device = wgpu();
    let (q, k, v) = Inputs::new(2, 60, 60, 320, 1.0).on(&device);
    for causal in [false, true] {
        let twin = launches(|| attention_twin(q.clone(), k.clone(), v.clone(), 5, causal));
        let fused = launches(|| attention(q.clone(), k.clone(), v.clone(), 5, causal));
        println!("causal {causal}: twin {} launches {twin:?}\nkernel: {} launches {fused:?}", twin.len(), fused.len());
        assert_eq!(fused.len(), 1, "{fused:?}");
        assert!(twin.len() >= 10, "the twin's count is the baseline the README quotes: {twin:?}");
    }
}

// f16 q, k, v (f16 storage, f32 scores, softmax and accumulation): inputs rounded to f16, the
// kernel on f16 tensors, the reference the twin in f32 on the same f16-representable values.
// The output is rounded to f16 once (at most 2⁻¹¹ of the largest output), which the tolerance
// covers.

const F16_TOLERANCE: f32 = 2e-3;

/// `data` rounded to f16 (`half::f16::from_f32`), as f32 data.
fn f16_data(data: &TensorData) -> TensorData {
    let v: Vec<f32> = data.clone().convert::<f32>().try_into_vec::<f32>().unwrap();
    let v: Vec<f32> = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    TensorData::new(v, [data.num_elements()])
}

impl Inputs {
    /// The same inputs rounded to f16 (still f32 data).
    fn rounded(&self) -> Self {
        Self { q: f16_data(&self.q), k: f16_data(&self.k), v: f16_data(&self.v), shapes: self.shapes }
    }
}

/// The f16 kernel against the f32 twin on the same f16 values, on wgpu; checks the output's
/// dtype and shape and returns the relative error.
fn check_f16(b: usize, tq: usize, tk: usize, c: usize, heads: usize, causal: bool, q_scale: f64) -> f32 {
    let inputs = Inputs::new(b, tq, tk, c, q_scale).rounded();
    let (q, k, v) = inputs.on(&wgpu());
    let want = values(attention_twin(q.clone(), k.clone(), v.clone(), heads, causal));
    let out = attention(q.cast(DType::F16), k.cast(DType::F16), v.cast(DType::F16), heads, causal);
    assert_eq!(out.dtype(), DType::F16, "the f16 path returns f16");
    assert_eq!(out.dims(), [b, tq, c]);
    let err = relative_error(&values(out), &want);
    let d = c / heads;
    println!("f16 b {b} tq {tq} tk {tk} heads {heads} d {d} causal {causal} q×{q_scale}: relative {err:.2e}");
    assert!(
        err <= F16_TOLERANCE,
        "f16 b {b} tq {tq} tk {tk} c {c} heads {heads} causal {causal}: relative error {err:e}"
    );
    err
}

/// Every f32 test shape in f16: spatial (6×10 and 33×7), cross, temporal (16 and 2 frames),
/// CLIP text (causal) and vision (`d` 80), the tiny and odd head dims, q ×30.
#[test]
fn f16_at_the_f32_shapes() {
    check_f16(2, 60, 60, 320, 5, false, 1.0);
    check_f16(2, 231, 231, 320, 5, false, 1.0);
    check_f16(2, 120, 77, 640, 10, false, 1.0);
    check_f16(150, 16, 16, 320, 5, false, 1.0);
    check_f16(40, 2, 2, 320, 5, false, 1.0);
    check_f16(2, 77, 77, 1024, 16, true, 1.0);
    check_f16(1, 257, 257, 1280, 16, false, 1.0);
    check_f16(1, 5, 5, 16, 2, false, 1.0);
    check_f16(3, 7, 9, 15, 3, false, 1.0);
    check_f16(2, 7, 9, 15, 3, true, 1.0);
    check_f16(2, 9, 5, 16, 2, true, 1.0);
    check_f16(2, 60, 60, 320, 5, false, 30.0);
    check_f16(2, 77, 77, 1024, 16, true, 30.0);
}

/// Strided f16 views (a transposed q, k and v sliced from a wider projection).
#[test]
fn f16_strided_inputs() {
    let device = wgpu();
    let channels_first = f16_data(&random(&[2, 320, 60], -1.0, 1.0));
    let fused_kv = f16_data(&random(&[2, 77, 1280], -1.0, 1.0));
    let q = || tensor(&channels_first, [2, 320, 60], &device).swap_dims(1, 2);
    let kv = || tensor(&fused_kv, [2, 77, 1280], &device);
    let k = || kv().slice([0..2, 0..77, 0..320]);
    let v = || kv().slice([0..2, 0..77, 640..960]);
    let want = values(attention_twin(q(), k(), v(), 5, false));
    let half = |t: Tensor<3>| t.cast(DType::F16);
    let out = attention(half(q()), half(k()), half(v()), 5, false);
    assert_eq!(out.dtype(), DType::F16);
    let err = relative_error(&values(out), &want);
    println!("f16 strided: relative {err:.2e}");
    assert!(err <= F16_TOLERANCE, "relative error {err:e}");
}

/// The f16 path runs the kernel, not the twin: one launch, as in f32.
#[test]
fn f16_one_launch() {
    let (q, k, v) = Inputs::new(2, 60, 60, 320, 1.0).on(&wgpu());
    let (q, k, v) = (q.cast(DType::F16), k.cast(DType::F16), v.cast(DType::F16));
    for causal in [false, true] {
        let fused = launches(|| attention(q.clone(), k.clone(), v.clone(), 5, causal));
        println!("f16 causal {causal}: kernel {} launches {fused:?}", fused.len());
        assert_eq!(fused.len(), 1, "{fused:?}");
    }
}
