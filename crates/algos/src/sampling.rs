//! Uniform client sampling without replacement.

use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{ClientId, ClientPool, Error, Result};
use rand::seq::index::sample;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How many clients train per round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// A fraction C of the pool: `M = max(⌈C·N⌉, 1)` (docs/algorithms.md §A.1).
    Fraction(f64),
    /// A fixed count (capped at the pool size).
    Count(usize),
}

impl Sampling {
    /// Number of clients per round for a pool of `n`.
    pub fn per_round(&self, n: usize) -> usize {
        match *self {
            Sampling::Fraction(c) => ((c * n as f64).ceil() as usize).clamp(1, n.max(1)),
            Sampling::Count(m) => m.min(n),
        }
    }

    /// Checks ranges.
    pub fn validate(&self, field: &str) -> Result<()> {
        match *self {
            Sampling::Fraction(c) if !(c > 0.0 && c <= 1.0) => {
                Err(Error::invalid(field, c, "a fraction in (0, 1]"))
            }
            Sampling::Count(0) => Err(Error::invalid(field, 0, "at least 1 client per round")),
            _ => Ok(()),
        }
    }

    /// The clients of `round`, uniformly without replacement, sorted by id. The draw
    /// depends only on (seed, round), never on threads.
    ///
    /// Only the drawn indices are turned into ids ([`ClientPool::id_at`]); no client's
    /// metadata is computed. `rand`'s index sampler allocates O(min(N, 270·M)) (an
    /// in-place partial shuffle when M is a large share of N, else a hash set of M
    /// indices — Floyd's algorithm or rejection), so drawing 1,000 of 1,000,000 keeps
    /// nothing per registered client.
    pub fn sample(&self, pool: &dyn ClientPool, round: u32, seed: u64) -> Vec<ClientId> {
        let m = self.per_round(pool.len());
        let mut rng = stream(seed, round as u64, 0, Purpose::Sampling);
        let mut ids: Vec<ClientId> = sample(&mut rng, pool.len(), m)
            .into_iter()
            .map(|i| pool.id_at(i))
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// Poisson sampling (differential privacy's, docs/privacy.md): each client of the pool
/// independently with probability `q`, sorted by id; the cohort's size varies (it may be
/// empty). The gaps between chosen positions are drawn geometrically, so a round costs
/// O(q·N) draws, not one per client. Depends only on (seed, round).
pub fn poisson(pool: &dyn ClientPool, q: f64, round: u32, seed: u64) -> Vec<ClientId> {
    let n = pool.len();
    if q <= 0.0 || n == 0 {
        return Vec::new();
    }
    if q >= 1.0 {
        return pool.ids().collect();
    }
    let mut rng = stream(seed, round as u64, 0, Purpose::Sampling);
    let log_miss = (1.0 - q).ln();
    let mut out = Vec::new();
    let mut i = 0usize;
    loop {
        // Clients skipped before the next chosen one: ⌊ln U / ln(1 − q)⌋, U ∈ (0, 1].
        let u: f64 = 1.0 - rng.gen::<f64>();
        let skip = (u.ln() / log_miss).floor();
        // skip is never NaN: ln U ≤ 0 and ln(1 − q) < 0.
        if skip >= (n - i) as f64 {
            break;
        }
        i += skip as usize;
        out.push(pool.id_at(i));
        i += 1;
        if i >= n {
            break;
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::ClientInfo;

    fn pool(n: u64) -> Vec<ClientInfo> {
        (0..n).map(|id| ClientInfo::new(id, 1, 1)).collect()
    }

    #[test]
    fn fraction_rounds_up_and_keeps_at_least_one() {
        assert_eq!(Sampling::Fraction(0.1).per_round(100), 10);
        assert_eq!(Sampling::Fraction(0.1).per_round(5), 1);
        assert_eq!(Sampling::Fraction(0.34).per_round(10), 4);
        assert_eq!(Sampling::Count(50).per_round(30), 30);
    }

    #[test]
    fn sample_is_distinct_sorted_and_seeded() {
        let p = pool(100);
        let a = Sampling::Count(10).sample(&p, 3, 7);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, Sampling::Count(10).sample(&p, 3, 7));
        assert_ne!(a, Sampling::Count(10).sample(&p, 4, 7));
    }

    #[test]
    fn poisson_sampling_includes_each_client_with_probability_q() {
        let p = pool(1000);
        let (q, rounds) = (0.05, 400u32);
        let mut hits = vec![0u32; 1000];
        let mut sizes = Vec::new();
        for r in 0..rounds {
            let s = poisson(&p, q, r, 9);
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            sizes.push(s.len() as f64);
            for id in s {
                hits[id as usize] += 1;
            }
        }
        // Mean cohort q·N = 50 (sd √(N q (1−q)) ≈ 6.9, of the mean over 400 rounds ≈ 0.34).
        let mean = sizes.iter().sum::<f64>() / rounds as f64;
        assert!((mean - 50.0).abs() < 1.5, "{mean}");
        // Each client in ≈ 20 of 400 rounds; first and last positions are reachable.
        assert!(hits[0] > 0 && hits[999] > 0);
        let max = *hits.iter().max().unwrap();
        assert!(max < 45, "{max}");
        assert_eq!(poisson(&p, 0.05, 3, 9), poisson(&p, 0.05, 3, 9));
        assert!(poisson(&p, 0.0, 3, 9).is_empty());
        assert_eq!(poisson(&p, 1.0, 3, 9).len(), 1000);
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = Sampling::Fraction(1.5)
            .validate("strategy.fraction")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "strategy.fraction = 1.5: a fraction in (0, 1]"
        );
    }
}
