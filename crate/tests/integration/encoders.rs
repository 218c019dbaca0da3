//! Golden tests: the encoders and the VAE through the library (the production loader on the
//! fixture's diffusers folder) against transformers/diffusers outputs, on both backends.
//!
//! Tolerance 1e-4 absolute and relative (to the largest reference magnitude): f32 everywhere,
//! the only differences are summation orders and transcendental implementations.

use crate::common;

#[test]
fn text_encoder_matches_transformers() {
    common::check_component(
        "tiny-i2vgen",
        "text_encoder",
        "text_encoder.safetensors",
        &[("last_hidden_state", "last_hidden_state"), ("penultimate_normed", "penultimate_normed")],
    );
}

/// `i2vgen forward` takes `input_ids` as int32 on disk too (as JavaScript and ONNX tools write
/// them), not only int64.
#[test]
fn text_encoder_takes_int32_ids() {
    let golden = std::path::Path::new(common::FIXTURES).join("golden/text_encoder.safetensors");
    let bytes = std::fs::read(&golden).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = file.tensor("input_ids").unwrap();
    assert_eq!(ids.dtype(), safetensors::Dtype::I64);
    let ids32: Vec<u8> = ids
        .data()
        .chunks_exact(8)
        .flat_map(|b| (i64::from_le_bytes(b.try_into().unwrap()) as i32).to_le_bytes())
        .collect();
    let mut tensors = vec![(
        "input_ids".to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, ids.shape().to_vec(), &ids32).unwrap(),
    )];
    tensors.extend(file.tensors().into_iter().filter(|(name, _)| name != "input_ids"));
    let inputs = std::env::temp_dir().join(format!("i2vgen-int32-ids-{}.safetensors", std::process::id()));
    safetensors::serialize_to_file(tensors, None, &inputs).unwrap();
    common::check_forward_cli(
        "tiny-i2vgen",
        "text_encoder",
        &inputs,
        "text_encoder.safetensors",
        &[("last_hidden_state", "last_hidden_state")],
    );
    std::fs::remove_file(&inputs).ok();
}

#[test]
fn image_encoder_matches_transformers() {
    common::check_component(
        "tiny-i2vgen",
        "image_encoder",
        "image_encoder.safetensors",
        &[("image_embeds", "image_embeds")],
    );
}

#[test]
fn vae_encode_matches_diffusers() {
    common::check_component(
        "tiny-i2vgen",
        "vae_encode",
        "vae_encode.safetensors",
        &[("latent_mean", "latent_mean"), ("latent_logvar", "latent_logvar")],
    );
}

#[test]
fn vae_decode_matches_diffusers() {
    common::check_component("tiny-i2vgen", "vae_decode", "vae_decode.safetensors", &[("sample", "sample")]);
}
