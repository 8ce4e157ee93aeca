//! Byzantine-robust aggregation of flat update vectors, following Flower's rules
//! (docs/privacy.md, "Robust aggregation"): coordinate-wise median, trimmed mean, Krum,
//! Multi-Krum, Bulyan and norm bounding.
//!
//! The one decision: every rule is exactly permutation-invariant. Distances are summed in
//! sorted order, and ties in a Krum score are broken by the vectors' contents (not by reply
//! order), so reordering the clients never changes the result by a single bit.

use crate::dp::clip_to_norm;
use crate::error::{check_finite, check_len, invalid, Result};
use std::cmp::Ordering;

/// Checks that there is at least one update, all of one length and finite; returns the
/// length.
fn check_updates<U: AsRef<[f32]>>(updates: &[U]) -> Result<usize> {
    let first = updates
        .first()
        .ok_or_else(|| invalid("updates", "[]", "at least one client update"))?;
    let dim = first.as_ref().len();
    for (k, u) in updates.iter().enumerate() {
        check_len(format!("update of client #{k}"), dim, u.as_ref().len())?;
        check_finite(&format!("update of client #{k}"), u.as_ref())?;
    }
    Ok(dim)
}

/// Applies `reduce` to the sorted values of each coordinate across clients.
fn per_coordinate<U: AsRef<[f32]>>(
    updates: &[U],
    reduce: impl Fn(&[f32]) -> f32,
) -> Result<Vec<f32>> {
    let dim = check_updates(updates)?;
    let mut column = vec![0.0f32; updates.len()];
    Ok((0..dim)
        .map(|i| {
            for (c, u) in column.iter_mut().zip(updates) {
                *c = u.as_ref()[i];
            }
            column.sort_unstable_by(f32::total_cmp);
            reduce(&column)
        })
        .collect())
}

fn median_of_sorted(v: &[f32]) -> f32 {
    let k = v.len();
    if k % 2 == 1 {
        v[k / 2]
    } else {
        ((v[k / 2 - 1] as f64 + v[k / 2] as f64) / 2.0) as f32
    }
}

/// Coordinate-wise median (Flower's FedMedian); with an even number of clients, the mean
/// of the two middle values. Unweighted.
///
/// ```
/// let m = fedpace_privacy::robust::median(&[vec![1.0, 9.0], vec![5.0, 2.0], vec![3.0, 4.0]]).unwrap();
/// assert_eq!(m, vec![3.0, 4.0]);
/// ```
pub fn median<U: AsRef<[f32]>>(updates: &[U]) -> Result<Vec<f32>> {
    per_coordinate(updates, median_of_sorted)
}

/// Coordinate-wise trimmed mean (Flower's FedTrimmedAvg, scipy's `trim_mean`): drop
/// ⌊β·K⌋ values at each end of each coordinate, average the rest. β ∈ [0, 0.5).
pub fn trimmed_mean<U: AsRef<[f32]>>(updates: &[U], beta: f64) -> Result<Vec<f32>> {
    if !(0.0..0.5).contains(&beta) {
        return Err(invalid("beta", beta, "must be in [0, 0.5)"));
    }
    let cut = (beta * updates.len() as f64).floor() as usize;
    per_coordinate(updates, |v| {
        let kept = &v[cut..v.len() - cut];
        (kept.iter().map(|&x| x as f64).sum::<f64>() / kept.len() as f64) as f32
    })
}

fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum()
}

/// Krum scores: for each client, the sum of its squared L2 distances to its
/// k = max(1, K − f − 2) nearest other clients.
pub fn krum_scores<U: AsRef<[f32]>>(updates: &[U], byzantine: usize) -> Result<Vec<f64>> {
    check_updates(updates)?;
    let n = updates.len();
    let k = n.saturating_sub(byzantine + 2).max(1);
    let mut distances = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let d = squared_distance(updates[i].as_ref(), updates[j].as_ref());
            distances[i][j] = d;
            distances[j][i] = d;
        }
    }
    Ok((0..n)
        .map(|i| {
            let mut others: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| distances[i][j])
                .collect();
            others.sort_unstable_by(f64::total_cmp);
            others.iter().take(k).sum()
        })
        .collect())
}

/// Client indices ordered by Krum score, ties broken by the vectors' contents.
fn krum_order<U: AsRef<[f32]>>(updates: &[U], byzantine: usize) -> Result<Vec<usize>> {
    let scores = krum_scores(updates, byzantine)?;
    let mut order: Vec<usize> = (0..updates.len()).collect();
    order.sort_by(|&a, &b| {
        scores[a]
            .total_cmp(&scores[b])
            .then_with(|| lexicographic(updates[a].as_ref(), updates[b].as_ref()))
    });
    Ok(order)
}

