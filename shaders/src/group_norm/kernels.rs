//! The three GroupNorm kernels and their launch: partial statistics per (sample·group, block),
//! the combination per (sample·group), and the elementwise normalise + affine + SiLU.
//!
//! Statistics are (count, mean, M2) triples merged with Chan et al.'s pairwise update, in f32:
//! unlike a sum and a sum of squares they do not cancel catastrophically when the mean is large
//! next to the spread, which the two-pass twin also avoids.

use burn::backend::Cube;
use burn::backend::tensor::FloatTensor;
use burn::cubecl;
use burn::cubecl::prelude::*;
use burn::tensor::{DType, Shape};

/// Threads per block of the statistics kernel (a power of two for the tree merge).
const UNITS: u32 = 256;
/// Elements each thread of the statistics kernel folds in, at least, before blocks are split.
const PER_UNIT: usize = 16;
/// The most blocks one (sample, group) is split into: the combine kernel folds them serially.
const MAX_BLOCKS: usize = 256;

/// Folds block `CUBE_POS_X` of group `CUBE_POS_Y` (elements `[start, start + chunk)` of that
/// group's `group_len` contiguous ones) into `partials[(group * blocks + block) * 3 ..][..3]`.
#[cube(launch)]
fn group_partials(input: &[f32], partials: &mut [f32], group_len: usize, chunk: usize, #[comptime] units: usize) {
    let group = CUBE_POS_Y as usize;
    let block = CUBE_POS_X as usize;
    let unit = UNIT_POS as usize;
    let base = group * group_len;
    let end = min(block * chunk + chunk, group_len);

    // Each thread: Welford over a strided run (neighbouring threads read neighbouring floats).
    let mut count = 0.0f32;
    let mut mean = 0.0f32;
    let mut m2 = 0.0f32;
    let mut i = block * chunk + unit;
    while i < end {
        let x = input[base + i];
        count += 1.0;
        let delta = x - mean;
        mean += delta / count;
        m2 += delta * (x - mean);
        i += units;
    }

    let mut counts = Shared::<[f32]>::new_slice(units);
    let mut means = Shared::<[f32]>::new_slice(units);
    let mut m2s = Shared::<[f32]>::new_slice(units);
    counts[unit] = count;
    means[unit] = mean;
    m2s[unit] = m2;
    sync_cube();

    // Tree merge: each round the lower half folds in the upper half.
    let mut half = units / 2;
    while half > 0 {
        if unit < half {
            let (n, mean, m2) = chan(counts[unit], means[unit], m2s[unit], counts[unit + half], means[unit + half], m2s[unit + half]);
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

/// `output[i] = silu?((input[i] - mean) * rstd * weight[c] + bias[c])` over `[N, C, spatial]`.
/// Without `affine`, `weight` and `bias` are bound but never read.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // the kernel's bindings: one launch, no struct to group them
fn group_apply(
    input: &[f32],
    stats: &[f32],
    weight: &[f32],
    bias: &[f32],
    output: &mut [f32],
    channels: usize,
    spatial: usize,
    channels_per_group: usize,
    #[comptime] affine: bool,
    #[comptime] silu: bool,
) {
    let i = ABSOLUTE_POS;
    if i >= output.len() {
        terminate!();
    }
    let row = i / spatial;
    let c = row % channels;
    let group = (row / channels) * (channels / channels_per_group) + c / channels_per_group;
    let mut y = (input[i] - stats[group * 2]) * stats[group * 2 + 1];
    if affine {
        y = y * weight[c] + bias[c];
    }
    if silu {
        y /= 1.0 + f32::exp(-y);
    }
    output[i] = y;
}

/// Launches the three kernels on `x`'s device. `x` and the affine parameters are f32.
pub(super) fn group_norm(
    x: FloatTensor<Cube>,
    affine: Option<(FloatTensor<Cube>, FloatTensor<Cube>)>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> FloatTensor<Cube> {
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::TensorMetadata;

    let shape = x.shape();
    let (n, channels, numel) = (shape[0], shape[1], shape.num_elements());
    let spatial = numel / (n * channels);
    let group_len = numel / (n * groups);
    let client = x.client.clone();
    let device = x.device.clone();
    let scratch = |len: usize| {
        let handle = client.empty(len * size_of::<f32>());
        FloatTensor::<Cube>::new_contiguous(client.clone(), device.clone(), Shape::new([len]), handle, DType::F32)
    };
    // The kernels index row-major memory: a strided view (an NHWC conv output, a slice) is copied
    // once here, as burn's own reshape in the twin does.
    let input = Cube::float_reshape(x, Shape::new([numel]));
    let units = UNITS.min(client.properties().hardware.max_units_per_cube);
    let units = 1 << units.ilog2();

    // 1. partial statistics: `blocks` workgroups per (sample, group)
    let blocks = group_len.div_ceil(units as usize * PER_UNIT).clamp(1, MAX_BLOCKS);
    let chunk = group_len.div_ceil(blocks);
    let partials = scratch(n * groups * blocks * 3);
    group_partials::launch(
        &client,
        CubeCount::Static(blocks as u32, (n * groups) as u32, 1),
        CubeDim::new_1d(units),
        input.clone().into_buffer_arg(),
        partials.clone().into_buffer_arg(),
        group_len,
        chunk,
        units as usize,
    );

    // 2. per (sample, group): mean and 1/sqrt(var + eps)
    let stats = scratch(n * groups * 2);
    let cube_dim = CubeDim::new(&client, n * groups);
    group_combine::launch(
        &client,
        calculate_cube_count_elemwise(&client, n * groups, cube_dim),
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
        client.empty(numel * size_of::<f32>()),
        DType::F32,
    );
    let has_affine = affine.is_some();
    // Without the affine the stats buffer stands in for the two unread bindings.
    let (weight, bias) = affine.unwrap_or_else(|| (stats.clone(), stats.clone()));
    let cube_dim = CubeDim::new(&client, numel);
    group_apply::launch(
        &client,
        calculate_cube_count_elemwise(&client, numel, cube_dim),
        cube_dim,
        input.into_buffer_arg(),
        stats.into_buffer_arg(),
        Cube::float_reshape(weight, Shape::new([channels])).into_buffer_arg(),
        Cube::float_reshape(bias, Shape::new([channels])).into_buffer_arg(),
        output.clone().into_buffer_arg(),
        channels,
        spatial,
        channels / groups,
        has_affine,
        silu,
    );
    output
}
