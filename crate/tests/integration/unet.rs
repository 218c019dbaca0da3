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

// DeepCache step caching (`forward_cached`) through the production loader, on the golden inputs,
// both backends. Exact (f32 ==): a full step is `forward` itself, and a shallow step fed the deep
// features of its own input runs the same ops on the same values as the full step does.

use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::loading::folder;
use i2vgen::models::frame_chunks::FrameChunks;
use i2vgen::models::unet_3d_condition::UNet3DConditionModel;
use i2vgen::models::unet_i2vgen_xl::{I2VGenXLUNet, I2VGenXLUNetInput};

/// A fixture's `unet` through the production loader.
fn fixture_unet<C: i2vgen::loading::config::ConfigFile, N>(
    model: &str,
    device: &Device,
    load: impl FnOnce(&mut i2vgen::loading::weights::Weights, &C) -> i2vgen::Result<N>,
) -> N {
    let mut notes = Vec::new();
    let net = folder::network(common::open_fixture(model).as_mut(), "unet", device, &mut notes, load).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    net
}

/// The float tensors of a golden file, by name, to put on a device.
struct Golden(std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>);

impl Golden {
    fn open(file: &str) -> Self {
        Self(common::read_f32(&std::path::Path::new(common::FIXTURES).join("golden").join(file)))
    }

    /// `I2VGenXLUNet`'s inputs of `unet.safetensors` at these timesteps (fps 16 and 8).
    fn unet_input(&self, timesteps: &[f32], device: &Device) -> I2VGenXLUNetInput {
        I2VGenXLUNetInput {
            sample: self.get("sample", device),
            timesteps: timesteps.to_vec(),
            encoder_hidden_states: self.get("encoder_hidden_states", device),
            fps: vec![16.0, 8.0],
            image_latents: self.get("image_latents", device),
            image_embeddings: self.get("image_embeddings", device),
        }
    }

    fn get<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let (shape, values) = &self.0[name];
        let shape: [usize; D] = shape.clone().try_into().unwrap();
        Tensor::from_data(TensorData::new(values.clone(), shape), device)
    }
}

