//! Paired statistics for studies (docs/tuning.md, "Reading the tables"): mean and standard
//! error, the paired t-test, the Wilcoxon signed-rank test and the sign test as robustness
//! checks, worst-fraction means and a two-level bootstrap.
//!
//! The tests follow scipy.stats 1.17 exactly (`ttest_rel`; `wilcoxon` with its default
//! `method="auto"`, `zero_method="wilcox"`, no continuity correction; `binomtest`), and are
//! checked against it (tests/golden/stats_reference.py).

use crate::trial::UnitScore;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal, StudentsT};

/// Mean and standard error `sd/√n` (sample sd, n − 1); se is NaN below two values.
pub fn mean_se(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    if x.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (m, f64::NAN);
    }
    let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// A paired t-test of differences against zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedT {
    /// Mean difference.
    pub mean: f64,
    /// Its standard error.
    pub se: f64,
    /// t statistic.
    pub t: f64,
    /// Degrees of freedom (n − 1).
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Paired t-test on differences `d` (scipy `ttest_rel`); `None` below two pairs or when
/// every difference is zero. Equal non-zero differences give t = ±∞, p = 0, as scipy.
pub fn paired_t(d: &[f64]) -> Option<PairedT> {
    let (mean, se) = mean_se(d);
    if d.len() < 2 || (se == 0.0 && mean == 0.0) || !se.is_finite() {
        return None;
    }
    let df = (d.len() - 1) as f64;
    if se == 0.0 {
        let t = mean.signum() * f64::INFINITY;
        return Some(PairedT {
            mean,
            se,
            t,
            df,
            p: 0.0,
        });
    }
    let t = mean / se;
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    // cdf(−|t|) rather than 1 − cdf(|t|): no digits lost in the far tail.
    let p = (2.0 * dist.cdf(-t.abs())).min(1.0);
    Some(PairedT { mean, se, t, df, p })
}

/// How a Wilcoxon p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WilcoxonMethod {
    /// The exact null distribution (no ties, no zeros, n ≤ 50).
    Exact,
    /// Every sign flip enumerated (ties or zeros, n ≤ 13).
    Permutation,
    /// The normal approximation with the tie correction.
    Normal,
}

/// A Wilcoxon signed-rank test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Wilcoxon {
    /// min(R⁺, R⁻).
    pub statistic: f64,
    /// Two-sided p-value.
    pub p: f64,
    /// How p was computed.
    pub method: WilcoxonMethod,
}

/// Average ranks (1-based) of `x`, and whether there were ties.
fn ranks(x: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut groups = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        groups.push(j - i + 1);
        i = j + 1;
    }
    (r, groups)
}

/// R⁺ of `d` with zeros dropped, ranks of |d| averaged over ties.
fn r_plus(d: &[f64]) -> (f64, f64, Vec<usize>) {
    let nz: Vec<f64> = d.iter().copied().filter(|v| *v != 0.0).collect();
    let abs: Vec<f64> = nz.iter().map(|v| v.abs()).collect();
    let (r, groups) = ranks(&abs);
    let plus = nz
        .iter()
        .zip(&r)
        .filter(|(v, _)| **v > 0.0)
        .map(|(_, r)| r)
        .sum();
    let minus = nz
        .iter()
        .zip(&r)
        .filter(|(v, _)| **v < 0.0)
        .map(|(_, r)| r)
        .sum();
    (plus, minus, groups)
}

