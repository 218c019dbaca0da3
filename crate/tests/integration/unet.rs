//! Golden tests: both 3D UNets through the library's loader and forward against diffusers, on
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

/// diffusers' own pipeline hands the UNet `image_embeddings` as `[B, 1, D]` (`_encode_image`
/// unsqueezes); `forward` takes that shape too and computes the same.
#[test]
fn unet_takes_image_embeddings_as_the_pipeline_passes_them() {
    let golden = std::path::Path::new(common::FIXTURES).join("golden/unet.safetensors");
    let bytes = std::fs::read(&golden).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for (name, view) in file.tensors() {
        let mut shape = view.shape().to_vec();
        if name == "image_embeddings" {
            assert_eq!(shape.len(), 2, "the fixture's image_embeddings are [B, D]");
            shape.insert(1, 1);
        }
        tensors.push((name, view.dtype(), shape, view.data().to_vec()));
    }
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (name.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap())
        })
        .collect();
    let unsqueezed = std::env::temp_dir().join(format!("i2vgen-unet-b1d-{}.safetensors", std::process::id()));
    safetensors::serialize_to_file(views, None, &unsqueezed).unwrap();
    common::check_forward_cli("tiny-i2vgen", "unet", &unsqueezed, "unet.safetensors", &[("sample", "out_sample")]);
    std::fs::remove_file(&unsqueezed).ok();
}
