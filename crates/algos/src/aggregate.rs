//! Weighted averaging of client updates, with the objective-consistency normalisation
//! of docs/algorithms.md §1.1 (FedNova generalised to per-client and per-group rates).
//!
//! Plain: `Δ̄ = Σ_k p̃_k Δ_k`. Normalised, per parameter group g:
//! `Δ̄_g = τ_eff,g · Σ_k p̃_k Δ_{k,g} / Λ_{k,g}` with `Λ_{k,g} = Σ_s η_{k,g,s}` (the
//! client's reported rate sum) and `τ_eff,g = Σ_k p̃_k Λ_{k,g}`. When every client has
//! the same Λ the two coincide, so normalising costs nothing where it is not needed.

use fedpace_core::{ClientAggregate, ClientId, Error, Reply, Result, TrainRes};
use fedpace_params::ParamSpec;
use serde::{Deserialize, Serialize};

/// When to normalise updates by each client's sum of rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// Whenever clients' rate sums differ (the default).
    #[default]
    Auto,
    /// Always.
    On,
    /// Never (plain FedAvg, which re-weights the objective when rates differ).
    Off,
}

/// Result of [`aggregate`].
#[derive(Debug, Clone)]
pub struct Aggregated {
    /// The aggregate update Δ̄ (flat).
    pub delta: Vec<f32>,
    /// Whether normalisation was applied.
    pub normalized: bool,
    /// Per-client weight and cosine to Δ̄.
    pub clients: Vec<ClientAggregate>,
}

/// The successful replies with training data from clients that `keep` accepts, or
/// [`Error::AllClientsFailed`] (naming the first failure) when there are none.
pub(crate) fn usable(
    round: u32,
    replies: &[Reply<TrainRes>],
    keep: impl Fn(ClientId) -> bool,
) -> Result<Vec<(ClientId, &TrainRes)>> {
    let ok: Vec<(ClientId, &TrainRes)> = replies
        .iter()
        .filter(|r| keep(r.client))
        .filter_map(|r| r.result.as_ref().ok().map(|res| (r.client, res)))
        .filter(|(_, r)| r.num_examples > 0)
        .collect();
    if ok.is_empty() {
        let first = replies
            .iter()
            .find_map(|r| r.result.as_ref().err().map(|e| e.to_string()))
            .unwrap_or_else(|| "no client had training data".into());
        return Err(Error::AllClientsFailed {
            round,
            clients: replies.len(),
            first,
        });
    }
    Ok(ok)
}

/// Whether the clients' rate sums differ (relative tolerance 1e-9).
pub fn rate_sums_differ(replies: &[(ClientId, &TrainRes)]) -> bool {
    rate_sums_differ_on(replies, &|_| true)
}

fn rate_sums_differ_on(replies: &[(ClientId, &TrainRes)], groups: &dyn Fn(usize) -> bool) -> bool {
    let Some((_, first)) = replies.first() else {
        return false;
    };
    replies.iter().any(|(_, r)| {
        r.report
            .rate_sum
            .iter()
            .zip(&first.report.rate_sum)
            .enumerate()
            .any(|(g, (a, b))| groups(g) && (a - b).abs() > 1e-9 * a.abs().max(b.abs()))
    })
}

/// Averages `replies` (client-id order) weighted by `weights` (not necessarily
/// normalised; must be ≥ 0 with a positive sum).
pub fn aggregate(
    spec: &ParamSpec,
    replies: &[(ClientId, &TrainRes)],
    weights: &[f64],
    normalize: Normalize,
) -> Aggregated {
    aggregate_masked(spec, replies, weights, normalize, &[])
}

