//! The fused attention kernel and its launch: one workgroup per (query block, run of (batch,
//! head) pairs), one thread per query row, K/V tiles staged in shared memory, online softmax.
//!
//! Each thread keeps its query row (pre-scaled by 1/√d) and its output accumulator in registers,
//! with the running maximum `m` and the running sum `l` of `exp(score − m)`. For each key it
//! computes the score; a new maximum first rescales `l` and the accumulator by `exp(m_old −
//! m_new)` (a few times per row: random scores set a new maximum about ln T times), then the
//! key's value is added with weight `exp(score − m)`. That is the exact softmax, with no score
//! matrix in memory and no exponent above 0 (no overflow whatever the scores' magnitude). q, k, v
//! and the output are read and written in their `[B, T, heads·d]` layout, the head's `d` columns
//! indexed in place.
//!
//! Keys are visited one at a time rather than a tile of scores at once: the tile version keeps
//! the tile's scores in a register array, which must be unrolled to stay in registers, and the
//! unrolled kernel took minutes to compile on llvmpipe (32 keys × 16 vec4s).

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Cube, TensorMetadata};
use burn::cubecl;
use burn::cubecl::ir::FloatKind;
use burn::cubecl::prelude::*;
use burn::tensor::{DType, Shape};

/// Threads per workgroup the launch aims for (query rows of one or several (batch, head) pairs).
const UNITS: usize = 128;
/// Bytes of K and V tiles in one workgroup: WebGPU's guaranteed `maxComputeWorkgroupStorageSize`.
const SHARED_BYTES: usize = 16 * 1024;
/// WebGPU's guaranteed `maxComputeWorkgroupsPerDimension`.
const MAX_CUBE_COUNT: usize = 65_535;
/// The largest head dimension: one K and one V row must fit the shared-memory budget, and the
/// query row and accumulator must stay in registers.
pub(super) const MAX_HEAD_DIM: usize = 128;
/// The running maximum before any key: below any real score, and finite (WGSL does not promise
/// IEEE infinities).
const NO_SCORE: f32 = f32::MIN;

/// softmax(q kᵀ/√d) v for the query rows of one workgroup.
///
/// Workgroup `(x, y + z·count_y)` holds `groups` (batch, head) pairs `pair = (y + z·count_y) ·
/// groups + g` and query rows `[x · rows, + rows)` of each; thread `g · rows + r` owns query row
/// `x · rows + r` of pair `g`. All vectors are `N` floats; a row of q, k, v or the output is
/// `heads · dv` vectors, head `h` at vectors `[h · dv, + dv)`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // the kernel's bindings: one launch, no struct to group them
fn flash_attention<F: Float, N: Size>(
    q: &[Vector<F, N>],
    k: &[Vector<F, N>],
    v: &[Vector<F, N>],
    output: &mut [Vector<F, N>],
    pairs: usize,
    heads: usize,
    seq_q: usize,
    seq_k: usize,
    rows: usize,
    scale: f32,
    #[comptime] dv: usize,
    #[comptime] groups: usize,
    #[comptime] tile: usize,
    #[comptime] causal: bool,
    #[define(F)] _dtype: ElemType,
) {
    let unit = UNIT_POS as usize;
    let group = unit / rows;
    let first_pair = (CUBE_POS_Z as usize * CUBE_COUNT_Y as usize + CUBE_POS_Y as usize) * groups;
    let pair = first_pair + group;
    let block_start = CUBE_POS_X as usize * rows;
    let row = block_start + unit % rows;
    let active = pair < pairs && row < seq_q;
    let stride = heads * dv;
    let q_at = ((pair / heads) * seq_q + row) * stride + (pair % heads) * dv;

    // Keys this row sees: all of them, or with the causal mask those up to `row + seq_k − seq_q`
    // (burn's alignment at the bottom-right corner, for seq_q ≠ seq_k). The tile loop runs to the
    // workgroup's last row's limit, the same for every thread (the barriers need that).
    let mut row_end = seq_k;
    let mut kv_stop = seq_k;
    if causal {
        row_end = causal_end(row, seq_q, seq_k);
        kv_stop = causal_end(min(block_start + rows, seq_q) - 1, seq_q, seq_k);
    }
    if !active {
        row_end = 0;
    }

    let scale = Vector::<f32, N>::empty().fill(scale);
    let zero = Vector::<f32, N>::empty().fill(0.0);
    let mut query = Array::<Vector<f32, N>>::new(dv);
    let mut acc = Array::<Vector<f32, N>>::new(dv);
    #[unroll]
    for c in 0..dv {
        query[c] = zero;
        acc[c] = zero;
    }
    if active {
        #[unroll]
        for c in 0..dv {
            query[c] = Vector::<f32, N>::cast_from(q[q_at + c]) * scale;
        }
    }
    let mut m = f32::new(NO_SCORE);
    let mut l = 0.0f32;

    let tile_len = comptime!(tile * dv);
    let mut keys = Shared::<[Vector<f32, N>]>::new_slice(comptime!(groups * tile * dv));
    let mut values = Shared::<[Vector<f32, N>]>::new_slice(comptime!(groups * tile * dv));
    let mine = group * tile_len;

    let mut start = 0;
    while start < kv_stop {
        // 1. stage keys [start, start + tile) of every pair of the workgroup
        let mut e = unit;
        while e < comptime!(groups * tile * dv) {
            let p = first_pair + e / tile_len;
            let key = start + (e % tile_len) / dv;
            if p < pairs && key < seq_k {
                let at = ((p / heads) * seq_k + key) * stride + (p % heads) * dv + e % dv;
                keys[e] = Vector::<f32, N>::cast_from(k[at]);
                values[e] = Vector::<f32, N>::cast_from(v[at]);
            }
            e += CUBE_DIM as usize;
        }
        sync_cube();

        // 2. online softmax over the keys of the tile this row sees
        let mut j = 0;
        while start + j < row_end && j < tile {
            let at = mine + j * dv;
            let mut s = 0.0f32;
            #[unroll]
            for c in 0..dv {
                s += Vector::dot(query[c], keys[at + c]);
            }
            // A new maximum rescales what was summed so far (before the first key: nothing).
            if s > m {
                let correction = select(m == NO_SCORE, 0.0, f32::exp(m - s));
                l *= correction;
                let correction = Vector::<f32, N>::empty().fill(correction);
                #[unroll]
                for c in 0..dv {
                    acc[c] *= correction;
                }
                m = s;
            }
            let p = f32::exp(s - m);
            l += p;
            let p = Vector::<f32, N>::empty().fill(p);
            #[unroll]
            for c in 0..dv {
                acc[c] += p * values[at + c];
            }
            j += 1;
        }
        sync_cube();
        start += tile;
    }

    // 3. normalise; a row that sees no key (causal with seq_q > seq_k) is 0, as in burn
    if active {
        let inverse = Vector::<f32, N>::empty().fill(select(l > 0.0, 1.0 / l, 0.0));
        #[unroll]
        for c in 0..dv {
            output[q_at + c] = Vector::<F, N>::cast_from(acc[c] * inverse);
        }
    }
}

