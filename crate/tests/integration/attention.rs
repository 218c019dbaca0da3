//! Chunked feed-forward rows equal the rows in one piece (on both backends).

use crate::common;

use burn::tensor::{Tensor, TensorData};
use i2vgen::diagnostics::device_check::pseudo_random;

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
