//! diffusers `models/resnet.py` and `models/downsampling.py`/`upsampling.py`: `ResnetBlock2D`,
//! `Downsample2D`, `Upsample2D` — shared by the VAE and both 3D UNets.

use burn::tensor::Tensor;
use i2vgen_shaders::conv::{self, ConvWeight};

use crate::Result;
use crate::loading::weights::{Weights, key};
use crate::models::nn::{Conv2d, GroupNorm, Linear, conv_weight, silu};

/// `ResnetBlock2D` (time_embedding_norm "default", output_scale_factor 1, SiLU).
#[derive(Clone, Debug)]
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    /// Present when the block takes a time embedding (UNets, not the VAE).
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    /// 1×1 conv when the channel count changes.
    pub conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::load(w, &key(prefix, "norm1"), groups, c_in, eps)?,
            conv1: Conv2d::load(w, &key(prefix, "conv1"), c_in, c_out, 3, 1, 1, true)?,
            time_emb_proj: temb_channels
                .map(|t| Linear::load(w, &key(prefix, "time_emb_proj"), t, c_out, true))
                .transpose()?,
            norm2: GroupNorm::load(w, &key(prefix, "norm2"), groups, c_out, eps)?,
            conv2: Conv2d::load(w, &key(prefix, "conv2"), c_out, c_out, 3, 1, 1, true)?,
            conv_shortcut: (c_in != c_out)
                .then(|| Conv2d::load(w, &key(prefix, "conv_shortcut"), c_in, c_out, 1, 1, 0, true))
                .transpose()?,
        })
    }

    /// # Shapes
    /// x `[N, C_in, H, W]`, temb `[N, T]` → `[N, C_out, H, W]`
    ///
    /// The shortcut is added in `conv2`'s epilogue (diffusers: `input_tensor + hidden_states`,
    /// the same sum).
    pub fn forward(&self, x: Tensor<4>, temb: Option<Tensor<2>>) -> Tensor<4> {
        let mut h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let [n, c] = [h.dims()[0], h.dims()[1]];
            h = h + proj.forward(silu(temb)).reshape([n, c, 1, 1]);
        }
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        self.conv2.forward_add(self.norm2.forward_silu(h), shortcut)
    }
}

/// `Downsample2D` with a conv (key `downsamplers.0.conv`). padding 0 means diffusers' asymmetric
/// (0, 1, 0, 1) zero pad before a stride-2 conv (the VAE), here the conv's own padding; padding 1
/// is the UNets' symmetric one.
#[derive(Clone, Debug)]
pub struct Downsample2D {
    pub conv: Conv2d,
}

