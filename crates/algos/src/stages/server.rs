//! The server's side of the stages, as the pipeline calls it (docs/privacy.md, "Wiring"):
//! Poisson sampling and the reference rates at start, the payloads of each instruction,
//! secure aggregation's exchanges, decompression, and the aggregation that DP and secure
//! aggregation take over from the weighted mean.

use super::compress::{Compress, CompressedUpdate};
use super::dp::{DpScaled, DpStage, RatesMode};
use super::rates::{released_report, LocalRate, RateRelease, ReleasedStatistics};
use super::robust::RobustConfig;
use super::secure::{split, SecureStage, TailLayout};
use super::StagesConfig;
use crate::aggregate::{linear_from_sum, Aggregated, Normalize};
use crate::local::{nominal_rate_sums, PreScale};
use crate::pipeline::{AggregationPath, Settings, Weighting};
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::{
    ClientAggregate, ClientId, ClientInfo, ClientPool, Error, ExchangeIns, Extensions,
    PrivacySummary, Reply, Result, SecureSummary, TrainIns, TrainReport, TrainRes,
};
use fedpace_params::{ParamSpec, ParamTree};
use serde::{Deserialize, Serialize};

/// Scale of the rate sums in secure aggregation's tail: w_k·Λ_{k,g} / (8·Λ_ref,g) stays
/// well inside the quantisation range for rates up to 64 × the reference.
const RATE_TAIL_SCALE: f64 = 8.0;

/// The stages' runtime on the server.
pub(crate) struct ServerStages {
    config: StagesConfig,
    dp: Option<DpStage>,
    secure: Option<SecureStage>,
    /// Λ_ref: the base plan's rate sums at the pool's mean training-set size.
    nominal: Vec<f64>,
    normalize: bool,
    linear: bool,
    by_examples: bool,
    /// `rates = "local"`: the cohort's geometric mean statistic (checkpointed).
    local_mean: Option<f64>,
    /// This round (secure aggregation).
    tail: Option<TailLayout>,
    threshold: usize,
    weight_scale: f64,
    seed: u64,
    /// η_base of the strategy's plan (`compose`'s clamp under local rates is relative to it).
    base_lr: f64,
}

/// What the stages did in place of the weighted mean.
pub(crate) struct StageAggregate {
    pub agg: Aggregated,
    pub sq_norms: Vec<f64>,
    pub privacy: Option<PrivacySummary>,
    pub secure: Option<SecureSummary>,
}

/// What the stages keep across rounds.
#[derive(Default, Serialize, Deserialize)]
struct StagesState {
    dp: Option<Vec<u8>>,
    local_mean: Option<f64>,
}

