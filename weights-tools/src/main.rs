//! `weights-tools`: look at, convert and verify I2VGen-XL weights for the browser.

mod convert;
mod digest;
mod inspect;
mod original;
mod random;
mod verify;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use i2vgen::loading::manifest::StorageDType;

#[derive(Parser)]
#[command(name = "weights-tools", version, about = "Inspect, convert and verify I2VGen-XL weights")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Components, parameter counts, bytes by dtype and the largest tensor of a diffusers folder
    /// (or of one component folder, or of a single .safetensors file). Reads headers only.
    Inspect { path: PathBuf },
    /// A diffusers pipeline folder (or one component folder) → configs, safetensors shards and
    /// manifest.json, for the browser and for `i2vgen --model`.
    Convert {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
        /// f32, f16, or q8 (int8 Linear/Conv weights with per-output-channel scales, the rest f16).
        #[arg(long, default_value = "f16")]
        dtype: StorageDType,
        /// Largest shard in MiB (a bigger single tensor gets a shard of its own).
        #[arg(long, default_value_t = 64)]
        shard_mb: u64,
    },
    /// An original MS-Vid2Vid-XL / VGen / ModelScope UNet checkpoint (`.pth` torch pickle or
    /// `.safetensors`, bare or inside a full `model.diffusion_model.` checkpoint) → a diffusers
    /// `UNet3DConditionModel` folder (config.json + diffusion_pytorch_model.safetensors), its
    /// keys and shapes checked against the network the config builds.
    ConvertOriginal {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
        /// The UNet3DConditionModel config.json; default: the real MS-Vid2Vid-XL / zeroscope_v2_XL one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A diffusers pipeline folder with seeded random weights (uniform in ±1/√fan_in) at the
    /// configs' sizes, plus the configs and the tokenizer: the real-size path without a download.
    /// Each weight file is streamed, so memory stays small whatever the model's size.
    Random {
        /// `real` (ali-vilab/i2vgen-xl), `refiner` (the cascade's VideoToVideoSD stage), or a
        /// pipeline folder whose configs and tokenizer to take (e.g. tests/fixtures/tiny-i2vgen).
        #[arg(long)]
        config: String,
        /// A new or empty folder.
        #[arg(long)]
        to: PathBuf,
        #[arg(long, value_enum, default_value = "f16")]
        dtype: random::DType,
        /// The same seed writes the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Check a converted folder: sizes and sha256 of every shard and file, tensor entries
    /// against the shard headers.
    Verify { dir: PathBuf },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Inspect { path } => inspect::run(&path),
        Command::Convert { from, to, dtype, shard_mb } => convert::run(&from, &to, dtype, shard_mb),
        Command::ConvertOriginal { from, to, config } => original::run(&from, &to, config.as_deref()),
        Command::Random { config, to, dtype, seed } => random::run(&config, &to, dtype, seed),
        Command::Verify { dir } => verify::run(&dir),
    }
}
