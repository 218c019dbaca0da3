//! diffusers `models/embeddings.py`: `get_timestep_embedding`, `Timesteps`, `TimestepEmbedding`.

use burn::tensor::{Device, Tensor, TensorData};
use i2vgen_shaders::epilogue::Act;

use crate::Result;
use crate::loading::weights::{Weights, key};
use crate::models::nn::Linear;

/// Sinusoidal embedding of (possibly fractional) timesteps, as `Timesteps(dim, flip_sin_to_cos,
/// downscale_freq_shift)`. Computed on the host: the frequencies and arguments in f32 exactly as
/// diffusers does, sin/cos in f64 (GPU trigonometry is too coarse for arguments near 1000).
///
/// # Shapes
/// `[N]` → `[N, dim]`
pub fn timestep_embedding(t: &[f32], dim: usize, flip_sin_to_cos: bool, shift: f32, device: &Device) -> Tensor<2> {
    let half = dim / 2;
    let log_period = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (log_period * i as f32 / (half as f32 - shift)).exp()).collect();
    let mut values = Vec::with_capacity(t.len() * dim);
    for &t in t {
        let args = freqs.iter().map(|f| f64::from(t * f));
        let sin: Vec<f32> = args.clone().map(|a| a.sin() as f32).collect();
        let cos: Vec<f32> = args.map(|a| a.cos() as f32).collect();
        let (first, second) = if flip_sin_to_cos { (cos, sin) } else { (sin, cos) };
        values.extend(first);
        values.extend(second);
    }
    Tensor::from_data(TensorData::new(values, [t.len(), dim]), device)
}

/// `TimestepEmbedding`: linear_1 → SiLU → linear_2.
#[derive(Clone, Debug)]
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn load(w: &mut Weights, prefix: &str, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(w, &key(prefix, "linear_1"), d_in, d_out, true)?,
            linear_2: Linear::load(w, &key(prefix, "linear_2"), d_out, d_out, true)?,
        })
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear_2.forward(self.linear_1.forward_act(x, Act::Silu))
    }
}
