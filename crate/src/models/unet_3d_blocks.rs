//! diffusers `models/unets/unet_3d_blocks.py`: the down, mid and up blocks both 3D UNets share.
//!
//! `DownBlock3D` serves `CrossAttnDownBlock3D` (with attentions) and `DownBlock3D` (without);
//! `UpBlock3D` likewise serves `CrossAttnUpBlock3D` and `UpBlock3D`. Each layer runs
//! ResnetBlock2D → TemporalConvLayer → [Transformer2DModel → TransformerTemporalModel].

use burn::tensor::Tensor;

use crate::Result;
use crate::loading::weights::{Weights, key};
use crate::models::frame_chunks::{FrameChunks, Split};
use crate::models::nn::MAX_ELEMENTS;
use crate::models::resnet::{Downsample2D, ResnetBlock2D, TemporalConvLayer, Upsample2D};
use crate::models::transformer_2d::Transformer2DModel;
use crate::models::transformer_temporal::TransformerTemporalModel;

/// Widths and norms shared by every block of a UNet.
#[derive(Clone, Copy, Debug)]
pub struct BlockDims {
    pub temb_channels: usize,
    pub groups: usize,
    pub cross_attention_dim: usize,
    /// Channels per attention head (diffusers passes it as `num_attention_heads`).
    pub head_dim: usize,
}

/// The layers of one resolution: resnets and temporal convs, optionally both transformers.
#[derive(Clone, Debug)]
pub struct Layers {
    pub resnets: Vec<ResnetBlock2D>,
    pub temp_convs: Vec<TemporalConvLayer>,
    pub attentions: Vec<Transformer2DModel>,
    pub temp_attentions: Vec<TransformerTemporalModel>,
}

impl Layers {
    /// `inputs[i]` is the input width of resnet i; every layer outputs `c_out`.
    fn load(
        w: &mut Weights,
        prefix: &str,
        inputs: &[usize],
        c_out: usize,
        attention: bool,
        d: BlockDims,
    ) -> Result<Self> {
        let heads = c_out / d.head_dim;
        let mut layers = Self { resnets: vec![], temp_convs: vec![], attentions: vec![], temp_attentions: vec![] };
        for (i, &c_in) in inputs.iter().enumerate() {
            let at = |name: &str| key(prefix, &format!("{name}.{i}"));
            layers.resnets.push(ResnetBlock2D::load(
                w,
                &at("resnets"),
                c_in,
                c_out,
                Some(d.temb_channels),
                d.groups,
                1e-5,
            )?);
            layers.temp_convs.push(TemporalConvLayer::load(w, &at("temp_convs"), c_out, d.groups)?);
            if attention {
                layers.attentions.push(Transformer2DModel::load(
                    w,
                    &at("attentions"),
                    heads,
                    d.head_dim,
                    c_out,
                    d.groups,
                    d.cross_attention_dim,
                )?);
                layers.temp_attentions.push(TransformerTemporalModel::load(
                    w,
                    &at("temp_attentions"),
                    heads,
                    d.head_dim,
                    c_out,
                    d.groups,
                )?);
            }
        }
        Ok(layers)
    }

    /// Layer `i`: resnet → temporal conv → spatial transformer → temporal transformer, each
    /// spatial layer on every piece of `x`, each temporal one on row bands (see
    /// `frame_chunks`). `skip` (up blocks) is concatenated to `x` first.
    fn forward(
        &self,
        i: usize,
        x: FrameChunks,
        skip: Option<FrameChunks>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
    ) -> FrameChunks {
        let frames = x.frames();
        let resnet = &self.resnets[i];
        let x = match skip {
            None => x.map(|x, rows| resnet.forward(x, Some(rows.of(temb)))),
            Some(skip) => x.zip_map(skip, |x, skip, rows| concat_resnet(resnet, x, skip, rows.of(temb))),
        };
        let temp_conv = &self.temp_convs[i];
        let mut x = x.temporal(|x| temp_conv.forward(x, frames), |bands| temp_conv.forward_bands(bands, frames));
        if let (Some(attn), Some(temp)) = (self.attentions.get(i), self.temp_attentions.get(i)) {
            x = x.map(|x, rows| attn.forward(x, rows.videos_of(context)));
            x = x.temporal(|x| temp.forward(x, frames), |bands| temp.forward_bands(bands, frames));
        }
        x
    }
}

