//! Device profiles and systems heterogeneity for any synchronous strategy.
//!
//! `[devices]` in an experiment gives distributions of per-client compute speed
//! (local steps per simulated second), bandwidth (bytes/s) and availability (the
//! probability of being reachable in a round), a per-round dropout probability, the
//! FedProx straggler protocol and a round deadline. Each client's profile is drawn
//! once from `(seed, client)`; every per-round draw from `(seed, round, client)`, so a
//! run is deterministic and FedAvg and FedProx see the same stragglers.
//!
//! [`Systems`] wraps a strategy. Per round it (1) hides unavailable clients from the
//! inner strategy's sampler, (2) applies the straggler protocol to the selected clients
//! (docs/datasets.md §4.2: `round(M·(1−s))` stay active; each straggler gets a budget of a
//! uniform number of epochs in 1..E−1, or of steps in 1..τ−1 when the plan counts
//! steps) and (3) the deadline, by the simulated clock ([`crate::clock`]). A late or
//! straggling client is either dropped or keeps partial work, which reaches it as
//! [`RatePlan::max_steps`](fedpace_core::RatePlan::max_steps), so it composes with every
//! strategy and rate policy. Dropouts are selected clients whose update never arrives.
//!
//! `epochs = { min, max }` gives every selected client a random number of local
//! epochs `E_k ~ U{min..max}` per round, drawn from `(seed, round, client)` (FedNova's
//! heterogeneous-τ setting, docs/algorithms.md §B.3 and Appendix Z #3). It replaces the
//! plan's [`RatePlan::work`](fedpace_core::RatePlan::work) before the straggler
//! protocol and the deadline, so those apply to the drawn work, and the clients' rate
//! sums (hence objective-consistency normalisation) follow it.

pub use crate::clock::DeviceProfile;
use crate::clock::{completion_seconds, model_bytes, steps_within};
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{
    AggregateSummary, ClientId, ClientPool, Error, LocalWork, PoolSubset, RatePlan, Reply, Result,
    RoundTiming, Strategy, TrainIns, TrainRes,
};
use fedpace_params::ParamTree;
use rand::seq::index::sample;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Keeps device draws apart from other uses of `Purpose::Algorithm`.
const SALT_PROFILE: u64 = 0x5EED_DE71_CE00_0001;
const SALT_ROUND: u64 = 0x5EED_DE71_CE00_0002;

/// A distribution of one per-client device attribute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Distribution {
    /// Always `value`.
    Constant {
        /// The value.
        value: f64,
    },
    /// Uniform on `[low, high]`.
    Uniform {
        /// Lower end.
        low: f64,
        /// Upper end.
        high: f64,
    },
    /// `exp(N(mu, sigma²))`.
    LogNormal {
        /// Mean of the log.
        mu: f64,
        /// Standard deviation of the log (≥ 0).
        sigma: f64,
    },
}

impl Distribution {
    /// Draws one value.
    pub fn draw(&self, rng: &mut impl Rng) -> f64 {
        match *self {
            Distribution::Constant { value } => value,
            Distribution::Uniform { low, high } => low + (high - low) * rng.gen::<f64>(),
            Distribution::LogNormal { mu, sigma } => {
                // Box–Muller.
                let u1: f64 = 1.0 - rng.gen::<f64>();
                let u2: f64 = rng.gen();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (mu + sigma * z).exp()
            }
        }
    }

    /// The smallest and the largest value a draw can take (a log-normal is unbounded
    /// unless σ = 0).
    pub fn bounds(&self) -> (f64, f64) {
        match *self {
            Distribution::Constant { value } => (value, value),
            Distribution::Uniform { low, high } => (low, high),
            Distribution::LogNormal { mu, sigma: 0.0 } => (mu.exp(), mu.exp()),
            Distribution::LogNormal { .. } => (0.0, f64::INFINITY),
        }
    }

