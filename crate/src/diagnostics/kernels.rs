//! The kernels one guided UNet step dispatches on burn's WGSL backend (burn 0.22.1, cubecl
//! 0.11.3, autotune and fusion off) with our kernels from `i2vgen_shaders`, counted from the
//! shapes without running anything: every op our networks call is expanded into the kernels it
//! launches, walking the same structure as [`super::flops`]. The measured twin is
//! [`super::launches`]; the integration test `counters` checks the two agree launch by launch.
//!
//! What each op launches in f32 (our kernels; burn-cubecl for the rest):
//! - conv2d, Upsample2D's nearest upsampling + conv and the TemporalConvLayer's (3, 1, 1) conv
//!   are one `Conv2dIgemm` launch each, bias and residual in its epilogue, after one copy of an
//!   input or residual that is not contiguous NCHW; the output is contiguous NCHW;
//! - `Linear` is a matmul (cubek's `SimpleUnit`: no cmma on WGSL; issued FLOPs pad m and n to
//!   a nominal 128×128 output tile, cubek sizes the stage from the plane size, the operands'
//!   layouts and m and k, `multi_level/routines/selector/unit.rs`) and, with a bias, an
//!   activation or a residual, one `BiasActKernel` (in place); SiLU alone is that kernel too;
//!   GEGLU is one `GegluKernel` after the bias-free projection;
//! - GroupNorm (+ SiLU): three kernels (`GroupPartials`, `GroupCombine`, `GroupApply`) after one
//!   copy of an input that is not contiguous NCHW; LayerNorm one (`LayerNormRows`); attention
//!   one (`FlashAttention`, head dim ≤ 128) reading q, k, v in place;
//! - elementwise burn ops one kernel each; a binary op writes in place into an operand nothing
//!   else holds (lhs first) and so keeps that operand's layout (`kernel/binary.rs`);
//! - `reshape` copies unless the view it reshapes is in order (`ops/base.rs`, burn-std's
//!   `reshape_analysis`, which also gives up on a strided [b·f, c, 1, w] split into frames);
//!   `narrow` and `slice` copy unless both byte offsets are multiples of the device's memory
//!   alignment (`kernel/index/slice.rs`); `cat` is one slice-assign per input, even a single one;
//!   `repeat_dim` of a size-1 dim is a broadcast view; adaptive average pooling copies its input
//!   to NHWC and leaves its output NHWC (`kernel/pool/base.rs`).
//!
//! f16 launches the same kernels as f32 (each stores f16 and computes in f32), each element
//! half the bytes; measured = counted for both on llvmpipe (`i2vgen bench --dtype f16`).
//!
//! Non-GEMM bytes are what every kernel other than matmul, conv and attention reads and writes,
//! each element once per read and per write (caches ignored); `issued_flops` adds the convs'
//! (padded to the kernel's tiles) and the fused attention's FLOPs to the padded matmuls'.

use std::collections::BTreeMap;

use i2vgen_shaders::conv::{TILE_K, TILE_M, TILE_N};

use crate::models::nn::MAX_ELEMENTS;
use crate::models::unet_3d_backbone::{DownBlockType, UNet3DConfig, UpBlockType};

/// Which UNet class the step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UNet {
    I2VGenXL,
    UNet3DCondition,
}

/// The nominal output tile of cubek's `SimpleUnit` matmul on WGSL (a 16×16 stage of units).
const TILE: u64 = 128;

/// Counters of one UNet call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub dispatches: u64,
    /// Matmul FLOPs with m and n padded to whole tiles, plus the convs' and attention's FLOPs.
    pub issued_flops: u64,
    pub non_gemm_bytes: u64,
    /// Dispatches per kernel family (see [`family`]).
    pub by_kernel: BTreeMap<&'static str, u64>,
    /// Bytes read and written per kernel family.
    pub bytes_by_kernel: BTreeMap<&'static str, u64>,
    /// The families of the dispatches in launch order (what a test compares launch by launch).
    pub sequence: Vec<&'static str>,
}

