//! The server-side meta-learned per-client rate controller (docs/learned-rates.md,
//! "Meta-learned rates"; docs/algorithms.md §D.3). FedAvg whose server keeps, per client k, a
//! log-rate `u_k = u_0 + wᵀφ_k + r_k` and per-group log-multipliers `v_{k,g}`, where
//! `φ_k` are features of the client's metadata and history and `w` is shared by all
//! clients. Each round every sampled client answers the validation probe with the
//! one-step hypergradient `h_k = ⟨∇L_val(y_k), Δ_k⟩ = ∂L_val/∂log η_k` (per group:
//! `h_{k,g}`), and the server moves, normalised by running means of |h|:
//!
//! ```text
//! e_k ← ρ e_k + (1 − ρ)|h_k|   (first: |h_k|);   ē ← ρ ē + (1 − ρ)|h_k|
//! u_k ← clip(u_k − β_u h_k / (e_k + 1e-12), log η_min, log η_max)   (r_k absorbs the move)
//! w   ← w − β_w (h_k / (ē + 1e-12)) φ_k
//! v_{k,g} ← clip(v_{k,g} − β_u h_{k,g} / (e_{k,g} + 1e-12), log m_min, log m_max)
//! ```
//!
//! `φ_k = (log(n_k/n̄), H_k − ln C/2, log(L_k^after/L_k^before), log(‖Δ_k‖/‖Δ‖_avg))`: data
//! size against the pool mean, label entropy (when the client shares its histogram, else
//! 0), the training-loss ratio and the update norm against the running mean at its last
//! participation (0 before it). `u_0` is the log of the plan's rate after the rate
//! policy; the client's rate is `exp(u_k)`, within `[min, max]·exp(u_0)`.

use crate::config::{Algorithm, BuildCx, Built, RoundConfig};
use crate::pipeline::{AfterAggregate, Pipeline, ServerHooks};
use crate::probe::{ValidationProbe, ValidationSignal};
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::{ClientId, ClientInfo, ClientPool, Error, RatePlan, Result, TrainIns};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::BTreeMap;

/// Feature names, in `w`'s order.
pub const FEATURES: [&str; 4] = ["log_size", "label_entropy", "loss_ratio", "update_norm"];

/// `meta-rates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaRatesConfig {
    /// β_u: step on a client's log-rate per participation (default 0.05).
    pub beta_u: f64,
    /// β_w: step on the shared feature weights (default 0.01).
    pub beta_w: f64,
    /// ρ: factor of the running means of |h| (default 0.9).
    pub ema: f64,
    /// η_min / η_base (default 0.1).
    pub min: f64,
    /// η_max / η_base (default 10).
    pub max: f64,
    /// Learn per-group multipliers too (default true; a one-group model has one).
    pub groups: bool,
}

impl Default for MetaRatesConfig {
    fn default() -> Self {
        Self {
            beta_u: 0.05,
            beta_w: 0.01,
            ema: 0.9,
            min: 0.1,
            max: 10.0,
            groups: true,
        }
    }
}

impl Algorithm for MetaRatesConfig {
    const NAME: &'static str = "meta-rates";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        for (k, v) in [("beta_u", self.beta_u), ("beta_w", self.beta_w)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(format!("strategy.{k}"), v, ">= 0"));
            }
        }
        if !(0.0..1.0).contains(&self.ema) {
            return Err(Error::invalid("strategy.ema", self.ema, "in [0, 1)"));
        }
        if !(self.min > 0.0 && self.min <= 1.0) {
            return Err(Error::invalid("strategy.min", self.min, "in (0, 1]"));
        }
        if !(self.max >= 1.0 && self.max.is_finite()) {
            return Err(Error::invalid("strategy.max", self.max, "finite, >= 1"));
        }
        Ok(())
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        Ok(Built::Sync(Box::new(
            Pipeline::new(
                Self::NAME,
                cx.settings,
                cx.policy,
                Box::new(MetaRates::new(self.clone())),
            )
            .with_server(cx.server),
        )))
    }
}

/// What the server keeps about one client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientMeta {
    /// r_k: the client's own offset of its log-rate from the prior.
    pub offset: f64,
    /// v_{k,g}.
    pub log_multipliers: Vec<f64>,
    /// e_k (0: none yet).
    pub scale: f64,
    /// e_{k,g}.
    pub group_scales: Vec<f64>,
    /// φ's history features at its last participation (loss ratio, update norm).
    pub history: [f64; 2],
}

/// The controller's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaRatesState {
    /// w.
    pub weights: [f64; 4],
    /// ē.
    pub scale: f64,
    /// Running mean of update norms (0: none yet).
    pub mean_norm: f64,
    /// Per participating client.
    pub clients: BTreeMap<ClientId, ClientMeta>,
    /// This round's plans: client → (u_0, φ_k).
    pub pending: BTreeMap<ClientId, (f64, [f64; 4])>,
}

/// The server half (see the module doc).
pub struct MetaRates {
    cfg: MetaRatesConfig,
    /// n̄, the pool's mean training size (0: not read yet).
    mean_size: f64,
    state: MetaRatesState,
}

