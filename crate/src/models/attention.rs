//! diffusers `models/attention_processor.py`: `Attention` (to_q/to_k/to_v/to_out.0) and the
//! multi-head scaled-dot-product core shared with CLIP's attention.

use burn::tensor::Tensor;

use crate::Result;
use crate::loading::weights::{Weights, key};
use i2vgen_shaders::epilogue;

use crate::models::nn::{LayerNorm, Linear, MAX_ELEMENTS};

/// softmax(q kᵀ / √d) v over `heads` heads, with an optional causal mask (CLIP's text encoder):
/// the fused kernel of `i2vgen_shaders::attention` on a GPU (one launch, online softmax, no score
/// matrix in memory, q/k/v read in their `[B, T, heads·d]` layout), burn's ops on the CPU.
///
/// # Shapes
/// q `[B, Tq, heads*d]`, k and v `[B, Tk, heads*d]` → `[B, Tq, heads*d]`
pub fn multi_head(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, causal: bool) -> Tensor<3> {
    i2vgen_shaders::attention::attention(q, k, v, heads, causal)
}

/// diffusers `Attention`: projections around [`multi_head`]; cross-attention when a context
/// is given. Norms and residuals belong to the blocks that use it.
#[derive(Clone, Debug)]
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    /// `to_out.0` (slot 1 is dropout).
    pub to_out: Linear,
    heads: usize,
}

impl Attention {
    /// `inner = heads * dim_head`; `context_dim` is the key/value input width.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        dim_head: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        Ok(Self {
            to_q: Linear::load(w, &key(prefix, "to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::load(w, &key(prefix, "to_k"), context_dim, inner, qkv_bias)?,
            to_v: Linear::load(w, &key(prefix, "to_v"), context_dim, inner, qkv_bias)?,
            to_out: Linear::load(w, &key(prefix, "to_out.0"), inner, query_dim, true)?,
            heads,
        })
    }

    /// A context row may serve several consecutive rows of `x` (a video's frames, each its own
    /// row): its keys and values are computed once, and those rows' queries attend to them as
    /// one longer sequence, which changes no result (each query's softmax is its own).
    ///
    /// `residual` is added in `to_out`'s epilogue (the blocks' `attn_output + hidden_states`).
    ///
    /// # Shapes
    /// x `[B·n, T, query_dim]`, context `[B, S, context_dim]`, residual `[B·n, T, query_dim]` →
    /// `[B·n, T, query_dim]`
    pub fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>, residual: Option<Tensor<3>>) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let [rows, t, _] = x.dims();
        let b = context.dims()[0];
        debug_assert_eq!(rows % b, 0, "each context row serves whole rows of x");
        let q = self.to_q.forward(x);
        let inner = q.dims()[2];
        let q = q.reshape([b, rows / b * t, inner]);
        let k = self.to_k.forward(context.clone());
        let v = self.to_v.forward(context);
        let attended = multi_head(q, k, v, self.heads, false).reshape([rows, t, inner]);
        match residual {
            Some(residual) => self.to_out.forward_add(attended, residual),
            None => self.to_out.forward(attended),
        }
    }
}

/// diffusers `FeedForward`: `net.0` is GEGLU (`proj` to 2×inner, value × gelu(gate)) or GELU
/// (`proj` then exact gelu), `net.2` the output projection.
#[derive(Clone, Debug)]
pub struct FeedForward {
    /// `net.0.proj`
    pub proj: Linear,
    /// `net.2`
    pub out: Linear,
    geglu: bool,
}

impl FeedForward {
    pub fn load(w: &mut Weights, prefix: &str, dim: usize, inner: usize, geglu: bool) -> Result<Self> {
        let proj_out = if geglu { 2 * inner } else { inner };
        Ok(Self {
            proj: Linear::load(w, &key(prefix, "net.0.proj"), dim, proj_out, true)?,
            out: Linear::load(w, &key(prefix, "net.2"), inner, dim, true)?,
            geglu,
        })
    }

    /// `self.forward(x) + residual`, the residual added in `net.2`'s epilogue, with at most
    /// [`MAX_ELEMENTS`] hidden values computed at once (a 720p video's first level would need a
    /// 4.7 GB GEGLU projection in one piece).
    ///
    /// # Shapes
    /// x and residual `[B, T, dim]` → `[B, T, dim]`
    pub fn forward_add(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.forward_add_chunked(x, residual, (MAX_ELEMENTS / self.proj.d_out()).max(1))
    }

    /// [`Self::forward_add`] on at most `rows` tokens at a time: tokens are independent, so the
    /// chunks change no result.
    pub fn forward_add_chunked(&self, x: Tensor<3>, residual: Tensor<3>, rows: usize) -> Tensor<3> {
        let [b, t, dim] = x.dims();
        let tokens = b * t;
        let (x, residual) = (x.reshape([tokens, dim]), residual.reshape([tokens, dim]));
        if rows >= tokens {
            return self.forward_rows(x, residual).reshape([b, t, dim]);
        }
        let parts: Vec<Tensor<2>> = (0..tokens)
            .step_by(rows.max(1))
            .map(|start| {
                let n = rows.min(tokens - start);
                self.forward_rows(x.clone().narrow(0, start, n), residual.clone().narrow(0, start, n))
            })
            .collect();
        Tensor::cat(parts, 0).reshape([b, t, dim])
    }

    /// `net.0` as the bias-free projection and one GEGLU (or bias + GELU) kernel.
    fn forward_rows(&self, x: Tensor<2>, residual: Tensor<2>) -> Tensor<2> {
        let h = if self.geglu {
            epilogue::geglu(self.proj.matmul(x), self.proj.bias.clone())
        } else {
            self.proj.forward_act(x, epilogue::Act::Gelu)
        };
        self.out.forward_add(h, residual)
    }
}

/// diffusers `BasicTransformerBlock` (norm_type "layer_norm", GEGLU): self-attention, then
/// cross-attention on the context (or a second self-attention when `double_self_attention`),
/// then feed-forward; pre-norm with residuals.
#[derive(Clone, Debug)]
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
    double_self_attention: bool,
}

impl BasicTransformerBlock {
    /// `cross_attention_dim` None means `double_self_attention` (the temporal transformers).
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        dim: usize,
        heads: usize,
        dim_head: usize,
        cross_attention_dim: Option<usize>,
    ) -> Result<Self> {
        let ln = |w: &mut Weights, name: &str| LayerNorm::load(w, &key(prefix, name), dim, 1e-5);
        Ok(Self {
            norm1: ln(w, "norm1")?,
            attn1: Attention::load(w, &key(prefix, "attn1"), dim, dim, heads, dim_head, false)?,
            norm2: ln(w, "norm2")?,
            attn2: Attention::load(
                w,
                &key(prefix, "attn2"),
                dim,
                cross_attention_dim.unwrap_or(dim),
                heads,
                dim_head,
                false,
            )?,
            norm3: ln(w, "norm3")?,
            ff: FeedForward::load(w, &key(prefix, "ff"), dim, 4 * dim, true)?,
            double_self_attention: cross_attention_dim.is_none(),
        })
    }

    /// # Shapes
    /// x `[B·n, T, dim]`, context `[B, S, cross_attention_dim]` → `[B·n, T, dim]` (see [`Attention::forward`])
    pub fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>) -> Tensor<3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None, Some(x));
        let context = if self.double_self_attention { None } else { context };
        let x = self.attn2.forward(self.norm2.forward(x.clone()), context, Some(x));
        self.ff.forward_add(self.norm3.forward(x.clone()), x)
    }
}
