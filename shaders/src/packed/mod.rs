//! f16 weights packed two to a `u32` word, for kernels that compute in f32: half the memory of
//! f32 weights on every GPU, with or without `shader-f16` (the kernels unpack with integer ops).
//!
//! [`PackedF16`] is a `[rows, cols]` matrix rounded to f16 (to nearest, ties to even, as
//! `half::f16::from_f32`) and stored as `[rows, cols_pad / 2]` u32 words, column `2w` in the low
//! half of word `w` and `2w + 1` in the high half; `cols_pad` is `cols` rounded up to
//! [`COL_ALIGN`] (zeros past `cols`), so the GEMM and conv kernels' tiles never read past a row.

// NdArray is deprecated upstream but is the CPU reference backend the project tests against;
// the routing the extension macro generates names it too, so the allowance covers the module.
#![allow(deprecated)]

pub(crate) mod kernels;

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Cube, Dispatch, backend_extension};
use burn::tensor::{DType, Int, Tensor};

#[cfg(not(target_arch = "wasm32"))]
use burn::backend::NdArray;

/// Packed rows are padded to a multiple of this many columns: the GEMM's and the conv's 64-wide
/// tiles.
pub const COL_ALIGN: usize = 64;

/// Packing and unpacking as backend operations: kernels on a cubecl device, the host (where the
/// tensors already are) on the CPU backend.
#[backend_extension(Cube, NdArray: cfg(not(target_arch = "wasm32")))]
pub trait PackedBackend: Backend {
    /// f32 `[rows, cols]` (any layout) → u32 `[rows, words_per_row]`.
    fn pack_f16(values: FloatTensor<Self>, words_per_row: usize) -> IntTensor<Self>;
    /// u32 `[rows, words_per_row]` → f32 `[rows, cols]`.
    fn unpack_f16(words: IntTensor<Self>, cols: usize) -> FloatTensor<Self>;
}

impl PackedBackend for Cube {
    fn pack_f16(values: FloatTensor<Self>, words_per_row: usize) -> IntTensor<Self> {
        use burn::backend::ops::FloatTensorOps;
        // The kernel reads f32; other float dtypes widen first (exactly, for f16 and bf16).
        let values =
            if values.dtype == DType::F32 { values } else { Self::float_cast(values, burn::tensor::FloatDType::F32) };
        kernels::pack(values, words_per_row)
    }

    fn unpack_f16(words: IntTensor<Self>, cols: usize) -> FloatTensor<Self> {
        kernels::unpack(words, cols)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl PackedBackend for NdArray {
    fn pack_f16(values: FloatTensor<Self>, words_per_row: usize) -> IntTensor<Self> {
        use burn::backend::TensorMetadata;
        use burn::backend::ops::{FloatTensorOps, IntTensorOps};
        let shape = values.shape();
        let [rows, cols] = [shape[0], shape[1]];
        let data = ready(Self::float_into_data(values));
        let values = data.convert::<f32>().into_vec::<f32>().expect("f32 values");
        let half = |row: usize, col: usize| {
            if col < cols { u32::from(half::f16::from_f32(values[row * cols + col]).to_bits()) } else { 0 }
        };
        let words: Vec<u32> = (0..rows * words_per_row)
            .map(|at| {
                let (row, col) = (at / words_per_row, at % words_per_row * 2);
                half(row, col) | half(row, col + 1) << 16
            })
            .collect();
        Self::int_from_data(burn::tensor::TensorData::new(words, [rows, words_per_row]), &Default::default())
    }

    fn unpack_f16(words: IntTensor<Self>, cols: usize) -> FloatTensor<Self> {
        use burn::backend::TensorMetadata;
        use burn::backend::ops::{FloatTensorOps, IntTensorOps};
        let shape = words.shape();
        let [rows, words_per_row] = [shape[0], shape[1]];
        let data = ready(Self::int_into_data(words));
        let words = data.convert::<u32>().into_vec::<u32>().expect("u32 words");
        let values: Vec<f32> = (0..rows * cols)
            .map(|at| {
                let (row, col) = (at / cols, at % cols);
                let word = words[row * words_per_row + col / 2];
                let bits = if col % 2 == 1 { word >> 16 } else { word & 0xFFFF };
                half::f16::from_bits(bits as u16).to_f32()
            })
            .collect();
        Self::float_from_data(burn::tensor::TensorData::new(values, [rows, cols]), &Default::default())
    }
}

/// NdArray's readback is synchronous: its future is ready at the first poll.
#[cfg(not(target_arch = "wasm32"))]
fn ready<T, E: std::fmt::Debug>(future: impl Future<Output = Result<T, E>>) -> T {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result.expect("NdArray readback"),
        Poll::Pending => unreachable!("NdArray's readback completes at once"),
    }
}

/// A `[rows, cols]` f32 matrix held as f16 pairs in u32 words (see the module docs).
#[derive(Clone, Debug)]
pub struct PackedF16 {
    words: Tensor<2, Int>,
    rows: usize,
    cols: usize,
}

impl PackedF16 {
    /// Rounds `values` `[rows, cols]` to f16 and packs them, on `values`' device (one launch on
    /// a GPU; `values` can be dropped afterwards).
    pub fn pack(values: Tensor<2>) -> Self {
        let [rows, cols] = values.dims();
        let words_per_row = cols.next_multiple_of(COL_ALIGN) / 2;
        let words = Tensor::from_dispatch(Dispatch::pack_f16(values.into_dispatch(), words_per_row));
        Self { words, rows, cols }
    }

    /// The f32 values (each an f16 exactly), `[rows, cols]`: the reference the packed kernels
    /// are tested against, and their route on the CPU backend.
    pub fn unpack(&self) -> Tensor<2> {
        Tensor::from_dispatch(Dispatch::unpack_f16(self.words.clone().into_dispatch(), self.cols))
    }

    /// The u32 words, `[rows, cols_pad / 2]`.
    pub fn words(&self) -> &Tensor<2, Int> {
        &self.words
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes the words take: `rows · cols_pad · 2`.
    pub fn bytes(&self) -> usize {
        self.rows * self.cols.next_multiple_of(COL_ALIGN) * 2
    }
}
