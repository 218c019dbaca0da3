//! The LayerNorm kernel and its launch: one workgroup row (`CUBE_DIM_X` threads) per tensor row,
//! `CUBE_DIM_Y` rows per workgroup.
//!
//! Statistics are two-pass, as in burn's ops: the row's mean first, then the mean of the centred
//! squares, each a per-thread sum merged in a shared-memory tree. A row is at most a few KiB
//! (1,280 floats in the UNet), so the second and third reads of it hit the cache; in exchange
//! the variance never cancels. The sums run over the row shifted by its first element, so even
//! a mean of 1000 next to a unit spread keeps its digits (burn's twin loses 2e-4 there).
//!
//! The kernel is generic over its storage float `F` (f32 or f16, chosen at launch from the
//! tensor's dtype): every load is widened to f32, the statistics and the affine run in f32, and
//! each output is rounded to `F` once, at the store.

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Cube, TensorMetadata};
use burn::cubecl;
use burn::cubecl::ir::FloatKind;
use burn::cubecl::prelude::*;
use burn::tensor::{DType, Shape};

/// Threads per workgroup.
const UNITS: usize = 256;
/// Vectors each thread of a row reads, at least, before the row gets more threads.
const PER_UNIT: usize = 16;
/// The most threads one row gets: 8 threads × 16-byte vectors read 128 contiguous bytes of a row
/// per step (whole cache lines; a 32-wide warp moves the same bytes per load over 4 rows as over
/// one row of 32 threads), with a 3-round tree instead of 5. On llvmpipe this measured fastest:
/// at C = 320 (8 threads) 2.4× faster than 4 vectors a thread (32 threads) and 2.8× than one
/// thread a row (lanes gathering from distant rows); at C = 1280 1.3× faster than 32 threads.
const ROW_THREADS: usize = 8;
/// WebGPU's guaranteed `maxComputeWorkgroupsPerDimension`.
const MAX_CUBE_COUNT: usize = 65_535;

/// Normalises row `CUBE_POS · CUBE_DIM_Y + UNIT_POS_Y` of `rows` rows of `cols` vectors (`len`
/// floats): `output = (input − mean) · rstd · weight + bias`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // the kernel's bindings: one launch, no struct to group them
fn layer_norm_rows<F: Float, N: Size>(
    input: &[Vector<F, N>],
    weight: &[Vector<F, N>],
    bias: &[Vector<F, N>],
    output: &mut [Vector<F, N>],
    rows: usize,
    cols: usize,
    len: f32,
    eps: f32,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS * CUBE_DIM_Y as usize + UNIT_POS_Y as usize;
    let unit = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    // Rows past the end (the last workgroup's) read nothing but still meet every barrier.
    let end = select(row < rows, cols, 0);
    let base = row * cols;
    let slot = UNIT_POS_Y as usize * threads;
    let mut sums = Shared::<[f32]>::new_slice(units);

    // 1. mean, as `shift + offset`: the sums run over `x − shift`, exact for values near the
    // row's first element, so a mean large next to the spread loses no digits (it would in a
    // plain f32 sum, and again when rounded to f32 before centring).
    let mut first = 0.0f32;
    if row < rows {
        first = f32::cast_from(input[base].extract(0usize));
    }
    let shift = Vector::<f32, N>::empty().fill(first);
    let mut acc = Vector::<f32, N>::empty().fill(0.0);
    let mut i = unit;
    while i < end {
        acc += Vector::<f32, N>::cast_from(input[base + i]) - shift;
        i += threads;
    }
    let offset = Vector::<f32, N>::empty().fill(row_sum(&mut sums, lanes_sum(acc), slot, unit, threads) / len);

    // 2. variance: the mean of the centred squares
    let mut acc = Vector::<f32, N>::empty().fill(0.0);
    let mut i = unit;
    while i < end {
        let d = (Vector::<f32, N>::cast_from(input[base + i]) - shift) - offset;
        acc += d * d;
        i += threads;
    }
    let variance = row_sum(&mut sums, lanes_sum(acc), slot, unit, threads) / len;
    let rstd = Vector::<f32, N>::empty().fill(1.0 / f32::sqrt(variance + eps));

    // 3. normalise, affine
    let mut i = unit;
    while i < end {
        let x = Vector::<f32, N>::cast_from(input[base + i]);
        let y =
            (x - shift - offset) * rstd * Vector::<f32, N>::cast_from(weight[i]) + Vector::<f32, N>::cast_from(bias[i]);
        output[base + i] = Vector::<F, N>::cast_from(y);
        i += threads;
    }
}