/// The family of a kernel as cubecl names it (the measured side), in the words [`Counts`] uses.
pub fn family(kernel: &str) -> &'static str {
    match kernel {
        "MatmulEntry" | "MatmulPackedF16" => "matmul",
        "DirectConv2dKernel" | "Conv2dIgemm" => "conv",
        "CopyKernel" | "CopyKernelPack" => "copy",
        "SliceKernel" => "slice",
        "SliceAssignKernel" => "slice_assign",
        "FullKernel" => "fill",
        "KernelBinop" => "binary",
        "KernelScalarBinop" => "scalar",
        "UnaryFloat" => "unary",
        "ReduceKernel" => "reduce",
        "KernelScalarCmp" => "compare",
        "MaskFillKernel" => "mask_fill",
        "InterpolateTileKernel" => "interpolate",
        "AdaptiveAvgPool2dDirect" => "pool",
        "CastElement" => "cast",
        "GroupPartials" => "group_partials",
        "GroupCombine" => "group_combine",
        "GroupApply" => "group_apply",
        "LayerNormRows" => "layer_norm",
        "FlashAttention" => "attention",
        "BiasActKernel" => "bias_act",
        "GegluKernel" => "geglu",
        _ => "other",
    }
}

/// Memory order of an activation: which reshapes copy and which kernels copy it first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Contiguous,
    /// NHWC memory presented as NCHW: a Transformer2DModel's output (its rows), a pool's.
    ChannelsLast,
}

/// Whether a view presents its buffer in order: `memory` lists the sizes of its axes in the order
/// they are laid out, `logical` the order the view presents them in (indices into `memory`).
/// Axes of size 1 have no order (burn's contiguity check skips them).
fn in_order(memory: &[u64], logical: &[usize]) -> bool {
    let kept: Vec<usize> = logical.iter().copied().filter(|&axis| memory[axis] != 1).collect();
    kept.windows(2).all(|pair| pair[0] < pair[1])
}

impl Layout {
    /// Whether [n, c, pixels] laid out so reads as contiguous NCHW (NHWC does at one pixel).
    fn is_nchw(self, c: u64, pixels: u64) -> bool {
        self == Self::Contiguous || in_order(&[pixels, c], &[1, 0])
    }

    /// Whether the 5-D view [b, c, f, pixels] of [b·f, c, pixels] laid out so is contiguous (the
    /// temporal layers' `reshape([b, f, c, h, w]).swap_dims(1, 2)`).
    fn frames_first_is_contiguous(self, b: u64, f: u64, c: u64, pixels: u64) -> bool {
        match self {
            Self::Contiguous => in_order(&[b, f, c, pixels], &[0, 2, 1, 3]),
            Self::ChannelsLast => in_order(&[b, f, pixels, c], &[0, 3, 1, 2]),
        }
    }
}

/// The activation of an epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Identity,
    Gelu,
    Silu,
}

/// A convolution as the networks call it: `k` = (kh, kw) with padding (kh/2, kw/2).
#[derive(Clone, Copy, Debug)]
struct Conv {
    n: u64,
    c_in: u64,
    c_out: u64,
    k: (u64, u64),
    stride: u64,
    /// The input's (height, width); with `upsample` the size the conv reads it at.
    hw: (u64, u64),
    contiguous: bool,
    residual: bool,
    /// The stored input's (height, width) when the conv reads it nearest-upsampled to `hw`.
    upsample: Option<(u64, u64)>,
}

impl Conv {
    fn new(n: u64, c_in: u64, c_out: u64, k: u64, stride: u64, hw: (u64, u64)) -> Self {
        Self { n, c_in, c_out, k: (k, k), stride, hw, contiguous: true, residual: false, upsample: None }
    }

    fn output(&self) -> (u64, u64) {
        let ((h, w), (kh, kw)) = (self.hw, self.k);
        ((h + 2 * (kh / 2) - kh) / self.stride + 1, (w + 2 * (kw / 2) - kw) / self.stride + 1)
    }
}

struct Tally {
    /// Bytes per element.
    s: u64,
    alignment: u64,
    counts: Counts,
}

impl Tally {
    fn launch(&mut self, family: &'static str, bytes: u64) {
        self.counts.dispatches += 1;
        *self.counts.by_kernel.entry(family).or_default() += 1;
        *self.counts.bytes_by_kernel.entry(family).or_default() += bytes;
        self.counts.sequence.push(family);
        if !matches!(family, "matmul" | "conv" | "attention") {
            self.counts.non_gemm_bytes += bytes;
        }
    }

