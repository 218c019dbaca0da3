//! The packed-weight GEMM kernel and its launch.
//!
//! `out[m, n] = Σ_k x[m, k] · w[k, n]`, `w` read as f16 pairs from u32 words. One workgroup of
//! 256 threads (16 × 16) computes a 64 (rows) × 64 (columns) tile: per step of 16 along K each
//! thread loads 4 values of `x` (4 rows of one k; neighbouring threads read neighbouring k) and
//! 2 words of `w` (4 columns of one k, unpacked to f32) into shared memory, then accumulates its
//! 4 rows × 4 columns with vec4 FMAs over the 16 staged k. The next step's loads are issued before
//! the FMAs so their latency overlaps the arithmetic. Accumulation is f32 throughout.

use burn::backend::Cube;
use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::cubecl;
use burn::cubecl::prelude::*;
use burn::tensor::{DType, Shape};

use crate::packed::kernels::f16_to_f32;

/// Rows of `x` per workgroup tile.
pub const TILE_M: usize = 64;
/// Columns of `w` per workgroup tile (the packed rows are padded to a multiple of it).
pub const TILE_N: usize = 64;
/// Reduction steps staged in shared memory per step.
pub const TILE_K: usize = 16;
const UNITS: u32 = 256;
/// WebGPU's guaranteed `maxComputeWorkgroupsPerDimension`.
const MAX_CUBE_COUNT: usize = 65_535;

type Vec4 = Vector<f32, Const<4>>;

/// `x` `[m, k_len]` (contiguous) times the packed `words` `[k_len, words_per_row]` into `out`
/// `[m, n]`. Row tiles run along X (continuing along Z past 65,535), column tiles along Y.
#[cube(launch)]
fn matmul_packed_f16(
    x: &[f32],
    words: &[u32],
    out: &mut [f32],
    rows: usize,
    cols: usize,
    k_len: usize,
    steps: usize,
    words_per_row: usize,
) {
    let row_tile = CUBE_POS_Z as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    if row_tile * 64 >= rows {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    // Loaders: `x` rows `first_row + 4·row ..` at k `col`; `w` columns `4·col ..` at k `row`.
    // FMAs: `row` picks 4 rows, `col` 4 columns.
    let row = unit / 16;
    let col = unit % 16;
    let first_row = row_tile * 64 + row * 4;
    let first_word = CUBE_POS_Y as usize * 32 + col * 2;

    let mut a_tile = Shared::<[Vec4]>::new_slice(256usize);
    let mut b_tile = Shared::<[Vec4]>::new_slice(256usize);
    let mut acc = Array::<Vec4>::new(4usize);
    #[unroll]
    for i in 0..4usize {
        acc[i] = Vec4::new(0.0f32);
    }

    let mut a_next = load_x(x, rows, k_len, first_row, col);
    let mut b_next = load_w(words, row, k_len, row * words_per_row + first_word);
    for step in 0..steps {
        sync_cube();
        a_tile[col * 16 + row] = a_next;
        b_tile[unit] = b_next;
        sync_cube();

        let k = (step + 1) * 16;
        a_next = load_x(x, rows, k_len, first_row, k + col);
        b_next = load_w(words, k + row, k_len, (k + row) * words_per_row + first_word);

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

    let first_col = CUBE_POS_Y as usize * 64 + col * 4;
    #[unroll]
    for i in 0..4usize {
        let r = first_row + i;
        if r < rows {
            let values: Vec4 = acc[i];
            #[unroll]
            for j in 0..4usize {
                if first_col + j < cols {
                    out[r * cols + first_col + j] = values.extract(j);
                }
            }
        }
    }
}

/// `x[first_row + i, k]` for i in 0..4, zero past M or K.
#[cube]
fn load_x(x: &[f32], rows: usize, k_len: usize, first_row: usize, k: usize) -> Vec4 {
    let mut a = Vec4::new(0.0f32);
    if k < k_len {
        #[unroll]
        for i in 0..4usize {
            if first_row + i < rows {
                a.insert(i, x[(first_row + i) * k_len + k]);
            }
        }
    }
    a
}

/// Four consecutive columns of packed row `k` (words `at`, `at + 1`) as f32, zero past K.
#[cube]
fn load_w(words: &[u32], k: usize, k_len: usize, at: usize) -> Vec4 {
    let mut b = Vec4::new(0.0f32);
    if k < k_len {
        let low = words[at];
        let high = words[at + 1];
        b.insert(0usize, f16_to_f32(low & 0xFFFFu32));
        b.insert(1usize, f16_to_f32(low >> 16u32));
        b.insert(2usize, f16_to_f32(high & 0xFFFFu32));
        b.insert(3usize, f16_to_f32(high >> 16u32));
    }
    b
}

/// Launches the kernel on `x`'s device: `x` `[M, K]` f32 (copied once when strided), `words`
/// `[K, N_pad / 2]` u32 with `N_pad` a multiple of [`TILE_N`] → `[M, n]` f32.
pub(super) fn matmul_packed(x: FloatTensor<Cube>, words: IntTensor<Cube>, n: usize) -> FloatTensor<Cube> {
    let x_shape = x.shape();
    let [m, k_len] = [x_shape[0], x_shape[1]];
    let words_per_row = words.shape()[1];
    let client = x.client.clone();
    let out = FloatTensor::<Cube>::new_contiguous(
        client.clone(),
        x.device.clone(),
        Shape::new([m, n]),
        client.empty((m * n).max(1) * size_of::<f32>()),
        DType::F32,
    );
    if m == 0 || n == 0 {
        return out;
    }
    assert!(
        client.properties().hardware.max_units_per_cube >= UNITS,
        "matmul_packed: the kernel needs {UNITS} threads per workgroup"
    );
    let x = Cube::float_reshape(x, Shape::new([m * k_len]));
    let tiles = m.div_ceil(TILE_M);
    let tiles_x = tiles.min(MAX_CUBE_COUNT);
    matmul_packed_f16::launch(
        &client,
        CubeCount::Static(tiles_x as u32, (words_per_row * 2 / TILE_N) as u32, tiles.div_ceil(tiles_x) as u32),
        CubeDim::new_1d(UNITS),
        x.into_buffer_arg(),
        words.into_buffer_arg(),
        out.clone().into_buffer_arg(),
        m,
        n,
        k_len,
        k_len.div_ceil(TILE_K),
        words_per_row,
    );
    out
}
