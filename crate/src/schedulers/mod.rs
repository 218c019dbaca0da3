//! Noise schedulers, host-side in f64 like diffusers' numpy/torch code.

pub mod scheduling_ddim;
