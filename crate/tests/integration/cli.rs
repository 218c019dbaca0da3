//! The `i2vgen` CLI contract: clear one-line errors with a non-zero exit (never a panic), the
//! tokenizer command, and a sharded component folder loading like a single file.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn i2vgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_i2vgen")).args(args).output().expect("running i2vgen")
}

fn model() -> String {
    Path::new(common::FIXTURES).join("tiny-i2vgen").display().to_string()
}

fn golden(name: &str) -> String {
    Path::new(common::FIXTURES).join("golden").join(name).display().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("i2vgen-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fails with exit code 1 and a message containing `expect`, and no panic.
fn assert_clear_error(args: &[&str], expect: &str) {
    common::assert_clear_error(&format!("{args:?}"), &i2vgen(args), expect);
}

#[test]
fn forward_errors_are_one_clear_sentence() {
    let out = scratch("errors").join("out.safetensors").display().to_string();
    let m = model();
    let forward = |component: &str, inputs: &str| {
        ["forward", "--model", &m, "--component", component, "--inputs", inputs, "--output", &out, "--backend", "cpu"]
            .map(String::from)
    };
    let run = |args: [String; 11], expect: &str| {
        assert_clear_error(&args.iter().map(String::as_str).collect::<Vec<_>>(), expect)
    };
    run(forward("vae_decode", "/nonexistent.safetensors"), "cannot read /nonexistent.safetensors");
    // The text encoder's inputs given to the VAE: the wrong tensor name.
    run(forward("vae_decode", &golden("text_encoder.safetensors")), "has no tensor `latents`");
    // The VAE encoder's images given to the image encoder, then the image encoder's given to the
    // text encoder: the wrong tensor names.
    let mut args = forward("image_encoder", &golden("vae_encode.safetensors"));
    run(args.clone(), "has no tensor `pixel_values`");
    args[6] = golden("image_encoder.safetensors");
    args[4] = "text_encoder".into();
    run(args, "has no tensor `input_ids`");
    let mut bad_model = forward("vae_decode", &golden("vae_decode.safetensors"));
    bad_model[2] = Path::new(common::FIXTURES).display().to_string();
    run(bad_model, "has no vae/ folder");
}

/// Mistakes on the command line (an unknown component, a missing argument) are one line too, with
/// the valid values listed; they exit 2, as usage errors do.
#[test]
fn usage_errors_are_one_line() {
    let m = model();
    for (args, expect) in [
        (
            vec!["forward", "--model", &m, "--component", "nope", "--inputs", "x", "--output", "y"],
            "invalid value 'nope' for '--component <COMPONENT>' [possible values: text_encoder, image_encoder, vae_encode, vae_decode, unet]",
        ),
        (
            vec!["forward", "--model", &m, "--component", "unet"],
            "the following required arguments were not provided: --inputs <INPUTS> --output <OUTPUT>",
        ),
        (vec!["generate", "--frames", "many"], "invalid value 'many' for '--frames <FRAMES>'"),
    ] {
        let out = i2vgen(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(expect), "{args:?}: expected {expect:?} in {stderr}");
    }
    let help = i2vgen(&["forward", "--help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--component"));
}

/// A model folder whose VAE has a tensor missing, one extra or one of the wrong shape is refused
/// with the tensor's name.
#[test]
fn a_damaged_model_folder_names_the_tensor() {
    use crate::weights::{serialize, vae_tensors};
    let source = Path::new(common::FIXTURES).join("tiny-i2vgen/vae");
    for (damage, key, expect) in [
        ("missing", "decoder.conv_out.weight", "has no tensor"),
        ("extra", "decoder.extra.weight", "does not use"),
        ("shape", "decoder.conv_in.bias", "has shape"),
    ] {
        let mut tensors = vae_tensors();
        match damage {
            "missing" => drop(tensors.remove(key)),
            "extra" => drop(tensors.insert(key.into(), (safetensors::Dtype::F32, vec![2], vec![0; 8]))),
            _ => {
                let entry = tensors.get_mut(key).unwrap();
                entry.1 = vec![entry.1[0] / 2, 2];
            }
        }
        let dir = scratch(&format!("damaged-{damage}"));
        let vae = dir.join("vae");
        std::fs::create_dir_all(&vae).unwrap();
        std::fs::copy(source.join("config.json"), vae.join("config.json")).unwrap();
        std::fs::write(vae.join("diffusion_pytorch_model.safetensors"), serialize(&tensors)).unwrap();
        let out = dir.join("out.safetensors").display().to_string();
        let args = ["forward", "--model", &dir.display().to_string(), "--component", "vae_decode", "--backend", "cpu"];
        let inputs = golden("vae_decode.safetensors");
        let out = i2vgen(&[&args[..], &["--inputs", &inputs, "--output", &out]].concat());
        common::assert_clear_error(damage, &out, key);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expect),
            "{damage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn wrong_shapes_are_refused_before_running() {
    // vae_encode's `sample` is [2, 3, 24, 40]; hand it to vae_decode under the right name.
    let dir = scratch("shapes");
    let bytes = std::fs::read(golden("vae_encode.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let sample = file.tensor("sample").unwrap();
    let inputs = dir.join("in.safetensors");
    safetensors::serialize_to_file(vec![("latents", sample)], None, &inputs).unwrap();
    let out = dir.join("out.safetensors").display().to_string();
    assert_clear_error(
        &[
            "forward",
            "--model",
            &model(),
            "--component",
            "vae_decode",
            "--inputs",
            &inputs.display().to_string(),
            "--output",
            &out,
            "--backend",
            "cpu",
        ],
        "`latents` has shape [2, 3, 24, 40]: expected [B, 4, h, w]",
    );
}

/// `info` reaches the CPU and the wgpu adapter (llvmpipe here) and their device checks agree.
#[test]
fn info_lists_cpu_and_wgpu_with_matching_checks() {
    let out = i2vgen(&["info", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let [cpu, gpu] = &reports[..] else { panic!("expected two backends: {reports:?}") };
    assert_eq!((cpu["backend"].as_str(), gpu["backend"].as_str()), (Some("cpu"), Some("wgpu")));
    assert!(gpu["error"].is_null(), "{gpu}");
    assert!(
        !gpu["adapter"].as_str().unwrap().is_empty()
            && gpu["detail"].as_str().unwrap().contains("maxStorageBufferBindingSize"),
        "{gpu}"
    );
    let (a, b) = (cpu["checksum"].as_f64().unwrap(), gpu["checksum"].as_f64().unwrap());
    assert!(a > 0.0 && ((a - b) / a).abs() < 1e-5, "device checks differ: cpu {a}, wgpu {b}");
    let text = String::from_utf8_lossy(&i2vgen(&["info"]).stdout).to_string();
    assert!(
        text.starts_with("cpu   burn NdArray") && text.contains("wgpu  ") && text.contains("device check:"),
        "{text}"
    );
}

#[test]
fn tokenize_prints_the_77_ids() {
    let out = i2vgen(&["tokenize", "--model", &model(), "--prompt", "a photo of a cat"]);
    assert!(out.status.success());
    let ids: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(&ids[..8], &[49406, 320, 1125, 539, 320, 2368, 49407, 0]);
}

#[test]
fn a_sharded_component_loads_like_a_single_file() {
    // Copy the fixture model with the VAE split into two shards and an index.
    let dir = scratch("sharded");
    let vae = dir.join("vae");
    std::fs::create_dir_all(&vae).unwrap();
    let source = Path::new(common::FIXTURES).join("tiny-i2vgen/vae");
    std::fs::copy(source.join("config.json"), vae.join("config.json")).unwrap();
    let bytes = std::fs::read(source.join("diffusion_pytorch_model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut weight_map = serde_json::Map::new();
    for (name, view) in file.tensors() {
        let shard = if name.starts_with("decoder.") {
            "model-00002-of-00002.safetensors"
        } else {
            "model-00001-of-00002.safetensors"
        };
        weight_map.insert(name.clone(), shard.into());
        if shard.contains("00001") { first.push((name, view)) } else { second.push((name, view)) }
    }
    safetensors::serialize_to_file(first, None, &vae.join("model-00001-of-00002.safetensors")).unwrap();
    safetensors::serialize_to_file(second, None, &vae.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(vae.join("diffusion_pytorch_model.safetensors.index.json"), index.to_string()).unwrap();

    let out = dir.join("out.safetensors");
    let status = Command::new(env!("CARGO_BIN_EXE_i2vgen"))
        .args(["forward", "--model", &dir.display().to_string(), "--component", "vae_decode", "--backend", "cpu"])
        .args(["--inputs", &golden("vae_decode.safetensors"), "--output", &out.display().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let got = common::read_f32(&out);
    let reference = common::read_f32(Path::new(&golden("vae_decode.safetensors")));
    common::assert_close("sharded vae_decode", &got["sample"].1, &reference["sample"].1, 1e-4);
}

/// `bench` builds a UNet of either class from a config with random weights and prints its numbers.
#[test]
fn bench_prints_time_flops_and_rate() {
    for model in ["tiny-i2vgen", "tiny-vid2vid"] {
        let config = format!("{}/{model}/unet/config.json", common::FIXTURES);
        let out = i2vgen(&[
            "bench",
            "--unet-config",
            &config,
            "--frames",
            "2",
            "--height",
            "48",
            "--width",
            "80",
            "--steps",
            "1",
            "--backend",
            "cpu",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
        for expect in ["analytic cost:", "GFLOP per step", "step 1/1:", "ms/step", "GFLOP/s"] {
            assert!(stdout.contains(expect), "{model}: expected {expect:?} in {stdout}");
        }
    }
    assert_clear_error(&["bench", "--height", "30", "--backend", "cpu"], "multiples of 8");
}

/// `i2vgen compare A B --json`: the one JSON object on the last line of stdout.
fn compare_json(a: &str, b: &str) -> serde_json::Value {
    let out = i2vgen(&["compare", a, b, "--json"]);
    assert!(out.status.success(), "compare {a} {b}: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// An H.264 MP4 of 8-bit RGB frames, written as `generate --output x.mp4` does (OpenH264, muxide).
fn write_mp4(path: &Path, frames: &[Vec<u8>], width: usize, height: usize) {
    use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, FrameType};
    use openh264::formats::{RgbSliceU8, YUVBuffer};
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(2_000_000))
        .max_frame_rate(FrameRate::from_hz(8.0))
        .skip_frames(false);
    let mut encoder = Encoder::with_api_config(openh264::OpenH264API::from_source(), config).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut muxer = muxide::api::MuxerBuilder::new(file)
        .video(muxide::api::VideoCodec::H264, width as u32, height as u32, 8.0)
        .build()
        .unwrap();
    for (i, rgb) in frames.iter().enumerate() {
        let encoded = encoder.encode(&YUVBuffer::from_rgb8_source(RgbSliceU8::new(rgb, (width, height)))).unwrap();
        let keyframe = matches!(encoded.frame_type(), FrameType::IDR | FrameType::I);
        muxer.write_video(i as f64 / 8.0, &encoded.to_vec(), keyframe).unwrap();
    }
    muxer.finish().unwrap();
}

/// `compare` reads safetensors, GIF, a folder of PNGs and H.264 MP4: the same frames in any two
/// give SSIM 1 and a null PSNR (infinite: JSON has no inf); a constant offset d gives the analytic
/// −20·log10(d) dB; the temporal difference is |motion A − motion B| averaged over frame pairs;
/// and videos that cannot be compared are one clear sentence.
#[test]
fn compare_reports_psnr_ssim_and_temporal_difference() {
    let dir = scratch("compare");
    let path = |name: &str| dir.join(name).display().to_string();
    let (height, width) = (12, 16);
    // 8-bit values (exact in GIF and PNG), at most 192 colours a frame (one GIF palette), moving
    // from frame to frame, all ≤ 150 so an offset of 51 stays in range.
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|k| {
            (0..height * width)
                .flat_map(|i| {
                    let (y, x) = (i / width, i % width);
                    [(x * 8 + k * 4) as u8, (y * 10 + k * 3) as u8, (40 + (x + y + k) % 5 * 20) as u8]
                })
                .collect()
        })
        .collect();
    let to_f32 = |rgb: &[Vec<u8>]| -> Vec<f32> { rgb.concat().iter().map(|&v| f32::from(v) / 255.0).collect() };
    let safetensors = |name: &str, values: &[f32], (w, h): (usize, usize)| -> String {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = vec![values.len() / (w * h * 3), h, w, 3];
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes).unwrap();
        safetensors::serialize_to_file(vec![("frames", view)], None, Path::new(&path(name))).unwrap();
        path(name)
    };
    let reference = safetensors("reference.safetensors", &to_f32(&frames), (width, height));
    let shifted: Vec<f32> = to_f32(&frames).iter().map(|v| v + 0.1).collect();
    let offset = safetensors("offset.safetensors", &shifted, (width, height));
    let gif = path("video.gif");
    std::fs::write(&gif, i2vgen::media::video::gif(&frames, width, height, 8)).unwrap();
    // Named 9, 10, 11: read in number order, not name order.
    let pngs = path("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    for (k, rgb) in frames.iter().enumerate() {
        let brighter: Vec<u8> = rgb.iter().map(|v| v + 51).collect();
        let file = Path::new(&pngs).join(format!("frame_{}.png", k + 9));
        image::save_buffer(file, &brighter, width as u32, height as u32, image::ExtendedColorType::Rgb8).unwrap();
    }

    for (a, b) in [(&reference, &reference), (&reference, &gif), (&gif, &reference)] {
        let same = compare_json(a, b);
        assert_eq!(same["frames"], 3, "{same}");
        assert!(same["psnr"].as_array().unwrap().iter().all(serde_json::Value::is_null), "{same}");
        assert!(same["mean_psnr"].is_null(), "{same}");
        assert!((same["mean_ssim"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{same}");
        assert!(same["ssim"].as_array().unwrap().iter().all(|s| (s.as_f64().unwrap() - 1.0).abs() < 1e-9));
        assert_eq!(same["temporal_difference"].as_f64(), Some(0.0), "{same}");
    }
    // +0.1 → 20 dB; +51/255 = +0.2 → 13.979 dB. The motion is the same: no temporal difference.
    for (a, b, db) in [(&reference, &offset, 20.0), (&gif, &pngs, -20.0 * 0.2f64.log10())] {
        let report = compare_json(a, b);
        for p in report["psnr"].as_array().unwrap().iter().chain([&report["mean_psnr"]]) {
            assert!((p.as_f64().unwrap() - db).abs() < 1e-4, "{a} vs {b}: expected {db} dB: {report}");
        }
        assert!(report["mean_ssim"].as_f64().unwrap() < 1.0, "{report}");
        assert!(report["temporal_difference"].as_f64().unwrap() < 1e-6, "{report}");
    }
    // A still video (frame 0 three times) against the moving one: the score is the reference's
    // own motion, mean |f[k+1] − f[k]| averaged over the two pairs.
    let still = safetensors(
        "still.safetensors",
        &to_f32(&[frames[0].clone(), frames[0].clone(), frames[0].clone()]),
        (width, height),
    );
    let motion = |k: usize| -> f64 {
        frames[k].iter().zip(&frames[k + 1]).map(|(p, q)| f64::from(p.abs_diff(*q)) / 255.0).sum::<f64>()
            / frames[k].len() as f64
    };
    let report = compare_json(&reference, &still);
    let expected = (motion(0) + motion(1)) / 2.0;
    assert!((report["temporal_difference"].as_f64().unwrap() - expected).abs() < 1e-6, "{expected}: {report}");
    assert!((report["ssim"][0].as_f64().unwrap() - 1.0).abs() < 1e-9 && report["psnr"][0].is_null(), "{report}");

    // H.264 MP4 of a smooth 64×48 video against its safetensors frames: lossy, but close.
    let (w, h) = (64, 48);
    let smooth: Vec<Vec<u8>> = (0..4)
        .map(|k| {
            (0..w * h)
                .flat_map(|i| {
                    let (y, x) = (i / w, i % w);
                    [(x * 3 + k * 6) as u8, (y * 4 + 20) as u8, (200 - x - y) as u8]
                })
                .collect()
        })
        .collect();
    let mp4 = path("smooth.mp4");
    write_mp4(Path::new(&mp4), &smooth, w, h);
    let smooth_reference = safetensors("smooth.safetensors", &to_f32(&smooth), (w, h));
    let report = compare_json(&smooth_reference, &mp4);
    assert_eq!(report["frames"], 4, "{report}");
    assert!(report["mean_psnr"].as_f64().unwrap() > 30.0, "{report}");
    assert!(report["mean_ssim"].as_f64().unwrap() > 0.9, "{report}");

    // The table: one line per frame, the means, the temporal difference; inf for identical frames.
    let out = i2vgen(&["compare", &reference, &gif]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for expect in
        ["PSNR (dB)", "SSIM", "    2        inf  1.00000", " mean        inf  1.00000", "temporal difference: 0.000000"]
    {
        assert!(table.contains(expect), "expected {expect:?} in\n{table}");
    }

    let two_frames = safetensors("two.safetensors", &to_f32(&frames[..2]), (width, height));
    let narrow = safetensors("narrow.safetensors", &vec![0.5; 3 * height * 8 * 3], (8, height));
    let avi = path("video.avi");
    std::fs::write(&avi, b"not a video").unwrap();
    let webm = path("video.webm");
    std::fs::write(&webm, b"not a video").unwrap();
    let has_ffmpeg = Command::new("ffmpeg").arg("-version").output().is_ok();
    let webm_error = if has_ffmpeg { "cannot decode" } else { "install ffmpeg" };
    let missing = path("missing.gif");
    for (a, b, expect) in [
        (&reference, &two_frames, "the videos differ in length: the first has 3 frames, the second 2"),
        (&reference, &narrow, "the videos differ in frame size: the first is 16×12, the second 8×12"),
        (&reference, &avi, "compare reads .safetensors, .gif, .mp4, .webm or a folder of numbered PNGs"),
        (&missing, &reference, "missing.gif does not exist"),
        (&reference, &webm, webm_error),
        // One PNG is a picture, not a video.
        (&path("pngs/frame_9.png"), &reference, "compare reads"),
    ] {
        assert_clear_error(&["compare", a, b], expect);
    }
    let not_frames = path("not-frames.safetensors");
    std::fs::copy(golden("vae_decode.safetensors"), &not_frames).unwrap();
    assert_clear_error(&["compare", &not_frames, &reference], "has no tensor `frames`");
}

fn plan_json(args: &[&str]) -> serde_json::Value {
    let out = i2vgen(&[&["plan", "--json"], args].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap()
}

fn stage<'a>(plan: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    plan["stages"].as_array().unwrap().iter().find(|s| s["stage"] == name).unwrap()
}

#[test]
fn plan_sizes_the_real_model_without_weights() {
    let real = ["--config", "real", "--frames", "16", "--height", "256", "--width", "448"];
    let f16 = plan_json(&[&real[..], &["--dtype", "f16"]].concat());
    let f32 = plan_json(&[&real[..], &["--dtype", "f32"]].concat());
    let packed = plan_json(&[&real[..], &["--dtype", "packed-f16"]].concat());
    let bytes = |v: &serde_json::Value| v.as_u64().unwrap();
    assert!(bytes(&f16["peak_bytes"]) <= 4_000_000_000, "{f16}");
    assert!(bytes(&f32["peak_bytes"]) <= 7_500_000_000, "{f32}");
    assert!(bytes(&packed["peak_bytes"]) < bytes(&f32["peak_bytes"]));
    assert_eq!(f32["keep_encoders"], false);
    // The networks are built from the configs: DESIGN.md's parameter counts.
    let millions = |k: &str| (bytes(&f32["parameters"][k]) as f64 / 1e5).round() / 10.0;
    assert_eq!(millions("unet"), 1420.5);
    assert_eq!(millions("text_encoder"), 353.0);
    assert_eq!(millions("image_encoder"), 632.1);

    // The refiner at 720p in f32: no tensor above 256 MiB (the UNet's levels in pieces of frames,
    // the VAE in row bands both ways).
    let refine = plan_json(&["--config", "real", "--stage", "refine", "--height", "720", "--width", "1280"]);
    assert_eq!(refine["precision"], "f32");
    assert!(bytes(&refine["max_tensor_bytes"]) <= 256 << 20, "{refine}");
    for network in ["vae_encoder", "unet", "vae_decoder"] {
        assert!(bytes(&stage(&refine, network)["max_tensor_bytes"]) <= 256 << 20, "{network}: {refine}");
    }
    assert!(bytes(&refine["vae_decode_bands"]) > 1 && bytes(&refine["vae_encode_bands"]) > 1);

    // Over a budget: refused with a sentence naming it and a size that fits.
    let args = ["plan", "--config", "real", "--height", "704", "--width", "1280", "--budget", "8000000000"];
    assert_clear_error(&args, "but the memory budget is 8.0 GB; 640×352 fits");
}

/// `bench --pipeline` on wgpu at two small sizes, f32 and packed-f16: each stage's planned peak is
/// within 15% of the most the stage had in use at any kernel launch (`peak_bytes_in_use`), and
/// the pool's high-water mark (its reserved pages) holds at least that.
#[test]
fn bench_pipeline_measures_each_stage_next_to_the_plan() {
    let sizes = [("2", "32", "32"), ("4", "64", "64")];
    let mut weights_in_use = Vec::new();
    for ((frames, height, width), dtype) in sizes.into_iter().flat_map(|s| [(s, "f32"), (s, "packed-f16")]) {
        let args = ["bench", "--pipeline", "--model", &model(), "--backend", "wgpu", "--json", "--dtype", dtype];
        let out = i2vgen(&[&args[..], &["--frames", frames, "--height", height, "--width", width]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
        let stages = json["stages"].as_array().unwrap();
        let names: Vec<&str> = stages.iter().map(|s| s["stage"].as_str().unwrap()).collect();
        assert_eq!(names, ["weights", "encoders", "unet", "vae_decoder"]);
        for s in stages {
            let bytes = |k: &str| s[k].as_u64().unwrap() as f64;
            let (planned, peak, in_use, reserved) = (
                bytes("planned_peak_bytes"),
                bytes("peak_bytes_in_use"),
                bytes("bytes_in_use"),
                bytes("bytes_reserved"),
            );
            println!("{dtype} {frames}×{height}×{width} {}: planned / measured peak {:.3}", s["stage"], planned / peak);
            assert!((planned / peak - 1.0).abs() <= 0.15, "{s}");
            assert!(in_use <= peak && peak <= reserved, "{s}");
        }
        weights_in_use.push(stages[0]["bytes_in_use"].as_u64().unwrap());
        // The UNet step's activations are a measurable part of its peak at the larger size.
        let unet = &stages[2];
        if frames == "4" {
            let (peak, in_use) = (unet["peak_bytes_in_use"].as_u64().unwrap(), unet["bytes_in_use"].as_u64().unwrap());
            assert!(peak as f64 > 1.2 * in_use as f64, "{unet}");
        }
    }
    // Packed-f16 weights: the tiny model's small layers pad their rows to 64 columns, so less
    // than half is saved here (the real model's layers are all wider: 2.84 GB instead of 5.68).
    for pair in weights_in_use.chunks(2) {
        assert!((pair[1] as f64) < 0.8 * pair[0] as f64, "f32 and packed-f16 weights in use: {pair:?}");
    }
}

/// `generate` with the fixture model, the golden image and a small request writing `output`;
/// `changes` (flag, value pairs) replace those flags or add others.
fn generate_args(output: &str, changes: &[&str]) -> Vec<String> {
    let (m, image) = (model(), golden("image.png"));
    let mut args: Vec<[&str; 2]> = vec![
        ["--model", &m],
        ["--image", &image],
        ["--prompt", "a cat"],
        ["--frames", "3"],
        ["--height", "24"],
        ["--width", "40"],
        ["--steps", "2"],
        ["--backend", "cpu"],
        ["--output", output],
    ];
    for change in changes.chunks(2) {
        match args.iter_mut().find(|[flag, _]| *flag == change[0]) {
            Some(arg) => arg[1] = change[1],
            None => args.push([change[0], change[1]]),
        }
    }
    std::iter::once("generate").chain(args.concat()).map(String::from).collect()
}

/// Every argument, the output path, the image and the refiner folder are refused before the model
/// loads: the one error line, and no "encoding the prompt" line (the first thing after loading).
#[test]
fn bad_arguments_are_refused_before_the_model_loads() {
    let dir = scratch("up-front");
    let path = |name: &str| dir.join(name).display().to_string();
    let gif = path("out.gif");
    let mut one_pixel = Vec::new();
    image::RgbImage::new(1, 1).write_to(&mut std::io::Cursor::new(&mut one_pixel), image::ImageFormat::Png).unwrap();
    std::fs::write(path("one.png"), one_pixel).unwrap();
    std::fs::create_dir_all(path("folder.gif")).unwrap();
    let mut strip = Vec::new();
    image::GrayImage::new(16, 100_000)
        .write_to(&mut std::io::Cursor::new(&mut strip), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(path("strip.png"), strip).unwrap();
    let jpeg = std::fs::read(golden("image.png")).map(|png| image::load_from_memory(&png).unwrap()).unwrap();
    let mut jpeg_bytes = Vec::new();
    jpeg.to_rgb8().write_to(&mut std::io::Cursor::new(&mut jpeg_bytes), image::ImageFormat::Jpeg).unwrap();
    std::fs::write(path("half.jpg"), &jpeg_bytes[..jpeg_bytes.len() / 2]).unwrap();
    let vid2vid = Path::new(common::FIXTURES).join("tiny-vid2vid").display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["--output", "/nonexistent-dir/x.gif"], "the folder /nonexistent-dir does not exist"),
        (&["--output", &path("folder.gif")], "is a folder; --output must be a file name"),
        (&["--output", &path("x.avi")], "must end in .webm, .mp4, .gif or .safetensors"),
        (&["--fps", "1000000", "--output", &path("x.mp4")], "fps must be between 1 and 60, got 1000000"),
        (&["--frames", "1000"], "frames must be at most 64, got 1000"),
        (&["--width", "12800"], "the size 12800×24 is too large: width and height must be at most 2048"),
        (&["--steps", "5000"], "steps must be between 1 and 1000, got 5000"),
        (&["--clips", "0"], "clips must be between 1 and 8, got 0"),
        (&["--clips", "1000000"], "clips must be between 1 and 8, got 1000000 (a 2000001-frame video)"),
        (&["--image", &path("one.png")], "the image is 1×1 pixels; use one at least 16 pixels"),
        (&["--image", &path("strip.png")], "16×100000 pixels, too long and thin"),
        (&["--image", &path("half.jpg")], "cut short (truncated)"),
        (&["--refine-model", "/nonexistent-refiner"], "/nonexistent-refiner is not a folder"),
        // The base model given as the refiner: its UNet is of the other class.
        (&["--refine-model", &model()], "UNet3DConditionModel"),
        (&["--refine-model", &vid2vid, "--refine-width", "30"], "multiples of 8"),
    ];
    for (extra, expect) in cases {
        let args = generate_args(&gif, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = i2vgen(&args);
        common::assert_clear_error(&format!("{extra:?}"), &out, expect);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("encoding the prompt"), "{extra:?}: checked only after loading: {stderr}");
    }
    assert!(!Path::new(&gif).exists());
    // `refine` checks its output, rate and model folder before reading the video.
    let refine = ["refine", "--model", &vid2vid, "--video", "/nonexistent.gif", "--prompt", "a cat"];
    assert_clear_error(&[&refine[..], &["--output", "/nonexistent-dir/x.gif"]].concat(), "does not exist");
    assert_clear_error(&[&refine[..], &["--output", &gif, "--fps", "0"]].concat(), "fps must be between 1 and 60");
    let (mut wrong_model, base) = (refine, model());
    wrong_model[2] = &base;
    assert_clear_error(&[&wrong_model[..], &["--output", &gif]].concat(), "UNet3DConditionModel");
}

/// A refiner whose configs are sound but whose UNet weights are missing passes the up-front
/// checks and fails only when it loads, after the base video is made: the base video is written
/// to the output and the error names the cause.
#[test]
fn a_failed_refinement_keeps_the_base_video() {
    let dir = scratch("refine-fails");
    let refiner = dir.join("refiner");
    let source = Path::new(common::FIXTURES).join("tiny-vid2vid");
    for entry in std::fs::read_dir(&source).unwrap() {
        let from = entry.unwrap().path();
        let to = refiner.join(from.file_name().unwrap());
        if from.is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            for file in std::fs::read_dir(&from).unwrap() {
                let file = file.unwrap().path();
                if file.file_name().unwrap() != "diffusion_pytorch_model.safetensors" || !to.ends_with("unet") {
                    std::fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
                }
            }
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let output = dir.join("video.safetensors");
    let refiner = refiner.display().to_string();
    let args = generate_args(&output.display().to_string(), &["--refine-model", &refiner, "--refine-steps", "2"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = i2vgen(&args);
    common::assert_clear_error("missing refiner weights", &out, "the refinement failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unet: no diffusion_pytorch_model.safetensors")
            && stderr.contains("the base video (3 frames, 40×24) was written to"),
        "{stderr}"
    );
    let (shape, values) = common::read_f32(&output).remove("frames").expect("frames");
    assert_eq!(shape, [3, 24, 40, 3]);
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
}

/// `kbench --json`: the two probes measured (positive), each selected case with its timings,
/// traffic, FLOPs and class; memory-bound cases ranked, compute-bound ones on a CPU adapter
/// (llvmpipe here) marked not rankable. Small shapes, one timed run each.
#[test]
fn kbench_ranks_memory_bound_cases_and_probes_the_adapter() {
    let out = i2vgen(&[
        "kbench",
        "--backend",
        "wgpu",
        "--small",
        "--repeats",
        "1",
        "--only",
        "layer_norm,attention spatial",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().expect("kbench printed nothing");
    let report: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    let probes = &report["probes"];
    for key in ["fma_gflop_per_s", "copy_gb_per_s", "ridge_flop_per_byte"] {
        let value = probes[key].as_f64().unwrap_or(0.0);
        assert!(value > 0.0 && value.is_finite(), "probe {key}: {value} in {probes}");
    }
    let cpu = report["cpu_adapter"].as_bool().expect("cpu_adapter");
    let cases = report["cases"].as_array().expect("cases");
    let names: Vec<&str> = cases.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "--only selects two cases: {names:?}");
    assert!(names[0].starts_with("layer_norm") && names[1].starts_with("attention spatial"), "{names:?}");
    let ridge = probes["ridge_flop_per_byte"].as_f64().unwrap_or(0.0);
    for case in cases {
        for key in ["bytes", "flops", "intensity", "speedup"] {
            assert!(case[key].as_f64().unwrap_or(0.0) > 0.0, "{key} in {case}");
        }
        for side in ["kernel", "twin"] {
            for key in ["ms", "gb_per_s", "gflop_per_s", "bandwidth_fraction", "peak_fraction"] {
                assert!(case[side][key].as_f64().unwrap_or(0.0) > 0.0, "{side}.{key} in {case}");
            }
        }
        let compute = case["intensity"].as_f64().unwrap_or(0.0) >= ridge;
        assert_eq!(case["bound"], if compute { "compute" } else { "memory" }, "{case}");
        if cpu && compute {
            assert_eq!(case["rankable"], false, "{case}");
            assert!(case["rank"].is_null(), "{case}");
        } else {
            assert_eq!(case["rankable"], true, "{case}");
            let rank = case["rank"].as_array().expect("a rank");
            let kernel_first = case["kernel"]["ms"].as_f64() <= case["twin"]["ms"].as_f64();
            assert_eq!(rank[0], if kernel_first { "kernel" } else { "twin" }, "{case}");
        }
    }
    // LayerNorm (under 1 FLOP per byte) is memory-bound and spatial attention (over 100) is
    // compute-bound on any adapter whose FMA peak in FLOP/s is 1–100× its copy bandwidth in B/s.
    assert_eq!(cases[0]["bound"], "memory", "{}", cases[0]);
    assert_eq!(cases[1]["bound"], "compute", "{}", cases[1]);
    if cpu {
        assert!(stdout.contains("not rankable on a CPU adapter"), "{stdout}");
    }
    let cpu_backend = i2vgen(&["kbench", "--backend", "cpu"]);
    assert!(cpu_backend.status.success());
    assert!(String::from_utf8_lossy(&cpu_backend.stdout).contains("no GPU kernels on the CPU backend"));
}