    /// Checks that every draw lies in `(lo, hi]` (or `[lo, hi]` with `closed`).
    fn validate(&self, field: &str, lo: f64, hi: f64, closed: bool) -> Result<()> {
        let ok = |v: f64| (v > lo || (closed && v == lo)) && v <= hi;
        let expected = format!("values in {}{lo}, {hi}]", if closed { "[" } else { "(" });
        match *self {
            Distribution::Constant { value } if !ok(value) => {
                Err(Error::invalid(format!("{field}.value"), value, expected))
            }
            Distribution::Uniform { low, high } if !(ok(low) && ok(high) && low <= high) => {
                Err(Error::invalid(
                    format!("{field}.low/high"),
                    format!("{low}/{high}"),
                    format!("low <= high, {expected}"),
                ))
            }
            Distribution::LogNormal { mu, sigma }
                if !(mu.is_finite() && sigma.is_finite() && sigma >= 0.0 && lo <= 0.0) =>
            {
                Err(Error::invalid(
                    format!("{field}.mu/sigma"),
                    format!("{mu}/{sigma}"),
                    "finite mu, sigma >= 0 (and a positive attribute)",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// An inclusive range of local epochs, `{ min = 2, max = 5 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRange {
    /// Fewest epochs (≥ 1).
    pub min: u32,
    /// Most epochs (≥ `min`).
    pub max: u32,
}

/// What happens to a straggler or a client that would miss the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatePolicy {
    /// It is not aggregated (FedAvg's baseline in FedProx).
    Drop,
    /// It keeps the work it finished (FedProx): its plan gets a smaller `max_steps`.
    #[default]
    Partial,
}

/// The `[devices]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// Local steps per simulated second (default constant 1).
    pub speed: Distribution,
    /// Bytes per simulated second, down and up (default constant 1e12: ≈ free).
    pub bandwidth: Distribution,
    /// Probability of being available in a round, drawn per client (default 1).
    pub availability: Distribution,
    /// Probability that a selected client drops out of a round, drawn per client: a
    /// number (the same for everyone) or a distribution (default 0).
    #[serde(deserialize_with = "number_or_distribution")]
    pub dropout: Distribution,
    /// The largest number of local steps a device can run in a round, drawn per client
    /// (rounded, at least 1); its plan's `max_steps` is capped by it (default none).
    pub max_steps: Option<Distribution>,
    /// Fraction of the selected clients that straggle each round (default 0).
    pub stragglers: f64,
    /// Round deadline in simulated seconds (default none: wait for everyone).
    pub deadline: Option<f64>,
    /// Stragglers and late clients: `partial` (default) or `drop`.
    pub late: LatePolicy,
    /// Random local epochs per (round, client), `E_k ~ U{min..max}`, replacing the
    /// plan's work (default none: the plan's work).
    pub epochs: Option<EpochRange>,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        Self {
            speed: Distribution::Constant { value: 1.0 },
            bandwidth: Distribution::Constant { value: 1e12 },
            availability: Distribution::Constant { value: 1.0 },
            dropout: Distribution::Constant { value: 0.0 },
            max_steps: None,
            stragglers: 0.0,
            deadline: None,
            late: LatePolicy::Partial,
            epochs: None,
        }
    }
}

impl DevicesConfig {
    /// Checks ranges; errors name the key under `devices.`.
    pub fn validate(&self) -> Result<()> {
        self.speed
            .validate("devices.speed", 0.0, f64::INFINITY, false)?;
        self.bandwidth
            .validate("devices.bandwidth", 0.0, f64::INFINITY, false)?;
        self.availability
            .validate("devices.availability", 0.0, 1.0, true)?;
        self.dropout.validate("devices.dropout", 0.0, 1.0, true)?;
        // Settings under which no client could ever train: rejected here rather than
        // found after rounds of an untrained model.
        if self.dropout.bounds().0 >= 1.0 {
            return Err(Error::invalid(
                "devices.dropout",
                self.dropout.bounds().0,
                "below 1 for some clients (at 1 every selected client drops out of every round)",
            ));
        }
        if self.availability.bounds().1 <= 0.0 {
            return Err(Error::invalid(
                "devices.availability",
                self.availability.bounds().1,
                "above 0 for some clients (at 0 no client is ever available)",
            ));
        }
        if let Some(m) = &self.max_steps {
            m.validate("devices.max_steps", 1.0, f64::INFINITY, true)?;
        }
        if !(0.0..=1.0).contains(&self.stragglers) {
            return Err(Error::invalid(
                "devices.stragglers",
                self.stragglers,
                "a fraction in [0, 1]",
            ));
        }
        if let Some(e) = self.epochs {
            if !(e.min >= 1 && e.min <= e.max) {
                return Err(Error::invalid(
                    "devices.epochs.min/max",
                    format!("{}/{}", e.min, e.max),
                    "1 <= min <= max",
                ));
            }
        }
        if let Some(d) = self.deadline {
            if !(d.is_finite() && d > 0.0) {
                return Err(Error::invalid(
                    "devices.deadline",
                    d,
                    "simulated seconds > 0",
                ));
            }
        }
        Ok(())
    }
}

impl DevicesConfig {
    /// Checks `deadline` against the fastest device the distributions allow, for a model
    /// of `params` f32 values: when not even one local step and the model's download and
    /// upload fit, no client can ever train. Unbounded (log-normal) speeds or bandwidths
    /// pass; the round loop then stops a run that never trains.
    pub fn check_deadline(&self, params: usize) -> Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let fastest = DeviceProfile {
            speed: self.speed.bounds().1,
            bandwidth: self.bandwidth.bounds().1,
            availability: 1.0,
            dropout: 0.0,
            max_steps: None,
        };
        let one_step = completion_seconds(&fastest, 1, model_bytes(params));
        if one_step > deadline {
            return Err(Error::invalid(
                "devices.deadline",
                deadline,
                format!(
                    "at least {one_step:.3e} simulated seconds: the fastest device needs that \
                     for one local step and the model's download and upload ({params} \
                     parameters), so no client could ever finish"
                ),
            ));
        }
        Ok(())
    }
}

/// Reads `dropout = 0.1` as a constant, or a distribution table.
fn number_or_distribution<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Distribution, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOr {
        Number(f64),
        Dist(Distribution),
    }
    Ok(match NumberOr::deserialize(d)? {
        NumberOr::Number(value) => Distribution::Constant { value },
        NumberOr::Dist(x) => x,
    })
}