/// Wilcoxon signed-rank test of differences `d` (scipy `wilcoxon(d)`, two-sided): zeros
/// dropped; exact when there are no ties or zeros and n ≤ 50; every sign flip enumerated
/// when there are ties or zeros and n ≤ 13; otherwise the normal approximation with the
/// tie correction. `None` when every difference is zero.
pub fn wilcoxon(d: &[f64]) -> Option<Wilcoxon> {
    let (plus, minus, groups) = r_plus(d);
    let n_zero = d.iter().filter(|v| **v == 0.0).count();
    let count = d.len() - n_zero;
    if count == 0 {
        return None;
    }
    let ties = groups.iter().any(|g| *g > 1);
    let statistic = plus.min(minus);
    if d.len() <= 50 && !ties && n_zero == 0 {
        // Null distribution of R⁺: the number of subsets of {1..n} with each sum.
        let n = count;
        let max = n * (n + 1) / 2;
        let mut ways = vec![0f64; max + 1];
        ways[0] = 1.0;
        for k in 1..=n {
            for s in (k..=max).rev() {
                ways[s] += ways[s - k];
            }
        }
        let total = 2f64.powi(n as i32);
        let cdf = |k: f64| -> f64 {
            if k < 0.0 {
                return 0.0;
            }
            let k = (k as usize).min(max);
            ways[..=k].iter().sum::<f64>() / total
        };
        let sf = |k: f64| 1.0 - cdf(k - 1.0); // P(R⁺ ≥ k)
        let p = (2.0 * sf(plus.floor()).min(cdf(plus.ceil()))).clamp(0.0, 1.0);
        return Some(Wilcoxon {
            statistic,
            p,
            method: WilcoxonMethod::Exact,
        });
    }
    if d.len() <= 13 {
        // Every sign flip of the data (zeros stay zero), R⁺ recomputed each time.
        let n = d.len();
        let mut less = 0usize;
        let mut greater = 0usize;
        let eps = 1e-14 * plus.abs();
        let total = 1usize << n;
        let mut flipped = d.to_vec();
        for mask in 0..total {
            for (i, v) in d.iter().enumerate() {
                flipped[i] = if mask >> i & 1 == 1 { -v } else { *v };
            }
            let s = r_plus(&flipped).0;
            if s <= plus + eps {
                less += 1;
            }
            if s >= plus - eps {
                greater += 1;
            }
        }
        let p = (2.0 * (less.min(greater) as f64) / total as f64).min(1.0);
        return Some(Wilcoxon {
            statistic,
            p,
            method: WilcoxonMethod::Permutation,
        });
    }
    let c = count as f64;
    let mean = c * (c + 1.0) / 4.0;
    let tie: f64 = groups.iter().map(|&t| (t as f64).powi(3) - t as f64).sum();
    let se = ((c * (c + 1.0) * (2.0 * c + 1.0) - tie / 2.0) / 24.0).sqrt();
    let z = (plus - mean) / se;
    let p = (2.0 * Normal::standard().cdf(-z.abs())).min(1.0);
    Some(Wilcoxon {
        statistic,
        p,
        method: WilcoxonMethod::Normal,
    })
}

/// A sign test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SignTest {
    /// Pairs with a positive difference.
    pub wins: usize,
    /// Pairs with no difference (left out of the test).
    pub ties: usize,
    /// Pairs with a negative difference.
    pub losses: usize,
    /// Two-sided binomial p-value (scipy `binomtest(wins, wins + losses, 0.5)`); 1 with no
    /// untied pair.
    pub p: f64,
}

/// The sign test of differences `d`.
pub fn sign_test(d: &[f64]) -> SignTest {
    let wins = d.iter().filter(|v| **v > 0.0).count();
    let losses = d.iter().filter(|v| **v < 0.0).count();
    let ties = d.len() - wins - losses;
    let n = (wins + losses) as u64;
    let p = if n == 0 || wins == losses {
        1.0
    } else {
        let b = Binomial::new(0.5, n).expect("p = 0.5 is valid");
        let k = wins.min(losses) as u64;
        (2.0 * b.cdf(k)).min(1.0)
    };
    SignTest {
        wins,
        ties,
        losses,
        p,
    }
}

/// Mean of the lowest `fraction` of `values` (at least one), as the round loop computes
/// worst-10 %: `⌈fraction·n⌉` values.
pub fn worst_mean(values: &[f64], fraction: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let k = ((v.len() as f64 * fraction).ceil() as usize).clamp(1, v.len());
    v[..k].iter().sum::<f64>() / k as f64
}

/// Linear-interpolated quantile of sorted values (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// A percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower end (2.5 %).
    pub low: f64,
    /// Upper end (97.5 %).
    pub high: f64,
}

