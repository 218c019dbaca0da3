//! GPU kernels for the I2VGen-XL networks, each a cubecl `#[cube]` kernel behind a burn backend
//! extension (`#[backend_extension(Cube, NdArray)]`): on a cubecl device (wgpu, WebGPU) the kernel
//! runs, on the CPU reference backend its burn-op twin does, and the twin stays callable on every
//! backend as the reference the kernel is tested against.

pub mod attention;
pub mod conv;
pub mod epilogue;
pub mod group_norm;
pub mod layer_norm;
