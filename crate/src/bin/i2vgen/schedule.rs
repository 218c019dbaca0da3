//! `i2vgen schedule`: one scheduler on its own, in f64, for parity checks against diffusers —
//! the config's `_class_name` picks it, `sample` is the initial sample and `model_outputs[i]` the
//! model output at step i; the output holds the timesteps and the sample after each `step`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use i2vgen::loading::config::parse;
use i2vgen::schedulers::SchedulerConfig;
use safetensors::Dtype;

use crate::tensors::{TensorFile, write_raw};

#[derive(clap::Args)]
pub struct Args {
    /// A `scheduler_config.json` (DDIMScheduler, DPMSolverMultistepScheduler or
    /// UniPCMultistepScheduler).
    #[arg(long)]
    config: PathBuf,
    /// Inference steps (`set_timesteps`).
    #[arg(long)]
    steps: usize,
    /// safetensors with `sample` (any shape) and `model_outputs` [N, ...that shape], f64 or f32.
    #[arg(long)]
    inputs: PathBuf,
    /// Where to write `timesteps` [N] (int64) and `prev_samples` [N, ...] (f64).
    #[arg(long)]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read the scheduler config {}", args.config.display()))?;
    let parsed = parse::<SchedulerConfig>(&text).with_context(|| args.config.display().to_string())?;
    if !parsed.unknown_keys.is_empty() {
        eprintln!("note: {}: ignoring unknown config keys {:?}", args.config.display(), parsed.unknown_keys);
    }
    let mut scheduler = parsed.config.build::<Vec<f64>>(args.steps)?;
    let inputs = TensorFile::read(&args.inputs)?;
    let (shape, mut sample) = inputs.f64s("sample")?;
    let (outputs_shape, outputs) = inputs.f64s("model_outputs")?;
    let timesteps = scheduler.timesteps().to_vec();
    if outputs_shape.len() != shape.len() + 1 || outputs_shape[1..] != shape[..] || outputs_shape[0] < timesteps.len() {
        bail!(
            "model_outputs has shape {outputs_shape:?}; expected [{}, {}] (one output per timestep, each shaped like \
             sample)",
            timesteps.len(),
            shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    let len = sample.len();
    let mut chain = Vec::with_capacity(timesteps.len() * len);
    for (i, &t) in timesteps.iter().enumerate() {
        sample = scheduler.step(outputs[i * len..(i + 1) * len].to_vec(), t, sample)?;
        chain.extend_from_slice(&sample);
    }
    let mut chain_shape = vec![timesteps.len()];
    chain_shape.extend(&shape);
    write_raw(
        &args.output,
        vec![
            ("timesteps", Dtype::I64, vec![timesteps.len()], timesteps.iter().flat_map(|t| t.to_le_bytes()).collect()),
            ("prev_samples", Dtype::F64, chain_shape, chain.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ],
    )?;
    eprintln!(
        "{}: {} steps of shape {shape:?} written to {}",
        parsed.config.class_name(),
        timesteps.len(),
        args.output.display()
    );
    Ok(())
}
