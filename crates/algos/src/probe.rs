//! The validation probe (docs/learned-rates.md, "The validation probe"): how a learned
//! controller reads a client's validation signal. The server attaches
//! [`ValidationProbe`] to a train instruction; the client's [`ProbeHook`] then evaluates
//! the round's global model `x` and its trained model `y = x + Δ` on its **validation**
//! split (never its test split) and replies [`ValidationSignal`]: the sizes, the loss
//! and error counts before and after, and, when asked, the one-step hypergradient
//! `h = ⟨∇L_val(y), Δ⟩` in total and per parameter group (docs/algorithms.md §D.3).
//!
//! A client without a validation split (`data.validation_fraction = 0`) answers with an
//! error naming the key: a learned controller never falls back to test data.

use crate::local::{evaluate_on, full_gradient};
use crate::parts::{Finish, LocalHook, Terms};
use fedpace_core::ext::Payload;
use fedpace_core::{Error, EvalStats, LocalState, Result, TrainIns};
use fedpace_params::ParamTree;
use serde::{Deserialize, Serialize};

/// Down: reply with the validation signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ValidationProbe {
    /// Also compute the hypergradient `⟨∇L_val(y), Δ⟩` (one gradient pass over the
    /// validation split).
    pub hypergradient: bool,
}

impl Payload for ValidationProbe {
    const NAME: &'static str = "validation-probe";
}

/// Up: the client's validation signal for this round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationSignal {
    /// The global model `x` on the validation split.
    pub before: EvalStats,
    /// The trained model `y = x + Δ` on the validation split.
    pub after: EvalStats,
    /// `⟨∇L_val(y), Δ⟩` (mean validation loss), when asked.
    pub hypergradient: Option<f64>,
    /// The same per parameter group (the spec's order), when asked.
    pub group_hypergradients: Vec<f64>,
}

impl Payload for ValidationSignal {
    const NAME: &'static str = "validation-signal";
    fn validate(&self, spec: &fedpace_params::ParamSpec) -> std::result::Result<(), String> {
        let finite = |s: &EvalStats| s.loss_sum.is_finite();
        if !(finite(&self.before) && finite(&self.after)) {
            return Err("non-finite validation loss".into());
        }
        if self.hypergradient.is_some_and(|h| !h.is_finite())
            || self.group_hypergradients.iter().any(|h| !h.is_finite())
        {
            return Err("non-finite hypergradient".into());
        }
        if !self.group_hypergradients.is_empty()
            && self.group_hypergradients.len() != spec.num_groups()
        {
            return Err(format!(
                "{} group hypergradients, expected {}",
                self.group_hypergradients.len(),
                spec.num_groups()
            ));
        }
        Ok(())
    }
}

impl ValidationSignal {
    /// Validation samples behind the signal.
    pub fn samples(&self) -> u64 {
        self.after.count
    }
}

/// Asks the client for its validation signal when the rate policy learns from it
/// ([`fedpace_core::RatePolicy::reads_validation`]: the hypernetwork policy) and the
/// algorithm has not asked already (FedEx and meta-rates attach their own probe).
pub fn attach_for_policy(policy: &dyn fedpace_core::RatePolicy, ins: &mut TrainIns) {
    if policy.reads_validation() && ins.ext.get::<ValidationProbe>().is_none() {
        ins.ext.insert(ValidationProbe::default());
    }
}

/// Client side, after training: a copy of the reply's validation signal goes into the
/// report's `ext`, where the rate policy reads it ([`fedpace_core::RatePolicy::observe`])
/// and `metrics.jsonl` records it (`clients[].report_ext`).
pub fn report_signal(res: &mut fedpace_core::TrainRes) {
    if let Some(s) = res.ext.get::<ValidationSignal>() {
        let s = s.clone();
        res.report.ext.insert(s);
    }
}

/// The client half: answers [`ValidationProbe`].
pub struct ProbeHook;

impl LocalHook for ProbeHook {
    fn payload(&self) -> &'static str {
        ValidationProbe::NAME
    }
    fn prepare(&self, _ins: &TrainIns, _state: &LocalState, _terms: &mut Terms) -> Result<()> {
        Ok(())
    }
    fn finish(&self, cx: &mut Finish<'_>) -> Result<()> {
        let probe = cx
            .ins
            .ext
            .get::<ValidationProbe>()
            .cloned()
            .unwrap_or_default();
        let Some(val) = cx.data.validation.clone() else {
            return Err(Error::invalid(
                "data.validation_fraction",
                0,
                "must be > 0: this strategy learns from the clients' validation splits",
            ));
        };
        let x = cx.ins.params.as_ref();
        let mut y = x.as_slice().to_vec();
        for (a, d) in y.iter_mut().zip(cx.delta) {
            *a += d;
        }
        let y = ParamTree::from_vec(x.spec().clone(), y)?;
        let before = evaluate_on(cx.model, val.as_ref(), x, None)?;
        let after = evaluate_on(cx.model, val.as_ref(), &y, None)?;
        let (hypergradient, group_hypergradients) = if probe.hypergradient && !val.is_empty() {
            let g = full_gradient(cx.model, val.as_ref(), &y)?;
            let groups = x.spec().group_of_each_value();
            let mut per = vec![0f64; x.spec().num_groups()];
            for ((gi, di), k) in g.iter().zip(cx.delta).zip(&groups) {
                per[*k as usize] += *gi as f64 * *di as f64;
            }
            (Some(per.iter().sum()), per)
        } else {
            (None, Vec::new())
        };
        cx.reply.insert(ValidationSignal {
            before,
            after,
            hypergradient,
            group_hypergradients,
        });
        Ok(())
    }
}
