//! f16 ↔ f32 by bit manipulation (exact, no `shader-f16` needed: cubecl 0.11 has no
//! `unpack2x16float`), and the pack / unpack kernels.

use burn::backend::Cube;
use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::cubecl;
use burn::cubecl::prelude::*;
use burn::tensor::{DType, Shape};

const UNITS: u32 = 256;
/// WebGPU's guaranteed `maxComputeWorkgroupsPerDimension`.
const MAX_CUBE_COUNT: usize = 65_535;

/// The f32 value of the f16 in the low 16 bits of `h`: normals and infinities/NaNs rebuilt as
/// f32 bits (exponent rebiased by 127 − 15), subnormals as `mantissa · 2⁻²⁴` (exact in f32, and no
/// f32 subnormal a GPU could flush).
#[cube]
pub(crate) fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u32) << 16u32;
    let exponent = (h >> 10u32) & 0x1Fu32;
    let mantissa = h & 0x3FFu32;
    let normal = sign | ((exponent + 112u32) << 23u32) | (mantissa << 13u32);
    let special = sign | 0x7F80_0000u32 | (mantissa << 13u32);
    let bits = select(exponent == 31u32, special, normal);
    let subnormal = f32::cast_from(mantissa) * 5.960_464_5e-8f32;
    let subnormal = select(sign != 0u32, -subnormal, subnormal);
    select(exponent == 0u32, subnormal, f32::reinterpret(bits))
}

/// The f16 bits of `v` rounded to nearest, ties to even (as `half::f16::from_f32`): NaN stays a
/// (quiet) NaN with the top mantissa bits, values from 65520 up become ∞, values at or below
/// 2⁻²⁵ become ±0, and the rounding carry may step into the exponent (or to ∞), as it should.
#[cube]
pub(crate) fn f32_to_f16(v: f32) -> u32 {
    let x = u32::reinterpret(v);
    let sign = (x >> 16u32) & 0x8000u32;
    let abs = x & 0x7FFF_FFFFu32;
    let mut h = 0u32;
    if abs > 0x7F80_0000u32 {
        h = 0x7E00u32 | ((abs >> 13u32) & 0x3FFu32);
    } else if abs >= 0x4780_0000u32 {
        h = 0x7C00u32;
    } else if abs >= 0x3880_0000u32 {
        // Normal in f16: rebias, keep 10 mantissa bits, round on the 13 dropped.
        let truncated = ((abs >> 23u32) - 112u32) << 10u32 | ((abs >> 13u32) & 0x3FFu32);
        let rest = abs & 0x1FFFu32;
        let up = rest > 0x1000u32 || (rest == 0x1000u32 && (truncated & 1u32) == 1u32);
        h = truncated + select(up, 1u32, 0u32);
    } else if abs > 0x3300_0000u32 {
        // Subnormal in f16: the significand (with its implicit 1) shifted down by 14–24 bits.
        let significand = (abs & 0x7F_FFFFu32) | 0x80_0000u32;
        let shift = 126u32 - (abs >> 23u32);
        let truncated = significand >> shift;
        let rest = significand & ((1u32 << shift) - 1u32);
        let half = 1u32 << (shift - 1u32);
        let up = rest > half || (rest == half && (truncated & 1u32) == 1u32);
        h = truncated + select(up, 1u32, 0u32);
    }
    sign | h
}

/// One thread per word: columns `2w` (low half) and `2w + 1` (high half) of `values`
/// `[rows, cols]`, zero past `cols`.
#[cube(launch)]
fn pack_f16(values: &[f32], words: &mut [u32], cols: usize, words_per_row: usize, len: usize) {
    let at = (CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize) * 256 + UNIT_POS as usize;
    if at < len {
        let row = at / words_per_row;
        let col = (at % words_per_row) * 2;
        let mut low = 0u32;
        let mut high = 0u32;
        if col < cols {
            low = f32_to_f16(values[row * cols + col]);
        }
        if col + 1 < cols {
            high = f32_to_f16(values[row * cols + col + 1]);
        }
        words[at] = low | (high << 16u32);
    }
}

/// One thread per value of `values` `[rows, cols]`.
#[cube(launch)]
fn unpack_f16(words: &[u32], values: &mut [f32], cols: usize, words_per_row: usize, len: usize) {
    let at = (CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize) * 256 + UNIT_POS as usize;
    if at < len {
        let row = at / cols;
        let col = at % cols;
        let word = words[row * words_per_row + col / 2];
        values[at] = f16_to_f32(select(col % 2 == 1, word >> 16u32, word & 0xFFFFu32));
    }
}

/// Workgroups for `len` threads: along X, continuing along Y past 65,535.
fn cube_count(len: usize) -> CubeCount {
    let groups = len.div_ceil(UNITS as usize).max(1);
    let x = groups.min(MAX_CUBE_COUNT);
    CubeCount::Static(x as u32, groups.div_ceil(x) as u32, 1)
}

/// `values` `[rows, cols]` f32 → u32 words `[rows, words_per_row]`.
pub(super) fn pack(values: FloatTensor<Cube>, words_per_row: usize) -> IntTensor<Cube> {
    let shape = values.shape();
    let [rows, cols] = [shape[0], shape[1]];
    let client = values.client.clone();
    let len = rows * words_per_row;
    let words = IntTensor::<Cube>::new_contiguous(
        client.clone(),
        values.device.clone(),
        Shape::new([rows, words_per_row]),
        client.empty(len.max(1) * size_of::<u32>()),
        DType::U32,
    );
    if len == 0 {
        return words;
    }
    let values = Cube::float_reshape(values, Shape::new([rows * cols]));
    pack_f16::launch(
        &client,
        cube_count(len),
        CubeDim::new_1d(UNITS),
        values.into_buffer_arg(),
        words.clone().into_buffer_arg(),
        cols,
        words_per_row,
        len,
    );
    words
}

/// u32 words `[rows, words_per_row]` → f32 `[rows, cols]`.
pub(super) fn unpack(words: IntTensor<Cube>, cols: usize) -> FloatTensor<Cube> {
    let shape = words.shape();
    let [rows, words_per_row] = [shape[0], shape[1]];
    let client = words.client.clone();
    let len = rows * cols;
    let values = FloatTensor::<Cube>::new_contiguous(
        client.clone(),
        words.device.clone(),
        Shape::new([rows, cols]),
        client.empty(len.max(1) * size_of::<f32>()),
        DType::F32,
    );
    if len == 0 {
        return values;
    }
    unpack_f16::launch(
        &client,
        cube_count(len),
        CubeDim::new_1d(UNITS),
        words.into_buffer_arg(),
        values.clone().into_buffer_arg(),
        cols,
        words_per_row,
        len,
    );
    values
}
