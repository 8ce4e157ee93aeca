//! Client-level differential privacy for federated averaging (docs/privacy.md, "DP-FedAvg"):
//! clipping to an L2 norm, adaptive clipping, the fixed-denominator mean, central and
//! distributed Gaussian noise.
//!
//! The one decision (docs/privacy.md, "Rates and DP"): with per-client rates, a client's
//! update is **normalised by its total rate first and clipped second**
//! ([`normalise_then_clip`]), so every client's contribution is bounded by the same `C`
//! whatever its rate, and the server rescales by a *public* reference rate only after the
//! noise is added.

use crate::error::{check_finite, check_len, invalid, Result};
use crate::rng::SecureRng;
use fedpace_params::{l2_norm, ParamSpec};
use serde::{Deserialize, Serialize};

/// What clipping did to one update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClipReport {
    /// L2 norm before clipping (of the normalised update, for [`normalise_then_clip`]).
    pub norm_before: f64,
    /// The factor the update was multiplied by (1 when it was within the bound).
    pub factor: f64,
}

impl ClipReport {
    /// True when the update was scaled down.
    pub fn clipped(&self) -> bool {
        self.factor < 1.0
    }

    /// Adaptive clipping's bit: 1 when the update was within the bound.
    pub fn within_bound(&self) -> bool {
        !self.clipped()
    }
}

/// Scales `update` in place to L2 norm at most `max_norm`: x ← x · min(1, C/‖x‖). The bound
/// holds for the `f32` result, not only in exact arithmetic.
///
/// ```
/// let mut x = vec![3.0f32, 4.0];
/// let r = fedpace_privacy::dp::clip_to_norm(&mut x, 1.0).unwrap();
/// assert_eq!(r.norm_before, 5.0);
/// assert!((x[0] - 0.6).abs() < 1e-6 && (x[1] - 0.8).abs() < 1e-6);
/// ```
pub fn clip_to_norm(update: &mut [f32], max_norm: f64) -> Result<ClipReport> {
    if !(max_norm > 0.0 && max_norm.is_finite()) {
        return Err(invalid("clip", max_norm, "must be a finite number > 0"));
    }
    check_finite("update", update)?;
    let norm_before = l2_norm(update);
    if norm_before <= max_norm {
        return Ok(ClipReport {
            norm_before,
            factor: 1.0,
        });
    }
    let mut factor = max_norm / norm_before;
    scale(update, factor);
    // Rounding each coordinate to f32 can lift the norm a few ulps above the bound; shrink
    // by the excess plus a margin until it holds (once, in practice).
    loop {
        let norm = l2_norm(update);
        if norm <= max_norm {
            return Ok(ClipReport {
                norm_before,
                factor,
            });
        }
        let extra = max_norm / norm * (1.0 - 1e-7);
        scale(update, extra);
        factor *= extra;
    }
}

fn scale(x: &mut [f32], factor: f64) {
    for v in x {
        *v = (*v as f64 * factor) as f32;
    }
}

/// The per-client step of DP with personalised rates: d = Δ / Λ (Λ = the client's total
/// step size Σ_s η_s, docs/privacy.md), then d ← d · min(1, C/‖d‖). Whatever Λ is, ‖d‖ ≤ C:
/// a client with a 4× rate has the same sensitivity as every other client.
///
/// ```
/// let mut delta = vec![0.0f32, 8.0];
/// let r = fedpace_privacy::dp::normalise_then_clip(&mut delta, 4.0, 1.0).unwrap();
/// assert_eq!(r.norm_before, 2.0);
/// assert_eq!(delta, vec![0.0, 1.0]);
/// ```
pub fn normalise_then_clip(
    update: &mut [f32],
    total_rate: f64,
    max_norm: f64,
) -> Result<ClipReport> {
    if !(total_rate > 0.0 && total_rate.is_finite()) {
        return Err(invalid(
            "total_rate",
            total_rate,
            "must be a finite number > 0 (Σ of the rates used)",
        ));
    }
    check_finite("update", update)?;
    scale(update, 1.0 / total_rate);
    clip_to_norm(update, max_norm)
}

