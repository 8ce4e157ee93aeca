//! FedProx, SCAFFOLD and FedDyn against hand-derived updates on a quadratic whose
//! local training is full-batch gradient descent (tests/common).

#![allow(clippy::needless_range_loop, clippy::useless_vec)]

mod common;
use common::*;
use fedpace_algos::feddyn::{FedDynConfig, FedDynDown, FedDynState};
use fedpace_algos::fedprox::FedProxConfig;
use fedpace_algos::scaffold::{
    ScaffoldDown, ScaffoldOption, ScaffoldServer, ScaffoldState, ScaffoldUp,
};
use fedpace_algos::{Normalize, Pipeline, StrategyConfig};
use fedpace_core::{Client, Grid, LocalState, Strategy, TrainIns};
use fedpace_params::ParamTree;
use fedpace_sim::SimGrid;
use std::sync::Arc;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

fn global(x: [f32; DIM]) -> Arc<ParamTree> {
    Arc::new(ParamTree::from_vec(spec(), x.to_vec()).unwrap())
}

#[test]
fn fedprox_client_matches_the_closed_form() {
    // w_{s+1} = w_s − η((w_s − ā) + μ(w_s − x)) has fixed point w* = (ā + μx)/(1+μ)
    // and w_τ − w* = (1 − η(1+μ))^τ (x − w*).
    let (lr, tau, mu) = (0.1f32, 7u32, 1.5f64);
    let x = [0.5f32, -1.0];
    for mu in [0.0, mu] {
        let mut p = plan(lr, tau);
        p.prox_mu = mu;
        let ins = TrainIns::new(1, global(x), p, 0);
        let res = client(2).train(&ins, &mut LocalState::default()).unwrap();
        let a = mean(2);
        let r = (1.0 - lr as f64 * (1.0 + mu)).powi(tau as i32);
        for j in 0..DIM {
            let star = (a[j] + mu * x[j] as f64) / (1.0 + mu);
            let y = star + r * (x[j] as f64 - star);
            let got = x[j] as f64 + res.delta.as_slice()[j] as f64;
            assert!(close(got, y, 1e-5), "mu={mu} j={j}: {got} vs {y}");
        }
        assert_eq!(res.report.steps, tau);
    }
}

#[test]
fn fedprox_strategy_puts_mu_in_every_plan_and_rejects_bad_mu() {
    let cfg = StrategyConfig::new(FedProxConfig { mu: 0.7 }).with_clients_per_round(2);
    let mut s = cfg
        .build(plan(0.1, 3), fedpace_algos::PolicyConfig::Constant.build())
        .unwrap()
        .into_sync()
        .unwrap();
    let ins = s
        .configure_train(1, &global([0.0; 2]), &pool(3), 0)
        .unwrap();
    assert_eq!(ins.len(), 2);
    assert!(ins.iter().all(|(_, i)| i.plan.prox_mu == 0.7));
    let bad = StrategyConfig::new(FedProxConfig { mu: -1.0 });
    assert_eq!(
        bad.validate().unwrap_err().to_string(),
        "strategy.mu = -1: a finite μ >= 0"
    );
}

/// Hand-derived SCAFFOLD client (full-batch GD on ½‖w − ā‖²):
/// y_{s+1} = y_s − η(y_s − ā + c − c_i), fixed point y* = ā − c + c_i.
fn scaffold_client_by_hand(
    x: &[f64],
    a: [f64; DIM],
    c: &[f64],
    ci: &[f64],
    lr: f64,
    k: u32,
    option: ScaffoldOption,
) -> (Vec<f64>, Vec<f64>) {
    let r = (1.0 - lr).powi(k as i32);
    let mut dy = vec![0.0; DIM];
    let mut ci_new = vec![0.0; DIM];
    for j in 0..DIM {
        let star = a[j] - c[j] + ci[j];
        let y = star + r * (x[j] - star);
        dy[j] = y - x[j];
        ci_new[j] = match option {
            ScaffoldOption::I => x[j] - a[j],
            ScaffoldOption::II => ci[j] - c[j] + (x[j] - y) / (k as f64 * lr),
        };
    }
    (dy, ci_new)
}

