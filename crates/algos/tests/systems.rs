//! Device profiles, stragglers, deadlines (fedpace-sim `Systems`), the asynchronous
//! loop (`run_async` with FedAsync and FedBuff), and FedProx composed with a rate
//! policy and normalisation, on the quadratic toy federation (tests/common).

#![allow(clippy::needless_range_loop, clippy::useless_vec)]

mod common;
use common::*;
use fedpace_algos::fedprox::FedProxConfig;
use fedpace_algos::pipeline::NoHooks;
use fedpace_algos::{FedAsync, FedBuff, Normalize, Pipeline, PolicyConfig, StrategyConfig};
use fedpace_core::asynchronous::Staleness;
use fedpace_core::round::{ClientRoundRecord, Observer, RoundRecord, RunOptions};
use fedpace_core::{ClientInfo, LocalWork, Progress, Strategy};
use fedpace_params::ParamTree;
use fedpace_sim::{
    run_async, AsyncOptions, Devices, DevicesConfig, Distribution, LatePolicy, SimGrid, Systems,
};
use std::sync::Arc;

struct Collect(Vec<RoundRecord>, NoProgress);
impl Observer for Collect {
    fn progress(&self) -> &dyn Progress {
        &self.1
    }
    fn round_finished(&mut self, r: &RoundRecord, _g: &ParamTree) -> fedpace_core::Result<()> {
        self.0.push(r.clone());
        Ok(())
    }
}

fn fedavg(m: usize, plan: fedpace_core::RatePlan) -> Box<dyn Strategy> {
    Box::new(Pipeline::new(
        "fedavg",
        settings(m, 1.0, Normalize::Auto, plan),
        PolicyConfig::Constant.build(),
        Box::new(NoHooks),
    ))
}

/// FedProx with μ through its config (one line of the registry, the real build path).
fn fedprox(
    m: usize,
    normalize: Normalize,
    plan: fedpace_core::RatePlan,
    mu: f64,
    policy: PolicyConfig,
) -> Box<dyn Strategy> {
    StrategyConfig::new(FedProxConfig { mu })
        .with_clients_per_round(m)
        .with_normalize(normalize)
        .build(plan, policy.build())
        .unwrap()
        .into_sync()
        .unwrap()
}

fn epochs_plan(e: u32) -> fedpace_core::RatePlan {
    let mut p = plan(0.05, 1);
    p.work = LocalWork::Epochs(e);
    p.batch_size = 1; // 3 steps per epoch on 3 points
    p
}

#[test]
fn fedprox_straggler_protocol_same_stragglers_partial_or_dropped() {
    let pool = pool(30);
    let x = Arc::new(ParamTree::zeros(spec()));
    let cfg = |late| DevicesConfig {
        stragglers: 0.9,
        late,
        ..Default::default()
    };
    for round in 1..=5 {
        let mut partial = Systems::new(
            fedavg(10, epochs_plan(20)),
            Devices::new(cfg(LatePolicy::Partial), 3).unwrap(),
        );
        let mut dropped = Systems::new(
            fedavg(10, epochs_plan(20)),
            Devices::new(cfg(LatePolicy::Drop), 3).unwrap(),
        );
        let a = partial.configure_train(round, &x, &pool, 3).unwrap();
        let b = dropped.configure_train(round, &x, &pool, 3).unwrap();
        // round(10·0.1) = 1 active client; 9 stragglers
        assert_eq!(a.len(), 10);
        assert_eq!(b.len(), 1);
        let ta = partial.round_timing().unwrap();
        let tb = dropped.round_timing().unwrap();
        assert_eq!(ta.partial.len(), 9);
        assert_eq!(ta.partial, tb.late_dropped, "same stragglers for both");
        for (id, i) in &a {
            if ta.partial.contains(id) {
                let m = i.plan.max_steps.unwrap();
                // e ∈ 1..=19 epochs of 3 steps
                assert!(m % 3 == 0 && (3..=57).contains(&m), "{m}");
            } else {
                assert_eq!(i.plan.max_steps, None);
                assert_eq!(b[0].0, *id);
            }
        }
    }
}

