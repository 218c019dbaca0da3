//! Chunked feed-forward rows equal the rows in one piece (on both backends).

use crate::common;

use burn::tensor::{Tensor, TensorData};
use i2vgen::diagnostics::device_check::pseudo_random;
use i2vgen::loading::weights::Weights;
use i2vgen::models::attention::FeedForward;

/// `FeedForward::forward_add_chunked` (GEGLU and GELU) gives the unchunked result, also for a
/// ragged last chunk.
#[test]
fn feed_forward_chunks_change_nothing() {
    for (name, device) in common::devices() {
        for geglu in [true, false] {
            let ff = FeedForward::load(&mut Weights::random(&device), "ff", 8, 32, geglu).unwrap();
            let x = Tensor::<3>::from_data(TensorData::new(pseudo_random(2 * 5 * 8, 3), [2, 5, 8]), &device);
            let residual = Tensor::<3>::from_data(TensorData::new(pseudo_random(2 * 5 * 8, 4), [2, 5, 8]), &device);
            let values = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
            let whole = values(ff.forward_add_chunked(x.clone(), residual.clone(), 10));
            for rows in [1, 3, 4, 64] {
                let chunked = values(ff.forward_add_chunked(x.clone(), residual.clone(), rows));
                assert_eq!(common::max_abs_diff(&whole, &chunked), 0.0, "{name}: geglu {geglu}, chunks of {rows}");
            }
        }
    }
}