#[test]
fn scaffold_two_rounds_by_hand_and_control_variates_survive() {
    for option in [ScaffoldOption::II, ScaffoldOption::I] {
        let (lr, k, n, m, server_lr) = (0.2f32, 4u32, 3u64, 2usize, 0.5f64);
        let mut s = Pipeline::new(
            "scaffold",
            settings(m, server_lr, Normalize::Off, plan(lr, k)),
            fedpace_algos::PolicyConfig::Constant.build(),
            Box::new(ScaffoldServer::new(option)),
        )
        .with_weighting(fedpace_algos::pipeline::Weighting::Uniform);
        let mut grid = SimGrid::new(pool(n), factory(), 2).unwrap();
        let mut x = ParamTree::from_vec(spec(), vec![0.5, -1.0]).unwrap();
        // Reference state in f64.
        let mut xr: Vec<f64> = x.as_slice().iter().map(|v| *v as f64).collect();
        let mut c = vec![0.0f64; DIM];
        let mut ci = vec![vec![0.0f64; DIM]; n as usize];
        for round in 1..=3 {
            let ins = s
                .configure_train(round, &Arc::new(x.clone()), grid.pool().as_ref(), 9)
                .unwrap();
            let ids: Vec<u64> = ins.iter().map(|i| i.0).collect();
            assert_eq!(ids.len(), m);
            let replies = grid.train(ins, &NoProgress);
            s.aggregate_train(round, &mut x, &replies, &pool(n))
                .unwrap();
            // by hand
            let mut mean_dy = vec![0.0; DIM];
            let mut sum_dc = vec![0.0; DIM];
            for &id in &ids {
                let (dy, new) = scaffold_client_by_hand(
                    &xr,
                    mean(id),
                    &c,
                    &ci[id as usize],
                    lr as f64,
                    k,
                    option,
                );
                for j in 0..DIM {
                    mean_dy[j] += dy[j] / m as f64;
                    sum_dc[j] += new[j] - ci[id as usize][j];
                }
                ci[id as usize] = new;
            }
            for j in 0..DIM {
                xr[j] += server_lr * mean_dy[j];
                c[j] += sum_dc[j] / n as f64; // 1/N, not 1/|S|
            }
            for j in 0..DIM {
                assert!(
                    close(x.as_slice()[j] as f64, xr[j], 1e-5),
                    "{option:?} round {round}: x {:?} vs {xr:?}",
                    x.as_slice()
                );
                let server = s.hooks::<ScaffoldServer>().unwrap();
                assert!(
                    close(server.server_control()[j] as f64, c[j], 1e-5),
                    "{option:?} round {round}: c"
                );
            }
            // every client's c_i is the one kept in the grid's state store
            for id in 0..n {
                let st = grid.state_of(id).unwrap();
                let got = st
                    .ext
                    .get::<ScaffoldState>()
                    .map_or_else(|| vec![0.0; DIM], |s| s.control.clone());
                for j in 0..DIM {
                    assert!(
                        close(got[j] as f64, ci[id as usize][j], 1e-5),
                        "{option:?} round {round} client {id}"
                    );
                }
            }
        }
    }
}

#[test]
fn scaffold_reply_carries_control_delta() {
    let mut ins = TrainIns::new(1, global([0.0, 0.0]), plan(0.1, 2), 0);
    ins.ext.insert(ScaffoldDown {
        server_control: Arc::new(vec![0.0; DIM]),
        option: ScaffoldOption::II,
    });
    let mut st = LocalState::default();
    let res = client(1).train(&ins, &mut st).unwrap();
    let up = res.ext.get::<ScaffoldUp>().expect("no control delta");
    assert_eq!(
        Some(&up.control_delta),
        st.ext.get::<ScaffoldState>().map(|s| &s.control)
    );
}

