//! diffusers `schedulers/scheduling_unipc_multistep.py`: `UniPCMultistepScheduler` (arXiv
//! 2302.04867) predicting x₀ (`predict_x0 = true`), B(h) variants bh1 and bh2, orders 1 and 2,
//! with the UniC corrector after every step but those in `disable_corrector`.
//!
//! The schedule (timesteps, float32 sigmas) is DPM-Solver++'s; each predictor and corrector
//! update is an f64 linear combination of the samples and remembered data predictions.

use serde::{Deserialize, Serialize};

use super::scheduling_utils::{
    MultistepNoiseSchedule, PredictionType, Sample, alpha_sigma_lambda, data_prediction, index_for_timestep,
};
use super::{FILE, Scheduler, check_betas, check_common, strength_tail};
use crate::{Error, Result};

/// `solver_type`: the B(h) of the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum UniPCSolverType {
    /// B(h) = h (better for unconditional sampling, per the paper).
    #[serde(rename = "bh1")]
    Bh1,
    /// B(h) = eʰ − 1 (diffusers' default, for guided sampling).
    #[serde(rename = "bh2")]
    Bh2,
}

/// `UniPCMultistepScheduler`'s config. Missing keys take the defaults of its `__init__`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct UniPCMultistepSchedulerConfig {
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
    /// Only `true` is supported.
    pub predict_x0: bool,
    pub solver_type: UniPCSolverType,
    pub lower_order_final: bool,
    /// Steps (0-based) after which the corrector does not run.
    pub disable_corrector: Vec<usize>,
    /// Only `false` is supported (and the other sigma reshapings below).
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    /// Only `false`.
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for UniPCMultistepSchedulerConfig {
    fn default() -> Self {
        Self {
            schedule: MultistepNoiseSchedule::default(),
            trained_betas: None,
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            predict_x0: true,
            solver_type: UniPCSolverType::Bh2,
            lower_order_final: true,
            disable_corrector: Vec::new(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".into(),
        }
    }
}

impl UniPCMultistepSchedulerConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let s = &self.schedule;
        check_common(FILE, self.trained_betas.is_some(), self.thresholding, s.num_train_timesteps)?;
        check_betas(FILE, s.beta_start, s.beta_end, s.steps_offset, s.num_train_timesteps)?;
        let bad = |message: String| Err(Error::Config { file: FILE.into(), message });
        if !(1..=2).contains(&self.solver_order) {
            return bad(format!("solver_order {} is not supported; use 1 or 2", self.solver_order));
        }
        if !self.predict_x0 {
            return bad("predict_x0 = false is not supported; set it to true".into());
        }
        let reshaped = [
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("use_flow_sigmas", self.use_flow_sigmas),
            ("use_dynamic_shifting", self.use_dynamic_shifting),
        ];
        if let Some((key, _)) = reshaped.iter().find(|(_, on)| *on) {
            return bad(format!("{key} = true is not supported; set it to false"));
        }
        Ok(())
    }
}

/// UniPC (multistep predictor–corrector, deterministic).
pub struct UniPCMultistepScheduler<S> {
    config: UniPCMultistepSchedulerConfig,
    timesteps: Vec<i64>,
    /// One per timestep plus the final one.
    sigmas: Vec<f64>,
    /// The data predictions of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Option<S>>,
    lower_order_nums: usize,
    /// The order of the last predictor step, which its corrector uses.
    this_order: usize,
    /// The sample before the last predictor step.
    last_sample: Option<S>,
    step_index: Option<usize>,
}

impl<S: Sample> UniPCMultistepScheduler<S> {
    /// The schedule (`__init__`) with its timesteps set (`set_timesteps(n)`).
    pub fn new(config: &UniPCMultistepSchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let (timesteps, sigmas) = config.schedule.timesteps_and_sigmas(num_inference_steps)?;
        Ok(Self {
            config: config.clone(),
            timesteps,
            sigmas,
            model_outputs: (0..config.solver_order).map(|_| None).collect(),
            lower_order_nums: 0,
            this_order: 0,
            last_sample: None,
            step_index: None,
        })
    }

    /// The sigmas of the schedule: one per timestep, then the final one.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The data prediction remembered `back` steps ago (0 = the latest).
    fn remembered(&self, back: usize) -> S {
        self.model_outputs[self.model_outputs.len() - 1 - back].clone().expect("an earlier data prediction")
    }

