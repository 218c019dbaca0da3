//! `i2vgen info`: the backends this machine reaches, each with the device check.

use anyhow::{Context, Result};
use burn::tensor::Device;

struct BackendReport {
    backend: &'static str,
    adapter: String,
    detail: String,
    checksum: Option<f32>,
    error: Option<String>,
}

fn cpu_report() -> BackendReport {
    #[allow(deprecated)] // NdArray is our CPU reference backend.
    let device = Device::ndarray();
    BackendReport {
        backend: "cpu",
        adapter: "burn NdArray".into(),
        detail: String::new(),
        checksum: Some(i2vgen::diagnostics::device_check::checksum(&device).into_scalar::<f32>()),
        error: None,
    }
}

fn wgpu_report() -> BackendReport {
    match Device::wgpu_options().init_with_setup() {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            let limits = setup.device.limits();
            let f16 = setup.device.features().contains(burn::tensor::wgpu::wgpu::Features::SHADER_F16);
            BackendReport {
                backend: "wgpu",
                adapter: format!("{} ({:?}, {})", info.name, info.backend, info.driver),
                detail: format!(
                    "shader-f16: {}, maxBufferSize: {} MiB, maxStorageBufferBindingSize: {} MiB",
                    if f16 { "yes" } else { "no" },
                    limits.max_buffer_size >> 20,
                    limits.max_storage_buffer_binding_size >> 20
                ),
                checksum: Some(i2vgen::diagnostics::device_check::checksum(&device).into_scalar::<f32>()),
                error: None,
            }
        }
        Err(err) => BackendReport {
            backend: "wgpu",
            adapter: String::new(),
            detail: String::new(),
            checksum: None,
            error: Some(format!("no wgpu adapter: {err}")),
        },
    }
}

pub fn run(json: bool) -> Result<()> {
    let reports = [cpu_report(), wgpu_report()];
    if json {
        let list: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "backend": r.backend, "adapter": r.adapter, "detail": r.detail,
                    "checksum": r.checksum, "error": r.error,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).context("encoding JSON")?);
        return Ok(());
    }
    for r in &reports {
        match (&r.checksum, &r.error) {
            (Some(sum), _) => {
                println!("{:<5} {}", r.backend, r.adapter);
                if !r.detail.is_empty() {
                    println!("      {}", r.detail);
                }
                println!("      device check: {sum:.7e}");
            }
            (None, Some(err)) => println!("{:<5} unavailable: {err}", r.backend),
            (None, None) => unreachable!("a report has a checksum or an error"),
        }
    }
    Ok(())
}