#[test]
fn deadline_gives_partial_work_by_the_clock() {
    // speed 2 steps/s, bandwidth 8 bytes/s, d = 2 params → 8 bytes each way = 2 s.
    let devices = DevicesConfig {
        speed: Distribution::Constant { value: 2.0 },
        bandwidth: Distribution::Constant { value: 8.0 },
        deadline: Some(7.0),
        ..Default::default()
    };
    let x = Arc::new(ParamTree::zeros(spec()));
    let mut s = Systems::new(
        fedavg(2, plan(0.1, 20)),
        Devices::new(devices.clone(), 0).unwrap(),
    );
    let ins = s.configure_train(1, &x, &pool(4), 0).unwrap();
    // full: 20/2 + 2 = 12 s > 7 → (7 − 2)·2 = 10 steps
    assert!(ins.iter().all(|(_, i)| i.plan.max_steps == Some(10)));
    let t = s.round_timing().unwrap();
    assert_eq!(t.round_seconds, 7.0);
    assert_eq!(
        t.completion.iter().map(|c| c.1).collect::<Vec<_>>(),
        vec![7.0, 7.0]
    );
    let mut late = Systems::new(
        fedavg(2, plan(0.1, 20)),
        Devices::new(
            DevicesConfig {
                late: LatePolicy::Drop,
                ..devices
            },
            0,
        )
        .unwrap(),
    );
    assert!(late.configure_train(1, &x, &pool(4), 0).unwrap().is_empty());
    assert_eq!(late.round_timing().unwrap().late_dropped.len(), 2);
}

#[test]
fn device_step_limit_caps_the_plan_and_the_clock() {
    // speed 2 steps/s, free bandwidth; device limit 6 steps of the plan's 20.
    let devices = DevicesConfig {
        speed: Distribution::Constant { value: 2.0 },
        max_steps: Some(Distribution::Constant { value: 6.0 }),
        ..Default::default()
    };
    let x = Arc::new(ParamTree::zeros(spec()));
    let mut s = Systems::new(fedavg(3, plan(0.1, 20)), Devices::new(devices, 0).unwrap());
    let ins = s.configure_train(1, &x, &pool(4), 0).unwrap();
    assert_eq!(ins.len(), 3);
    assert!(ins.iter().all(|(_, i)| i.plan.max_steps == Some(6)));
    let t = s.round_timing().unwrap();
    assert_eq!(t.partial.len(), 3);
    // 6 steps at 2 steps/s; the bandwidth term is ≈ 0.
    assert!((t.round_seconds - 3.0).abs() < 1e-6, "{}", t.round_seconds);
}

#[test]
fn bad_device_values_name_the_key() {
    let e = DevicesConfig {
        stragglers: 1.5,
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "devices.stragglers = 1.5: a fraction in [0, 1]"
    );
    let e = DevicesConfig {
        speed: Distribution::Constant { value: 0.0 },
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().starts_with("devices.speed.value = 0"), "{e}");
}