impl Downsample2D {
    pub fn load(w: &mut Weights, prefix: &str, channels: usize, padding: usize) -> Result<Self> {
        let conv = Conv2d::load(w, &key(prefix, "conv"), channels, channels, 3, 2, padding, true)?;
        Ok(Self { conv: if padding == 0 { conv.with_padding([(0, 1), (0, 1)]) } else { conv } })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

/// `Upsample2D`: nearest ×2 (or to an explicit size when the skip connection is odd-sized),
/// then a 3×3 conv (key `upsamplers.0.conv`).
#[derive(Clone, Debug)]
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn load(w: &mut Weights, prefix: &str, channels: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::load(w, &key(prefix, "conv"), channels, channels, 3, 1, 1, true)? })
    }

    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, 2H, 2W]`, or `[N, C, size.0, size.1]`
    ///
    /// One kernel: the conv reads `x` through the upsampling.
    pub fn forward(&self, x: Tensor<4>, size: Option<[usize; 2]>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        self.conv.forward_upsampled(x, size.unwrap_or([2 * h, 2 * w]))
    }
}

/// One `nn.Sequential(GroupNorm, SiLU, [Dropout], Conv3d((3,1,1)))` slot of a TemporalConvLayer.
#[derive(Clone, Debug)]
pub struct TemporalConv {
    pub norm: GroupNorm,
    /// The checkpoint's `[C_out, C_in, 3, 1, 1]` weight, prepared as a `(3, 1)` conv over
    /// `[B, C, F, H·W]` (see `i2vgen_shaders::conv::temporal_conv`).
    pub weight: ConvWeight,
    pub bias: Tensor<1>,
}

impl TemporalConv {
    /// One implicit GEMM with K = 3·C over the zero-padded frames, the bias and `residual` in its
    /// epilogue: the same sums as `conv3d`.
    ///
    /// # Shapes
    /// `[B, C, F, H, W]` → `[B, C, F, H, W]`
    fn forward(&self, x: Tensor<5>, residual: Option<Tensor<5>>) -> Tensor<5> {
        conv::temporal_conv(self.norm.forward_silu(x), &self.weight, Some(self.bias.clone()), residual)
    }
}

/// `TemporalConvLayer`: four GN-SiLU-Conv3d(3,1,1) over frames, with a residual around them
/// (added in the last conv's epilogue).
#[derive(Clone, Debug)]
pub struct TemporalConvLayer {
    /// `conv1.{0,2}`, `conv2.{0,3}`, `conv3.{0,3}`, `conv4.{0,3}`
    pub convs: [TemporalConv; 4],
}

impl TemporalConvLayer {
    pub fn load(w: &mut Weights, prefix: &str, channels: usize, groups: usize) -> Result<Self> {
        let mut load = |i: usize| -> Result<TemporalConv> {
            let seq = key(prefix, &format!("conv{}", i + 1));
            // The first slot has no dropout, so its conv sits at index 2, the others at 3.
            let conv = key(&seq, if i == 0 { "2" } else { "3" });
            let weight = w.take(&key(&conv, "weight"), [channels, channels, 3, 1, 1])?;
            let [c_out, c_in, taps, ..] = weight.dims();
            Ok(TemporalConv {
                norm: GroupNorm::load(w, &key(&seq, "0"), groups, channels, 1e-5)?,
                weight: conv_weight(w, weight.reshape([c_out, c_in, taps, 1])),
                bias: w.take(&key(&conv, "bias"), [channels])?,
            })
        };
        Ok(Self { convs: [load(0)?, load(1)?, load(2)?, load(3)?] })
    }

    /// # Shapes
    /// `[B*F, C, H, W]` → `[B*F, C, H, W]`
    pub fn forward(&self, x: Tensor<4>, num_frames: usize) -> Tensor<4> {
        let [bf, c, h, w] = x.dims();
        let b = bf / num_frames;
        let identity = x.reshape([b, num_frames, c, h, w]).swap_dims(1, 2);
        let [first, middle @ .., last] = &self.convs;
        let mut y = first.forward(identity.clone(), None);
        for conv in middle {
            y = conv.forward(y, None);
        }
        last.forward(y, Some(identity)).swap_dims(1, 2).reshape([bf, c, h, w])
    }

    /// [`Self::forward`] on row bands of every frame (see `frame_chunks`): the convolutions
    /// see each pixel's frames as a whole, the GroupNorms take statistics over all bands.
    ///
    /// # Shapes
    /// bands `[B*F, C, rows_i, W]` → the same
    pub fn forward_bands(&self, bands: Vec<Tensor<4>>, num_frames: usize) -> Vec<Tensor<4>> {
        let [bf, c, _, w] = bands[0].dims();
        let b = bf / num_frames;
        // [B, C, F, rows, W], and [B, C, F·rows, W] for the norm (a band's share of the rows).
        let to_5d = |x: Tensor<4>| {
            let rows = x.dims()[2];
            x.reshape([b, num_frames, c, rows, w]).swap_dims(1, 2)
        };
        let flat = |x: &Tensor<5>| {
            let [_, _, f, rows, _] = x.dims();
            x.clone().reshape([b, c, f * rows, w])
        };
        let identity: Vec<Tensor<5>> = bands.into_iter().map(to_5d).collect();
        let mut y = identity.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            let normed = conv.norm.forward_bands(&y.iter().map(flat).collect::<Vec<_>>(), true);
            y = normed
                .into_iter()
                .zip(&identity)
                .map(|(x, residual)| {
                    let x = x.reshape(residual.dims());
                    let residual = (i == self.convs.len() - 1).then(|| residual.clone());
                    conv::temporal_conv(x, &conv.weight, Some(conv.bias.clone()), residual)
                })
                .collect();
        }
        y.into_iter()
            .map(|x| {
                let rows = x.dims()[3];
                x.swap_dims(1, 2).reshape([bf, c, rows, w])
            })
            .collect()
    }
}
