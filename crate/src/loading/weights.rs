//! Strict weight loading from safetensors in the diffusers/hub layout.
//!
//! Networks take their tensors by key path (`down_blocks.0.resnets.1.conv1.weight`), stating the
//! shape their config implies. A missing key, a wrong shape, and (in [`Weights::finish`]) a key
//! nobody took are all errors that name the key. f32, f16 and bf16 on disk load as f32.
//! Each tensor goes to the device as soon as it is inserted, so a caller that streams a file
//! ([`Weights::insert`], the browser) never holds more than one tensor's bytes. int8 tensors with a
//! `<key>.q8_scale` beside them (converted `q8` weights, see `manifest`) are dequantised on the
//! device when taken. With [`Weights::set_packed_f16`] on, the `Linear` and conv weights inserted
//! are held as f16 pairs packed in u32 words (half the memory of f32) until taken.
//! [`Weights::random`] builds any network at its real size with nothing on disk (benchmarks);
//! [`Weights::declare`] checks a checkpoint's keys and shapes against a network without its values;
//! [`Weights::shapes`] lists the keys and shapes a network takes, in the order it takes them, with
//! no checkpoint at all (`weights-tools random` writes a checkpoint from that list).

use std::collections::BTreeMap;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use i2vgen_shaders::packed::PackedF16;
use safetensors::{Dtype, SafeTensors};

use crate::loading::manifest::{Q8_SCALE, is_matrix_weight};
use crate::models::nn::MAX_BINDING_BYTES;
use crate::{Error, Result};

struct Stored {
    shape: Vec<usize>,
    /// The values, already on the device; `None` for a tensor declared by shape only.
    values: Option<Values>,
}

enum Values {
    /// Flat f32.
    F32(Tensor<1>),
    /// `[shape[0], the rest]` as packed f16 ([`Weights::set_packed_f16`]).
    PackedF16(PackedF16),
}

/// Where `take` gets its tensors.
enum Mode {
    /// From the stored tensors.
    Stored,
    /// Fresh random values ([`Weights::random`]).
    Random,
    /// Nowhere: each key and shape is written down ([`Weights::shapes`]).
    Record(Vec<(String, Vec<usize>)>),
}

/// The tensors of one component, waiting to be taken by the network being built.
pub struct Weights {
    device: Device,
    tensors: BTreeMap<String, Stored>,
    mode: Mode,
    /// Whether `Linear` and conv weights are kept as packed f16 ([`Weights::set_packed_f16`]).
    packed_f16: bool,
}

/// Join a module path and a field name the way state-dict keys are spelled.
pub fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

/// Values of a tensor in a safetensors file as f32 (f32, f16 and bf16; i8 as its integers).
pub fn to_f32(dtype: Dtype, bytes: &[u8], name: &str) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::I8 => bytes.iter().map(|&b| f32::from(b as i8)).collect(),
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => {
            return Err(Error::Tensor {
                key: name.to_string(),
                message: format!("is {other:?}; weights must be f32, f16 or bf16"),
            });
        }
    })
}

/// The most values one tensor may have: one GPU buffer of f32 ([`MAX_BINDING_BYTES`]). The
/// largest real weight (CLIP's token embedding) has 50 M.
pub const MAX_TENSOR_ELEMENTS: usize = MAX_BINDING_BYTES / 4;

/// The values in a tensor of `shape`, refused above [`MAX_TENSOR_ELEMENTS`]: the product is
/// checked, so a shape from a damaged config or header cannot wrap around or ask for terabytes.
fn checked_elements(key: &str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|&n| n <= MAX_TENSOR_ELEMENTS).ok_or_else(|| {
        Error::Tensor {
            key: key.to_string(),
            message: format!(
                "would have shape {shape:?}, more than the {MAX_TENSOR_ELEMENTS} values one GPU buffer holds; \
                 the model's config or weights file is damaged"
            ),
        }
    })
}

impl Weights {
    /// Read every tensor of the given safetensors files (the shards of one component).
    pub fn from_safetensors(files: &[&[u8]], device: &Device) -> Result<Self> {
        let mut weights = Self::new(device);
        for (i, bytes) in files.iter().enumerate() {
            weights.insert_file(&format!("safetensors file {i}"), bytes)?;
        }
        Ok(weights)
    }

