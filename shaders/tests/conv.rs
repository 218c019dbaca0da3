//! The implicit-GEMM convolution against its burn-op twin on native wgpu (Mesa llvmpipe on the
//! CI machine), on random inputs at the UNet's and VAE's shapes and odd ones, and the number of
//! launches.
//!
//! Tolerance: max |kernel − twin| / max |twin| ≤ 1e-5 over the whole output, in f32. Both sum
//! the same K = C_in·kh·kw products in a different order (the kernel along (c_in, ky, kx) in
//! steps of 16, burn's direct conv along (ky, kx, c_in) in vec4 lanes), so they differ by a few
//! ulps of the largest partial sums.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};
use i2vgen_shaders::conv::{
    conv2d, conv2d_twin, prepare_weight, prepare_weight_packed, temporal_conv, temporal_conv_twin, temporal_taps,
    upsample_conv2d, upsample_conv2d_twin,
};

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

fn options(stride: usize, padding: [(usize, usize); 2]) -> ConvOptions<2> {
    ConvOptions::new_with_padding([stride; 2], padding, [1, 1], 1)
}

/// One convolution's random operands, on the CPU until placed on a device.
struct Case {
    x: TensorData,
    x_shape: [usize; 4],
    weight: TensorData,
    weight_shape: [usize; 4],
    bias: TensorData,
    residual: TensorData,
    options: ConvOptions<2>,
}

impl Case {
    fn new(x_shape: [usize; 4], c_out: usize, kernel: usize, stride: usize, padding: [(usize, usize); 2]) -> Self {
        let weight_shape = [c_out, x_shape[1], kernel, kernel];
        let options = options(stride, padding);
        let out = i2vgen_shaders::conv::output_shape(x_shape, c_out, [kernel; 2], &options);
        // Weights scaled like a trained layer's (unit-variance outputs); inputs with a non-zero mean.
        let scale = (3.0 / (x_shape[1] * kernel * kernel) as f64).sqrt();
        Self {
            x: random(&x_shape, -0.5, 1.5),
            x_shape,
            weight: random(&weight_shape, -scale, scale),
            weight_shape,
            bias: random(&[c_out], -1.0, 1.0),
            residual: random(&out, -1.0, 1.0),
            options,
        }
    }

    fn out_shape(&self) -> [usize; 4] {
        i2vgen_shaders::conv::output_shape(self.x_shape, self.weight_shape[0], [self.weight_shape[2]; 2], &self.options)
    }

    /// Kernel (on `device`) and twin (on wgpu) outputs.
    fn run(&self, device: &Device, bias: bool, residual: bool) -> (Vec<f32>, Vec<f32>) {
        let twin_device = wgpu();
        let operands = |device: &Device| {
            (
                tensor(&self.x, self.x_shape, device),
                tensor(&self.weight, self.weight_shape, device),
                bias.then(|| tensor(&self.bias, [self.weight_shape[0]], device)),
                residual.then(|| tensor(&self.residual, self.out_shape(), device)),
            )
        };
        let (x, w, b, r) = operands(device);
        let got = values(conv2d(x, &prepare_weight(w), b, &self.options, r));
        let (x, w, b, r) = operands(&twin_device);
        let want = values(conv2d_twin(x, w, b, &self.options, r));
        (got, want)
    }

    fn check(&self, bias: bool, residual: bool) {
        let (got, want) = self.run(&wgpu(), bias, residual);
        let err = relative_error(&got, &want);
        println!(
            "{:?} -> {:?} k{} {:?} bias {bias} residual {residual}: relative {err:.2e}",
            self.x_shape,
            self.out_shape(),
            self.weight_shape[2],
            self.options.padding
        );
        assert!(err <= TOLERANCE, "{:?}: relative error {err:e}", self.x_shape);
    }
}

const P1: [(usize, usize); 2] = [(1, 1), (1, 1)];
const P0: [(usize, usize); 2] = [(0, 0), (0, 0)];

