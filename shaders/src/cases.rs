//! Every kernel family against its burn-op twin as a list of **cases** one runner can walk on any
//! device: native wgpu in `tests/cases.rs`, the browser's WebGPU (Chromium on SwiftShader in the
//! end-to-end tests) through `i2vgen-web`'s `kernel_cases`.
//!
//! A case draws its inputs on the host from its own seeded generator (uniform, never all zeros;
//! the same numbers on every device), puts them on the device, runs the kernel (its launches
//! recorded by cubecl's launch observer) and the twin, and returns both outputs **without reading
//! them back**: a readback is sync natively and must be awaited in the browser, so the caller does
//! it. Shapes are the UNet's and CLIP's channel counts (4, 320, 640, 1024, 1280) at small spatial
//! sizes, plus odd sizes that are a multiple of no tile (6×10, 33×57, 5×7, rows of 57, head dim 5):
//! the whole list takes seconds on llvmpipe and stays within a minute or two on SwiftShader.
//!
//! Tolerance (the callers'): max |kernel − twin| / max |twin| ≤ [`TOLERANCE`] over each output.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

use crate::attention::{attention, attention_twin};
use crate::conv::{
    conv2d, conv2d_twin, output_shape, prepare_weight, prepare_weight_packed, temporal_conv, temporal_conv_twin,
    temporal_taps, upsample_conv2d, upsample_conv2d_twin,
};
use crate::epilogue::{Act, bias_act, bias_act_twin, geglu, geglu_twin};
use crate::gemm::{matmul_packed, matmul_packed_twin};
use crate::group_norm::{group_norm, group_norm_twin};
use crate::layer_norm::{layer_norm, layer_norm_twin};
use crate::packed::PackedF16;

/// The f32 tolerance every case is held to: max |kernel − twin| / max |twin|.
pub const TOLERANCE: f32 = 1e-5;

/// The kernel families the list covers, each with at least one case.
pub const FAMILIES: [&str; 8] =
    ["group_norm", "attention", "conv2d", "layer_norm", "bias_act", "geglu", "packed_f16", "matmul_packed"];

type Body = Box<dyn Fn(&mut Run) -> Outputs + Send + Sync>;

/// One kernel-vs-twin comparison at one shape.
pub struct Case {
    /// One of [`FAMILIES`].
    pub family: &'static str,
    /// Unique in the list: the operation and its shape.
    pub name: String,
    /// A fragment of the name of the kernel that must be among the kernel side's launches on a
    /// cubecl device (cubecl names a launch by the kernel's type path).
    pub kernel: &'static str,
    body: Body,
}

/// A case's two outputs, flattened, still on the device.
pub struct Outputs {
    /// The output's shape.
    pub shape: Vec<usize>,
    /// The kernel's output (the public op).
    pub kernel: Tensor<1>,
    /// The twin's output (burn's ops), the reference.
    pub twin: Tensor<1>,
    /// The kernels launched by the kernel side, in order (none on a backend without cubecl).
    pub launches: Vec<&'static str>,
}

impl Outputs {
    fn new<const D: usize>(kernel: Tensor<D>, twin: Tensor<D>) -> Self {
        let shape = kernel.dims().to_vec();
        let flat = |t: Tensor<D>| {
            let n: usize = t.dims().iter().product();
            t.reshape([n])
        };
        Self { shape, kernel: flat(kernel), twin: flat(twin), launches: Vec::new() }
    }
}

impl Case {
    /// Draw the inputs, run kernel and twin on `device`; nothing is read back.
    pub fn run(&self, device: &Device) -> Outputs {
        let mut run = Run { device: device.clone(), rng: Rng::new(&self.name), launches: Vec::new() };
        let mut outputs = (self.body)(&mut run);
        outputs.launches = run.launches;
        outputs
    }

    /// Whether the case's kernel is among `launches` (a [`Case::run`]'s [`Outputs::launches`]).
    pub fn kernel_ran(&self, launches: &[&str]) -> bool {
        launches.iter().any(|name| name.contains(self.kernel))
    }
}

