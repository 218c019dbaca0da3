//! The implicit-GEMM convolution kernel and its launch.
//!
//! GEMM view: `out[co, q] = Σ_k A[k, co] · B[k, q]` with M = C_out, N = the output pixels of all
//! images (`q` = image · H'·W' + pixel, so small images share tiles), K = C_in · kh · kw ordered
//! (c_in, ky, kx). `A` is the packed weight (see `ConvWeight`); `B[k, q]` is the input sample
//! under tap (ky, kx) of pixel `q`, gathered from NCHW memory on the fly (zero in the padding).
//!
//! One workgroup of 256 threads computes a 64 (channels) × 64 (pixels) tile: per step of 16 along
//! K each thread loads one vec4 of weights and gathers four input samples into shared memory,
//! then accumulates its 4 channels × 4 pixels with vec4 FMAs over the 16 staged rows. The next
//! step's loads are issued before the FMAs so their latency overlaps the arithmetic. The epilogue
//! adds the bias and the residual and writes NCHW.
//!
//! Storage is generic: `F` for the activations (input, bias, residual, output), `W` for a dense
//! weight, each f32 or f16. Values are widened to f32 as they are loaded (the shared-memory tiles
//! and the accumulators are f32) and narrowed to `F` at the store.

use burn::backend::Cube;
use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::cubecl;
use burn::cubecl::ir::FloatKind;
use burn::cubecl::prelude::*;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Shape};

use crate::packed::kernels::f16_to_f32;

/// Output channels per workgroup tile (the packed weight is padded to a multiple of it).
pub const TILE_M: usize = 64;
/// Output pixels per workgroup tile.
pub const TILE_N: usize = 64;
/// Reduction rows staged in shared memory per step.
pub const TILE_K: usize = 16;
/// Threads per workgroup: a 16 × 16 grid, each owning 4 channels × 4 pixels of the tile.
const UNITS: u32 = 256;
/// WebGPU's guaranteed `maxComputeWorkgroupsPerDimension`.
const MAX_CUBE_COUNT: usize = 65_535;

type Vec4 = Vector<f32, Const<4>>;