/// Every client's profile, drawn once from the run seed.
#[derive(Debug, Clone)]
pub struct Devices {
    cfg: DevicesConfig,
    seed: u64,
}

impl Devices {
    /// Devices for run `seed`.
    pub fn new(cfg: DevicesConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg, seed })
    }

    /// The settings.
    pub fn config(&self) -> &DevicesConfig {
        &self.cfg
    }

    /// Client `id`'s profile (the same every time it is asked).
    pub fn profile(&self, id: ClientId) -> DeviceProfile {
        let mut rng = stream(self.seed ^ SALT_PROFILE, 0, id, Purpose::Algorithm);
        DeviceProfile {
            speed: self.cfg.speed.draw(&mut rng),
            bandwidth: self.cfg.bandwidth.draw(&mut rng),
            availability: self.cfg.availability.draw(&mut rng).clamp(0.0, 1.0),
            // Drawn after the first three so adding them kept earlier profiles unchanged.
            dropout: self.cfg.dropout.draw(&mut rng).clamp(0.0, 1.0),
            max_steps: self
                .cfg
                .max_steps
                .as_ref()
                .map(|m| m.draw(&mut rng).round().clamp(1.0, u32::MAX as f64) as u32),
        }
    }

    /// Whether every client is available in every round (availability a constant ≥ 1):
    /// then nothing needs to be drawn per client.
    pub fn always_available(&self) -> bool {
        matches!(self.cfg.availability, Distribution::Constant { value } if value >= 1.0)
    }

    /// Whether client `id` is available in `round`.
    pub fn available(&self, id: ClientId, round: u32) -> bool {
        let a = self.profile(id).availability;
        if a >= 1.0 {
            return true;
        }
        let mut rng = stream(self.seed ^ SALT_ROUND, round as u64, id, Purpose::Algorithm);
        rng.gen::<f64>() < a
    }

    /// Whether client `id` drops out of `round` once selected.
    pub fn drops_out(&self, id: ClientId, round: u32) -> bool {
        let p = self.profile(id).dropout;
        if p <= 0.0 {
            return false;
        }
        let mut rng = stream(
            self.seed ^ SALT_ROUND ^ 1,
            round as u64,
            id,
            Purpose::Algorithm,
        );
        rng.gen::<f64>() < p
    }

    /// Client `id`'s local epochs in `round`, `U{min..max}` (`None` without
    /// `epochs`).
    pub fn local_epochs(&self, id: ClientId, round: u32) -> Option<u32> {
        let e = self.cfg.epochs?;
        let mut rng = stream(
            self.seed ^ SALT_ROUND ^ 4,
            round as u64,
            id,
            Purpose::Algorithm,
        );
        Some(rng.gen_range(e.min..=e.max))
    }

    /// The stragglers among `selected` (sorted by id) in `round`: all but
    /// `round(M·(1−s))` of them, chosen uniformly (FedProx's protocol, §4.2).
    pub fn stragglers(&self, selected: &[ClientId], round: u32) -> Vec<ClientId> {
        let m = selected.len();
        let active = ((m as f64) * (1.0 - self.cfg.stragglers)).round() as usize;
        if active >= m {
            return Vec::new();
        }
        let mut rng = stream(
            self.seed ^ SALT_ROUND ^ 2,
            round as u64,
            0,
            Purpose::Algorithm,
        );
        let keep: Vec<usize> = sample(&mut rng, m, active).into_vec();
        let mut out: Vec<ClientId> = (0..m)
            .filter(|i| !keep.contains(i))
            .map(|i| selected[i])
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether one asynchronous dispatch of client `id` (dispatch number `key`) is a
    /// straggler: with probability `stragglers`, independently per dispatch — the
    /// asynchronous loop has no rounds to take a fixed share of.
    pub fn async_straggler(&self, id: ClientId, key: u32) -> bool {
        let s = self.cfg.stragglers;
        if s <= 0.0 {
            return false;
        }
        let mut rng = stream(
            self.seed ^ SALT_ROUND ^ 5,
            key as u64,
            id,
            Purpose::Algorithm,
        );
        rng.gen::<f64>() < s
    }

    /// A straggler's step budget: `e·⌈n/B⌉` for `e ~ U{1..E−1}` epochs, or `U{1..τ−1}`
    /// steps when the plan counts steps (or E = 1). `None` when there is no partial
    /// work to give (a single step).
    pub fn straggler_budget(
        &self,
        id: ClientId,
        round: u32,
        plan: &RatePlan,
        num_train: u64,
    ) -> Option<u32> {
        let mut rng = stream(
            self.seed ^ SALT_ROUND ^ 3,
            round as u64,
            id,
            Purpose::Algorithm,
        );
        let per_epoch = (num_train as usize).div_ceil(plan.batch_size.max(1) as usize) as u32;
        let full = plan.steps_for(num_train as usize);
        let budget = match plan.work {
            LocalWork::Epochs(e) if e >= 2 => rng.gen_range(1..e) * per_epoch,
            _ if full >= 2 => rng.gen_range(1..full),
            _ => return None,
        };
        Some(budget.min(full))
    }
}

