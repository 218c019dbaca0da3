//! `i2vgen bench --count-only`, and the counted half of a measured bench: dispatches, issued
//! FLOPs (with the matmul kernel's tile padding) and non-GEMM bytes of one guided step, from the
//! shapes and burn's launch rules (`diagnostics::kernels`), without a device.

use std::collections::BTreeMap;

use anyhow::Result;
use i2vgen::diagnostics::{flops, kernels};

use crate::bench::{Args, Config};
use crate::devices::DType;

/// WebGPU's default `minStorageBufferOffsetAlignment` and `minUniformBufferOffsetAlignment`:
/// cubecl's memory alignment in browsers.
pub const WEBGPU_ALIGNMENT: u64 = 256;

fn element_bytes(dtype: DType) -> u64 {
    if dtype == DType::F16 { 2 } else { 4 }
}

/// The counters of one guided step (batch 2) at the size of `args`, on a device whose memory
/// alignment is `alignment` bytes.
pub fn count(args: &Args, config: &Config, alignment: u64) -> kernels::Counts {
    kernels::guided_step(
        config.kind(),
        config.unet(),
        args.frames,
        args.height / 8,
        args.width / 8,
        element_bytes(args.dtype),
        alignment,
    )
}

fn flops(args: &Args, config: &Config) -> u64 {
    let (f, h, w) = (args.frames, args.height / 8, args.width / 8);
    match config.kind() {
        kernels::UNet::I2VGenXL => flops::i2vgen_xl_unet(config.unet(), 2, f, h, w),
        kernels::UNet::UNet3DCondition => flops::unet_3d_condition(config.unet(), 2, f, h, w),
    }
}

/// The JSON fields both kinds of run share.
pub fn report(args: &Args, name: &str, flops: u64, counted: &kernels::Counts) -> serde_json::Value {
    serde_json::json!({
        "unet": name,
        "backend": format!("{:?}", args.backend).to_lowercase(),
        "dtype": format!("{:?}", args.dtype).to_lowercase(),
        "frames": args.frames, "height": args.height, "width": args.width, "cfg_batch": 2,
        "flops_per_step": flops,
        "issued_flops_per_step": counted.issued_flops,
        "issued_over_analytic_flops": counted.issued_flops as f64 / flops as f64,
        "non_gemm_bytes_per_step": counted.non_gemm_bytes,
    })
}

/// Measured launches per kernel family next to the counted ones.
pub fn print_by_kernel(measured: &BTreeMap<String, u64>, counted: &kernels::Counts) {
    let mut families: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (name, &n) in measured {
        families.entry(kernels::family(name)).or_default().0 += n;
    }
    for (&family, &n) in &counted.by_kernel {
        families.entry(family).or_default().1 += n;
    }
    for (family, (m, c)) in families {
        println!("  {family:<13} {m:6} measured {c:6} counted{}", if m == c { "" } else { "  (differs)" });
    }
}

pub fn run(args: &Args, config: &Config) -> Result<()> {
    let name = match config.kind() {
        kernels::UNet::I2VGenXL => "I2VGenXLUNet",
        kernels::UNet::UNet3DCondition => "UNet3DConditionModel",
    };
    let flops = flops(args, config);
    let counted = count(args, config, args.alignment);
    println!(
        "{name} {:?}, {} frames at {}×{}, CFG batch 2, {:?}: counted, not run",
        config.unet().block_out_channels,
        args.frames,
        args.height,
        args.width,
        args.dtype
    );
    println!(
        "dispatches {}, {:.2} TFLOP analytic, {:.2} TFLOP issued ({:.2}×), {:.1} GB non-GEMM traffic",
        counted.dispatches,
        flops as f64 / 1e12,
        counted.issued_flops as f64 / 1e12,
        counted.issued_flops as f64 / flops as f64,
        counted.non_gemm_bytes as f64 / 1e9
    );
    for (family, n) in &counted.by_kernel {
        let bytes = counted.bytes_by_kernel.get(family).copied().unwrap_or(0);
        println!("  {family:<13} {n:6} dispatches {:10.1} GB", bytes as f64 / 1e9);
    }
    if args.json {
        let mut report = report(args, name, flops, &counted);
        if let Some(report) = report.as_object_mut() {
            report.insert("dispatches_per_step".into(), counted.dispatches.into());
            report.insert("adapter".into(), "none (counted)".into());
            // Neither is counted: peak memory is `i2vgen plan`'s figure.
            report.insert("ms_per_step".into(), serde_json::Value::Null);
            report.insert("peak_bytes".into(), serde_json::Value::Null);
        }
        println!("{report}");
    }
    Ok(())
}
