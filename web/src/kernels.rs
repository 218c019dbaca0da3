//! Every GPU kernel of `i2vgen-shaders` against its burn-op twin on the page's WebGPU device (the
//! case list `i2vgen_shaders::cases`, also run natively by `shaders/tests/cases.rs`), for the
//! browser tests (`tests/e2e/kernels.test.mjs`, Chromium on SwiftShader).

use i2vgen_shaders::cases::{TOLERANCE, cases, relative_error};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::IntoJs;
use crate::readback::Readback;

/// One case's result.
#[derive(Serialize)]
struct CaseResult {
    family: &'static str,
    name: String,
    shape: Vec<usize>,
    /// max |kernel − twin| / max |twin|; `null` in the JSON when not finite.
    relative_error: f32,
    /// The case's kernel was among the kernel side's launches (cubecl's launch observer).
    kernel_ran: bool,
    /// The kernel side's launches, names shortened to their last path segment before generics.
    launches: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    tolerance: f32,
    cases: Vec<CaseResult>,
}

/// `a::b::c<T, ...>` → `c`.
fn short(kernel: &str) -> String {
    let base = kernel.split('<').next().unwrap_or(kernel);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

/// Run every kernel case on WebGPU, in f32, and return a JSON report: `{tolerance, cases: [{family,
/// name, shape, relative_error, kernel_ran, launches}]}`. The kernels are tested in f32, so this
/// must run before anything starts the GPU in f16 (it sets the precision to f32 itself).
#[wasm_bindgen]
pub async fn kernel_cases() -> Result<String, JsError> {
    crate::choose_precision("f32")?;
    let device = crate::device().await?;
    let mut results = Vec::new();
    for case in cases() {
        let out = case.run(&device);
        let kernel = Readback::from(out.kernel).read().await?;
        let twin = Readback::from(out.twin).read().await?;
        results.push(CaseResult {
            family: case.family,
            relative_error: relative_error(&kernel, &twin),
            kernel_ran: case.kernel_ran(&out.launches),
            launches: out.launches.iter().map(|name| short(name)).collect(),
            name: case.name,
            shape: out.shape,
        });
    }
    serde_json::to_string(&Report { tolerance: TOLERANCE, cases: results }).js()
}
