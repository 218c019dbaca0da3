//! What diffusers' schedulers share (`scheduling_utils.py` and the functions each scheduler file
//! copies): the noise schedule in diffusers' float32 arithmetic, the timestep spacings, and the
//! [`Sample`] algebra a step is written in.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// What a scheduler steps: a burn tensor in a pipeline, or plain f64 values when a chain is
/// checked against diffusers (`i2vgen schedule`). Every update is a linear combination of samples
/// and model outputs with f64 coefficients.
pub trait Sample: Clone {
    /// `Σ cᵢ·xᵢ`, summed left to right. `terms` is not empty.
    fn combine(terms: Vec<(f64, Self)>) -> Self;
}

impl<const D: usize> Sample for Tensor<D> {
    fn combine(terms: Vec<(f64, Self)>) -> Self {
        let mut terms = terms.into_iter().map(|(c, x)| x.mul_scalar(c as f32));
        let first = terms.next().expect("at least one term");
        terms.fold(first, |sum, x| sum + x)
    }
}

impl Sample for Vec<f64> {
    fn combine(terms: Vec<(f64, Self)>) -> Self {
        let mut sum = vec![0.0; terms[0].1.len()];
        for (c, x) in terms {
            assert_eq!(x.len(), sum.len(), "samples of one chain share a shape");
            for (s, v) in sum.iter_mut().zip(x) {
                *s += c * v;
            }
        }
        sum
    }
}

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

/// `final_sigmas_type` of the multistep solvers: the noise level after the last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum FinalSigmasType {
    /// Zero: the last step lands on the data prediction.
    #[serde(rename = "zero")]
    Zero,
    /// The first training timestep's sigma.
    #[serde(rename = "sigma_min")]
    SigmaMin,
}

/// The noise-schedule keys DPM-Solver++ and UniPC share (read flattened from their configs),
/// with their common defaults.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct MultistepNoiseSchedule {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub rescale_betas_zero_snr: bool,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub final_sigmas_type: FinalSigmasType,
}

impl Default for MultistepNoiseSchedule {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            rescale_betas_zero_snr: false,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigmas_type: FinalSigmasType::Zero,
        }
    }
}

impl MultistepNoiseSchedule {
    /// `__init__` then `set_timesteps(n)`: the timesteps and the sigmas (one per timestep, then
    /// the final one). Under zero-SNR rescaling the last ᾱ is 2⁻²⁴, close to 0 without being 0,
    /// so the first sigma is finite (diffusers' choice).
    pub fn timesteps_and_sigmas(&self, n: usize) -> crate::Result<(Vec<i64>, Vec<f64>)> {
        super::check_step_count(n, self.num_train_timesteps)?;
        let mut alphas_cumprod = alphas_cumprod_f32(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.beta_schedule,
            self.rescale_betas_zero_snr,
        );
        if self.rescale_betas_zero_snr {
            *alphas_cumprod.last_mut().expect("at least two timesteps") = 2f32.powi(-24);
        }
        let timesteps = multistep_timesteps(self.num_train_timesteps, n, self.timestep_spacing, self.steps_offset);
        super::check_timesteps(n, self.num_train_timesteps, &timesteps, self.steps_offset)?;
        let sigmas = multistep_sigmas(&alphas_cumprod, &timesteps, self.final_sigmas_type);
        Ok((timesteps, sigmas))
    }
}

/// `convert_model_output` of the data-predicting multistep solvers: x̂₀ as `(a, b)` with
/// `x̂₀ = a·sample + b·model_output` at noise level `sigma`.
pub fn data_prediction(prediction_type: PredictionType, sigma: f64) -> (f64, f64) {
    let (alpha_t, sigma_t, _) = alpha_sigma_lambda(sigma);
    match prediction_type {
        PredictionType::Epsilon => (1.0 / alpha_t, -sigma_t / alpha_t),
        PredictionType::Sample => (0.0, 1.0),
        PredictionType::VPrediction => (alpha_t, -sigma_t),
    }
}