fn systems_run(threads: usize) -> (Vec<f32>, Vec<f64>) {
    let devices = DevicesConfig {
        speed: Distribution::LogNormal {
            mu: 0.0,
            sigma: 1.0,
        },
        availability: Distribution::Uniform {
            low: 0.5,
            high: 1.0,
        },
        dropout: Distribution::Constant { value: 0.2 },
        stragglers: 0.5,
        deadline: Some(30.0),
        ..Default::default()
    };
    let mut s = Systems::new(
        fedprox(
            4,
            Normalize::Auto,
            epochs_plan(10),
            0.5,
            PolicyConfig::Constant,
        ),
        Devices::new(devices, 11).unwrap(),
    );
    let mut grid = SimGrid::new(pool(8), factory(), threads).unwrap();
    let mut obs = Collect(Vec::new(), NoProgress);
    let out = fedpace_core::run(
        &mut s,
        &mut grid,
        ParamTree::zeros(spec()),
        &RunOptions {
            rounds: 6,
            seed: 11,
            eval_every: 0,
            finetune_steps: 0,
            max_test_samples: None,
            keep_records: true,
            eval_clients: None,
            personalized: Default::default(),
        },
        &mut obs,
    )
    .unwrap();
    let sim: Vec<f64> = obs
        .0
        .iter()
        .map(|r| r.timing.as_ref().unwrap().sim_seconds)
        .collect();
    (out.global.into_vec(), sim)
}

#[test]
fn systems_runs_are_bit_identical_across_thread_counts() {
    let (a, ta) = systems_run(1);
    let (b, tb) = systems_run(2);
    assert_eq!(a, b);
    assert_eq!(ta, tb);
    assert!(ta.windows(2).all(|w| w[1] >= w[0]) && ta[0] > 0.0);
}

#[test]
fn fedprox_with_by_data_size_policy_and_normalisation_by_hand() {
    // Server-side sizes 100, 400 (n̄ = 250): multipliers (n/n̄)^−0.5 = √2.5, √0.625.
    let pool: Vec<ClientInfo> = [100u64, 400]
        .iter()
        .enumerate()
        .map(|(i, &n)| ClientInfo::new(i as u64, n, 3))
        .collect();
    let (lr, tau, mu) = (0.1f64, 6u32, 0.8f64);
    let mut s = fedprox(
        2,
        Normalize::On,
        plan(lr as f32, tau),
        mu,
        PolicyConfig::ByDataSize {
            gamma: -0.5,
            min: 0.1,
            max: 10.0,
        },
    );
    let mut grid = SimGrid::new(pool.clone(), factory(), 1).unwrap();
    let x0 = [0.5f64, -1.0];
    let mut x = ParamTree::from_vec(spec(), vec![0.5, -1.0]).unwrap();
    let ins = s
        .configure_train(1, &Arc::new(x.clone()), &pool, 0)
        .unwrap();
    let mult = [2.5f64.sqrt(), 0.625f64.sqrt()];
    for (k, (_, i)) in ins.iter().enumerate() {
        assert_eq!(i.plan.prox_mu, mu);
        assert!((i.plan.base_lr as f64 - lr * mult[k]).abs() < 1e-6);
    }
    let lrs: Vec<f64> = ins.iter().map(|(_, i)| i.plan.base_lr as f64).collect();
    let replies = fedpace_core::Grid::train(&mut grid, ins, &NoProgress);
    let summary = s.aggregate_train(1, &mut x, &replies, &pool).unwrap();
    assert!(summary.normalized);
    // Each client (3 examples, equal weights ½): Δ_k closed form (FedProx), and Λ_k the
    // FedNova normaliser of proximal SGD, η_k·[1 − (1 − η_k μ)^τ]/(η_k μ): the proximal
    // term pulls every step back by (1 − η_k μ), so step s moves the result by
    // η_k(1 − η_k μ)^(τ−1−s) (Wang et al. 2020, App. C), not η_k.
    let lam: Vec<f64> = lrs
        .iter()
        .map(|l| (1.0 - (1.0 - l * mu).powi(tau as i32)) / mu)
        .collect();
    let tau_eff = 0.5 * (lam[0] + lam[1]);
    for j in 0..DIM {
        let mut agg = 0.0;
        for k in 0..2 {
            let a = mean(k as u64);
            let star = (a[j] + mu * x0[j]) / (1.0 + mu);
            let r = (1.0 - lrs[k] * (1.0 + mu)).powi(tau as i32);
            let d = star + r * (x0[j] - star) - x0[j];
            agg += 0.5 * d / lam[k];
        }
        let want = x0[j] + tau_eff * agg;
        let got = x.as_slice()[j] as f64;
        assert!((got - want).abs() < 1e-5, "j={j}: {got} vs {want}");
    }
}