/// max |a − b| / max |b| over two outputs read back; infinite when `kernel` has a non-finite
/// value or the lengths differ.
pub fn relative_error(kernel: &[f32], twin: &[f32]) -> f32 {
    if kernel.len() != twin.len() || !kernel.iter().all(|v| v.is_finite()) {
        return f32::INFINITY;
    }
    let diff = kernel.iter().zip(twin).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    diff / twin.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// What a case body draws its inputs from and runs its kernel through.
struct Run {
    device: Device,
    rng: Rng,
    launches: Vec<&'static str>,
}

impl Run {
    /// Host-drawn values uniform on `[low, high)`.
    fn values(&mut self, len: usize, low: f32, high: f32) -> Vec<f32> {
        (0..len).map(|_| self.rng.uniform(low, high)).collect()
    }

    /// A tensor of values uniform on `[low, high)` on the case's device.
    fn uniform<const D: usize>(&mut self, shape: [usize; D], low: f32, high: f32) -> Tensor<D> {
        let len = shape.iter().product();
        let values = self.values(len, low, high);
        self.tensor(values, shape)
    }

    fn tensor<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
        let len = values.len();
        Tensor::<1>::from_data(TensorData::new(values, [len]), &self.device).reshape(shape)
    }

    /// Run the kernel side, recording the kernels it launches (this thread's only).
    fn kernel<const D: usize>(&mut self, op: impl FnOnce() -> Tensor<D>) -> Tensor<D> {
        let recorder = Arc::new(Recorder { thread: std::thread::current().id(), names: Mutex::default() });
        let observation = LaunchObservation::new(recorder.clone());
        let out = op();
        drop(observation);
        self.launches.extend(recorder.names.lock().unwrap_or_else(PoisonError::into_inner).iter());
        out
    }
}

/// cubecl's launch observer, filtered to one thread (native tests run in parallel).
struct Recorder {
    thread: ThreadId,
    names: Mutex<Vec<&'static str>>,
}

impl LaunchObserver for Recorder {
    fn launched(&self, kernel: &'static str) {
        if std::thread::current().id() == self.thread {
            self.names.lock().unwrap_or_else(PoisonError::into_inner).push(kernel);
        }
    }
}

/// SplitMix64, seeded from the case's name: the same inputs on every device and every run.
struct Rng(u64);

