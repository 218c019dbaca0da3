//! The PyTorch layers the networks are built from, with their state-dict field names.

use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;
use i2vgen_shaders::conv::{self, ConvWeight};
use i2vgen_shaders::epilogue::{self, Act};
use i2vgen_shaders::gemm::matmul_packed;
use i2vgen_shaders::packed::PackedF16;

use crate::Result;
use crate::loading::weights::{Weights, key};

/// The most f32 elements one intermediate tensor may hold: 2^26 = 256 MiB, a quarter of WebGPU's
/// usual 1 GiB storage binding. Feed-forward hidden states and the up blocks' concatenated inputs
/// are computed in chunks that stay under it (attention holds no score matrix).
pub const MAX_ELEMENTS: usize = 1 << 26;

/// WebGPU's usual `maxStorageBufferBindingSize` (1 GiB): no tensor held whole may exceed it.
pub const MAX_BINDING_BYTES: usize = 1 << 30;

/// `nn.Linear`: weight stored `[out, in]` in checkpoints, kept transposed for burn. The bias,
/// an activation and a residual run as one epilogue kernel after the bias-free matmul
/// (`i2vgen_shaders::epilogue::bias_act`).
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: LinearWeight,
    pub bias: Option<Tensor<1>>,
}

/// A [`Linear`]'s `[in, out]` weight: f32 for burn's matmul, or packed f16 for
/// `i2vgen_shaders::gemm::matmul_packed` ([`Weights::set_packed_f16`]).
#[derive(Clone, Debug)]
pub enum LinearWeight {
    Dense(Tensor<2>),
    PackedF16(PackedF16),
}

impl Linear {
    pub fn load(w: &mut Weights, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        // `[out, in]` → `[in, out]` (a view; packing makes it contiguous first, as burn's matmul would).
        let weight = w.take(&key(prefix, "weight"), [d_out, d_in])?.transpose();
        let weight =
            if w.packed_f16() { LinearWeight::PackedF16(PackedF16::pack(weight)) } else { LinearWeight::Dense(weight) };
        let bias = if bias { Some(w.take(&key(prefix, "bias"), [d_out])?) } else { None };
        Ok(Self { weight, bias })
    }

    pub fn d_out(&self) -> usize {
        match &self.weight {
            LinearWeight::Dense(weight) => weight.dims()[1],
            LinearWeight::PackedF16(weight) => weight.dims()[1],
        }
    }

    /// # Shapes
    /// `[..., in]` → `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.forward_with(x, Act::Identity, None)
    }

    /// `act(self.forward(x))` in the bias's kernel.
    pub fn forward_act<const D: usize>(&self, x: Tensor<D>, act: Act) -> Tensor<D> {
        self.forward_with(x, act, None)
    }

    /// `self.forward(x) + residual` in the bias's kernel.
    pub fn forward_add<const D: usize>(&self, x: Tensor<D>, residual: Tensor<D>) -> Tensor<D> {
        self.forward_with(x, Act::Identity, Some(residual))
    }

    /// The bias-free matmul alone.
    ///
    /// The leading dimensions are flattened into rows first: burn runs a 3-D input as a batched
    /// GEMM, which for the temporal transformer's `[B·h·w, 16, C]` fills 16 of every 128-row tile.
    pub fn matmul<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mut shape = x.dims();
        let rows = shape[..D - 1].iter().product::<usize>();
        let x = x.reshape([rows, shape[D - 1]]);
        let y = match &self.weight {
            LinearWeight::Dense(weight) => x.matmul(weight.clone()),
            LinearWeight::PackedF16(weight) => matmul_packed(x, weight),
        };
        shape[D - 1] = self.d_out();
        y.reshape(shape)
    }

    fn forward_with<const D: usize>(&self, x: Tensor<D>, act: Act, residual: Option<Tensor<D>>) -> Tensor<D> {
        let y = self.matmul(x);
        if self.bias.is_none() && act == Act::Identity && residual.is_none() {
            return y;
        }
        epilogue::bias_act(y, self.bias.clone(), act, residual)
    }
}

