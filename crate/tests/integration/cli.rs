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
