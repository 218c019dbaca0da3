//! diffusers `schedulers/scheduling_ddim.py`: `DDIMScheduler` (deterministic, eta = 0), plus
//! `get_timesteps` of `VideoToVideoSDPipeline` (SDEdit strength) from
//! `pipelines/deprecated/text_to_video_synthesis/pipeline_text_to_video_synth_img2img.py`.
//!
//! The noise schedule is rebuilt with diffusers' own arithmetic: betas and `alphas_cumprod` are
//! float32 tensors there, so they are float32 here, operation by operation, and widened to f64
//! afterwards. A step is then two f64 coefficients, `prev_sample = c_sample·sample +
//! c_model·model_output`, applied to tensors as scalars.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::scheduling_utils::{BetaSchedule, PredictionType, TimestepSpacing};
use super::scheduling_utils::{Sample, alphas_cumprod_f32, numpy_arange, numpy_linspace};
use super::{Scheduler, check_betas, check_common, check_step_count, check_timesteps};
use crate::loading::config::{ConfigFile, expect_class_name};
use crate::{Error, Result};

/// `scheduler/scheduler_config.json`. Missing keys take the defaults of diffusers'
/// `DDIMScheduler.__init__`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct DDIMSchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Only `null` is supported.
    pub trained_betas: Option<Vec<f64>>,
    /// Only `false` is supported.
    pub clip_sample: bool,
    pub set_alpha_to_one: bool,
    pub steps_offset: usize,
    pub prediction_type: PredictionType,
    /// Only `false` is supported.
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub clip_sample_range: f64,
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
    pub rescale_betas_zero_snr: bool,
}

impl Default for DDIMSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            clip_sample: true,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: false,
        }
    }
}

impl ConfigFile for DDIMSchedulerConfig {
    const FILE: &'static str = "scheduler/scheduler_config.json";
    const IGNORED: &'static [&'static str] = &[];
    fn check_class(json: &BTreeMap<String, Value>) -> Result<()> {
        expect_class_name(Self::FILE, json, &["DDIMScheduler"])
    }

    /// Options that would change the numbers but are not ported are refused, not ignored.
    fn validate(&self) -> Result<()> {
        check_common(Self::FILE, self.trained_betas.is_some(), self.thresholding, self.num_train_timesteps)?;
        check_betas(Self::FILE, self.beta_start, self.beta_end, self.steps_offset, self.num_train_timesteps)?;
        if self.clip_sample {
            let message = "clip_sample = true is not supported (latent diffusion models use false)";
            return Err(Error::Config { file: Self::FILE.into(), message: message.into() });
        }
        Ok(())
    }
}

/// DDIM with eta = 0 (diffusers' default): deterministic, no noise drawn while stepping.
///
/// Usage mirrors diffusers: [`DDIMScheduler::new`], [`DDIMScheduler::set_timesteps`], then for each
/// `t` in [`DDIMScheduler::timesteps`] one [`DDIMScheduler::step`].
#[derive(Clone, Debug)]
pub struct DDIMScheduler {
    pub config: DDIMSchedulerConfig,
    /// diffusers' float32 `alphas_cumprod`, widened exactly to f64.
    alphas_cumprod: Vec<f64>,
    /// The "previous" alpha product of the last step (`prev_timestep < 0`).
    final_alpha_cumprod: f64,
    num_inference_steps: Option<usize>,
    timesteps: Vec<i64>,
}

impl DDIMScheduler {
    /// `order` of diffusers' scheduler: one model evaluation per step.
    pub const ORDER: usize = 1;
    /// Standard deviation of the initial noise (`init_noise_sigma`).
    pub const INIT_NOISE_SIGMA: f64 = 1.0;