#[test]
fn feddyn_two_rounds_by_hand() {
    // Client: GD on ½‖θ − ā‖² − ⟨g_k, θ⟩ + (α/2)‖θ − x‖²: θ_{s+1} = θ_s − η((θ_s − ā) − g_k + α(θ_s − x)),
    // fixed point θ* = (ā + g_k + αx)/(1+α), θ_τ − θ* = (1 − η(1+α))^τ (x − θ*).
    let (lr, k, n, alpha) = (0.1f64, 5u32, 3u64, 0.3f64);
    let cfg = StrategyConfig::new(FedDynConfig {
        alpha,
        ..Default::default()
    })
    .with_clients_per_round(3)
    .with_normalize(Normalize::Off);
    let mut s = cfg
        .build(
            plan(lr as f32, k),
            fedpace_algos::PolicyConfig::Constant.build(),
        )
        .unwrap()
        .into_sync()
        .unwrap();
    let mut grid = SimGrid::new(pool(n), factory(), 1).unwrap();
    let mut x = ParamTree::from_vec(spec(), vec![0.5, -1.0]).unwrap();
    let mut xr: Vec<f64> = x.as_slice().iter().map(|v| *v as f64).collect();
    let mut g = vec![vec![0.0f64; DIM]; n as usize];
    let mut h = vec![0.0f64; DIM];
    for round in 1..=3 {
        let ins = s
            .configure_train(round, &Arc::new(x.clone()), grid.pool().as_ref(), 1)
            .unwrap();
        let replies = grid.train(ins, &NoProgress);
        s.aggregate_train(round, &mut x, &replies, &pool(n))
            .unwrap();
        let r = (1.0 - lr * (1.0 + alpha)).powi(k as i32);
        let mut mean_d = vec![0.0; DIM];
        for id in 0..n as usize {
            let a = mean(id as u64);
            for j in 0..DIM {
                let star = (a[j] + g[id][j] + alpha * xr[j]) / (1.0 + alpha);
                let d = star + r * (xr[j] - star) - xr[j];
                g[id][j] -= alpha * d;
                h[j] -= alpha * d / n as f64;
                mean_d[j] += d / n as f64;
            }
        }
        for j in 0..DIM {
            xr[j] += mean_d[j] - h[j] / alpha;
            assert!(
                close(x.as_slice()[j] as f64, xr[j], 1e-4),
                "round {round}: {:?} vs {xr:?}",
                x.as_slice()
            );
        }
    }
}

/// FedDyn's client step with the reference code's gradient clipping, by hand:
/// `d_s = (θ_s − ā) − g_k + α(θ_s − x)`, `θ_{s+1} = θ_s − η·d_s·min(1, c/‖d_s‖)`.
#[test]
fn feddyn_clips_the_corrected_gradient_by_hand() {
    let (lr, tau, alpha, c) = (0.1f64, 6u32, 0.5f64, 2.0f64);
    let x = [20.0f32, -15.0];
    let g0 = vec![1.5f32, -0.5];
    let a = mean(1);
    let run = |clip: Option<f64>| {
        let mut ins = TrainIns::new(1, global(x), plan(lr as f32, tau), 0);
        ins.ext.insert(FedDynDown {
            alpha,
            max_grad_norm: clip,
        });
        let mut st = LocalState::default();
        st.ext.insert(FedDynState {
            gradient: g0.clone(),
        });
        let res = client(1).train(&ins, &mut st).unwrap();
        (res, st)
    };
    for clip in [Some(c), None] {
        let mut th: Vec<f64> = x.iter().map(|v| *v as f64).collect();
        let mut bound = 0;
        for _ in 0..tau {
            let d: Vec<f64> = (0..DIM)
                .map(|j| th[j] - a[j] - g0[j] as f64 + alpha * (th[j] - x[j] as f64))
                .collect();
            let n = d.iter().map(|v| v * v).sum::<f64>().sqrt();
            let s = match clip {
                Some(c) if n > c => {
                    bound += 1;
                    c / n
                }
                _ => 1.0,
            };
            for j in 0..DIM {
                th[j] -= lr * s * d[j];
            }
        }
        if clip.is_some() {
            // The clip binds at every step here (‖d‖ starts near 25 and θ moves by at
            // most η·c = 0.2 per step).
            assert_eq!(bound, tau);
        }
        let (res, st) = run(clip);
        let g = st.ext.get::<FedDynState>().unwrap().gradient.clone();
        for j in 0..DIM {
            let want = th[j] - x[j] as f64;
            let got = res.delta.as_slice()[j] as f64;
            assert!(
                close(got, want, 1e-5),
                "clip={clip:?} j={j}: {got} vs {want}"
            );
            // g_k ← g_k − α(θ_k − x)
            let gw = g0[j] as f64 - alpha * want;
            assert!(close(g[j] as f64, gw, 1e-5), "g_k[{j}]: {} vs {gw}", g[j]);
        }
        if clip.is_some() {
            // Each clipped step moves θ by exactly η·c.
            let norm = res.report.update_norm;
            assert!(norm <= lr * c * tau as f64 * (1.0 + 1e-5), "{norm}");
        }
    }
}