/// One past the last key query `row` sees under the causal mask: `min(row + 1 + seq_k − seq_q,
/// seq_k)`, 0 when that is negative.
#[cube]
fn causal_end(row: usize, seq_q: usize, seq_k: usize) -> usize {
    let reach = row + 1 + seq_k;
    let mut end = 0;
    if reach > seq_q {
        end = min(reach - seq_q, seq_k);
    }
    end
}

/// How one launch covers the problem.
struct Plan {
    /// Query rows per (batch, head) pair in a workgroup.
    rows: usize,
    /// (batch, head) pairs per workgroup.
    groups: usize,
    /// Keys per shared-memory tile.
    tile: usize,
}

/// Balanced query blocks of at most [`UNITS`] rows; short sequences (temporal attention's 16
/// frames, say) share a workgroup between several (batch, head) pairs instead of leaving most of
/// it idle; the K/V tiles of all of them fill the shared-memory budget.
fn plan(pairs: usize, seq_q: usize, seq_k: usize, head_dim: usize, shared_bytes: usize) -> Plan {
    let budget = shared_bytes.min(SHARED_BYTES) / (2 * size_of::<f32>());
    let rows = seq_q.div_ceil(seq_q.div_ceil(UNITS));
    let min_tile = seq_k.min(4);
    let groups = (UNITS / rows).min(pairs).min(budget / (head_dim * min_tile)).max(1);
    let tile = (budget / (groups * head_dim)).min(seq_k).max(1);
    debug_assert!(groups * tile * head_dim <= budget && rows * groups <= UNITS);
    Plan { rows, groups, tile }
}

/// Launches the kernel on q's device. q `[B, Tq, heads·d]`, k and v `[B, Tk, heads·d]`, all f32
/// or all f16 (read and written in their dtype, computed in f32), `d ≤ MAX_HEAD_DIM`.
pub(super) fn attention(
    q: FloatTensor<Cube>,
    k: FloatTensor<Cube>,
    v: FloatTensor<Cube>,
    heads: usize,
    causal: bool,
) -> FloatTensor<Cube> {
    let shape = q.shape();
    let (batch, seq_q, channels) = (shape[0], shape[1], shape[2]);
    let seq_k = k.shape()[1];
    let head_dim = channels / heads;
    let client = q.client.clone();
    let device = q.device.clone();
    let dtype = q.dtype;
    let output = FloatTensor::<Cube>::new_contiguous(
        client.clone(),
        device,
        shape.clone(),
        client.empty(shape.num_elements() * dtype.size()),
        dtype,
    );
    if shape.num_elements() == 0 {
        return output;
    }

    // Head dims of a whole number of vec4s (64, 80: every UNet and CLIP head) are read 4 floats
    // at a time; the rows then start on vec4 boundaries too.
    let vector = if head_dim.is_multiple_of(4) { 4 } else { 1 };
    let pairs = batch * heads;
    let Plan { rows, groups, tile } =
        plan(pairs, seq_q, seq_k, head_dim, client.properties().hardware.max_shared_memory_size);
    let blocks = seq_q.div_ceil(rows);
    assert!(blocks <= MAX_CUBE_COUNT, "attention: {seq_q} queries exceed one launch's {MAX_CUBE_COUNT} blocks");
    let cubes = pairs.div_ceil(groups);
    let cubes_y = cubes.min(MAX_CUBE_COUNT);
    flash_attention::launch(
        &client,
        CubeCount::Static(blocks as u32, cubes_y as u32, cubes.div_ceil(cubes_y) as u32),
        CubeDim::new_1d((rows * groups) as u32),
        vector,
        contiguous(q).into_buffer_arg(),
        contiguous(k).into_buffer_arg(),
        contiguous(v).into_buffer_arg(),
        output.clone().into_buffer_arg(),
        pairs,
        heads,
        seq_q,
        seq_k,
        rows,
        (1.0 / (head_dim as f64).sqrt()) as f32,
        head_dim / vector,
        groups,
        tile,
        causal,
        float_elem(dtype),
    );
    output
}

/// The storage type of q, k, v and the output: f32 or f16 (the only ones the kernel is launched
/// with).
fn float_elem(dtype: DType) -> ElemType {
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
