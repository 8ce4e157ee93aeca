//! Client-level differential privacy (DP-FedAvg) as stages of the round; the spec is
//! docs/privacy.md ("DP-FedAvg", "Rates and DP", "Wiring").
//!
//! The one decision: each client's update is **normalised to the public reference rate
//! first** (`d_k = Δ_k ⊙ Λ_ref/Λ_k` per parameter group, Λ_ref the rate sums of the base
//! plan at the pool's mean size), **then clipped** to C, weighted by a capped weight
//! `w_k ≤ 1`, summed, divided by the *expected* total weight qW and noised with
//! N(0, (z_Δ·C/(qW))²). Clipping the normalised update is clipping `Δ_k/Λ_k` at the public
//! bound C/Λ_ref: every client has sensitivity C/(qW) whatever its rate, and a client at
//! the reference rate is clipped exactly as in plain DP-FedAvg.
//!
//! Where it runs: on the per-client path the server clips (a trusted server, central
//! noise); on the linear path each client normalises, clips and weights its own update
//! ([`DpClient`]) and, with distributed noise, adds its share of the noise before secure
//! aggregation. The accountant composes one sampled Gaussian mechanism per round with
//! (q, z), z the round's whole noise multiplier: the update's own multiplier z_Δ is what
//! is left after adaptive clipping's count and noised rate statistics take their part,
//! z_Δ⁻² = z⁻² − (2σ_b)⁻² − z_s⁻².

use super::{stream, Purpose};
use fedpace_core::ext::Payload;
use fedpace_core::{ClientAggregate, ClientId, ClientPool, Error, PrivacySummary, Result};
use fedpace_params::{l2_norm, ParamSpec};
use fedpace_privacy::accountant::{epsilon_for, RdpAccountant};
use fedpace_privacy::dp::{
    add_gaussian_noise, capped_weight, clip_to_norm, AdaptiveClip, AdaptiveClipConfig,
};
use fedpace_privacy::{Randomness, SecureRng};
use serde::{Deserialize, Serialize};

/// Where the noise of the aggregate comes from (`privacy.noise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoisePlacement {
    /// The server adds N(0, σ²) to the sum (a trusted server).
    #[default]
    Central,
    /// Each client adds its share N(0, σ²/t) before secure aggregation, t the survivor
    /// threshold, so any sum the protocol can produce carries at least σ².
    Distributed,
}

/// How the statistics a rate policy reads reach the server (`privacy.rates`,
/// docs/privacy.md "Private rates").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RatesMode {
    /// In the clear, in each client's report (the policies' own behaviour).
    #[default]
    Public,
    /// Clipped to a bound and noised by the client (Gaussian, multiplier
    /// `rate_noise_multiplier`), accounted in ε: plans depend only on the noised values.
    Noised,
    /// The client adapts its own rate from its own statistic and the cohort's mean, which
    /// reaches the server only inside the secure sum; neither the statistic nor the rate
    /// leaves the client.
    Local,
}

/// The `[privacy]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// A fixed clip bound C on each client's normalised update (L2, all parameters).
    pub clip: Option<f64>,
    /// Adaptive clipping (Andrew et al.): C tracks a quantile of the update norms.
    pub adaptive_clip: Option<AdaptiveClipConfig>,
    /// z: the noise multiplier of the round's mechanism as the accountant sees it
    /// (0: clipping only, ε = ∞). Required with `clip` or `adaptive_clip`.
    pub noise_multiplier: Option<f64>,
    /// `central` (default) or `distributed` (needs `[secure_aggregation]`).
    pub noise: NoisePlacement,
    /// δ of the reported (ε, δ) (default 1e-5).
    pub delta: f64,
    /// ŵ: client weights w_k = min(n_k/ŵ, 1); absent: every client weighs 1.
    pub weight_cap: Option<f64>,
    /// How a rate policy's statistics reach the server: `public`, `noised`, `local`.
    pub rates: RatesMode,
    /// z_s of the noised rate statistics (`rates = "noised"`); must exceed z.
    pub rate_noise_multiplier: Option<f64>,
    /// Bound B on a client's loss statistic before noising (`rates = "noised"`).
    pub loss_bound: f64,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            clip: None,
            adaptive_clip: None,
            noise_multiplier: None,
            noise: NoisePlacement::Central,
            delta: 1e-5,
            weight_cap: None,
            rates: RatesMode::Public,
            rate_noise_multiplier: None,
            loss_bound: 10.0,
        }
    }
}

