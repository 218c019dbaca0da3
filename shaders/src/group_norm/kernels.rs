//! The three GroupNorm kernels and their launch: partial statistics per (sample·group, block),
//! the combination per (sample·group), and the elementwise normalise + affine + SiLU.
//!
//! Statistics are (count, mean, M2) triples (Welford within a thread, Chan et al.'s pairwise
//! update across threads and blocks), in f32: unlike a sum and a sum of squares they do not cancel
//! when the mean is large next to the spread, and the tree keeps rounding errors from growing
//! with the group's length the way a serial f32 sum's do.
//!
//! `group_partials` and `group_apply` are generic over the storage float `F` of the input, the
//! affine parameters and the output (f32 or f16, chosen at launch from the tensor's dtype): each
//! load is widened to f32, the statistics (always f32 buffers) and the affine run in f32, and
//! each output is rounded to `F` once, at the store.

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Cube, TensorMetadata};
use burn::cubecl;
use burn::cubecl::ir::FloatKind;
use burn::cubecl::prelude::*;
use burn::tensor::{DType, Shape};

/// Threads per block of the statistics kernel (a power of two for the tree merge).
const UNITS: u32 = 256;
/// Elements each thread of the statistics kernel folds in, at least, before blocks are split.
const PER_UNIT: usize = 64;
/// The most blocks one (sample, group) is split into: the combine kernel folds them serially.
const MAX_BLOCKS: usize = 256;
/// Vectors each thread of the elementwise kernel writes, at most.
const APPLY_PER_UNIT: usize = 4;
/// WebGPU's guaranteed `maxComputeWorkgroupsPerDimension`.
const MAX_CUBE_COUNT: usize = 65_535;

/// Folds block `CUBE_POS_X` of (sample·group) `group` (vectors `[block · chunk, + chunk)` of that
/// group's `group_len` contiguous ones; groups past 65,535 continue along Z) into
/// `partials[(group · blocks + block) · 3 ..][..3]` as (count, mean, M2).
#[cube(launch)]
fn group_partials<F: Float, N: Size>(
    input: &[Vector<F, N>],
    partials: &mut [f32],
    groups: usize,
    group_len: usize,
    chunk: usize,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let group = CUBE_POS_Z as usize * CUBE_COUNT_Y as usize + CUBE_POS_Y as usize;
    if group >= groups {
        terminate!();
    }
    let block = CUBE_POS_X as usize;
    let unit = UNIT_POS as usize;
    let base = group * group_len;
    let end = min(block * chunk + chunk, group_len);

    // Each thread: Welford per lane over a strided run of vectors (neighbouring threads read
    // neighbouring vectors), then its lanes merged into one triple.
    let mut steps = 0.0f32;
    let mut lane_mean = Vector::<f32, N>::empty().fill(0.0);
    let mut lane_m2 = Vector::<f32, N>::empty().fill(0.0);
    let mut i = block * chunk + unit;
    while i < end {
        let x = Vector::<f32, N>::cast_from(input[base + i]);
        steps += 1.0;
        let delta = x - lane_mean;
        lane_mean += delta / Vector::<f32, N>::empty().fill(steps);
        lane_m2 += delta * (x - lane_mean);
        i += units;
    }
    let mut count = 0.0f32;
    let mut mean = 0.0f32;
    let mut m2 = 0.0f32;
    #[unroll]
    for lane in 0..N::value() {
        let (n, merged_mean, merged_m2) = chan(count, mean, m2, steps, lane_mean.extract(lane), lane_m2.extract(lane));
        count = n;
        mean = merged_mean;
        m2 = merged_m2;
    }

    let mut counts = Shared::<[f32]>::new_slice(units);
    let mut means = Shared::<[f32]>::new_slice(units);
    let mut m2s = Shared::<[f32]>::new_slice(units);
    counts[unit] = count;
    means[unit] = mean;
    m2s[unit] = m2;
    sync_cube();

    // Tree merge: each round the lower half folds in the upper half.
    let mut half = CUBE_DIM as usize / 2;
    while half > 0 {
        if unit < half {
            let (n, mean, m2) =
                chan(counts[unit], means[unit], m2s[unit], counts[unit + half], means[unit + half], m2s[unit + half]);
            counts[unit] = n;
            means[unit] = mean;
            m2s[unit] = m2;
        }
        half /= 2;
        sync_cube();
    }

    if unit == 0 {
        let out = (group * CUBE_COUNT_X as usize + block) * 3;
        partials[out] = counts[0];
        partials[out + 1] = means[0];
        partials[out + 2] = m2s[0];
    }
}

