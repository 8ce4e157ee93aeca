//! Privacy, security, robustness and compression as stages of the synchronous round
//! (docs/privacy.md, "Wiring"): client-level differential privacy ([`dp`]), private rates
//! ([`rates`]), secure aggregation ([`secure`]), robust aggregation ([`robust`]) and update
//! compression ([`compress`]). The building blocks are `fedpace_privacy`'s; this module
//! decides where each runs and what it composes with.
//!
//! A client finishes its update in one fixed order (`finish_client`): an attacker's
//! change (simulation) → its rate statistic (`rates = "local"`) → its noised statistics
//! (`rates = "noised"`) → the linear path's scaling (weights and rate normalisation, or
//! DP's normalise-clip-weight-noise) → compression → secure aggregation's packing. The
//! server undoes them in reverse: the secure sum, decompression, DP's clip and noise or
//! a robust rule in place of the weighted mean, then the server step.
//!
//! [`StagesConfig::check`] refuses, in one line naming both sides, every combination of a
//! stage with a strategy, a policy or another stage that would not do what it says.

pub mod compress;
pub mod dp;
pub mod rates;
pub mod robust;
pub mod secure;
pub(crate) mod server;

use crate::attack::Attack;
use crate::config::StrategyConfig;
use crate::local::{nominal_rate_sums, pre_scale, PreScaled};
use crate::pipeline::AggregationPath;
use crate::policy::PolicyConfig;
use compress::{encode, Compress, CompressionConfig};
use dp::{client_contribution, DpClient, DpScaled, NoisePlacement, PrivacyConfig, RatesMode};
use fedpace_core::rng::derive_seed;
use fedpace_core::{ClientId, Error, LocalState, Payload, Result, TrainIns, TrainReport, TrainRes};
use fedpace_optim::StateMode;
use fedpace_params::l2_norm;
pub use fedpace_privacy::Randomness;
use rates::{
    release, LocalBounds, LocalRate, LocalRateMemory, LocalRule, RateRelease, ReleasedStatistics,
};
use robust::RobustConfig;
use secure::{pack, SecureConfig, SecureInput, SecurePending};

/// The stages' settings: one optional table each, and where their randomness comes from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StagesConfig {
    /// `[privacy]`: differential privacy and private rates.
    pub privacy: Option<PrivacyConfig>,
    /// `[secure_aggregation]`.
    pub secure_aggregation: Option<SecureConfig>,
    /// `[robust]`.
    pub robust: Option<RobustConfig>,
    /// `[compression]`.
    pub compression: Option<CompressionConfig>,
    /// Noise, masks, keys and stochastic rounding: a simulation seed in simulation, the
    /// operating system's entropy (the default) anywhere else.
    pub randomness: Randomness,
    /// The client-side rule under `rates = "local"` (set by [`StagesConfig::for_policy`]).
    pub local_rule: Option<LocalRule>,
    /// `compose`'s clamp and overrides under `rates = "local"` (set by
    /// [`StagesConfig::for_policy`]).
    pub local_bounds: Option<LocalBounds>,
}

/// What a stage draws randomness for; part of the stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Purpose {
    UpdateNoise = 1,
    CountNoise = 2,
    ClientNoise = 3,
    RateNoise = 4,
    SecAggServer = 5,
    SecAggClient = 6,
    SecAggQuantize = 7,
    SecAggDropout = 8,
    Compression = 9,
}

/// The stream id of one use of randomness (the run seed comes from [`Randomness`]).
pub(crate) fn stream(round: u32, client: ClientId, purpose: Purpose) -> u64 {
    derive_seed(
        0x5EC0_57A6_0000_0000 ^ purpose as u64,
        round as u64,
        client,
        fedpace_core::rng::Purpose::Algorithm,
    )
}

impl StagesConfig {
    /// No stage.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether any stage is on.
    pub fn is_empty(&self) -> bool {
        self.privacy.is_none()
            && self.secure_aggregation.is_none()
            && self.robust.is_none()
            && self.compression.is_none()
    }

    /// Whether differential privacy is on.
    pub fn dp(&self) -> bool {
        self.privacy.as_ref().is_some_and(|p| p.dp())
    }

    /// The private-rates mode.
    pub fn rates(&self) -> RatesMode {
        self.privacy.as_ref().map_or(RatesMode::Public, |p| p.rates)
    }

