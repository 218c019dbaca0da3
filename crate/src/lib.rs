//! I2VGen-XL image-to-video on burn.
//!
//! The library is synchronous and does no I/O: callers pick a burn `Device` (CPU, native wgpu, or
//! WebGPU in the browser), hand in bytes and tensors, and read results back themselves.

pub mod attention;
pub mod clip;
pub mod config;
pub mod device_check;
pub mod embeddings;
pub mod error;
pub mod flops;
pub mod image;
pub mod manifest;
pub mod nn;
pub mod noise;
pub mod pipeline_i2vgen_xl;
pub mod pipeline_video_to_video;
pub mod resnet;
pub mod scheduler;
pub mod tokenizer;
pub mod transformer_2d;
pub mod transformer_temporal;
pub mod unet_3d;
pub mod unet_3d_blocks;
pub mod unet_3d_condition;
pub mod unet_i2vgen_xl;
pub mod vae;
pub mod video;
pub mod weights;

pub use error::{Error, Result};