/// One thread per (sample·group): folds its `blocks` partials and writes `[mean, 1/sqrt(var + eps)]`.
#[cube(launch)]
fn group_combine(partials: &[f32], stats: &mut [f32], groups: usize, blocks: usize, eps: f32) {
    let group = ABSOLUTE_POS;
    if group >= groups {
        terminate!();
    }
    let mut count = 0.0f32;
    let mut mean = 0.0f32;
    let mut m2 = 0.0f32;
    for block in 0..blocks {
        let at = (group * blocks + block) * 3;
        let (n, merged_mean, merged_m2) = chan(count, mean, m2, partials[at], partials[at + 1], partials[at + 2]);
        count = n;
        mean = merged_mean;
        m2 = merged_m2;
    }
    stats[group * 2] = mean;
    stats[group * 2 + 1] = 1.0 / f32::sqrt(m2 / count + eps);
}

/// Chan et al.'s merge of two (count, mean, M2) triples; an empty side leaves the other as it is.
#[cube]
fn chan(na: f32, ma: f32, m2a: f32, nb: f32, mb: f32, m2b: f32) -> (f32, f32, f32) {
    let n = na + nb;
    let share = select(n > 0.0, nb / n, 0.0);
    let delta = mb - ma;
    (n, ma + delta * share, m2a + m2b + delta * delta * na * share)
}

/// `output = silu?((input - mean) * rstd * weight[c] + bias[c])` over `[N, C, spatial]`, one
/// workgroup row per (n, c) row of `spatial` elements: the row's statistics and affine fold into
/// one scale and one shift, loaded once per thread, and the inner loop is a fused multiply-add.
/// Without `affine`, `weight` and `bias` are bound but never read.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // the kernel's bindings: one launch, no struct to group them
fn group_apply<F: Float, N: Size>(
    input: &[Vector<F, N>],
    stats: &[f32],
    weight: &[F],
    bias: &[F],
    output: &mut [Vector<F, N>],
    rows: usize,
    channels: usize,
    spatial: usize,
    channels_per_group: usize,
    #[comptime] affine: bool,
    #[comptime] silu: bool,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS_Z as usize * CUBE_COUNT_Y as usize + CUBE_POS_Y as usize;
    if row >= rows {
        terminate!();
    }
    let c = row % channels;
    let group = (row / channels) * (channels / channels_per_group) + c / channels_per_group;
    let mut scale = stats[group * 2 + 1];
    let mut shift = -stats[group * 2] * scale;
    if affine {
        let w = f32::cast_from(weight[c]);
        scale *= w;
        shift = shift * w + f32::cast_from(bias[c]);
    }
    let scale = Vector::<f32, N>::empty().fill(scale);
    let shift = Vector::<f32, N>::empty().fill(shift);
    let one = Vector::<f32, N>::empty().fill(1.0);
    let base = row * spatial;
    let step = CUBE_DIM as usize * CUBE_COUNT_X as usize;
    let mut i = CUBE_POS_X as usize * CUBE_DIM as usize + UNIT_POS as usize;
    while i < spatial {
        let mut y = Vector::<f32, N>::cast_from(input[base + i]) * scale + shift;
        if silu {
            y /= one + Vector::exp(-y);
        }
        output[base + i] = Vector::<F, N>::cast_from(y);
        i += step;
    }
}

