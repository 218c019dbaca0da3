//! The sampling options `generate` and `bench` share: a preset, and each knob on its own.

use i2vgen::pipelines::sampling::{Preset, Sampling, SchedulerKind};
use i2vgen::schedulers::scheduling_utils::TimestepSpacing;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PresetArg {
    /// DDIM as shipped (50 leading steps), guidance at every step: diffusers' defaults.
    Reference,
    /// DPM-Solver++ 2M, 25 trailing steps.
    Balanced,
    /// DPM-Solver++ 2M, 15 trailing steps, guidance until 0.5, cache interval 3.
    Fast,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SchedulerArg {
    Ddim,
    #[value(name = "dpmsolver++")]
    DpmSolver,
    Unipc,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SpacingArg {
    Leading,
    Trailing,
    Linspace,
}

#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Steps and sampling knobs in one name; the options below override single knobs.
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Denoising steps (default: the preset's, else 50).
    #[arg(long)]
    pub steps: Option<usize>,
    /// The scheduler (default: the preset's, else the model's scheduler_config.json).
    #[arg(long, value_enum)]
    pub scheduler: Option<SchedulerArg>,
    /// Timestep spacing (default: the preset's, else the scheduler config's).
    #[arg(long, value_enum)]
    pub spacing: Option<SpacingArg>,
    /// Run both guidance branches only in the first ceil(f·N) steps, f in (0, 1].
    #[arg(long)]
    pub guidance_until: Option<f64>,
    /// Run the whole UNet every n-th step; the others reuse its deep features (1: every step).
    #[arg(long)]
    pub cache_interval: Option<usize>,
}

impl PresetArg {
    pub fn preset(self) -> Preset {
        match self {
            Self::Reference => Preset::Reference,
            Self::Balanced => Preset::Balanced,
            Self::Fast => Preset::Fast,
        }
    }
}

impl SamplingArgs {
    /// The step count and knobs these options ask for.
    pub fn resolve(&self) -> (usize, Sampling) {
        let preset = self.preset.map_or(Preset::Reference, PresetArg::preset);
        let mut sampling = preset.sampling();
        if let Some(s) = self.scheduler {
            sampling.scheduler = Some(match s {
                SchedulerArg::Ddim => SchedulerKind::Ddim,
                SchedulerArg::DpmSolver => SchedulerKind::DpmSolverMultistep,
                SchedulerArg::Unipc => SchedulerKind::UniPCMultistep,
            });
        }
        if let Some(s) = self.spacing {
            sampling.spacing = Some(match s {
                SpacingArg::Leading => TimestepSpacing::Leading,
                SpacingArg::Trailing => TimestepSpacing::Trailing,
                SpacingArg::Linspace => TimestepSpacing::Linspace,
            });
        }
        if let Some(f) = self.guidance_until {
            sampling.guidance_until = f;
        }
        if let Some(n) = self.cache_interval {
            sampling.cache_interval = n;
        }
        (self.steps.unwrap_or(preset.num_inference_steps()), sampling)
    }
}
