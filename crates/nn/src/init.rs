//! PyTorch-style default initialisation, drawn deterministically from a seed.
//!
//! `nn.Linear` and `nn.Conv2d` use kaiming-uniform with a = √5 for the weight, which
//! reduces to U(−1/√fan_in, 1/√fan_in), and the same bound for the bias; `nn.LSTM`
//! draws every tensor from U(−1/√hidden, 1/√hidden); `nn.Embedding` from N(0, 1).
//! The numbers differ from PyTorch's (different generator); the distributions match.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// How one tensor is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// U(−bound, bound).
    Uniform(f32),
    /// N(0, std²).
    Normal(f32),
}

impl Init {
    /// PyTorch's default for a linear/conv weight or bias with this fan-in:
    /// U(−1/√fan_in, 1/√fan_in).
    pub fn fan_in(fan_in: usize) -> Self {
        Init::Uniform(1.0 / (fan_in.max(1) as f32).sqrt())
    }
}

/// Fills `out` tensor by tensor (`inits[i]` covers `lens[i]` values), in order, from one
/// ChaCha8 stream seeded with `seed`.
pub(crate) fn fill(seed: u64, parts: &[(usize, Init)], out: &mut [f32]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut off = 0;
    for &(len, init) in parts {
        let dst = &mut out[off..off + len];
        match init {
            Init::Uniform(b) => {
                for v in dst.iter_mut() {
                    *v = rng.gen_range(-b..b);
                }
            }
            Init::Normal(std) => {
                for v in dst.iter_mut() {
                    let x: f32 = rng.sample(rand_distr::StandardNormal);
                    *v = std * x;
                }
            }
        }
        off += len;
    }
}