/// `silu(x)` in one kernel (burn's is seven).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    epilogue::bias_act(x, None, Act::Silu, None)
}

/// `nn.Conv2d` (groups 1, dilation 1): the implicit-GEMM kernel of `i2vgen_shaders::conv`, its
/// weight rearranged once at load into the layout the kernel reads; bias and an optional
/// residual in its epilogue. Its output is contiguous NCHW.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: ConvWeight,
    pub bias: Option<Tensor<1>>,
    pub options: ConvOptions<2>,
}

impl Conv2d {
    /// A square `kernel` with `stride` and the same zero `padding` on every side.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = w.take(&key(prefix, "weight"), [c_out, c_in, kernel, kernel])?;
        let bias = if bias { Some(w.take(&key(prefix, "bias"), [c_out])?) } else { None };
        let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
        Ok(Self { weight: conv_weight(w, weight), bias, options })
    }

    /// The same conv with zero padding (before, after) per axis (height, width).
    pub fn with_padding(mut self, padding: [(usize, usize); 2]) -> Self {
        self.options = ConvOptions::new_with_padding(self.options.stride, padding, [1, 1], 1);
        self
    }

    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, C_out, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv::conv2d(x, &self.weight, self.bias.clone(), &self.options, None)
    }

    /// `self.forward(x) + residual` in one kernel.
    pub fn forward_add(&self, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
        conv::conv2d(x, &self.weight, self.bias.clone(), &self.options, Some(residual))
    }

    /// The conv of `x` nearest-upsampled to `size`, the upsampled tensor never written.
    pub fn forward_upsampled(&self, x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        conv::upsample_conv2d(x, size, &self.weight, self.bias.clone(), &self.options, None)
    }

    /// The conv with `rows` (top, bottom) zero rows instead of its own height padding (the VAE's
    /// row bands: halo rows inside, zeros only at the image's edges).
    pub fn forward_rows(&self, x: Tensor<4>, rows: (usize, usize)) -> Tensor<4> {
        let padding = [rows, self.options.padding[1]];
        let options = ConvOptions::new_with_padding(self.options.stride, padding, [1, 1], 1);
        conv::conv2d(x, &self.weight, self.bias.clone(), &options, None)
    }
}

/// A checkpoint conv weight `[C_out, C_in, kh, kw]` in the conv kernel's layout: f32, or packed
/// f16 when `w` asks for it ([`Weights::set_packed_f16`]).
pub fn conv_weight(w: &Weights, weight: Tensor<4>) -> ConvWeight {
    if w.packed_f16() { conv::prepare_weight_packed(weight) } else { conv::prepare_weight(weight) }
}

/// `nn.GroupNorm` (affine) over `[N, C, ...]` of any rank: the fused kernels of
/// `i2vgen_shaders::group_norm` on a cubecl device (3 launches, +1 copy of a strided input, a
/// contiguous output), their burn-op twin on the CPU backend.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    pub weight: Tensor<1>,
    pub bias: Tensor<1>,
    pub groups: usize,
    pub eps: f64,
}