/// An up layer's resnet on `cat([x, skip], 1)`, a few images at a time so the concatenation
/// stays under [`MAX_ELEMENTS`] (1.8 GB at once on a 720p video's first level).
fn concat_resnet(resnet: &ResnetBlock2D, x: Tensor<4>, skip: Tensor<4>, temb: Tensor<2>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let per_image = (c + skip.dims()[1]) * h * w;
    let images = (MAX_ELEMENTS / per_image).max(1);
    if images >= n {
        return resnet.forward(Tensor::cat(vec![x, skip], 1), Some(temb));
    }
    let parts: Vec<Tensor<4>> = (0..n)
        .step_by(images)
        .map(|start| {
            let k = images.min(n - start);
            let input = Tensor::cat(vec![x.clone().narrow(0, start, k), skip.clone().narrow(0, start, k)], 1);
            resnet.forward(input, Some(temb.clone().narrow(0, start, k)))
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// `CrossAttnDownBlock3D` / `DownBlock3D`.
#[derive(Clone, Debug)]
pub struct DownBlock3D {
    pub layers: Layers,
    /// `downsamplers.0`
    pub downsampler: Option<Downsample2D>,
}

impl DownBlock3D {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        num_layers: usize,
        c_in: usize,
        c_out: usize,
        attention: bool,
        downsample: bool,
        d: BlockDims,
    ) -> Result<Self> {
        let inputs: Vec<usize> = (0..num_layers).map(|i| if i == 0 { c_in } else { c_out }).collect();
        Ok(Self {
            layers: Layers::load(w, prefix, &inputs, c_out, attention, d)?,
            downsampler: downsample
                .then(|| Downsample2D::load(w, &key(prefix, "downsamplers.0"), c_out, 1))
                .transpose()?,
        })
    }

    /// Returns the output, split as `below` (the next level's split), and the skip connections
    /// it adds (one per layer, one after downsampling).
    pub fn forward(
        &self,
        x: FrameChunks,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        below: Split,
    ) -> (FrameChunks, Vec<FrameChunks>) {
        let (x, mut skips) = self.forward_layers(x, temb, context);
        let x = self.downsample(x, &mut skips, below);
        (x, skips)
    }

    /// The layers without the downsampler: their output and their skip connections (one per
    /// layer). A DeepCache shallow step runs only this much of the first down block.
    ///
    /// # Shapes
    /// `[B*F, c_in, h, w]` → `[B*F, c_out, h, w]`, skips `[B*F, c_out, h, w]` each
    pub fn forward_layers(
        &self,
        mut x: FrameChunks,
        temb: &Tensor<2>,
        context: &Tensor<3>,
    ) -> (FrameChunks, Vec<FrameChunks>) {
        let mut skips = Vec::new();
        for i in 0..self.layers.resnets.len() {
            x = self.layers.forward(i, x, None, temb, context);
            skips.push(x.clone());
        }
        (x, skips)
    }

    /// The downsampler on each piece, when the block has one, its output split as `below` and
    /// also pushed onto `skips`.
    ///
    /// # Shapes
    /// `[B*F, c_out, h, w]` → `[B*F, c_out, ⌈h/2⌉, ⌈w/2⌉]` (unchanged without a downsampler)
    pub fn downsample(&self, x: FrameChunks, skips: &mut Vec<FrameChunks>, below: Split) -> FrameChunks {
        match &self.downsampler {
            Some(down) => {
                let x = x.map(|x, _| down.forward(x)).resplit(below);
                skips.push(x.clone());
                x
            }
            None => x,
        }
    }
}

/// `UNetMidBlock3DCrossAttn`: resnet → temporal conv, then (transformer → temporal transformer →
/// resnet → temporal conv) once.
#[derive(Clone, Debug)]
pub struct UNetMidBlock3DCrossAttn {
    pub resnets: Vec<ResnetBlock2D>,
    pub temp_convs: Vec<TemporalConvLayer>,
    pub attentions: Vec<Transformer2DModel>,
    pub temp_attentions: Vec<TransformerTemporalModel>,
}

impl UNetMidBlock3DCrossAttn {
    pub fn load(w: &mut Weights, prefix: &str, channels: usize, d: BlockDims) -> Result<Self> {
        let heads = channels / d.head_dim;
        let at = |name: &str, i: usize| key(prefix, &format!("{name}.{i}"));
        let resnet = |w: &mut Weights, i| {
            ResnetBlock2D::load(w, &at("resnets", i), channels, channels, Some(d.temb_channels), d.groups, 1e-5)
        };
        let temp_conv = |w: &mut Weights, i| TemporalConvLayer::load(w, &at("temp_convs", i), channels, d.groups);
        Ok(Self {
            resnets: vec![resnet(w, 0)?, resnet(w, 1)?],
            temp_convs: vec![temp_conv(w, 0)?, temp_conv(w, 1)?],
            attentions: vec![Transformer2DModel::load(
                w,
                &at("attentions", 0),
                heads,
                d.head_dim,
                channels,
                d.groups,
                d.cross_attention_dim,
            )?],
            temp_attentions: vec![TransformerTemporalModel::load(
                w,
                &at("temp_attentions", 0),
                heads,
                d.head_dim,
                channels,
                d.groups,
            )?],
        })
    }

    pub fn forward(&self, x: FrameChunks, temb: &Tensor<2>, context: &Tensor<3>) -> FrameChunks {
        let frames = x.frames();
        let resnet = |x: FrameChunks, i: usize| x.map(|x, rows| self.resnets[i].forward(x, Some(rows.of(temb))));
        let temp_conv = |x: FrameChunks, i: usize| {
            let conv = &self.temp_convs[i];
            x.temporal(|x| conv.forward(x, frames), |bands| conv.forward_bands(bands, frames))
        };
        let x = temp_conv(resnet(x, 0), 0);
        let x = x.map(|x, rows| self.attentions[0].forward(x, rows.videos_of(context)));
        let temp = &self.temp_attentions[0];
        let x = x.temporal(|x| temp.forward(x, frames), |bands| temp.forward_bands(bands, frames));
        temp_conv(resnet(x, 1), 1)
    }
}

/// `CrossAttnUpBlock3D` / `UpBlock3D`: each layer first concatenates a skip connection.
#[derive(Clone, Debug)]
pub struct UpBlock3D {
    pub layers: Layers,
    /// `upsamplers.0`
    pub upsampler: Option<Upsample2D>,
}

impl UpBlock3D {
    /// Channels as diffusers' `get_up_block`: `prev_output_channel` comes from below,
    /// `c_in` is the skip width of the last layer, the others take `c_out`-wide skips.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        num_layers: usize,
        c_in: usize,
        prev_output_channel: usize,
        c_out: usize,
        attention: bool,
        upsample: bool,
        d: BlockDims,
    ) -> Result<Self> {
        let inputs: Vec<usize> = (0..num_layers)
            .map(|i| {
                let skip = if i == num_layers - 1 { c_in } else { c_out };
                let below = if i == 0 { prev_output_channel } else { c_out };
                below + skip
            })
            .collect();
        Ok(Self {
            layers: Layers::load(w, prefix, &inputs, c_out, attention, d)?,
            upsampler: upsample.then(|| Upsample2D::load(w, &key(prefix, "upsamplers.0"), c_out)).transpose()?,
        })
    }

    /// `skips` are popped from the end. The upsampler targets the size of the next skip, which
    /// is 2× except below odd sizes (diffusers' `forward_upsample_size`), and runs on the pieces
    /// of `above` (the next level's split).
    pub fn forward(
        &self,
        mut x: FrameChunks,
        skips: &mut Vec<FrameChunks>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        above: Split,
    ) -> FrameChunks {
        for i in 0..self.layers.resnets.len() {
            let skip = skips.pop().expect("one skip connection per up layer");
            x = self.layers.forward(i, x, Some(skip), temb, context);
        }
        match &self.upsampler {
            Some(up) => {
                let size = skips.last().map(|s| {
                    let [_, _, h, w] = s.dims();
                    [h, w]
                });
                x.resplit(above).map(|x, _| up.forward(x, size))
            }
            None => x,
        }
    }
}
