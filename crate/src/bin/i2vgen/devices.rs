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
    /// `Linear` and conv weights as f16 pairs packed in u32 words (half the weight memory on
    /// every GPU), computing in f32.
    PackedF16,
}

/// The device for `--backend`, computing in `--dtype`.
pub fn device(backend: Backend, dtype: DType) -> Result<Device> {
    Ok(device_and_adapter(backend, dtype)?.0)
}

/// The adapter a device runs on.
pub struct Adapter {
    pub name: String,
    /// cubecl's memory alignment there (the larger of the uniform and storage buffer offset
    /// alignments): a slice whose byte offsets are not multiples of it is a copy. None on the CPU
    /// backend, which launches no kernels.
    pub alignment: Option<u64>,
}

/// [`device`] and the adapter it runs on.
pub fn device_and_adapter(backend: Backend, dtype: DType) -> Result<(Device, Adapter)> {
    let (mut device, adapter) = device_f32(backend)?;
    if dtype == DType::F16 {
        if !device.supports_dtype(FloatDType::F16) {
            bail!("this device has no f16 support (on wgpu the adapter lacks shader-f16); use --dtype f32");
        }
        device.configure(FloatDType::F16).map_err(|err| anyhow!("cannot switch the device to f16: {err:?}"))?;
    }
    Ok((device, adapter))
}

fn device_f32(backend: Backend) -> Result<(Device, Adapter)> {
    match backend {
        #[allow(deprecated)] // NdArray is our CPU reference backend.
        Backend::Cpu => Ok((Device::ndarray(), Adapter { name: "burn NdArray".into(), alignment: None })),
        Backend::Wgpu => {
            let (device, setup) = Device::wgpu_options().init_with_setup().map_err(|err| {
                anyhow!("no GPU adapter for wgpu ({err}); install your GPU's Vulkan driver (on Linux without a GPU: mesa-vulkan-drivers) or use --backend cpu")
            })?;
            let (info, limits) = (setup.adapter.get_info(), setup.device.limits());
            let alignment = limits.min_uniform_buffer_offset_alignment.max(limits.min_storage_buffer_offset_alignment);
            let name = format!("{} ({:?}, {})", info.name, info.backend, info.driver);
            Ok((device, Adapter { name, alignment: Some(alignment.into()) }))
        }
    }
}