    /// A unary or scalar op on `n` elements.
    fn unary(&mut self, family: &'static str, n: u64) {
        self.launch(family, 2 * self.s * n);
    }

    /// A binary op writing `n` elements from an `n`-element and an `other`-element input.
    fn binary(&mut self, n: u64, other: u64) {
        self.launch("binary", self.s * (2 * n + other));
    }

    fn copy(&mut self, n: u64) {
        self.launch("copy", 2 * self.s * n);
    }

    /// The temporal layers' `reshape([b, f, c, h, w])` of an `elements`-long [b·f, c, h, w] laid
    /// out as `layout`: a view, except that burn's reshape analysis gives up on a strided input
    /// whose height is 1 and width is not, and copies it (contiguous afterwards).
    fn split_frames(&mut self, layout: Layout, elements: u64, c: u64, (h, w): (u64, u64)) -> Layout {
        if !layout.is_nchw(c, h * w) && h == 1 && w > 1 {
            self.copy(elements * h * w);
            return Layout::Contiguous;
        }
        layout
    }

    /// A `reshape` of a view: a copy unless the view is in order (see [`in_order`]).
    fn reshape(&mut self, memory: &[u64], logical: &[usize]) {
        if !in_order(memory, logical) {
            self.copy(memory.iter().product());
        }
    }

    fn reduce(&mut self, rows: u64, len: u64) {
        self.launch("reduce", self.s * rows * (len + 1));
    }

    /// `cat` of parts of these sizes.
    fn cat(&mut self, parts: &[u64]) {
        for &n in parts {
            self.launch("slice_assign", 2 * self.s * n);
        }
    }

    /// `narrow`/`slice` of `n` elements starting `before` and ending `after` elements from the
    /// ends of its buffer (burn sums stride × offset over the dims): a view when both are aligned.
    /// Returns whether it copied.
    fn slice(&mut self, n: u64, before: u64, after: u64) -> bool {
        let aligned = |elements: u64| (elements * self.s).is_multiple_of(self.alignment);
        let copies = !aligned(before) || !aligned(after);
        if copies {
            self.launch("slice", 2 * self.s * n);
        }
        copies
    }

    fn matmul(&mut self, batch: u64, m: u64, n: u64, k: u64) {
        let padded = |x: u64| x.div_ceil(TILE) * TILE;
        self.counts.issued_flops += 2 * batch * padded(m) * padded(n) * k;
        self.launch("matmul", self.s * (batch * (m * k + m * n) + k * n));
    }

    /// `act(x + bias) + residual` on `n` elements of rows `c` wide: one `BiasActKernel` (in
    /// place; the activation is a compile-time choice and costs no bytes).
    fn epilogue(&mut self, n: u64, c: u64, bias: bool, _act: Act, residual: bool) {
        let read = n + if bias { c } else { 0 } + if residual { n } else { 0 };
        self.launch("bias_act", self.s * (read + n));
    }

    fn silu(&mut self, n: u64) {
        self.epilogue(n, 0, false, Act::Silu, false);
    }

    /// `GroupNorm` (affine, then SiLU when `silu`) on `n` samples of `c` channels × `spatial`:
    /// a copy first unless the input is `contiguous`; the output is contiguous. The kernels of
    /// `i2vgen_shaders::group_norm` (its `kernels.rs`): partial statistics per block of each
    /// (sample, group), their combination, one elementwise pass (statistics in f32, the tensor
    /// and the affine in the storage width; SiLU is free).
    fn group_norm(&mut self, n: u64, c: u64, spatial: u64, groups: u64, contiguous: bool, _silu: bool) {
        let elements = n * c * spatial;
        if !contiguous {
            self.copy(elements);
        }
        // The kernels' (count, mean, M2) partials: a block per 256 threads × 64 elements of a
        // group, at most 256 blocks (`UNITS`, `PER_UNIT`, `MAX_BLOCKS` there; 256 threads fit
        // every WebGPU device). Only bytes depend on it.
        let rows = n * groups;
        let partials = 3 * rows * (c / groups * spatial).div_ceil(256 * 64).clamp(1, 256);
        self.launch("group_partials", self.s * elements + 4 * partials);
        self.launch("group_combine", 4 * (partials + 2 * rows));
        self.launch("group_apply", self.s * (2 * elements + 2 * c) + 4 * 2 * rows);
    }

