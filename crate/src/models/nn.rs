//! The PyTorch layers the networks are built from, with their state-dict field names.

use burn::tensor::module::{conv2d, linear};
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Tensor, activation};

use crate::Result;
use crate::loading::weights::{Weights, key};

/// The most f32 elements one intermediate tensor may hold: 2^26 = 256 MiB, a quarter of WebGPU's
/// usual 1 GiB storage binding. Attention scores, feed-forward hidden states and the up blocks'
/// concatenated inputs are computed in chunks that stay under it.
pub const MAX_ELEMENTS: usize = 1 << 26;

/// WebGPU's usual `maxStorageBufferBindingSize` (1 GiB): no tensor held whole may exceed it.
pub const MAX_BINDING_BYTES: usize = 1 << 30;

/// Run `f` on chunks of `x` along dimension `dim` of at most `n` entries each, and concatenate
/// the results along the same dimension: exact for any `f` that treats entries independently.
pub fn map_chunks<const D: usize, const E: usize>(
    x: Tensor<D>,
    dim: usize,
    n: usize,
    f: impl Fn(Tensor<D>) -> Tensor<E>,
) -> Tensor<E> {
    let len = x.dims()[dim];
    if n >= len {
        return f(x);
    }
    let parts: Vec<Tensor<E>> =
        (0..len).step_by(n.max(1)).map(|start| f(x.clone().narrow(dim, start, n.min(len - start)))).collect();
    Tensor::cat(parts, dim)
}

/// `nn.Linear`: weight stored `[out, in]` in checkpoints, kept transposed for burn.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor<2>,
    pub bias: Option<Tensor<1>>,
}

impl Linear {
    pub fn load(w: &mut Weights, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = w.take(&key(prefix, "weight"), [d_out, d_in])?.transpose();
        let bias = if bias { Some(w.take(&key(prefix, "bias"), [d_out])?) } else { None };
        Ok(Self { weight, bias })
    }

    pub fn d_out(&self) -> usize {
        self.weight.dims()[1]
    }

    /// # Shapes
    /// `[..., in]` → `[..., out]`
    ///
    /// The leading dimensions are flattened into rows first: burn runs a 3-D input as a batched
    /// GEMM, which for the temporal transformer's `[B·h·w, 16, C]` fills 16 of every 128-row tile.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mut shape = x.dims();
        let rows = shape[..D - 1].iter().product::<usize>();
        let y = linear(x.reshape([rows, shape[D - 1]]), self.weight.clone(), self.bias.clone());
        shape[D - 1] = self.d_out();
        y.reshape(shape)
    }
}

/// `nn.Conv2d` with square kernel, stride and symmetric padding.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Tensor<4>,
    pub bias: Option<Tensor<1>>,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
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
        Ok(Self { weight, bias, stride, padding })
    }

    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, C_out, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let options = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1);
        conv2d(x, self.weight.clone(), self.bias.clone(), options)
    }
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
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => activation::gelu(x),
            Self::QuickGelu => x.clone() * activation::sigmoid(x.mul_scalar(1.702)),
            Self::Silu => activation::silu(x),
        }
    }
}

/// Zero-pad the last two dimensions by (top, bottom, left, right).
pub fn pad_hw(x: Tensor<4>, top: usize, bottom: usize, left: usize, right: usize) -> Tensor<4> {
    x.pad([(0, 0), (0, 0), (top, bottom), (left, right)], PadMode::Constant(0.0))
}
