//! Building the I2VGen-XL pipeline from what the JS worker streams in: the text files of the
//! diffusers folder (configs, tokenizer) and the weight tensors one at a time, each uploaded to the
//! GPU as it arrives so the wasm heap never holds a whole component.

use std::collections::BTreeMap;

use burn::tensor::Device;
use i2vgen::clip::{CLIPTextModel, CLIPVisionModelWithProjection};
use i2vgen::config::{ConfigFile, parse};
use i2vgen::pipeline_i2vgen_xl::I2VGenXLPipeline;
use i2vgen::pipeline_video_to_video::VideoToVideoSDPipeline;
use i2vgen::unet_3d_condition::UNet3DConditionModel;
use i2vgen::tokenizer::CLIPTokenizer;
use i2vgen::unet_i2vgen_xl::I2VGenXLUNet;
use i2vgen::vae::AutoencoderKL;
use i2vgen::weights::Weights;
use safetensors::Dtype;
use wasm_bindgen::prelude::*;

use crate::generator::Generator;
use crate::refiner::Refiner;
use crate::{device, js_error};

#[wasm_bindgen]
pub struct ModelLoader {
    device: Device,
    files: BTreeMap<String, String>,
    weights: BTreeMap<String, Weights>,
}

#[wasm_bindgen]
impl ModelLoader {
    /// Start a model on the page's WebGPU device.
    pub async fn create() -> Result<ModelLoader, JsError> {
        Ok(Self { device: device().await?, files: BTreeMap::new(), weights: BTreeMap::new() })
    }

    /// A text file of the folder by its path (`unet/config.json`, `tokenizer/vocab.json`).
    #[wasm_bindgen(js_name = addFile)]
    pub fn add_file(&mut self, path: &str, text: String) {
        self.files.insert(path.to_string(), text);
    }

    /// One weight tensor of a component: safetensors dtype name (`F32`, `F16`, `BF16`, `I8`),
    /// shape and little-endian bytes. It goes to the GPU now.
    #[wasm_bindgen(js_name = addTensor)]
    pub fn add_tensor(&mut self, component: &str, key: &str, dtype: &str, shape: Vec<u32>, bytes: &[u8]) -> Result<(), JsError> {
        let dtype = match dtype {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I8" => Dtype::I8,
            other => return Err(JsError::new(&format!("{component}: tensor `{key}` is {other}; weights must be F32, F16, BF16 or I8"))),
        };
        let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
        let weights = self.weights.entry(component.to_string()).or_insert_with(|| Weights::new(&self.device));
        weights.insert(key, dtype, &shape, bytes).map_err(|e| js_error(&format!("{component}: {e}")))
    }

    /// Build every network (each checks that it used every tensor) and the pipeline.
    pub fn build(mut self) -> Result<Generator, JsError> {
        let pipeline = I2VGenXLPipeline {
            tokenizer: self.tokenizer()?,
            text_encoder: self.network("text_encoder", CLIPTextModel::load)?,
            image_encoder: self.network("image_encoder", CLIPVisionModelWithProjection::load)?,
            vae: self.network("vae", AutoencoderKL::load)?,
            unet: self.network("unet", I2VGenXLUNet::load)?,
            scheduler: self.config("scheduler/scheduler_config.json")?,
            feature_extractor: self.config("feature_extractor/preprocessor_config.json")?,
        };
        Ok(Generator::new(pipeline, self.device))
    }

    /// Build a VideoToVideoSDPipeline (the refinement stage) instead.
    #[wasm_bindgen(js_name = buildRefiner)]
    pub fn build_refiner(mut self) -> Result<Refiner, JsError> {
        let pipeline = VideoToVideoSDPipeline {
            tokenizer: self.tokenizer()?,
            text_encoder: self.network("text_encoder", CLIPTextModel::load)?,
            vae: self.network("vae", AutoencoderKL::load)?,
            unet: self.network("unet", UNet3DConditionModel::load)?,
            scheduler: self.config("scheduler/scheduler_config.json")?,
        };
        Ok(Refiner::new(pipeline, self.device))
    }
}

impl ModelLoader {
    fn text(&self, path: &str) -> Result<&str, JsError> {
        self.files.get(path).map(String::as_str).ok_or_else(|| js_error(&format!("the model has no {path}")))
    }

    fn config<T: ConfigFile>(&self, path: &str) -> Result<T, JsError> {
        Ok(parse::<T>(self.text(path)?).map_err(|e| js_error(&format!("{path}: {e}")))?.config)
    }

    fn tokenizer(&self) -> Result<CLIPTokenizer, JsError> {
        let optional = |name: &str| self.files.get(&format!("tokenizer/{name}")).map(String::as_str);
        CLIPTokenizer::from_files(
            self.text("tokenizer/vocab.json")?,
            self.text("tokenizer/merges.txt")?,
            optional("tokenizer_config.json"),
            optional("special_tokens_map.json"),
        )
        .map_err(|e| js_error(&format!("tokenizer: {e}")))
    }

    fn network<C: ConfigFile, N>(&mut self, component: &str, load: impl FnOnce(&mut Weights, &C) -> i2vgen::Result<N>) -> Result<N, JsError> {
        let config: C = self.config(&format!("{component}/config.json"))?;
        let mut weights = self.weights.remove(component).ok_or_else(|| js_error(&format!("no weights were loaded for {component}")))?;
        let context = |e: i2vgen::Error| js_error(&format!("{component}: {e}"));
        let net = load(&mut weights, &config).map_err(context)?;
        weights.finish().map_err(context)?;
        Ok(net)
    }
}
