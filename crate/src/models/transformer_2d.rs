//! diffusers `models/transformers/transformer_2d.py`: `Transformer2DModel` with linear
//! `proj_in`/`proj_out` (continuous input), one `BasicTransformerBlock` per layer.

use burn::tensor::Tensor;

use crate::Result;
use crate::loading::weights::{Weights, key};
use crate::models::attention::BasicTransformerBlock;
use crate::models::nn::{GroupNorm, Linear};

#[derive(Clone, Debug)]
pub struct Transformer2DModel {
    pub norm: GroupNorm,
    pub proj_in: Linear,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Linear,
}

impl Transformer2DModel {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        heads: usize,
        dim_head: usize,
        channels: usize,
        groups: usize,
        cross_attention_dim: usize,
    ) -> Result<Self> {
        Self::load_with_context(w, prefix, heads, dim_head, channels, groups, Some(cross_attention_dim))
    }

    /// The layers shared with `TransformerTemporalModel`, which has no cross-attention context.
    pub(crate) fn load_with_context(
        w: &mut Weights,
        prefix: &str,
        heads: usize,
        dim_head: usize,
        channels: usize,
        groups: usize,
        cross_attention_dim: Option<usize>,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        let block = key(prefix, "transformer_blocks.0");
        Ok(Self {
            norm: GroupNorm::load(w, &key(prefix, "norm"), groups, channels, 1e-6)?,
            proj_in: Linear::load(w, &key(prefix, "proj_in"), channels, inner, true)?,
            transformer_blocks: vec![BasicTransformerBlock::load(
                w,
                &block,
                inner,
                heads,
                dim_head,
                cross_attention_dim,
            )?],
            proj_out: Linear::load(w, &key(prefix, "proj_out"), inner, channels, true)?,
        })
    }

    /// Attention over the H·W positions of each frame.
    ///
    /// # Shapes
    /// x `[B*F, C, H, W]`, context `[B, S, cross_attention_dim]` (one per video) → `[B*F, C, H, W]`
    pub fn forward(&self, x: Tensor<4>, context: Tensor<3>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let residual = x.clone();
        let mut t = self.proj_in.forward(self.norm.forward(x).reshape([n, c, h * w]).swap_dims(1, 2));
        for block in &self.transformer_blocks {
            t = block.forward(t, Some(context.clone()));
        }
        let t = self.proj_out.forward(t);
        t.swap_dims(1, 2).reshape([n, c, h, w]) + residual
    }
}
