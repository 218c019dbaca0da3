//! Noise schedulers, host-side in f64 like diffusers' numpy/torch code. The pipelines drive one
//! [`Scheduler`]; `scheduler/scheduler_config.json`'s `_class_name` picks which
//! ([`SchedulerConfig`]), and a preset may switch the class the way diffusers'
//! `OtherScheduler.from_config(pipe.scheduler.config)` does ([`SchedulerConfig::with_class`]).

pub mod scheduling_ddim;
pub mod scheduling_dpmsolver_multistep;
pub mod scheduling_unipc_multistep;
pub mod scheduling_utils;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::scheduling_ddim::{DDIMScheduler, DDIMSchedulerConfig};
use self::scheduling_dpmsolver_multistep::{DPMSolverMultistepScheduler, DPMSolverMultistepSchedulerConfig};
use self::scheduling_unipc_multistep::{UniPCMultistepScheduler, UniPCMultistepSchedulerConfig};
use self::scheduling_utils::{Sample, TimestepSpacing};
use crate::loading::config::{ConfigFile, check_range, expect_class_name, invalid};
use crate::{Error, Result};

/// A scheduler with its timesteps set: the pipelines call `step` once per timestep, in order.
pub trait Scheduler<S: Sample> {
    /// The timesteps to run, descending.
    fn timesteps(&self) -> &[i64];

    /// One denoising step from `t`: the sample at the next timestep (`step(...).prev_sample`).
    /// Multistep solvers remember earlier model outputs, so steps must come in order.
    fn step(&mut self, model_output: S, t: i64, sample: S) -> Result<S>;

    /// Forward diffusion of `original` to timestep `t` (`add_noise`, one timestep for the batch).
    fn add_noise(&self, original: S, noise: S, t: i64) -> Result<S>;

    /// SDEdit (`VideoToVideoSDPipeline.get_timesteps`): the last `min(int(n·strength), n)`
    /// timesteps, which the following steps run; its first entry is where the input is noised to.
    fn begin_at_strength(&mut self, strength: f64) -> Vec<i64>;
}

/// The last `min(int(n·strength), n)` entries of `timesteps` (order 1 for every scheduler here).
fn strength_tail(timesteps: &[i64], strength: f64) -> Vec<i64> {
    let n = timesteps.len();
    // Python's int() truncates; a negative product saturates to 0 and leaves diffusers' empty slice.
    let init_timestep = ((n as f64 * strength) as usize).min(n);
    timesteps[n - init_timestep..].to_vec()
}

/// `scheduler/scheduler_config.json` of any supported class, by its `_class_name`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "_class_name")]
pub enum SchedulerConfig {
    #[serde(rename = "DDIMScheduler")]
    Ddim(DDIMSchedulerConfig),
    #[serde(rename = "DPMSolverMultistepScheduler")]
    DpmSolverMultistep(DPMSolverMultistepSchedulerConfig),
    #[serde(rename = "UniPCMultistepScheduler")]
    UniPCMultistep(UniPCMultistepSchedulerConfig),
}

/// The `_class_name`s [`SchedulerConfig`] reads.
pub const SCHEDULER_CLASSES: [&str; 3] = ["DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"];

/// Where every scheduler config lives in a pipeline folder.
const FILE: &str = "scheduler/scheduler_config.json";

impl ConfigFile for SchedulerConfig {
    const FILE: &'static str = FILE;
    /// The DDIM keys `from_config` carries over into a multistep config it switched to, and
    /// UniPC's `solver_p` (another scheduler as predictor; `null` in every saved config we know)
    /// and flow-matching keys (they act only with `use_flow_sigmas`, which is refused).
    const IGNORED: &'static [&'static str] = &[
        "clip_sample",
        "clip_sample_range",
        "set_alpha_to_one",
        "solver_p",
        "sigma_min",
        "sigma_max",
        "shift_terminal",
    ];
    fn check_class(json: &BTreeMap<String, Value>) -> Result<()> {
        expect_class_name(Self::FILE, json, &SCHEDULER_CLASSES)
    }

    fn validate(&self) -> Result<()> {
        match self {
            Self::Ddim(c) => c.validate(),
            Self::DpmSolverMultistep(c) => c.validate(),
            Self::UniPCMultistep(c) => c.validate(),
        }
    }
}