impl Rng {
    fn new(name: &str) -> Self {
        // FNV-1a of the name.
        Self(name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform on `[low, high)` (24 random bits).
    fn uniform(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }
}

/// `x` rounded to the nearest f16 (ties to even, ±∞ from 65520, f16 subnormals), as f32: the
/// host reference of the packing kernel (`half::f16::from_f32`'s result, without `half`, which
/// is not in the wasm build).
pub fn round_to_f16(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let a = x.abs();
    if a >= 65520.0 {
        return f32::INFINITY.copysign(x);
    }
    // The f16 spacing at `a`: 2^(e − 10) for a normal f16 of exponent e, 2^−24 below 2^−14.
    let exponent = if a < 2f32.powi(-14) { -14 } else { ((a.to_bits() >> 23) & 0xff) as i32 - 127 };
    let spacing = 2f32.powi(exponent - 10);
    (x / spacing).round_ties_even() * spacing
}

fn case(
    family: &'static str,
    name: String,
    kernel: &'static str,
    body: impl Fn(&mut Run) -> Outputs + Send + Sync + 'static,
) -> Case {
    Case { family, name, kernel, body: Box::new(body) }
}

/// Every case, family by family.
pub fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(group_norm_cases());
    all.extend(attention_cases());
    all.extend(conv_cases());
    all.extend(layer_norm_cases());
    all.extend(bias_act_cases());
    all.extend(geglu_cases());
    all.extend(packed_cases());
    all
}

fn group_norm_cases() -> Vec<Case> {
    fn gn<const D: usize>(shape: [usize; D], groups: usize, affine: bool, silu: bool) -> Case {
        let name = format!("group_norm {shape:?} groups {groups} affine {affine} silu {silu}");
        case("group_norm", name, "group_apply", move |run| {
            let channels = shape[1];
            // An offset mean (1.5) next to a unit spread: the variance must not cancel.
            let x = run.uniform(shape, -0.5, 3.5);
            let params = affine.then(|| (run.uniform([channels], 0.5, 1.5), run.uniform([channels], -1.0, 1.0)));
            let kernel = run.kernel(|| group_norm(x.clone(), params.clone(), groups, 1e-5, silu));
            Outputs::new(kernel, group_norm_twin(x, params, groups, 1e-5, silu))
        })
    }
    vec![
        gn([2, 320, 6, 10], 32, true, true),
        gn([2, 1280, 4, 7], 32, true, false),
        gn([1, 4, 33, 57], 4, false, true),
        gn([1, 4, 33, 57], 2, true, true),
        gn([3, 96, 7, 5], 32, false, false),
        gn([1, 320, 4, 6, 10], 32, true, true),
    ]
}

fn attention_cases() -> Vec<Case> {
    fn attn(b: usize, tq: usize, tk: usize, c: usize, heads: usize, causal: bool) -> Case {
        let name = format!("attention q [{b}, {tq}, {c}] kv [{b}, {tk}, {c}] heads {heads} causal {causal}");
        case("attention", name, "flash_attention", move |run| {
            let q = run.uniform([b, tq, c], -1.0, 1.0);
            let k = run.uniform([b, tk, c], -1.0, 1.0);
            let v = run.uniform([b, tk, c], -1.0, 1.0);
            let kernel = run.kernel(|| attention(q.clone(), k.clone(), v.clone(), heads, causal));
            Outputs::new(kernel, attention_twin(q, k, v, heads, causal))
        })
    }
    vec![
        // Spatial self-attention at the deepest level's 6×10 latents, 5 heads of 64.
        attn(2, 60, 60, 320, 5, false),
        // Cross-attention against the 77 text tokens.
        attn(2, 60, 77, 640, 10, false),
        // Temporal: 16 frames per pixel.
        attn(40, 16, 16, 320, 5, false),
        // CLIP text, causal, 16 heads of 64; CLIP vision's head dim 80 on an odd token count.
        attn(1, 77, 77, 1024, 16, true),
        attn(1, 33, 33, 1280, 16, false),
        // Head dim 5 (scalar loads), causal with Tq < Tk.
        attn(2, 7, 9, 15, 3, true),
    ]
}

fn conv_cases() -> Vec<Case> {
    /// `x` `[N, C_in, H, W]` → `c_out` with a `kernel`×`kernel` weight scaled like a trained
    /// layer's (unit-variance outputs), inputs with a non-zero mean.
    fn conv(
        x_shape: [usize; 4],
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: [(usize, usize); 2],
        residual: bool,
        packed: bool,
    ) -> Case {
        let name = format!(
            "conv2d {x_shape:?} -> {c_out} k{kernel} stride {stride} padding {padding:?} residual {residual}{}",
            if packed { " packed-f16 weight" } else { "" }
        );
        case("conv2d", name, "conv2d_igemm", move |run| {
            let options = ConvOptions::new_with_padding([stride; 2], padding, [1, 1], 1);
            let out = output_shape(x_shape, c_out, [kernel; 2], &options);
            let scale = (3.0 / (x_shape[1] * kernel * kernel) as f32).sqrt();
            let x = run.uniform(x_shape, -0.5, 1.5);
            let w_shape = [c_out, x_shape[1], kernel, kernel];
            let w_values = run.values(w_shape.iter().product(), -scale, scale);
            let bias = run.uniform([c_out], -1.0, 1.0);
            let r = residual.then(|| run.uniform(out, -1.0, 1.0));
            let (prepared, twin_weight) = if packed {
                let rounded = w_values.iter().map(|&v| round_to_f16(v)).collect();
                (prepare_weight_packed(run.tensor(w_values, w_shape)), run.tensor(rounded, w_shape))
            } else {
                let w = run.tensor(w_values, w_shape);
                (prepare_weight(w.clone()), w)
            };
            let kernel = run.kernel(|| conv2d(x.clone(), &prepared, Some(bias.clone()), &options, r.clone()));
            Outputs::new(kernel, conv2d_twin(x, twin_weight, Some(bias), &options, r))
        })
    }
    fn upsample(x_shape: [usize; 4], size: [usize; 2], c_out: usize) -> Case {
        let name = format!("upsample_conv2d {x_shape:?} -> {size:?} -> {c_out} k3 residual true");
        case("conv2d", name, "conv2d_igemm", move |run| {
            let options = ConvOptions::new_with_padding([1, 1], [(1, 1), (1, 1)], [1, 1], 1);
            let x = run.uniform(x_shape, -0.5, 1.5);
            let w = run.uniform([c_out, x_shape[1], 3, 3], -0.1, 0.1);
            let bias = run.uniform([c_out], -1.0, 1.0);
            let r = run.uniform([x_shape[0], c_out, size[0], size[1]], -1.0, 1.0);
            let prepared = prepare_weight(w.clone());
            let kernel = run
                .kernel(|| upsample_conv2d(x.clone(), size, &prepared, Some(bias.clone()), &options, Some(r.clone())));
            Outputs::new(kernel, upsample_conv2d_twin(x, size, w, Some(bias), &options, Some(r)))
        })
    }
    /// The TemporalConvLayer's Conv3d((3, 1, 1)) with its residual as the strided `swap_dims` view.
    fn temporal(shape: [usize; 5]) -> Case {
        let name = format!("temporal_conv {shape:?} residual strided");
        case("conv2d", name, "conv2d_igemm", move |run| {
            let [b, c, f, h, w] = shape;
            let x = run.uniform(shape, -0.5, 1.5);
            let scale = (1.0 / (3 * c) as f32).sqrt();
            let weight = run.uniform([c, c, 3, 1], -scale, scale);
            let bias = run.uniform([c], -1.0, 1.0);
            let r = run.uniform([b, f, c, h, w], -1.0, 1.0).swap_dims(1, 2);
            let prepared = prepare_weight(weight.clone());
            let kernel = run.kernel(|| temporal_conv(x.clone(), &prepared, Some(bias.clone()), Some(r.clone())));
            Outputs::new(kernel, temporal_conv_twin(x, &temporal_taps(weight), Some(bias), Some(r)))
        })
    }
    const P1: [(usize, usize); 2] = [(1, 1), (1, 1)];
    const P0: [(usize, usize); 2] = [(0, 0), (0, 0)];
    vec![
        // The deepest resnet conv's shape class (6×10 is no multiple of the 64-pixel tile).
        conv([2, 320, 6, 10], 320, 3, 1, P1, false, false),
        // `conv_in`: 4 channels (K = 36) on an odd 33×57 image.
        conv([1, 4, 33, 57], 320, 3, 1, P1, false, false),
        // Downsample2D (stride 2); the VAE's asymmetric (0, 1, 0, 1) pad on an odd size.
        conv([1, 320, 12, 20], 320, 3, 2, P1, false, false),
        conv([1, 128, 15, 21], 128, 3, 2, [(0, 1), (0, 1)], false, false),
        // The 1×1 shortcut 640 → 1280; the deepest level's 1280 channels with the residual.
        conv([1, 640, 7, 12], 1280, 1, 1, P0, false, false),
        conv([1, 1280, 4, 7], 320, 3, 1, P1, true, false),
        // Odd channels on both sides (C_out 17) on 5×7.
        conv([3, 33, 5, 7], 17, 3, 1, P1, true, false),
        // Packed-f16 weight (the twin gets the same f16 values as f32).
        conv([2, 320, 6, 10], 320, 3, 1, P1, true, true),
        upsample([2, 96, 5, 7], [10, 14], 64),
        upsample([1, 64, 17, 29], [33, 57], 64),
        temporal([1, 320, 5, 6, 10]),
    ]
}

fn layer_norm_cases() -> Vec<Case> {
    fn ln<const D: usize>(shape: [usize; D]) -> Case {
        case("layer_norm", format!("layer_norm {shape:?}"), "layer_norm_rows", move |run| {
            let channels = shape[D - 1];
            let x = run.uniform(shape, -0.5, 3.5);
            let w = run.uniform([channels], 0.5, 1.5);
            let b = run.uniform([channels], -1.0, 1.0);
            let kernel = run.kernel(|| layer_norm(x.clone(), w.clone(), b.clone(), 1e-5));
            Outputs::new(kernel, layer_norm_twin(x, w, b, 1e-5))
        })
    }
    vec![ln([120, 320]), ln([2, 112, 1280]), ln([1, 77, 1024]), ln([7, 33, 57]), ln([3, 5])]
}

fn bias_act_cases() -> Vec<Case> {
    fn ba<const D: usize>(shape: [usize; D], act: Act, with_bias: bool, residual: bool) -> Case {
        let name = format!("bias_act {shape:?} {act:?} bias {with_bias} residual {residual}");
        case("bias_act", name, "bias_act_kernel", move |run| {
            let channels = shape[D - 1];
            // Pre-activations on [-6, 6): both tails of every activation.
            let x = run.uniform(shape, -6.0, 6.0);
            let b = with_bias.then(|| run.uniform([channels], -1.0, 1.0));
            let r = residual.then(|| run.uniform(shape, -2.0, 2.0));
            let kernel = run.kernel(|| bias_act(x.clone(), b.clone(), act, r.clone()));
            Outputs::new(kernel, bias_act_twin(x, b, act, r))
        })
    }
    vec![
        ba([120, 320], Act::Identity, true, true),
        ba([120, 320], Act::Silu, true, true),
        ba([2, 60, 1280], Act::Gelu, true, false),
        ba([1, 77, 1024], Act::QuickGelu, true, false),
        ba([7, 33, 57], Act::Gelu, true, true),
        ba([7, 33, 57], Act::Silu, false, false),
        ba([5, 1], Act::QuickGelu, true, true),
    ]
}

fn geglu_cases() -> Vec<Case> {
    fn gg<const D: usize>(shape: [usize; D], with_bias: bool) -> Case {
        case("geglu", format!("geglu {shape:?} bias {with_bias}"), "geglu_kernel", move |run| {
            let h = run.uniform(shape, -6.0, 6.0);
            let b = with_bias.then(|| run.uniform([shape[D - 1]], -1.0, 1.0));
            let kernel = run.kernel(|| geglu(h.clone(), b.clone()));
            Outputs::new(kernel, geglu_twin(h, b))
        })
    }
    vec![gg([2, 60, 2 * 1280], true), gg([40, 2 * 5120], false), gg([7, 33, 2 * 5], true), gg([3, 2 * 57], true)]
}

fn packed_cases() -> Vec<Case> {
    /// Pack then unpack on the device against the host's f16 rounding: values over 40 binades
    /// (f16 subnormals, ties, overflow to ∞ excluded: ∞ − ∞ has no error to measure).
    fn round_trip(rows: usize, cols: usize) -> Case {
        let name = format!("pack_f16 + unpack_f16 [{rows}, {cols}]");
        case("packed_f16", name, "pack_f16", move |run| {
            let mantissas = run.values(rows * cols, -1.0, 1.0);
            let values: Vec<f32> =
                mantissas.iter().enumerate().map(|(i, m)| m * 2f32.powi((i % 40) as i32 - 26)).collect();
            let rounded = values.iter().map(|&v| round_to_f16(v)).collect();
            let x = run.tensor(values, [rows, cols]);
            let kernel = run.kernel(|| PackedF16::pack(x).unpack());
            Outputs::new(kernel, run.tensor(rounded, [rows, cols]))
        })
    }
    fn gemm(m: usize, k: usize, n: usize) -> Case {
        case("matmul_packed", format!("matmul_packed [{m}, {k}] x [{k}, {n}]"), "matmul_packed_f16", move |run| {
            let x = run.uniform([m, k], -1.0, 1.0);
            let scale = (3.0 / k as f32).sqrt();
            let w = PackedF16::pack(run.uniform([k, n], -scale, scale));
            let kernel = run.kernel(|| matmul_packed(x.clone(), &w));
            Outputs::new(kernel, matmul_packed_twin(x, &w))
        })
    }
    vec![
        round_trip(100, 37),
        gemm(60, 320, 320),
        gemm(77, 1024, 320),
        gemm(1, 320, 1280),
        gemm(7, 77, 65),
        gemm(65, 17, 129),
    ]
}