fn async_run(
    threads: usize,
    strategy: &mut dyn fedpace_core::asynchronous::AsyncStrategy,
    rate_decay: bool,
) -> (Vec<f32>, Vec<RoundRecord>) {
    let cfg = DevicesConfig {
        speed: Distribution::LogNormal {
            mu: 0.0,
            sigma: 1.0,
        },
        ..Default::default()
    };
    async_run_with(cfg, threads, strategy, rate_decay).unwrap()
}

fn async_run_with(
    devices: DevicesConfig,
    threads: usize,
    strategy: &mut dyn fedpace_core::asynchronous::AsyncStrategy,
    rate_decay: bool,
) -> fedpace_core::Result<(Vec<f32>, Vec<RoundRecord>)> {
    let devices = Devices::new(devices, 5).unwrap();
    let mut grid = SimGrid::new(pool(8), factory(), threads).unwrap();
    let mut obs = Collect(Vec::new(), NoProgress);
    let mut policy = PolicyConfig::Constant.build();
    let out = run_async(
        strategy,
        policy.as_mut(),
        &plan(0.1, 5),
        &mut grid,
        &devices,
        ParamTree::zeros(spec()),
        &AsyncOptions {
            updates: 12,
            concurrency: 4,
            rate_decay,
            seed: 5,
            eval_every: 0,
            finetune_steps: 0,
            max_test_samples: None,
            keep_records: true,
            eval_clients: None,
        },
        &mut obs,
    )?;
    Ok((out.global.into_vec(), obs.0))
}

/// The asynchronous loop applies the device step limit and the straggler protocol per
/// dispatch (plans of 5 steps): a limit of 2 caps every plan; half the dispatches as
/// partial stragglers get budgets in 1..=4 and run exactly that many steps; as dropped
/// stragglers their updates are discarded; when every arrival fails the run stops with
/// an error instead of dispatching forever.
#[test]
fn async_loop_applies_step_limits_and_stragglers() {
    let fedbuff = || FedBuff::new(2, 1.0, Staleness::default()).unwrap();
    let clients = |r: &[RoundRecord]| -> Vec<ClientRoundRecord> {
        r.iter().flat_map(|x| x.clients.clone()).collect()
    };
    let limited = DevicesConfig {
        max_steps: Some(Distribution::Constant { value: 2.0 }),
        ..Default::default()
    };
    let (_, r) = async_run_with(limited, 2, &mut fedbuff(), false).unwrap();
    for c in clients(&r) {
        assert_eq!(c.plan.max_steps, Some(2));
        assert_eq!(c.report.unwrap().steps, 2);
    }
    let partial = DevicesConfig {
        stragglers: 0.5,
        late: LatePolicy::Partial,
        ..Default::default()
    };
    let (_, r) = async_run_with(partial, 2, &mut fedbuff(), false).unwrap();
    let (mut cut, mut full) = (0, 0);
    for c in clients(&r) {
        let steps = c.report.unwrap().steps;
        match c.plan.max_steps {
            Some(b) => {
                assert!((1..=4).contains(&b), "budget {b}");
                assert_eq!(steps, b);
                cut += 1;
            }
            None => {
                assert_eq!(steps, 5);
                full += 1;
            }
        }
    }
    assert!(cut > 0 && full > 0, "{cut} stragglers, {full} full");
    let drop = DevicesConfig {
        stragglers: 0.5,
        late: LatePolicy::Drop,
        ..Default::default()
    };
    let (_, r) = async_run_with(drop, 2, &mut fedbuff(), false).unwrap();
    let failed = clients(&r)
        .iter()
        .filter(|c| c.failure.as_deref() == Some("straggler, dropped (late = drop)"))
        .count();
    assert!(failed > 0);
    // A dropout of 1 for everyone is a config error; one that only the draws make 1
    // (e^10, clamped) stops the run after 1,000 failed arrivals.
    let certain = DevicesConfig {
        dropout: Distribution::Constant { value: 1.0 },
        ..Default::default()
    };
    assert!(certain.validate().is_err());
    let hopeless = DevicesConfig {
        dropout: Distribution::LogNormal {
            mu: 10.0,
            sigma: 0.1,
        },
        ..Default::default()
    };
    let e = async_run_with(hopeless, 2, &mut fedbuff(), false).unwrap_err();
    assert!(e.to_string().contains("arrivals in a row failed"), "{e}");
}

