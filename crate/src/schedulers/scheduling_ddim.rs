//! diffusers `schedulers/scheduling_ddim.py`: `DDIMScheduler` (deterministic, eta = 0), plus
//! `get_timesteps` of `VideoToVideoSDPipeline` (SDEdit strength) from
//! `pipelines/deprecated/text_to_video_synthesis/pipeline_text_to_video_synth_img2img.py`.
//!
//! The noise schedule is rebuilt with diffusers' own arithmetic: betas and `alphas_cumprod` are
//! float32 tensors there, so they are float32 here, operation by operation, and widened to f64
//! afterwards. A step is then two f64 coefficients, `prev_sample = c_sample·sample +
//! c_model·model_output`, applied to tensors as scalars.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::loading::config::{ConfigFile, expect_class_name};
use crate::{Error, Result};

/// `beta_schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum BetaSchedule {
    #[serde(rename = "linear")]
    Linear,
    /// Linear in sqrt(beta) (Stable Diffusion's schedule).
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// The Glide cosine schedule (`betas_for_alpha_bar`).
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// `prediction_type`: what the network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum PredictionType {
    #[serde(rename = "epsilon")]
    Epsilon,
    #[serde(rename = "sample")]
    Sample,
    #[serde(rename = "v_prediction")]
    VPrediction,
}

/// `timestep_spacing` (Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum TimestepSpacing {
    #[serde(rename = "leading")]
    Leading,
    #[serde(rename = "trailing")]
    Trailing,
    #[serde(rename = "linspace")]
    Linspace,
}

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
}

impl DDIMSchedulerConfig {
    /// Options that would change the numbers but are not ported are refused, not ignored.
    fn validate(&self) -> Result<()> {
        let bad = |message: &str| Err(Error::Config { file: Self::FILE.into(), message: message.into() });
        if self.trained_betas.is_some() {
            return bad("trained_betas is not supported; set it to null and describe the schedule with beta_schedule");
        }
        if self.clip_sample {
            return bad("clip_sample = true is not supported (latent diffusion models use false)");
        }
        if self.thresholding {
            return bad("thresholding = true is not supported (latent diffusion models use false)");
        }
        if self.num_train_timesteps < 2 {
            return bad("num_train_timesteps must be at least 2");
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
        let n = config.num_train_timesteps;
        let mut betas = match config.beta_schedule {
            BetaSchedule::Linear => torch_linspace_f32(config.beta_start, config.beta_end, n),
            BetaSchedule::ScaledLinear => torch_linspace_f32(config.beta_start.sqrt(), config.beta_end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(n, 0.999),
        };
        if config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let alphas_cumprod = torch_cumprod_f32(&alphas);
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
        if num_inference_steps == 0 || num_inference_steps > n_train {
            return Err(Error::request(
                "steps",
                format!(
                    "the number of inference steps must be between 1 and {n_train} (the scheduler's \
                 num_train_timesteps), not {num_inference_steps}"
                ),
            ));
        }
        let n = num_inference_steps;
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
        // diffusers would fail later, indexing alphas_cumprod (e.g. leading with steps_offset 1 and
        // n == num_train_timesteps reaches t = T).
        if let Some(&t) = timesteps.iter().find(|&&t| t < 0 || t as usize >= n_train) {
            return Err(Error::request(
                "steps",
                format!(
                    "{n} inference steps with steps_offset {} reach timestep {t}, outside 0..{n_train}; use fewer steps",
                    self.config.steps_offset
                ),
            ));
        }
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

    /// One denoising step from `t` (`DDIMScheduler.step(..., eta=0).prev_sample`).
    ///
    /// # Shapes
    /// `model_output`, `sample` and the result share one shape, e.g. `[batch, C, frames, H, W]`.
    ///
    /// # Panics
    /// As [`DDIMScheduler::step_coefficients`].
    pub fn step<const D: usize>(&self, model_output: Tensor<D>, t: i64, sample: Tensor<D>) -> Tensor<D> {
        let (c_sample, c_model) = self.step_coefficients(t);
        sample.mul_scalar(c_sample as f32) + model_output.mul_scalar(c_model as f32)
    }

    /// `(sqrt(ᾱ_t), sqrt(1 − ᾱ_t))`: `noisy = a·original + b·noise`.
    ///
    /// # Panics
    /// If `t` is not a training timestep.
    pub fn add_noise_coefficients(&self, t: i64) -> (f64, f64) {
        let alpha_prod = self.alpha_prod(t);
        (alpha_prod.sqrt(), (1.0 - alpha_prod).sqrt())
    }

    /// Forward diffusion to timestep `t` (`add_noise` with one timestep for the whole batch).
    ///
    /// # Shapes
    /// `original`, `noise` and the result share one shape.
    ///
    /// # Panics
    /// If `t` is not a training timestep.
    pub fn add_noise<const D: usize>(&self, original: Tensor<D>, noise: Tensor<D>, t: i64) -> Tensor<D> {
        let (a, b) = self.add_noise_coefficients(t);
        original.mul_scalar(a as f32) + noise.mul_scalar(b as f32)
    }
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU, bit for bit: the scalars are
/// rounded to f32, the step is an f32 division, and values are computed from `start` for the first
/// half and from `end` for the second (fused multiply-add in ATen's kernel).
fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| if i < halfway { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - 1 - i) as f32, end) })
        .collect()
}

