//! Values on their way back from the GPU, with their shape: the one await point between steps.

use burn::tensor::Tensor;
use wasm_bindgen::prelude::*;

use crate::IntoJs;

/// A tensor whose values are on their way back from the GPU.
#[wasm_bindgen]
pub struct Readback {
    tensor: Tensor<1>,
    shape: Vec<u32>,
}

#[wasm_bindgen]
impl Readback {
    /// The tensor's shape (`[F, h, w, 3]` for a preview, `[H, W, 3]` for a frame).
    #[wasm_bindgen(getter)]
    pub fn shape(&self) -> Vec<u32> {
        self.shape.clone()
    }

    /// Wait for the GPU and return the values as f32 (flat, row-major).
    pub async fn read(self) -> Result<Vec<f32>, JsError> {
        let data =
            self.tensor.into_data_async().await.map_err(|e| format!("reading back from the GPU failed: {e:?}")).js()?;
        data.convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("unexpected GPU result: {e:?}")).js()
    }
}

impl<const D: usize> From<Tensor<D>> for Readback {
    fn from(tensor: Tensor<D>) -> Self {
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        Self { tensor: tensor.reshape([n]), shape: dims.iter().map(|&d| d as u32).collect() }
    }
}