/// [`normalise_then_clip`] with one total rate per parameter group, as the aggregator's
/// per-group normalisation uses them: d_g = Δ_g / Λ_g for every group g of `spec`, then one
/// clip of the whole vector to `max_norm`.
pub fn normalise_groups_then_clip(
    update: &mut [f32],
    spec: &ParamSpec,
    rate_sums: &[f64],
    max_norm: f64,
) -> Result<ClipReport> {
    check_len("update", spec.total_len(), update.len())?;
    check_len(
        "rate_sums (one per parameter group)",
        spec.num_groups(),
        rate_sums.len(),
    )?;
    for (g, &rate) in rate_sums.iter().enumerate() {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(invalid(
                "rate_sum",
                rate,
                format!("group {:?} needs a finite Σ of rates > 0", spec.groups()[g]),
            ));
        }
    }
    check_finite("update", update)?;
    for (g, &rate) in rate_sums.iter().enumerate() {
        for range in spec.group_ranges(g) {
            scale(&mut update[range], 1.0 / rate);
        }
    }
    clip_to_norm(update, max_norm)
}

/// DP-FedAvg's capped client weight w = min(n / ŵ, 1) (1 for uniform weighting): capping
/// keeps each client's weight ≤ 1, so its clipped contribution is ≤ C.
pub fn capped_weight(examples: f64, cap: f64) -> Result<f64> {
    if !(cap > 0.0 && cap.is_finite()) {
        return Err(invalid("weight_cap", cap, "must be a finite number > 0"));
    }
    if !(examples >= 0.0 && examples.is_finite()) {
        return Err(invalid("examples", examples, "must be a finite number ≥ 0"));
    }
    Ok((examples / cap).min(1.0))
}

/// The fixed-denominator estimator: sum ← sum / (qW), with qW the *expected* total weight
/// of a round (q = sampling probability, W = Σ of all clients' weights). Dividing by the
/// expected rather than the realised weight keeps the sensitivity at C / (qW).
pub fn fixed_denominator_mean(sum: &mut [f32], expected_weight: f64) -> Result<()> {
    if !(expected_weight > 0.0 && expected_weight.is_finite()) {
        return Err(invalid(
            "expected_weight",
            expected_weight,
            "must be a finite number > 0 (q·W)",
        ));
    }
    scale(sum, 1.0 / expected_weight);
    Ok(())
}

/// Standard deviation of central noise on the fixed-denominator mean: z · C / (qW).
pub fn central_noise_std(noise_multiplier: f64, clip: f64, expected_weight: f64) -> Result<f64> {
    check_noise_multiplier(noise_multiplier)?;
    if !(clip > 0.0 && clip.is_finite()) {
        return Err(invalid("clip", clip, "must be a finite number > 0"));
    }
    if !(expected_weight > 0.0 && expected_weight.is_finite()) {
        return Err(invalid(
            "expected_weight",
            expected_weight,
            "must be a finite number > 0 (q·W)",
        ));
    }
    Ok(noise_multiplier * clip / expected_weight)
}

/// Standard deviation of each client's share of distributed noise, z · C / √n: when `n`
/// clients each add N(0, z²C²/n) to their clipped update before secure aggregation, the sum
/// carries N(0, z²C²), the central mechanism's noise. Pass the *fewest* clients whose
/// noise will reach the sum (the survivor threshold), so dropouts cannot leave it short.
pub fn distributed_noise_std(noise_multiplier: f64, clip: f64, min_clients: usize) -> Result<f64> {
    check_noise_multiplier(noise_multiplier)?;
    if !(clip > 0.0 && clip.is_finite()) {
        return Err(invalid("clip", clip, "must be a finite number > 0"));
    }
    if min_clients == 0 {
        return Err(invalid("min_clients", 0, "must be ≥ 1"));
    }
    Ok(noise_multiplier * clip / (min_clients as f64).sqrt())
}