/// Wraps a synchronous strategy with device profiles, stragglers, dropouts and a
/// deadline on the simulated clock (see the module doc).
pub struct Systems {
    inner: Box<dyn Strategy>,
    devices: Devices,
    sim_seconds: f64,
    timing: Option<RoundTiming>,
}

impl Systems {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Strategy>, devices: Devices) -> Self {
        Self {
            inner,
            devices,
            sim_seconds: 0.0,
            timing: None,
        }
    }
}

impl Strategy for Systems {
    fn describe(&self) -> String {
        let c = self.devices.config();
        let epochs = c
            .epochs
            .map_or(String::new(), |e| format!(", epochs={}..={}", e.min, e.max));
        format!(
            "{} with devices(stragglers={}, late={:?}, deadline={:?}, dropout={:?}{epochs})",
            self.inner.describe(),
            c.stragglers,
            c.late,
            c.deadline,
            c.dropout
        )
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Arc<ParamTree>,
        pool: &dyn ClientPool,
        seed: u64,
    ) -> Result<Vec<(ClientId, TrainIns)>> {
        // The reachable clients: the whole pool, or a list of ids (8 bytes a reachable
        // client, for this round only) when availability is drawn.
        let subset;
        let available: &dyn ClientPool = if self.devices.always_available() {
            pool
        } else {
            subset = PoolSubset::filter(pool, |id| self.devices.available(id, round));
            &subset
        };
        let mut timing = RoundTiming::default();
        if available.is_empty() {
            self.timing = Some(timing);
            return Ok(Vec::new());
        }
        let ins = self.inner.configure_train(round, global, available, seed)?;
        let selected: Vec<ClientId> = ins.iter().map(|i| i.0).collect();
        let stragglers = self.devices.stragglers(&selected, round);
        let cfg = self.devices.config().clone();
        let bytes = model_bytes(global.as_slice().len());
        let mut out = Vec::with_capacity(ins.len());
        for (id, mut i) in ins {
            let n = available.info(id).map_or(0, |c| c.num_train);
            if self.devices.drops_out(id, round) {
                timing.dropped.push(id);
                continue;
            }
            if let Some(e) = self.devices.local_epochs(id, round) {
                i.plan.work = LocalWork::Epochs(e);
            }
            let full = i.plan.steps_for(n as usize);
            let mut steps = full;
            if stragglers.contains(&id) {
                match cfg.late {
                    LatePolicy::Drop => {
                        timing.late_dropped.push(id);
                        continue;
                    }
                    LatePolicy::Partial => {
                        if let Some(b) = self.devices.straggler_budget(id, round, &i.plan, n) {
                            steps = b;
                        }
                    }
                }
            }
            let profile = self.devices.profile(id);
            if let Some(m) = profile.max_steps {
                steps = steps.min(m);
            }
            if let Some(deadline) = cfg.deadline {
                if completion_seconds(&profile, steps, bytes) > deadline {
                    match cfg.late {
                        LatePolicy::Drop => {
                            timing.late_dropped.push(id);
                            continue;
                        }
                        LatePolicy::Partial => {
                            let fit = steps_within(&profile, deadline, bytes).min(steps);
                            if fit == 0 {
                                timing.late_dropped.push(id);
                                continue;
                            }
                            steps = fit;
                        }
                    }
                }
            }
            if steps < full {
                i.plan.max_steps = Some(i.plan.max_steps.map_or(steps, |m| m.min(steps)));
                timing.partial.push(id);
            }
            timing
                .completion
                .push((id, completion_seconds(&profile, steps, bytes)));
            out.push((id, i));
        }
        let slowest = timing.completion.iter().map(|c| c.1).fold(0.0f64, f64::max);
        // With a deadline the server waits for it whenever someone is missing.
        timing.round_seconds = match cfg.deadline {
            Some(d) if !(timing.dropped.is_empty() && timing.late_dropped.is_empty()) => {
                d.max(slowest)
            }
            _ => slowest,
        };
        self.sim_seconds += timing.round_seconds;
        timing.sim_seconds = self.sim_seconds;
        self.timing = Some(timing);
        Ok(out)
    }