fn lexicographic(a: &[f32], b: &[f32]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Krum (Blanchard et al. 2017): the index of the update with the lowest score, assuming
/// at most `byzantine` (f) of the clients are Byzantine. Its update is used unchanged.
pub fn krum<U: AsRef<[f32]>>(updates: &[U], byzantine: usize) -> Result<usize> {
    Ok(krum_order(updates, byzantine)?[0])
}

/// Multi-Krum: the `select` (m) lowest-scoring updates and their weighted mean with
/// weights `weights` (e.g. example counts; Flower weights them as FedAvg does). Returns
/// (chosen indices in score order, mean).
pub fn multi_krum<U: AsRef<[f32]>>(
    updates: &[U],
    weights: &[f64],
    byzantine: usize,
    select: usize,
) -> Result<(Vec<usize>, Vec<f32>)> {
    check_len("weights (one per update)", updates.len(), weights.len())?;
    if select == 0 || select > updates.len() {
        return Err(invalid(
            "select",
            select,
            format!("must be in 1..={}", updates.len()),
        ));
    }
    let mut chosen = krum_order(updates, byzantine)?;
    chosen.truncate(select);
    let mean = weighted_mean(chosen.iter().map(|&i| (updates[i].as_ref(), weights[i])))?;
    Ok((chosen, mean))
}

/// Σ w_i x_i / Σ w_i, accumulated in f64 in a canonical order (by contents, then weight),
/// so that the result does not depend on the order of the clients.
fn weighted_mean<'a>(items: impl Iterator<Item = (&'a [f32], f64)>) -> Result<Vec<f32>> {
    let mut items: Vec<(&[f32], f64)> = items.collect();
    items.sort_by(|a, b| lexicographic(a.0, b.0).then_with(|| a.1.total_cmp(&b.1)));
    let mut acc: Vec<f64> = Vec::new();
    let mut total = 0.0;
    for (x, w) in items {
        if !(w >= 0.0 && w.is_finite()) {
            return Err(invalid("weight", w, "must be a finite number ≥ 0"));
        }
        if acc.is_empty() {
            acc = vec![0.0; x.len()];
        }
        for (a, &v) in acc.iter_mut().zip(x) {
            *a += w * v as f64;
        }
        total += w;
    }
    if total <= 0.0 {
        return Err(invalid(
            "weights",
            total,
            "must have a positive sum over the chosen updates",
        ));
    }
    Ok(acc.into_iter().map(|a| (a / total) as f32).collect())
}

/// Bulyan (El Mhamdi et al. 2018; Flower's message-API rule): requires K ≥ 4f + 3. Select
/// θ = K − 2f updates by Multi-Krum, then per coordinate average the β = θ − 2f selected
/// values closest to their median.
pub fn bulyan<U: AsRef<[f32]>>(updates: &[U], byzantine: usize) -> Result<Vec<f32>> {
    let n = updates.len();
    if n < 4 * byzantine + 3 {
        return Err(invalid(
            "byzantine",
            byzantine,
            format!(
                "Bulyan needs at least 4f + 3 = {} clients, got {n}",
                4 * byzantine + 3
            ),
        ));
    }
    let theta = n - 2 * byzantine;
    let beta = theta - 2 * byzantine;
    let mut chosen = krum_order(updates, byzantine)?;
    chosen.truncate(theta);
    let selected: Vec<&[f32]> = chosen.iter().map(|&i| updates[i].as_ref()).collect();
    per_coordinate(&selected, |sorted| {
        let med = median_of_sorted(sorted) as f64;
        let mut by_closeness: Vec<f32> = sorted.to_vec();
        by_closeness.sort_by(|a, b| {
            (*a as f64 - med)
                .abs()
                .total_cmp(&(*b as f64 - med).abs())
                .then_with(|| a.total_cmp(b))
        });
        (by_closeness[..beta].iter().map(|&x| x as f64).sum::<f64>() / beta as f64) as f32
    })
}

/// Norm bounding (Sun et al. 2019): clip every update to L2 norm `max_norm`, then take the
/// weighted mean. Returns the mean and each update's norm before clipping.
pub fn norm_bounded_mean<U: AsRef<[f32]>>(
    updates: &[U],
    weights: &[f64],
    max_norm: f64,
) -> Result<(Vec<f32>, Vec<f64>)> {
    check_updates(updates)?;
    check_len("weights (one per update)", updates.len(), weights.len())?;
    let mut clipped = Vec::with_capacity(updates.len());
    let mut norms = Vec::with_capacity(updates.len());
    for u in updates {
        let mut c = u.as_ref().to_vec();
        norms.push(clip_to_norm(&mut c, max_norm)?.norm_before);
        clipped.push(c);
    }
    let mean = weighted_mean(
        clipped
            .iter()
            .map(Vec::as_slice)
            .zip(weights.iter().copied()),
    )?;
    Ok((mean, norms))
}