    /// LayerNorm on contiguous rows: one `LayerNormRows`.
    fn layer_norm(&mut self, rows: u64, d: u64) {
        self.launch("layer_norm", self.s * (2 * rows * d + 2 * d));
    }

    /// `Linear` on `rows` contiguous rows, with its bias, `act` and a residual in the epilogue.
    fn linear(&mut self, rows: u64, d_in: u64, d_out: u64, bias: bool, act: Act, residual: bool) {
        self.matmul(1, rows, d_out, d_in);
        if bias || act != Act::Identity || residual {
            self.epilogue(rows * d_out, d_out, bias, act, residual);
        }
    }

    /// A convolution (see [`Conv`]); returns the output's height and width.
    fn conv(&mut self, conv: Conv) -> (u64, u64) {
        let Conv { n, c_in, c_out, k: (kh, kw), hw: (h, w), .. } = conv;
        let (ho, wo) = conv.output();
        let (input, output) = (n * c_in * h * w, n * c_out * ho * wo);
        let stored = conv.upsample.map_or(input, |(sh, sw)| n * c_in * sh * sw);
        if !conv.contiguous {
            self.copy(stored);
        }
        let padded = |x: u64, tile: usize| x.div_ceil(tile as u64) * tile as u64;
        let k = c_in * kh * kw;
        self.counts.issued_flops += 2 * padded(c_out, TILE_M) * padded(n * ho * wo, TILE_N) * padded(k, TILE_K);
        let residual = if conv.residual { output } else { 0 };
        self.launch("conv", self.s * (stored + k * c_out + c_out + residual + output));
        (ho, wo)
    }

    /// `multi_head`: q `[b, tq, heads·d]` over `tk` keys.
    fn attention(&mut self, b: u64, tq: u64, tk: u64, c: u64, heads: u64) {
        let d = c / heads;
        if d <= 128 {
            // The fused kernel (`FlashAttention`): one launch on contiguous q, k, v; QKᵀ and
            // S·V with no padding (a thread per query row walks the keys).
            self.counts.issued_flops += 4 * b * heads * tq * tk * d;
            return self.launch("attention", self.s * (2 * b * tq * c + 2 * b * tk * c));
        }
        // Wider heads: the burn-op twin (burn's fallback attention) on the whole sequence.
        let scores = b * heads * tq * tk;
        let maxima = b * heads * tq;
        // q, k and v as [b, heads, t, d] views of [b, t, heads·d] have a batch stride below
        // the row stride: cubek's matmul makes each contiguous first, in two copies.
        let permuted = |t: &mut Self, tokens: u64| {
            if heads > 1 {
                t.copy(b * tokens * c);
                t.copy(b * tokens * c);
            }
        };
        permuted(self, tq);
        permuted(self, tk);
        self.matmul(b * heads, tq, tk, d);
        self.unary("scalar", scores);
        // The row maxima, clamped, subtracted; exp; the row sums, clamped, divided by.
        for exp in [true, false] {
            self.reduce(maxima, tk);
            self.unary("compare", maxima);
            self.unary("mask_fill", maxima);
            self.binary(scores, maxima);
            if exp {
                self.unary("unary", scores);
            }
        }
        permuted(self, tk);
        self.matmul(b * heads, tq, d, tk);
        // swap_dims(1, 2).reshape: the heads back beside each other.
        self.reshape(&[b, heads, tq, d], &[0, 2, 1, 3]);
    }

    /// diffusers `Attention` on `rows` sequences of `t` tokens, its output added to the block's
    /// residual in `to_out`'s epilogue; `context` is (videos, tokens, width) for
    /// cross-attention, whose keys and values are computed once per video.
    fn attention_module(&mut self, rows: u64, t: u64, dim: u64, heads: u64, context: Option<(u64, u64, u64)>) {
        self.matmul(1, rows * t, dim, dim);
        let (b, tk, ctx_dim) = context.unwrap_or((rows, t, dim));
        self.matmul(1, b * tk, dim, ctx_dim);
        self.matmul(1, b * tk, dim, ctx_dim);
        self.attention(b, rows / b * t, tk, dim, heads);
        self.linear(rows * t, dim, dim, true, Act::Identity, true);
    }

