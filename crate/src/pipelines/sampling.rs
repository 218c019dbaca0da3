//! How a run samples: which scheduler and spacing, for how many steps guidance runs both
//! branches, and how often the whole UNet runs — and the presets that bundle them.

use serde::{Deserialize, Serialize};

use crate::schedulers::scheduling_utils::TimestepSpacing;
use crate::schedulers::{SCHEDULER_CLASSES, SchedulerConfig};
use crate::{Error, Result};

/// A scheduler class the pipelines can switch to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum SchedulerKind {
    #[serde(rename = "ddim")]
    Ddim,
    /// DPM-Solver++ (2M with the default order 2).
    #[serde(rename = "dpmsolver++")]
    DpmSolverMultistep,
    #[serde(rename = "unipc")]
    UniPCMultistep,
}

impl SchedulerKind {
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddim => SCHEDULER_CLASSES[0],
            Self::DpmSolverMultistep => SCHEDULER_CLASSES[1],
            Self::UniPCMultistep => SCHEDULER_CLASSES[2],
        }
    }
}

/// The sampling knobs of a request. [`Sampling::MODEL`] is what diffusers does.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sampling {
    /// `None`: the model's own `scheduler/scheduler_config.json`.
    pub scheduler: Option<SchedulerKind>,
    /// `None`: the scheduler config's own `timestep_spacing`.
    pub spacing: Option<TimestepSpacing>,
    /// In (0, 1]: steps `i < ceil(guidance_until·N)` run both guidance branches, later steps only
    /// the conditional one. 1 is classifier-free guidance at every step.
    pub guidance_until: f64,
    /// Every `cache_interval`-th step runs the whole UNet; the others reuse its deep features
    /// (DeepCache). 1 runs the whole UNet at every step.
    pub cache_interval: usize,
}

impl Sampling {
    /// The model's scheduler as shipped, guidance at every step, the whole UNet at every step.
    pub const MODEL: Self = Self { scheduler: None, spacing: None, guidance_until: 1.0, cache_interval: 1 };

    pub fn validate(&self) -> Result<()> {
        if !(self.guidance_until > 0.0 && self.guidance_until <= 1.0) {
            return Err(Error::request(
                "guidance_until",
                format!("guidance_until must be in (0, 1], got {}", self.guidance_until),
            ));
        }
        if self.cache_interval == 0 {
            return Err(Error::request("cache_interval", "cache_interval must be at least 1 (1 = no caching)"));
        }
        Ok(())
    }

    /// Steps of `n` that run both guidance branches: `ceil(guidance_until·n)`.
    pub fn guided_steps(&self, n: usize) -> usize {
        ((self.guidance_until * n as f64).ceil() as usize).min(n)
    }

    /// What step `i` of `n` runs: which conditioning rows ([uncond, cond] with classifier-free
    /// guidance, else the one row 0) and whether the whole UNet runs.
    pub fn plan(&self, i: usize, n: usize, classifier_free_guidance: bool) -> StepPlan {
        let rows = match (classifier_free_guidance, i < self.guided_steps(n)) {
            (false, _) => 0..1,
            (true, true) => 0..2,
            (true, false) => 1..2,
        };
        StepPlan { rows, full: self.cache_interval <= 1 || i.is_multiple_of(self.cache_interval) }
    }

    /// The cost of a run of `n` steps in whole UNet evaluations at batch 1: each step's rows,
    /// a full step costing 1 per row and a shallow one `shallow_fraction` (its FLOPs over a
    /// full evaluation's, from `diagnostics::flops`). The reference run costs `2n`.
    pub fn unet_equivalents(&self, n: usize, classifier_free_guidance: bool, shallow_fraction: f64) -> f64 {
        (0..n)
            .map(|i| {
                let plan = self.plan(i, n, classifier_free_guidance);
                plan.rows.len() as f64 * if plan.full { 1.0 } else { shallow_fraction }
            })
            .sum()
    }

    /// The model's scheduler config with this request's class and spacing.
    pub fn scheduler_config(&self, model: &SchedulerConfig) -> Result<SchedulerConfig> {
        let config = match self.scheduler {
            Some(kind) if kind.class_name() != model.class_name() => model.with_class(kind.class_name())?,
            _ => model.clone(),
        };
        Ok(match self.spacing {
            Some(spacing) => config.with_spacing(spacing),
            None => config,
        })
    }
}

/// One step of a run: see [`Sampling::plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepPlan {
    pub rows: std::ops::Range<usize>,
    pub full: bool,
}

/// Named bundles of steps and sampling knobs (`--preset`, the page's and widget's `quality`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// diffusers' defaults: the model's DDIM, 50 "leading" steps, guidance at every step.
    Reference,
    /// DPM-Solver++ 2M, 25 "trailing" steps.
    Balanced,
    /// DPM-Solver++ 2M, 15 "trailing" steps, guidance in the first half, the whole UNet every
    /// third step.
    Fast,
}

impl Preset {
    pub const ALL: [Self; 3] = [Self::Reference, Self::Balanced, Self::Fast];

    pub fn name(self) -> &'static str {
        match self {
            Self::Reference => "reference",
            Self::Balanced => "balanced",
            Self::Fast => "fast",
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| {
            Error::request("preset", format!("unknown preset {name:?}; use reference, balanced or fast"))
        })
    }

    pub const fn num_inference_steps(self) -> usize {
        match self {
            Self::Reference => 50,
            Self::Balanced => 25,
            Self::Fast => 15,
        }
    }

    pub const fn sampling(self) -> Sampling {
        match self {
            Self::Reference => Sampling::MODEL,
            Self::Balanced => Sampling {
                scheduler: Some(SchedulerKind::DpmSolverMultistep),
                spacing: Some(TimestepSpacing::Trailing),
                guidance_until: 1.0,
                cache_interval: 1,
            },
            Self::Fast => Sampling {
                scheduler: Some(SchedulerKind::DpmSolverMultistep),
                spacing: Some(TimestepSpacing::Trailing),
                guidance_until: 0.5,
                cache_interval: 3,
            },
        }
    }
}
