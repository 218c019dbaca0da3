//! The networks, one file per diffusers (or transformers) file they port. Dependencies point one
//! way: `nn` → `attention`, `resnet`, `embeddings` → `transformer_*` → `unet_3d_blocks` →
//! `unet_3d_backbone` → `unet_i2vgen_xl`, `unet_3d_condition`; `clip` and `vae` are leaves
//! (`vae_bands` is `vae`'s encode and decode in row bands; `frame_chunks` holds a UNet level's
//! activation in pieces of frames, used by the blocks and the backbone).

pub mod attention;
pub mod clip;
pub mod embeddings;
pub mod frame_chunks;
pub mod nn;
pub mod resnet;
pub mod transformer_2d;
pub mod transformer_temporal;
pub mod unet_3d_backbone;
pub mod unet_3d_blocks;
pub mod unet_3d_condition;
pub mod unet_i2vgen_xl;
pub mod vae;
pub mod vae_bands;