    fn aggregate_train(
        &mut self,
        round: u32,
        global: &mut ParamTree,
        replies: &[Reply<TrainRes>],
        pool: &dyn ClientPool,
    ) -> Result<AggregateSummary> {
        if replies.is_empty() {
            // Nobody was dispatched (all unavailable, dropped or late): the model stays.
            return Ok(AggregateSummary::default());
        }
        self.inner.aggregate_train(round, global, replies, pool)
    }

    fn exchange(
        &mut self,
        round: u32,
        trained: &[Reply<TrainRes>],
        answers: Option<Vec<Reply<fedpace_core::Extensions>>>,
    ) -> Result<Vec<(ClientId, fedpace_core::ExchangeIns)>> {
        self.inner.exchange(round, trained, answers)
    }

    fn eval_plan(&self) -> RatePlan {
        self.inner.eval_plan()
    }

    fn round_timing(&self) -> Option<RoundTiming> {
        self.timing.clone()
    }

    fn eval_ext(&self) -> fedpace_core::Extensions {
        self.inner.eval_ext()
    }

    fn eval_ext_for(&self, client: fedpace_core::ClientId) -> Result<fedpace_core::Extensions> {
        self.inner.eval_ext_for(client)
    }

    fn observe_round(&mut self, round: u32, summary: &fedpace_core::RoundSummary<'_>) {
        self.inner.observe_round(round, summary);
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        fedpace_core::codec::to_cbor(&(self.sim_seconds, self.inner.save_state()?))
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let (t, inner): (f64, Vec<u8>) =
            fedpace_core::codec::from_cbor(bytes, "devices wrapper state")?;
        self.sim_seconds = t;
        self.inner.restore_state(&inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_is_a_number_or_a_per_client_distribution() {
        let fixed: DevicesConfig = serde_json::from_str(r#"{"dropout": 0.05}"#).unwrap();
        assert_eq!(fixed.dropout, Distribution::Constant { value: 0.05 });
        let drawn: DevicesConfig =
            serde_json::from_str(r#"{"dropout": {"dist": "uniform", "low": 0.0, "high": 0.5}}"#)
                .unwrap();
        let d = Devices::new(drawn, 3).unwrap();
        let p: Vec<f64> = (0..200).map(|id| d.profile(id).dropout).collect();
        assert!(p.iter().all(|v| (0.0..=0.5).contains(v)));
        assert!(
            p.iter().any(|v| *v < 0.1) && p.iter().any(|v| *v > 0.4),
            "not spread"
        );
        // Clients with a higher probability drop out more often over many rounds.
        let (lo, hi) = (
            (0..200)
                .min_by(|a, b| p[*a as usize].total_cmp(&p[*b as usize]))
                .unwrap(),
            (0..200)
                .max_by(|a, b| p[*a as usize].total_cmp(&p[*b as usize]))
                .unwrap(),
        );
        let count = |id| (0..400).filter(|r| d.drops_out(id, *r)).count();
        assert!(
            count(hi) > count(lo) + 100,
            "{} vs {}",
            count(hi),
            count(lo)
        );
        let bad: DevicesConfig = serde_json::from_str(r#"{"dropout": 1.5}"#).unwrap();
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "devices.dropout.value = 1.5: values in [0, 1]"
        );
    }

    #[test]
    fn max_steps_is_drawn_per_client_and_at_least_one() {
        let cfg = DevicesConfig {
            max_steps: Some(Distribution::Uniform {
                low: 1.0,
                high: 20.0,
            }),
            ..Default::default()
        };
        let d = Devices::new(cfg, 9).unwrap();
        let m: Vec<u32> = (0..100)
            .map(|id| d.profile(id).max_steps.unwrap())
            .collect();
        assert!(m.iter().all(|v| (1..=20).contains(v)));
        assert!(m.iter().collect::<std::collections::BTreeSet<_>>().len() > 5);
        assert_eq!(d.profile(7), d.profile(7));
        let bad = DevicesConfig {
            max_steps: Some(Distribution::Constant { value: 0.0 }),
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("devices.max_steps.value = 0"));
    }
}
