//! diffusers `schedulers/scheduling_dpmsolver_multistep.py`: `DPMSolverMultistepScheduler` with
//! `algorithm_type = "dpmsolver++"` (the data-prediction solver, arXiv 2211.01095), orders 1 and 2
//! (midpoint or Heun), `lower_order_final`, `euler_at_final` and `final_sigmas_type`.
//!
//! The sigmas are diffusers' float32 values (from the float32 `alphas_cumprod`, with the last one
//! set to 2⁻²⁴ under zero-SNR rescaling so the first sigma is finite), widened to f64; every
//! step is an f64 linear combination of the sample and the remembered data predictions.

use serde::{Deserialize, Serialize};

use super::scheduling_utils::{
    FinalSigmasType, MultistepNoiseSchedule, PredictionType, Sample, alpha_sigma_lambda, data_prediction,
    index_for_timestep,
};
use super::{FILE, Scheduler, check_betas, check_common, strength_tail};
use crate::{Error, Result};

/// `solver_type` of the second-order update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum DPMSolverType {
    #[serde(rename = "midpoint")]
    Midpoint,
    #[serde(rename = "heun")]
    Heun,
}

/// `DPMSolverMultistepScheduler`'s config. Missing keys take the defaults of its `__init__`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct DPMSolverMultistepSchedulerConfig {
    /// Betas, zero-SNR rescaling, spacing, offset and the final sigma.
    #[serde(flatten)]
    pub schedule: MultistepNoiseSchedule,
    /// Only `null` is supported.
    pub trained_betas: Option<Vec<f64>>,
    /// 1 or 2.
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    /// Only `false` is supported.
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    /// Only "dpmsolver++" (and "deis", which diffusers maps to it).
    pub algorithm_type: String,
    pub solver_type: DPMSolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    /// Only `false` is supported (and the other sigma reshapings below).
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_lu_lambdas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    /// Only −∞ (no clipping); Python writes it as `-Infinity`, which reads as `null` here.
    pub lambda_min_clipped: Option<f64>,
    /// Only `null`.
    pub variance_type: Option<String>,
    /// Only `false`.
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for DPMSolverMultistepSchedulerConfig {
    fn default() -> Self {
        Self {
            schedule: MultistepNoiseSchedule::default(),
            trained_betas: None,
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            algorithm_type: "dpmsolver++".into(),
            solver_type: DPMSolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            lambda_min_clipped: None,
            variance_type: None,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".into(),
        }
    }
}

impl DPMSolverMultistepSchedulerConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let s = &self.schedule;
        check_common(FILE, self.trained_betas.is_some(), self.thresholding, s.num_train_timesteps)?;
        check_betas(FILE, s.beta_start, s.beta_end, s.steps_offset, s.num_train_timesteps)?;
        let bad = |message: String| Err(Error::Config { file: FILE.into(), message });
        if !matches!(self.algorithm_type.as_str(), "dpmsolver++" | "deis") {
            return bad(format!("algorithm_type {:?} is not supported; use \"dpmsolver++\"", self.algorithm_type));
        }
        if !(1..=2).contains(&self.solver_order) {
            return bad(format!("solver_order {} is not supported; use 1 or 2", self.solver_order));
        }
        let reshaped = [
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("use_lu_lambdas", self.use_lu_lambdas),
            ("use_flow_sigmas", self.use_flow_sigmas),
            ("use_dynamic_shifting", self.use_dynamic_shifting),
        ];
        if let Some((key, _)) = reshaped.iter().find(|(_, on)| *on) {
            return bad(format!("{key} = true is not supported; set it to false"));
        }
        if let Some(lambda) = self.lambda_min_clipped.filter(|l| l.is_finite()) {
            return bad(format!("lambda_min_clipped = {lambda} is not supported; leave it at -inf"));
        }
        if let Some(variance) = &self.variance_type {
            return bad(format!("variance_type {variance:?} is not supported; set it to null"));
        }
        Ok(())
    }
}

