//! Golden tests of `DDIMScheduler` against diffusers 0.42.1 (`tests/reference/make_fixtures.py`,
//! `scheduler()`): timesteps, `alphas_cumprod`, chains of `step`s and `add_noise`.
//!
//! Tolerances: timesteps equal; `alphas_cumprod`, `step` chains and `add_noise` 1e-12 (the
//! float32 schedule is emulated bit for bit, the steps run in f64 like the reference). The fixture
//! script computes f32 `sqrt` correctly rounded (see `correctly_rounded_sqrt` there): torch's MKL
//! path is off by one ulp for ~20% of inputs on some CPUs, which would make the reference depend on
//! the machine that made it.

use std::collections::BTreeMap;

use burn::tensor::{Tensor, TensorData};
use i2vgen::loading::config::parse;
use i2vgen::schedulers::Scheduler;
use i2vgen::schedulers::scheduling_ddim::{DDIMScheduler, DDIMSchedulerConfig, PredictionType, TimestepSpacing};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::common;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
const STEPS: [usize; 3] = [3, 5, 50];
const EXACT: f64 = 1e-12;

struct Golden {
    bytes: Vec<u8>,
    configs: BTreeMap<String, Value>,
}

impl Golden {
    fn load() -> Self {
        let dir = format!("{FIXTURES}/golden");
        let bytes = std::fs::read(format!("{dir}/scheduler.safetensors")).expect("read scheduler.safetensors");
        let configs = serde_json::from_str(
            &std::fs::read_to_string(format!("{dir}/scheduler_configs.json")).expect("read scheduler_configs.json"),
        )
        .expect("scheduler_configs.json is a JSON object");
        Self { bytes, configs }
    }

    fn tensor(&self, name: &str, dtype: Dtype) -> (Vec<usize>, Vec<u8>) {
        let tensors = SafeTensors::deserialize(&self.bytes).expect("scheduler.safetensors parses");
        let view = tensors.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(view.dtype(), dtype, "{name}");
        (view.shape().to_vec(), view.data().to_vec())
    }

    fn f64s(&self, name: &str) -> (Vec<usize>, Vec<f64>) {
        let (shape, data) = self.tensor(name, Dtype::F64);
        (shape, data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect())
    }