fn positive(key: &str, v: f64) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(key, v, "a finite number > 0"))
    }
}

impl PrivacyConfig {
    /// Whether differential privacy is on (a clip bound is set).
    pub fn dp(&self) -> bool {
        self.clip.is_some() || self.adaptive_clip.is_some()
    }

    /// Checks ranges; errors name the key under `privacy.`.
    pub fn validate(&self) -> Result<()> {
        if self.clip.is_some() && self.adaptive_clip.is_some() {
            return Err(Error::invalid(
                "privacy.adaptive_clip",
                "set together with privacy.clip",
                "one of clip (a fixed bound) or adaptive_clip",
            ));
        }
        if let Some(c) = self.clip {
            positive("privacy.clip", c)?;
        }
        if let Some(a) = &self.adaptive_clip {
            a.validate()
                .map_err(|e| Error::invalid("privacy.adaptive_clip", e, "valid settings"))?;
        }
        match (self.dp(), self.noise_multiplier) {
            (true, None) => {
                return Err(Error::invalid(
                    "privacy.noise_multiplier",
                    "missing",
                    "a noise multiplier z >= 0 with privacy.clip or privacy.adaptive_clip \
                     (`fedpace privacy CONFIG --target-epsilon E` finds one)",
                ))
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    "privacy.noise_multiplier",
                    "set without a clip",
                    "privacy.clip or privacy.adaptive_clip beside it (noise needs a bound)",
                ))
            }
            (_, Some(z)) if !(z >= 0.0 && z.is_finite()) => {
                return Err(Error::invalid(
                    "privacy.noise_multiplier",
                    z,
                    "a finite number >= 0",
                ))
            }
            _ => {}
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(Error::invalid("privacy.delta", self.delta, "in (0, 1)"));
        }
        if let Some(w) = self.weight_cap {
            positive("privacy.weight_cap", w)?;
        }
        positive("privacy.loss_bound", self.loss_bound)?;
        match (self.rates, self.rate_noise_multiplier) {
            (RatesMode::Noised, None) => {
                return Err(Error::invalid(
                    "privacy.rate_noise_multiplier",
                    "missing",
                    "a multiplier z_s > privacy.noise_multiplier with rates = \"noised\"",
                ))
            }
            (RatesMode::Noised, Some(_)) if !self.dp() => {
                return Err(Error::invalid(
                    "privacy.rates",
                    "\"noised\"",
                    "privacy.clip or privacy.adaptive_clip and noise_multiplier beside it \
                     (noised statistics are accounted in the same ε)",
                ))
            }
            (RatesMode::Noised, Some(zs)) => positive("privacy.rate_noise_multiplier", zs)?,
            (_, Some(_)) => {
                return Err(Error::invalid(
                    "privacy.rate_noise_multiplier",
                    "set",
                    "only with rates = \"noised\"",
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// The update's own noise multiplier z_Δ from the round's z:
    /// z_Δ⁻² = z⁻² − (2σ_b)⁻² − z_s⁻², for a cohort of `expected_clients` (σ_b's default).
    pub fn update_noise_multiplier(&self, expected_clients: f64) -> Result<f64> {
        let z = self.noise_multiplier.unwrap_or(0.0);
        if z == 0.0 {
            return Ok(0.0);
        }
        let mut inv = z.powi(-2);
        let mut parts = Vec::new();
        if let Some(a) = &self.adaptive_clip {
            let sigma_b = a.count_noise_std_for(expected_clients);
            if sigma_b > 0.0 {
                inv -= (2.0 * sigma_b).powi(-2);
                parts.push(format!(
                    "adaptive clipping's count (2σ_b = {})",
                    2.0 * sigma_b
                ));
            }
        }
        if let (RatesMode::Noised, Some(zs)) = (self.rates, self.rate_noise_multiplier) {
            inv -= zs.powi(-2);
            parts.push(format!("the noised rate statistics (z_s = {zs})"));
        }
        if inv <= 0.0 {
            return Err(Error::invalid(
                "privacy.noise_multiplier",
                z,
                format!(
                    "a z that leaves the update some noise after {} take their part \
                     (z⁻² must exceed the sum of their multipliers' z⁻²)",
                    parts.join(" and ")
                ),
            ));
        }
        Ok(inv.powf(-0.5))
    }
}

/// Sent to each client on the linear path: the client normalises its update to the
/// reference rate sums, clips it to `clip`, multiplies by its capped weight and adds its
/// noise share; it returns its adaptive-clipping bit (centred, with its share of the
/// count's noise) in [`DpScaled`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpClient {
    /// C.
    pub clip: f64,
    /// Λ_ref per group (normalise `Δ_g ← Δ_g · Λ_ref,g / Λ_g`); empty: no normalisation.
    pub reference: Vec<f64>,
    /// The client's capped weight w_k ≤ 1.
    pub weight: f64,
    /// Standard deviation of the client's share of the update noise (0: central noise).
    pub noise_std: f64,
    /// Standard deviation of the client's share of the count's noise (0: none).
    pub count_noise_std: f64,
    /// Where the client's noise comes from (a simulation seed only in simulation).
    pub randomness: Randomness,
}

impl Payload for DpClient {
    const NAME: &'static str = "dp-client";
}

/// What a clipping client returns beside its contribution: b_k − ½ (+ its noise share),
/// b_k = 1 when its normalised update was within C.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpScaled {
    /// b_k − ½, plus the client's share of the count noise.
    pub centred_bit: f64,
}

impl Payload for DpScaled {
    const NAME: &'static str = "dp-scaled";
    fn validate(&self, _spec: &ParamSpec) -> std::result::Result<(), String> {
        if self.centred_bit.is_finite() {
            Ok(())
        } else {
            Err(format!("centred_bit {} must be finite", self.centred_bit))
        }
    }
}

/// `d ← Δ ⊙ Λ_ref/Λ` per group (groups with Λ = 0, or personal groups, become 0).
pub(crate) fn normalise_to_reference(
    delta: &mut [f32],
    spec: &ParamSpec,
    rate_sums: &[f64],
    reference: &[f64],
) {
    if reference.is_empty() {
        return;
    }
    for e in spec.entries() {
        let lam = rate_sums.get(e.group).copied().unwrap_or(0.0);
        let r = reference.get(e.group).copied().unwrap_or(0.0);
        let c = if lam > 0.0 { (r / lam) as f32 } else { 0.0 };
        for v in &mut delta[e.range()] {
            *v *= c;
        }
    }
}

/// The client's side on the linear path: normalise, clip, weight, add its noise share.
/// Returns the centred bit with its noise share. `rng` is the client's generator.
pub fn client_contribution(
    p: &DpClient,
    delta: &mut [f32],
    spec: &ParamSpec,
    rate_sums: &[f64],
    rng: &mut SecureRng,
) -> Result<f64> {
    normalise_to_reference(delta, spec, rate_sums, &p.reference);
    let report = clip_to_norm(delta, p.clip).map_err(privacy_error)?;
    for v in delta.iter_mut() {
        *v = (*v as f64 * p.weight) as f32;
    }
    add_gaussian_noise(delta, p.noise_std, rng).map_err(privacy_error)?;
    let bit = if report.within_bound() { 0.5 } else { -0.5 };
    Ok(bit + p.count_noise_std * rng.standard_normal())
}

pub(crate) fn privacy_error(e: fedpace_privacy::Error) -> Error {
    Error::Backend(e.to_string())
}

/// The clip bound's state: fixed, or adaptive (serialisable, checkpointed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Clip {
    Fixed(f64),
    Adaptive(AdaptiveClip),
}

