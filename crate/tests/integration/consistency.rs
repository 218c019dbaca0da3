//! A model folder whose files disagree (a text encoder of one model, a UNet of another) is refused
//! from its configs and tokenizer, with one sentence naming both files and keys, before any
//! weight is read: by `consistency::check_folder` (what the pipelines' `load` runs first) and by
//! `ModelSizes::new` (what the page runs before the download).

use std::collections::BTreeMap;

use burn::tensor::Device;
use i2vgen::loading::config::{ConfigFile, parse};
use i2vgen::loading::folder::{self, PipelineKind, TensorSource};
use i2vgen::loading::weights::Weights;
use i2vgen::models::clip::{CLIPTextConfig, CLIPVisionConfig};
use i2vgen::models::unet_3d_condition::{REFINER_CONFIG, UNet3DConditionModelConfig};
use i2vgen::models::unet_i2vgen_xl::I2VGenXLUNetConfig;
use i2vgen::models::vae::AutoencoderKLConfig;
use i2vgen::pipelines::consistency::{check, check_folder};
use i2vgen::pipelines::memory_plan::Configs;
use i2vgen::pipelines::model_sizes::{ConfigTexts, ModelSizes};
use i2vgen::pipelines::pipeline_i2vgen_xl::CLIPImageProcessorConfig;
use i2vgen::pipelines::pipeline_video_to_video::VideoToVideoSDPipeline;
use serde_json::{Value, json};

use crate::common::{cpu, open_fixture};

/// A fixture folder with some text files replaced; weights come from the fixture.
struct Edited {
    fixture: Box<dyn TensorSource>,
    files: BTreeMap<String, String>,
}

impl TensorSource for Edited {
    fn text(&mut self, path: &str) -> i2vgen::Result<Option<String>> {
        match self.files.get(path) {
            Some(text) => Ok(Some(text.clone())),
            None => self.fixture.text(path),
        }
    }

    fn weights(&mut self, component: &str, device: &Device) -> i2vgen::Result<Weights> {
        self.fixture.weights(component, device)
    }
}

/// `model`'s folder with the keys of `edit` set in the JSON file `path`.
fn edited(model: &str, path: &str, edit: &Value) -> Edited {
    let mut fixture = open_fixture(model);
    let mut json: Value = serde_json::from_str(&folder::required_text(fixture.as_mut(), path).unwrap()).unwrap();
    json.as_object_mut().unwrap().extend(edit.as_object().unwrap().clone());
    Edited { fixture, files: [(path.to_string(), json.to_string())].into() }
}

/// The four network configs of a folder, as the page hands them to `ModelSizes::new`.
fn model_sizes(source: &mut dyn TensorSource, kind: PipelineKind) -> i2vgen::Result<ModelSizes> {
    let mut text = |path: &str| folder::required_text(source, path).unwrap();
    let (text_encoder, vae, unet) =
        (text(CLIPTextConfig::FILE), text(AutoencoderKLConfig::FILE), text("unet/config.json"));
    let image_encoder = (kind == PipelineKind::I2VGenXL).then(|| text(CLIPVisionConfig::FILE));
    let texts =
        ConfigTexts { text_encoder: &text_encoder, image_encoder: image_encoder.as_deref(), vae: &vae, unet: &unet };
    ModelSizes::new(&texts, &cpu())
}

/// A fixture folder and the pipeline it holds.
type Fixture = (&'static str, PipelineKind);

/// A broken pair: the fixture, the file edited, the keys set in it, and what the sentence says.
type Case = (Fixture, &'static str, Value, [&'static str; 4]);

fn base() -> Fixture {
    ("tiny-i2vgen", PipelineKind::I2VGenXL)
}

fn refiner() -> Fixture {
    ("tiny-vid2vid", PipelineKind::VideoToVideoSD)
}

#[test]
fn the_fixtures_agree() {
    for (model, kind) in [base(), refiner()] {
        let mut source = open_fixture(model);
        check_folder(source.as_mut(), kind).unwrap_or_else(|e| panic!("{model}: {e}"));
        model_sizes(source.as_mut(), kind).unwrap_or_else(|e| panic!("{model}: {e}"));
    }
}

