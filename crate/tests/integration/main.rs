//! Every integration test of the library and the `i2vgen` CLI, in one test binary: each test
//! binary links burn, wgpu and cubecl, and linking ten of them cost minutes and gigabytes of disk.

mod common;

mod attention;
mod cli;
mod config;
mod consistency;
mod counters;
mod device_check;
mod encoders;
mod fuzz;
mod media;
mod multistep;
mod phases;
mod pipeline;
mod refine;
mod sampling;
mod scheduler;
mod tokenizer;
mod unet;
mod vae_bands;
mod weights;