    /// Checks every table's ranges.
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = &self.privacy {
            p.validate()?;
        }
        if let Some(s) = &self.secure_aggregation {
            s.validate()?;
        }
        if let Some(r) = &self.robust {
            r.validate()?;
        }
        if let Some(c) = &self.compression {
            c.validate()?;
        }
        Ok(())
    }

    /// Sets the client-side rule for `rates = "local"` from the policy (or refuses a
    /// policy that has none).
    pub fn for_policy(mut self, policy: &PolicyConfig) -> std::result::Result<Self, String> {
        if self.rates() == RatesMode::Local {
            self.local_rule = Some(LocalRule::of(policy).ok_or_else(|| {
                format!(
                    "privacy.rates = \"local\": not supported by policy {} (only loss-based and \
                     grad-norm-ratio read a statistic a client can keep to itself)",
                    policy.name()
                )
            })?);
            self.local_bounds = LocalBounds::of(policy);
        }
        Ok(self)
    }

    /// Refuses, in one line naming both sides, what cannot run as documented:
    /// docs/privacy.md ("What composes with what") is this function in prose.
    /// `state_mode` is the clients' state mode in effect (a policy's included).
    pub fn check(
        &self,
        strategy: &StrategyConfig,
        policy: &PolicyConfig,
        state_mode: StateMode,
    ) -> std::result::Result<(), String> {
        let name = strategy.name();
        let linear = strategy.round.aggregation == AggregationPath::Linear;
        let server_init = state_mode == StateMode::ServerInit || policy.forces_server_init();
        let report_reader = policy.reads_client_statistics();
        let mut tables = Vec::new();
        if self.dp() {
            tables.push("[privacy]");
        }
        if self.secure_aggregation.is_some() {
            tables.push("[secure_aggregation]");
        }
        if self.robust.is_some() {
            tables.push("[robust]");
        }
        if self.compression.is_some() {
            tables.push("[compression]");
        }
        if self.rates() != RatesMode::Public {
            tables.push("privacy.rates");
        }
        if tables.is_empty() {
            return Ok(());
        }
        if name == "pfedhn" {
            return Err(format!(
                "{}: not supported by pfedhn (its server trains a hypernetwork from the \
                 clients' updates, outside the round's stages)",
                tables[0]
            ));
        }
        if matches!(name, "fedl2p" | "fedex" | "fedhyper" | "meta-rates")
            && (self.dp() || self.secure_aggregation.is_some())
        {
            return Err(format!(
                "{}: not supported by {name} (its clients report validation signals or \
                 meta-gradients beside the update, which would reach the server unnoised and \
                 in the clear)",
                if self.dp() {
                    "[privacy]"
                } else {
                    "[secure_aggregation]"
                }
            ));
        }
        if let (Some(p), true) = (
            policy.reads_validation(),
            self.dp() || self.secure_aggregation.is_some(),
        ) {
            return Err(format!(
                "{}: not supported with policy {p} (its clients report validation losses \
                 beside the update, which would reach the server unnoised and in the clear)",
                if self.dp() {
                    "[privacy]"
                } else {
                    "[secure_aggregation]"
                }
            ));
        }
        if strategy.is_async() {
            return Err(format!(
                "{}: not supported by {name} (asynchronous strategies aggregate one update at \
                 a time, outside the round's stages)",
                tables[0]
            ));
        }
        if self.dp() {
            let why = match name {
                "scaffold" => {
                    Some("its control-variate updates reach the server unclipped and unnoised")
                }
                "feddyn" => Some("its server state averages every client's raw update"),
                "fedexp" => Some("its server rate reads each client's update norm"),
                _ => None,
            };
            if let Some(why) = why {
                return Err(format!("[privacy]: not supported by {name} ({why})"));
            }
            if server_init {
                return Err(format!(
                    "[privacy]: not supported with server-initialised client state under {name} \
                     (client.state_mode = \"server-init\" or policy fedlalr: optimiser states \
                     reach the server unnoised)"
                ));
            }
            if let Some(p) = policy.adjusting_aggregation() {
                return Err(format!(
                    "[privacy]: not supported with policy {p} under {name} (it weights or scales \
                     updates by their norms, beyond the clip's sensitivity)"
                ));
            }
            if !policy.required_metadata().is_empty() {
                return Err(format!(
                    "[privacy]: not supported with policy {} under {name} (its plans read \
                     metadata clients share in the clear, outside ε)",
                    policy.name()
                ));
            }
            if let (Some(p), RatesMode::Public) = (report_reader, self.rates()) {
                return Err(format!(
                    "policy {p}: reads clients' statistics in the clear, outside [privacy]'s ε \
                     under {name}; set privacy.rates = \"noised\" (or \"local\" with \
                     [secure_aggregation])"
                ));
            }
            let p = self.privacy.as_ref().expect("dp() implies privacy");
            if p.noise == NoisePlacement::Distributed && self.secure_aggregation.is_none() {
                return Err(format!(
                    "privacy.noise = \"distributed\": needs [secure_aggregation] under {name} \
                     (each client's noise share hides nothing unless only the sum is seen)"
                ));
            }
            if self.robust.is_some() {
                return Err(format!(
                    "[robust]: not supported with [privacy] under {name} (a robust rule's \
                     sensitivity is not the clipped sum's)"
                ));
            }
        }
        match (self.rates(), report_reader) {
            (RatesMode::Public, _) => {}
            (mode, None) => {
                return Err(format!(
                    "privacy.rates = {:?}: policy {} reads no client statistic (nothing to \
                     privatise) under {name}; leave privacy.rates out",
                    serde_json::to_value(mode)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or(""),
                    policy.name()
                ))
            }
            (RatesMode::Local, Some(_)) if self.secure_aggregation.is_none() => {
                return Err(format!(
                    "privacy.rates = \"local\": needs [secure_aggregation] under {name} (the \
                     cohort's mean statistic reaches the server only inside the secure sum)"
                ))
            }
            (RatesMode::Local, Some(p)) if LocalRule::of(policy).is_none() => {
                return Err(format!(
                    "privacy.rates = \"local\": not supported by policy {p} inside {} under \
                     {name} (only a loss-based or grad-norm-ratio policy of its own can run on \
                     the client)",
                    policy.name()
                ))
            }
            _ => {}
        }
        if let Some(s) = &self.secure_aggregation {
            if !linear {
                return Err(format!(
                    "[secure_aggregation]: needs strategy.aggregation = \"linear\" under {name} \
                     (the server may only sum what it cannot see)"
                ));
            }
            let why = match name {
                "scaffold" => {
                    Some("its control-variate updates would reach the server in the clear")
                }
                "fedexp" => Some("its server rate reads each client's update norm"),
                _ => None,
            };
            if let Some(why) = why {
                return Err(format!(
                    "[secure_aggregation]: not supported by {name} ({why})"
                ));
            }
            if server_init {
                return Err(format!(
                    "[secure_aggregation]: not supported with server-initialised client state \
                     under {name} (client.state_mode = \"server-init\" or policy fedlalr: \
                     optimiser states would reach the server in the clear)"
                ));
            }
            if let (Some(p), RatesMode::Public) = (report_reader, self.rates()) {
                return Err(format!(
                    "policy {p}: not supported with [secure_aggregation] under {name} (reports \
                     carry no statistics under secure aggregation); set privacy.rates = \
                     \"local\""
                ));
            }
            if self.robust.is_some() {
                return Err(format!(
                    "[robust]: not supported with [secure_aggregation] under {name} (robust \
                     rules need each client's update)"
                ));
            }
            if self.compression.is_some() {
                return Err(format!(
                    "[compression]: not supported with [secure_aggregation] under {name} (the \
                     masked sum needs every client's vector in the same fixed-point field)"
                ));
            }
            if strategy.round.fraction.is_none() {
                let n = strategy.round.clients_per_round;
                s.check_cohort(n)
                    .map_err(|e| format!("{e} (strategy.clients_per_round = {n})"))?;
            }
        }
        if let Some(r) = &self.robust {
            if linear {
                return Err(format!(
                    "[robust]: not supported with strategy.aggregation = \"linear\" under {name} \
                     (robust rules need each client's update)"
                ));
            }
            let why = match name {
                "scaffold" => {
                    Some("its server control variate averages every client's c_i update unguarded")
                }
                "feddyn" => Some("its server state averages every client's raw update unguarded"),
                "fedexp" => Some("its server rate reads every client's update norm unguarded"),
                _ => None,
            };
            if let Some(why) = why {
                return Err(format!("[robust]: not supported by {name} ({why})"));
            }
            if strategy.round.fraction.is_none()
                && strategy.round.clients_per_round < r.min_clients()
            {
                return Err(format!(
                    "robust.rule = {:?}: needs at least {} clients per round, {name} has \
                     strategy.clients_per_round = {}",
                    r.name(),
                    r.min_clients(),
                    strategy.round.clients_per_round
                ));
            }
        }
        Ok(())
    }
}

