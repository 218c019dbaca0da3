//! What the JS worker fetches, asked of the library: which files make a pipeline, which weight
//! files to look for, the shards of an index, whether a manifest is one this build reads, and
//! the request defaults. The JS knows no layout of its own.

use i2vgen::loading::folder::{self, PipelineKind, WeightFiles};
use i2vgen::loading::manifest::Manifest;
use i2vgen::models::unet_3d_backbone::UNet3DConfig;
use i2vgen::pipelines::defaults;
use i2vgen::pipelines::pipeline_i2vgen_xl::GenerationRequest;
use i2vgen::pipelines::sampling::Preset;
use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::IntoJs;

/// The files of a pipeline folder, as JSON: `{"className", "components": [...], "textFiles":
/// [{"path", "required"}]}` for `kind` `"i2vgen"` or `"refiner"`.
#[wasm_bindgen(js_name = modelFiles)]
pub fn model_files(kind: &str) -> Result<String, JsError> {
    let kind = PipelineKind::parse(kind).js()?;
    let text_files: Vec<_> =
        kind.text_files().into_iter().map(|(path, required)| json!({"path": path, "required": required})).collect();
    Ok(json!({"className": kind.class_name(), "components": kind.components(), "textFiles": text_files}).to_string())
}

/// The weight files to look for in a component folder, most preferred first, as JSON
/// `[{"path", "index"}]` (`index`: a `*.safetensors.index.json` naming shards).
#[wasm_bindgen(js_name = weightFileCandidates)]
pub fn weight_file_candidates(prefer_fp16: bool) -> String {
    let candidates: Vec<_> = folder::weight_file_candidates(prefer_fp16)
        .into_iter()
        .map(|c| match c {
            WeightFiles::Index(path) => json!({"path": path, "index": true}),
            WeightFiles::Single(path) => json!({"path": path, "index": false}),
        })
        .collect();
    serde_json::Value::from(candidates).to_string()
}

/// The shard files a `*.safetensors.index.json` (named `file` in errors) refers to.
#[wasm_bindgen(js_name = indexShards)]
pub fn index_shards(index_json: &str, file: &str) -> Result<Vec<String>, JsError> {
    folder::index_shards(index_json, file).js()
}

/// Check a converted folder's `manifest.json` (format and version); the error says what is wrong.
#[wasm_bindgen(js_name = checkManifest)]
pub fn check_manifest(text: &str) -> Result<(), JsError> {
    Manifest::parse(text).map(drop).js()
}

/// The request defaults of the page and the widget, as JSON in the protocol's keys:
/// `{"seed", "browser", "reference", "demo": {width, height, frames, fps, steps, guidance,
/// sampling}, "refine", "refineDemo": {width, height, strength, steps, guidance}, "presets":
/// {"reference", "balanced", "fast": {steps, sampling, unetEquivalents}}}`. `sampling` is the
/// generate request's (`{scheduler, spacing, guidanceUntil, cacheInterval}`); a preset's
/// `unetEquivalents` is its cost on the real I2VGen-XL at the browser size (see
/// `Model.unetEquivalents` for a loaded model and any request).
#[wasm_bindgen]
pub fn defaults() -> String {
    let generate = |r: &GenerationRequest| {
        json!({"width": r.width, "height": r.height, "frames": r.num_frames, "fps": r.target_fps,
               "steps": r.num_inference_steps, "guidance": r.guidance_scale, "sampling": r.sampling})
    };
    let refine = |r: &i2vgen::pipelines::pipeline_video_to_video::RefineRequest| {
        json!({"width": r.width, "height": r.height, "strength": r.strength, "steps": r.num_inference_steps,
               "guidance": r.guidance_scale})
    };
    // The config defaults are the real UNet's; its VAE (SD's) downscales by 8.
    let real_unet: UNet3DConfig = serde_json::from_str("{}").expect("every UNet config key has a default");
    let presets: serde_json::Map<_, _> = Preset::ALL
        .into_iter()
        .map(|p| {
            let request = GenerationRequest {
                num_inference_steps: p.num_inference_steps(),
                sampling: p.sampling(),
                ..defaults::BROWSER
            };
            let cost = crate::model::unet_equivalents(&real_unet, &request, 8);
            let preset = json!({"steps": request.num_inference_steps, "sampling": request.sampling,
                                "unetEquivalents": cost});
            (p.name().to_string(), preset)
        })
        .collect();
    json!({
        "seed": defaults::SEED,
        "browser": generate(&defaults::BROWSER),
        "reference": generate(&defaults::REFERENCE),
        "demo": generate(&defaults::DEMO),
        "refine": refine(&defaults::REFINE),
        "refineDemo": refine(&defaults::REFINE_DEMO),
        "presets": presets,
    })
    .to_string()
}