/// The deepest resnet conv at 16×256×448 latents with frames folded into the batch, scaled to
/// two images: 6×10 (the 4×7 level's shape class, H·W not a multiple of the 64-pixel tile).
#[test]
fn resnet_3x3() {
    Case::new([2, 320, 6, 10], 320, 3, 1, P1).check(true, false);
}

/// `conv_in`-like: 4 input channels (K = 36, not a multiple of 16) on an odd 33×57 image.
#[test]
fn four_channels_odd_image() {
    Case::new([1, 4, 33, 57], 320, 3, 1, P1).check(true, false);
}

/// The UNet's Downsample2D: stride 2, symmetric padding 1.
#[test]
fn downsampler_stride_2() {
    Case::new([2, 320, 12, 20], 320, 3, 2, P1).check(true, false);
}

/// The VAE's Downsample2D: diffusers' (0, 1, 0, 1) zero pad folded into the stride-2 conv, on an
/// odd size; and the band-wise decoder conv's rows-only padding.
#[test]
fn asymmetric_padding() {
    Case::new([1, 128, 15, 21], 128, 3, 2, [(0, 1), (0, 1)]).check(true, false);
    Case::new([1, 64, 9, 14], 64, 3, 1, [(0, 0), (1, 1)]).check(true, false);
}

/// ResnetBlock2D's 1×1 `conv_shortcut` when the channel count changes.
#[test]
fn shortcut_1x1() {
    Case::new([2, 640, 7, 12], 1280, 1, 1, P0).check(true, false);
}

/// Odd channel counts on both sides (C_out 17: one padded channel tile) on a 5×7 image.
#[test]
fn odd_channels() {
    Case::new([3, 33, 5, 7], 17, 3, 1, P1).check(true, false);
}

/// The deepest level, 1280 channels on 4×7, with bias + residual in the epilogue, and without
/// the bias.
#[test]
fn deepest_level_epilogue() {
    let case = Case::new([1, 1280, 4, 7], 1280, 3, 1, P1);
    case.check(true, true);
    case.check(false, true);
    case.check(false, false);
}

/// A strided input (what burn's conv returns: `[N, C, H, W]` over `[N, H, W, C]` memory) and a
/// strided residual are read in logical order (each copied once first).
#[test]
fn strided_operands() {
    let device = wgpu();
    let [n, c, h, w] = [2, 96, 9, 11];
    let x = random(&[n, h, w, c], -0.5, 1.5);
    let weight = random(&[64, c, 3, 3], -0.1, 0.1);
    let bias = random(&[64], -1.0, 1.0);
    let residual = random(&[n, h, w, 64], -1.0, 1.0);
    let options = options(1, P1);
    let operands = || {
        (
            tensor(&x, [n, h, w, c], &device).permute([0, 3, 1, 2]),
            tensor(&weight, [64, c, 3, 3], &device),
            Some(tensor(&bias, [64], &device)),
            Some(tensor(&residual, [n, h, w, 64], &device).permute([0, 3, 1, 2])),
        )
    };
    let (xs, ws, b, r) = operands();
    let got = values(conv2d(xs, &prepare_weight(ws), b, &options, r));
    let (xs, ws, b, r) = operands();
    let want = values(conv2d_twin(xs, ws, b, &options, r));
    let err = relative_error(&got, &want);
    println!("strided x and residual: relative {err:.2e}");
    assert!(err <= TOLERANCE, "relative error {err:e}");
}

