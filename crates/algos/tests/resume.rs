//! Checkpoint and resume at the library level (issue 11, item 5; docs/checkpoints.md):
//! every rate policy keeps the save/restore contract, and every algorithm — synchronous
//! under a stateful policy with client Adam (`keep`) where it accepts it, asynchronous
//! with devices that straggle and drop out — resumes bit-exactly from a checkpoint taken
//! mid-run, with its clients' states in memory and spilled to disk.

use fedpace_algos::fedasync::FedAsyncConfig;
use fedpace_algos::fedbuff::FedBuffConfig;
use fedpace_algos::StandardClient;
use fedpace_algos::{AlgorithmConfig, Built, PolicyConfig, StrategyConfig};
use fedpace_core::data::DenseDataset;
use fedpace_core::round::RunOptions;
use fedpace_core::testing::check_policy_resumes;
use fedpace_core::{
    Batch, Client, ClientData, ClientFactory, ClientInfo, EvalStats, Inputs, LocalWork, Model,
    RatePlan,
};
use fedpace_optim::{OptimizerSpec, StateMode};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

/// θ = [w₁, w₂ (body), h (head)]; a sample x has loss ½‖θ − x‖².
struct Quadratic;

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
        spec()
    }
    fn init(&self, _seed: u64) -> fedpace_core::Result<ParamTree> {
        Ok(ParamTree::zeros(spec()))
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
        g.iter_mut().for_each(|v| *v = 0.0);
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
            correct: (l < 1.0) as u64,
            count: b.len() as u64,
        })
    }
}

/// Client k has 4 + k samples around its own target.
fn data(k: u64) -> ClientData {
    let n = 4 + k as usize;
    let feats: Vec<f32> = (0..n)
        .flat_map(|i| {
            let j = i as f32 * 0.25;
            [1.0 + k as f32 + j, -1.0 - j, 2.0 * k as f32 - j]
        })
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    let d = Arc::new(DenseDataset::new(feats, vec![3], labels, 2).unwrap());
    // A validation split too: the learned controllers (fedex, fedhyper, meta-rates) need one.
    ClientData {
        train: d.clone(),
        test: d.clone(),
        validation: Some(d),
    }
}

fn pool(n: u64) -> Vec<ClientInfo> {
    (0..n)
        .map(|k| {
            let mut c = ClientInfo::new(k, 4 + k, 4 + k);
            c.device = Some(["slow", "fast"][(k % 2) as usize].to_string());
            c
        })
        .collect()
}

fn factory() -> ClientFactory {
    Arc::new(|k| {
        Ok(Box::new(StandardClient::new(k, Box::new(Quadratic), data(k))) as Box<dyn Client>)
    })
}

/// Mini-batches of 2 (shuffled: the random streams must resume too), `steps` steps.
fn plan(lr: f32, steps: u32) -> RatePlan {
    RatePlan {
        base_lr: lr,
        group_multipliers: vec![],
        schedule: Default::default(),
        work: LocalWork::Steps(steps),
        max_steps: None,
        batch_size: 2,
        optimizer: OptimizerSpec::default(),
        state_mode: StateMode::Reset,
        prox_mu: 0.0,
    }
}
use fedpace_sim::testing::{check_async_resumes, check_strategy_resumes};
use fedpace_sim::{AsyncOptions, Devices, DevicesConfig, SimGrid, SpillStore};