#[test]
fn fedasync_and_fedbuff_are_deterministic_and_time_ordered() {
    for buff in [false, true] {
        let make = || -> Box<dyn fedpace_core::asynchronous::AsyncStrategy> {
            if buff {
                Box::new(FedBuff::new(3, 1.0, Staleness::default()).unwrap())
            } else {
                Box::new(FedAsync::new(0.6, Staleness::Hinge { a: 10.0, b: 4.0 }).unwrap())
            }
        };
        let (a, ra) = async_run(1, make().as_mut(), true);
        let (b, rb) = async_run(2, make().as_mut(), true);
        assert_eq!(a, b);
        assert_eq!(ra.len(), 12);
        let times: Vec<f64> = ra
            .iter()
            .map(|r| r.timing.as_ref().unwrap().sim_seconds)
            .collect();
        assert_eq!(
            times,
            rb.iter()
                .map(|r| r.timing.as_ref().unwrap().sim_seconds)
                .collect::<Vec<_>>()
        );
        assert!(times.windows(2).all(|w| w[1] >= w[0]));
        if buff {
            assert!(ra.iter().all(|r| r.clients.len() == 3));
        } else {
            assert!(ra.iter().all(|r| r.clients.len() == 1));
        }
    }
}

#[test]
fn staleness_decays_the_clients_rate() {
    // FedAsync with a polynomial s: every dispatched plan's rate is 0.1·s(σ) for the
    // client's previous staleness σ, and at least one client was stale.
    let s = Staleness::Polynomial { a: 0.5 };
    let mut strat = FedAsync::new(0.5, s).unwrap();
    let (_, recs) = async_run(1, &mut strat, true);
    let mut last: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut decayed = 0;
    // Rebuild staleness from the records: each arrival advances the version by one.
    for r in &recs {
        for c in &r.clients {
            let want = 0.1 * s.weight(last.get(&c.client).copied().unwrap_or(0));
            assert!(
                (c.plan.base_lr as f64 - want).abs() < 1e-7,
                "{} vs {want}",
                c.plan.base_lr
            );
            if want < 0.1 - 1e-9 {
                decayed += 1;
            }
        }
        // weight = α·s(staleness) reveals the staleness the client had
        for c in &r.clients {
            let st = ((0.5 / c.weight).powi(2) - 1.0).round() as u64;
            last.insert(c.client, st);
        }
    }
    assert!(decayed > 0, "no client was ever stale");
    // without decay every plan keeps the base rate
    let mut strat = FedAsync::new(0.5, s).unwrap();
    let (_, recs) = async_run(1, &mut strat, false);
    assert!(recs
        .iter()
        .flat_map(|r| &r.clients)
        .all(|c| c.plan.base_lr == 0.1));
}