/// Upsample2D: nearest ×2 (and to an explicit odd size, as for an odd skip connection) read
/// through the gather, against burn's `interpolate` then `conv2d`; with bias and residual.
#[test]
fn nearest_upsample_fused() {
    let device = wgpu();
    let options = options(1, P1);
    for ([n, c, h, w], size) in [([2, 96, 5, 7], [10, 14]), ([1, 64, 17, 29], [33, 57])] {
        let x = random(&[n, c, h, w], -0.5, 1.5);
        let weight = random(&[64, c, 3, 3], -0.1, 0.1);
        let bias = random(&[64], -1.0, 1.0);
        let residual = random(&[n, 64, size[0], size[1]], -1.0, 1.0);
        let operands = || {
            (
                tensor(&x, [n, c, h, w], &device),
                tensor(&weight, [64, c, 3, 3], &device),
                Some(tensor(&bias, [64], &device)),
                Some(tensor(&residual, [n, 64, size[0], size[1]], &device)),
            )
        };
        let (xs, ws, b, r) = operands();
        let got = values(upsample_conv2d(xs, size, &prepare_weight(ws), b, &options, r));
        let (xs, ws, b, r) = operands();
        let want = values(upsample_conv2d_twin(xs, size, ws, b, &options, r));
        let err = relative_error(&got, &want);
        println!("upsample [{n}, {c}, {h}, {w}] -> {size:?}: relative {err:.2e}");
        assert!(err <= TOLERANCE, "{size:?}: relative error {err:e}");
    }
}

/// `conv2d` on the CPU backend (the twin route, reading the packed weight as a strided view)
/// agrees with the kernel on wgpu.
#[test]
fn cpu_route_matches_wgpu_kernel() {
    let case = Case::new([2, 24, 7, 9], 40, 3, 1, P1);
    let (on_cpu, _) = case.run(&cpu(), true, true);
    let (on_wgpu, _) = case.run(&wgpu(), true, true);
    let err = relative_error(&on_wgpu, &on_cpu);
    println!("cpu route vs wgpu kernel: relative {err:.2e}");
    assert!(err <= TOLERANCE, "relative error {err:e}");
}