/// The real checkpoints' configs (`i2vgen plan --config real`), with the CLIP tokenizer of the
/// fixtures (the real one's files, byte for byte).
#[test]
fn the_real_configs_agree() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/configs");
    let read = |path: &str| std::fs::read_to_string(format!("{dir}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"));
    let tokenizer = folder::tokenizer(open_fixture("tiny-i2vgen").as_mut()).unwrap();
    let text: CLIPTextConfig = parse(&read("i2vgen-xl/text_encoder/config.json")).unwrap().config;
    let vision: CLIPVisionConfig = parse(&read("i2vgen-xl/image_encoder/config.json")).unwrap().config;
    let vae: AutoencoderKLConfig = parse(&read("i2vgen-xl/vae/config.json")).unwrap().config;
    let unet: I2VGenXLUNetConfig = parse(&read("i2vgen-xl/unet/config.json")).unwrap().config;
    let processor: CLIPImageProcessorConfig =
        parse(&read("i2vgen-xl/feature_extractor/preprocessor_config.json")).unwrap().config;
    let configs = Configs { text_encoder: &text, image_encoder: Some(&vision), vae: &vae, unet: &unet.unet };
    check(&configs, Some(&tokenizer), Some(&processor)).unwrap();

    let text: CLIPTextConfig = parse(&read("refiner/text_encoder/config.json")).unwrap().config;
    let vae: AutoencoderKLConfig = parse(&read("refiner/vae/config.json")).unwrap().config;
    let unet: UNet3DConditionModelConfig = parse(REFINER_CONFIG).unwrap().config;
    let configs = Configs { text_encoder: &text, image_encoder: None, vae: &vae, unet: &unet.unet };
    check(&configs, Some(&tokenizer), None).unwrap();
}