impl Clip {
    fn value(&self) -> f64 {
        match self {
            Clip::Fixed(c) => *c,
            Clip::Adaptive(a) => a.clip(),
        }
    }
}

/// What the stage keeps across rounds (checkpointed): the clip and the spent budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DpState {
    clip: Clip,
    accountant: RdpAccountant,
}

/// The server's side of client-level DP (see the module doc).
#[derive(Debug, Clone)]
pub struct DpStage {
    config: PrivacyConfig,
    randomness: Randomness,
    state: DpState,
    /// Set at start, from the pool and the base plan (public values).
    q: f64,
    expected_weight: f64,
    expected_clients: f64,
    reference: Vec<f64>,
    update_multiplier: f64,
    round_epsilon: f64,
    last_clip: Option<f64>,
}

/// The result of one round's DP aggregation.
pub(crate) struct DpRound {
    pub delta: Vec<f32>,
    pub clients: Vec<ClientAggregate>,
    pub sq_norms: Vec<f64>,
    pub summary: PrivacySummary,
}

impl DpStage {
    /// A stage from a validated config with DP on.
    pub fn new(config: PrivacyConfig, randomness: Randomness) -> Result<Self> {
        config.validate()?;
        let clip = match (&config.clip, &config.adaptive_clip) {
            (Some(c), _) => Clip::Fixed(*c),
            (None, Some(a)) => Clip::Adaptive(AdaptiveClip::new(a.clone()).map_err(privacy_error)?),
            (None, None) => {
                return Err(Error::invalid(
                    "privacy.clip",
                    "missing",
                    "privacy.clip or privacy.adaptive_clip",
                ))
            }
        };
        Ok(Self {
            config,
            randomness,
            state: DpState {
                clip,
                accountant: RdpAccountant::new(),
            },
            q: 0.0,
            expected_weight: 0.0,
            expected_clients: 0.0,
            reference: Vec::new(),
            update_multiplier: 0.0,
            round_epsilon: 0.0,
            last_clip: None,
        })
    }