/// The float32 `alphas_cumprod` of diffusers' schedulers (`__init__`): betas from the schedule,
/// optionally rescaled to zero terminal SNR, then the cumulative product of `1 − β`.
pub fn alphas_cumprod_f32(
    num_train_timesteps: usize,
    beta_start: f64,
    beta_end: f64,
    beta_schedule: BetaSchedule,
    rescale_betas_zero_snr: bool,
) -> Vec<f32> {
    let n = num_train_timesteps;
    let mut betas = match beta_schedule {
        BetaSchedule::Linear => torch_linspace_f32(beta_start, beta_end, n),
        BetaSchedule::ScaledLinear => {
            torch_linspace_f32(beta_start.sqrt(), beta_end.sqrt(), n).into_iter().map(|b| b * b).collect()
        }
        BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(n, 0.999),
    };
    if rescale_betas_zero_snr {
        betas = rescale_zero_terminal_snr(&betas);
    }
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    torch_cumprod_f32(&alphas)
}

/// The timesteps of the multistep solvers' `set_timesteps` (DPM-Solver++ and UniPC share it):
/// unlike DDIM they space `n + 1` points and drop the last, so "leading" uses `T // (n + 1)`.
pub fn multistep_timesteps(
    num_train_timesteps: usize,
    n: usize,
    spacing: TimestepSpacing,
    steps_offset: usize,
) -> Vec<i64> {
    let t = num_train_timesteps;
    match spacing {
        // np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
        TimestepSpacing::Linspace => numpy_linspace(0.0, (t - 1) as f64, n + 1)
            .into_iter()
            .skip(1)
            .rev()
            .map(|x| x.round_ties_even() as i64)
            .collect(),
        // (np.arange(0, n + 1) * (T // (n + 1))).round()[::-1][:-1] + steps_offset
        TimestepSpacing::Leading => {
            let ratio = t / (n + 1);
            (1..=n).rev().map(|i| (i * ratio + steps_offset) as i64).collect()
        }
        // np.arange(T, 0, -T / n).round() - 1
        TimestepSpacing::Trailing => numpy_arange(t as f64, 0.0, -(t as f64 / n as f64))
            .into_iter()
            .map(|x| x.round_ties_even() as i64 - 1)
            .collect(),
    }
}

/// The multistep solvers' `sigmas` after `set_timesteps`: `sqrt((1 − ᾱ)/ᾱ)` in float32 at each
/// timestep, then the final sigma; float32 values widened to f64.
pub fn multistep_sigmas(alphas_cumprod: &[f32], timesteps: &[i64], last: FinalSigmasType) -> Vec<f64> {
    let sigma = |a: f32| ((1.0 - a) / a).sqrt();
    let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| f64::from(sigma(alphas_cumprod[t as usize]))).collect();
    sigmas.push(match last {
        FinalSigmasType::Zero => 0.0,
        FinalSigmasType::SigmaMin => f64::from(sigma(alphas_cumprod[0])),
    });
    sigmas
}

/// `_sigma_to_alpha_sigma_t`: `(α_t, σ_t)` of a VP schedule from its sigma, and the half
/// log-SNR `λ = log α − log σ` (+∞ at sigma 0).
pub fn alpha_sigma_lambda(sigma: f64) -> (f64, f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    (alpha, sigma_t, alpha.ln() - sigma_t.ln())
}

/// `index_for_timestep`: where a step starts in the schedule (the second match if the timestep
/// repeats, the last index if it is absent).
pub fn index_for_timestep(timesteps: &[i64], t: i64) -> usize {
    let matches: Vec<usize> = timesteps.iter().enumerate().filter(|(_, s)| **s == t).map(|(i, _)| i).collect();
    match matches.as_slice() {
        [] => timesteps.len() - 1,
        [only] => *only,
        [_, second, ..] => *second,
    }
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU, bit for bit: the scalars are
/// rounded to f32, the step is an f32 division, and values are computed from `start` for the first
/// half and from `end` for the second (fused multiply-add in ATen's kernel).
pub fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
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
pub fn torch_cumprod_f32(values: &[f32]) -> Vec<f32> {
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
pub fn betas_for_alpha_bar(num_diffusion_timesteps: usize, max_beta: f64) -> Vec<f32> {
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
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
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
pub fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
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
pub fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
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