    /// `FeedForward` plus the residual: GEGLU (or GELU) in row chunks of at most
    /// `MAX_ELEMENTS` hidden values.
    fn feed_forward(&mut self, tokens: u64, dim: u64, geglu: bool) {
        let inner = 4 * dim;
        let proj = if geglu { 2 * inner } else { inner };
        let rows = (MAX_ELEMENTS as u64 / proj).max(1);
        let mut parts = Vec::new();
        let mut start = 0;
        while start < tokens {
            let n = rows.min(tokens - start);
            if n < tokens {
                // The rows of the input and of the residual.
                for _ in 0..2 {
                    self.slice(n * dim, start * dim, (tokens - start - n) * dim);
                }
            }
            if geglu {
                self.matmul(1, n, proj, dim);
                self.geglu(n, inner);
            } else {
                self.linear(n, dim, proj, true, Act::Gelu, false);
            }
            self.linear(n, inner, dim, true, Act::Identity, true);
            parts.push(n * dim);
            start += n;
        }
        if parts.len() > 1 {
            self.cat(&parts);
        }
    }

    /// diffusers `GEGLU` after the bias-free projection of `n` rows: one `GegluKernel`.
    fn geglu(&mut self, n: u64, inner: u64) {
        self.launch("geglu", self.s * (2 * n * inner + 2 * inner + n * inner));
    }

    /// `BasicTransformerBlock` on `rows` sequences of `t` tokens (residuals in the epilogues).
    fn basic_block(&mut self, rows: u64, t: u64, dim: u64, heads: u64, context: Option<(u64, u64, u64)>) {
        self.layer_norm(rows * t, dim);
        self.attention_module(rows, t, dim, heads, None);
        self.layer_norm(rows * t, dim);
        self.attention_module(rows, t, dim, heads, context);
        self.layer_norm(rows * t, dim);
        self.feed_forward(rows * t, dim, true);
    }
}

/// Sizes every block of one UNet call shares.
struct Shape {
    batch: u64,
    frames: u64,
    groups: u64,
    head_dim: u64,
    temb: u64,
    /// (videos, tokens, width) of the cross-attention context.
    context: (u64, u64, u64),
}

impl Shape {
    fn images(&self) -> u64 {
        self.batch * self.frames
    }

    /// `ResnetBlock2D` (with the time embedding) on `n` contiguous images; the shortcut is added
    /// in conv2's epilogue, the output is contiguous.
    fn resnet(&self, t: &mut Tally, n: u64, c_in: u64, c_out: u64, hw: (u64, u64)) {
        let pixels = hw.0 * hw.1;
        t.group_norm(n, c_in, pixels, self.groups, true, true);
        t.conv(Conv::new(n, c_in, c_out, 3, 1, hw));
        t.silu(n * self.temb);
        t.linear(n, self.temb, c_out, true, Act::Identity, false);
        t.binary(n * c_out * pixels, n * c_out);
        if c_in != c_out {
            t.conv(Conv::new(n, c_in, c_out, 1, 1, hw));
        }
        t.group_norm(n, c_out, pixels, self.groups, true, true);
        t.conv(Conv { residual: true, ..Conv::new(n, c_out, c_out, 3, 1, hw) });
    }

    /// `TemporalConvLayer` on a contiguous input: four (GroupNorm + SiLU, a (3, 1) conv over
    /// [b, c, f, h·w]), the residual (the input's frames-first view) added in the last conv.
    fn temporal_conv(&self, t: &mut Tally, c: u64, hw: (u64, u64)) {
        let pixels = hw.0 * hw.1;
        let (b, f) = (self.batch, self.frames);
        let frames_first = in_order(&[b, f, c, pixels], &[0, 2, 1, 3]);
        for i in 0..4 {
            // The first GroupNorm reads the 5-D view of the input, the others a conv's output.
            t.group_norm(b, c, f * pixels, self.groups, i > 0 || frames_first, true);
            if i == 3 {
                // The residual's reshape to [b, c, f, h·w].
                t.reshape(&[b, f, c, pixels], &[0, 2, 1, 3]);
            }
            t.conv(Conv { k: (3, 1), residual: i == 3, ..Conv::new(b, c, c, 3, 1, (f, pixels)) });
        }
        // Back to [b·f, c, h, w].
        t.reshape(&[b, c, f, pixels], &[0, 2, 1, 3]);
    }

