//! Choosing the burn device from `--backend`.

use anyhow::{Result, anyhow};
use burn::tensor::Device;
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Backend {
    /// burn's NdArray CPU backend: the reference.
    Cpu,
    /// burn's wgpu backend (Vulkan/Metal/DX12 through WGSL).
    Wgpu,
}

pub fn device(backend: Backend) -> Result<Device> {
    match backend {
        #[allow(deprecated)] // NdArray is our CPU reference backend.
        Backend::Cpu => Ok(Device::ndarray()),
        Backend::Wgpu => Device::wgpu_options().init().map_err(|err| {
            anyhow!("no GPU adapter for wgpu ({err}); install your GPU's Vulkan driver (on Linux without a GPU: mesa-vulkan-drivers) or use --backend cpu")
        }),
    }
}