/// The sum of a vector's lanes.
#[cube]
fn lanes_sum<N: Size>(v: Vector<f32, N>) -> f32 {
    let mut sum = 0.0f32;
    #[unroll]
    for lane in 0..N::value() {
        sum += v.extract(lane);
    }
    sum
}

/// Sums `value` over the `threads` threads of one workgroup row (`sums[slot..slot + threads]`,
/// `threads` a power of two) and returns the sum to each of them. Every thread of the workgroup
/// calls it, so the barriers are uniform; the last one frees `sums` for the next call.
#[cube]
fn row_sum(sums: &mut Shared<[f32]>, value: f32, slot: usize, unit: usize, threads: usize) -> f32 {
    sums[slot + unit] = value;
    sync_cube();
    let mut half = threads / 2;
    while half > 0 {
        if unit < half {
            sums[slot + unit] += sums[slot + unit + half];
        }
        half /= 2;
        sync_cube();
    }
    let sum = sums[slot];
    sync_cube();
    sum
}

/// Launches the kernel on `x`'s device. `x`, `weight` and `bias` have one dtype, f32 or f16.
pub(super) fn layer_norm(
    x: FloatTensor<Cube>,
    weight: FloatTensor<Cube>,
    bias: FloatTensor<Cube>,
    eps: f64,
) -> FloatTensor<Cube> {
    let shape = x.shape();
    let numel = shape.num_elements();
    let channels = shape[shape.num_dims() - 1];
    let rows = numel / channels;
    let client = x.client.clone();
    let dtype = x.dtype;
    // The kernel indexes row-major memory: a strided view is copied once here.
    let input = flat(x);
    let output = FloatTensor::<Cube>::new_contiguous(
        client.clone(),
        input.device.clone(),
        shape,
        client.empty(numel * dtype.size()),
        dtype,
    );

    // Rows of a whole number of vec4s (every UNet and CLIP width) are read 4 floats at a time.
    let vector = if channels.is_multiple_of(4) { 4 } else { 1 };
    let cols = channels / vector;
    // Threads per row: a power of two giving each about PER_UNIT vectors, at most ROW_THREADS;
    // the rest of the workgroup takes further rows.
    let units = UNITS.min(client.properties().hardware.max_units_per_cube as usize);
    let units = 1 << units.ilog2();
    let threads = cols.div_ceil(PER_UNIT).next_power_of_two().min(ROW_THREADS).min(units);
    let rows_per_cube = units / threads;
    let cubes = rows.div_ceil(rows_per_cube);
    let cubes_x = cubes.min(MAX_CUBE_COUNT);
    layer_norm_rows::launch(
        &client,
        CubeCount::Static(cubes_x as u32, cubes.div_ceil(cubes_x) as u32, 1),
        CubeDim::new_2d(threads as u32, rows_per_cube as u32),
        vector,
        input.into_buffer_arg(),
        flat(weight).into_buffer_arg(),
        flat(bias).into_buffer_arg(),
        output.clone().into_buffer_arg(),
        rows,
        cols,
        channels as f32,
        eps as f32,
        units,
        storage(dtype),
    );
    output
}

/// The kernel's storage float for a tensor dtype: f16 for F16, f32 otherwise (the caller
/// launches only f32 and f16 tensors).
fn storage(dtype: DType) -> ElemType {
    match dtype {
        DType::F16 => ElemType::Float(FloatKind::F16),
        _ => ElemType::Float(FloatKind::F32),
    }
}

/// `t` as a flat row-major buffer: a metadata change when it already is one, else one copy.
fn flat(t: FloatTensor<Cube>) -> FloatTensor<Cube> {
    let len = t.shape().num_elements();
    Cube::float_reshape(t, Shape::new([len]))
}
