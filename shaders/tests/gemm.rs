//! The packed-f16 weights and their GEMM on native wgpu (Mesa llvmpipe on the CI machine): the
//! packing bit for bit against `half::f16::from_f32` (rounding, subnormals, overflow, NaN) on
//! both backends, and `matmul_packed` against its twin (the same f16 values unpacked to f32, then
//! burn's matmul) at the UNet's Linear shapes and odd ones.
//!
//! Tolerance: max |kernel − twin| / max |twin| ≤ 1e-5 over the whole output, in f32: both sum
//! the same K products of the same f32 operands, in a different order.

use std::sync::OnceLock;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use i2vgen_shaders::gemm::{matmul_packed, matmul_packed_twin};
use i2vgen_shaders::packed::PackedF16;

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
fn random(len: usize, low: f64, high: f64) -> Vec<f32> {
    let t = Tensor::<1>::random([len], Distribution::Uniform(low, high), &cpu());
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn matrix(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::<1>::from_data(TensorData::new(values.to_vec(), [values.len()]), device).reshape(shape)
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// max |a − b| / max |b|.
fn relative_error(got: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(got.len(), reference.len());
    assert!(got.iter().all(|v| v.is_finite()), "non-finite output");
    let diff = got.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    diff / reference.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Every value that exercises the rounding: ties both ways, the subnormal range and its edges,
/// the largest finite, the overflow threshold, infinities, NaN, signed zeros; then random values
/// over many binades.
fn awkward_values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65519.0,
        65520.0,
        -65520.0,
        1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        1e-40, // an f32 subnormal
        2f32.powi(-14),
        2f32.powi(-14) * 0.999,
        2f32.powi(-24),
        2f32.powi(-25),
        2f32.powi(-25) * 1.0001,
        -2f32.powi(-25) * 1.5,
        3.0 * 2f32.powi(-25),
        5.0 * 2f32.powi(-26),
        1.0 + 2f32.powi(-11),       // tie, rounds to even (down)
        1.0 + 3.0 * 2f32.powi(-11), // tie, rounds to even (up)
        1.0 + 2f32.powi(-11) + 2f32.powi(-20),
        2047.5,
        2048.0 + 1.0,
    ];
    // Subnormal ties: k·2⁻²⁴ + 2⁻²⁵.
    v.extend((0..8).map(|k| k as f32 * 2f32.powi(-24) + 2f32.powi(-25)));
    let mantissas = random(2000, -1.0, 1.0);
    v.extend(mantissas.iter().enumerate().map(|(i, m)| m * 2f32.powi((i % 44) as i32 - 30)));
    v
}

fn expected_bits(values: &[f32]) -> Vec<u16> {
    values.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect()
}

fn unpacked_bits(t: Tensor<2>) -> Vec<u16> {
    values(t).iter().map(|&v| half::f16::from_f32(v).to_bits()).collect()
}

/// Packing then unpacking gives `half::f16::from_f32(v)` exactly; NaN stays NaN.
fn check_round_trip(device: &Device) {
    let v = awkward_values();
    let cols = 37; // odd, and padded to 64 in the words
    let rows = v.len() / cols;
    let v = &v[..rows * cols];
    let packed = PackedF16::pack(matrix(v, [rows, cols], device));
    assert_eq!(packed.words().dims(), [rows, 32]);
    let got = values(packed.unpack());
    let expected: Vec<f32> = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan()),
            "value {} ({:e}): got {g:e}, expected {e:e}",
            i,
            v[i]
        );
    }
    assert_eq!(unpacked_bits(packed.unpack()).len(), expected_bits(v).len());
}

#[test]
fn packing_rounds_as_half_on_wgpu() {
    check_round_trip(&wgpu());
}

#[test]
fn packing_rounds_as_half_on_cpu() {
    check_round_trip(&cpu());
}

/// The words themselves: low half = even column, zeros in the padding, same on both backends.
#[test]
fn word_layout() {
    let v = [1.0f32, -2.0, 0.5, 3.0, 65504.0];
    let expected = [
        0x3C00u32 | 0xC000 << 16, // 1.0, -2.0
        0x3800 | 0x4200 << 16,    // 0.5, 3.0
        0x7BFF,                   // 65504, then padding
    ];
    for device in [wgpu(), cpu()] {
        let packed = PackedF16::pack(matrix(&v, [1, 5], &device));
        let words = packed.words().clone().into_data().convert::<u32>().try_into_vec::<u32>().unwrap();
        assert_eq!(words.len(), 32);
        assert_eq!(&words[..3], &expected);
        assert!(words[3..].iter().all(|&w| w == 0));
    }
}