impl ServerStages {
    pub fn new(config: &StagesConfig, settings: &Settings, weighting: Weighting) -> Result<Self> {
        config.validate()?;
        let dp = match &config.privacy {
            Some(p) if p.dp() => Some(DpStage::new(p.clone(), config.randomness)?),
            _ => None,
        };
        let secure = config
            .secure_aggregation
            .as_ref()
            .map(|s| SecureStage::new(s.clone(), config.randomness))
            .transpose()?;
        Ok(Self {
            config: config.clone(),
            normalize: match settings.normalize {
                Normalize::Off => false,
                // Under DP `auto` normalises: a client at the reference rate is unchanged.
                Normalize::On => true,
                Normalize::Auto => dp.is_some(),
            },
            dp,
            secure,
            nominal: Vec::new(),
            linear: settings.aggregation == AggregationPath::Linear,
            by_examples: weighting == Weighting::Examples,
            local_mean: None,
            tail: None,
            threshold: 0,
            weight_scale: 1.0,
            seed: 0,
            base_lr: settings.base_plan.base_lr as f64,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.config.is_empty()
    }

    /// Whether the stages attach the linear path's scaling themselves.
    pub fn scales_linear(&self) -> bool {
        self.linear && (self.dp.is_some() || self.secure.is_some())
    }

    pub fn robust(&self) -> Option<&RobustConfig> {
        self.config.robust.as_ref()
    }

    pub fn secure(&self) -> Option<&SecureStage> {
        self.secure.as_ref()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(dp) = &self.dp {
            let p = dp.config();
            parts.push(format!(
                "dp(z={}, clip={}, noise={:?})",
                p.noise_multiplier.unwrap_or(0.0),
                if p.adaptive_clip.is_some() {
                    "adaptive".to_string()
                } else {
                    format!("{}", dp.clip())
                },
                p.noise
            ));
        }
        if self.config.rates() != RatesMode::Public {
            parts.push(format!("rates={:?}", self.config.rates()));
        }
        if let Some(s) = &self.secure {
            parts.push(match s.config().num_shares {
                Some(k) => format!("secagg+(k={k})"),
                None => "secagg".into(),
            });
        }
        if let Some(r) = self.robust() {
            parts.push(format!("robust={}", r.name()));
        }
        if let Some(c) = &self.config.compression {
            parts.push(c.describe());
        }
        parts.join(", ")
    }

    /// Before the first round (again after a restore).
    pub fn start(
        &mut self,
        pool: &dyn ClientPool,
        settings: &Settings,
        groups: usize,
    ) -> Result<()> {
        let n = pool.len().max(1);
        let mean_n = (pool.total_train()? as f64 / n as f64).round() as usize;
        let plan = &settings.base_plan;
        self.nominal = nominal_rate_sums(plan, groups, plan.steps_for(mean_n.max(1)));
        if let Some(dp) = &mut self.dp {
            let per_round = settings.sampling.per_round(pool.len());
            dp.start(pool, per_round, self.nominal.clone(), self.normalize)?;
        }
        Ok(())
    }

    /// The round's cohort when the stages sample (Poisson under DP).
    pub fn sample(&self, pool: &dyn ClientPool, round: u32, seed: u64) -> Option<Vec<ClientId>> {
        self.dp
            .as_ref()
            .map(|dp| crate::sampling::poisson(pool, dp.sampling_rate(), round, seed))
    }

    /// Fixes what this round's instructions depend on: the secure threshold (from the
    /// cohort sent out), the weight scale (the cohort's largest n_k), the tail's layout.
    pub fn plan_round(
        &mut self,
        pool: &dyn ClientPool,
        sampled: &[ClientId],
        groups: usize,
        seed: u64,
    ) -> Result<()> {
        self.seed = seed;
        let Some(sec) = &mut self.secure else {
            return Ok(());
        };
        self.threshold = sec.plan_round(sampled.len());
        let mut max_n = 1u64;
        for &id in sampled {
            max_n = max_n.max(pool.info(id)?.num_train);
        }
        self.weight_scale = if self.by_examples { max_n as f64 } else { 1.0 };
        self.tail = Some(TailLayout {
            pre_scaled: self
                .dp
                .is_none()
                .then(|| (0..groups).map(|g| self.rate_scale(g)).collect()),
            dp_bit: self.dp.is_some(),
            local_statistic: self.config.rates() == RatesMode::Local,
        });
        Ok(())
    }

    fn rate_scale(&self, g: usize) -> f64 {
        match self.nominal.get(g) {
            Some(&r) if r > 0.0 => RATE_TAIL_SCALE * r,
            _ => 1.0,
        }
    }

    /// The stages' payloads for one instruction; `sampled`: the client is aggregated
    /// (not only trained, as personalised `train_all` does).
    pub fn attach(&self, ins: &mut TrainIns, info: &ClientInfo, sampled: bool) -> Result<()> {
        if self.linear {
            if let Some(dp) = &self.dp {
                ins.ext
                    .insert(dp.client_payload(info.num_train, self.threshold)?);
            } else if self.secure.is_some() {
                ins.ext.insert(PreScale {
                    by_examples: self.by_examples,
                    normalize: self.normalize,
                    weight_scale: self.weight_scale,
                });
            }
        }
        if let (Some(p), Some(dp)) = (&self.config.privacy, &self.dp) {
            if p.rates == RatesMode::Noised && sampled {
                ins.ext.insert(RateRelease {
                    clip: dp.clip(),
                    reference: self.nominal.clone(),
                    loss_bound: p.loss_bound,
                    noise_std: p.rate_noise_multiplier.unwrap_or(0.0) * 2f64.sqrt(),
                    randomness: self.config.randomness,
                });
            }
        }
        if let Some(rule) = self.config.local_rule {
            let b = &self.config.local_bounds;
            ins.ext.insert(LocalRate {
                rule,
                mean: self.local_mean,
                bounds: b
                    .as_ref()
                    .map(|b| [b.min * self.base_lr, b.max * self.base_lr]),
                fixed: b.as_ref().is_some_and(|b| b.overrides.contains(&info.id)),
            });
        }
        if let Some(c) = self.config.compression {
            ins.ext.insert(Compress(c));
        }
        if let (Some(sec), Some(tail)) = (&self.secure, &self.tail) {
            ins.ext.insert(sec.input(tail.clone()));
        }
        Ok(())
    }

    /// Secure aggregation's next protocol step (none without it).
    pub fn exchange(
        &mut self,
        round: u32,
        spec_len: usize,
        participants: &[ClientId],
        answers: Option<Vec<Reply<Extensions>>>,
    ) -> Result<Vec<(ClientId, ExchangeIns)>> {
        let (Some(sec), Some(tail)) = (&mut self.secure, &self.tail) else {
            return Ok(Vec::new());
        };
        if participants.is_empty() {
            return Ok(Vec::new());
        }
        sec.step(
            round,
            self.seed,
            spec_len + tail.len(),
            participants,
            answers,
        )
    }

    /// Decoded copies of compressed replies (None without compression).
    pub fn decompress(&self, accepted: &[(ClientId, &TrainRes)]) -> Result<Option<Vec<TrainRes>>> {
        if self.config.compression.is_none() {
            return Ok(None);
        }
        accepted
            .iter()
            .map(|(id, r)| {
                let c = r.ext.get::<CompressedUpdate>().ok_or_else(|| {
                    Error::invalid(
                        format!("client {id}: reply"),
                        "no compressed update",
                        "one ([compression] is on)",
                    )
                })?;
                let mut ext = r.ext.clone();
                ext.remove::<CompressedUpdate>();
                Ok(TrainRes {
                    delta: ParamTree::from_vec(r.delta.spec().clone(), c.decode())?,
                    num_examples: r.num_examples,
                    report: r.report.clone(),
                    ext,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Whether the stages take over aggregation this round (DP or secure aggregation).
    pub fn aggregates(&self) -> bool {
        self.dp.is_some() || self.secure.is_some()
    }

    /// The aggregation DP or secure aggregation do in place of the weighted mean.
    pub fn aggregate(
        &mut self,
        round: u32,
        spec: &ParamSpec,
        accepted: &[(ClientId, &TrainRes)],
        participants: &[ClientId],
        shared: &[bool],
    ) -> Result<StageAggregate> {
        if self.secure.is_some() {
            return self.aggregate_secure(round, spec, participants, shared);
        }
        let dp = self.dp.as_mut().expect("aggregates() checked");
        if !self.linear {
            let r = dp.aggregate_central(round, spec, accepted, shared)?;
            return Ok(StageAggregate {
                agg: Aggregated {
                    delta: r.delta,
                    normalized: self.normalize,
                    clients: r.clients,
                },
                sq_norms: r.sq_norms,
                privacy: Some(r.summary),
                secure: None,
            });
        }
        // Linear path without secure aggregation: the clients clipped and weighted.
        let mut sum = vec![0f64; spec.total_len()];
        let mut bits = 0.0;
        let mut clients = Vec::with_capacity(accepted.len());
        for (id, r) in accepted {
            let b = r.ext.get::<DpScaled>().ok_or_else(|| {
                Error::invalid(
                    format!("client {id}: reply"),
                    "no clipping report",
                    "a clipped update ([privacy] on the linear path)",
                )
            })?;
            bits += b.centred_bit;
            for (s, v) in sum.iter_mut().zip(r.delta.as_slice()) {
                *s += *v as f64;
            }
            clients.push(ClientAggregate {
                client: *id,
                weight: dp.weight(r.num_examples)? / dp.expected_weight(),
                cosine_to_aggregate: 0.0,
            });
        }
        let sum: Vec<f32> = sum.into_iter().map(|v| v as f32).collect();
        let (delta, privacy) = dp.finish_linear(round, sum, bits, accepted.len())?;
        Ok(StageAggregate {
            sq_norms: vec![0.0; clients.len()],
            agg: Aggregated {
                delta,
                normalized: self.normalize,
                clients,
            },
            privacy: Some(privacy),
            secure: None,
        })
    }

    fn aggregate_secure(
        &mut self,
        round: u32,
        spec: &ParamSpec,
        participants: &[ClientId],
        shared: &[bool],
    ) -> Result<StageAggregate> {
        let sec = self.secure.as_mut().expect("checked");
        let tail_layout = self.tail.clone().expect("planned");
        let p = spec.total_len();
        let unknown = |ids: &[ClientId], survivors: &[ClientId]| -> Vec<ClientAggregate> {
            ids.iter()
                .map(|&client| ClientAggregate {
                    client,
                    // Each survivor's weight is inside the secure sum: unknown to the server.
                    weight: if survivors.binary_search(&client).is_ok() {
                        f64::NAN
                    } else {
                        0.0
                    },
                    cosine_to_aggregate: 0.0,
                })
                .collect()
        };
        if participants.is_empty() {
            // Nobody trained: nothing is summed or released.
            return Ok(StageAggregate {
                agg: Aggregated {
                    delta: vec![0.0; p],
                    normalized: self.normalize,
                    clients: Vec::new(),
                },
                sq_norms: Vec::new(),
                privacy: None,
                secure: None,
            });
        }
        let result = sec.take_result(round)?;
        let (sum, tail) = split(&result.sum, p);
        let survivors = result.raw.survivors.clone();
        let mut summary = result.summary;
        summary.saturated_clients = tail[0].round();
        let mut at = 1;
        let mut privacy = None;
        let delta = if let Some(scales) = &tail_layout.pre_scaled {
            let total = tail[at];
            let rates: Vec<f64> = scales
                .iter()
                .enumerate()
                .map(|(g, s)| tail[at + 1 + g] * s)
                .collect();
            at += 1 + scales.len();
            linear_from_sum(spec, sum, total, &rates, self.normalize, shared)?
        } else {
            let dp = self
                .dp
                .as_mut()
                .expect("a tail without pre-scaling is DP's");
            let bits = tail[at];
            at += 1;
            let (delta, s) = dp.finish_linear(round, sum, bits, survivors.len())?;
            privacy = Some(s);
            delta
        };
        if tail_layout.local_statistic {
            let (log_sum, count) = (tail[at], tail[at + 1].round());
            if count >= 1.0 {
                self.local_mean = Some((log_sum / count).exp());
            }
        }
        Ok(StageAggregate {
            agg: Aggregated {
                delta,
                normalized: self.normalize,
                clients: unknown(participants, &survivors),
            },
            sq_norms: vec![0.0; participants.len()],
            privacy,
            secure: Some(summary),
        })
    }

    /// The report the policy observes for one reply: the client's own (public rates),
    /// one rebuilt from its noised statistics, or none (local rates; a sampled client
    /// without noised statistics under `noised`).
    pub fn observed(&self, res: &TrainRes) -> Option<TrainReport> {
        match self.config.rates() {
            RatesMode::Public => Some(res.report.clone()),
            RatesMode::Local => None,
            RatesMode::Noised => {
                let s = res.ext.get::<ReleasedStatistics>()?;
                let dp = self.dp.as_ref()?;
                let p = self.config.privacy.as_ref()?;
                let release = RateRelease {
                    clip: dp.clip_used(),
                    reference: self.nominal.clone(),
                    loss_bound: p.loss_bound,
                    noise_std: 0.0,
                    randomness: self.config.randomness,
                };
                Some(released_report(s, &release, res.report.steps))
            }
        }
    }

    pub fn save_state(&self) -> Result<Vec<u8>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        to_cbor(&StagesState {
            dp: self.dp.as_ref().map(|d| d.save_state()).transpose()?,
            local_mean: self.local_mean,
        })
    }

    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let s: StagesState = from_cbor(bytes, "stages state")?;
        if let (Some(d), Some(b)) = (&mut self.dp, &s.dp) {
            d.restore_state(b)?;
        }
        self.local_mean = s.local_mean;
        Ok(())
    }
}

/// Mean bytes of the replies' encoded frames (what the network carries), computed from
/// the layout and counts ([`fedpace_core::codec::train_res_len`]): no reply is encoded.
pub(crate) fn upload_bytes(accepted: &[(ClientId, &TrainRes)]) -> Result<Option<f64>> {
    if accepted.is_empty() {
        return Ok(None);
    }
    let mut total = 0usize;
    for (_, r) in accepted {
        total += fedpace_core::codec::train_res_len(r)?;
    }
    Ok(Some(total as f64 / accepted.len() as f64))
}