    /// `Transformer2DModel` on a contiguous input; its output is laid out as proj_out's rows
    /// (NHWC): the residual is added in place into them.
    fn transformer_2d(&self, t: &mut Tally, c: u64, pixels: u64) -> Layout {
        let n = self.images();
        t.group_norm(n, c, pixels, self.groups, true, false);
        // [n, c, h·w] swapped to tokens, reshaped to rows by Linear.
        t.reshape(&[n, c, pixels], &[0, 2, 1]);
        t.linear(n * pixels, c, c, true, Act::Identity, false);
        t.basic_block(n, pixels, c, c / self.head_dim, Some(self.context));
        t.linear(n * pixels, c, c, true, Act::Identity, false);
        // Back to [n, c, h, w] (a view: only the last dim splits), plus the residual.
        t.binary(n * c * pixels, n * c * pixels);
        Layout::ChannelsLast
    }

    /// `TransformerTemporalModel` with `heads` heads of `head_dim` (transformer_in: 8 of them)
    /// on an input laid out as `input`; its output is contiguous.
    fn transformer_temporal(&self, t: &mut Tally, c: u64, hw: (u64, u64), heads: u64, input: Layout) {
        let pixels = hw.0 * hw.1;
        let input = t.split_frames(input, self.images() * c, c, hw);
        let (b, f) = (self.batch, self.frames);
        let n = b * f * c * pixels;
        let inner = heads * self.head_dim;
        t.group_norm(b, c, f * pixels, self.groups, input.frames_first_is_contiguous(b, f, c, pixels), false);
        // [b, c, f, h, w] permuted to [b, h, w, f, c], reshaped to rows.
        t.reshape(&[b, c, f, pixels], &[0, 3, 2, 1]);
        t.linear(b * pixels * f, c, inner, true, Act::Identity, false);
        t.basic_block(b * pixels, f, inner, heads, None);
        t.linear(b * pixels * f, inner, c, true, Act::Identity, false);
        // And back to [b·f, c, h, w], plus the residual.
        t.reshape(&[b, pixels, f, c], &[0, 2, 3, 1]);
        t.binary(n, n);
    }

    /// A down block's layer on a contiguous input; its output is contiguous.
    fn layer(&self, t: &mut Tally, hw: (u64, u64), c_in: u64, c_out: u64, attention: bool) {
        self.resnet(t, self.images(), c_in, c_out, hw);
        self.layer_tail(t, hw, c_out, attention);
    }

    /// What follows a layer's resnet: the temporal conv, then the transformers.
    fn layer_tail(&self, t: &mut Tally, hw: (u64, u64), c: u64, attention: bool) {
        self.temporal_conv(t, c, hw);
        if attention {
            let layout = self.transformer_2d(t, c, hw.0 * hw.1);
            self.transformer_temporal(t, c, hw, c / self.head_dim, layout);
        }
    }

    /// An up block's layer: the skip concatenated in chunks of whole images.
    fn up_layer(&self, t: &mut Tally, hw: (u64, u64), below: u64, skip: u64, c_out: u64, attention: bool) {
        let pixels = hw.0 * hw.1;
        let n = self.images();
        let images = (MAX_ELEMENTS as u64 / ((below + skip) * pixels)).max(1);
        let mut parts = Vec::new();
        let mut start = 0;
        while start < n {
            let k = images.min(n - start);
            if k < n {
                t.slice(k * below * pixels, start * below * pixels, (n - start - k) * below * pixels);
                t.slice(k * skip * pixels, start * skip * pixels, (n - start - k) * skip * pixels);
                t.slice(k * self.temb, start * self.temb, (n - start - k) * self.temb);
            }
            t.cat(&[k * below * pixels, k * skip * pixels]);
            self.resnet(t, k, below + skip, c_out, hw);
            parts.push(k * c_out * pixels);
            start += k;
        }
        // One chunk is the resnet's output itself; more are concatenated.
        if parts.len() > 1 {
            t.cat(&parts);
        }
        self.layer_tail(t, hw, c_out, attention);
    }
}

/// Latent height and width at each level (stride-2 convs round up).
fn level_sizes(c: &UNet3DConfig, h: usize, w: usize) -> Vec<(u64, u64)> {
    let mut size = (h as u64, w as u64);
    let mut sizes = vec![size];
    for _ in 1..c.block_out_channels.len() {
        size = (size.0.div_ceil(2), size.1.div_ceil(2));
        sizes.push(size);
    }
    sizes
}

