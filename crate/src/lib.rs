//! I2VGen-XL image-to-video on burn.
//!
//! The library is synchronous and does no I/O: callers pick a burn `Device` (CPU, native wgpu, or
//! WebGPU in the browser), hand in bytes and tensors, and read results back themselves.
//!
//! # Module map
//!
//! | module | what |
//! |---|---|
//! | [`models`] | every network, one file per diffusers file: CLIP text and vision, the VAE, both 3D UNets and their blocks |
//! | [`pipelines`] | `I2VGenXLPipeline` (base stage) and `VideoToVideoSDPipeline` (refinement), seeded noise, sampling knobs and presets, chained clips, the GPU memory plan (`memory_plan`) and the parameter counts of configs (`model_sizes`) |
//! | [`schedulers`] | `DDIMScheduler`, `DPMSolverMultistepScheduler`, `UniPCMultistepScheduler` (one `Scheduler` trait) |
//! | [`loading`] | configs, strict weights, converted shards (`manifest.json`), the CLIP tokenizer's files |
//! | [`media`] | image decoding and Pillow-exact resizing, GIF encoding, video quality metrics (PSNR, SSIM) |
//! | [`diagnostics`] | the device check, analytic FLOPs |
//!
//! # Keys and field paths
//!
//! Every loader spells its checkpoint keys where the module is built (`key(prefix, "to_q")`), and
//! the loader refuses missing, unused and wrong-shaped tensors, so the keys are checked even where
//! a Rust field path differs from the key. It differs where one Rust type serves two diffusers
//! classes (written twice otherwise), or where a wrapper module would hold a single field:
//!
//! | field path | checkpoint key |
//! |---|---|
//! | `I2VGenXLUNet.backbone.*`, `UNet3DConditionModel.backbone.*` | `*` (the root of the UNet) |
//! | `DownBlock3D.layers.resnets.i`, `UpBlock3D.layers.…` | `down_blocks.n.resnets.i`, `up_blocks.n.…` |
//! | `TemporalConvLayer.convs[i]` | `conv{i+1}` |
//! | `CLIPEncoderLayer.fc1`, `.fc2` | `mlp.fc1`, `mlp.fc2` |
//! | `UNetMidBlock2D.group_norm` (VAE) | `attentions.0.group_norm` |
//! | `VaeBlock.downsampler` | `downsamplers.0` |
//!
//! # Data flow
//!
//! ```text
//! model folder ──loading::folder──▶ I2VGenXLPipeline ──prepare(request, image, noise)──▶ Generation
//!   Generation: Stage ──step × N (fence between)──▶ latents ──decode_frame × F──▶ frames [H, W, 3]
//!   frames ──VideoToVideoSDPipeline::prepare──▶ Refinement: Stage ──step × N──▶ decode_frame × F
//! ```

pub mod diagnostics;
pub mod error;
pub mod loading;
pub mod media;
pub mod models;
pub mod pipelines;
pub mod schedulers;

pub use error::{Error, Result};
