//! The dispatch counter of `i2vgen bench`: the kernels `diagnostics::kernels` counts from the
//! shapes against those cubecl reports launching (`diagnostics::launches`) for one guided step of
//! both tiny UNets on wgpu, launch by launch. The sizes reach the layout cases the count has
//! rules for: a height of 1 (burn's reshape copies), 1×1 levels, one frame, odd sizes whose
//! narrows are unaligned. Only dispatches are compared: cubecl reports no bytes per launch.

use burn::tensor::{Device, Distribution, Tensor};
use i2vgen::diagnostics::kernels::{self, UNet};
use i2vgen::diagnostics::launches::LaunchCounter;
use i2vgen::loading::config::{ConfigFile, parse};
use i2vgen::loading::weights::Weights;
use i2vgen::models::unet_3d_backbone::UNet3DConfig;
use i2vgen::models::unet_3d_condition::{UNet3DConditionModel, UNet3DConditionModelConfig};
use i2vgen::models::unet_i2vgen_xl::{I2VGenXLUNet, I2VGenXLUNetConfig, I2VGenXLUNetInput};

use crate::common;

fn config<C: ConfigFile>(model: &str) -> C {
    let path = format!("{}/{model}/unet/config.json", common::FIXTURES);
    parse::<C>(&std::fs::read_to_string(path).unwrap()).unwrap().config
}

/// The kernel families one guided step (batch 2) of `unet` launches on `frames` latents of
/// `h`×`w`, inputs drawn before counting starts.
fn measure(device: &Device, unet: &Net, c: &UNet3DConfig, frames: usize, h: usize, w: usize) -> Vec<&'static str> {
    let normal = |shape: [usize; 5]| Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let context = Tensor::random([2, 77, c.cross_attention_dim], Distribution::Normal(0.0, 1.0), device);
    let sample = normal([2, c.in_channels, frames, h, w]);
    let (out, sequence) = match unet {
        Net::Base(unet) => {
            let input = I2VGenXLUNetInput {
                sample,
                timesteps: vec![981.0; 2],
                encoder_hidden_states: context,
                fps: vec![16.0; 2],
                image_latents: normal([2, 4, frames, h, w]),
                image_embeddings: Tensor::random([2, c.cross_attention_dim], Distribution::Normal(0.0, 1.0), device),
            };
            device.sync().unwrap();
            let counter = LaunchCounter::start();
            (unet.forward(input), counter.sequence())
        }
        Net::Refiner(unet) => {
            device.sync().unwrap();
            let counter = LaunchCounter::start();
            (unet.forward_cached(sample, &[981.0; 2], context, None).0, counter.sequence())
        }
    };
    let _ = out.into_data();
    sequence.iter().map(|kernel| kernels::family(kernel)).collect()
}

/// cubecl's memory alignment on `device` in bytes, found as burn applies it: the smallest offset
/// at which a narrow of an f32 tensor is a view rather than a copy.
fn memory_alignment(device: &Device) -> u64 {
    let x = Tensor::<1>::zeros([4096], device);
    let view_at = (1..=1024)
        .find(|&start| {
            let counter = LaunchCounter::start();
            let _view = x.clone().narrow(0, start, 4096 - start);
            counter.sequence().is_empty()
        })
        .expect("an alignment of at most 4 KiB");
    4 * view_at as u64
}

enum Net {
    Base(Box<I2VGenXLUNet>),
    Refiner(Box<UNet3DConditionModel>),
}

#[test]
fn counted_dispatches_equal_measured_ones_launch_by_launch() {
    let device = common::wgpu();
    let alignment = memory_alignment(&device);
    let base = config::<I2VGenXLUNetConfig>("tiny-i2vgen");
    let refiner = config::<UNet3DConditionModelConfig>("tiny-vid2vid");
    let nets = [
        (
            UNet::I2VGenXL,
            Net::Base(Box::new(I2VGenXLUNet::load(&mut Weights::random(&device), &base).unwrap())),
            &base.unet,
        ),
        (
            UNet::UNet3DCondition,
            Net::Refiner(Box::new(UNet3DConditionModel::load(&mut Weights::random(&device), &refiner).unwrap())),
            &refiner.unet,
        ),
    ];
    for (kind, net, c) in &nets {
        for (frames, h, w) in [(2, 6, 10), (1, 1, 3), (3, 4, 4), (4, 2, 3)] {
            let measured = measure(&device, net, c, frames, h, w);
            let counted = kernels::guided_step(*kind, c, frames, h, w, 4, alignment);
            let first_difference = measured.iter().zip(&counted.sequence).position(|(m, c)| m != c);
            let at = first_difference.unwrap_or(measured.len().min(counted.sequence.len()));
            let window = |s: &[&str]| s[at.saturating_sub(8)..(at + 4).min(s.len())].join(" ");
            assert!(
                measured == counted.sequence,
                "{kind:?}, {frames} frames of {h}×{w}: {} launches measured, {} counted; first difference at \
                 launch {at}:\n measured …{}\n counted  …{}",
                measured.len(),
                counted.sequence.len(),
                window(&measured),
                window(&counted.sequence),
            );
            assert_eq!(counted.dispatches, measured.len() as u64);
        }
    }
}

/// `bench --count-only --json` answers for the real UNet at 16×256×448 without a device: the
/// library's counts for WebGPU's alignment, beside the analytic FLOPs, and no time.
#[test]
fn count_only_prints_the_counters_of_a_real_size_step() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_i2vgen"))
        .args(["bench", "--unet-config", "real", "--frames", "16", "--height", "256", "--width", "448"])
        .args(["--count-only", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/i2vgen-xl/unet/config.json");
    let c = parse::<I2VGenXLUNetConfig>(&std::fs::read_to_string(path).unwrap()).unwrap().config.unet;
    let counted = kernels::guided_step(UNet::I2VGenXL, &c, 16, 32, 56, 4, 256);
    assert_eq!(report["dispatches_per_step"], counted.dispatches);
    assert_eq!(report["issued_flops_per_step"], counted.issued_flops);
    assert_eq!(report["non_gemm_bytes_per_step"], counted.non_gemm_bytes);
    assert_eq!(report["flops_per_step"], i2vgen::diagnostics::flops::i2vgen_xl_unet(&c, 2, 16, 32, 56));
    assert!(report["ms_per_step"].is_null(), "{report}");
    println!(
        "16×256×448: {} dispatches, issued/analytic FLOPs {:.3}, {:.1} GB non-GEMM",
        counted.dispatches,
        report["issued_over_analytic_flops"].as_f64().unwrap_or(f64::NAN),
        counted.non_gemm_bytes as f64 / 1e9
    );
}

/// In f16 every kernel runs too (f16 storage, f32 arithmetic): `bench --dtype f16` on llvmpipe
/// (which has `shader-f16`) measures exactly the launches the count gives, as many as in f32.
#[test]
fn f16_launches_the_same_kernels_as_counted() {
    let config = format!("{}/tiny-i2vgen/unet/config.json", common::FIXTURES);
    let mut dispatches = Vec::new();
    for dtype in ["f32", "f16"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_i2vgen"))
            .args(["bench", "--unet-config", &config, "--frames", "2", "--height", "48", "--width", "80"])
            .args(["--steps", "1", "--backend", "wgpu", "--dtype", dtype, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(report["dispatches_per_step"], report["counted_dispatches_per_step"], "{dtype}: {report}");
        dispatches.push(report["dispatches_per_step"].as_u64().unwrap());
    }
    assert_eq!(dispatches[0], dispatches[1], "f32 and f16 launch counts");
}