/// `torch.cumprod` of a float32 tensor on the CPU: the running product is kept in f64 and each
/// output rounded to f32.
fn torch_cumprod_f32(values: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= f64::from(v);
            acc as f32
        })
        .collect()
}

/// `betas_for_alpha_bar(n, max_beta, "cosine")`: computed in Python floats, stored as float32.
fn betas_for_alpha_bar(num_diffusion_timesteps: usize, max_beta: f64) -> Vec<f32> {
    // Same operation order as the Python: ((t + 0.008) / 1.008 * pi) / 2, then ** 2.
    let alpha_bar = |t: f64| {
        let c = ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
        c * c
    };
    let n = num_diffusion_timesteps as f64;
    (0..num_diffusion_timesteps)
        .map(|i| {
            let (t1, t2) = (i as f64 / n, (i + 1) as f64 / n);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// `rescale_zero_terminal_snr` (arXiv 2305.08891, Algorithm 1) in float32 like diffusers.
///
/// Quirk: this uses IEEE (correctly rounded) sqrt. torch's CPU float32 `sqrt` goes through MKL's
/// `vmsSqrt` on some CPUs, an approximate rsqrt plus one refinement that is off by one ulp for ~20%
/// of inputs; there diffusers' `alphas_cumprod` differs from ours by up to ~11 float32 ulps
/// (4e-7). The fixtures are made with correctly rounded sqrt, so they match bit for bit.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    // Convert betas to alphas_bar_sqrt
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut alphas_bar_sqrt: Vec<f32> = torch_cumprod_f32(&alphas).into_iter().map(f32::sqrt).collect();
    // Store old values.
    let sqrt_0 = alphas_bar_sqrt[0];
    let sqrt_t = alphas_bar_sqrt[alphas_bar_sqrt.len() - 1];
    // Shift so the last timestep is zero, then scale so the first timestep is back to the old value.
    let scale = sqrt_0 / (sqrt_0 - sqrt_t);
    for s in &mut alphas_bar_sqrt {
        *s = (*s - sqrt_t) * scale;
    }
    // Convert alphas_bar_sqrt to betas: revert sqrt, revert cumprod.
    let alphas_bar: Vec<f32> = alphas_bar_sqrt.iter().map(|s| s * s).collect();
    std::iter::once(alphas_bar[0]).chain(alphas_bar.windows(2).map(|w| w[1] / w[0])).map(|alpha| 1.0 - alpha).collect()
}

/// `np.linspace(start, stop, num)` (endpoint included): `i·step + start`, the last value set to `stop`.
fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    values[num - 1] = stop;
    values
}

/// `np.arange(start, stop, step)` for floats: `ceil((stop − start) / step)` values; the second is
/// `start + step` and the rest `start + i·delta` with `delta = (start + step) − start`, as numpy fills.
fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let second = start + step;
    let delta = second - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}
