//! Chunked attention equals attention in one piece (on both backends).

use crate::common;

use burn::tensor::{Tensor, TensorData};
use i2vgen::diagnostics::device_check::pseudo_random;
use i2vgen::models::attention::multi_head_chunked;

#[test]
fn chunking_queries_changes_nothing() {
    for (name, device) in common::devices() {
        let make = |t: usize, seed| {
            Tensor::<3>::from_data(TensorData::new(pseudo_random(2 * t * 16, seed), [2, t, 16]), &device)
        };
        let (q, k, v) = (make(37, 1), make(23, 2), make(23, 3));
        let whole = multi_head_chunked(q.clone(), k.clone(), v.clone(), 4, false, usize::MAX);
        // 2 batches × 4 heads × 23 keys = 184 scores per query row: 5 rows per chunk, 8 chunks.
        let chunked = multi_head_chunked(q, k, v, 4, false, 5 * 184);
        let read = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
        let diff = common::max_abs_diff(&read(whole), &read(chunked));
        assert!(diff < 1e-6, "{name}: chunked attention differs by {diff}");
    }
}

/// `map_chunks` (feed-forward rows, images) gives the unchunked result, also for a ragged last chunk.
#[test]
fn map_chunks_changes_nothing() {
    use i2vgen::models::nn::map_chunks;
    for (name, device) in common::devices() {
        let x = Tensor::<2>::from_data(TensorData::new(pseudo_random(10 * 4, 3), [10, 4]), &device);
        let w = Tensor::<2>::from_data(TensorData::new(pseudo_random(4 * 6, 4), [4, 6]), &device);
        let f = |x: Tensor<2>| burn::tensor::activation::gelu(x.matmul(w.clone()));
        let whole = f(x.clone()).into_data().try_to_vec::<f32>().unwrap();
        for n in [1, 3, 4, 10, 64] {
            let chunked = map_chunks(x.clone(), 0, n, f).into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(common::max_abs_diff(&whole, &chunked), 0.0, "{name}: chunks of {n}");
        }
    }
}