/// Two-level percentile bootstrap (95 %) of the mean over seeds of
/// `worst(variant) − worst(baseline)` (or of `worst(variant)` alone when `pairs` carry
/// no baseline): seeds are resampled, then within each seed the clients. When both
/// sides of a seed have the same client ids, the same resampled clients are used for
/// both (a paired draw). Deterministic for `seed`.
pub fn bootstrap_worst(
    pairs: &[(Vec<UnitScore>, Option<Vec<UnitScore>>)],
    fraction: f64,
    reps: usize,
    seed: u64,
) -> Option<Interval> {
    if pairs.is_empty() || pairs.iter().any(|p| p.0.is_empty()) {
        return None;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut stats = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut total = 0.0;
        for _ in 0..pairs.len() {
            let (v, b) = &pairs[rng.gen_range(0..pairs.len())];
            let idx: Vec<usize> = (0..v.len()).map(|_| rng.gen_range(0..v.len())).collect();
            let wv = worst_mean(
                &idx.iter().map(|&i| v[i].value).collect::<Vec<_>>(),
                fraction,
            );
            let wb = match b {
                None => 0.0,
                Some(b) if b.is_empty() => return None,
                Some(b) => {
                    let same = b.len() == v.len() && b.iter().zip(v).all(|(x, y)| x.id == y.id);
                    let bi: Vec<usize> = if same {
                        idx.clone()
                    } else {
                        (0..b.len()).map(|_| rng.gen_range(0..b.len())).collect()
                    };
                    worst_mean(
                        &bi.iter().map(|&i| b[i].value).collect::<Vec<_>>(),
                        fraction,
                    )
                }
            };
            total += wv - wb;
        }
        stats.push(total / pairs.len() as f64);
    }
    stats.sort_by(|a, b| a.total_cmp(b));
    Some(Interval {
        low: quantile(&stats, 0.025),
        high: quantile(&stats, 0.975),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values from tests/golden/stats_reference.py (scipy 1.17.1): one line per
    /// case: `name | differences | mean se t p_t | wilcoxon_stat p_w | wins losses p_sign`.
    #[test]
    fn paired_tests_match_scipy() {
        let golden = include_str!("../tests/golden/stats.txt");
        let mut cases = 0;
        for line in golden
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let parts: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = parts[0];
            let d: Vec<f64> = parts[1]
                .split_whitespace()
                .map(|s| s.parse().unwrap())
                .collect();
            let num = |s: &str| -> Vec<f64> {
                s.split_whitespace().map(|v| v.parse().unwrap()).collect()
            };
            let t = num(parts[2]);
            let w = num(parts[3]);
            let s = num(parts[4]);
            let close = |a: f64, b: f64, tol: f64| {
                a == b || (a - b).abs() <= tol * b.abs().max(1e-300) || (a.is_nan() && b.is_nan())
            };
            match paired_t(&d) {
                Some(r) => {
                    assert!(
                        close(r.mean, t[0], 1e-12),
                        "{name}: mean {} vs {}",
                        r.mean,
                        t[0]
                    );
                    assert!(close(r.se, t[1], 1e-12), "{name}: se {} vs {}", r.se, t[1]);
                    assert!(close(r.t, t[2], 1e-10), "{name}: t {} vs {}", r.t, t[2]);
                    assert!(close(r.p, t[3], 1e-8), "{name}: p_t {} vs {}", r.p, t[3]);
                }
                None => assert!(t[3].is_nan(), "{name}: scipy has p_t {}", t[3]),
            }
            match wilcoxon(&d) {
                Some(r) => {
                    assert!(
                        close(r.statistic, w[0], 1e-12),
                        "{name}: W {} vs {}",
                        r.statistic,
                        w[0]
                    );
                    assert!(
                        close(r.p, w[1], 1e-9),
                        "{name}: p_w {} vs {} ({:?})",
                        r.p,
                        w[1],
                        r.method
                    );
                }
                None => assert!(w[1].is_nan(), "{name}"),
            }
            let r = sign_test(&d);
            assert_eq!((r.wins as f64, r.losses as f64), (s[0], s[1]), "{name}");
            assert!(
                close(r.p, s[2], 1e-10),
                "{name}: p_sign {} vs {}",
                r.p,
                s[2]
            );
            cases += 1;
        }
        assert!(cases >= 8, "{cases} golden cases");
    }

    #[test]
    fn worst_mean_takes_the_ceiling_of_the_fraction() {
        let v: Vec<f64> = (0..25).map(|i| i as f64).collect();
        assert_eq!(worst_mean(&v, 0.1), 1.0); // ⌈2.5⌉ = 3 values: 0, 1, 2
        assert_eq!(worst_mean(&[5.0], 0.1), 5.0);
    }

    #[test]
    fn bootstrap_is_seeded_paired_and_brackets_the_estimate() {
        let unit = |id: u64, value: f64| UnitScore {
            id,
            value,
            samples: 10,
        };
        let pairs: Vec<_> = (0..5)
            .map(|s| {
                let v: Vec<UnitScore> = (0..30)
                    .map(|i| unit(i, 0.5 + 0.01 * i as f64 + 0.002 * s as f64))
                    .collect();
                let b: Vec<UnitScore> = v.iter().map(|u| unit(u.id, u.value - 0.05)).collect();
                (v, Some(b))
            })
            .collect();
        let a = bootstrap_worst(&pairs, 0.1, 500, 3).unwrap();
        assert_eq!(a, bootstrap_worst(&pairs, 0.1, 500, 3).unwrap());
        // Paired draws of a constant shift give exactly the shift.
        assert!(
            (a.low - 0.05).abs() < 1e-12 && (a.high - 0.05).abs() < 1e-12,
            "{a:?}"
        );
        let alone: Vec<_> = pairs.iter().map(|p| (p.0.clone(), None)).collect();
        let b = bootstrap_worst(&alone, 0.1, 500, 3).unwrap();
        let point = pairs
            .iter()
            .map(|p| worst_mean(&p.0.iter().map(|u| u.value).collect::<Vec<_>>(), 0.1))
            .sum::<f64>()
            / 5.0;
        assert!(b.low <= point && point <= b.high + 0.02, "{b:?} vs {point}");
        assert!(b.high - b.low > 0.0);
    }
}
