//! The refinement stage against diffusers' `VideoToVideoSDPipeline` on the tiny refiner with
//! explicit noise (`golden/refine.safetensors`: the base pipeline's golden frames in, strength 0.6,
//! 5 steps so only the last 3 run, guidance 15): the frames of `i2vgen refine` within 1e-3 on
//! both backends (f32; the UNet's ~1e-6 differences grow through three guided steps and the VAE).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common;

fn golden(name: &str) -> PathBuf {
    Path::new(common::FIXTURES).join("golden").join(name)
}

/// `i2vgen refine` on the fixture refiner; the caller adds the rest.
fn refine() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_i2vgen"));
    command.arg("refine").arg("--model").arg(Path::new(common::FIXTURES).join("tiny-vid2vid"));
    command
}

#[test]
fn refine_matches_diffusers() {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("refine.json")).unwrap()).unwrap();
    let reference = common::read_f32(&golden("refine.safetensors"));
    for backend in ["cpu", "wgpu"] {
        let out = std::env::temp_dir().join(format!("i2vgen-refine-{backend}-{}.safetensors", std::process::id()));
        let status = refine()
            .arg("--video")
            .arg(golden("refine.safetensors"))
            .args(["--prompt", case["prompt"].as_str().unwrap()])
            .args(["--negative-prompt", case["negative_prompt"].as_str().unwrap()])
            .args(["--strength", &case["strength"].to_string(), "--steps", &case["num_inference_steps"].to_string()])
            .args(["--guidance", &case["guidance_scale"].to_string()])
            .arg("--noise")
            .arg(golden("refine.safetensors"))
            .args(["--backend", backend, "--output"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "refine --backend {backend} failed");
        let got = common::read_f32(&out);
        std::fs::remove_file(&out).ok();
        assert_eq!(got["frames"].0, reference["frames"].0);
        common::assert_close(&format!("refined frames [{backend}]"), &got["frames"].1, &reference["frames"].1, 1e-3);
    }
}

fn run(args: &[&str]) -> Output {
    refine().args(["--prompt", "a cat", "--backend", "cpu"]).args(args).output().unwrap()
}

fn assert_clear_error(out: Output, expect: &str) {
    common::assert_clear_error("refine", &out, expect);
}

#[test]
fn bad_refine_requests_are_clear_sentences() {
    let video = golden("refine.safetensors");
    let video = video.to_str().unwrap();
    assert_clear_error(run(&["--video", video, "--strength", "0", "--output", "x.gif"]), "strength must be in (0, 1]");
    assert_clear_error(
        run(&["--video", video, "--strength", "0.1", "--steps", "5", "--output", "x.gif"]),
        "runs no denoising step",
    );
    assert_clear_error(run(&["--video", video, "--height", "30", "--output", "x.gif"]), "not a multiple of 8");
    assert_clear_error(run(&["--video", "missing.gif", "--output", "x.gif"]), "cannot read missing.gif");
    // The base model folder is not a refiner.
    let base = Path::new(common::FIXTURES).join("tiny-i2vgen");
    let out = Command::new(env!("CARGO_BIN_EXE_i2vgen"))
        .args([
            "refine",
            "--model",
            base.to_str().unwrap(),
            "--video",
            video,
            "--prompt",
            "a cat",
            "--backend",
            "cpu",
            "--output",
            "x.gif",
        ])
        .output()
        .unwrap();
    assert_clear_error(out, "refine needs a VideoToVideoSDPipeline folder");
}

/// The cascade in one command: base then refine (upscaled to 32×48), frames at the refined size.
#[test]
fn generate_runs_the_cascade() {
    let out = std::env::temp_dir().join(format!("i2vgen-cascade-{}.safetensors", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_i2vgen"))
        .arg("generate")
        .arg("--model")
        .arg(Path::new(common::FIXTURES).join("tiny-i2vgen"))
        .arg("--image")
        .arg(golden("image.png"))
        .args(["--prompt", "a cat", "--frames", "3", "--height", "24", "--width", "40", "--steps", "2"])
        .arg("--refine-model")
        .arg(Path::new(common::FIXTURES).join("tiny-vid2vid"))
        .args(["--refine-steps", "5", "--refine-height", "32", "--refine-width", "48", "--backend", "cpu", "--output"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let frames = &common::read_f32(&out)["frames"];
    std::fs::remove_file(&out).ok();
    assert_eq!(frames.0, [3, 32, 48, 3]);
    assert!(frames.1.iter().all(|v| (0.0..=1.0).contains(v)));
}
