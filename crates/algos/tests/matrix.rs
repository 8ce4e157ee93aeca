//! Issue 11 (no silent combinations): every strategy × rate policy × client optimiser ×
//! state mode either runs two rounds doing what docs/configuration.md says, or is
//! refused at configuration time with one line naming both sides.
//!
//! "Doing what the docs say", checked for every accepted combination: every client
//! succeeds; the model moves and stays finite; every instruction carries the optimiser
//! and the state mode in effect (the policy's where it sets one); `keep` leaves each
//! trained client an optimiser state, `reset` none; `server-init` clients return their
//! state and the second round's instructions carry the server's average. A second table
//! checks that each accepted optimiser really reaches the local steps (its update differs
//! from plain SGD's) under every strategy.

use fedpace_algos::fedasync::FedAsyncConfig;
use fedpace_algos::fedbuff::FedBuffConfig;
use fedpace_algos::local::{OptimizerStateDown, OptimizerStateUp};
use fedpace_algos::{AlgorithmConfig, Built, PolicyConfig, StandardClient, StrategyConfig};
use fedpace_core::data::DenseDataset;
use fedpace_core::round::{Observer, RoundRecord, RunOptions};
use fedpace_core::{
    AggregateSummary, Batch, Client, ClientData, ClientFactory, ClientId, ClientInfo, EvalStats,
    Inputs, LabelHistogram, LocalWork, Model, Progress, RatePlan, Reply, TrainIns, TrainRes,
};
use fedpace_optim::{OptimizerSpec, StateMode};
use fedpace_params::{ParamSpec, ParamTree};
use fedpace_sim::{run_async, AsyncOptions, Devices, MemoryStore, SimGrid};
use std::sync::Arc;

/// θ = [w₁, w₂ (body), h (head)]; a sample x has loss ½‖θ − x‖².
struct Quadratic(Arc<ParamSpec>);

fn spec() -> Arc<ParamSpec> {
    Arc::new(
        ParamSpec::builder()
            .add("w", &[2], "body")
            .add("h", &[1], "head")
            .build()
            .unwrap(),
    )
}

impl Model for Quadratic {
    fn spec(&self) -> Arc<ParamSpec> {
        self.0.clone()
    }
    fn init(&self, _seed: u64) -> fedpace_core::Result<ParamTree> {
        Ok(ParamTree::zeros(self.0.clone()))
    }
    fn loss_and_grad(
        &mut self,
        p: &ParamTree,
        b: &Batch,
        g: &mut [f32],
    ) -> fedpace_core::Result<f32> {
        let Inputs::Dense { data, .. } = &b.inputs else {
            unreachable!()
        };
        let n = b.len() as f32;
        let mut loss = 0.0;
        for x in data.chunks(3) {
            for (i, t) in p.as_slice().iter().enumerate() {
                let d = t - x[i];
                loss += 0.5 * d * d / n;
                g[i] += d / n;
            }
        }
        Ok(loss)
    }
    fn evaluate(&mut self, p: &ParamTree, b: &Batch) -> fedpace_core::Result<EvalStats> {
        let mut g = vec![0.0; 3];
        let l = self.loss_and_grad(p, b, &mut g)?;
        Ok(EvalStats {
            loss_sum: (l * b.len() as f32) as f64,
            correct: 0,
            count: b.len() as u64,
        })
    }
}

const CLIENTS: u64 = 4;

/// Client k has 4 + 2k samples scattered around its own target.
fn data(k: u64) -> ClientData {
    let n = 4 + 2 * k as usize;
    let feats: Vec<f32> = (0..n)
        .flat_map(|i| {
            let j = i as f32 * 0.25;
            [1.0 + k as f32 + j, -1.0 - j, 2.0 * k as f32 - j]
        })
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    let d = Arc::new(DenseDataset::new(feats, vec![3], labels, 2).unwrap());
    ClientData {
        train: d.clone(),
        test: d,
        validation: None,
    }
}

fn pool() -> Vec<ClientInfo> {
    (0..CLIENTS)
        .map(|k| {
            let n = 4 + 2 * k;
            let mut c = ClientInfo::new(k, n, n);
            c.device = (k % 2 == 0).then(|| "phone".to_string());
            c.metadata
                .insert(LabelHistogram(vec![n / 2, n - n / 2 + k]));
            c
        })
        .collect()
}

