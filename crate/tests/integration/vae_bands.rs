//! The VAE decode and encode in row bands (`vae_bands`) equal the untiled ones on both backends,
//! and their plans keep a 720p frame's tensors under 256 MiB.

use crate::common;

use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::diagnostics::device_check::pseudo_random;
use i2vgen::loading::config::parse;
use i2vgen::loading::folder;
use i2vgen::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use i2vgen::models::vae_bands::{Bands, decode_bands, encode_bands};

/// Banded and untiled decodes differ only by float rounding (the GroupNorm statistics summed
/// band by band): ~1e-6 on outputs of order 1.
const TOLERANCE: f32 = 1e-3;

/// The tiny fixture's VAE (block_out_channels [16, 32, 32]: f = 4, widest 32) on latents of
/// 10×14 rows, under a limit that lets 3 latent rows per band through, not 4: 32 channels ×
/// (4·3 + 2 halo rows) × 56 columns × 4 bytes.
const LIMIT: u64 = 110_000;
const PLAN: Bands = Bands { bands: 4, max_tensor_bytes: 32 * 14 * 56 * 4 };

/// The tiny VAE's encode of a 40×56 picture (10×14 latents) under a limit that lets bands of 4
/// latent rows (16 pixel rows) through, not 5: 16 channels × (16 + 2 halo rows) × 56 columns ×
/// 4 bytes at conv_in's output. Bands of 4, 4 and 2 latent rows.
const ENCODE_LIMIT: u64 = 70_000;
const ENCODE_PLAN: Bands = Bands { bands: 3, max_tensor_bytes: 16 * 18 * 56 * 4 };

fn tiny_vae(device: &Device) -> AutoencoderKL {
    let mut notes = Vec::new();
    let vae =
        folder::network(common::open_fixture("tiny-i2vgen").as_mut(), "vae", device, &mut notes, AutoencoderKL::load);
    assert!(notes.is_empty(), "{notes:?}");
    vae.unwrap()
}

fn read<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[test]
fn banded_decode_equals_untiled() {
    for (name, device) in common::devices() {
        let vae = tiny_vae(&device);
        // Bands of 3, 3, 3, 1 latent rows: an uneven last one.
        assert_eq!(decode_bands(&vae.config, 10, 14, 4, LIMIT), Some(PLAN));
        let latents = Tensor::<4>::from_data(TensorData::new(pseudo_random(4 * 10 * 14, 5), [1, 4, 10, 14]), &device);
        let whole = read(vae.decode(latents.clone()));
        // 1 latent row per band: each halo row is a whole neighbouring band at latent scale.
        for bands in [2, PLAN.bands, 10] {
            let banded = read(vae.decode_banded(latents.clone(), bands));
            let diff = common::max_abs_diff(&whole, &banded);
            println!("{name}: {bands} bands, max abs diff {diff:.3e}");
            assert!(diff <= TOLERANCE, "{name}: {bands} bands differ by {diff}");
        }
    }
}

#[test]
fn decode_video_frame_bands_under_a_small_limit() {
    for (name, device) in common::devices() {
        let mut vae = tiny_vae(&device);
        let shape = [1, 4, 2, 10, 14];
        let latents = Tensor::<5>::from_data(TensorData::new(pseudo_random(2 * 4 * 10 * 14, 6), shape), &device);
        let whole = read(vae.decode_video_frame(&latents, 1));
        vae.max_tensor_bytes = LIMIT;
        let banded = read(vae.decode_video_frame(&latents, 1));
        let diff = common::max_abs_diff(&whole, &banded);
        println!("{name}: decode_video_frame in {} bands, max abs diff {diff:.3e}", PLAN.bands);
        assert!(diff <= TOLERANCE, "{name}: differs by {diff}");
    }
}

/// A picture `[1, 3, height, width]` in [-1, 1).
fn picture(height: usize, width: usize, seed: u32, device: &Device) -> Tensor<4> {
    let values = pseudo_random(3 * height * width, seed);
    Tensor::<4>::from_data(TensorData::new(values, [1, 3, height, width]), device)
}

