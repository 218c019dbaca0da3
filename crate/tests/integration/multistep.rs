//! Golden tests of `DPMSolverMultistepScheduler` and `UniPCMultistepScheduler` against diffusers
//! 0.42.1 (`tests/reference/make_fixtures.py`, `multistep()`): each case's config as diffusers
//! saves it (built with `from_config` from I2VGen-XL's DDIM config, as a preset does), and for
//! 5, 15 and 25 steps the timesteps, the float32 sigmas, and a chain of `step`s on random model
//! outputs.
//!
//! Tolerances: timesteps and sigmas exact (the float32 schedule is emulated bit for bit); chains
//! and `add_noise` 1e-10 (f64 on both sides, only the order of additions differs).

use std::collections::BTreeMap;

use i2vgen::loading::config::parse;
use i2vgen::schedulers::SchedulerConfig;
use i2vgen::schedulers::scheduling_dpmsolver_multistep::DPMSolverMultistepScheduler;
use i2vgen::schedulers::scheduling_unipc_multistep::UniPCMultistepScheduler;
use safetensors::{Dtype, SafeTensors};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden/multistep");
const CLOSE: f64 = 1e-10;

struct Golden {
    bytes: Vec<u8>,
    /// case name → its config file, as diffusers wrote it
    configs: BTreeMap<String, String>,
}