    /// The config.
    pub fn config(&self) -> &PrivacyConfig {
        &self.config
    }

    /// Before the first round: q = clients per round / N (Poisson sampling), the expected
    /// total weight qW (one pass over the pool's sizes with a weight cap), the reference
    /// rate sums Λ_ref (the base plan at the pool's mean training-set size), z_Δ and the
    /// ε of one round. Called again after a restore: keeps the clip and the spent budget.
    pub fn start(
        &mut self,
        pool: &dyn ClientPool,
        per_round: usize,
        nominal: Vec<f64>,
        normalize: bool,
    ) -> Result<()> {
        let n = pool.len();
        if n == 0 {
            return Err(Error::invalid("pool", 0, "at least one client"));
        }
        self.q = (per_round as f64 / n as f64).min(1.0);
        let total = match self.config.weight_cap {
            None => n as f64,
            Some(cap) => {
                let mut w = 0.0;
                for id in pool.ids() {
                    w += capped_weight(pool.info(id)?.num_train as f64, cap)
                        .map_err(privacy_error)?;
                }
                w
            }
        };
        self.expected_weight = self.q * total;
        self.expected_clients = self.q * n as f64;
        if self.expected_weight <= 0.0 {
            return Err(Error::invalid(
                "privacy.weight_cap",
                self.config.weight_cap.unwrap_or(1.0),
                "a cap that leaves the pool a positive total weight",
            ));
        }
        if normalize && !nominal.iter().any(|r| *r > 0.0) {
            return Err(Error::invalid(
                "privacy",
                format!("reference rate sums {nominal:?}"),
                "a base plan with a rate > 0 and at least one local step (updates are \
                 normalised to it; or set strategy.normalize = \"off\")",
            ));
        }
        self.reference = if normalize { nominal } else { Vec::new() };
        self.update_multiplier = self.config.update_noise_multiplier(self.expected_clients)?;
        let z = self.config.noise_multiplier.unwrap_or(0.0);
        self.round_epsilon = epsilon_for(self.q, z, 1, self.config.delta)
            .map_err(privacy_error)?
            .epsilon;
        Ok(())
    }

    /// Poisson sampling probability q.
    pub fn sampling_rate(&self) -> f64 {
        self.q
    }

    /// The reference rate sums Λ_ref (empty without normalisation).
    pub fn reference(&self) -> &[f64] {
        &self.reference
    }

