//! The random draws of a generation: N(0, 1) from a generator seeded by the user, so a seed gives
//! the same video natively and in the browser. Any draw can instead be given by name in a
//! safetensors file (diffusers' own draws, for parity runs).

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use safetensors::SafeTensors;

use crate::loading::weights::to_f32;
use crate::{Error, Result};

/// The generator behind a seed.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `shape.product()` standard normal values, in row-major order.
pub fn normal(shape: &[usize], rng: &mut StdRng) -> Vec<f32> {
    (0..shape.iter().product::<usize>()).map(|_| StandardNormal.sample(rng)).collect()
}

/// Seeded draws in a fixed order; a draw named in the given file is taken from it instead (and
/// the generator does not advance).
pub struct Draws<'a> {
    rng: StdRng,
    given: Option<SafeTensors<'a>>,
    /// Prepended to each name looked up in the file (`clip2.` for a chained run's second clip).
    prefix: String,
    device: Device,
}

impl<'a> Draws<'a> {
    /// `given`: the bytes of a safetensors file of named draws, if any.
    pub fn new(seed: u64, given: Option<&'a [u8]>, device: &Device) -> Result<Self> {
        let given = given
            .map(|bytes| {
                SafeTensors::deserialize(bytes)
                    .map_err(|source| Error::Safetensors { file: "the noise file".into(), source })
            })
            .transpose()?;
        Ok(Self { rng: rng(seed), given, prefix: String::new(), device: device.clone() })
    }

    /// Look draws up in the file as `prefix` + name.
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into(), ..self }
    }

    /// The draw `name` of `shape`: from the file if it has it (its shape must match), else
    /// fresh N(0, 1) values.
    pub fn draw<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let name = &format!("{}{name}", self.prefix);
        if let Some(view) = self.given.as_ref().and_then(|file| file.tensor(name).ok()) {
            if view.shape() != shape {
                return Err(Error::request(
                    "noise",
                    format!("noise `{name}` has shape {:?}, expected {shape:?}", view.shape()),
                ));
            }
            let values = to_f32(view.dtype(), view.data(), name)?;
            return Ok(Tensor::from_data(TensorData::new(values, shape), &self.device));
        }
        Ok(Tensor::from_data(TensorData::new(normal(&shape, &mut self.rng), shape), &self.device))
    }
}