/// `x` `[m, k]` times a packed random `[k, n]` on wgpu against the twin; returns the error.
fn check(m: usize, k: usize, n: usize) -> f32 {
    let device = wgpu();
    let x_values = random(m * k, -1.0, 1.0);
    let x = matrix(&x_values, [m, k], &device);
    let bound = 1.0 / (k as f64).sqrt();
    let w_values = random(k * n, -bound, bound);
    let w = PackedF16::pack(matrix(&w_values, [k, n], &device));
    let got = values(matmul_packed(x.clone(), &w));
    let twin = values(matmul_packed_twin(x, &w));
    let error = relative_error(&got, &twin);
    println!("[{m}, {k}] · [{k}, {n}]: {error:.1e} vs the twin");
    assert!(error <= TOLERANCE, "[{m}, {k}] · [{k}, {n}]: relative error {error:e}");
    // An independent reference where it is cheap on the host: f64 sums of the f16 weights.
    if m * k * n <= 20_000_000 {
        let w16: Vec<f64> = w_values.iter().map(|&v| f64::from(half::f16::from_f32(v).to_f32())).collect();
        let reference: Vec<f32> = (0..m * n)
            .map(|at| {
                let (r, c) = (at / n, at % n);
                (0..k).map(|i| f64::from(x_values[r * k + i]) * w16[i * n + c]).sum::<f64>() as f32
            })
            .collect();
        let exact = relative_error(&got, &reference);
        println!("[{m}, {k}] · [{k}, {n}]: {exact:.1e} vs f64");
        assert!(exact <= TOLERANCE, "[{m}, {k}] · [{k}, {n}]: {exact:e} from the f64 reference");
    }
    error
}

/// Attention projections at 2×32×56 latents' tokens (`to_q`, 320 → 320) and the cross
/// attention's `to_k` over the 77 text tokens (1024 → 320).
#[test]
fn attention_projections() {
    check(2 * 112, 320, 320);
    check(77, 1024, 320);
}

/// The feed-forward of the deepest level: GEGLU `proj` 1280 → 10240 and `ff.net.2` 5120 → 1280.
#[test]
fn feed_forward() {
    check(56, 1280, 10240);
    check(56, 5120, 1280);
}

/// The time embedding (`linear_1` 320 → 1280, one row per sample) and the ResNet `time_emb_proj`.
#[test]
fn single_rows() {
    check(1, 320, 1280);
    check(2, 1280, 640);
}

#[test]
fn odd_shapes() {
    for &(m, k, n) in
        &[(1, 1, 1), (7, 7, 7), (77, 77, 77), (1, 7, 77), (77, 1, 7), (7, 77, 1), (65, 17, 65), (130, 33, 129)]
    {
        check(m, k, n);
    }
}

/// A transposed (strided) `x` is copied once and gives the same result.
#[test]
fn strided_input() {
    let device = wgpu();
    let (m, k, n) = (70, 96, 130);
    let xt = matrix(&random(m * k, -1.0, 1.0), [k, m], &device);
    let w = PackedF16::pack(matrix(&random(k * n, -0.1, 0.1), [k, n], &device));
    let got = values(matmul_packed(xt.clone().transpose(), &w));
    let twin = values(matmul_packed_twin(xt.transpose(), &w));
    assert!(relative_error(&got, &twin) <= TOLERANCE);
}

/// The CPU route (host unpack + NdArray matmul) against the wgpu kernel on the same values.
#[test]
fn cpu_route_matches_wgpu_kernel() {
    let (m, k, n) = (33, 320, 96);
    let (x, w) = (random(m * k, -1.0, 1.0), random(k * n, -0.1, 0.1));
    let run = |device: &Device| {
        let packed = PackedF16::pack(matrix(&w, [k, n], device));
        values(matmul_packed(matrix(&x, [m, k], device), &packed))
    };
    let error = relative_error(&run(&wgpu()), &run(&cpu()));
    println!("cpu route vs wgpu kernel: {error:.1e}");
    assert!(error <= TOLERANCE, "cpu vs wgpu: {error:e}");
}