    /// The clip bound C for this round.
    pub fn clip(&self) -> f64 {
        self.state.clip.value()
    }

    /// The clip bound of the last aggregated round (C before adaptive clipping moved it).
    pub fn clip_used(&self) -> f64 {
        self.last_clip.unwrap_or_else(|| self.clip())
    }

    /// qW, the expected total weight of a round.
    pub fn expected_weight(&self) -> f64 {
        self.expected_weight
    }

    /// Client `n_k`'s capped weight.
    pub fn weight(&self, examples: u64) -> Result<f64> {
        match self.config.weight_cap {
            None => Ok(1.0),
            Some(cap) => capped_weight(examples as f64, cap).map_err(privacy_error),
        }
    }

    /// Standard deviation of the noise on the fixed-denominator mean: z_Δ · C / (qW).
    fn noise_std(&self) -> f64 {
        self.update_multiplier * self.clip() / self.expected_weight
    }

    /// σ_b of adaptive clipping's count (0 for a fixed clip).
    fn count_std(&self) -> f64 {
        match &self.config.adaptive_clip {
            Some(a) if self.config.noise_multiplier.unwrap_or(0.0) > 0.0 => {
                a.count_noise_std_for(self.expected_clients)
            }
            _ => 0.0,
        }
    }

    /// The payload for one client on the linear path; `threshold` is the fewest inputs
    /// secure aggregation will sum (distributed noise is split over them).
    pub fn client_payload(&self, examples: u64, threshold: usize) -> Result<DpClient> {
        let share = match self.config.noise {
            NoisePlacement::Central => 0.0,
            NoisePlacement::Distributed => 1.0 / (threshold.max(1) as f64).sqrt(),
        };
        Ok(DpClient {
            clip: self.clip(),
            reference: self.reference.clone(),
            weight: self.weight(examples)?,
            noise_std: self.update_multiplier * self.clip() * share,
            count_noise_std: self.count_std() * share,
            randomness: self.randomness,
        })
    }

    fn rng(&self, round: u32, purpose: Purpose) -> Result<SecureRng> {
        self.randomness
            .rng(stream(round, 0, purpose))
            .map_err(privacy_error)
    }

    /// Per-client path (trusted server): normalise each accepted update to the reference
    /// rates, clip to C, weight, sum, divide by qW, add central noise; then adaptive
    /// clipping and the accountant. `shared[g] == false` marks personal groups (zeroed).
    pub(crate) fn aggregate_central(
        &mut self,
        round: u32,
        spec: &ParamSpec,
        accepted: &[(ClientId, &fedpace_core::TrainRes)],
        shared: &[bool],
    ) -> Result<DpRound> {
        let c = self.clip();
        let mut sum = vec![0f64; spec.total_len()];
        let mut within = 0usize;
        let mut contributions = Vec::with_capacity(accepted.len());
        for (_, r) in accepted {
            let mut d = r.delta.as_slice().to_vec();
            zero_personal(&mut d, spec, shared);
            normalise_to_reference(&mut d, spec, &r.report.rate_sum, &self.reference);
            let report = clip_to_norm(&mut d, c).map_err(privacy_error)?;
            within += report.within_bound() as usize;
            let w = self.weight(r.num_examples)?;
            for (s, v) in sum.iter_mut().zip(&d) {
                *s += w * *v as f64;
            }
            contributions.push((d, w));
        }
        let mut delta: Vec<f32> = sum.iter().map(|s| *s as f32).collect();
        let std = self.noise_std();
        let scale = 1.0 / self.expected_weight;
        delta
            .iter_mut()
            .for_each(|v| *v = (*v as f64 * scale) as f32);
        add_gaussian_noise(&mut delta, std, &mut self.rng(round, Purpose::UpdateNoise)?)
            .map_err(privacy_error)?;
        let count_noise =
            self.count_std() * self.rng(round, Purpose::CountNoise)?.standard_normal();
        let fraction = self.observe_count(within as f64 + count_noise)?;
        let clients = per_client(accepted, &contributions, &delta, self.expected_weight);
        let sq_norms = contributions
            .iter()
            .map(|(d, w)| (w * l2_norm(d)).powi(2))
            .collect();
        Ok(DpRound {
            delta,
            clients,
            sq_norms,
            summary: self.account(c, std, fraction)?,
        })
    }