    /// The update shared by predictor and corrector, from sigma index `s0` to `t`: returns
    /// `(σ_t/σ_s0, α_t·h·φ₁(h), α_t·B(h), r₁)` (r₁ only with an older prediction at `s0 − 1`), in
    /// the notation of `multistep_uni_p_bh_update`.
    fn coefficients(&self, t: usize, s0: usize, order: usize) -> (f64, f64, f64, Option<f64>) {
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[t]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[s0]);
        let h = lambda_t - lambda_s0;
        let rk = (order >= 2).then(|| (alpha_sigma_lambda(self.sigmas[s0 - 1]).2 - lambda_s0) / h);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = match self.config.solver_type {
            UniPCSolverType::Bh1 => hh,
            UniPCSolverType::Bh2 => hh.exp_m1(),
        };
        (sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h, rk)
    }

    /// `multistep_uni_c_bh_update`: the corrected current sample, from the sample before the
    /// last predictor step (`last_sample`), the data prediction then (`m0`) and now (`model_t`).
    fn correct(&self, model_t: S, last_sample: S, index: usize) -> S {
        let order = self.this_order;
        let (ratio, phi, b_h, rk) = self.coefficients(index, index - 1, order);
        let m0 = self.remembered(0);
        // rhos_c solves R·ρ = b (see `corrector_rhos`); order 1 uses ρ = ½.
        let mut terms = vec![(ratio, last_sample)];
        match rk {
            None => {
                // x_t = ratio·x − φ·m0 − B·½·(model_t − m0)
                terms.push((-phi + 0.5 * b_h, m0));
                terms.push((-0.5 * b_h, model_t));
            }
            Some(rk) => {
                let rhos = self.corrector_rhos(index, rk);
                // D1 = (m1 − m0)/r; x_t = ratio·x − φ·m0 − B·(ρ₀·D1 + ρ₁·(model_t − m0))
                let m1 = self.remembered(1);
                terms.push((-phi + b_h * rhos[0] / rk + b_h * rhos[1], m0));
                terms.push((-b_h * rhos[0] / rk, m1));
                terms.push((-b_h * rhos[1], model_t));
            }
        }
        S::combine(terms)
    }

    /// The corrector's ρ for order 2: the solution of `[[1, 1], [r₁, 1]]·ρ = b`.
    fn corrector_rhos(&self, index: usize, rk: f64) -> [f64; 2] {
        let (_, _, lambda_t) = alpha_sigma_lambda(self.sigmas[index]);
        let (_, _, lambda_s0) = alpha_sigma_lambda(self.sigmas[index - 1]);
        let hh = -(lambda_t - lambda_s0);
        let b_h = match self.config.solver_type {
            UniPCSolverType::Bh1 => hh,
            UniPCSolverType::Bh2 => hh.exp_m1(),
        };
        // h_phi_k recursion: φ₁·h/hh − 1, then /hh − 1/k!
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut b = [0.0; 2];
        for (i, b_i) in b.iter_mut().enumerate() {
            *b_i = h_phi_k * factorial / b_h;
            factorial *= (i + 2) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        // R = [[1, 1], [rk, 1]] (rows: powers 0 and 1 of rks = [rk, 1]).
        let det = 1.0 - rk;
        [(b[0] - b[1]) / det, (b[1] - rk * b[0]) / det]
    }
}

impl<S: Sample> Scheduler<S> for UniPCMultistepScheduler<S> {
    fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    fn step(&mut self, model_output: S, t: i64, sample: S) -> Result<S> {
        let n = self.timesteps.len();
        let index = *self.step_index.get_or_insert_with(|| index_for_timestep(&self.timesteps, t));
        if index >= n {
            return Err(Error::request("steps", "all steps of the schedule have run"));
        }
        let (a, b) = data_prediction(self.config.prediction_type, self.sigmas[index]);
        let x0 = S::combine(vec![(a, sample.clone()), (b, model_output)]);
        let use_corrector = index > 0 && !self.config.disable_corrector.contains(&(index - 1));
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.correct(x0.clone(), last.clone(), index),
            _ => sample,
        };
        self.model_outputs.rotate_left(1);
        *self.model_outputs.last_mut().expect("solver_order ≥ 1") = Some(x0.clone());

        let order = self.config.solver_order;
        let wanted = if self.config.lower_order_final { order.min(n - index) } else { order };
        self.this_order = wanted.min(self.lower_order_nums + 1);
        self.last_sample = Some(sample.clone());

        // multistep_uni_p_bh_update: x_t = ratio·x − φ·m0 − B·Σρ·D1, ρ = ½ at order 2.
        let (ratio, phi, b_h, rk) = self.coefficients(index + 1, index, self.this_order);
        let mut terms = vec![(ratio, sample)];
        match rk {
            None => terms.push((-phi, x0)),
            Some(rk) => {
                let m1 = self.remembered(1);
                terms.push((-phi + 0.5 * b_h / rk, x0));
                terms.push((-0.5 * b_h / rk, m1));
            }
        }
        let prev = S::combine(terms);
        self.lower_order_nums = (self.lower_order_nums + 1).min(order);
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