impl SchedulerConfig {
    pub fn class_name(&self) -> &'static str {
        match self {
            Self::Ddim(_) => SCHEDULER_CLASSES[0],
            Self::DpmSolverMultistep(_) => SCHEDULER_CLASSES[1],
            Self::UniPCMultistep(_) => SCHEDULER_CLASSES[2],
        }
    }

    /// The same schedule under another class (`Class.from_config(config)`): the keys both classes
    /// know carry over (betas, prediction type, zero-SNR rescaling, spacing, offset), the others
    /// take the new class's defaults.
    pub fn with_class(&self, class_name: &str) -> Result<Self> {
        let mut json = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("a scheduler config writes an object"),
        };
        // The solver families name different variants: like diffusers, the new class takes its
        // default one.
        json.remove("solver_type");
        json.insert("_class_name".into(), Value::String(class_name.into()));
        Self::check_class(&json.clone().into_iter().collect())?;
        serde_json::from_value(Value::Object(json))
            .map_err(|e| Error::Config { file: Self::FILE.into(), message: e.to_string() })
    }

    /// The config with another `timestep_spacing` ("trailing" starts at the last training
    /// timestep, as zero terminal SNR prescribes).
    pub fn with_spacing(mut self, spacing: TimestepSpacing) -> Self {
        match &mut self {
            Self::Ddim(c) => c.timestep_spacing = spacing,
            Self::DpmSolverMultistep(c) => c.schedule.timestep_spacing = spacing,
            Self::UniPCMultistep(c) => c.schedule.timestep_spacing = spacing,
        }
        self
    }

    pub fn timestep_spacing(&self) -> TimestepSpacing {
        match self {
            Self::Ddim(c) => c.timestep_spacing,
            Self::DpmSolverMultistep(c) => c.schedule.timestep_spacing,
            Self::UniPCMultistep(c) => c.schedule.timestep_spacing,
        }
    }

    /// The scheduler, its timesteps set for `num_inference_steps`.
    pub fn build<S: Sample + 'static>(&self, num_inference_steps: usize) -> Result<Box<dyn Scheduler<S>>> {
        Ok(match self {
            Self::Ddim(config) => {
                let mut scheduler = DDIMScheduler::new(config.clone())?;
                scheduler.set_timesteps(num_inference_steps)?;
                Box::new(scheduler)
            }
            Self::DpmSolverMultistep(config) => {
                Box::new(DPMSolverMultistepScheduler::new(config, num_inference_steps)?)
            }
            Self::UniPCMultistep(config) => Box::new(UniPCMultistepScheduler::new(config, num_inference_steps)?),
        })
    }
}

/// Options every scheduler here refuses rather than ignores: they would change the numbers.
fn check_common(file: &str, trained_betas: bool, thresholding: bool, num_train_timesteps: usize) -> Result<()> {
    let bad = |message: &str| Err(Error::Config { file: file.into(), message: message.into() });
    if trained_betas {
        return bad("trained_betas is not supported; set it to null and describe the schedule with beta_schedule");
    }
    if thresholding {
        return bad("thresholding = true is not supported (latent diffusion models use false)");
    }
    check_range(file, "num_train_timesteps", num_train_timesteps, 2..=MAX_TRAIN_TIMESTEPS)
}

/// The most training timesteps a schedule may have: real ones have 1000, and each costs a few
/// bytes per table, so a hostile count cannot ask for terabytes.
const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// Betas that are probabilities, and an offset that keeps the timesteps countable (the
/// "leading" spacing adds it to every timestep).
fn check_betas(
    file: &str,
    beta_start: f64,
    beta_end: f64,
    steps_offset: usize,
    num_train_timesteps: usize,
) -> Result<()> {
    for (key, beta) in [("beta_start", beta_start), ("beta_end", beta_end)] {
        if !(beta > 0.0 && beta < 1.0) {
            return Err(invalid(file, key, beta, "it must be a number between 0 and 1 (a noise variance per step)"));
        }
    }
    check_range(file, "steps_offset", steps_offset, 0..=num_train_timesteps - 1)
}

/// A step count the schedule can take.
fn check_step_count(n: usize, num_train_timesteps: usize) -> Result<()> {
    if n == 0 || n > num_train_timesteps {
        return Err(Error::request(
            "steps",
            format!(
                "the number of inference steps must be between 1 and {num_train_timesteps} (the scheduler's \
                 num_train_timesteps), not {n}"
            ),
        ));
    }
    Ok(())
}

/// Timesteps inside the training range (diffusers would fail later, indexing the schedule).
fn check_timesteps(n: usize, num_train_timesteps: usize, timesteps: &[i64], steps_offset: usize) -> Result<()> {
    if let Some(&t) = timesteps.iter().find(|&&t| t < 0 || t as usize >= num_train_timesteps) {
        return Err(Error::request(
            "steps",
            format!(
                "{n} inference steps with steps_offset {steps_offset} reach timestep {t}, outside \
                 0..{num_train_timesteps}; use fewer steps"
            ),
        ));
    }
    Ok(())
}
