//! Named tensors in and out of safetensors files, for `forward` and `--noise`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// The tensors of one safetensors file, by name, as host data.
pub struct TensorFile {
    path: String,
    tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
}

impl TensorFile {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not a safetensors file", path.display()))?;
        let tensors = file
            .tensors()
            .into_iter()
            .map(|(name, v)| (name, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
            .collect();
        Ok(Self { path: path.display().to_string(), tensors })
    }

    fn get(&self, name: &str) -> Result<&(Dtype, Vec<usize>, Vec<u8>)> {
        self.tensors.get(name).with_context(|| {
            let names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
            format!("{} has no tensor `{name}` (it has: {})", self.path, names.join(", "))
        })
    }

    fn shape<const D: usize>(&self, name: &str, shape: &[usize]) -> Result<[usize; D]> {
        shape.try_into().map_err(|_| {
            anyhow::anyhow!("tensor `{name}` in {} has {} dimensions {shape:?}, expected {D}", self.path, shape.len())
        })
    }

    /// A float tensor (f32/f16/bf16 on disk) of rank D.
    pub fn float<const D: usize>(&self, name: &str, device: &Device) -> Result<Tensor<D>> {
        let (dtype, shape, bytes) = self.get(name)?;
        let shape = self.shape::<D>(name, shape)?;
        let values = i2vgen::loading::weights::to_f32(*dtype, bytes, name)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// An integer tensor (int64 or int32 on disk) of rank D.
    pub fn int<const D: usize>(&self, name: &str, device: &Device) -> Result<Tensor<D, Int>> {
        let (dtype, shape, bytes) = self.get(name)?;
        let shape = self.shape::<D>(name, shape)?;
        let values: Vec<i64> = match dtype {
            Dtype::I64 => bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::I32 => bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect(),
            other => bail!("tensor `{name}` in {} is {other:?}; expected int64 or int32", self.path),
        };
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// The values of a 0-d or 1-d tensor of any int or float dtype, as f32 (timesteps, fps).
    pub fn scalars(&self, name: &str) -> Result<Vec<f32>> {
        let (dtype, shape, bytes) = self.get(name)?;
        if shape.len() > 1 {
            bail!("`{name}` in {} has shape {shape:?}; expected a scalar or a vector", self.path);
        }
        Ok(match dtype {
            Dtype::I64 => bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
            Dtype::I32 => bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
            Dtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
            other => i2vgen::loading::weights::to_f32(*other, bytes, name)?,
        })
    }

    /// A float tensor of any shape as f64 values (f64 exactly; f32/f16/bf16 widened).
    pub fn f64s(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let (dtype, shape, bytes) = self.get(name)?;
        let values = match dtype {
            Dtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
            other => i2vgen::loading::weights::to_f32(*other, bytes, name)?.into_iter().map(f64::from).collect(),
        };
        Ok((shape.clone(), values))
    }

    pub fn dims(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.get(name)?.1.clone())
    }
}

/// Write host tensors as they are: (name, dtype, shape, little-endian bytes).
pub fn write_raw(path: &Path, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((name.to_string(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)?))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Write float tensors (read back from the device) as f32 safetensors.
pub fn write(path: &Path, tensors: Vec<(&str, TensorData)>) -> Result<()> {
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, data)| {
            let shape = data.shape().to_vec();
            // f16 compute reads back f16 (the trace's intermediates): widen.
            let values = data.convert::<f32>().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((name.to_string(), shape, bytes))
        })
        .collect::<Result<_>>()?;
    let views = owned
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((name.clone(), safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)?))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path).with_context(|| format!("cannot write {}", path.display()))
}