/// [`aggregate`] over the shared groups only: `shared[g] == false` marks a personal
/// group (docs/algorithms.md §E.4–E.6), whose aggregate delta is exactly zero whatever clients
/// sent, and whose rate sums do not decide normalisation. An empty mask shares every group.
pub fn aggregate_masked(
    spec: &ParamSpec,
    replies: &[(ClientId, &TrainRes)],
    weights: &[f64],
    normalize: Normalize,
    shared: &[bool],
) -> Aggregated {
    let is_shared = |g: usize| shared.get(g).copied().unwrap_or(true);
    let total: f64 = weights.iter().sum();
    let p: Vec<f64> = weights.iter().map(|w| w / total).collect();
    let normalized = match normalize {
        Normalize::On => true,
        Normalize::Off => false,
        Normalize::Auto => rate_sums_differ_on(replies, &is_shared),
    };
    let groups = spec.num_groups();
    // Coefficient of client k on group g.
    let coef: Vec<Vec<f32>> = if normalized {
        let tau_eff: Vec<f64> = (0..groups)
            .map(|g| {
                replies
                    .iter()
                    .zip(&p)
                    .map(|((_, r), pk)| pk * r.report.rate_sum[g])
                    .sum()
            })
            .collect();
        replies
            .iter()
            .zip(&p)
            .map(|((_, r), pk)| {
                (0..groups)
                    .map(|g| {
                        if !is_shared(g) {
                            return 0.0;
                        }
                        let lam = r.report.rate_sum[g];
                        if lam > 0.0 {
                            (pk * tau_eff[g] / lam) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect()
    } else {
        p.iter()
            .map(|pk| {
                (0..groups)
                    .map(|g| if is_shared(g) { *pk as f32 } else { 0.0 })
                    .collect()
            })
            .collect()
    };
    let deltas: Vec<&[f32]> = replies.iter().map(|(_, r)| r.delta.as_slice()).collect();
    let (delta, agg_sq, stats) = crate::flat::weighted_sum_with_stats(spec, &deltas, &coef);
    let agg_norm = agg_sq.sqrt();
    let clients = replies
        .iter()
        .zip(&p)
        .zip(&stats)
        .map(|(((id, r), pk), (dot_k, sq_k))| {
            let n = r.report.update_norm.max(sq_k.sqrt());
            let cos = if n > 0.0 && agg_norm > 0.0 {
                dot_k / (n * agg_norm)
            } else {
                0.0
            };
            ClientAggregate {
                client: *id,
                weight: *pk,
                cosine_to_aggregate: cos,
            }
        })
        .collect();
    Aggregated {
        delta,
        normalized,
        clients,
    }
}

/// The linear path (`strategy.aggregation = "linear"`): every reply carries a
/// pre-scaled update `w_k·Δ_k` (with `normalize`, `w_k·Δ_{k,g}/Λ_{k,g}` per group) and the
/// scalars [`crate::local::PreScaled`]; the server only adds the vectors up and divides:
/// `Δ̄ = Σ w_kΔ_k / Σ w_k`, or normalised `Δ̄_g = τ_eff,g · Σ_k (w_kΔ_{k,g}/Λ_{k,g}) / Σ w_k`
/// with `τ_eff,g = Σ w_kΛ_{k,g} / Σ w_k` — [`aggregate_masked`]'s values, from sums only.
/// Per-client cosines are not known on this path (reported as 0).
pub fn aggregate_linear(
    spec: &ParamSpec,
    replies: &[(ClientId, &TrainRes)],
    normalize: bool,
    shared: &[bool],
) -> Result<Aggregated> {
    let is_shared = |g: usize| shared.get(g).copied().unwrap_or(true);
    let groups = spec.num_groups();
    let mut w = Vec::with_capacity(replies.len());
    let mut weighted_rates = vec![0f64; groups];
    for (id, r) in replies {
        let p = r.ext.get::<crate::local::PreScaled>().ok_or_else(|| {
            Error::invalid(
                format!("client {id}: reply"),
                "no pre-scaled payload",
                "a pre-scaled update (strategy.aggregation = \"linear\")",
            )
        })?;
        w.push(p.weight);
        for (acc, x) in weighted_rates.iter_mut().zip(&p.weighted_rate_sum) {
            *acc += x;
        }
    }
    let total: f64 = w.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(Error::invalid(
            "pre-scaled weights",
            total,
            "a positive finite sum",
        ));
    }
    let coef: Vec<f32> = (0..groups)
        .map(|g| {
            if !is_shared(g) {
                0.0
            } else if normalize {
                (weighted_rates[g] / total / total) as f32
            } else {
                (1.0 / total) as f32
            }
        })
        .collect();
    let coefs = vec![coef; replies.len()];
    let deltas: Vec<&[f32]> = replies.iter().map(|(_, r)| r.delta.as_slice()).collect();
    let (delta, _, _) = crate::flat::weighted_sum_with_stats(spec, &deltas, &coefs);
    Ok(Aggregated {
        delta,
        normalized: normalize,
        clients: replies
            .iter()
            .zip(&w)
            .map(|((id, _), wk)| ClientAggregate {
                client: *id,
                weight: wk / total,
                cosine_to_aggregate: 0.0,
            })
            .collect(),
    })
}

/// The linear path's aggregate from sums alone (secure aggregation): `sum` = Σ_k w_kΔ_k
/// (normalised per group when `normalize`), `total_weight` = Σ w_k, `weighted_rates[g]` =
/// Σ w_kΛ_{k,g}: [`aggregate_linear`]'s Δ̄ without seeing any client's update.
pub(crate) fn linear_from_sum(
    spec: &ParamSpec,
    mut sum: Vec<f32>,
    total_weight: f64,
    weighted_rates: &[f64],
    normalize: bool,
    shared: &[bool],
) -> Result<Vec<f32>> {
    if !(total_weight > 0.0 && total_weight.is_finite()) {
        return Err(Error::invalid(
            "secure sum of the weights",
            total_weight,
            "a positive finite sum",
        ));
    }
    for e in spec.entries() {
        let g = e.group;
        let c = if !shared.get(g).copied().unwrap_or(true) {
            0.0
        } else if normalize {
            weighted_rates.get(g).copied().unwrap_or(0.0) / total_weight / total_weight
        } else {
            1.0 / total_weight
        };
        for v in &mut sum[e.range()] {
            *v = (*v as f64 * c) as f32;
        }
    }
    Ok(sum)
}

/// Per client and group, the factor that puts its update on the common scale of the
/// weighted mean before the weight: `τ_eff,g/Λ_{k,g}` when normalising, 1 otherwise, 0 on
/// personal groups. Returns the factors and whether the round normalises (robust rules).
pub(crate) fn common_scale(
    replies: &[(ClientId, &TrainRes)],
    p: &[f64],
    normalize: Normalize,
    shared: &[bool],
    groups: usize,
) -> (Vec<Vec<f32>>, bool) {
    let is_shared = |g: usize| shared.get(g).copied().unwrap_or(true);
    let normalized = match normalize {
        Normalize::On => true,
        Normalize::Off => false,
        Normalize::Auto => rate_sums_differ_on(replies, &is_shared),
    };
    let tau_eff: Vec<f64> = (0..groups)
        .map(|g| {
            replies
                .iter()
                .zip(p)
                .map(|((_, r), pk)| pk * r.report.rate_sum[g])
                .sum()
        })
        .collect();
    let coef = replies
        .iter()
        .map(|(_, r)| {
            (0..groups)
                .map(|g| {
                    let lam = r.report.rate_sum[g];
                    if !is_shared(g) {
                        0.0
                    } else if !normalized {
                        1.0
                    } else if lam > 0.0 {
                        (tau_eff[g] / lam) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    (coef, normalized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::TrainReport;
    use fedpace_params::ParamTree;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn spec() -> Arc<ParamSpec> {
        Arc::new(
            ParamSpec::builder()
                .add("w", &[2], "body")
                .add("b", &[1], "head")
                .build()
                .unwrap(),
        )
    }

    fn res(delta: Vec<f32>, rate_sum: Vec<f64>) -> TrainRes {
        TrainRes {
            delta: ParamTree::from_vec(spec(), delta).unwrap(),
            num_examples: 1,
            report: TrainReport {
                rate_sum,
                ..Default::default()
            },
            ext: Default::default(),
        }
    }

    #[test]
    fn plain_weighted_mean_by_hand() {
        let a = res(vec![1.0, 0.0, 2.0], vec![1.0, 1.0]);
        let b = res(vec![4.0, 3.0, -1.0], vec![1.0, 1.0]);
        let out = aggregate(&spec(), &[(0, &a), (1, &b)], &[1.0, 2.0], Normalize::Auto);
        assert!(!out.normalized);
        // (1·a + 2·b) / 3
        assert_eq!(out.delta, vec![3.0, 2.0, 0.0]);
    }

    #[test]
    fn normalisation_by_hand() {
        // Client a: Λ = 0.1 (body), 0.2 (head); b: Λ = 0.3, 0.2. Equal weights.
        let a = res(vec![1.0, 2.0, 4.0], vec![0.1, 0.2]);
        let b = res(vec![3.0, 0.0, 8.0], vec![0.3, 0.2]);
        let out = aggregate(&spec(), &[(0, &a), (1, &b)], &[1.0, 1.0], Normalize::Auto);
        assert!(out.normalized);
        // body: τ_eff = 0.2; d_a = [10, 20], d_b = [10, 0]; Δ̄ = 0.2 · ½(d_a + d_b) = [2, 2]
        // head: τ_eff = 0.2; d_a = 20, d_b = 40 → 0.2 · 30 = 6 (equals the plain mean here)
        let expect = [2.0f32, 2.0, 6.0];
        for (x, e) in out.delta.iter().zip(expect) {
            assert!((x - e).abs() < 1e-5, "{:?}", out.delta);
        }
    }

    #[test]
    fn personal_groups_never_move_whatever_clients_send() {
        // Group 1 (`head`) personal: even a client that (wrongly) sends a head delta and
        // reports a different head rate sum leaves the head untouched and does not
        // switch normalisation on.
        let a = res(vec![1.0, 0.0, 5.0], vec![1.0, 0.3]);
        let b = res(vec![4.0, 3.0, -7.0], vec![1.0, 0.9]);
        let out = aggregate_masked(
            &spec(),
            &[(0, &a), (1, &b)],
            &[1.0, 2.0],
            Normalize::Auto,
            &[true, false],
        );
        assert!(!out.normalized);
        assert_eq!(out.delta, vec![3.0, 2.0, 0.0]);
    }

    #[test]
    fn the_linear_path_sums_to_the_per_client_aggregate() {
        use crate::local::{pre_scale, PreScale};
        let a = res(vec![1.0, 2.0, 4.0], vec![0.1, 0.2]);
        let b = res(vec![3.0, 0.0, 8.0], vec![0.3, 0.2]);
        for normalize in [false, true] {
            let want = aggregate(
                &spec(),
                &[(0, &a), (1, &b)],
                &[2.0, 5.0],
                if normalize {
                    Normalize::On
                } else {
                    Normalize::Off
                },
            );
            let scaled: Vec<TrainRes> = [(&a, 2), (&b, 5)]
                .iter()
                .map(|(r, n)| {
                    let mut r = (*r).clone();
                    r.num_examples = *n;
                    let ins = fedpace_core::Extensions::new().with(PreScale {
                        by_examples: true,
                        normalize,
                        weight_scale: 1.0,
                    });
                    let n = r.num_examples;
                    pre_scale(&ins, &mut r.delta, &r.report, n, &mut r.ext);
                    r
                })
                .collect();
            let got =
                aggregate_linear(&spec(), &[(0, &scaled[0]), (1, &scaled[1])], normalize, &[])
                    .unwrap();
            assert_eq!(got.normalized, want.normalized);
            for (x, y) in got.delta.iter().zip(&want.delta) {
                assert!(
                    (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                    "{:?} vs {:?}",
                    got.delta,
                    want.delta
                );
            }
            for (c, d) in got.clients.iter().zip(&want.clients) {
                assert!((c.weight - d.weight).abs() < 1e-12);
            }
        }
        let e = aggregate_linear(&spec(), &[(3, &a)], false, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("client 3: reply = no pre-scaled payload"),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn single_client_is_the_identity(d in prop::collection::vec(-10f32..10.0, 3), l in 0.01f64..5.0, w in 0.1f64..10.0) {
            let a = res(d.clone(), vec![l, l * 2.0]);
            for n in [Normalize::On, Normalize::Off, Normalize::Auto] {
                let out = aggregate(&spec(), &[(0, &a)], &[w], n);
                for (x, y) in out.delta.iter().zip(&d) {
                    prop_assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0));
                }
            }
        }

        #[test]
        fn order_of_clients_does_not_matter(
            d1 in prop::collection::vec(-10f32..10.0, 3),
            d2 in prop::collection::vec(-10f32..10.0, 3),
            l1 in 0.01f64..5.0, l2 in 0.01f64..5.0, w1 in 0.1f64..10.0, w2 in 0.1f64..10.0)
        {
            let a = res(d1, vec![l1, l1]);
            let b = res(d2, vec![l2, l2]);
            let x = aggregate(&spec(), &[(0, &a), (1, &b)], &[w1, w2], Normalize::Auto);
            let y = aggregate(&spec(), &[(1, &b), (0, &a)], &[w2, w1], Normalize::Auto);
            for (p, q) in x.delta.iter().zip(&y.delta) {
                prop_assert!((p - q).abs() <= 1e-4 * p.abs().max(1.0));
            }
        }
    }
}