fn policies() -> Vec<PolicyConfig> {
    let p = |s: &str| serde_json::from_str::<PolicyConfig>(s).unwrap();
    vec![
        p(r#"{"name": "constant"}"#),
        p(r#"{"name": "by-data-size"}"#),
        p(r#"{"name": "by-device", "rates": {"slow": 0.5}}"#),
        p(r#"{"name": "grad-norm-ratio"}"#),
        p(r#"{"name": "loss-based"}"#),
        p(r#"{"name": "curvature"}"#),
        p(r#"{"name": "fedlalr"}"#),
        p(r#"{"name": "per-layer", "multipliers": {"body": 2.0}}"#),
        p(r#"{"name": "trust-ratio"}"#),
        p(r#"{"name": "straggler-compensation", "speeds": {"slow": 0.5}}"#),
        p(r#"{"name": "clip-updates"}"#),
        p(r#"{"name": "inverse-variance"}"#),
        p(r#"{"name": "prox-mu", "mu": 0.1}"#),
        p(r#"{"name": "compose", "policies": [{"name": "loss-based"}, {"name": "clip-updates"}]}"#),
    ]
}

#[test]
fn every_rate_policy_keeps_the_save_restore_contract() {
    let groups = spec().groups().to_vec();
    let mut base = plan(0.1, 3);
    base.group_multipliers = vec![1.0; groups.len()];
    for policy in policies() {
        check_policy_resumes(|| policy.build_for(&groups).unwrap(), &base, 3, 7);
    }
}

/// The grid of the checks: six clients of the quadratic toy, their states in memory or
/// (`spill`) all on disk (a budget of one byte).
fn grid(spill: Option<&std::path::Path>) -> SimGrid {
    let g = SimGrid::new(pool(6), factory(), 2).unwrap();
    match spill {
        None => g,
        Some(dir) => g.with_store(Box::new(
            SpillStore::new(dir, 1)
                .unwrap()
                .with_registry(fedpace_algos::builtin().codecs.clone()),
        )),
    }
}

fn init() -> ParamTree {
    ParamTree::from_vec(spec(), vec![0.5, -1.0, 0.25]).unwrap()
}

#[test]
fn every_synchronous_algorithm_resumes_bit_exactly_from_a_checkpoint() {
    let registry = fedpace_algos::builtin().codecs.clone();
    let dir = tempfile::tempdir().unwrap();
    let loss_based: PolicyConfig = serde_json::from_str(r#"{"name": "loss-based"}"#).unwrap();
    let adam: OptimizerSpec = serde_json::from_str(r#"{"name": "adam"}"#).unwrap();
    let opts = RunOptions {
        rounds: 5,
        seed: 7,
        eval_every: 2,
        finetune_steps: 1,
        personalized: Default::default(),
        max_test_samples: None,
        keep_records: false,
        eval_clients: None,
    };
    let mut checked = 0;
    for name in AlgorithmConfig::NAMES {
        let s = StrategyConfig::named(name)
            .unwrap()
            .with_clients_per_round(3);
        if s.is_async() {
            continue;
        }
        // Client Adam whose moments each client keeps, where the algorithm takes it.
        let mut base = plan(0.05, 3);
        if s.check_combination(&loss_based, &adam, StateMode::Keep)
            .is_ok()
        {
            base.optimizer = adam;
            base.state_mode = StateMode::Keep;
        }
        let make = || {
            s.build(base.clone(), loss_based.build())
                .unwrap()
                .into_sync()
                .unwrap()
        };
        check_strategy_resumes(make, || grid(None), &init(), &opts, 2, &registry);
        check_strategy_resumes(
            make,
            || grid(Some(dir.path())),
            &init(),
            &opts,
            3,
            &registry,
        );
        checked += 1;
    }
    assert!(checked >= 18, "{checked} synchronous algorithms checked");
}

#[test]
fn asynchronous_algorithms_resume_bit_exactly_with_updates_in_flight() {
    let registry = fedpace_algos::builtin().codecs.clone();
    let devices: DevicesConfig = serde_json::from_str(
        r#"{"speed": {"dist": "log-normal", "mu": 1.0, "sigma": 1.0},
            "dropout": 0.1, "stragglers": 0.3, "late": "partial"}"#,
    )
    .unwrap();
    let devices = Devices::new(devices, 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy: PolicyConfig = serde_json::from_str(r#"{"name": "loss-based"}"#).unwrap();
    for s in [
        StrategyConfig::new(FedAsyncConfig {
            concurrency: 3,
            ..Default::default()
        }),
        StrategyConfig::new(FedBuffConfig {
            buffer_size: 2,
            concurrency: 4,
            ..Default::default()
        }),
    ] {
        let mut base = plan(0.05, 3);
        base.optimizer = serde_json::from_str(r#"{"name": "adam"}"#).unwrap();
        base.state_mode = StateMode::Keep;
        let built = |s: &StrategyConfig| match s.build(base.clone(), policy.build()).unwrap() {
            Built::Async(a) => a,
            Built::Sync(_) => unreachable!("asynchronous"),
        };
        let a = built(&s);
        let opts = AsyncOptions {
            updates: 9,
            concurrency: a.concurrency,
            rate_decay: a.rate_decay,
            seed: 11,
            eval_every: 3,
            finetune_steps: 0,
            max_test_samples: None,
            keep_records: false,
            eval_clients: None,
        };
        for (k, spill) in [(4, None), (5, Some(dir.path()))] {
            check_async_resumes(
                || {
                    let a = built(&s);
                    (a.strategy, a.policy)
                },
                &a.base_plan,
                &devices,
                || grid(spill),
                &init(),
                &opts,
                k,
                &registry,
            );
        }
    }
}
