//! Golden tests: the encoders and the VAE through the `i2vgen forward` CLI (the production loader
//! and the fixture's diffusers folder) against transformers/diffusers outputs, on both backends.
//!
//! Tolerance 1e-4 absolute and relative (to the largest reference magnitude): f32 everywhere,
//! the only differences are summation orders and transcendental implementations.

use crate::common;

#[test]
fn text_encoder_matches_transformers() {
    common::check_component("tiny-i2vgen", "text_encoder", "text_encoder.safetensors", &[("last_hidden_state", "last_hidden_state"), ("penultimate_normed", "penultimate_normed")]);
}

#[test]
fn image_encoder_matches_transformers() {
    common::check_component("tiny-i2vgen", "image_encoder", "image_encoder.safetensors", &[("image_embeds", "image_embeds")]);
}

#[test]
fn vae_encode_matches_diffusers() {
    common::check_component("tiny-i2vgen", "vae_encode", "vae_encode.safetensors", &[("latent_mean", "latent_mean"), ("latent_logvar", "latent_logvar")]);
}

#[test]
fn vae_decode_matches_diffusers() {
    common::check_component("tiny-i2vgen", "vae_decode", "vae_decode.safetensors", &[("sample", "sample")]);
}