impl GroupNorm {
    pub fn load(w: &mut Weights, prefix: &str, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.take(&key(prefix, "weight"), [channels])?,
            bias: w.take(&key(prefix, "bias"), [channels])?,
            groups,
            eps,
        })
    }

    /// # Shapes
    /// `[N, C, ...]` → `[N, C, ...]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.apply(x, false)
    }

    /// `silu(self.forward(x))` in the same kernels: the GroupNorm → SiLU that opens every
    /// ResnetBlock2D and TemporalConvLayer slot and closes the UNet and the VAE.
    ///
    /// # Shapes
    /// `[N, C, ...]` → `[N, C, ...]`
    pub fn forward_silu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.apply(x, true)
    }

    fn apply<const D: usize>(&self, x: Tensor<D>, silu: bool) -> Tensor<D> {
        let affine = Some((self.weight.clone(), self.bias.clone()));
        i2vgen_shaders::group_norm::group_norm(x, affine, self.groups, self.eps, silu)
    }

    /// [`Self::forward`] (or [`Self::forward_silu`]) of the concatenation of `bands` along dim 2,
    /// band by band: the statistics of all of them, in burn's ops, two-pass like [`group_norm`]
    /// (the fused kernel takes no precomputed statistics yet). Each band adds its mean weighted
    /// by its share of the rows (means, not sums: an f16 sum over a 720p group overflows).
    ///
    /// # Shapes
    /// bands `[N, C, rows_i, W]` → the same
    pub fn forward_bands(&self, bands: &[Tensor<4>], silu: bool) -> Vec<Tensor<4>> {
        let [n, c, _, w] = bands[0].dims();
        let total = bands.iter().map(|band| band.dims()[2]).sum::<usize>() as f64;
        let shares: Vec<f64> = bands.iter().map(|band| band.dims()[2] as f64 / total).collect();
        // Each band as [N, groups, channels of a group, its pixels]. A mean is taken per channel
        // first (N·C reductions side by side; one per group alone leaves a GPU mostly idle), then
        // over the group's channels (each channel has as many pixels).
        let mean_of = |parts: Vec<Tensor<4>>| {
            let weighted =
                parts.into_iter().zip(&shares).map(|(part, &share)| part.mean_dim(3).mean_dim(2).mul_scalar(share));
            weighted.reduce(|a, b| a + b).expect("at least one band")
        };
        let grouped: Vec<Tensor<4>> = bands
            .iter()
            .map(|band| band.clone().reshape([n, self.groups, c / self.groups, band.dims()[2] * w]))
            .collect();
        let mean = mean_of(grouped.clone());
        let centered: Vec<Tensor<4>> = grouped.into_iter().map(|g| g - mean.clone()).collect();
        let std = mean_of(centered.iter().map(|g| g.clone().square()).collect()).add_scalar(self.eps).sqrt();
        let (weight, bias) = (self.weight.clone().reshape([1, c, 1, 1]), self.bias.clone().reshape([1, c, 1, 1]));
        let normed = centered.into_iter().zip(bands).map(|(g, band)| (g / std.clone()).reshape(band.dims()));
        normed
            .map(|band| {
                let y = band * weight.clone() + bias.clone();
                if silu { self::silu(y) } else { y }
            })
            .collect()
    }
}

/// Normalise `[N, C, ...]` per (sample, group of C/groups channels), without the affine, in
/// burn's ops (two-pass: the mean, then the mean of the centred squares). The networks use
/// [`GroupNorm`]; this stays for its one user, `diagnostics::device_check`.
pub fn group_norm<const D: usize>(x: Tensor<D>, groups: usize, eps: f64) -> Tensor<D> {
    let shape = x.dims();
    let n = shape[0];
    let per_group = shape[1..].iter().product::<usize>() / groups;
    let grouped = x.reshape([n, groups, per_group]);
    let centered = grouped.clone() - grouped.mean_dim(2);
    let variance = centered.clone().square().mean_dim(2);
    (centered / variance.add_scalar(eps).sqrt()).reshape(shape)
}

/// `nn.LayerNorm` over the last dimension.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor<1>,
    pub bias: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &mut Weights, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: w.take(&key(prefix, "weight"), [dim])?, bias: w.take(&key(prefix, "bias"), [dim])?, eps })
    }

    /// The fused kernel of `i2vgen_shaders::layer_norm` on a GPU (one launch), burn's
    /// `layer_norm` on the CPU.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        i2vgen_shaders::layer_norm::layer_norm(x, self.weight.clone(), self.bias.clone(), self.eps)
    }
}

/// The activations configs name (`hidden_act`, `act_fn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU.
    Gelu,
    /// `x * sigmoid(1.702 x)`, the original OpenAI CLIP's.
    QuickGelu,
    Silu,
}

impl Activation {
    /// The epilogue kernel's activation.
    pub fn act(self) -> Act {
        match self {
            Self::Gelu => Act::Gelu,
            Self::QuickGelu => Act::QuickGelu,
            Self::Silu => Act::Silu,
        }
    }
}