    /// Add every tensor of one safetensors file (`file` names it in errors).
    pub fn insert_file(&mut self, file: &str, bytes: &[u8]) -> Result<()> {
        let parsed =
            SafeTensors::deserialize(bytes).map_err(|source| Error::Safetensors { file: file.to_string(), source })?;
        for (name, view) in parsed.tensors() {
            self.insert(&name, view.dtype(), view.shape(), view.data())?;
        }
        Ok(())
    }

    /// No tensors yet: [`Weights::insert`] them one by one.
    pub fn new(device: &Device) -> Self {
        Self { device: device.clone(), tensors: BTreeMap::new(), mode: Mode::Stored, packed_f16: false }
    }

    /// Add one tensor from its safetensors bytes (little-endian `dtype` values); it goes to the
    /// device now and the bytes can be dropped.
    pub fn insert(&mut self, key: &str, dtype: Dtype, shape: &[usize], bytes: &[u8]) -> Result<()> {
        let elements = checked_elements(key, shape)?;
        // In u64: on wasm32 a usize product of a hostile shape wraps to a small byte count.
        let needed = elements as u64 * dtype.bitsize() as u64 / 8;
        if bytes.len() as u64 != needed {
            return Err(Error::Tensor {
                key: key.to_string(),
                message: format!("has {} bytes but its shape {shape:?} of {dtype:?} needs {needed}", bytes.len()),
            });
        }
        let values = to_f32(dtype, bytes, key)?;
        let values = Tensor::from_data(TensorData::new(values, [elements]), &self.device);
        // int8 (q8) tensors stay as they are: they are dequantised with their scale when taken.
        let values = if self.packed_f16 && dtype != Dtype::I8 && is_matrix_weight(key, shape) && elements > 0 {
            Values::PackedF16(PackedF16::pack(values.reshape([shape[0], elements / shape[0]])))
        } else {
            Values::F32(values)
        };
        self.store(key, shape, Some(values))
    }

    /// Add a tensor by key and shape only: building a network then checks the key set and the
    /// shapes at no memory cost, and the network gets one-element placeholders — check it,
    /// never run it.
    pub fn declare(&mut self, key: &str, shape: &[usize]) -> Result<()> {
        self.store(key, shape, None)
    }

    fn store(&mut self, key: &str, shape: &[usize], values: Option<Values>) -> Result<()> {
        if self.tensors.insert(key.to_string(), Stored { shape: shape.to_vec(), values }).is_some() {
            return Err(Error::Tensor { key: key.to_string(), message: "appears twice".into() });
        }
        Ok(())
    }

    /// Every `take` draws fresh values on the device: uniform in ±1/√fan_in, where fan_in is
    /// the elements per output channel (±1 for vectors), so activations stay in range.
    pub fn random(device: &Device) -> Self {
        Self { device: device.clone(), tensors: BTreeMap::new(), mode: Mode::Random, packed_f16: false }
    }

    /// Every `take` writes down its key and shape and gets a one-element placeholder (as for
    /// [`Weights::declare`]d tensors): building a network lists the checkpoint it takes, at no
    /// memory cost — read it with [`Weights::recorded`], never run the network.
    pub fn shapes(device: &Device) -> Self {
        Self { device: device.clone(), tensors: BTreeMap::new(), mode: Mode::Record(Vec::new()), packed_f16: false }
    }

