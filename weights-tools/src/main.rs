//! `weights-tools`: look at, convert and verify I2VGen-XL weights for the browser.

mod inspect;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weights-tools", version, about = "Inspect and convert I2VGen-XL weights")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Components, parameter counts, bytes by dtype and the largest tensor of a diffusers folder
    /// (or of one component folder, or of a single .safetensors file). Reads headers only.
    Inspect { path: PathBuf },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Inspect { path } => inspect::run(&path),
    }
}
