//! Deterministic seeding.

use burn::tensor::backend::Backend;
use rand::{SeedableRng, rngs::StdRng};

/// Seeds `B`'s random generator on `device` (parameter initialisation, dropout) and returns a
/// host-side generator seeded with the same value (data generation, sampling).
///
/// Two runs with the same seed on the same backend produce the same parameters and data.
pub fn seed<B: Backend>(device: &B::Device, seed: u64) -> StdRng {
    B::seed(device, seed);
    StdRng::seed_from_u64(seed)
}