    /// The keys and shapes taken so far by a [`Weights::shapes`] build, in the order they were
    /// taken (empty for the other kinds). [`Weights::discard`]ed keys are not among them.
    pub fn recorded(self) -> Vec<(String, Vec<usize>)> {
        match self.mode {
            Mode::Record(taken) => taken,
            Mode::Stored | Mode::Random => Vec::new(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the networks built from these weights keep their `Linear` and conv weights as f16 pairs
    /// packed in u32 words (`i2vgen_shaders::packed`), half the memory, computing in f32; norm
    /// weights, biases and embeddings stay f32. Each weight is packed in its network's layout as
    /// it is taken; the ones [`Weights::insert`]ed after this is turned on are held packed until
    /// then (rounded to f16 on arrival: a loader that streams the checkpoint never holds its f32
    /// weights, and the f16 checkpoints on the hub lose nothing).
    pub fn set_packed_f16(&mut self, on: bool) {
        self.packed_f16 = on;
    }

    /// Whether [`Weights::set_packed_f16`] is on.
    pub fn packed_f16(&self) -> bool {
        self.packed_f16
    }

    /// Take the tensor `key`, which must have `shape`.
    pub fn take<const D: usize>(&mut self, key: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        checked_elements(key, &shape)?;
        match &mut self.mode {
            Mode::Stored => {}
            Mode::Random => {
                let fan_in: usize = shape[1..].iter().product();
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                return Ok(Tensor::random(shape, Distribution::Uniform(-bound, bound), &self.device));
            }
            Mode::Record(taken) => {
                if taken.iter().any(|(k, _)| k == key) {
                    return Err(Error::Tensor { key: key.to_string(), message: "is taken twice".into() });
                }
                taken.push((key.to_string(), shape.to_vec()));
                return Ok(Tensor::zeros([1; D], &self.device));
            }
        }
        let stored = self
            .tensors
            .remove(key)
            .ok_or_else(|| Error::MissingWeight { key: key.to_string(), shape: shape.to_vec() })?;
        if stored.shape != shape {
            return Err(Error::WeightShape { key: key.to_string(), expected: shape.to_vec(), found: stored.shape });
        }
        let mut values = match stored.values {
            None => {
                self.tensors.remove(&format!("{key}{Q8_SCALE}"));
                return Ok(Tensor::zeros([1; D], &self.device));
            }
            Some(Values::PackedF16(packed)) => return Ok(packed.unpack().reshape(shape)),
            Some(Values::F32(values)) => values,
        };
        // A q8 tensor: int8 values × one scale per output channel (dimension 0).
        if let Some(scale) = self.tensors.remove(&format!("{key}{Q8_SCALE}")) {
            let out = shape[0];
            if scale.shape != [out] {
                return Err(Error::WeightShape {
                    key: format!("{key}{Q8_SCALE}"),
                    expected: vec![out],
                    found: scale.shape,
                });
            }
            let per = values.dims()[0] / out.max(1);
            if let Some(Values::F32(scale)) = scale.values {
                values = (values.reshape([out, per]) * scale.reshape([out, 1])).reshape([out * per]);
            }
        }
        Ok(values.reshape(shape))
    }

    /// Drop a non-persistent buffer some checkpoints carry (e.g. CLIP's `position_ids`).
    pub fn discard(&mut self, key: &str) {
        self.tensors.remove(key);
    }

    /// Every tensor must have been taken: leftovers mean the config and checkpoint disagree.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            Ok(())
        } else {
            Err(Error::UnusedWeights { keys: self.tensors.into_keys().collect() })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use burn::tensor::Device;
    use safetensors::SafeTensors;

    use super::Weights;
    use crate::loading::config::{ConfigFile, parse};
    use crate::models::clip::{CLIPTextModel, CLIPVisionModelWithProjection};
    use crate::models::unet_3d_condition::UNet3DConditionModel;
    use crate::models::unet_i2vgen_xl::I2VGenXLUNet;
    use crate::models::vae::AutoencoderKL;

    type Shapes = Vec<(String, Vec<usize>)>;

    fn cpu() -> Device {
        #[allow(deprecated)] // NdArray: the CPU backend; placeholders cost nothing.
        Device::ndarray()
    }

    /// The keys and shapes the network of `config` takes.
    fn record<C: ConfigFile, N>(config: &str, load: fn(&mut Weights, &C) -> crate::Result<N>) -> Shapes {
        let mut weights = Weights::shapes(&cpu());
        load(&mut weights, &parse::<C>(config).unwrap().config).unwrap();
        weights.recorded()
    }

    fn millions(shapes: &Shapes) -> String {
        let params: usize = shapes.iter().map(|(_, shape)| shape.iter().product::<usize>()).sum();
        format!("{:.1}", params as f64 / 1e6)
    }

    /// ali-vilab/i2vgen-xl's configs build networks of the sizes `../shared/DESIGN.md` states
    /// (rounded to 0.1 M parameters); the refiner's are printed.
    #[test]
    fn real_configs_have_the_real_parameter_counts() {
        macro_rules! config {
            ($path:literal) => {
                include_str!(concat!("../../configs/", $path, "/config.json"))
            };
        }
        let base = [
            ("unet", millions(&record(config!("i2vgen-xl/unet"), I2VGenXLUNet::load)), "1420.5"),
            ("text_encoder", millions(&record(config!("i2vgen-xl/text_encoder"), CLIPTextModel::load)), "353.0"),
            (
                "image_encoder",
                millions(&record(config!("i2vgen-xl/image_encoder"), CLIPVisionModelWithProjection::load)),
                "632.1",
            ),
            ("vae", millions(&record(config!("i2vgen-xl/vae"), AutoencoderKL::load)), "83.7"),
        ];
        for (component, found, expected) in base {
            println!("i2vgen-xl {component}: {found} M");
            assert_eq!(found, expected, "{component}");
        }
        for (component, found) in [
            ("unet", millions(&record(config!("refiner/unet"), UNet3DConditionModel::load))),
            ("text_encoder", millions(&record(config!("refiner/text_encoder"), CLIPTextModel::load))),
            ("vae", millions(&record(config!("refiner/vae"), AutoencoderKL::load))),
        ] {
            println!("refiner {component}: {found} M");
        }
    }

    /// Every real config file parses with no key this version ignores.
    #[test]
    fn real_configs_parse_without_notes() {
        use crate::models::clip::{CLIPTextConfig, CLIPVisionConfig};
        use crate::models::unet_3d_condition::UNet3DConditionModelConfig;
        use crate::models::unet_i2vgen_xl::I2VGenXLUNetConfig;
        use crate::models::vae::AutoencoderKLConfig;
        use crate::pipelines::pipeline_i2vgen_xl::CLIPImageProcessorConfig;
        use crate::schedulers::SchedulerConfig;
        fn unknown<C: ConfigFile>(text: &str) -> Vec<String> {
            parse::<C>(text).unwrap_or_else(|e| panic!("{}: {e}", C::FILE)).unknown_keys
        }
        macro_rules! file {
            ($path:literal) => {
                include_str!(concat!("../../configs/", $path))
            };
        }
        for (name, keys) in [
            ("base unet", unknown::<I2VGenXLUNetConfig>(file!("i2vgen-xl/unet/config.json"))),
            ("base text_encoder", unknown::<CLIPTextConfig>(file!("i2vgen-xl/text_encoder/config.json"))),
            ("base image_encoder", unknown::<CLIPVisionConfig>(file!("i2vgen-xl/image_encoder/config.json"))),
            ("base vae", unknown::<AutoencoderKLConfig>(file!("i2vgen-xl/vae/config.json"))),
            ("base scheduler", unknown::<SchedulerConfig>(file!("i2vgen-xl/scheduler/scheduler_config.json"))),
            (
                "base feature_extractor",
                unknown::<CLIPImageProcessorConfig>(file!("i2vgen-xl/feature_extractor/preprocessor_config.json")),
            ),
            ("refiner unet", unknown::<UNet3DConditionModelConfig>(file!("refiner/unet/config.json"))),
            ("refiner text_encoder", unknown::<CLIPTextConfig>(file!("refiner/text_encoder/config.json"))),
            ("refiner vae", unknown::<AutoencoderKLConfig>(file!("refiner/vae/config.json"))),
            ("refiner scheduler", unknown::<SchedulerConfig>(file!("refiner/scheduler/scheduler_config.json"))),
        ] {
            assert!(keys.is_empty(), "{name}: {keys:?}");
        }
    }

    /// Recording the tiny fixture's networks gives exactly the keys and shapes of their
    /// checkpoints (less CLIP's discarded `position_ids`), each key once.
    #[test]
    fn recorded_shapes_are_the_fixture_checkpoints() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-i2vgen");
        let read = |path: &str| std::fs::read_to_string(format!("{dir}/{path}")).unwrap();
        let recorded = [
            ("unet", "diffusion_pytorch_model", record(&read("unet/config.json"), I2VGenXLUNet::load)),
            ("vae", "diffusion_pytorch_model", record(&read("vae/config.json"), AutoencoderKL::load)),
            ("text_encoder", "model", record(&read("text_encoder/config.json"), CLIPTextModel::load)),
            ("image_encoder", "model", record(&read("image_encoder/config.json"), CLIPVisionModelWithProjection::load)),
        ];
        for (component, stem, shapes) in recorded {
            let bytes = std::fs::read(format!("{dir}/{component}/{stem}.safetensors")).unwrap();
            let file = SafeTensors::deserialize(&bytes).unwrap();
            let on_disk: BTreeMap<String, Vec<usize>> = file
                .tensors()
                .into_iter()
                .filter(|(key, _)| !key.ends_with("position_ids"))
                .map(|(key, view)| (key, view.shape().to_vec()))
                .collect();
            let taken: BTreeMap<String, Vec<usize>> = shapes.iter().cloned().collect();
            assert_eq!(taken.len(), shapes.len(), "{component}: a key recorded twice");
            assert_eq!(taken, on_disk, "{component}");
        }
    }
}
