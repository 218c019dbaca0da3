//! diffusers `models/transformers/transformer_temporal.py`: `TransformerTemporalModel`, attention
//! over the frames of each pixel (`double_self_attention`: attn2 is self-attention too).

use burn::tensor::Tensor;

use crate::Result;
use crate::loading::weights::Weights;
use crate::models::attention::BasicTransformerBlock;
use crate::models::nn::{GroupNorm, Linear};
use crate::models::transformer_2d::Transformer2DModel;

#[derive(Clone, Debug)]
pub struct TransformerTemporalModel {
    pub norm: GroupNorm,
    pub proj_in: Linear,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Linear,
}

impl TransformerTemporalModel {
    /// The same layers as `Transformer2DModel`, without a cross-attention context.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        heads: usize,
        dim_head: usize,
        channels: usize,
        groups: usize,
    ) -> Result<Self> {
        let Transformer2DModel { norm, proj_in, transformer_blocks, proj_out } =
            Transformer2DModel::load_with_context(w, prefix, heads, dim_head, channels, groups, None)?;
        Ok(Self { norm, proj_in, transformer_blocks, proj_out })
    }

    /// # Shapes
    /// `[B*F, C, H, W]` → `[B*F, C, H, W]`
    pub fn forward(&self, x: Tensor<4>, num_frames: usize) -> Tensor<4> {
        let [bf, c, h, w] = x.dims();
        let b = bf / num_frames;
        // [B, F, C, H, W] → [B, C, F, H, W] for the norm, then one sequence of F per pixel.
        let normed = self.norm.forward(x.clone().reshape([b, num_frames, c, h, w]).swap_dims(1, 2));
        self.attend(normed, x)
    }

    /// [`Self::forward`] on row bands of every frame (see `frame_chunks`): attention sees each
    /// pixel's frames as a whole, the GroupNorm takes statistics over all bands.
    ///
    /// # Shapes
    /// bands `[B*F, C, rows_i, W]` → the same
    pub fn forward_bands(&self, bands: Vec<Tensor<4>>, num_frames: usize) -> Vec<Tensor<4>> {
        let [bf, c, _, w] = bands[0].dims();
        let b = bf / num_frames;
        // [B, C, F·rows, W]: the norm's statistics weigh each band by its share of the rows.
        let flat: Vec<Tensor<4>> = bands
            .iter()
            .map(|x| {
                let rows = x.dims()[2];
                x.clone().reshape([b, num_frames, c, rows, w]).swap_dims(1, 2).reshape([b, c, num_frames * rows, w])
            })
            .collect();
        let normed = self.norm.forward_bands(&flat, false);
        normed
            .into_iter()
            .zip(bands)
            .map(|(normed, x)| {
                let rows = x.dims()[2];
                self.attend(normed.reshape([b, c, num_frames, rows, w]), x)
            })
            .collect()
    }

    /// The layers after the norm, and the residual.
    ///
    /// # Shapes
    /// normed `[B, C, F, H, W]`, residual `[B*F, C, H, W]` → `[B*F, C, H, W]`
    fn attend(&self, normed: Tensor<5>, residual: Tensor<4>) -> Tensor<4> {
        let [b, c, num_frames, h, w] = normed.dims();
        let mut t = self.proj_in.forward(normed.permute([0, 3, 4, 2, 1]).reshape([b * h * w, num_frames, c]));
        for block in &self.transformer_blocks {
            t = block.forward(t, None);
        }
        let t = self.proj_out.forward(t);
        let t = t.reshape([b, h, w, num_frames, c]).permute([0, 3, 4, 1, 2]).reshape([b * num_frames, c, h, w]);
        t + residual
    }
}