/// The TemporalConvLayer's Conv3d((3, 1, 1)) as one GEMM with K = 3·C_in, with the layer's
/// residual (the strided `swap_dims` identity) in the epilogue, against the crate's three tap
/// matmuls; and without bias and residual.
#[test]
fn temporal_conv_three_taps() {
    let device = wgpu();
    let [b, c, f, h, w] = [1, 320, 5, 6, 10];
    let x = random(&[b, c, f, h, w], -0.5, 1.5);
    let scale = (1.0 / (3 * c) as f64).sqrt();
    let weight = random(&[c, c, 3, 1], -scale, scale);
    let bias = random(&[c], -1.0, 1.0);
    let identity = random(&[b, f, c, h, w], -1.0, 1.0);
    for epilogue in [true, false] {
        let x = || tensor(&x, [b, c, f, h, w], &device);
        let wt = || tensor(&weight, [c, c, 3, 1], &device);
        let bias = || epilogue.then(|| tensor(&bias, [c], &device));
        let residual = || epilogue.then(|| tensor(&identity, [b, f, c, h, w], &device).swap_dims(1, 2));
        let got = values(temporal_conv(x(), &prepare_weight(wt()), bias(), residual()));
        let want = values(temporal_conv_twin(x(), &temporal_taps(wt()), bias(), residual()));
        let err = relative_error(&got, &want);
        println!("temporal [{b}, {c}, {f}, {h}, {w}] bias+residual {epilogue}: relative {err:.2e}");
        assert!(err <= TOLERANCE, "relative error {err:e}");
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
    // Kernel names without their generic parameters (cubek's matmul spells out a page of them).
    let names = launches.names.lock().unwrap_or_else(PoisonError::into_inner);
    names.iter().map(|name| name.split('<').next().unwrap_or(name)).collect()
}

/// One launch for conv + bias + residual (two with a strided input: its copy), against the
/// twin's conv with its layout copies and the add; the temporal conv in one launch against
/// the three tap matmuls, the padding cat and the adds.
#[test]
fn one_launch_per_conv() {
    let device = wgpu();
    let [n, c, h, w] = [2, 320, 8, 14];
    let x = tensor(&random(&[n, c, h, w], -0.5, 1.5), [n, c, h, w], &device);
    let weight = tensor(&random(&[c, c, 3, 3], -0.05, 0.05), [c, c, 3, 3], &device);
    let packed = prepare_weight(weight.clone());
    let ones = Tensor::<1>::ones([c], &device);
    let bias = || Some(ones.clone());
    let residual = || Some(x.clone());
    let options = options(1, P1);

    let twin = launches(|| conv2d_twin(x.clone(), weight.clone(), bias(), &options, residual()));
    let fused = launches(|| conv2d(x.clone(), &packed, bias(), &options, residual()));
    let nhwc = x.clone().permute([0, 2, 3, 1]).reshape([n * h * w * c]).reshape([n, h, w, c]).permute([0, 3, 1, 2]);
    let strided = launches(|| conv2d(nhwc.clone(), &packed, bias(), &options, residual()));
    println!("conv2d twin: {} launches {twin:?}", twin.len());
    println!("conv2d kernel: {} launches {fused:?}", fused.len());
    println!("conv2d kernel, NHWC input: {} launches {strided:?}", strided.len());
    assert_eq!(fused.len(), 1, "{fused:?}");
    assert_eq!(strided.len(), 2, "{strided:?}");
    assert!(twin.len() >= 2, "the twin's count is the baseline the README quotes: {twin:?}");

    let size = [2 * h, 2 * w];
    let twin = launches(|| upsample_conv2d_twin(x.clone(), size, weight.clone(), bias(), &options, None));
    let fused = launches(|| upsample_conv2d(x.clone(), size, &packed, bias(), &options, None));
    println!("upsample + conv2d twin: {} launches {twin:?}", twin.len());
    println!("upsample + conv2d kernel: {} launches {fused:?}", fused.len());
    assert_eq!(fused.len(), 1, "{fused:?}");

    let x5 = tensor(&random(&[1, c, 4, h, w], -0.5, 1.5), [1, c, 4, h, w], &device);
    let w3 = tensor(&random(&[c, c, 3, 1], -0.05, 0.05), [c, c, 3, 1], &device);
    let packed3 = prepare_weight(w3.clone());
    let taps = temporal_taps(w3);
    let twin = launches(|| temporal_conv_twin(x5.clone(), &taps, bias(), Some(x5.clone())));
    let fused = launches(|| temporal_conv(x5.clone(), &packed3, bias(), Some(x5.clone())));
    println!("temporal twin: {} launches {twin:?}", twin.len());
    println!("temporal kernel: {} launches {fused:?}", fused.len());
    assert_eq!(fused.len(), 1, "{fused:?}");
}

// Packed-f16 weights (`prepare_weight_packed`): the kernel reads two u32 words per four output
// channels and widens them; the twin is burn's conv with the same f16 values unpacked to f32.

impl Case {
    /// Kernel with the packed weight (on `device`) and twin with its f16 values (on wgpu).
    fn run_packed(&self, device: &Device, bias: bool, residual: bool) -> (Vec<f32>, Vec<f32>) {
        let operands = |device: &Device| {
            (
                tensor(&self.x, self.x_shape, device),
                bias.then(|| tensor(&self.bias, [self.weight_shape[0]], device)),
                residual.then(|| tensor(&self.residual, self.out_shape(), device)),
            )
        };
        let packed = prepare_weight_packed(tensor(&self.weight, self.weight_shape, device));
        let (x, b, r) = operands(device);
        let got = values(conv2d(x, &packed, b, &self.options, r));
        let (x, b, r) = operands(&wgpu());
        let w16 = f16_rounded(&self.weight, self.weight_shape, &wgpu());
        let want = values(conv2d_twin(x, w16, b, &self.options, r));
        (got, want)
    }

    fn check_packed(&self, bias: bool, residual: bool) {
        let (got, want) = self.run_packed(&wgpu(), bias, residual);
        let err = relative_error(&got, &want);
        println!(
            "packed f16 {:?} -> {:?} k{}: relative {err:.2e}",
            self.x_shape,
            self.out_shape(),
            self.weight_shape[2]
        );
        assert!(err <= TOLERANCE, "{:?}: relative error {err:e}", self.x_shape);
    }
}

/// The weight rounded to f16 on the host (`half::f16::from_f32`), as f32.
fn f16_rounded(data: &TensorData, shape: [usize; 4], device: &Device) -> Tensor<4> {
    let v: Vec<f32> = data.clone().convert::<f32>().try_into_vec::<f32>().unwrap();
    let v: Vec<f32> = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    Tensor::<1>::from_data(TensorData::new(v, [shape.iter().product::<usize>()]), device).reshape(shape)
}

#[test]
fn packed_weight_unpacks_to_the_f16_values() {
    let case = Case::new([1, 33, 5, 7], 17, 3, 1, P1);
    for device in [wgpu(), cpu()] {
        let packed = prepare_weight_packed(tensor(&case.weight, case.weight_shape, &device));
        assert!(packed.packed().is_none() && packed.packed_f16().is_some());
        assert_eq!(packed.dims(), case.weight_shape);
        let got = values(packed.weight());
        let want = values(f16_rounded(&case.weight, case.weight_shape, &device));
        assert_eq!(got, want);
        // Half the f32 bytes (C_out padded to 64 either way).
        assert_eq!(packed.packed_f16().unwrap().bytes(), 33 * 9 * 64 * 2);
    }
}

#[test]
fn packed_resnet_3x3_and_shortcut() {
    Case::new([2, 320, 6, 10], 320, 3, 1, P1).check_packed(true, false);
    Case::new([2, 640, 7, 12], 1280, 1, 1, P0).check_packed(true, false);
}

#[test]
fn packed_odd_shapes_and_epilogue() {
    Case::new([1, 4, 33, 57], 320, 3, 1, P1).check_packed(true, false);
    Case::new([3, 33, 5, 7], 17, 3, 1, P1).check_packed(true, true);
    Case::new([2, 320, 12, 20], 320, 3, 2, P1).check_packed(false, true);
    Case::new([1, 128, 15, 21], 128, 3, 2, [(0, 1), (0, 1)]).check_packed(false, false);
}

#[test]
fn packed_cpu_route_matches_wgpu_kernel() {
    let case = Case::new([2, 24, 7, 9], 40, 3, 1, P1);
    let (on_cpu, _) = case.run_packed(&cpu(), true, true);
    let (on_wgpu, _) = case.run_packed(&wgpu(), true, true);
    let err = relative_error(&on_wgpu, &on_cpu);
    println!("packed: cpu route vs wgpu kernel: relative {err:.2e}");
    assert!(err <= TOLERANCE, "relative error {err:e}");
}

/// Upsample + conv and the temporal conv with packed weights.
#[test]
fn packed_upsample_and_temporal() {
    let device = wgpu();
    let options = options(1, P1);
    let ([n, c, h, w], size) = ([2, 96, 5, 7], [10, 14]);
    let x = random(&[n, c, h, w], -0.5, 1.5);
    let weight = random(&[64, c, 3, 3], -0.1, 0.1);
    let bias = random(&[64], -1.0, 1.0);
    let xs = || tensor(&x, [n, c, h, w], &device);
    let b = || Some(tensor(&bias, [64], &device));
    let packed = prepare_weight_packed(tensor(&weight, [64, c, 3, 3], &device));
    let got = values(upsample_conv2d(xs(), size, &packed, b(), &options, None));
    let want =
        values(upsample_conv2d_twin(xs(), size, f16_rounded(&weight, [64, c, 3, 3], &device), b(), &options, None));
    let err = relative_error(&got, &want);
    println!("packed upsample: relative {err:.2e}");
    assert!(err <= TOLERANCE, "upsample: relative error {err:e}");

    let [b, c, f, h, w] = [1, 320, 5, 6, 10];
    let x = random(&[b, c, f, h, w], -0.5, 1.5);
    let scale = (1.0 / (3 * c) as f64).sqrt();
    let weight = random(&[c, c, 3, 1], -scale, scale);
    let identity = random(&[b, f, c, h, w], -1.0, 1.0);
    let xs = || tensor(&x, [b, c, f, h, w], &device);
    let residual = || Some(tensor(&identity, [b, f, c, h, w], &device).swap_dims(1, 2));
    let packed = prepare_weight_packed(tensor(&weight, [c, c, 3, 1], &device));
    let got = values(temporal_conv(xs(), &packed, None, residual()));
    let taps = temporal_taps(f16_rounded(&weight, [c, c, 3, 1], &device));
    let want = values(temporal_conv_twin(xs(), &taps, None, residual()));
    let err = relative_error(&got, &want);
    println!("packed temporal: relative {err:.2e}");
    assert!(err <= TOLERANCE, "temporal: relative error {err:e}");
}

/// Still one launch per conv with a packed weight.
#[test]
fn packed_one_launch() {
    let device = wgpu();
    let case = Case::new([1, 64, 8, 8], 64, 3, 1, P1);
    let packed = prepare_weight_packed(tensor(&case.weight, case.weight_shape, &device));
    let x = tensor(&case.x, case.x_shape, &device);
    let names = launches(|| conv2d(x, &packed, None, &case.options, None));
    assert_eq!(names.len(), 1, "{names:?}");
}

// f16 activations (f16 storage, f32 sums): every operand rounded to f16, the kernel on f16
// tensors (a dense weight prepared from the f16 weight stays f16), the reference the twin in f32
// on the same f16-representable values. The kernel's output is rounded to f16 once (at most
// 2⁻¹¹ of the largest output), which the tolerance covers.

const F16_TOLERANCE: f32 = 2e-3;

/// `data` rounded to f16 (`half::f16::from_f32`), as f32 data.
fn f16_data(data: &TensorData) -> TensorData {
    let v: Vec<f32> = data.clone().convert::<f32>().try_into_vec::<f32>().unwrap();
    let v: Vec<f32> = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    TensorData::new(v, [data.num_elements()])
}

fn to_f16<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.cast(DType::F16)
}

