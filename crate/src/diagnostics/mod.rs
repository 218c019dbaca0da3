//! Checks and counts that are not part of a generation: the device check, analytic FLOPs,
//! kernel launches counted from the shapes and (natively) measured.

pub mod device_check;
pub mod flops;
pub mod kernels;
#[cfg(not(target_arch = "wasm32"))]
pub mod launches;