impl MetaRates {
    /// A controller with w = 0 and no client history.
    pub fn new(cfg: MetaRatesConfig) -> Self {
        Self {
            cfg,
            mean_size: 0.0,
            state: MetaRatesState::default(),
        }
    }

    /// The state.
    pub fn state(&self) -> &MetaRatesState {
        &self.state
    }

    /// φ_k.
    fn features(&self, info: &ClientInfo) -> [f64; 4] {
        let size = if self.mean_size > 0.0 && info.num_train > 0 {
            (info.num_train as f64 / self.mean_size).ln()
        } else {
            0.0
        };
        let entropy = info.label_histogram().map_or(0.0, |h| {
            info.label_entropy() - (h.len().max(1) as f64).ln() / 2.0
        });
        let hist = self
            .state
            .clients
            .get(&info.id)
            .map_or([0.0; 2], |c| c.history);
        [size, entropy, hist[0], hist[1]]
    }

    /// `log η_k` given u_0 and φ_k.
    fn log_rate(&self, id: ClientId, u0: f64, phi: &[f64; 4]) -> f64 {
        let prior: f64 = self.state.weights.iter().zip(phi).map(|(w, f)| w * f).sum();
        let offset = self.state.clients.get(&id).map_or(0.0, |c| c.offset);
        (u0 + prior + offset).clamp(u0 + self.cfg.min.ln(), u0 + self.cfg.max.ln())
    }

    /// One participation's update from the hypergradients (`h`, per group `hg`).
    pub fn update(&mut self, id: ClientId, u0: f64, phi: &[f64; 4], h: f64, hg: &[f64]) {
        let rho = self.cfg.ema;
        let ema = |e: f64, x: f64| {
            if e > 0.0 {
                rho * e + (1.0 - rho) * x
            } else {
                x
            }
        };
        self.state.scale = ema(self.state.scale, h.abs());
        let global_scale = self.state.scale;
        let u = self.log_rate(id, u0, phi);
        let prior: f64 = self.state.weights.iter().zip(phi).map(|(w, f)| w * f).sum();
        let (lo, hi) = (u0 + self.cfg.min.ln(), u0 + self.cfg.max.ln());
        let (bu, groups) = (self.cfg.beta_u, self.cfg.groups);
        let (mlo, mhi) = (self.cfg.min.ln(), self.cfg.max.ln());
        let c = self.state.clients.entry(id).or_default();
        c.scale = ema(c.scale, h.abs());
        let new_u = (u - bu * h / (c.scale + 1e-12)).clamp(lo, hi);
        c.offset = new_u - u0 - prior;
        if groups && !hg.is_empty() {
            if c.log_multipliers.len() != hg.len() {
                c.log_multipliers = vec![0.0; hg.len()];
                c.group_scales = vec![0.0; hg.len()];
            }
            for ((v, e), h) in c
                .log_multipliers
                .iter_mut()
                .zip(c.group_scales.iter_mut())
                .zip(hg)
            {
                *e = ema(*e, h.abs());
                *v = (*v - bu * h / (*e + 1e-12)).clamp(mlo, mhi);
            }
        }
        for (w, f) in self.state.weights.iter_mut().zip(phi) {
            *w -= self.cfg.beta_w * h / (global_scale + 1e-12) * f;
        }
    }
}