/// The f16 kernel's output (checked to be f16 of `shape`) widened to f32.
fn f16_values<const D: usize>(t: Tensor<D>, shape: [usize; D]) -> Vec<f32> {
    assert_eq!(t.dtype(), DType::F16, "the f16 path returns f16");
    assert_eq!(t.dims(), shape);
    values(t)
}

fn check_f16_error(label: &str, got: &[f32], want: &[f32]) -> f32 {
    let err = relative_error(got, want);
    println!("f16 {label}: relative {err:.2e}");
    assert!(err <= F16_TOLERANCE, "f16 {label}: relative error {err:e}");
    err
}

impl Case {
    /// The f16 kernel (dense f16 weight, or the packed weight with `packed`) against the f32
    /// twin on the same f16 values, on wgpu.
    fn check_f16(&self, bias: bool, residual: bool, packed: bool) -> f32 {
        let device = wgpu();
        let operands = || {
            (
                tensor(&f16_data(&self.x), self.x_shape, &device),
                tensor(&f16_data(&self.weight), self.weight_shape, &device),
                bias.then(|| tensor(&f16_data(&self.bias), [self.weight_shape[0]], &device)),
                residual.then(|| tensor(&f16_data(&self.residual), self.out_shape(), &device)),
            )
        };
        let (x, w, b, r) = operands();
        let want = values(conv2d_twin(x, w, b, &self.options, r));
        let (x, w, b, r) = operands();
        let weight = if packed {
            prepare_weight_packed(w)
        } else {
            let weight = prepare_weight(to_f16(w));
            assert_eq!(weight.packed().unwrap().dtype(), DType::F16, "an f16 weight is prepared in f16");
            weight
        };
        let got = conv2d(to_f16(x), &weight, b.map(to_f16), &self.options, r.map(to_f16));
        let got = f16_values(got, self.out_shape());
        let label = format!(
            "{:?} -> {:?} k{} stride {} {:?} bias {bias} residual {residual} packed {packed}",
            self.x_shape,
            self.out_shape(),
            self.weight_shape[2],
            self.options.stride[0],
            self.options.padding
        );
        check_f16_error(&label, &got, &want)
    }
}

