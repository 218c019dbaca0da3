//! Choosing the burn device from `--backend`.

use anyhow::{Result, anyhow, bail};
use burn::tensor::{Device, FloatDType};
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Backend {
    /// burn's NdArray CPU backend: the reference.
    Cpu,
    /// burn's wgpu backend (Vulkan/Metal/DX12 through WGSL).
    Wgpu,
}

/// The float type networks compute in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DType {
    F32,
    /// Weights and activations in f16 (wgpu on an adapter with `shader-f16`).
    F16,
}

/// The device for `--backend`, computing in `--dtype`.
pub fn device(backend: Backend, dtype: DType) -> Result<Device> {
    let mut device = device_f32(backend)?;
    if dtype == DType::F16 {
        if !device.supports_dtype(FloatDType::F16) {
            bail!("this device has no f16 support (on wgpu the adapter lacks shader-f16); use --dtype f32");
        }
        device.configure(FloatDType::F16).map_err(|err| anyhow!("cannot switch the device to f16: {err:?}"))?;
    }
    Ok(device)
}

fn device_f32(backend: Backend) -> Result<Device> {
    match backend {
        #[allow(deprecated)] // NdArray is our CPU reference backend.
        Backend::Cpu => Ok(Device::ndarray()),
        Backend::Wgpu => Device::wgpu_options().init().map_err(|err| {
            anyhow!("no GPU adapter for wgpu ({err}); install your GPU's Vulkan driver (on Linux without a GPU: mesa-vulkan-drivers) or use --backend cpu")
        }),
    }
}
