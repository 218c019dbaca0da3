//! Checks and counts that are not part of a generation: the device check, analytic FLOPs.

pub mod device_check;
pub mod flops;