/// The f32 tests' shapes in f16: resnet 3×3 (6×10), `conv_in` (4 channels on 33×57), both
/// downsamplers, the band padding, the 1×1 shortcut, odd channels, the deepest level's epilogue.
#[test]
fn f16_at_the_f32_shapes() {
    Case::new([2, 320, 6, 10], 320, 3, 1, P1).check_f16(true, false, false);
    Case::new([1, 4, 33, 57], 320, 3, 1, P1).check_f16(true, false, false);
    Case::new([2, 320, 12, 20], 320, 3, 2, P1).check_f16(true, false, false);
    Case::new([1, 128, 15, 21], 128, 3, 2, [(0, 1), (0, 1)]).check_f16(true, false, false);
    Case::new([1, 64, 9, 14], 64, 3, 1, [(0, 0), (1, 1)]).check_f16(true, false, false);
    Case::new([2, 640, 7, 12], 1280, 1, 1, P0).check_f16(true, false, false);
    Case::new([3, 33, 5, 7], 17, 3, 1, P1).check_f16(true, false, false);
    let deepest = Case::new([1, 1280, 4, 7], 1280, 3, 1, P1);
    deepest.check_f16(true, true, false);
    deepest.check_f16(false, true, false);
    deepest.check_f16(false, false, false);
}