#[test]
fn banded_encode_equals_untiled() {
    for (name, device) in common::devices() {
        let vae = tiny_vae(&device);
        assert_eq!(encode_bands(&vae.config, 40, 56, 4, ENCODE_LIMIT), Some(ENCODE_PLAN));
        // 40 rows: even bands (2), uneven ones (3: 16, 16, 8 rows), one latent row (4 pixel
        // rows) per band; 43×57: the last band also holds the 3 rows below the last whole
        // latent row, odd at every down-sampler (43 → 21 → 10 rows).
        for (height, width, bands) in [(40, 56, &[2, ENCODE_PLAN.bands, 10][..]), (43, 57, &[3, 10][..])] {
            let sample = picture(height, width, 7, &device);
            let whole = vae.encode(sample.clone());
            assert_eq!(whole.mean.dims(), [1, 4, height / 4, width / 4]);
            let (mean, logvar) = (read(whole.mean), read(whole.logvar));
            for &bands in bands {
                let banded = vae.encode_banded(sample.clone(), bands);
                let diff = common::max_abs_diff(&mean, &read(banded.mean))
                    .max(common::max_abs_diff(&logvar, &read(banded.logvar)));
                println!("{name}: {height}×{width} in {bands} bands, max abs diff of mean and logvar {diff:.3e}");
                assert!(diff <= TOLERANCE, "{name}: {height}×{width} in {bands} bands differs by {diff}");
            }
        }
    }
}

#[test]
fn encode_video_frame_bands_under_a_small_limit() {
    for (name, device) in common::devices() {
        let mut vae = tiny_vae(&device);
        // The frame in [0, 1], as the refiner hands it.
        let frame =
            picture(40, 56, 8, &device).permute([2, 3, 1, 0]).reshape([40, 56, 3]).div_scalar(2.0).add_scalar(0.5);
        let noise = Tensor::<4>::from_data(TensorData::new(pseudo_random(4 * 10 * 14, 9), [1, 4, 10, 14]), &device);
        assert_eq!(encode_bands(&vae.config, 40, 56, 4, vae.max_tensor_bytes).map(|plan| plan.bands), Some(1));
        let whole = read(vae.encode_video_frame(frame.clone(), noise.clone()));
        vae.max_tensor_bytes = ENCODE_LIMIT;
        let banded = read(vae.encode_video_frame(frame, noise));
        let diff = common::max_abs_diff(&whole, &banded);
        println!("{name}: encode_video_frame in {} bands, max abs diff {diff:.3e}", ENCODE_PLAN.bands);
        assert!(diff <= TOLERANCE, "{name}: differs by {diff}");
    }
}

/// I2VGen-XL's VAE (SD 2.1's), as in its vae/config.json.
fn real_vae_config() -> AutoencoderKLConfig {
    let json = r#"{"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32}"#;
    parse::<AutoencoderKLConfig>(json).unwrap().config
}

#[test]
fn a_720p_frame_encodes_under_256_mib() {
    let config = real_vae_config();
    let mib = 1 << 20;
    // Untiled, the first down block holds [1, 128, 720, 1280]: 472 MB.
    let untiled = encode_bands(&config, 720, 1280, 4, u64::MAX).unwrap();
    assert_eq!(untiled, Bands { bands: 1, max_tensor_bytes: 128 * 720 * 1280 * 4 });
    // 45 latent rows per band: [1, 128, 8·45 + 2, 1280] f32 is the largest.
    let f32_plan = encode_bands(&config, 720, 1280, 4, 256 * mib).unwrap();
    assert_eq!(f32_plan, Bands { bands: 2, max_tensor_bytes: 128 * 362 * 1280 * 4 });
    assert!(f32_plan.max_tensor_bytes <= 256 * mib);
    // In f16 the untiled encode's 236 MB fits.
    let f16_plan = encode_bands(&config, 720, 1280, 2, 256 * mib).unwrap();
    assert_eq!(f16_plan, Bands { bands: 1, max_tensor_bytes: 128 * 720 * 1280 * 2 });
    // One latent row, [1, 128, 8 + 2, 1280] f32, is 6.6 MB; the picture alone 11 MB.
    assert_eq!(encode_bands(&config, 720, 1280, 4, mib), None);
}

#[test]
fn a_720p_frame_fits_256_mib() {
    let config = real_vae_config();
    let mib = 1 << 20;
    // Untiled, the last up blocks hold [1, 256, 720, 1280]: 944 MB.
    let untiled = decode_bands(&config, 90, 160, 4, u64::MAX).unwrap();
    assert_eq!(untiled, Bands { bands: 1, max_tensor_bytes: 256 * 720 * 1280 * 4 });
    // 23 latent rows per band: [1, 256, 8·23 + 2, 1280] f32 is the largest.
    let f32_plan = decode_bands(&config, 90, 160, 4, 256 * mib).unwrap();
    assert_eq!(f32_plan, Bands { bands: 4, max_tensor_bytes: 256 * 186 * 1280 * 4 });
    let f16_plan = decode_bands(&config, 90, 160, 2, 256 * mib).unwrap();
    assert_eq!(f16_plan, Bands { bands: 2, max_tensor_bytes: 256 * 362 * 1280 * 2 });
    // The mid block's [1, 512, 90, 160] alone is 29 MB.
    assert_eq!(decode_bands(&config, 90, 160, 4, mib), None);
}
