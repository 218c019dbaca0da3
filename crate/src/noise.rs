//! The random draws of a generation: N(0, 1) from a generator seeded by the user, identical on
//! every platform (ChaCha12), so a seed gives the same video natively and in the browser.

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// The generator behind a seed.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `shape.product()` standard normal values, in row-major order.
pub fn normal(shape: &[usize], rng: &mut StdRng) -> Vec<f32> {
    (0..shape.iter().product::<usize>()).map(|_| StandardNormal.sample(rng)).collect()
}

/// `given` if present, else a fresh N(0, 1) tensor of `shape` from `rng`.
pub fn or_draw<const D: usize>(given: Option<Tensor<D>>, shape: [usize; D], rng: &mut StdRng, device: &Device) -> Tensor<D> {
    given.unwrap_or_else(|| Tensor::from_data(TensorData::new(normal(&shape, rng), shape), device))
}
