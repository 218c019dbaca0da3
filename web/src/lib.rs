//! The wasm façade: the library on WebGPU in the browser. Async lives here and only here; every
//! error becomes one `JsError` with a sentence a user can act on.

use std::cell::RefCell;

use burn::tensor::{Device, FloatDType};
use wasm_bindgen::prelude::*;

mod generator;
mod model;
mod refiner;

thread_local! {
    /// The burn wgpu runtime can be initialised once per page; later calls reuse its device.
    static DEVICE: RefCell<Option<Device>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The one place a message becomes a JS error.
fn js_error(message: &str) -> JsError {
    JsError::new(message)
}

/// Initialise burn's wgpu runtime on the browser's WebGPU (once per page). Everything computes
/// in f16 where the adapter has `shader-f16` (half the memory and bandwidth), else in f32.
async fn device() -> Result<Device, JsError> {
    if let Some(device) = DEVICE.with(|d| d.borrow().clone()) {
        return Ok(device);
    }
    let device = Device::wgpu_options().init_async().await.map_err(|err| {
        JsError::new(&format!(
            "Could not start WebGPU ({err}). Use a browser with WebGPU enabled: Chrome or Edge 113+, \
             or Firefox/Safari with WebGPU turned on."
        ))
    })?;
    let mut device = device;
    if device.supports_dtype(FloatDType::F16) {
        device
            .configure(FloatDType::F16)
            .map_err(|err| JsError::new(&format!("Could not switch WebGPU to f16 ({err:?}).")))?;
    }
    DEVICE.with(|d| *d.borrow_mut() = Some(device.clone()));
    Ok(device)
}

/// Whether the GPU computes in f16 (its adapter has `shader-f16`).
async fn is_f16() -> Result<bool, JsError> {
    Ok(device().await?.supports_dtype(FloatDType::F16))
}

/// `"f16"` or `"f32"`: what weights and activations are stored and computed in on this GPU.
#[wasm_bindgen]
pub async fn precision() -> Result<String, JsError> {
    Ok(if is_f16().await? { "f16" } else { "f32" }.to_string())
}

/// Run the device check (conv2d, GroupNorm, SiLU, attention) on WebGPU and read its checksum back.
#[wasm_bindgen(js_name = deviceCheck)]
pub async fn device_check() -> Result<f64, JsError> {
    let device = device().await?;
    let data = i2vgen::device_check::checksum(&device)
        .into_data_async()
        .await
        .map_err(|err| JsError::new(&format!("The GPU computation failed: {err:?}")))?;
    let values = data
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|err| JsError::new(&format!("Unexpected GPU result: {err:?}")))?;
    Ok(f64::from(values[0]))
}