/// The packed-f16 weight with f16 activations.
#[test]
fn f16_with_packed_weight() {
    Case::new([2, 320, 6, 10], 320, 3, 1, P1).check_f16(true, false, true);
    Case::new([1, 4, 33, 57], 320, 3, 1, P1).check_f16(true, false, true);
    Case::new([3, 33, 5, 7], 17, 3, 1, P1).check_f16(true, true, true);
    Case::new([1, 128, 15, 21], 128, 3, 2, [(0, 1), (0, 1)]).check_f16(false, false, true);
}

/// Strided f16 input and residual, the fused nearest upsample (×2 and to 33×57), and the
/// temporal conv with its strided residual, in f16.
#[test]
fn f16_strided_upsample_and_temporal() {
    let device = wgpu();
    let options = options(1, P1);
    let placed = |data: &TensorData, shape: [usize; 4]| tensor(&f16_data(data), shape, &device);

    let [n, c, h, w] = [2, 96, 9, 11];
    let (x, weight) = (random(&[n, h, w, c], -0.5, 1.5), random(&[64, c, 3, 3], -0.1, 0.1));
    let (bias, residual) = (random(&[64], -1.0, 1.0), random(&[n, h, w, 64], -1.0, 1.0));
    let b = || Some(tensor(&f16_data(&bias), [64], &device));
    let xs = || placed(&x, [n, h, w, c]).permute([0, 3, 1, 2]);
    let rs = || Some(placed(&residual, [n, h, w, 64]).permute([0, 3, 1, 2]));
    let want = values(conv2d_twin(xs(), placed(&weight, [64, c, 3, 3]), b(), &options, rs()));
    let packed = prepare_weight(to_f16(placed(&weight, [64, c, 3, 3])));
    let got = conv2d(to_f16(xs()), &packed, b().map(to_f16), &options, rs().map(to_f16));
    check_f16_error("strided x and residual", &f16_values(got, [n, 64, h, w]), &want);

    for ([n, c, h, w], size) in [([2, 96, 5, 7], [10, 14]), ([1, 64, 17, 29], [33, 57])] {
        let (x, weight) = (random(&[n, c, h, w], -0.5, 1.5), random(&[64, c, 3, 3], -0.1, 0.1));
        let residual = random(&[n, 64, size[0], size[1]], -1.0, 1.0);
        let xs = || placed(&x, [n, c, h, w]);
        let rs = || Some(placed(&residual, [n, 64, size[0], size[1]]));
        let want = values(upsample_conv2d_twin(xs(), size, placed(&weight, [64, c, 3, 3]), b(), &options, rs()));
        let packed = prepare_weight(to_f16(placed(&weight, [64, c, 3, 3])));
        let got = upsample_conv2d(to_f16(xs()), size, &packed, b().map(to_f16), &options, rs().map(to_f16));
        let got = f16_values(got, [n, 64, size[0], size[1]]);
        check_f16_error(&format!("upsample [{n}, {c}, {h}, {w}] -> {size:?}"), &got, &want);
    }

    let [b, c, f, h, w] = [1, 320, 5, 6, 10];
    let x = random(&[b, c, f, h, w], -0.5, 1.5);
    let scale = (1.0 / (3 * c) as f64).sqrt();
    let weight = random(&[c, c, 3, 1], -scale, scale);
    let bias = random(&[c], -1.0, 1.0);
    let identity = random(&[b, f, c, h, w], -1.0, 1.0);
    for epilogue in [true, false] {
        let x = || tensor(&f16_data(&x), [b, c, f, h, w], &device);
        let wt = || placed(&weight, [c, c, 3, 1]);
        let bias = || epilogue.then(|| tensor(&f16_data(&bias), [c], &device));
        let residual = || epilogue.then(|| tensor(&f16_data(&identity), [b, f, c, h, w], &device).swap_dims(1, 2));
        let want = values(temporal_conv_twin(x(), &temporal_taps(wt()), bias(), residual()));
        let packed = prepare_weight(to_f16(wt()));
        let got = temporal_conv(to_f16(x()), &packed, bias().map(to_f16), residual().map(to_f16));
        let got = f16_values(got, [b, c, f, h, w]);
        check_f16_error(&format!("temporal [{b}, {c}, {f}, {h}, {w}] bias+residual {epilogue}"), &got, &want);
    }
}