    /// Linear path: `sum` is Σ_k w_k·clip(d_k) (+ the clients' noise shares) and
    /// `centred_bits` Σ_k (b_k − ½ + share); `count` clients are in the sums.
    pub(crate) fn finish_linear(
        &mut self,
        round: u32,
        mut sum: Vec<f32>,
        centred_bits: f64,
        count: usize,
    ) -> Result<(Vec<f32>, PrivacySummary)> {
        let c = self.clip();
        let scale = 1.0 / self.expected_weight;
        sum.iter_mut().for_each(|v| *v = (*v as f64 * scale) as f32);
        let std = self.noise_std();
        let mut noisy_count = centred_bits + count as f64 / 2.0;
        if self.config.noise == NoisePlacement::Central {
            add_gaussian_noise(&mut sum, std, &mut self.rng(round, Purpose::UpdateNoise)?)
                .map_err(privacy_error)?;
            noisy_count +=
                self.count_std() * self.rng(round, Purpose::CountNoise)?.standard_normal();
        }
        let fraction = self.observe_count(noisy_count)?;
        Ok((sum, self.account(c, std, fraction)?))
    }

    /// Adaptive clipping's update from the noised count; the noised fraction b̄.
    fn observe_count(&mut self, noisy_count: f64) -> Result<Option<f64>> {
        let m = self.expected_clients;
        match &mut self.state.clip {
            Clip::Fixed(_) => Ok(None),
            Clip::Adaptive(a) => {
                a.observe_noisy_count(noisy_count, m)
                    .map_err(privacy_error)?;
                Ok(Some(noisy_count / m))
            }
        }
    }

    /// One round into the accountant; the round's summary.
    fn account(&mut self, clip: f64, std: f64, fraction: Option<f64>) -> Result<PrivacySummary> {
        self.last_clip = Some(clip);
        let z = self.config.noise_multiplier.unwrap_or(0.0);
        self.state
            .accountant
            .compose_sampled_gaussian(self.q, z, 1)
            .map_err(privacy_error)?;
        let epsilon = self
            .state
            .accountant
            .epsilon(self.config.delta)
            .map_err(privacy_error)?
            .epsilon;
        Ok(PrivacySummary {
            epsilon,
            round_epsilon: self.round_epsilon,
            delta: self.config.delta,
            noise_multiplier: z,
            sampling_rate: self.q,
            clip,
            noise_std: std,
            unclipped_fraction: fraction,
        })
    }

    /// The clip and the spent budget, encoded.
    pub fn save_state(&self) -> Result<Vec<u8>> {
        fedpace_core::codec::to_cbor(&self.state)
    }

    /// Restores [`DpStage::save_state`]'s bytes.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.state = fedpace_core::codec::from_cbor(bytes, "privacy stage state")?;
        Ok(())
    }
}

/// Zeroes the personal groups (`shared[g] == false`).
pub(crate) fn zero_personal(d: &mut [f32], spec: &ParamSpec, shared: &[bool]) {
    for e in spec.entries() {
        if !shared.get(e.group).copied().unwrap_or(true) {
            d[e.range()].iter_mut().for_each(|v| *v = 0.0);
        }
    }
}

/// Per-client weight p̃_k = w_k/(qW) and cosine of its contribution to the aggregate.
fn per_client(
    accepted: &[(ClientId, &fedpace_core::TrainRes)],
    contributions: &[(Vec<f32>, f64)],
    aggregate: &[f32],
    expected_weight: f64,
) -> Vec<ClientAggregate> {
    let agg_norm = l2_norm(aggregate);
    accepted
        .iter()
        .zip(contributions)
        .map(|((id, _), (d, w))| {
            let n = l2_norm(d);
            let cos = if n > 0.0 && agg_norm > 0.0 {
                fedpace_params::dot(d, aggregate) / (n * agg_norm)
            } else {
                0.0
            };
            ClientAggregate {
                client: *id,
                weight: w / expected_weight,
                cosine_to_aggregate: cos,
            }
        })
        .collect()
}