/// The convolution of `input` `[N, C_in, H, W]` (contiguous) with `weight` `[K, M_pad / 4]`
/// (vec4 rows) into `output` `[N, C_out, H', W']`, plus `bias[co]` and `residual` (the output's
/// shape, contiguous) when present. Pixel tiles run along X (continuing along Z past 65,535),
/// channel tiles along Y; `CUBE_COUNT_Y · 16` is the packed weight's row length in vec4s.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // the kernel's bindings: one launch, no struct to group them
fn conv2d_igemm<F: Float, W: Float>(
    input: &[F],
    weight: &[Vector<W, Const<4>>],
    words: &[u32],
    bias: &[F],
    residual: &[F],
    output: &mut [F],
    c_in: usize,
    height: usize,
    width: usize,
    src_height: usize,
    src_width: usize,
    c_out: usize,
    out_width: usize,
    out_plane: usize,
    pixels: usize,
    k_len: usize,
    steps: usize,
    stride_h: usize,
    stride_w: usize,
    pad_top: usize,
    pad_left: usize,
    #[comptime] kernel_h: usize,
    #[comptime] kernel_w: usize,
    #[comptime] has_bias: bool,
    #[comptime] has_residual: bool,
    #[comptime] upsample: bool,
    #[comptime] packed_f16: bool,
    #[define(F, W)] _dtypes: [ElemType; 2],
) {
    let pixel_tile = CUBE_POS_Z as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    if pixel_tile * 64 >= pixels {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    // Loaders: `row` is the K row of the step; `col` the weight vec4 and the pixel group.
    // FMAs: `row` picks 4 channels, `col` the same 4 pixels the thread gathers.
    let row = unit / 16;
    let col = unit % 16;
    let plane = src_height * src_width;
    let first = pixel_tile * 64 + col * 4;

    // This thread's four pixels: where each image starts, the top-left of each receptive field in
    // padded coordinates, and where each output goes (before the channel offset).
    let mut image_at = Array::<usize>::new(4usize);
    let mut top = Array::<usize>::new(4usize);
    let mut left = Array::<usize>::new(4usize);
    let mut out_at = Array::<usize>::new(4usize);
    #[unroll]
    for j in 0..4usize {
        let q = first + j;
        let image = q / out_plane;
        let p = q % out_plane;
        image_at[j] = image * c_in * plane;
        top[j] = (p / out_width) * stride_h;
        // A pixel past the end gathers nothing: its field starts right of every input column.
        left[j] = select(q < pixels, (p % out_width) * stride_w, pad_left + width);
        out_at[j] = image * c_out * out_plane + p;
    }

    let weight_col = CUBE_POS_Y as usize * 16 + col;
    let weight_row = CUBE_COUNT_Y as usize * 16;
    let mut a_tile = Shared::<[Vec4]>::new_slice(256usize);
    let mut b_tile = Shared::<[Vec4]>::new_slice(256usize);
    let mut acc = Array::<Vec4>::new(4usize);
    #[unroll]
    for i in 0..4usize {
        acc[i] = Vec4::new(0.0f32);
    }

    let mut a_next = load_weight(weight, words, row, k_len, row * weight_row + weight_col, packed_f16);
    let mut b_next = gather(
        input, row, k_len, &image_at, &top, &left, plane, height, width, src_height, src_width, pad_top, pad_left,
        kernel_h, kernel_w, upsample,
    );
    for step in 0..steps {
        sync_cube();
        a_tile[unit] = a_next;
        b_tile[unit] = b_next;
        sync_cube();

        let k = (step + 1) * 16 + row;
        a_next = load_weight(weight, words, k, k_len, k * weight_row + weight_col, packed_f16);
        b_next = gather(
            input, k, k_len, &image_at, &top, &left, plane, height, width, src_height, src_width, pad_top, pad_left,
            kernel_h, kernel_w, upsample,
        );

        #[unroll]
        for kk in 0..16usize {
            let a: Vec4 = a_tile[kk * 16 + row];
            let b: Vec4 = b_tile[kk * 16 + col];
            #[unroll]
            for i in 0..4usize {
                acc[i] = fma(Vec4::new(a.extract(i)), b, acc[i]);
            }
        }
    }

    // Epilogue: bias, residual, NCHW stores.
    #[unroll]
    for i in 0..4usize {
        let co = CUBE_POS_Y as usize * 64 + row * 4 + i;
        if co < c_out {
            let mut shift = 0.0f32;
            if has_bias {
                shift = f32::cast_from(bias[co]);
            }
            let values: Vec4 = acc[i];
            #[unroll]
            for j in 0..4usize {
                if first + j < pixels {
                    let at = out_at[j] + co * out_plane;
                    let mut y = values.extract(j) + shift;
                    if has_residual {
                        y += f32::cast_from(residual[at]);
                    }
                    output[at] = F::cast_from(y);
                }
            }
        }
    }
}

/// Row `k` of the packed weight at vec4 `at`, or zeros past K. With `packed_f16` the same four
/// channels are read from `words` (f16 pairs, two words per vec4) and widened to f32.
#[cube]
fn load_weight<W: Float>(
    weight: &[Vector<W, Const<4>>],
    words: &[u32],
    k: usize,
    k_len: usize,
    at: usize,
    #[comptime] packed_f16: bool,
) -> Vec4 {
    let mut a = Vec4::new(0.0f32);
    if k < k_len {
        if packed_f16 {
            let low = words[at * 2];
            let high = words[at * 2 + 1];
            a.insert(0usize, f16_to_f32(low & 0xFFFFu32));
            a.insert(1usize, f16_to_f32(low >> 16u32));
            a.insert(2usize, f16_to_f32(high & 0xFFFFu32));
            a.insert(3usize, f16_to_f32(high >> 16u32));
        } else {
            a = Vec4::cast_from(weight[at]);
        }
    }
    a
}

/// `B[k, q]` for this thread's four pixels: the input sample of channel `k / (kh·kw)` under tap
/// `k % (kh·kw)`, or zero in the padding or past K. With `upsample` the conv's input is the
/// `height × width` nearest upsampling of the `src_height × src_width` one (burn's and PyTorch's
/// `floor(y · src / dst)`), read in place.
#[cube]
#[allow(clippy::too_many_arguments)]
fn gather<F: Float>(
    input: &[F],
    k: usize,
    k_len: usize,
    image_at: &Array<usize>,
    top: &Array<usize>,
    left: &Array<usize>,
    plane: usize,
    height: usize,
    width: usize,
    src_height: usize,
    src_width: usize,
    pad_top: usize,
    pad_left: usize,
    #[comptime] kernel_h: usize,
    #[comptime] kernel_w: usize,
    #[comptime] upsample: bool,
) -> Vec4 {
    let taps = comptime!(kernel_h * kernel_w);
    let channel = (k / taps) * plane;
    let tap = k % taps;
    let ky = tap / kernel_w;
    let kx = tap % kernel_w;
    let mut b = Vec4::new(0.0f32);
    if k < k_len {
        #[unroll]
        for j in 0..4usize {
            let y = top[j] + ky;
            let x = left[j] + kx;
            if y >= pad_top && y < pad_top + height && x >= pad_left && x < pad_left + width {
                let mut sy = y - pad_top;
                let mut sx = x - pad_left;
                if upsample {
                    sy = sy * src_height / height;
                    sx = sx * src_width / width;
                }
                b.insert(j, f32::cast_from(input[image_at[j] + channel + sy * src_width + sx]));
            }
        }
    }
    b
}

/// The weight operand of [`conv2d`].
pub(super) enum Weight {
    /// f32 or f16 `[C_in, kh, kw, M_pad]`.
    Dense(FloatTensor<Cube>),
    /// u32 words `[C_in·kh·kw, M_pad / 2]` of f16 pairs, and `[kh, kw]`.
    PackedF16(IntTensor<Cube>, [usize; 2]),
}

/// The storage type of an f32 or f16 operand (the only ones the kernel is launched with).
fn float_elem(dtype: DType) -> ElemType {
    match dtype {
        DType::F16 => ElemType::Float(FloatKind::F16),
        _ => ElemType::Float(FloatKind::F32),
    }
}

/// Launches the kernel on `x`'s device. The activations (`x`, `bias`, `residual`, the output)
/// share one float dtype, f32 or f16; a dense weight is f32 or f16 on its own. With `upsample`,
/// the conv reads `x` nearest-upsampled to that `[H, W]`.
pub(super) fn conv2d(
    x: FloatTensor<Cube>,
    packed: Weight,
    bias: Option<FloatTensor<Cube>>,
    residual: Option<FloatTensor<Cube>>,
    c_out: usize,
    options: &ConvOptions<2>,
    upsample: Option<[usize; 2]>,
) -> FloatTensor<Cube> {
    let x_shape = x.shape();
    let [n, c_in, src_height, src_width] = [x_shape[0], x_shape[1], x_shape[2], x_shape[3]];
    let [height, width] = upsample.unwrap_or([src_height, src_width]);
    let [kernel_h, kernel_w, m_pad] = match &packed {
        Weight::Dense(w) => {
            let w_shape = w.shape();
            [w_shape[1], w_shape[2], w_shape[3]]
        }
        Weight::PackedF16(words, [kh, kw]) => [*kh, *kw, words.shape()[1] * 2],
    };
    let out_shape = super::output_shape([n, c_in, height, width], c_out, [kernel_h, kernel_w], options);
    let [_, _, out_h, out_w] = out_shape;
    let client = x.client.clone();
    let dtype = x.dtype;
    let output = FloatTensor::<Cube>::new_contiguous(
        client.clone(),
        x.device.clone(),
        Shape::new(out_shape),
        client.empty(out_shape.iter().product::<usize>() * dtype.size()),
        dtype,
    );
    let pixels = n * out_h * out_w;
    if pixels == 0 || c_out == 0 {
        return output;
    }
    assert!(
        client.properties().hardware.max_units_per_cube >= UNITS,
        "conv2d: the kernel needs {UNITS} threads per workgroup"
    );

    // The kernel indexes row-major memory: a strided view is copied once here.
    let input = contiguous(x);
    // The binding the kernel does not read gets the other one's buffer (typed as the
    // activations when the weight is packed).
    let packed_f16 = matches!(packed, Weight::PackedF16(..));
    let (weight, words, weight_dtype) = match packed {
        Weight::Dense(w) => {
            let w = contiguous(w);
            let weight_dtype = w.dtype;
            (w.clone(), w, weight_dtype)
        }
        Weight::PackedF16(words, _) => (words.clone(), words, dtype),
    };
    let (has_bias, has_residual) = (bias.is_some(), residual.is_some());
    // Absent operands: `input` stands in for the bindings the kernel never reads.
    let bias = bias.map_or_else(|| input.clone(), contiguous);
    let residual = residual.map_or_else(|| input.clone(), contiguous);

    let tiles = pixels.div_ceil(TILE_N);
    let tiles_x = tiles.min(MAX_CUBE_COUNT);
    conv2d_igemm::launch(
        &client,
        CubeCount::Static(tiles_x as u32, (m_pad / TILE_M) as u32, tiles.div_ceil(tiles_x) as u32),
        CubeDim::new_1d(UNITS),
        input.into_buffer_arg(),
        weight.into_buffer_arg(),
        words.into_buffer_arg(),
        bias.into_buffer_arg(),
        residual.into_buffer_arg(),
        output.clone().into_buffer_arg(),
        c_in,
        height,
        width,
        src_height,
        src_width,
        c_out,
        out_w,
        out_h * out_w,
        pixels,
        c_in * kernel_h * kernel_w,
        (c_in * kernel_h * kernel_w).div_ceil(TILE_K),
        options.stride[0],
        options.stride[1],
        options.padding[0].0,
        options.padding[1].0,
        kernel_h,
        kernel_w,
        has_bias,
        has_residual,
        upsample.is_some(),
        packed_f16,
        [float_elem(dtype), float_elem(weight_dtype)],
    );
    output
}

/// `t` as a flat row-major buffer: a metadata change when it already is one, else one copy.
fn contiguous(t: FloatTensor<Cube>) -> FloatTensor<Cube> {
    let len = t.shape().num_elements();
    Cube::float_reshape(t, Shape::new([len]))
}