/// `UNet3DBackbone::forward` from conv_in to conv_out, on a contiguous input.
fn backbone(t: &mut Tally, s: &Shape, c: &UNet3DConfig, sizes: &[(u64, u64)], conv_in_channels: u64) {
    let ch: Vec<u64> = c.block_out_channels.iter().map(|&c| c as u64).collect();
    let n = ch.len();
    let images = s.images();
    t.conv(Conv::new(images, conv_in_channels, ch[0], 3, 1, sizes[0]));
    s.transformer_temporal(t, ch[0], sizes[0], 8, Layout::Contiguous);

    // Every layer's output, the downsamplers' and the up blocks' are contiguous.
    let mut skips = vec![ch[0]];
    let mut c_out = ch[0];
    for (i, kind) in c.down_block_types.iter().enumerate() {
        let c_in = c_out;
        c_out = ch[i];
        let attention = *kind == DownBlockType::CrossAttnDownBlock3D;
        for layer in 0..c.layers_per_block {
            s.layer(t, sizes[i], if layer == 0 { c_in } else { c_out }, c_out, attention);
            skips.push(c_out);
        }
        if i + 1 < n {
            t.conv(Conv::new(images, c_out, c_out, 3, 2, sizes[i]));
            skips.push(c_out);
        }
    }

    let deepest = ch[n - 1];
    let level = sizes[n - 1];
    s.layer(t, level, deepest, deepest, true);
    s.resnet(t, images, deepest, deepest, level);
    s.temporal_conv(t, deepest, level);

    let reversed: Vec<u64> = ch.iter().rev().copied().collect();
    let mut c_out = reversed[0];
    for (i, kind) in c.up_block_types.iter().enumerate() {
        let level = n - 1 - i;
        let prev = c_out;
        c_out = reversed[i];
        let attention = *kind == UpBlockType::CrossAttnUpBlock3D;
        for layer in 0..=c.layers_per_block {
            let below = if layer == 0 { prev } else { c_out };
            let skip = skips.pop().unwrap_or(c_out);
            s.up_layer(t, sizes[level], below, skip, c_out, attention);
        }
        if i + 1 < n {
            // Nearest upsampling read by the conv.
            let conv = Conv::new(images, c_out, c_out, 3, 1, sizes[level - 1]);
            t.conv(Conv { upsample: Some(sizes[level]), ..conv });
        }
    }
    t.group_norm(images, ch[0], sizes[0].0 * sizes[0].1, s.groups, true, true);
    t.conv(Conv::new(images, ch[0], c.out_channels as u64, 3, 1, sizes[0]));
}

/// `repeat_interleave` of the [b, temb] embedding over frames: a broadcast view, made real by
/// its reshape.
fn repeat_over_frames(t: &mut Tally, s: &Shape) {
    if s.frames > 1 {
        t.copy(s.images() * s.temb);
    }
}

/// `TimestepEmbedding` on `b` rows: linear_1 with SiLU in its epilogue, linear_2.
fn timestep_embedding(t: &mut Tally, b: u64, c0: u64, temb: u64) {
    t.linear(b, c0, temb, true, Act::Silu, false);
    t.linear(b, temb, temb, true, Act::Identity, false);
}

/// `UNet3DConditionModel::forward`: the time embedding, frames into the batch, the backbone.
fn unet_3d_condition(t: &mut Tally, s: &Shape, c: &UNet3DConfig, sizes: &[(u64, u64)]) {
    let (c0, cin) = (c.block_out_channels[0] as u64, c.in_channels as u64);
    timestep_embedding(t, s.batch, c0, s.temb);
    repeat_over_frames(t, s);
    t.reshape(&[s.batch, cin, s.frames, sizes[0].0 * sizes[0].1], &[0, 2, 1, 3]);
    backbone(t, s, c, sizes, cin);
}