/// DPM-Solver++ (multistep, deterministic).
pub struct DPMSolverMultistepScheduler<S> {
    config: DPMSolverMultistepSchedulerConfig,
    timesteps: Vec<i64>,
    /// One per timestep plus the final one.
    sigmas: Vec<f64>,
    /// The data predictions of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Option<S>>,
    lower_order_nums: usize,
    step_index: Option<usize>,
}

impl<S: Sample> DPMSolverMultistepScheduler<S> {
    /// The schedule (`__init__`) with its timesteps set (`set_timesteps(n)`).
    pub fn new(config: &DPMSolverMultistepSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let (timesteps, sigmas) = config.schedule.timesteps_and_sigmas(num_inference_steps)?;
        Ok(Self {
            config: config.clone(),
            timesteps,
            sigmas,
            model_outputs: (0..config.solver_order).map(|_| None).collect(),
            lower_order_nums: 0,
            step_index: None,
        })
    }

    /// The sigmas of the schedule: one per timestep, then the final one.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }
}

impl<S: Sample> Scheduler<S> for DPMSolverMultistepScheduler<S> {
    fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    fn step(&mut self, model_output: S, t: i64, sample: S) -> Result<S> {
        let n = self.timesteps.len();
        let index = *self.step_index.get_or_insert_with(|| index_for_timestep(&self.timesteps, t));
        if index >= n {
            return Err(Error::request("steps", "all steps of the schedule have run"));
        }
        let c = &self.config;
        // Improve numerical stability for small numbers of steps (diffusers' comment).
        let lower_order_final = index == n - 1
            && (c.euler_at_final
                || (c.lower_order_final && n < 15)
                || c.schedule.final_sigmas_type == FinalSigmasType::Zero);

        let (a, b) = data_prediction(self.config.prediction_type, self.sigmas[index]);
        let x0 = S::combine(vec![(a, sample.clone()), (b, model_output)]);
        self.model_outputs.rotate_left(1);
        *self.model_outputs.last_mut().expect("solver_order ≥ 1") = Some(x0.clone());

        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[index + 1]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[index]);
        let h = lambda_t - lambda_s0;
        let phi = alpha_t * ((-h).exp() - 1.0);
        let prev = if c.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            // dpm_solver_first_order_update (DDIM in disguise)
            S::combine(vec![(sigma_t / sigma_s0, sample), (-phi, x0)])
        } else {
            // multistep_dpm_solver_second_order_update: D0 = m0, D1 = (m0 − m1) / r0
            let m1 = self.model_outputs[self.model_outputs.len() - 2].clone().expect("an earlier data prediction");
            let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[index - 1]);
            let r0 = (lambda_s0 - lambda_s1) / h;
            let d1 = match c.solver_type {
                DPMSolverType::Midpoint => -0.5 * phi,
                DPMSolverType::Heun => alpha_t * (((-h).exp() - 1.0) / h + 1.0),
            };
            // x_t = (σ_t/σ_s0)·x − φ·D0 + d1·D1, D1 written out over m0 and m1.
            S::combine(vec![(sigma_t / sigma_s0, sample), (-phi + d1 / r0, x0), (-d1 / r0, m1)])
        };
        self.lower_order_nums = (self.lower_order_nums + 1).min(c.solver_order);
        self.step_index = Some(index + 1);
        Ok(prev)
    }

    fn add_noise(&self, original: S, noise: S, t: i64) -> Result<S> {
        // The pipelines set no begin index, so diffusers looks the timestep up.
        let (alpha_t, sigma_t, _) = alpha_sigma_lambda(self.sigmas[index_for_timestep(&self.timesteps, t)]);
        Ok(S::combine(vec![(alpha_t, original), (sigma_t, noise)]))
    }

    fn begin_at_strength(&mut self, strength: f64) -> Vec<i64> {
        strength_tail(&self.timesteps, strength)
    }
}