impl ServerHooks for MetaRates {
    fn describe(&self) -> String {
        format!("beta_u={}, beta_w={}", self.cfg.beta_u, self.cfg.beta_w)
    }
    fn plan(
        &mut self,
        _round: u32,
        info: &ClientInfo,
        pool: &dyn ClientPool,
        _seed: u64,
        plan: &mut RatePlan,
    ) -> Result<()> {
        if self.mean_size == 0.0 {
            self.mean_size = pool.total_train()? as f64 / pool.len().max(1) as f64;
        }
        let u0 = (plan.base_lr as f64).ln();
        let phi = self.features(info);
        plan.base_lr = self.log_rate(info.id, u0, &phi).exp() as f32;
        if let Some(c) = self.state.clients.get(&info.id) {
            if !c.log_multipliers.is_empty() {
                if plan.group_multipliers.is_empty() {
                    plan.group_multipliers = vec![1.0; c.log_multipliers.len()];
                }
                for (m, v) in plan.group_multipliers.iter_mut().zip(&c.log_multipliers) {
                    *m *= v.exp() as f32;
                }
            }
        }
        self.state.pending.insert(info.id, (u0, phi));
        Ok(())
    }
    fn attach(&mut self, _round: u32, ins: &mut TrainIns) -> Result<()> {
        ins.ext.insert(ValidationProbe {
            hypergradient: true,
        });
        Ok(())
    }
    fn after_aggregate(&mut self, cx: &AfterAggregate<'_>) -> Result<Option<Vec<f64>>> {
        let pending = std::mem::take(&mut self.state.pending);
        let norms: Vec<f64> = cx
            .accepted
            .iter()
            .map(|(_, r)| r.report.update_norm)
            .collect();
        for (id, res) in cx.accepted {
            let (Some((u0, phi)), Some(s)) = (pending.get(id), res.ext.get::<ValidationSignal>())
            else {
                continue;
            };
            if let Some(h) = s.hypergradient {
                self.update(*id, *u0, phi, h, &s.group_hypergradients);
            }
            let r = &res.report;
            let loss_ratio = if r.loss_before > 0.0 && r.loss_after > 0.0 {
                (r.loss_after as f64 / r.loss_before as f64).ln()
            } else {
                0.0
            };
            let norm = if self.state.mean_norm > 0.0 && r.update_norm > 0.0 {
                (r.update_norm / self.state.mean_norm).ln()
            } else {
                0.0
            };
            self.state.clients.entry(*id).or_default().history = [loss_ratio, norm];
        }
        let finite: Vec<f64> = norms
            .into_iter()
            .filter(|n| n.is_finite() && *n > 0.0)
            .collect();
        if !finite.is_empty() {
            let m = finite.iter().sum::<f64>() / finite.len() as f64;
            let rho = self.cfg.ema;
            self.state.mean_norm = if self.state.mean_norm > 0.0 {
                rho * self.state.mean_norm + (1.0 - rho) * m
            } else {
                m
            };
        }
        Ok(None)
    }
    fn learned(&self) -> BTreeMap<String, f64> {
        let mut m: BTreeMap<String, f64> = FEATURES
            .iter()
            .zip(&self.state.weights)
            .map(|(f, w)| (format!("meta.w.{f}"), *w))
            .collect();
        let offsets: Vec<f64> = self.state.clients.values().map(|c| c.offset).collect();
        if !offsets.is_empty() {
            let mean = offsets.iter().sum::<f64>() / offsets.len() as f64;
            m.insert("meta.offset.mean".into(), mean);
            m.insert(
                "meta.offset.min".into(),
                offsets.iter().cloned().fold(f64::INFINITY, f64::min),
            );
            m.insert(
                "meta.offset.max".into(),
                offsets.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            );
        }
        m
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(&self.state)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.state = from_cbor(bytes, "meta-rates state")?;
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand, β_u = 0.05, β_w = 0.01, ρ = 0.9, η ∈ [0.1, 10]·η_base, u_0 = ln 0.01:
    /// participation 1, φ = (1, 0, 0, 0), h = 2: e_k = ē = 2 (first value);
    /// u = u_0 + 0 ⇒ u' = u_0 − 0.05·2/2 = u_0 − 0.05, r = −0.05;
    /// w_0 = −0.01·(2/2)·1 = −0.01. Group h = (1, −3): e_g = (1, 3), v = (−0.05, +0.05).
    /// Participation 2, same φ, h = −1: ē = 0.9·2 + 0.1·1 = 1.9, e_k = 1.9;
    /// u = u_0 − 0.01 − 0.05 ⇒ u' = u + 0.05/1.9; r = u' − u_0 − w_0·1 (w before the step)
    /// = −0.06 + 0.05/1.9 + 0.01 = −0.05 + 0.05/1.9; w_0 = −0.01 + 0.01/1.9.
    #[test]
    fn meta_rates_update_matches_the_hand_derivation() {
        let mut m = MetaRates::new(MetaRatesConfig::default());
        let u0 = 0.01f64.ln();
        let phi = [1.0, 0.0, 0.0, 0.0];
        m.update(7, u0, &phi, 2.0, &[1.0, -3.0]);
        let c = &m.state.clients[&7];
        assert!((c.offset + 0.05).abs() < 1e-12, "{}", c.offset);
        assert!((m.state.weights[0] + 0.01).abs() < 1e-12);
        assert!((c.log_multipliers[0] + 0.05).abs() < 1e-12);
        assert!((c.log_multipliers[1] - 0.05).abs() < 1e-12);
        assert!((m.log_rate(7, u0, &phi) - (u0 - 0.06)).abs() < 1e-12);
        m.update(7, u0, &phi, -1.0, &[]);
        let c = &m.state.clients[&7];
        assert!((m.state.scale - 1.9).abs() < 1e-12);
        assert!(
            (c.offset - (-0.05 + 0.05 / 1.9)).abs() < 1e-12,
            "{}",
            c.offset
        );
        assert!((m.state.weights[0] - (-0.01 + 0.01 / 1.9)).abs() < 1e-12);
    }

    #[test]
    fn meta_rates_stay_within_their_bounds() {
        let mut m = MetaRates::new(MetaRatesConfig::default());
        let u0 = 0.01f64.ln();
        for _ in 0..500 {
            m.update(1, u0, &[0.0; 4], -5.0, &[-1.0]);
        }
        let r = m.log_rate(1, u0, &[0.0; 4]).exp();
        assert!((r - 0.1).abs() < 1e-9, "{r}");
        assert!((m.state.clients[&1].log_multipliers[0] - 10f64.ln()).abs() < 1e-9);
    }
}
