//! The whole base stage against diffusers' `I2VGenXLPipeline` on the tiny model with explicit
//! noise (`golden/pipeline.safetensors`): the two preprocessed images exactly, the intermediates
//! of `i2vgen generate --trace` (prompt and image embeddings, image latents at 1e-4; each step's
//! UNet output at 1e-3), and its frames within 1e-3 on both backends (f32; three DDIM steps with guidance 9 amplify
//! the UNet's ~1e-6 differences, and the VAE decode adds its own).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use i2vgen::loading::config::parse;
use i2vgen::media::image::RgbImage;
use i2vgen::pipelines::pipeline_i2vgen_xl::{CLIPImageProcessorConfig, clip_pixel_values, vae_pixel_values};

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

/// `generate` with the golden case's settings and explicit noise.
fn golden_generate() -> Command {
    let case = case();
    let mut command = generate();
    command
        .args(["--prompt", case["prompt"].as_str().unwrap()])
        .args(["--negative-prompt", case["negative_prompt"].as_str().unwrap()])
        .args(["--frames", &case["num_frames"].to_string(), "--fps", &case["target_fps"].to_string()])
        .args(["--height", &case["height"].to_string(), "--width", &case["width"].to_string()])
        .args(["--steps", &case["num_inference_steps"].to_string(), "--guidance", &case["guidance_scale"].to_string()])
        .arg("--noise")
        .arg(golden("pipeline.safetensors"));
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
    common::assert_close(
        "clip_pixel_values",
        &clip_pixel_values(&image, width, &config),
        &reference["clip_pixel_values"].1,
        1e-6,
    );
    common::assert_close(
        "vae_pixel_values",
        &vae_pixel_values(&image, width, height),
        &reference["vae_pixel_values"].1,
        1e-6,
    );
}

