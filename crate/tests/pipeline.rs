//! The whole base stage against diffusers' `I2VGenXLPipeline` on the tiny model with explicit
//! noise (`golden/pipeline.safetensors`): the two preprocessed images exactly, and the frames of
//! `i2vgen generate` within 1e-3 on both backends (f32; three DDIM steps with guidance 9 amplify
//! the UNet's ~1e-6 differences, and the VAE decode adds its own).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use i2vgen::config::parse;
use i2vgen::image::RgbImage;
use i2vgen::pipeline_i2vgen_xl::{CLIPImageProcessorConfig, clip_pixel_values, vae_pixel_values};

fn golden(name: &str) -> PathBuf {
    Path::new(common::FIXTURES).join("golden").join(name)
}

fn case() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(golden("pipeline.json")).unwrap()).unwrap()
}

fn test_image() -> RgbImage {
    let decoded = image::open(golden("image.png")).unwrap().to_rgb8();
    let (w, h) = decoded.dimensions();
    RgbImage::new(w as usize, h as usize, decoded.into_raw()).unwrap()
}

/// `i2vgen generate` on the fixture model and test image; the caller adds the rest.
fn generate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_i2vgen"));
    command
        .arg("generate")
        .arg("--model")
        .arg(Path::new(common::FIXTURES).join("tiny-i2vgen"))
        .arg("--image")
        .arg(golden("image.png"));
    command
}

#[test]
fn preprocessing_matches_pil_exactly() {
    let case = case();
    let (width, height) = (case["width"].as_u64().unwrap() as usize, case["height"].as_u64().unwrap() as usize);
    let reference = common::read_f32(&golden("pipeline.safetensors"));
    let config_path = Path::new(common::FIXTURES).join("tiny-i2vgen/feature_extractor/preprocessor_config.json");
    let config = parse::<CLIPImageProcessorConfig>(&std::fs::read_to_string(config_path).unwrap()).unwrap().config;
    let image = test_image();
    // Same bytes in, so the only differences are f32 roundings of identical formulas.
    common::assert_close("clip_pixel_values", &clip_pixel_values(&image, width, &config), &reference["clip_pixel_values"].1, 1e-6);
    common::assert_close("vae_pixel_values", &vae_pixel_values(&image, width, height), &reference["vae_pixel_values"].1, 1e-6);
}

#[test]
fn generate_matches_diffusers() {
    let case = case();
    let reference = common::read_f32(&golden("pipeline.safetensors"));
    for backend in ["cpu", "wgpu"] {
        let out = std::env::temp_dir().join(format!("i2vgen-generate-{backend}-{}.safetensors", std::process::id()));
        let status = generate()
            .args(["--prompt", case["prompt"].as_str().unwrap()])
            .args(["--negative-prompt", case["negative_prompt"].as_str().unwrap()])
            .args(["--frames", &case["num_frames"].to_string(), "--fps", &case["target_fps"].to_string()])
            .args(["--height", &case["height"].to_string(), "--width", &case["width"].to_string()])
            .args(["--steps", &case["num_inference_steps"].to_string(), "--guidance", &case["guidance_scale"].to_string()])
            .arg("--noise")
            .arg(golden("pipeline.safetensors"))
            .args(["--backend", backend, "--output"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "generate --backend {backend} failed");
        let got = common::read_f32(&out);
        std::fs::remove_file(&out).ok();
        assert_eq!(got["frames"].0, reference["frames"].0);
        common::assert_close(&format!("frames [{backend}]"), &got["frames"].1, &reference["frames"].1, 1e-3);
    }
}

#[test]
fn generate_writes_a_looping_gif() {
    let out = std::env::temp_dir().join(format!("i2vgen-generate-{}.gif", std::process::id()));
    let status = generate()
        .args(["--prompt", "a cat", "--frames", "4", "--fps", "8", "--height", "24", "--width", "40", "--steps", "2"])
        .args(["--backend", "cpu", "--seed", "7", "--output"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options.read_info(std::fs::File::open(&out).unwrap()).unwrap();
    assert_eq!((decoder.width(), decoder.height()), (40, 24));
    let mut frames = 0;
    while let Some(frame) = decoder.read_next_frame().unwrap() {
        assert_eq!(frame.delay, 13); // 8 fps → 12.5 → 13 hundredths
        frames += 1;
    }
    assert_eq!(frames, 4);
    std::fs::remove_file(&out).ok();
}

#[test]
fn bad_requests_are_clear_sentences() {
    let run = |extra: &[&str]| {
        let out = generate()
            .args(["--prompt", "a cat", "--backend", "cpu"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--height", "30", "--width", "40", "--output", "x.gif"]).contains("multiples of 8"));
    assert!(run(&["--height", "24", "--width", "40", "--frames", "1", "--output", "x.gif"]).contains("frames must be at least 2"));
    assert!(run(&["--height", "24", "--width", "40", "--output", "x.avi"]).contains("--output must end in"));
}