fn values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The checks of one UNet, `forward_cached(timesteps, deep)` on fixed inputs: (a) a full step is
/// `forward`; (b) a shallow step on its own deep features is the full step, and hands them back;
/// (c) a shallow step on another timestep's deep features is not (so (b) can fail).
fn check_forward_cached(
    what: &str,
    forward: impl Fn(&[f32]) -> Tensor<5>,
    forward_cached: impl Fn(&[f32], Option<FrameChunks>) -> (Tensor<5>, FrameChunks),
) {
    let (t, other) = ([981.0, 501.0], [941.0, 461.0]);
    let (full, deep) = forward_cached(&t, None);
    let full = values(full);
    assert!(full.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    assert!(full == values(forward(&t)), "{what}: forward_cached(None) is not forward");

    let (shallow, returned) = forward_cached(&t, Some(deep.clone()));
    assert!(values(returned.whole()) == values(deep.whole()), "{what}: the deep features did not come back");
    assert!(values(shallow) == full, "{what}: a shallow step on its own deep features is not the full step");

    let stale = forward_cached(&t, Some(forward_cached(&other, None).1)).0;
    let diff = common::max_abs_diff(&values(stale), &full);
    println!("{what}: a shallow step on deep features of another timestep: max abs diff {diff:.3e}");
    assert!(diff > 1e-4, "{what}: the deep features made no difference ({diff})");
}

#[test]
fn unet_forward_cached_reuses_deep_features() {
    let golden = Golden::open("unet.safetensors");
    for (backend, device) in common::devices() {
        let unet = fixture_unet("tiny-i2vgen", &device, I2VGenXLUNet::load);
        let input = |timesteps: &[f32]| golden.unet_input(timesteps, &device);
        check_forward_cached(
            &format!("I2VGenXLUNet [{backend}]"),
            |t| unet.forward(input(t)),
            |t, deep| unet.forward_cached(input(t), deep),
        );
    }
}

#[test]
fn refiner_unet_forward_cached_reuses_deep_features() {
    let golden = Golden::open("refiner_unet.safetensors");
    for (backend, device) in common::devices() {
        let unet = fixture_unet("tiny-vid2vid", &device, UNet3DConditionModel::load);
        let (sample, text) =
            (|| golden.get::<5>("sample", &device), || golden.get::<3>("encoder_hidden_states", &device));
        check_forward_cached(
            &format!("UNet3DConditionModel [{backend}]"),
            |t| unet.forward(sample(), t, text()),
            |t, deep| unet.forward_cached(sample(), t, text(), deep),
        );
    }
}

// Both UNets with their levels in pieces of frames and their temporal layers in row bands
// (`frame_chunks`), under byte limits low enough that the fixture's levels split: equal to the
// whole forward within float rounding (the banded GroupNorm statistics are summed band by band),
// and DeepCache's checks hold on the pieces too (on the refiner; both UNets share the backbone).
// The fixture (B 2, F 3, latents 6×10, widths [16, 32, 32], transformer_in 64 wide): level 0
// holds 15,360 B per frame, level 1 1,920.
const PIECE_LIMITS: [(u64, [usize; 2]); 2] = [
    // level 0: 1 frame per piece, 1 row per band; levels 1 and 2 whole
    (16_000, [3, 6]),
    // level 0 as above (over the limit: it cannot split further); level 1: pieces of 2 and 1
    // frames, 3 bands
    (5_000, [3, 6]),
];

fn check_pieces(
    what: &str,
    limits: impl Fn(u64) -> Vec<i2vgen::models::unet_3d_backbone::LevelSplit>,
    mut forward: impl FnMut(u64) -> Tensor<5>,
) {
    let whole = values(forward(u64::MAX));
    for (limit, [pieces, bands]) in PIECE_LIMITS {
        let splits = limits(limit);
        assert_eq!([splits[0].split.pieces, splits[0].split.bands], [pieces, bands], "{what}: level 0 at {limit} B");
        let split = values(forward(limit));
        let diff = common::max_abs_diff(&whole, &split);
        println!(
            "{what}: limit {limit} B, levels {:?}: max abs diff {diff:.3e}",
            splits.iter().map(|l| l.split).collect::<Vec<_>>()
        );
        assert!(diff <= 1e-4, "{what}: in pieces under {limit} B the output differs by {diff}");
    }
    let deepest = limits(5_000);
    assert_eq!([deepest[1].split.pieces, deepest[1].split.bands], [2, 3], "{what}: level 1 at 5,000 B");
}

#[test]
fn unets_in_frame_pieces_equal_the_whole_forward() {
    let golden = Golden::open("unet.safetensors");
    let refiner_golden = Golden::open("refiner_unet.safetensors");
    let [b, _, f, h, w]: [usize; 5] = golden.0["sample"].0.clone().try_into().unwrap();
    for (backend, device) in common::devices() {
        let mut unet = fixture_unet("tiny-i2vgen", &device, I2VGenXLUNet::load);
        let input = |timesteps: &[f32]| golden.unet_input(timesteps, &device);
        let config = unet.config.clone();
        check_pieces(
            &format!("I2VGenXLUNet [{backend}]"),
            |limit| config.level_splits(b * f, f, h, w, 4, limit),
            |limit| {
                unet.backbone.max_tensor_bytes = limit;
                unet.forward(input(&[981.0, 501.0]))
            },
        );

        let mut refiner = fixture_unet("tiny-vid2vid", &device, UNet3DConditionModel::load);
        let (sample, text) = (
            || refiner_golden.get::<5>("sample", &device),
            || refiner_golden.get::<3>("encoder_hidden_states", &device),
        );
        let config = refiner.config.clone();
        check_pieces(
            &format!("UNet3DConditionModel [{backend}]"),
            |limit| config.level_splits(b * f, f, h, w, 4, limit),
            |limit| {
                refiner.backbone.max_tensor_bytes = limit;
                refiner.forward(sample(), &[981.0, 501.0], text())
            },
        );
        refiner.backbone.max_tensor_bytes = 5_000;
        check_forward_cached(
            &format!("UNet3DConditionModel in pieces [{backend}]"),
            |t| refiner.forward(sample(), t, text()),
            |t, deep| refiner.forward_cached(sample(), t, text(), deep),
        );
    }
}

/// The tiny I2VGenXLUNet with its Linear and conv weights packed to f16 (`Weights::set_packed_f16`,
/// computing in f32) against diffusers' f32 output, on both backends, within the bounds the f16
/// golden (`generate_in_f16_stays_near_diffusers`) allows; and measurably not the f32 network (the
/// packing took place).
#[test]
fn unet_with_packed_f16_weights_stays_near_diffusers() {
    let golden = Golden::open("unet.safetensors");
    // `timestep` and `fps` are int64 `[B]` in the golden file.
    let bytes = std::fs::read(std::path::Path::new(common::FIXTURES).join("golden/unet.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let per_batch = |name: &str, _b: usize| -> Vec<f32> {
        let view = file.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::I64, "{name}");
        view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
    };
    let reference = &golden.0["out_sample"].1;
    for (backend, device) in common::devices() {
        let input = || {
            let sample: Tensor<5> = golden.get("sample", &device);
            let b = sample.dims()[0];
            I2VGenXLUNetInput {
                sample,
                timesteps: per_batch("timestep", b),
                encoder_hidden_states: golden.get("encoder_hidden_states", &device),
                fps: per_batch("fps", b),
                image_latents: golden.get("image_latents", &device),
                image_embeddings: golden.get("image_embeddings", &device),
            }
        };
        let packed = fixture_unet("tiny-i2vgen", &device, |w, c| {
            w.set_packed_f16(true);
            I2VGenXLUNet::load(w, c)
        });
        let got = values(packed.forward(input()));
        let f32_net = fixture_unet("tiny-i2vgen", &device, I2VGenXLUNet::load);
        let dense = values(f32_net.forward(input()));
        let max = common::max_abs_diff(&got, reference);
        let mean = got.iter().zip(reference).map(|(a, b)| (a - b).abs()).sum::<f32>() / got.len() as f32;
        let from_f32 = common::max_abs_diff(&got, &dense);
        println!(
            "packed f16 UNet [{backend}] vs diffusers f32: max abs {max:.3e}, mean abs {mean:.3e}; vs our f32 {from_f32:.3e}"
        );
        assert!(max < 0.1 && mean < 1e-2, "[{backend}] packed f16: max abs {max}, mean abs {mean}");
        assert!(from_f32 > 1e-6, "[{backend}] the packed network computed exactly the f32 one: nothing was packed");
    }
}