/// `I2VGenXLUNet::forward` around the backbone: embeddings, context, the image path.
fn i2vgen_xl(t: &mut Tally, s: &Shape, c: &UNet3DConfig, sizes: &[(u64, u64)]) {
    let (b, f) = (s.batch, s.frames);
    let (c0, cin, temb, dim) =
        (c.block_out_channels[0] as u64, c.in_channels as u64, s.temb, c.cross_attention_dim as u64);
    let (h, w) = sizes[0];
    // 1. time and fps embeddings, repeated over frames.
    for _ in 0..2 {
        timestep_embedding(t, b, c0, temb);
    }
    t.binary(b * temb, b * temb);
    repeat_over_frames(t, s);
    // 2. context: text, the first frame's latent tokens, the image embedding's tokens.
    // The first frame of [b, c, f, h, w], then its reshape to [b, c, h, w]: the reshape copies
    // a view of one frame among several.
    if !t.slice(b * cin * h * w, 0, (f - 1) * h * w) && f > 1 {
        t.copy(b * cin * h * w);
    }
    let (c1, c2) = (8 * cin, 16 * cin);
    t.conv(Conv::new(b, 4, c1, 3, 1, (h, w)));
    t.silu(b * c1 * h * w);
    // Adaptive pooling: its input copied to NHWC (one pixel is both), its output NHWC.
    if h * w != 1 {
        t.copy(b * c1 * h * w);
    }
    t.launch("pool", t.s * b * c1 * (h * w + 32 * 32));
    let hw = t.conv(Conv { contiguous: false, ..Conv::new(b, c1, c2, 3, 2, (32, 32)) });
    t.silu(b * c2 * hw.0 * hw.1);
    let hw = t.conv(Conv::new(b, c2, dim, 3, 2, hw));
    let latent_tokens = hw.0 * hw.1;
    t.linear(b, dim, temb, true, Act::Silu, false);
    t.linear(b, temb, dim * cin, true, Act::Identity, false);
    t.cat(&[b * 77 * dim, b * latent_tokens * dim, b * cin * dim]);
    // 3. the image path: convs per frame, then attention over frames.
    let n = b * f;
    t.reshape(&[b, 4, f, h * w], &[0, 2, 1, 3]);
    t.conv(Conv::new(n, 4, 4 * cin, 3, 1, (h, w)));
    t.silu(n * 4 * cin * h * w);
    t.conv(Conv::new(n, 4 * cin, 4 * cin, 3, 1, (h, w)));
    t.silu(n * 4 * cin * h * w);
    t.conv(Conv::new(n, 4 * cin, cin, 3, 1, (h, w)));
    let seqs = b * h * w;
    // [b·f, cin, h, w] split into frames, permuted to [b·h·w, f, cin].
    t.reshape(&[b, f, cin, h * w], &[0, 3, 1, 2]);
    t.layer_norm(seqs * f, cin);
    t.attention_module(seqs, f, cin, 2, None);
    t.feed_forward(seqs * f, cin, false);
    // 4. the sample beside the image path, frames into the batch.
    t.cat(&[n * cin * h * w, n * cin * h * w]);
    t.reshape(&[b, 2 * cin, f, h * w], &[0, 2, 1, 3]);
    backbone(t, s, c, sizes, 2 * cin);
}

/// The counters of one classifier-free-guided step (batch 2 in one call) of `unet` on `frames`
/// latents of `h`×`w`, computing in `element_bytes`-wide floats on a device whose memory
/// alignment is `alignment` bytes (256 on WebGPU).
pub fn guided_step(
    unet: UNet,
    c: &UNet3DConfig,
    frames: usize,
    h: usize,
    w: usize,
    element_bytes: u64,
    alignment: u64,
) -> Counts {
    let mut t = Tally { s: element_bytes, alignment, counts: Counts::default() };
    let latent_tokens = 64;
    let dim = c.cross_attention_dim as u64;
    let text = 77;
    let tokens = match unet {
        UNet::I2VGenXL => text + latent_tokens + c.in_channels as u64,
        UNet::UNet3DCondition => text,
    };
    let s = Shape {
        batch: 2,
        frames: frames as u64,
        groups: c.norm_num_groups as u64,
        head_dim: c.attention_head_dim as u64,
        temb: c.time_embed_dim() as u64,
        context: (2, tokens, dim),
    };
    let sizes = level_sizes(c, h, w);
    match unet {
        UNet::I2VGenXL => i2vgen_xl(&mut t, &s, c, &sizes),
        UNet::UNet3DCondition => unet_3d_condition(&mut t, &s, c, &sizes),
    }
    t.counts
}