/// The f16 path runs the kernel, not the twin: one launch per conv (dense or packed weight,
/// upsample, temporal), as in f32.
#[test]
fn f16_one_launch_per_conv() {
    let device = wgpu();
    let [n, c, h, w] = [2, 320, 8, 14];
    let x = to_f16(tensor(&random(&[n, c, h, w], -0.5, 1.5), [n, c, h, w], &device));
    let weight = tensor(&random(&[c, c, 3, 3], -0.05, 0.05), [c, c, 3, 3], &device);
    let dense = prepare_weight(to_f16(weight.clone()));
    let packed = prepare_weight_packed(weight);
    let ones = to_f16(Tensor::<1>::ones([c], &device));
    let bias = || Some(ones.clone());
    let options = options(1, P1);
    for (label, weight) in [("dense f16", &dense), ("packed f16", &packed)] {
        let fused = launches(|| conv2d(x.clone(), weight, bias(), &options, Some(x.clone())));
        println!("f16 conv2d, {label} weight: {} launches {fused:?}", fused.len());
        assert_eq!(fused.len(), 1, "{fused:?}");
    }
    let fused = launches(|| upsample_conv2d(x.clone(), [2 * h, 2 * w], &dense, bias(), &options, None));
    println!("f16 upsample + conv2d: {} launches {fused:?}", fused.len());
    assert_eq!(fused.len(), 1, "{fused:?}");

    let x5 = to_f16(tensor(&random(&[1, c, 4, h, w], -0.5, 1.5), [1, c, 4, h, w], &device));
    let w3 = tensor(&random(&[c, c, 3, 1], -0.05, 0.05), [c, c, 3, 1], &device);
    let dense3 = prepare_weight(to_f16(w3));
    let fused = launches(|| temporal_conv(x5.clone(), &dense3, bias(), Some(x5.clone())));
    println!("f16 temporal conv: {} launches {fused:?}", fused.len());
    assert_eq!(fused.len(), 1, "{fused:?}");
}
