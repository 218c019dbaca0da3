//! Golden tests: both 3D UNets through `i2vgen forward --component unet` against diffusers, on
//! both backends, at 1e-4 (f32; odd latent sizes 6×10 → 3×5 → 2×3, two and four heads, a batch
//! of two with different timesteps): `I2VGenXLUNet` (with fps and the image path) and the
//! refiner's `UNet3DConditionModel` (f16 weights on disk).

use crate::common;

#[test]
fn unet_matches_diffusers() {
    common::check_component("tiny-i2vgen", "unet", "unet.safetensors", &[("sample", "out_sample")]);
}

#[test]
fn refiner_unet_matches_diffusers() {
    common::check_component("tiny-vid2vid", "unet", "refiner_unet.safetensors", &[("sample", "out_sample")]);
}