    /// Builds the noise schedule from the config (`DDIMScheduler.__init__`).
    pub fn new(config: DDIMSchedulerConfig) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let alphas_cumprod = alphas_cumprod_f32(
            c.num_train_timesteps,
            c.beta_start,
            c.beta_end,
            c.beta_schedule,
            c.rescale_betas_zero_snr,
        );
        Self::with_alphas_cumprod(config, alphas_cumprod.into_iter().map(f64::from).collect())
    }

    fn with_alphas_cumprod(config: DDIMSchedulerConfig, alphas_cumprod: Vec<f64>) -> Result<Self> {
        config.validate()?;
        if alphas_cumprod.len() != config.num_train_timesteps {
            return Err(Error::Config {
                file: DDIMSchedulerConfig::FILE.into(),
                message: format!(
                    "alphas_cumprod has {} entries but num_train_timesteps is {}",
                    alphas_cumprod.len(),
                    config.num_train_timesteps
                ),
            });
        }
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        // Until `set_timesteps` runs, diffusers holds every training timestep, descending.
        let timesteps = (0..config.num_train_timesteps as i64).rev().collect();
        Ok(Self { config, alphas_cumprod, final_alpha_cumprod, num_inference_steps: None, timesteps })
    }

    /// The cumulative products of `1 - beta`, one per training timestep (float32 values).
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The alpha product used as "previous" by the last step: 1 with `set_alpha_to_one`.
    pub fn final_alpha_cumprod(&self) -> f64 {
        self.final_alpha_cumprod
    }

    /// The timesteps to run, descending (all training timesteps before `set_timesteps`).
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// The count given to the last `set_timesteps`.
    pub fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    /// Chooses `num_inference_steps` timesteps out of the training range (`set_timesteps`).
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let n_train = self.config.num_train_timesteps;
        let n = num_inference_steps;
        check_step_count(n, n_train)?;
        let timesteps: Vec<i64> = match self.config.timestep_spacing {
            // np.linspace(0, T - 1, n).round()[::-1]
            TimestepSpacing::Linspace => numpy_linspace(0.0, (n_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|t| t.round_ties_even() as i64)
                .collect(),
            // (np.arange(0, n) * (T // n)).round()[::-1] + steps_offset
            TimestepSpacing::Leading => {
                let ratio = n_train / n;
                (0..n).rev().map(|i| (i * ratio + self.config.steps_offset) as i64).collect()
            }
            // np.round(np.arange(T, 0, -T / n)) - 1; steps_offset is not applied.
            TimestepSpacing::Trailing => {
                let ratio = n_train as f64 / n as f64;
                numpy_arange(n_train as f64, 0.0, -ratio).into_iter().map(|t| t.round_ties_even() as i64 - 1).collect()
            }
        };
        check_timesteps(n, n_train, &timesteps, self.config.steps_offset)?;
        self.num_inference_steps = Some(n);
        self.timesteps = timesteps;
        Ok(())
    }

    /// The timesteps an SDEdit run (`VideoToVideoSDPipeline`) denoises for `strength` in [0, 1]: the
    /// last `min(int(n·strength), n)` of [`DDIMScheduler::timesteps`]. Its first entry is the
    /// timestep the initial latents are noised to.
    ///
    /// # Panics
    /// If `set_timesteps` has not been called.
    pub fn get_timesteps(&self, strength: f64) -> Vec<i64> {
        let n = self.num_inference_steps.expect("DDIMScheduler::set_timesteps must run before get_timesteps");
        // Python's int() truncates; a negative product saturates to 0 here and leaves the same
        // (empty) slice as diffusers' t_start > n.
        let init_timestep = ((n as f64 * strength) as usize).min(n);
        let t_start = n - init_timestep;
        self.timesteps.get(t_start * Self::ORDER..).unwrap_or_default().to_vec()
    }

    /// A refusal, instead of the panic of [`DDIMScheduler::step_coefficients`], for a `t` that
    /// is not a training timestep or a scheduler without timesteps.
    fn check_timestep(&self, t: i64) -> Result<()> {
        if self.num_inference_steps.is_none() {
            return Err(Error::request("steps", "set the number of inference steps before stepping"));
        }
        if usize::try_from(t).map_or(true, |i| i >= self.alphas_cumprod.len()) {
            return Err(Error::request(
                "timestep",
                format!("timestep {t} is outside 0..{}", self.alphas_cumprod.len()),
            ));
        }
        Ok(())
    }

    fn alpha_prod(&self, t: i64) -> f64 {
        usize::try_from(t)
            .ok()
            .and_then(|i| self.alphas_cumprod.get(i))
            .copied()
            .unwrap_or_else(|| panic!("timestep {t} is outside 0..{}", self.alphas_cumprod.len()))
    }

    /// `(c_sample, c_model)` with `prev_sample = c_sample·sample + c_model·model_output`: DDIM
    /// formula (12) with eta = 0, i.e. `sqrt(ᾱ_prev)·x̂₀ + sqrt(1 − ᾱ_prev)·ε̂` with x̂₀ and ε̂ linear in
    /// `sample` and `model_output`.
    ///
    /// # Panics
    /// If `set_timesteps` has not been called, or `t` is not a training timestep.
    pub fn step_coefficients(&self, t: i64) -> (f64, f64) {
        let n = self.num_inference_steps.expect("DDIMScheduler::set_timesteps must run before step");
        // 1. previous timestep. diffusers subtracts T // n whatever the spacing, so with "trailing"
        //    or "linspace" it need not be the next entry of `timesteps`.
        let prev_timestep = t - (self.config.num_train_timesteps / n) as i64;
        // 2. alphas, betas
        let alpha_prod_t = self.alpha_prod(t);
        let alpha_prod_t_prev =
            if prev_timestep >= 0 { self.alpha_prod(prev_timestep) } else { self.final_alpha_cumprod };
        let (sqrt_a, sqrt_b) = (alpha_prod_t.sqrt(), (1.0 - alpha_prod_t).sqrt());
        let (sqrt_a_prev, sqrt_b_prev) = (alpha_prod_t_prev.sqrt(), (1.0 - alpha_prod_t_prev).sqrt());
        // 3. x̂₀ = p·sample + q·model_output and ε̂ = r·sample + s·model_output
        let ((p, q), (r, s)) = match self.config.prediction_type {
            PredictionType::Epsilon => ((1.0 / sqrt_a, -sqrt_b / sqrt_a), (0.0, 1.0)),
            PredictionType::Sample => ((0.0, 1.0), (1.0 / sqrt_b, -sqrt_a / sqrt_b)),
            PredictionType::VPrediction => ((sqrt_a, -sqrt_b), (sqrt_b, sqrt_a)),
        };
        // 4. no clipping or thresholding (refused by the config check)
        // 5.–7. std_dev_t = eta·σ = 0: prev = sqrt(ᾱ_prev)·x̂₀ + sqrt(1 − ᾱ_prev)·ε̂
        (sqrt_a_prev * p + sqrt_b_prev * r, sqrt_a_prev * q + sqrt_b_prev * s)
    }

    /// `(sqrt(ᾱ_t), sqrt(1 − ᾱ_t))`: `noisy = a·original + b·noise`.
    ///
    /// # Panics
    /// If `t` is not a training timestep.
    pub fn add_noise_coefficients(&self, t: i64) -> (f64, f64) {
        let alpha_prod = self.alpha_prod(t);
        (alpha_prod.sqrt(), (1.0 - alpha_prod).sqrt())
    }
}

impl<S: Sample> Scheduler<S> for DDIMScheduler {
    fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    fn step(&mut self, model_output: S, t: i64, sample: S) -> Result<S> {
        self.check_timestep(t)?;
        let (c_sample, c_model) = self.step_coefficients(t);
        Ok(S::combine(vec![(c_sample, sample), (c_model, model_output)]))
    }

    fn add_noise(&self, original: S, noise: S, t: i64) -> Result<S> {
        self.check_timestep(t)?;
        let (a, b) = self.add_noise_coefficients(t);
        Ok(S::combine(vec![(a, original), (b, noise)]))
    }

    fn begin_at_strength(&mut self, strength: f64) -> Vec<i64> {
        self.get_timesteps(strength)
    }
}