    fn i64s(&self, name: &str) -> Vec<i64> {
        let (_, data) = self.tensor(name, Dtype::I64);
        data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    fn config(&self, name: &str) -> DDIMSchedulerConfig {
        parse::<DDIMSchedulerConfig>(&self.configs[name].to_string()).expect("case config parses").config
    }

    /// Our schedule, built from the case's config.
    fn scheduler(&self, name: &str) -> DDIMScheduler {
        DDIMScheduler::new(self.config(name)).expect("scheduler builds")
    }
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// The reference's chain of `steps` steps replayed with `scheduler`; the largest error over it.
fn chain_error(golden: &Golden, name: &str, steps: usize, mut scheduler: DDIMScheduler) -> f64 {
    let key = format!("{name}.{steps}");
    scheduler.set_timesteps(steps).unwrap();
    let (_, mut sample) = golden.f64s(&format!("{key}.sample"));
    let (shape, outputs) = golden.f64s(&format!("{key}.model_outputs"));
    let (_, chain) = golden.f64s(&format!("{key}.chain"));
    assert_eq!(shape[0], steps, "{key}");
    let len = sample.len();
    let mut worst = 0.0f64;
    for (i, &t) in scheduler.timesteps().iter().enumerate() {
        let (c_sample, c_model) = scheduler.step_coefficients(t);
        let output = &outputs[i * len..(i + 1) * len];
        sample = sample.iter().zip(output).map(|(x, m)| c_sample * x + c_model * m).collect();
        worst = worst.max(max_abs_diff(&sample, &chain[i * len..(i + 1) * len]));
    }
    worst
}

/// The reference's `add_noise` replayed with `scheduler`; the largest error.
fn add_noise_error(golden: &Golden, name: &str, scheduler: &DDIMScheduler) -> f64 {
    let key = format!("{name}.add_noise");
    let (shape, original) = golden.f64s(&format!("{key}.original"));
    let (_, noise) = golden.f64s(&format!("{key}.noise"));
    let (_, noisy) = golden.f64s(&format!("{key}.noisy"));
    let timesteps = golden.i64s(&format!("{key}.timesteps"));
    // One timestep per row.
    assert_eq!(shape[0], timesteps.len(), "{key}");
    let row = original.len() / timesteps.len();
    let ours: Vec<f64> = (0..original.len())
        .map(|i| {
            let (a, b) = scheduler.add_noise_coefficients(timesteps[i / row]);
            a * original[i] + b * noise[i]
        })
        .collect();
    max_abs_diff(&ours, &noisy)
}

#[test]
fn timesteps_equal_reference() {
    let golden = Golden::load();
    for name in golden.configs.keys() {
        let mut scheduler = golden.scheduler(name);
        for steps in STEPS {
            scheduler.set_timesteps(steps).unwrap();
            assert_eq!(scheduler.timesteps(), golden.i64s(&format!("{name}.{steps}.timesteps")), "{name}.{steps}");
        }
    }
}

#[test]
fn alphas_cumprod_match_reference() {
    let golden = Golden::load();
    for name in golden.configs.keys() {
        let (_, reference) = golden.f64s(&format!("{name}.alphas_cumprod"));
        let error = max_abs_diff(golden.scheduler(name).alphas_cumprod(), &reference);
        println!("{name}: alphas_cumprod max abs error {error:e}");
        assert!(error <= EXACT, "{name}: alphas_cumprod off by {error:e}");
    }
}

#[test]
fn step_chains_match_reference() {
    let golden = Golden::load();
    for name in golden.configs.keys() {
        for steps in STEPS {
            let error = chain_error(&golden, name, steps, golden.scheduler(name));
            println!("{name}.{steps}: chain max abs error {error:e}");
            assert!(error <= EXACT, "{name}.{steps}: chain off by {error:e}");
        }
    }
}

#[test]
fn add_noise_matches_reference() {
    let golden = Golden::load();
    for name in golden.configs.keys() {
        let error = add_noise_error(&golden, name, &golden.scheduler(name));
        println!("{name}: add_noise max abs error {error:e}");
        assert!(error <= EXACT, "{name}: add_noise off by {error:e}");
    }
}

#[test]
fn i2vgen_50_steps_run_981_to_1() {
    let mut scheduler = Golden::load().scheduler("i2vgen");
    scheduler.set_timesteps(50).unwrap();
    let expected: Vec<i64> = (0..50).rev().map(|i| 20 * i + 1).collect();
    assert_eq!(scheduler.timesteps(), expected);
    assert_eq!(scheduler.timesteps()[0], 981);
}

#[test]
fn real_scheduler_config_parses() {
    let text = std::fs::read_to_string(format!("{FIXTURES}/tiny-i2vgen/scheduler/scheduler_config.json")).unwrap();
    let parsed = parse::<DDIMSchedulerConfig>(&text).unwrap();
    assert!(parsed.unknown_keys.is_empty(), "unknown keys: {:?}", parsed.unknown_keys);
    let config = parsed.config;
    assert_eq!(config.prediction_type, PredictionType::VPrediction);
    assert_eq!(config.timestep_spacing, TimestepSpacing::Leading);
    assert!(config.rescale_betas_zero_snr && config.set_alpha_to_one);
    assert_eq!(config.steps_offset, 1);
    let scheduler = DDIMScheduler::new(config).unwrap();
    // Zero terminal SNR: the last alpha product is exactly 0.
    assert_eq!(scheduler.alphas_cumprod()[999], 0.0);
}

#[test]
fn get_timesteps_keeps_the_last_strength_fraction() {
    let mut scheduler = Golden::load().scheduler("i2vgen");
    scheduler.set_timesteps(5).unwrap();
    assert_eq!(scheduler.timesteps(), [801, 601, 401, 201, 1]);
    assert_eq!(scheduler.get_timesteps(0.6), [401, 201, 1]);
    assert_eq!(scheduler.get_timesteps(1.0), [801, 601, 401, 201, 1]);
    assert_eq!(scheduler.get_timesteps(1.5), [801, 601, 401, 201, 1]);
    assert!(scheduler.get_timesteps(0.0).is_empty());
    // int(5 * 0.5) = 2
    assert_eq!(scheduler.get_timesteps(0.5), [201, 1]);
}

#[test]
fn config_checks() {
    let error = |json: &str| match parse::<DDIMSchedulerConfig>(json).and_then(|p| DDIMScheduler::new(p.config)) {
        Ok(_) => panic!("{json} was accepted"),
        Err(e) => e.to_string(),
    };
    let ok = r#"{"_class_name": "DDIMScheduler", "clip_sample": false"#;

    assert!(error(r#"{"_class_name": "PNDMScheduler", "clip_sample": false}"#).contains("_class_name"));
    // diffusers' default clip_sample is true, which is refused.
    assert!(error(r#"{"_class_name": "DDIMScheduler"}"#).contains("clip_sample"));
    assert!(error(&format!(r#"{ok}, "thresholding": true}}"#)).contains("thresholding"));
    assert!(error(&format!(r#"{ok}, "trained_betas": [0.1, 0.2]}}"#)).contains("trained_betas"));
    assert!(error(&format!(r#"{ok}, "beta_schedule": "sigmoid"}}"#)).contains("sigmoid"));
    assert!(error(&format!(r#"{ok}, "prediction_type": "flow"}}"#)).contains("flow"));

    // Unknown keys are tolerated (and reported); missing keys take diffusers' defaults.
    let parsed = parse::<DDIMSchedulerConfig>(&format!(r#"{ok}, "trained_betas": null, "novel_key": 3}}"#)).unwrap();
    assert_eq!(parsed.unknown_keys, ["novel_key"]);
    assert_eq!(parsed.config, DDIMSchedulerConfig { clip_sample: false, ..DDIMSchedulerConfig::default() });
}

#[test]
fn set_timesteps_checks_the_count() {
    let mut scheduler = Golden::load().scheduler("i2vgen");
    assert!(scheduler.set_timesteps(0).is_err());
    assert!(scheduler.set_timesteps(1001).is_err());
    // leading + steps_offset 1 with 1000 steps would reach t = 1000.
    assert!(scheduler.set_timesteps(1000).is_err());
    scheduler.set_timesteps(1).unwrap();
    assert_eq!(scheduler.timesteps(), [1]);
}

#[test]
fn burn_step_and_add_noise_apply_the_coefficients() {
    let device = common::cpu();
    let mut scheduler = Golden::load().scheduler("i2vgen");
    scheduler.set_timesteps(50).unwrap();
    let sample: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
    let output: Vec<f32> = (0..24).map(|i| (i as f32 * 0.91 + 0.5).cos()).collect();
    let tensor = |v: &[f32]| Tensor::<3>::from_data(TensorData::new(v.to_vec(), [2, 3, 4]), &device);
    let read = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().unwrap();
    for t in [981, 501, 1] {
        let (c_sample, c_model) = scheduler.step_coefficients(t);
        let expected: Vec<f64> =
            sample.iter().zip(&output).map(|(&x, &m)| c_sample * f64::from(x) + c_model * f64::from(m)).collect();
        let ours = read(scheduler.step(tensor(&output), t, tensor(&sample)).unwrap());
        let ours: Vec<f64> = ours.into_iter().map(f64::from).collect();
        let error = max_abs_diff(&ours, &expected);
        assert!(error <= 1e-6, "step at t = {t}: off by {error:e}");

        let (a, b) = scheduler.add_noise_coefficients(t);
        let expected: Vec<f64> =
            sample.iter().zip(&output).map(|(&x, &n)| a * f64::from(x) + b * f64::from(n)).collect();
        let ours: Vec<f64> = read(scheduler.add_noise(tensor(&sample), tensor(&output), t).unwrap())
            .into_iter()
            .map(f64::from)
            .collect();
        let error = max_abs_diff(&ours, &expected);
        assert!(error <= 1e-6, "add_noise at t = {t}: off by {error:e}");
    }
}