/// Launches the three kernels on `x`'s device. `x` and the affine parameters have one dtype, f32
/// or f16; the statistics buffers are f32.
pub(super) fn group_norm(
    x: FloatTensor<Cube>,
    affine: Option<(FloatTensor<Cube>, FloatTensor<Cube>)>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> FloatTensor<Cube> {
    let shape = x.shape();
    let (n, channels, numel) = (shape[0], shape[1], shape.num_elements());
    let spatial = numel / (n * channels);
    let group_len = numel / (n * groups);
    let client = x.client.clone();
    let device = x.device.clone();
    let dtype = x.dtype;
    let scratch = |len: usize| {
        let handle = client.empty(len * size_of::<f32>());
        FloatTensor::<Cube>::new_contiguous(client.clone(), device.clone(), Shape::new([len]), handle, DType::F32)
    };
    // The kernels index row-major memory: a strided view (an NHWC conv output, a slice) is copied
    // once here, as burn's own reshape in the twin does.
    let input = contiguous(x);
    let units = UNITS.min(client.properties().hardware.max_units_per_cube);
    let units = 1 << units.ilog2();

    // Rows of a whole number of vec4s (every UNet and VAE shape) are read 4 floats at a time.
    let vector = if spatial.is_multiple_of(4) { 4 } else { 1 };

    // 1. partial statistics: `blocks` workgroups per (sample, group), `chunk` vectors each
    let group_vectors = group_len / vector;
    let blocks = group_len.div_ceil(units as usize * PER_UNIT).clamp(1, MAX_BLOCKS);
    let chunk = group_vectors.div_ceil(blocks);
    let partials = scratch(n * groups * blocks * 3);
    let groups_y = (n * groups).min(MAX_CUBE_COUNT);
    group_partials::launch(
        &client,
        CubeCount::Static(blocks as u32, groups_y as u32, (n * groups).div_ceil(groups_y) as u32),
        CubeDim::new_1d(units),
        vector,
        input.clone().into_buffer_arg(),
        partials.clone().into_buffer_arg(),
        n * groups,
        group_vectors,
        chunk,
        units as usize,
        storage(dtype),
    );

    // 2. per (sample, group): mean and 1/sqrt(var + eps)
    let stats = scratch(n * groups * 2);
    let cube_dim = CubeDim::new(&client, n * groups);
    group_combine::launch(
        &client,
        cubecl::calculate_cube_count_elemwise(&client, n * groups, cube_dim),
        cube_dim,
        partials.into_buffer_arg(),
        stats.clone().into_buffer_arg(),
        n * groups,
        blocks,
        eps as f32,
    );

    // 3. normalise, affine, SiLU
    let output = FloatTensor::<Cube>::new_contiguous(
        client.clone(),
        device.clone(),
        shape,
        client.empty(numel * dtype.size()),
        dtype,
    );
    let has_affine = affine.is_some();
    // Without the affine the input (of the bindings' dtype) stands in for the two bindings the
    // kernel never reads.
    let (weight, bias) = affine.unwrap_or_else(|| (input.clone(), input.clone()));
    // Threads per row: the row's length up to a workgroup, in whole 32-lane warps; each thread
    // strides over up to APPLY_PER_UNIT vectors.
    let rows = n * channels;
    let row_vectors = spatial / vector;
    let row_units = (row_vectors.div_ceil(32) * 32).min(units as usize);
    let row_blocks = row_vectors.div_ceil(row_units * APPLY_PER_UNIT);
    let rows_y = rows.min(MAX_CUBE_COUNT);
    group_apply::launch(
        &client,
        CubeCount::Static(row_blocks as u32, rows_y as u32, rows.div_ceil(rows_y) as u32),
        CubeDim::new_1d(row_units as u32),
        vector,
        input.into_buffer_arg(),
        stats.into_buffer_arg(),
        contiguous(weight).into_buffer_arg(),
        contiguous(bias).into_buffer_arg(),
        output.clone().into_buffer_arg(),
        rows,
        channels,
        row_vectors,
        channels / groups,
        has_affine,
        silu,
        storage(dtype),
    );
    output
}

/// The kernels' storage float for a tensor dtype: f16 for F16, f32 otherwise (the caller
/// launches only f32 and f16 tensors).
fn storage(dtype: DType) -> ElemType {
    match dtype {
        DType::F16 => ElemType::Float(FloatKind::F16),
        _ => ElemType::Float(FloatKind::F32),
    }
}

/// `t` as a flat row-major buffer: a metadata change when it already is one, else one copy.
fn contiguous(t: FloatTensor<Cube>) -> FloatTensor<Cube> {
    let len = t.shape().num_elements();
    Cube::float_reshape(t, Shape::new([len]))
}