/// Adds independent N(0, std²) to every coordinate, drawn from the secure generator.
pub fn add_gaussian_noise(x: &mut [f32], std: f64, rng: &mut SecureRng) -> Result<()> {
    if !(std >= 0.0 && std.is_finite()) {
        return Err(invalid("noise std", std, "must be a finite number ≥ 0"));
    }
    if std == 0.0 {
        return Ok(());
    }
    for v in x {
        *v = (*v as f64 + std * rng.standard_normal()) as f32;
    }
    Ok(())
}

fn check_noise_multiplier(z: f64) -> Result<()> {
    if z >= 0.0 && z.is_finite() {
        Ok(())
    } else {
        Err(invalid(
            "noise_multiplier",
            z,
            "must be a finite number ≥ 0",
        ))
    }
}

/// The update's noise multiplier when adaptive clipping spends part of the budget on the
/// noised count: z_Δ = (z⁻² − (2σ_b)⁻²)^{−1/2}, so that the update (sensitivity C, noise
/// z_Δ C) and the centred count (sensitivity ½, noise σ_b) together are one Gaussian
/// mechanism with multiplier `z`. Requires z < 2σ_b.
///
/// ```
/// // docs/privacy.md: z = 1, 100 clients per round → σ_b = 5, z_Δ = 1.005038.
/// let z = fedpace_privacy::dp::update_noise_multiplier(1.0, 5.0).unwrap();
/// assert!((z - 1.005038).abs() < 1e-6);
/// ```
pub fn update_noise_multiplier(noise_multiplier: f64, count_noise_std: f64) -> Result<f64> {
    check_noise_multiplier(noise_multiplier)?;
    if !(count_noise_std > 0.0 && count_noise_std.is_finite()) {
        return Err(invalid(
            "count_noise_std",
            count_noise_std,
            "must be a finite number > 0",
        ));
    }
    if noise_multiplier >= 2.0 * count_noise_std {
        return Err(invalid(
            "noise_multiplier",
            noise_multiplier,
            format!(
                "must be < 2 × count_noise_std = {} for adaptive clipping",
                2.0 * count_noise_std
            ),
        ));
    }
    if noise_multiplier == 0.0 {
        return Ok(0.0);
    }
    Ok((noise_multiplier.powi(-2) - (2.0 * count_noise_std).powi(-2)).powf(-0.5))
}

/// How adaptive clipping moves C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipUpdateRule {
    /// C ← C · exp(−η_C (b̄ − γ)) (Andrew et al.'s default).
    #[default]
    Geometric,
    /// C ← max(C − η_C (b̄ − γ), tiny).
    Linear,
}

/// Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021): C tracks the γ-quantile
/// of the update norms through a noised count of unclipped updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveClipConfig {
    /// C₀ (default 0.1).
    pub initial_clip: f64,
    /// γ, the norm quantile to track (default 0.5, the median).
    pub target_quantile: f64,
    /// η_C (default 0.2).
    pub clip_learning_rate: f64,
    /// σ_b, noise std on the count; `None` = expected clients per round / 20.
    pub count_noise_std: Option<f64>,
    /// Geometric (default) or linear update.
    pub rule: ClipUpdateRule,
}

impl Default for AdaptiveClipConfig {
    fn default() -> Self {
        Self {
            initial_clip: 0.1,
            target_quantile: 0.5,
            clip_learning_rate: 0.2,
            count_noise_std: None,
            rule: ClipUpdateRule::Geometric,
        }
    }
}

impl AdaptiveClipConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if !(self.initial_clip > 0.0 && self.initial_clip.is_finite()) {
            return Err(invalid(
                "initial_clip",
                self.initial_clip,
                "must be a finite number > 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.target_quantile) {
            return Err(invalid(
                "target_quantile",
                self.target_quantile,
                "must be in [0, 1]",
            ));
        }
        if !(self.clip_learning_rate > 0.0 && self.clip_learning_rate.is_finite()) {
            return Err(invalid(
                "clip_learning_rate",
                self.clip_learning_rate,
                "must be a finite number > 0",
            ));
        }
        if let Some(s) = self.count_noise_std {
            if !(s >= 0.0 && s.is_finite()) {
                return Err(invalid("count_noise_std", s, "must be a finite number ≥ 0"));
            }
        }
        Ok(())
    }