#[test]
fn generate_matches_diffusers() {
    let case = case();
    let reference = common::read_f32(&golden("pipeline.safetensors"));
    for backend in ["cpu", "wgpu"] {
        let out = std::env::temp_dir().join(format!("i2vgen-generate-{backend}-{}.safetensors", std::process::id()));
        let trace = std::env::temp_dir().join(format!("i2vgen-trace-{backend}-{}.safetensors", std::process::id()));
        let status = golden_generate()
            .args(["--backend", backend, "--output"])
            .arg(&out)
            .arg("--trace")
            .arg(&trace)
            .status()
            .unwrap();
        assert!(status.success(), "generate --backend {backend} failed");
        // The intermediates first, so a drift shows where it starts.
        let traced = common::read_f32(&trace);
        for (name, tolerance) in [("prompt_embeds", 1e-4), ("image_embeddings", 1e-4), ("image_latents", 1e-4)] {
            common::assert_close(&format!("{name} [{backend}]"), &traced[name].1, &reference[name].1, tolerance);
        }
        let steps = case["num_inference_steps"].as_u64().unwrap();
        for i in 0..steps {
            let name = format!("noise_pred.{i}");
            common::assert_close(&format!("{name} [{backend}]"), &traced[&name].1, &reference[&name].1, 1e-3);
        }
        let got = common::read_f32(&out);
        std::fs::remove_file(&out).ok();
        std::fs::remove_file(&trace).ok();
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

/// f16 compute on wgpu (Mesa llvmpipe has `shader-f16`; so do most browser GPUs), and f16
/// weights packed in u32 words computing in f32 (the page's default without `shader-f16`): the
/// golden generation against diffusers' f32 frames. Three steps at guidance 9 amplify f16
/// rounding; the bound catches a broken f16 path (NaN, overflow, a wrong cast), not f16 itself.
#[test]
fn generate_in_f16_stays_near_diffusers() {
    let reference = common::read_f32(&golden("pipeline.safetensors"));
    let want = &reference["frames"].1;
    for dtype in ["f16", "packed-f16"] {
        let out = std::env::temp_dir().join(format!("i2vgen-generate-{dtype}-{}.safetensors", std::process::id()));
        let status =
            golden_generate().args(["--backend", "wgpu", "--dtype", dtype, "--output"]).arg(&out).status().unwrap();
        assert!(status.success(), "generate --dtype {dtype} failed");
        let got = common::read_f32(&out);
        std::fs::remove_file(&out).ok();
        let got = &got["frames"].1;
        let mean = got.iter().zip(want).map(|(a, b)| (a - b).abs()).sum::<f32>() / got.len() as f32;
        let max = common::max_abs_diff(got, want);
        eprintln!("{dtype} frames vs diffusers f32: max abs {max:.3e}, mean abs {mean:.3e}");
        assert!(max < 0.1 && mean < 1e-2, "{dtype} frames: max abs {max}, mean abs {mean}");
        assert!(max > 1e-6, "{dtype} frames equal the f32 reference: the weights were not rounded to f16");
    }
}

/// The MP4 read back by an independent demuxer (`mp4`) and decoded by OpenH264 is the video
/// of the `.safetensors` frames: same size and count, 8 fps, luma PSNR ≥ 30 dB (the tiny model's
/// frames are pixel noise, so 4:2:0 chroma subsampling alone costs colour fidelity; luma is kept).
#[test]
fn generate_writes_a_playable_mp4() {
    let write = |extension: &str| {
        let out = std::env::temp_dir().join(format!("i2vgen-generate-mp4-{}.{extension}", std::process::id()));
        let status = generate()
            .args([
                "--prompt", "a cat", "--frames", "4", "--fps", "8", "--height", "32", "--width", "48", "--steps", "2",
            ])
            .args(["--backend", "cpu", "--seed", "3", "--output"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "generate --output *.{extension} failed");
        out
    };
    let (mp4_path, frames_path) = (write("mp4"), write("safetensors"));
    let expected = &common::read_f32(&frames_path)["frames"].1;

    let file = std::fs::File::open(&mp4_path).unwrap();
    let size = file.metadata().unwrap().len();
    let mut reader = mp4::Mp4Reader::read_header(std::io::BufReader::new(file), size).unwrap();
    let track = reader.tracks().values().next().expect("one video track");
    let (id, count) = (track.track_id(), track.sample_count());
    assert_eq!((track.width(), track.height()), (48, 32));
    assert!((track.frame_rate() - 8.0).abs() < 1e-6, "{} fps", track.frame_rate());
    // avcC holds the parameter sets; samples hold 4-byte-length-prefixed NAL units.
    let start_code = |nal: &[u8]| [&[0, 0, 0, 1][..], nal].concat();
    let mut stream =
        [start_code(track.sequence_parameter_set().unwrap()), start_code(track.picture_parameter_set().unwrap())]
            .concat();
    let mut decoder = openh264::decoder::Decoder::new().unwrap();
    let mut decoded = Vec::new();
    for i in 1..=count {
        let sample = reader.read_sample(id, i).unwrap().expect("sample");
        let mut rest = &sample.bytes[..];
        while rest.len() > 4 {
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            stream.extend(start_code(&rest[4..4 + n]));
            rest = &rest[4 + n..];
        }
        if let Some(yuv) = decoder.decode(&stream).unwrap() {
            let mut rgb = vec![0u8; 48 * 32 * 3];
            yuv.write_rgb8(&mut rgb);
            decoded.extend(rgb.iter().map(|&v| v as f32 / 255.0));
        }
        stream.clear();
    }
    std::fs::remove_file(&mp4_path).ok();
    std::fs::remove_file(&frames_path).ok();
    assert_eq!(decoded.len(), expected.len(), "4 frames of 48×32");
    let luma =
        |rgb: &[f32]| -> Vec<f32> { rgb.chunks_exact(3).map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]).collect() };
    let (got, want) = (luma(&decoded), luma(expected));
    let mse = got.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / got.len() as f32;
    let psnr = -10.0 * mse.log10();
    assert!(psnr >= 30.0, "PSNR {psnr:.1} dB");
}

/// PNG's CRC-32 (for hand-made headers).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn run_with_model(model: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_i2vgen"))
        .args(["generate", "--model"])
        .arg(model)
        .arg("--image")
        .arg(golden("image.png"))
        .args(["--prompt", "a cat", "--backend", "cpu", "--output", "x.gif"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_requests_are_clear_sentences() {
    let run = |extra: &[&str]| {
        let out = generate().args(["--prompt", "a cat", "--backend", "cpu"]).args(extra).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--height", "30", "--width", "40", "--output", "x.gif"]).contains("multiples of 8"));
    assert!(
        run(&["--height", "24", "--width", "40", "--frames", "1", "--output", "x.gif"])
            .contains("frames must be at least 2")
    );
    assert!(
        run(&["--height", "24", "--width", "40", "--output", "x.avi"])
            .contains("must end in .webm, .mp4, .gif or .safetensors")
    );

    // Images: missing, not an image, damaged, too small, and a 20000×20000 header.
    let dir = std::env::temp_dir().join(format!("i2vgen-bad-images-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    let chunk = |kind: &[u8], data: &[u8]| {
        let crc = crc32(&[kind, data].concat());
        [&(data.len() as u32).to_be_bytes()[..], kind, data, &crc.to_be_bytes()].concat()
    };
    let header = |w: u32, h: u32| [&w.to_be_bytes()[..], &h.to_be_bytes(), &[8, 2, 0, 0, 0]].concat();
    let signature = b"\x89PNG\r\n\x1a\n";
    let mut one_pixel = Vec::new();
    image::RgbImage::new(1, 1).write_to(&mut std::io::Cursor::new(&mut one_pixel), image::ImageFormat::Png).unwrap();
    let cases = [
        (dir.join("missing.png").to_str().unwrap().to_string(), "cannot read"),
        (png("text.png", b"hello"), "is not a PNG, JPEG or WebP image"),
        (png("damaged.png", &[&signature[..], b" garbage"].concat()), "is not a PNG, JPEG or WebP image"),
        (png("one.png", &one_pixel), "the image is 1×1 pixels; use one at least 16 pixels"),
        (
            png(
                "huge.png",
                &[
                    &signature[..],
                    &chunk(b"IHDR", &header(20000, 20000)),
                    &chunk(b"IDAT", &[0x78, 0x9c, 3, 0, 0, 0, 0, 1]),
                    &chunk(b"IEND", &[]),
                ]
                .concat(),
            ),
            "20000×20000 pixels, too large",
        ),
    ];
    for (image, expect) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_i2vgen"))
            .args(["generate", "--model"])
            .arg(Path::new(common::FIXTURES).join("tiny-i2vgen"))
            .args([
                "--image",
                &image,
                "--prompt",
                "a cat",
                "--height",
                "24",
                "--width",
                "40",
                "--backend",
                "cpu",
                "--output",
                "x.gif",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{image}: {stderr}");
        assert!(stderr.contains(expect) && !stderr.contains("panicked"), "{image}: expected {expect:?} in {stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
    // An unknown model folder.
    assert!(run_with_model(&dir).contains("--model must be a diffusers pipeline folder"));
}

/// `--clips 3`: three chained clips of 4 frames make 3·4 − 2 = 10 frames, the first clip equal
/// to a one-clip run of the same seed. A bad request in clip 2 (its noise, of the wrong shape)
/// stops the run and leaves clip 1 as the written result.
#[test]
fn generate_chains_clips_and_keeps_the_finished_ones() {
    let dir = std::env::temp_dir().join(format!("i2vgen-clips-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |clips: &str, output: &Path, noise: Option<&Path>| {
        let mut command = generate();
        command
            .args(["--prompt", "a cat", "--frames", "4", "--height", "24", "--width", "40", "--steps", "2"])
            .args(["--backend", "cpu", "--seed", "7", "--clips", clips, "--output"])
            .arg(output);
        if let Some(noise) = noise {
            command.arg("--noise").arg(noise);
        }
        command.output().unwrap()
    };
    let frames = |path: &Path| common::read_f32(path).remove("frames").expect("frames");

    let one = dir.join("one.safetensors");
    assert!(run("1", &one, None).status.success());
    let three = dir.join("three.safetensors");
    let out = run("3", &three, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ((one_shape, one), (three_shape, three)) = (frames(&one), frames(&three));
    assert_eq!(one_shape, [4, 24, 40, 3]);
    assert_eq!(three_shape, [10, 24, 40, 3]);
    assert!(three[..one.len()] == one[..], "clip 1 differs from a one-clip run");
    assert!(three[one.len()..] != three[..three.len() - one.len()], "later clips repeat the first");

    // clip 2's latents of the wrong shape: a bad request after clip 1 finished.
    let noise = dir.join("noise.safetensors");
    let bytes = vec![0u8; 4 * 4];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 4], &bytes).unwrap();
    safetensors::serialize_to_file(vec![("clip2.latents", view)], None, &noise).unwrap();
    let partial = dir.join("partial.safetensors");
    let out = run("3", &partial, Some(&noise));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("clip 2 of 3 failed") && stderr.contains("1 finished clip(s), 4 frames"), "{stderr}");
    let (shape, kept) = frames(&partial);
    assert_eq!(shape, [4, 24, 40, 3]);
    assert!(kept == one, "the kept clip is not clip 1");
    std::fs::remove_dir_all(&dir).ok();
}