#[test]
fn random_local_epochs_are_uniform_per_round_and_client_and_compose() {
    use fedpace_sim::EpochRange;
    let pool = pool(30);
    let x = Arc::new(ParamTree::zeros(spec()));
    let cfg = DevicesConfig {
        epochs: Some(EpochRange { min: 2, max: 5 }),
        ..Default::default()
    };
    // Work given in steps is replaced by E_k epochs (3 steps each here: 3 points, B = 1).
    let base = epochs_plan(1);
    let mut seen = std::collections::BTreeMap::new();
    let mut differ_across_rounds = false;
    for round in 1..=40 {
        let mut s = Systems::new(
            fedavg(10, base.clone()),
            Devices::new(cfg.clone(), 7).unwrap(),
        );
        let again = Devices::new(cfg.clone(), 7).unwrap();
        let ins = s.configure_train(round, &x, &pool, 7).unwrap();
        assert_eq!(ins.len(), 10);
        for (id, i) in &ins {
            let LocalWork::Epochs(e) = i.plan.work else {
                panic!("work not in epochs")
            };
            assert!((2..=5).contains(&e), "{e}");
            // The same draw from (seed, round, client), whoever asks.
            assert_eq!(again.local_epochs(*id, round), Some(e));
            differ_across_rounds |= again.local_epochs(*id, round + 1) != Some(e);
            // Full work, not partial: no max_steps, not reported as partial.
            assert_eq!(i.plan.max_steps, None);
            assert_eq!(i.plan.steps_for(3), 3 * e);
            *seen.entry(e).or_insert(0) += 1;
        }
        assert!(s.round_timing().unwrap().partial.is_empty());
    }
    assert!(differ_across_rounds);
    // 400 draws: every value of U{2..5} appears, each roughly 100 times.
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    assert!(seen.values().all(|&c| (60..=140).contains(&c)), "{seen:?}");
    // Composes with the straggler protocol: a straggler's budget is 1..E_k−1 epochs
    // of the drawn E_k.
    let both = DevicesConfig {
        stragglers: 1.0,
        ..cfg.clone()
    };
    let d = Devices::new(both.clone(), 7).unwrap();
    let mut s = Systems::new(fedavg(10, base.clone()), Devices::new(both, 7).unwrap());
    let ins = s.configure_train(3, &x, &pool, 7).unwrap();
    for (id, i) in &ins {
        let e = d.local_epochs(*id, 3).unwrap();
        let m = i.plan.max_steps.unwrap();
        assert!(m % 3 == 0 && m >= 3 && m < 3 * e, "E_k = {e}, budget {m}");
    }
    // Bad ranges name the key.
    for (min, max) in [(0, 3), (4, 2)] {
        let e = DevicesConfig {
            epochs: Some(EpochRange { min, max }),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("devices.epochs.min/max = {min}/{max}: 1 <= min <= max")
        );
    }
}

/// A store whose disk has failed: every read and write errors.
struct BrokenStore;
impl fedpace_sim::StateStore for BrokenStore {
    fn take(&mut self, _id: u64) -> Result<fedpace_core::LocalState, String> {
        Err("state store /nowhere/states.redb: read: disk I/O error".into())
    }
    fn put(&mut self, _id: u64, _s: fedpace_core::LocalState) -> Result<(), String> {
        Err("state store /nowhere/states.redb: write: disk I/O error".into())
    }
    fn len(&self) -> usize {
        0
    }
}

#[test]
fn a_failing_state_store_is_an_error_of_the_run_not_a_panic() {
    let mut grid = SimGrid::new(pool(4), factory(), 2)
        .unwrap()
        .with_store(Box::new(BrokenStore));
    let mut s = fedavg(2, plan(0.1, 3));
    let mut obs = Collect(Vec::new(), NoProgress);
    let err = fedpace_core::run(
        s.as_mut(),
        &mut grid,
        ParamTree::zeros(spec()),
        &RunOptions {
            rounds: 2,
            seed: 1,
            eval_every: 0,
            finetune_steps: 0,
            max_test_samples: None,
            keep_records: true,
            eval_clients: None,
            personalized: Default::default(),
        },
        &mut obs,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("all 2 sampled clients failed") && msg.contains("disk I/O error"),
        "{msg}"
    );
}
