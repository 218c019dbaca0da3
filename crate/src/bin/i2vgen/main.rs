//! `i2vgen`: the native command-line tool.

mod bench;
mod bench_count;
mod bench_pipeline;
mod compare;
mod devices;
mod forward;
mod generate;
mod info;
mod inputs;
mod kbench;
mod model;
mod plan;
mod progress;
mod refine;
mod sampling;
mod schedule;
mod stage;
mod tensors;
mod video;
mod webm;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::devices::{Backend, DType};

#[derive(Parser)]
#[command(name = "i2vgen", version, about = "I2VGen-XL image-to-video on burn (CPU or wgpu)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the backends this machine can reach and run the device check on each.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run one component of a diffusers pipeline folder on named tensors (parity checks).
    Forward {
        /// The diffusers pipeline folder (model_index.json, unet/, vae/, ...).
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_enum)]
        component: forward::Component,
        /// A safetensors file with the component's input tensors.
        #[arg(long)]
        inputs: PathBuf,
        /// Where to write the output tensors (safetensors, f32).
        #[arg(long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "wgpu")]
        backend: Backend,
    },
    /// Generate a video from an image and a prompt (I2VGen-XL).
    Generate(generate::Args),
    /// Refine a video with a brief prompt (VideoToVideoSD with a UNet3DConditionModel).
    Refine(refine::Args),
    /// Time the real-size UNet (random weights) over warm denoising steps; print ms/step,
    /// analytic FLOPs, GFLOP/s and device memory.
    Bench(bench::Args),
    /// Time each of our kernels against its burn-op twin at UNet shapes (interleaved, best of
    /// N), normalised to the adapter's measured FMA peak and copy bandwidth.
    Kbench(kbench::Args),
    /// Compare two videos frame by frame: PSNR (dB) and SSIM per frame, their means, and a
    /// temporal-difference score (to judge a faster sampler against the reference one).
    Compare(compare::Args),
    /// The GPU memory plan of a run, per stage, for the real configs or a model folder's (no GPU,
    /// no weights): peak bytes with weights, the largest tensor, and the choices that fit.
    Plan(plan::Args),
    /// Run a scheduler on its own in f64 (parity checks against diffusers): timesteps and the
    /// sample after each step, from an initial sample and one model output per step.
    Schedule(schedule::Args),
    /// Print the 77 token ids of a prompt as a JSON array.
    Tokenize {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
    },
}

/// Where a generating command runs and what it writes.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Seed for the random draws not given by --noise.
    #[arg(long, default_value_t = i2vgen::pipelines::defaults::SEED)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "wgpu")]
    pub backend: Backend,
    /// f16 halves the GPU memory and bandwidth (wgpu on an adapter with `shader-f16`); packed-f16
    /// halves the weights' memory on any GPU (f16 weights, f32 compute).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DType,
    /// `.webm` (AV1), `.mp4` (H.264), `.gif`, or `.safetensors` (frames [F,H,W,3] in [0,1]).
    #[arg(long)]
    pub output: PathBuf,
}

fn tokenize(model: &std::path::Path, prompt: &str) -> Result<()> {
    let tokenizer = i2vgen::loading::folder::tokenizer(model::open(model)?.as_mut())?;
    println!("{}", serde_json::to_string(&tokenizer.encode(prompt))?);
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { json } => info::run(json),
        Command::Forward { model, component, inputs, output, backend } => {
            forward::run(&model, component, &inputs, &output, &devices::device(backend, DType::F32)?)
        }
        Command::Tokenize { model, prompt } => tokenize(&model, &prompt),
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Kbench(args) => kbench::run(args),
        Command::Refine(args) => refine::run(args),
        Command::Schedule(args) => schedule::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Compare(args) => compare::run(args),
    }
}

/// A command-line mistake in one line: clap's first paragraph (what is wrong, and the possible
/// values where it lists them), then where to read more. Help and version print as usual.
fn parse_args() -> Cli {
    Cli::try_parse().unwrap_or_else(|err| {
        use clap::error::ErrorKind::{DisplayHelp, DisplayHelpOnMissingArgumentOrSubcommand, DisplayVersion};
        if matches!(err.kind(), DisplayHelp | DisplayHelpOnMissingArgumentOrSubcommand | DisplayVersion) {
            err.exit();
        }
        let rendered = err.render().to_string();
        let first_paragraph: Vec<&str> =
            rendered.lines().take_while(|line| !line.trim().is_empty()).map(str::trim).collect();
        let message = first_paragraph.join(" ");
        eprintln!("{} (see i2vgen --help)", message.trim_end_matches(':'));
        std::process::exit(err.exit_code());
    })
}

fn main() {
    if let Err(err) = run(parse_args()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