impl Golden {
    fn load() -> Self {
        let bytes = std::fs::read(format!("{GOLDEN}/chains.safetensors")).expect("read chains.safetensors");
        let mut configs = BTreeMap::new();
        for entry in std::fs::read_dir(GOLDEN).expect("the multistep fixture folder") {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                configs.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
        assert!(configs.len() >= 10, "expected the multistep cases, found {}", configs.len());
        Self { bytes, configs }
    }

    fn config(&self, name: &str) -> SchedulerConfig {
        let parsed = parse::<SchedulerConfig>(&self.configs[name]).unwrap_or_else(|e| panic!("{name}: {e}"));
        parsed.config
    }

    /// The chain lengths the fixture holds for a case.
    fn lengths(&self, name: &str) -> Vec<usize> {
        let tensors = SafeTensors::deserialize(&self.bytes).unwrap();
        let mut lengths: Vec<usize> = tensors
            .names()
            .into_iter()
            .filter_map(|k| k.strip_prefix(&format!("{name}."))?.strip_suffix(".timesteps")?.parse().ok())
            .collect();
        lengths.sort();
        assert!(!lengths.is_empty(), "{name}: no chains");
        lengths
    }

    fn raw(&self, key: &str, dtype: Dtype) -> Vec<u8> {
        let tensors = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = tensors.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(view.dtype(), dtype, "{key}");
        view.data().to_vec()
    }

    fn f64s(&self, key: &str) -> Vec<f64> {
        self.raw(key, Dtype::F64).chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    fn i64s(&self, key: &str) -> Vec<i64> {
        self.raw(key, Dtype::I64).chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn sigmas(config: &SchedulerConfig, steps: usize) -> Vec<f64> {
    match config {
        SchedulerConfig::DpmSolverMultistep(c) => {
            DPMSolverMultistepScheduler::<Vec<f64>>::new(c, steps).unwrap().sigmas().to_vec()
        }
        SchedulerConfig::UniPCMultistep(c) => {
            UniPCMultistepScheduler::<Vec<f64>>::new(c, steps).unwrap().sigmas().to_vec()
        }
        SchedulerConfig::Ddim(_) => unreachable!("the multistep cases are DPM-Solver++ and UniPC"),
    }
}

#[test]
fn saved_configs_parse_with_every_key_known() {
    let golden = Golden::load();
    for (name, text) in &golden.configs {
        let parsed = parse::<SchedulerConfig>(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(parsed.unknown_keys.is_empty(), "{name}: unknown keys {:?}", parsed.unknown_keys);
        assert_ne!(parsed.config.class_name(), "DDIMScheduler", "{name}");
    }
}

#[test]
fn timesteps_and_sigmas_equal_reference() {
    let golden = Golden::load();
    for name in golden.configs.keys() {
        let config = golden.config(name);
        for steps in golden.lengths(name) {
            let key = format!("{name}.{steps}");
            let scheduler = config.build::<Vec<f64>>(steps).unwrap();
            assert_eq!(scheduler.timesteps(), golden.i64s(&format!("{key}.timesteps")), "{key}");
            assert_eq!(sigmas(&config, steps), golden.f64s(&format!("{key}.sigmas")), "{key}: sigmas");
        }
    }
}

#[test]
fn step_chains_match_reference() {
    let golden = Golden::load();
    let mut checked = 0;
    for name in golden.configs.keys() {
        let config = golden.config(name);
        for steps in golden.lengths(name) {
            let key = format!("{name}.{steps}");
            let mut scheduler = config.build::<Vec<f64>>(steps).unwrap();
            let timesteps = scheduler.timesteps().to_vec();
            let mut sample = golden.f64s(&format!("{key}.sample"));
            let outputs = golden.f64s(&format!("{key}.model_outputs"));
            let chain = golden.f64s(&format!("{key}.chain"));
            let len = sample.len();
            let mut worst = 0.0f64;
            for (i, &t) in timesteps.iter().enumerate() {
                let output = outputs[i * len..(i + 1) * len].to_vec();
                sample = scheduler.step(output, t, sample).unwrap();
                worst = worst.max(max_abs_diff(&sample, &chain[i * len..(i + 1) * len]));
            }
            println!("{key}: chain max abs error {worst:e}");
            assert!(worst <= CLOSE, "{key}: chain off by {worst:e}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} chains checked");
}

#[test]
fn add_noise_matches_reference() {
    let golden = Golden::load();
    for name in golden.configs.keys() {
        let config = golden.config(name);
        let scheduler = config.build::<Vec<f64>>(golden.lengths(name)[0]).unwrap();
        let key = format!("{name}.add_noise");
        let t = golden.i64s(&format!("{key}.timestep"))[0];
        let noisy =
            scheduler.add_noise(golden.f64s(&format!("{key}.original")), golden.f64s(&format!("{key}.noise")), t);
        let error = max_abs_diff(&noisy.unwrap(), &golden.f64s(&format!("{key}.noisy")));
        assert!(error <= CLOSE, "{key}: off by {error:e}");
    }
}

/// A preset switches the shipped DDIM config's class the way diffusers' `from_config` does: the
/// result builds the same schedule as the config diffusers saved for that switch.
#[test]
fn switching_class_matches_from_config() {
    let golden = Golden::load();
    let ddim = parse::<SchedulerConfig>(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tiny-i2vgen/scheduler/scheduler_config.json"
        ))
        .unwrap(),
    )
    .unwrap()
    .config;
    for (name, class) in
        [("dpm_i2vgen_leading", "DPMSolverMultistepScheduler"), ("unipc_i2vgen_leading", "UniPCMultistepScheduler")]
    {
        let switched = ddim.with_class(class).unwrap();
        assert_eq!(switched.class_name(), class);
        for steps in golden.lengths(name) {
            assert_eq!(sigmas(&switched, steps), golden.f64s(&format!("{name}.{steps}.sigmas")), "{name}.{steps}");
        }
    }
}

#[test]
fn refusals_are_sentences() {
    let error = |json: &str| match parse::<SchedulerConfig>(json).and_then(|p| p.config.build::<Vec<f64>>(10)) {
        Ok(_) => panic!("{json} was accepted"),
        Err(e) => e.to_string(),
    };
    let dpm = r#"{"_class_name": "DPMSolverMultistepScheduler""#;
    let unipc = r#"{"_class_name": "UniPCMultistepScheduler""#;
    assert!(error(r#"{"_class_name": "EulerDiscreteScheduler"}"#).contains("_class_name"));
    assert!(error(&format!(r#"{dpm}, "algorithm_type": "sde-dpmsolver++"}}"#)).contains("algorithm_type"));
    assert!(error(&format!(r#"{dpm}, "solver_order": 3}}"#)).contains("solver_order"));
    assert!(error(&format!(r#"{dpm}, "use_karras_sigmas": true}}"#)).contains("use_karras_sigmas"));
    assert!(error(&format!(r#"{dpm}, "lambda_min_clipped": -5.1}}"#)).contains("lambda_min_clipped"));
    assert!(error(&format!(r#"{unipc}, "predict_x0": false}}"#)).contains("predict_x0"));
    assert!(error(&format!(r#"{unipc}, "thresholding": true}}"#)).contains("thresholding"));
    let zero = parse::<SchedulerConfig>(&format!("{unipc}}}")).unwrap().config.build::<Vec<f64>>(0);
    assert!(zero.err().unwrap().to_string().contains("between 1 and 1000"));
}

/// `i2vgen schedule` replays a fixture chain from files: its config as diffusers saved it, the
/// initial sample and the model outputs (f64, and f32 too: widened exactly).
#[test]
fn schedule_command_replays_the_reference_chains() {
    let golden = Golden::load();
    let dir = std::env::temp_dir().join(format!("i2vgen-schedule-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f64_bytes = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for (name, steps) in [("dpm_i2vgen_trailing", 15), ("unipc_i2vgen_leading", 25), ("dpm_epsilon_trailing", 5)] {
        let key = format!("{name}.{steps}");
        let (sample, outputs) = (golden.f64s(&format!("{key}.sample")), golden.f64s(&format!("{key}.model_outputs")));
        let (sample_bytes, output_bytes) = (f64_bytes(&sample), f64_bytes(&outputs));
        let inputs = dir.join(format!("{key}.in.safetensors"));
        let views = vec![
            ("sample", safetensors::tensor::TensorView::new(Dtype::F64, vec![2, 3], &sample_bytes).unwrap()),
            (
                "model_outputs",
                safetensors::tensor::TensorView::new(Dtype::F64, vec![steps, 2, 3], &output_bytes).unwrap(),
            ),
        ];
        safetensors::serialize_to_file(views, None, &inputs).unwrap();
        let config = dir.join(format!("{name}.json"));
        std::fs::write(&config, &golden.configs[name]).unwrap();
        let output = dir.join(format!("{key}.out.safetensors"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_i2vgen"))
            .args(["schedule", "--steps", &steps.to_string()])
            .arg("--config")
            .arg(&config)
            .arg("--inputs")
            .arg(&inputs)
            .arg("--output")
            .arg(&output)
            .output()
            .unwrap();
        assert!(out.status.success(), "{key}: {}", String::from_utf8_lossy(&out.stderr));
        let bytes = std::fs::read(&output).unwrap();
        let written = SafeTensors::deserialize(&bytes).unwrap();
        let timesteps = written.tensor("timesteps").unwrap();
        assert_eq!(timesteps.dtype(), Dtype::I64);
        let timesteps: Vec<i64> =
            timesteps.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(timesteps, golden.i64s(&format!("{key}.timesteps")), "{key}");
        let chain = written.tensor("prev_samples").unwrap();
        assert_eq!((chain.dtype(), chain.shape()), (Dtype::F64, &[steps, 2, 3][..]), "{key}");
        let chain: Vec<f64> = chain.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
        let error = max_abs_diff(&chain, &golden.f64s(&format!("{key}.chain")));
        assert!(error <= CLOSE, "{key}: off by {error:e}");
    }
    // A model output too few is refused with the expected shape.
    let bytes = f64_bytes(&[0.0; 6]);
    let views = vec![
        ("sample", safetensors::tensor::TensorView::new(Dtype::F64, vec![2, 3], &bytes).unwrap()),
        ("model_outputs", safetensors::tensor::TensorView::new(Dtype::F64, vec![1, 2, 3], &bytes).unwrap()),
    ];
    let inputs = dir.join("short.safetensors");
    safetensors::serialize_to_file(views, None, &inputs).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_i2vgen"))
        .args(["schedule", "--steps", "5", "--config"])
        .arg(dir.join("dpm_i2vgen_trailing.json"))
        .arg("--inputs")
        .arg(&inputs)
        .arg("--output")
        .arg(dir.join("short.out.safetensors"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("expected [5, 2, 3]"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
