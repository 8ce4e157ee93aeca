//! Server optimisers as the server step of [`FedAvg`](crate::FedAvg): FedAvgM (ALGORITHMS.md
//! §A.2), FedAdagrad / FedAdam / FedYogi (§A.3, paper or Flower 1.42 rules, Appendix F)
//! and FedExP (§A.4).
//!
//! Every strategy of this family shares FedAvg's sampling, rate policy, objective
//! consistency normalisation and weighted aggregation; only the last step differs:
//! the aggregate update Δ̄ (normalised when clients' rate sums differ) is handed to a
//! [`ServerStep`], which applies the optimiser from `fedpace_optim::server` to the
//! pseudo-gradient `−Δ̄`. FedAvg itself is `sgd` at η_g.
//!
//! FedExP: η_g^t = max{1, Σ_k p̃_k‖Δ_k‖² / (2(‖Δ̄‖² + ε))}; with the paper's uniform
//! weights `p̃_k = 1/M` this is exactly §A.4. The strategy averages FedExP's clients
//! uniformly (as the paper does) unless a policy changes the weights, and the model
//! evaluated each round is the training iterate `x^{t+1}` (the paper reports the
//! average of the last two iterates; we do not).
//!
//! Server-initialised client state (plan `state_mode = server-init`, §C.3 option 4): the
//! strategy keeps the p̃-weighted average of the optimiser states that clients return and
//! sends it with the next round's instructions ([`average_states`]).

use fedpace_core::{Error, Result};
use fedpace_optim::server::ServerOptimizer;
use fedpace_optim::State;
use fedpace_params::{l2_norm, ParamSpec};

/// The server's step from the aggregate update.
#[derive(Debug)]
pub enum ServerStep {
    /// `x ← x + η_g·Δ̄` (FedAvg).
    Sgd {
        /// η_g.
        server_lr: f64,
    },
    /// A server optimiser on `−Δ̄` (FedAvgM, FedAdagrad, FedAdam, FedYogi), with its state.
    Optimizer {
        /// The optimiser and its η_g.
        opt: ServerOptimizer,
        /// Its state (created at the first step).
        state: Option<State>,
    },
    /// FedExP's adaptive extrapolation `x ← x + η_g^t·Δ̄`.
    FedExp {
        /// ε > 0.
        eps: f64,
    },
}

impl ServerStep {
    /// Short description for logs.
    pub fn describe(&self) -> String {
        match self {
            ServerStep::Sgd { server_lr } => format!("sgd(η_g={server_lr})"),
            ServerStep::Optimizer { opt, .. } => {
                format!("{}(η_g={})", opt.name(), opt.server_lr())
            }
            ServerStep::FedExp { eps } => format!("fedexp(ε={eps})"),
        }
    }

    /// Applies the step to `params` given the aggregate `delta`, the clients' updates
    /// (after any aggregation-side scaling) and their normalised weights. Returns the
    /// server rate used.
    pub fn apply(
        &mut self,
        params: &mut [f32],
        delta: &[f32],
        client_deltas: &[&[f32]],
        weights: &[f64],
        spec: &ParamSpec,
        round: u32,
    ) -> Result<f64> {
        match self {
            ServerStep::Sgd { server_lr } => {
                let lr = *server_lr as f32;
                for (x, d) in params.iter_mut().zip(delta) {
                    *x += lr * d;
                }
                Ok(*server_lr)
            }
            ServerStep::Optimizer { opt, state } => {
                let st = state.get_or_insert_with(|| opt.init(spec));
                opt.step(params, delta, st, spec, round as u64)
                    .map_err(|e| Error::invalid("strategy", opt.name(), e.to_string()))?;
                Ok(opt.server_lr())
            }
            ServerStep::FedExp { eps } => {
                let lr = fedexp_lr(delta, client_deltas, weights, *eps);
                for (x, d) in params.iter_mut().zip(delta) {
                    *x = (*x as f64 + lr * *d as f64) as f32;
                }
                Ok(lr)
            }
        }
    }
}

/// FedExP's server rate with weights `p̃` (summing to 1):
/// `max{1, Σ_k p̃_k‖Δ_k‖² / (2(‖Δ̄‖² + ε))}`; uniform `p̃` gives §A.4.
pub fn fedexp_lr(mean: &[f32], deltas: &[&[f32]], weights: &[f64], eps: f64) -> f64 {
    let num: f64 = deltas
        .iter()
        .zip(weights)
        .map(|(d, p)| p * l2_norm(d).powi(2))
        .sum();
    (num / (2.0 * (l2_norm(mean).powi(2) + eps))).max(1.0)
}

/// The `weights`-weighted average of optimiser states of the same shape (buffers
/// averaged element-wise, recursively through children; count = the largest). Errors
/// when the shapes differ (clients ran different optimisers).
pub fn average_states(states: &[&State], weights: &[f64]) -> Result<State> {
    let first = states
        .first()
        .ok_or_else(|| Error::invalid("server-init state", "none", "at least one state"))?;
    let total: f64 = weights.iter().sum();
    let mut out = State {
        count: states.iter().map(|s| s.count).max().unwrap_or(0),
        buffers: first.buffers.iter().map(|b| vec![0f32; b.len()]).collect(),
        children: Vec::new(),
    };
    for (s, w) in states.iter().zip(weights) {
        let same = s.buffers.len() == first.buffers.len()
            && s.children.len() == first.children.len()
            && s.buffers
                .iter()
                .zip(&first.buffers)
                .all(|(a, b)| a.len() == b.len());
        if !same {
            return Err(Error::invalid(
                "plan.state_mode",
                "server-init",
                "every client of a round running the same optimiser (their states differ in shape)",
            ));
        }
        let p = (w / total) as f32;
        for (acc, b) in out.buffers.iter_mut().zip(&s.buffers) {
            for (a, x) in acc.iter_mut().zip(b) {
                *a += p * x;
            }
        }
    }
    for c in 0..first.children.len() {
        let kids: Vec<&State> = states.iter().map(|s| &s.children[c]).collect();
        out.children.push(average_states(&kids, weights)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedexp_lr_matches_the_uniform_formula_of_optim() {
        let a = [1.0f32, 0.0];
        let b = [-0.9f32, 0.0];
        let (lr, mean) = fedpace_optim::server::fedexp_server_lr(&[&a, &b], 1e-3).unwrap();
        let ours = fedexp_lr(&mean, &[&a, &b], &[0.5, 0.5], 1e-3);
        assert!((lr - ours).abs() < 1e-9 * lr, "{lr} vs {ours}");
    }

    #[test]
    fn average_states_by_hand() {
        let s1 = State {
            count: 3,
            buffers: vec![vec![1.0, 2.0]],
            children: vec![State {
                count: 1,
                buffers: vec![vec![4.0]],
                children: vec![],
            }],
        };
        let s2 = State {
            count: 5,
            buffers: vec![vec![3.0, 6.0]],
            children: vec![State {
                count: 2,
                buffers: vec![vec![0.0]],
                children: vec![],
            }],
        };
        let avg = average_states(&[&s1, &s2], &[1.0, 3.0]).unwrap();
        assert_eq!(avg.count, 5);
        assert_eq!(avg.buffers, vec![vec![2.5, 5.0]]);
        assert_eq!(avg.children[0].buffers, vec![vec![1.0]]);
        let bad = State {
            buffers: vec![vec![1.0]],
            ..Default::default()
        };
        let e = average_states(&[&s1, &bad], &[1.0, 1.0]).unwrap_err();
        assert!(e.to_string().contains("server-init"), "{e}");
    }
}