fn factory() -> ClientFactory {
    Arc::new(|k| {
        Ok(
            Box::new(StandardClient::new(k, Box::new(Quadratic(spec())), data(k)))
                as Box<dyn Client>,
        )
    })
}

fn plan(optimizer: OptimizerSpec, state_mode: StateMode) -> RatePlan {
    RatePlan {
        base_lr: 0.05,
        group_multipliers: vec![],
        schedule: Default::default(),
        work: LocalWork::Steps(3),
        max_steps: None,
        batch_size: 2,
        optimizer,
        state_mode,
        prox_mu: 0.0,
    }
}

fn optimizers() -> Vec<OptimizerSpec> {
    let o = |s: &str| serde_json::from_str::<OptimizerSpec>(s).unwrap();
    vec![
        o(r#"{"name": "sgd"}"#),
        o(r#"{"name": "momentum"}"#),
        o(r#"{"name": "adam"}"#),
        o(r#"{"name": "adamw"}"#),
        o(r#"{"name": "adagrad"}"#),
        o(r#"{"name": "yogi"}"#),
        o(r#"{"name": "amsgrad"}"#),
        o(r#"{"name": "delta-sgd"}"#),
        o(r#"{"name": "lars", "momentum": 0.5}"#),
    ]
}

fn policies() -> Vec<PolicyConfig> {
    let p = |s: &str| serde_json::from_str::<PolicyConfig>(s).unwrap();
    vec![
        p(r#"{"name": "constant"}"#),
        p(r#"{"name": "by-data-size"}"#),
        p(r#"{"name": "by-label-skew"}"#),
        p(r#"{"name": "by-device", "rates": {"phone": 0.5}}"#),
        p(r#"{"name": "grad-norm-ratio"}"#),
        p(r#"{"name": "loss-based"}"#),
        p(r#"{"name": "curvature"}"#),
        p(r#"{"name": "fedlalr"}"#),
        p(r#"{"name": "per-layer", "multipliers": {"head": 2.0}}"#),
        p(r#"{"name": "trust-ratio"}"#),
        p(r#"{"name": "straggler-compensation", "speeds": {"phone": 0.5}}"#),
        p(r#"{"name": "clip-updates"}"#),
        p(r#"{"name": "inverse-variance"}"#),
        p(r#"{"name": "prox-mu", "mu": 0.1}"#),
        p(
            r#"{"name": "compose", "policies": [{"name": "by-data-size"}, {"name": "clip-updates"}]}"#,
        ),
    ]
}

const MODES: [StateMode; 3] = [StateMode::Reset, StateMode::Keep, StateMode::ServerInit];

/// Every algorithm at settings that fit four clients.
fn strategy(name: &str) -> StrategyConfig {
    let s = StrategyConfig::named(name)
        .unwrap()
        .with_clients_per_round(3);
    match s.algorithm {
        AlgorithmConfig::Fedbuff(_) => StrategyConfig::new(FedBuffConfig {
            buffer_size: 2,
            concurrency: 3,
            ..Default::default()
        }),
        AlgorithmConfig::Fedasync(_) => StrategyConfig::new(FedAsyncConfig {
            concurrency: 3,
            ..Default::default()
        }),
        _ => s,
    }
}

struct NoProgress;
impl Progress for NoProgress {
    fn client_done(&self) {}
}

/// Keeps every round's record and (synchronous runs) its instructions and replies.
#[derive(Default)]
struct Recorder {
    records: Vec<RoundRecord>,
    ins: Vec<Vec<(ClientId, TrainIns)>>,
    replies: Vec<Vec<Reply<TrainRes>>>,
}

impl Observer for Recorder {
    fn progress(&self) -> &dyn Progress {
        &NoProgress
    }
    fn wants_trace(&self) -> bool {
        true
    }
    fn trace(
        &mut self,
        _round: u32,
        _global_in: &ParamTree,
        ins: &[(ClientId, TrainIns)],
        replies: &[Reply<TrainRes>],
        _summary: &AggregateSummary,
        _global_out: &ParamTree,
    ) -> fedpace_core::Result<()> {
        self.ins.push(ins.to_vec());
        self.replies.push(replies.to_vec());
        Ok(())
    }
    fn round_finished(&mut self, r: &RoundRecord, _g: &ParamTree) -> fedpace_core::Result<()> {
        self.records.push(r.clone());
        Ok(())
    }
}

/// Runs two rounds (two server versions when asynchronous); the grid is handed back to
/// read the clients' states.
fn run(
    grid: SimGrid,
    s: &StrategyConfig,
    policy: &PolicyConfig,
    base: RatePlan,
) -> (ParamTree, Recorder, SimGrid) {
    let mut grid = grid.with_store(Box::new(MemoryStore::default()));
    let init = ParamTree::from_vec(spec(), vec![0.5, -0.5, 0.25]).unwrap();
    let groups = spec().groups().to_vec();
    let mut rec = Recorder::default();
    let built = s
        .build(base, policy.build_for(&groups).unwrap())
        .unwrap_or_else(|e| panic!("{} × {}: {e}", s.name(), policy.name()));
    let out = match built {
        Built::Sync(mut st) => {
            let opts = RunOptions {
                rounds: 2,
                seed: 3,
                eval_every: 0,
                finetune_steps: 1,
                personalized: Default::default(),
                max_test_samples: None,
                keep_records: false,
                eval_clients: None,
            };
            fedpace_core::run(st.as_mut(), &mut grid, init, &opts, &mut rec)
        }
        Built::Async(mut a) => {
            let devices = Devices::new(Default::default(), 3).unwrap();
            let opts = AsyncOptions {
                updates: 2,
                concurrency: a.concurrency,
                rate_decay: a.rate_decay,
                seed: 3,
                eval_every: 0,
                finetune_steps: 1,
                max_test_samples: None,
                keep_records: false,
                eval_clients: None,
            };
            run_async(
                a.strategy.as_mut(),
                a.policy.as_mut(),
                &a.base_plan,
                &mut grid,
                &devices,
                init,
                &opts,
                &mut rec,
            )
        }
    }
    .unwrap_or_else(|e| panic!("{} × {}: {e}", s.name(), policy.name()));
    (out.global, rec, grid)
}

#[test]
fn every_strategy_policy_optimizer_and_state_mode_runs_as_documented_or_is_refused() {
    let mut grid = Some(SimGrid::new(pool(), factory(), 1).unwrap());
    let (mut accepted, mut refused) = (0usize, 0usize);
    for name in AlgorithmConfig::NAMES {
        let s = strategy(name);
        s.validate().unwrap();
        for policy in policies() {
            policy.validate().unwrap();
            for opt in optimizers() {
                for mode in MODES {
                    let what = format!("{name} × {} × {} × {mode:?}", policy.name(), opt.name());
                    if let Err(e) = s.check_combination(&policy, &opt, mode) {
                        assert_eq!(e.lines().count(), 1, "{what}: {e}");
                        assert!(e.contains(name), "{what}: does not name the strategy: {e}");
                        let names_other = e.contains(policy.name())
                            || e.contains(opt.name())
                            || e.contains("state_mode")
                            || e.contains("clip-updates");
                        assert!(names_other, "{what}: does not name the other side: {e}");
                        refused += 1;
                        continue;
                    }
                    accepted += 1;
                    let (global, rec, g) = run(grid.take().unwrap(), &s, &policy, plan(opt, mode));
                    let (eff_opt, eff_mode) = (
                        policy.forces_optimizer().unwrap_or(opt),
                        if policy.forces_server_init() {
                            StateMode::ServerInit
                        } else {
                            mode
                        },
                    );
                    assert!(global.all_finite(), "{what}: non-finite model");
                    assert_ne!(
                        global.as_slice(),
                        &[0.5, -0.5, 0.25],
                        "{what}: the model did not move"
                    );
                    let mut trained = Vec::new();
                    for r in &rec.records {
                        for c in &r.clients {
                            assert!(c.failure.is_none(), "{what}: {:?}", c.failure);
                            assert_eq!(c.plan.optimizer, eff_opt, "{what}: plan optimiser");
                            assert_eq!(c.plan.state_mode, eff_mode, "{what}: plan state mode");
                            trained.push(c.client);
                        }
                    }
                    assert!(!trained.is_empty(), "{what}: nobody trained");
                    let mut grid_back = g;
                    for id in &trained {
                        let st = grid_back.state_of(*id).unwrap();
                        match eff_mode {
                            StateMode::Keep => {
                                assert!(st.optimizer.is_some(), "{what}: keep kept nothing")
                            }
                            _ => {
                                assert!(st.optimizer.is_none(), "{what}: {eff_mode:?} kept a state")
                            }
                        }
                    }
                    if eff_mode == StateMode::ServerInit {
                        let up = rec.replies[0].iter().all(|r| {
                            r.result
                                .as_ref()
                                .unwrap()
                                .ext
                                .contains::<OptimizerStateUp>()
                        });
                        assert!(up, "{what}: a server-init client returned no state");
                        let down = rec.ins[1]
                            .iter()
                            .all(|(_, i)| i.ext.contains::<OptimizerStateDown>());
                        assert!(down, "{what}: round 2 did not send the server's state");
                    }
                    grid = Some(grid_back);
                }
            }
        }
    }
    let total = AlgorithmConfig::NAMES.len() * policies().len() * optimizers().len() * MODES.len();
    assert_eq!(accepted + refused, total);
    eprintln!("matrix: {total} combinations, {accepted} run, {refused} refused at config time");
    assert_eq!(total, 20 * 15 * 9 * 3);
}

/// The regressions the matrix replaced: server-initialised state under SCAFFOLD and
/// FedDyn (it was overwritten by their payload and silently became `reset`), and under
/// the personalised strategies (every client failed at run time).
#[test]
fn server_init_state_reaches_scaffold_feddyn_and_personalised_clients() {
    let adam = optimizers()[2];
    for name in [
        "scaffold", "feddyn", "fedper", "ditto", "pfedme", "fedrep", "apfl",
    ] {
        let s = strategy(name);
        let grid = SimGrid::new(pool(), factory(), 1).unwrap();
        let (_, rec, _) = run(
            grid,
            &s,
            &PolicyConfig::Constant,
            plan(adam, StateMode::ServerInit),
        );
        let sent = rec.ins[1][0].1.ext.get::<OptimizerStateDown>();
        let adam_state = &sent.expect(name).0.children[0];
        assert_eq!(adam_state.buffers.len(), 2, "{name}: adam's m and v");
        assert!(
            adam_state.buffers[0].iter().any(|v| *v != 0.0),
            "{name}: averaged moments are zero"
        );
    }
}

/// Each optimiser a strategy accepts changes the clients' updates from plain SGD's: the
/// personalised recipes no longer ignore `client.optimizer`.
#[test]
fn every_accepted_optimizer_reaches_the_local_steps() {
    let mut checked = 0;
    for name in AlgorithmConfig::NAMES {
        let s = strategy(name);
        let sgd = optimizers()[0];
        let reference = {
            let grid = SimGrid::new(pool(), factory(), 1).unwrap();
            run(
                grid,
                &s,
                &PolicyConfig::Constant,
                plan(sgd, StateMode::Reset),
            )
            .0
        };
        for opt in optimizers().into_iter().skip(1) {
            if s.check_combination(&PolicyConfig::Constant, &opt, StateMode::Reset)
                .is_err()
            {
                continue;
            }
            let grid = SimGrid::new(pool(), factory(), 1).unwrap();
            let (g, _, _) = run(
                grid,
                &s,
                &PolicyConfig::Constant,
                plan(opt, StateMode::Reset),
            );
            assert_ne!(
                g.as_slice(),
                reference.as_slice(),
                "{name} × {}: the same model as plain SGD",
                opt.name()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20 * 7, "{checked}");
}

/// FedRep kept its head and body optimiser states under `keep`: the second round
/// continues from them (the regression: it always reset).
#[test]
fn fedrep_keeps_both_phases_optimizer_states() {
    let momentum = optimizers()[1];
    let s = strategy("fedrep");
    let grid = SimGrid::new(pool(), factory(), 1).unwrap();
    let (_, rec, mut grid) = run(
        grid,
        &s,
        &PolicyConfig::Constant,
        plan(momentum, StateMode::Keep),
    );
    let id = rec.records[0].clients[0].client;
    let st = grid.state_of(id).unwrap();
    assert!(st.optimizer.is_some(), "body phase state");
    assert!(
        st.ext.contains::<fedpace_algos::fedrep::FedRepHead>(),
        "head phase state"
    );
}
