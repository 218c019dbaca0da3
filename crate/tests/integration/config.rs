//! Every component's config.json: the fixtures' and the real checkpoints' configs parse with no key
//! left unrecognised; a config of another class is refused with a sentence naming the file; an
//! unknown key is reported, not fatal.

use crate::common;

use i2vgen::loading::config::{ConfigFile, parse};
use i2vgen::models::clip::{CLIPTextConfig, CLIPVisionConfig};
use i2vgen::models::unet_3d_condition::UNet3DConditionModelConfig;
use i2vgen::models::unet_i2vgen_xl::I2VGenXLUNetConfig;
use i2vgen::models::vae::AutoencoderKLConfig;
use i2vgen::schedulers::scheduling_ddim::DDIMSchedulerConfig;
use serde_json::{Map, Value};

/// `path` is under tests/fixtures/ (or crate/ for the real configs); `class_key` is
/// `_class_name` (diffusers) or `model_type` (transformers).
fn check<T: ConfigFile>(path: &str, class_key: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let unknown = |text: &str| match parse::<T>(text) {
        Ok(parsed) => Ok(parsed.unknown_keys),
        Err(err) => Err(err.to_string()),
    };
    assert_eq!(unknown(&text), Ok(vec![]), "{path}");

    let mut json: Map<String, Value> = serde_json::from_str(&text).unwrap();
    let class = json.insert(class_key.into(), "SomethingElse".into()).unwrap();
    let err = unknown(&Value::Object(json.clone()).to_string()).unwrap_err();
    assert!(
        err.starts_with(T::FILE) && err.contains(class_key) && err.contains(class.as_str().unwrap()),
        "{path}: {err}"
    );

    json.insert(class_key.into(), class);
    json.insert("novel_layers".into(), 3.into());
    assert_eq!(unknown(&Value::Object(json).to_string()), Ok(vec!["novel_layers".to_string()]), "{path}");
}

fn fixture(path: &str) -> String {
    format!("{}/{path}", common::FIXTURES)
}

#[test]
fn every_component_config_checks_its_class() {
    check::<AutoencoderKLConfig>(&fixture("tiny-i2vgen/vae/config.json"), "_class_name");
    check::<I2VGenXLUNetConfig>(&fixture("tiny-i2vgen/unet/config.json"), "_class_name");
    check::<UNet3DConditionModelConfig>(&fixture("tiny-vid2vid/unet/config.json"), "_class_name");
    check::<CLIPTextConfig>(&fixture("tiny-i2vgen/text_encoder/config.json"), "model_type");
    check::<CLIPVisionConfig>(&fixture("tiny-i2vgen/image_encoder/config.json"), "model_type");
    check::<DDIMSchedulerConfig>(&fixture("tiny-i2vgen/scheduler/scheduler_config.json"), "_class_name");
    check::<DDIMSchedulerConfig>(&fixture("tiny-vid2vid/scheduler/scheduler_config.json"), "_class_name");
    // The real checkpoints' UNet configs, as on the hub.
    let real = concat!(env!("CARGO_MANIFEST_DIR"), "/configs");
    check::<I2VGenXLUNetConfig>(&format!("{real}/i2vgen-xl/unet/config.json"), "_class_name");
    check::<UNet3DConditionModelConfig>(&format!("{real}/refiner/unet/config.json"), "_class_name");
}
