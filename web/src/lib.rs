//! The wasm façade: the library on WebGPU in the browser. Async lives here and only here; every
//! error becomes one `JsError` with a sentence a user can act on.

use std::cell::{Cell, RefCell};

use burn::tensor::{Device, FloatDType};
use wasm_bindgen::prelude::*;

mod files;
mod kernels;
mod media;
mod model;
mod readback;
mod stage;

thread_local! {
    /// The burn wgpu runtime can be initialised once per page; later calls reuse its device.
    static DEVICE: RefCell<Option<Device>> = const { RefCell::new(None) };
    /// Set by [`choose_precision`]: stay in f32 even where the adapter has `shader-f16`.
    static FORCE_F32: Cell<bool> = const { Cell::new(false) };
}

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The one place an error becomes a JS error: `.js()` on any result whose error reads as a
/// sentence (the library's errors, or a message).
trait IntoJs<T> {
    fn js(self) -> Result<T, JsError>;
}

impl<T, E: std::fmt::Display> IntoJs<T> for Result<T, E> {
    fn js(self) -> Result<T, JsError> {
        self.map_err(|e| JsError::new(&e.to_string()))
    }
}

/// Initialise burn's wgpu runtime on the browser's WebGPU (once per page). Everything computes
/// in f16 where the adapter has `shader-f16` (half the memory and bandwidth), else in f32 with the
/// weights held as packed f16 ([`packs_f16`]), or all in f32 after `choosePrecision("f32")`.
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
    if !FORCE_F32.get() && device.supports_dtype(FloatDType::F16) {
        device
            .configure(FloatDType::F16)
            .map_err(|err| JsError::new(&format!("Could not switch WebGPU to f16 ({err:?}).")))?;
    }
    DEVICE.with(|d| *d.borrow_mut() = Some(device.clone()));
    Ok(device)
}

/// Choose the precision before anything runs on the GPU: `"auto"` (f16 where the adapter has
/// `shader-f16`, else f16 weights computing in f32; the default) or `"f32"` (f32 weights and
/// compute: a way out should f16 misbehave on some GPU).
#[wasm_bindgen(js_name = choosePrecision)]
pub fn choose_precision(choice: &str) -> Result<(), JsError> {
    let force_f32 = match choice {
        "auto" => false,
        "f32" => true,
        other => {
            return Err(JsError::new(&format!(
                "Unknown precision \"{other}\": use \"auto\" (f16 where the GPU supports it) or \"f32\"."
            )));
        }
    };
    if force_f32 != FORCE_F32.get() && DEVICE.with(|d| d.borrow().is_some()) {
        return Err(JsError::new("The precision is chosen before the GPU starts; reload the page to change it."));
    }
    FORCE_F32.set(force_f32);
    Ok(())
}

/// Whether `device` computes in f16 (as [`device`] configured it).
fn computes_in_f16(device: &Device) -> bool {
    device.settings().float_dtype == FloatDType::F16
}

/// Whether the networks on `device` hold their `Linear` and conv weights as f16 pairs packed in
/// u32 words, computing in f32: the default on a GPU without `shader-f16` (half the weight
/// memory, every GPU can run it), unless `choosePrecision("f32")` asked for f32 weights.
fn packs_f16(device: &Device) -> bool {
    !computes_in_f16(device) && !FORCE_F32.get()
}

/// `"f16"`, `"packed-f16"` (f16 weights, f32 compute) or `"f32"`: what weights and activations
/// are stored and computed in on this GPU.
#[wasm_bindgen]
pub async fn precision() -> Result<String, JsError> {
    let device = device().await?;
    Ok(if computes_in_f16(&device) {
        "f16"
    } else if packs_f16(&device) {
        "packed-f16"
    } else {
        "f32"
    }
    .to_string())
}

/// burn's memory pool on the GPU now, `[in use, reserved]` bytes (reserved pages are never
/// returned, so reserved is the high-water mark so far); empty before the GPU starts.
#[wasm_bindgen(js_name = gpuMemory)]
pub fn gpu_memory() -> Vec<f64> {
    DEVICE
        .with(|d| d.borrow().as_ref().and_then(Device::memory_pool_usage))
        .map_or_else(Vec::new, |usage| vec![usage.bytes_in_use as f64, usage.bytes_reserved as f64])
}

/// Run the device check (conv2d, GroupNorm, SiLU, attention) on WebGPU and read its checksum back.
#[wasm_bindgen(js_name = deviceCheck)]
pub async fn device_check() -> Result<f64, JsError> {
    let device = device().await?;
    let values = readback::Readback::from(i2vgen::diagnostics::device_check::checksum(&device)).read().await?;
    Ok(f64::from(values[0]))
}

/// Panic on purpose: the fault tests (the worker's `?faults=1`) check that a wasm panic, which
/// leaves the instance unusable, is reported and the worker restarted.
#[wasm_bindgen(js_name = panicForTests)]
pub fn panic_for_tests() {
    panic!("a panic injected by the fault tests");
}
