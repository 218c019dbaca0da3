//! Golden test: `I2VGenXLUNet` through `i2vgen forward --component unet` against diffusers, on
//! both backends, at 1e-4 (f32; odd latent sizes 6×10 → 3×5 → 2×3, two and four heads,
//! a batch of two with different timesteps and fps).

mod common;

#[test]
fn unet_matches_diffusers() {
    common::check_component("unet", "unet.safetensors", &[("sample", "out_sample")]);
}