#[test]
fn feddyn_clip_reaches_the_clients_and_bad_values_name_the_key() {
    let dyn_cfg = |feddyn_clip: f64| {
        StrategyConfig::new(FedDynConfig {
            feddyn_clip,
            ..Default::default()
        })
        .with_clients_per_round(2)
    };
    assert_eq!(
        FedDynConfig::default().feddyn_clip,
        10.0,
        "the reference code's default"
    );
    for (clip, want) in [(10.0, Some(10.0)), (0.0, None), (3.5, Some(3.5))] {
        let mut s = dyn_cfg(clip)
            .build(plan(0.1, 3), fedpace_algos::PolicyConfig::Constant.build())
            .unwrap()
            .into_sync()
            .unwrap();
        let ins = s
            .configure_train(1, &global([0.0; 2]), &pool(3), 0)
            .unwrap();
        for (_, i) in &ins {
            let down = i.ext.get::<FedDynDown>().expect("not feddyn payload");
            assert_eq!(down.max_grad_norm, want);
        }
    }
    let bad = dyn_cfg(-1.0);
    assert_eq!(
        bad.validate().unwrap_err().to_string(),
        "strategy.feddyn_clip = -1: a finite norm >= 0 (0 turns clipping off)"
    );
    let nan = dyn_cfg(f64::NAN);
    assert!(nan
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("strategy.feddyn_clip = NaN"));
}

#[test]
fn prox_mu_policy_sets_mu_per_client_and_composes_with_rate_policies() {
    use fedpace_algos::PolicyConfig;
    // Client k has 3 + k points here, so n̄ = 4 over clients 0..=2.
    let mut pool = pool(3);
    for c in &mut pool {
        c.num_train = 3 + c.id;
    }
    pool[2].device = Some("phone".into());
    let toml_policy: PolicyConfig = serde_json::from_str(
        r#"{"name": "compose", "policies": [
            {"name": "by-data-size", "gamma": -1.0},
            {"name": "prox-mu", "gamma": 1.0, "devices": {"phone": 0.05}}
        ]}"#,
    )
    .unwrap();
    let cfg = StrategyConfig::new(FedProxConfig { mu: 0.8 }).with_clients_per_round(3);
    let mut s = cfg
        .build(plan(0.1, 3), toml_policy.build())
        .unwrap()
        .into_sync()
        .unwrap();
    let ins = s.configure_train(1, &global([0.0; 2]), &pool, 0).unwrap();
    assert_eq!(ins.len(), 3);
    for (id, i) in &ins {
        let n = 3.0 + *id as f64;
        // Rate from by-data-size: η·(n/4)^−1; μ from prox-mu: strategy.mu·(n/4)^1,
        // except the phone (client 2), whose μ is its class's.
        let lr = 0.1 * 4.0 / n;
        assert!(
            ((i.plan.base_lr as f64) - lr).abs() < 1e-6,
            "{id}: {}",
            i.plan.base_lr
        );
        let mu = if *id == 2 { 0.05 } else { 0.8 * n / 4.0 };
        assert!(
            (i.plan.prox_mu - mu).abs() < 1e-12,
            "{id}: {}",
            i.plan.prox_mu
        );
    }
    // Per-client overrides by id win, and μ reaches the client's training: with μ_k
    // the client's result is FedProx's closed form for μ_k.
    let p: PolicyConfig =
        serde_json::from_str(r#"{"name": "prox-mu", "mu": 0.0, "clients": {"1": 1.5}}"#).unwrap();
    let mut s = StrategyConfig::default()
        .with_clients_per_round(3)
        .build(plan(0.1, 7), p.build())
        .unwrap()
        .into_sync()
        .unwrap();
    let x = [0.5f32, -1.0];
    let ins = s.configure_train(1, &global(x), &pool, 0).unwrap();
    for (id, i) in ins {
        let mu = if id == 1 { 1.5 } else { 0.0 };
        assert_eq!(i.plan.prox_mu, mu);
        let res = client(id).train(&i, &mut LocalState::default()).unwrap();
        let a = mean(id);
        let r = (1.0 - 0.1 * (1.0 + mu)).powi(7);
        for j in 0..DIM {
            let star = (a[j] + mu * x[j] as f64) / (1.0 + mu);
            let y = star + r * (x[j] as f64 - star);
            let got = x[j] as f64 + res.delta.as_slice()[j] as f64;
            assert!(close(got, y, 1e-5), "client {id} j={j}: {got} vs {y}");
        }
    }
    // Bad values name the key.
    for (src, msg) in [
        (
            r#"{"name": "prox-mu", "mu": -1.0}"#,
            "policy.mu = -1: a finite μ >= 0",
        ),
        (
            r#"{"name": "prox-mu", "clients": {"x": 1.0}}"#,
            "policy.clients.x = x: a client id",
        ),
        (
            r#"{"name": "prox-mu", "devices": {"phone": -2.0}}"#,
            "policy.devices.phone = -2: a finite μ >= 0",
        ),
    ] {
        let p: PolicyConfig = serde_json::from_str(src).unwrap();
        assert_eq!(p.validate().unwrap_err().to_string(), msg);
    }
}