/// Registers every stage's payload types and client parts.
pub(crate) fn register(a: &mut crate::registry::Algorithms) {
    a.passive_payload::<DpClient>()
        .payload::<DpScaled>()
        .passive_payload::<RateRelease>()
        .payload::<ReleasedStatistics>()
        .passive_payload::<LocalRate>()
        .payload::<LocalRateMemory>()
        .passive_payload::<Compress>()
        .payload::<compress::CompressedUpdate>()
        .payload::<compress::CompressionResidual>();
    secure::register(a);
}

/// The client's work after local training (see the module doc), on `res` in place;
/// `attack` is a simulated attacker's behaviour.
pub(crate) fn finish_client(
    id: ClientId,
    ins: &TrainIns,
    res: &mut TrainRes,
    state: &mut LocalState,
    attack: Option<&Attack>,
) -> Result<()> {
    let spec = res.delta.spec().clone();
    let privacy = |e: fedpace_privacy::Error| Error::Backend(e.to_string());
    if let Some(a) = attack {
        a.apply(res.delta.as_mut_slice(), id, ins.round, ins.seed);
        res.report.update_norm = l2_norm(res.delta.as_slice());
    }
    let mut local_tail = None;
    if let Some(lr) = ins.ext.get::<LocalRate>() {
        let s = lr.rule.statistic(&res.report);
        if let Some(s) = s {
            state.ext.insert(LocalRateMemory { last: s });
        }
        local_tail = Some(s.map_or([0.0, 0.0], |s| {
            [s.ln().clamp(-rates::LOG_RANGE, rates::LOG_RANGE), 1.0]
        }));
    }
    if let Some(rr) = ins.ext.get::<RateRelease>() {
        let mut d = res.delta.as_slice().to_vec();
        dp::normalise_to_reference(&mut d, &spec, &res.report.rate_sum, &rr.reference);
        let mut rng = rr
            .randomness
            .rng(stream(ins.round, id, Purpose::RateNoise))
            .map_err(privacy)?;
        res.ext
            .insert(release(rr, &res.report, l2_norm(&d), &mut rng));
    }
    let mut dp_bit = 0.0;
    if let Some(p) = ins.ext.get::<DpClient>() {
        let mut rng = p
            .randomness
            .rng(stream(ins.round, id, Purpose::ClientNoise))
            .map_err(privacy)?;
        dp_bit = client_contribution(
            p,
            res.delta.as_mut_slice(),
            &spec,
            &res.report.rate_sum,
            &mut rng,
        )?;
        res.ext.insert(DpScaled {
            centred_bit: dp_bit,
        });
    } else {
        pre_scale(
            &ins.ext,
            &mut res.delta,
            &res.report,
            res.num_examples,
            &mut res.ext,
        );
    }
    if let Some(Compress(c)) = ins.ext.get::<Compress>() {
        let mut rng = fedpace_core::rng::stream(
            ins.seed ^ stream(ins.round, id, Purpose::Compression),
            0,
            0,
            fedpace_core::rng::Purpose::Algorithm,
        );
        let enc = encode(c, res.delta.as_mut_slice(), state, &mut rng)?;
        res.ext.insert(enc);
    }
    if let Some(si) = ins.ext.get::<SecureInput>() {
        let mut tail = Vec::new();
        if let Some(scales) = &si.tail.pre_scaled {
            let p = res.ext.remove::<PreScaled>().ok_or_else(|| {
                Error::invalid(
                    "secure aggregation",
                    "no pre-scaled update",
                    "the linear path's pre-scaling",
                )
            })?;
            tail.push(p.weight);
            tail.extend(p.weighted_rate_sum.iter().zip(scales).map(|(w, s)| w / s));
        }
        if si.tail.dp_bit {
            res.ext.remove::<DpScaled>();
            tail.push(dp_bit);
        }
        if si.tail.local_statistic {
            tail.extend(local_tail.unwrap_or([0.0, 0.0]));
        }
        let mut rng = si
            .randomness
            .rng(stream(ins.round, id, Purpose::SecAggQuantize))
            .map_err(privacy)?;
        let input = pack(res.delta.as_slice(), &tail, &si.quantization, &mut rng)?;
        state.ext.insert(SecurePending {
            round: ins.round,
            input,
            randomness: si.randomness,
        });
        res.delta.as_mut_slice().iter_mut().for_each(|v| *v = 0.0);
        res.report = scrubbed_report(ins, &res.report, spec.num_groups());
        if let Some(name) = res.ext.names().find(|n| *n != ReleasedStatistics::NAME) {
            return Err(Error::invalid(
                "secure aggregation",
                format!("reply payload {name:?}"),
                "no payload that would reach the server in the clear beside the masked input",
            ));
        }
    }
    Ok(())
}

/// The report a client sends under secure aggregation: its step count and the rate sums
/// its plan prescribes (which the server can compute itself); no loss, no norm.
fn scrubbed_report(ins: &TrainIns, report: &TrainReport, groups: usize) -> TrainReport {
    TrainReport {
        steps: report.steps,
        rate_sum: nominal_rate_sums(&ins.plan, groups, report.steps),
        loss_before: f32::NAN,
        loss_after: f32::NAN,
        train_loss: f32::NAN,
        ..Default::default()
    }
}
