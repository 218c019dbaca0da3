//! The VAE decode in row bands (`vae_bands`) equals the untiled one on both backends, and its
//! plan keeps a 720p frame's tensors under 256 MiB.

use crate::common;

use burn::tensor::{Device, Tensor, TensorData};
use i2vgen::diagnostics::device_check::pseudo_random;
use i2vgen::loading::config::parse;
use i2vgen::loading::folder;
use i2vgen::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use i2vgen::models::vae_bands::{DecodeBands, decode_bands};

/// Banded and untiled decodes differ only by float rounding (the GroupNorm statistics summed
/// band by band): ~1e-6 on outputs of order 1.
const TOLERANCE: f32 = 1e-3;

/// The tiny fixture's VAE (block_out_channels [16, 32, 32]: f = 4, widest 32) on latents of
/// 10×14 rows, under a limit that lets 3 latent rows per band through, not 4: 32 channels ×
/// (4·3 + 2 halo rows) × 56 columns × 4 bytes.
const LIMIT: u64 = 110_000;
const PLAN: DecodeBands = DecodeBands { bands: 4, max_tensor_bytes: 32 * 14 * 56 * 4 };

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

#[test]
fn a_720p_frame_fits_256_mib() {
    // I2VGen-XL's VAE (SD 2.1's), as in its vae/config.json.
    let json = r#"{"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32}"#;
    let config = parse::<AutoencoderKLConfig>(json).unwrap().config;
    let mib = 1 << 20;
    // Untiled, the last up blocks hold [1, 256, 720, 1280]: 944 MB.
    let untiled = decode_bands(&config, 90, 160, 4, u64::MAX).unwrap();
    assert_eq!(untiled, DecodeBands { bands: 1, max_tensor_bytes: 256 * 720 * 1280 * 4 });
    // 23 latent rows per band: [1, 256, 8·23 + 2, 1280] f32 is the largest.
    let f32_plan = decode_bands(&config, 90, 160, 4, 256 * mib).unwrap();
    assert_eq!(f32_plan, DecodeBands { bands: 4, max_tensor_bytes: 256 * 186 * 1280 * 4 });
    let f16_plan = decode_bands(&config, 90, 160, 2, 256 * mib).unwrap();
    assert_eq!(f16_plan, DecodeBands { bands: 2, max_tensor_bytes: 256 * 362 * 1280 * 2 });
    // The mid block's [1, 512, 90, 160] alone is 29 MB.
    assert_eq!(decode_bands(&config, 90, 160, 4, mib), None);
}