    /// σ_b for a round with `expected_clients` (m): the configured value or m / 20.
    pub fn count_noise_std_for(&self, expected_clients: f64) -> f64 {
        self.count_noise_std.unwrap_or(expected_clients / 20.0)
    }
}

/// The adaptive clip's state: the current C. Serialisable, so it survives a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveClip {
    config: AdaptiveClipConfig,
    clip: f64,
}

impl AdaptiveClip {
    /// Starts at `config.initial_clip`.
    pub fn new(config: AdaptiveClipConfig) -> Result<Self> {
        config.validate()?;
        let clip = config.initial_clip;
        Ok(Self { config, clip })
    }

    /// The clip C to use this round.
    pub fn clip(&self) -> f64 {
        self.clip
    }

    /// The configuration.
    pub fn config(&self) -> &AdaptiveClipConfig {
        &self.config
    }

    /// One round's update from the number of clients whose update was within C:
    /// b̄ = (Σ b_k + N(0, σ_b²)) / m, then the geometric or linear rule. Returns the new C.
    /// `expected_clients` (m) is the *expected* cohort size q·N, not the realised one.
    pub fn observe(
        &mut self,
        within_bound: usize,
        expected_clients: f64,
        rng: &mut SecureRng,
    ) -> Result<f64> {
        if !(expected_clients > 0.0 && expected_clients.is_finite()) {
            return Err(invalid(
                "expected_clients",
                expected_clients,
                "must be a finite number > 0",
            ));
        }
        let sigma_b = self.config.count_noise_std_for(expected_clients);
        let noisy = within_bound as f64 + sigma_b * rng.standard_normal();
        let fraction = noisy / expected_clients;
        let step = self.config.clip_learning_rate * (fraction - self.config.target_quantile);
        self.clip = match self.config.rule {
            ClipUpdateRule::Geometric => self.clip * (-step).exp(),
            ClipUpdateRule::Linear => (self.clip - step).max(f64::MIN_POSITIVE),
        };
        Ok(self.clip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_factor_matches_the_spec_vector() {
        // docs/privacy.md: factor for b̄ = 0 / 0.5 / 1 is 1.1052 / 1 / 0.9048 (γ = 0.5, η = 0.2).
        for (within, want) in [(0usize, 1.1052), (50, 1.0), (100, 0.9048)] {
            let mut a = AdaptiveClip::new(AdaptiveClipConfig {
                count_noise_std: Some(0.0),
                ..Default::default()
            })
            .unwrap();
            let c = a
                .observe(within, 100.0, &mut SecureRng::simulated(0, 0))
                .unwrap();
            assert!((c / 0.1 - want).abs() < 1e-4, "b̄ = {}: {}", within, c / 0.1);
        }
    }

    #[test]
    fn adaptive_clipping_refuses_a_noise_multiplier_it_cannot_split() {
        let e = update_noise_multiplier(10.0, 5.0).unwrap_err().to_string();
        assert!(
            e.starts_with("noise_multiplier = 10: must be < 2 × count_noise_std = 10"),
            "{e}"
        );
    }

    #[test]
    fn clip_rejects_nan_and_names_the_index() {
        let e = clip_to_norm(&mut [1.0, f32::NAN], 1.0)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "update: value NaN at index 1 is not finite");
        assert!(clip_to_norm(&mut [1.0], 0.0).is_err());
        assert!(normalise_then_clip(&mut [1.0], 0.0, 1.0).is_err());
    }

    #[test]
    fn capped_weight_is_at_most_one() {
        assert_eq!(capped_weight(50.0, 100.0).unwrap(), 0.5);
        assert_eq!(capped_weight(500.0, 100.0).unwrap(), 1.0);
    }

    #[test]
    fn adaptive_config_rejects_unknown_keys() {
        let e =
            serde_json::from_str::<AdaptiveClipConfig>(r#"{"target_quantil": 0.5}"#).unwrap_err();
        assert!(
            e.to_string().contains("unknown field `target_quantil`"),
            "{e}"
        );
    }
}