/// Each pair of keys that must agree, broken by editing one file of a fixture: refused with a
/// sentence naming both files and keys, by the folder check and (for the network configs) by the
/// memory plan's parse; the refiner's `load` refuses it too, before reading a weight.
#[test]
fn files_that_disagree_are_refused_naming_both() {
    let cases: &[Case] = &[
        (
            base(),
            "text_encoder/config.json",
            json!({"hidden_size": 48}),
            ["unet/config.json: `cross_attention_dim` is 32", "text_encoder/config.json", "`hidden_size` 48", ""],
        ),
        (
            base(),
            "image_encoder/config.json",
            json!({"projection_dim": 16}),
            ["unet/config.json: `cross_attention_dim` is 32", "image_encoder/config.json", "`projection_dim` 16", ""],
        ),
        (
            base(),
            "vae/config.json",
            json!({"latent_channels": 8}),
            ["unet/config.json: `in_channels` is 4", "vae/config.json", "`latent_channels` 8", ""],
        ),
        (
            base(),
            "unet/config.json",
            json!({"out_channels": 8}),
            ["unet/config.json: `out_channels` is 8", "vae/config.json", "`latent_channels` 4", ""],
        ),
        (
            base(),
            "feature_extractor/preprocessor_config.json",
            json!({"crop_size": {"height": 30, "width": 24}}),
            ["preprocessor_config.json: `crop_size width` is 24", "image_encoder/config.json", "`image_size` 30", ""],
        ),
        (
            base(),
            "tokenizer/tokenizer_config.json",
            json!({"model_max_length": 100}),
            [
                "tokenizer_config.json: `model_max_length` is 100",
                "text_encoder/config.json",
                "max_position_embeddings",
                "77",
            ],
        ),
        (
            base(),
            "text_encoder/config.json",
            json!({"vocab_size": 1000}),
            [
                "tokenizer: the vocabulary and added tokens (vocab.json, tokenizer_config.json) give ids up to 49407",
                "text_encoder/config.json",
                "`vocab_size` 1000",
                "",
            ],
        ),
        (
            base(),
            "tokenizer/vocab.json",
            json!({"zzzzzzzz</w>": 60000}),
            ["tokenizer: ", "ids up to 60000", "text_encoder/config.json", "`vocab_size` 49408"],
        ),
        // An id at u32::MAX overflowed the tokenizer's next free id (a panic in a debug build).
        (
            base(),
            "tokenizer/tokenizer_config.json",
            json!({"added_tokens_decoder": {"4294967295": {"content": "<|x|>"}}}),
            ["tokenizer: ", "ids up to 4294967295", "text_encoder/config.json", "`vocab_size` 49408"],
        ),
        (
            refiner(),
            "text_encoder/config.json",
            json!({"hidden_size": 48}),
            ["unet/config.json: `cross_attention_dim` is 32", "text_encoder/config.json", "`hidden_size` 48", ""],
        ),
        (
            refiner(),
            "vae/config.json",
            json!({"latent_channels": 8}),
            ["unet/config.json: `in_channels` is 4", "vae/config.json", "`latent_channels` 8", ""],
        ),
        (
            refiner(),
            "tokenizer/tokenizer_config.json",
            json!({"model_max_length": 100}),
            [
                "tokenizer_config.json: `model_max_length` is 100",
                "text_encoder/config.json",
                "max_position_embeddings",
                "77",
            ],
        ),
    ];
    for ((model, kind), path, edit, expect) in cases {
        let what = format!("{model} {path} {edit}");
        let err = check_folder(&mut edited(model, path, edit), *kind).map(drop).unwrap_err().to_string();
        for part in expect {
            assert!(err.contains(part), "{what}: expected {part:?} in {err}");
        }
        assert!(
            err.ends_with("the model folder mixes files of different models — download it again."),
            "{what}: {err}"
        );
        assert_eq!(err.matches(". ").count(), 0, "{what}: not one sentence: {err}");
        // The plan reads the four network configs only.
        if !err.contains("tokenizer") && !err.contains("preprocessor_config") {
            let planned = model_sizes(&mut edited(model, path, edit), *kind).map(drop).unwrap_err().to_string();
            assert_eq!(planned, err, "{what}: the plan's refusal");
        }
        if *kind == PipelineKind::VideoToVideoSD {
            let loaded = VideoToVideoSDPipeline::load(&mut edited(model, path, edit), &cpu(), &mut Vec::new());
            assert_eq!(loaded.map(drop).unwrap_err().to_string(), err, "{what}: the load's refusal");
        }
    }

    // One sentence in full.
    let err =
        check_folder(&mut edited("tiny-vid2vid", "text_encoder/config.json", &json!({"hidden_size": 48})), refiner().1);
    assert_eq!(
        err.map(drop).unwrap_err().to_string(),
        "unet/config.json: `cross_attention_dim` is 32 but text_encoder/config.json has `hidden_size` 48, and they \
         must be equal: the UNet's cross-attention reads the text encoder's hidden states; the model folder mixes \
         files of different models — download it again."
    );
}

/// An I2VGenXLUNet and a VAE that agree with each other on 8 latent channels still disagree with
/// the UNet's image path, which diffusers builds for 4.
#[test]
fn the_image_path_needs_4_latent_channels() {
    let mut source = edited("tiny-i2vgen", "vae/config.json", &json!({"latent_channels": 8}));
    let mut unet: Value =
        serde_json::from_str(&folder::required_text(&mut source, "unet/config.json").unwrap()).unwrap();
    unet.as_object_mut().unwrap().extend(json!({"in_channels": 8, "out_channels": 8}).as_object().unwrap().clone());
    source.files.insert("unet/config.json".into(), unet.to_string());
    let err = check_folder(&mut source, PipelineKind::I2VGenXL).map(drop).unwrap_err().to_string();
    assert_eq!(
        err,
        "vae/config.json: `latent_channels` is 8 but an I2VGenXLUNet (unet/config.json) reads 4-channel image \
         latents; the model folder mixes files of different models — download it again."
    );
    assert_eq!(model_sizes(&mut source, PipelineKind::I2VGenXL).map(drop).unwrap_err().to_string(), err);
}
