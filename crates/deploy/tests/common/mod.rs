//! A small experiment (synthetic data, a small MLP, the built-in algorithms) run in
//! simulation or over real sockets on loopback, TLS and signed requests included.

#![allow(dead_code)]

use fedpace_algos::fedbuff::FedBuffConfig;
use fedpace_algos::{Built, PolicyConfig, StandardClient, StrategyConfig};
use fedpace_core::rng::{derive_seed, Purpose};
use fedpace_core::round::{Observer, RoundRecord, RunOptions, RunOutcome};
use fedpace_core::{
    Client, ClientFactory, ClientPool, LocalWork, ModelFactory, Progress, RatePlan,
};
use fedpace_deploy::{ClientTraffic, CountingGrid, Loopback, LoopbackOptions};
use fedpace_net::{generate_local_ca, keys, Credential, KeySource, NodeConfig, Server};
use fedpace_net::{ServeStats, ServerConfig};
use fedpace_params::ParamTree;
use fedpace_sim::{run_async, AsyncOptions, DataPool, DeviceClasses, Devices, SimGrid};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub const CLIENTS: usize = 6;
pub const SEED: u64 = 7;
pub const ROUNDS: u32 = 3;

/// Everything both runs are built from.
pub struct Experiment {
    pub data: Arc<dyn fedpace_core::FederatedDataset>,
    pub models: ModelFactory,
    pub init: ParamTree,
    pub base_plan: RatePlan,
    pub strategy: StrategyConfig,
}

pub fn strategy(name: &str) -> StrategyConfig {
    let s = StrategyConfig::named(name)
        .unwrap()
        .with_clients_per_round(4);
    if name == "fedbuff" {
        return StrategyConfig::new(FedBuffConfig {
            buffer_size: 2,
            concurrency: 3,
            ..Default::default()
        });
    }
    s
}

pub fn experiment(name: &str) -> Experiment {
    experiment_with(name, CLIENTS)
}

/// [`experiment`] with `clients` clients.
pub fn experiment_with(name: &str, clients: usize) -> Experiment {
    let data_cfg: fedpace_data::DataConfig = serde_json::from_value(serde_json::json!({
        "source": "synthetic", "num_clients": clients, "alpha": 0.5, "beta": 0.5
    }))
    .unwrap();
    let fed = fedpace_data::build(&data_cfg, SEED, Path::new("data")).unwrap();
    let fedpace_data::InputShape::Dense(shape) = &fed.sample_shape else {
        panic!("synthetic data is dense")
    };
    let model: fedpace_nn::ModelConfig =
        serde_json::from_value(serde_json::json!({"name": "mlp", "hidden": [16]})).unwrap();
    let models = fedpace_nn::factory_with_grain(
        &model,
        &fedpace_nn::InputShape::Dense(shape.clone()),
        fed.num_classes,
        1,
    )
    .unwrap();
    let m = models().unwrap();
    let init = m.init(derive_seed(SEED, 0, 0, Purpose::Init)).unwrap();
    let base_plan = RatePlan {
        base_lr: 0.05,
        group_multipliers: vec![],
        schedule: Default::default(),
        work: LocalWork::Steps(4),
        max_steps: None,
        batch_size: 8,
        optimizer: serde_json::from_str(r#"{"name": "sgd"}"#).unwrap(),
        state_mode: Default::default(),
        prox_mu: 0.0,
    };
    Experiment {
        data: fed.data.clone(),
        models,
        init,
        base_plan,
        strategy: strategy(name),
    }
}

impl Experiment {
    pub fn pool(&self) -> Arc<dyn ClientPool> {
        let classes = DeviceClasses::new(&Default::default(), self.data.num_clients(), SEED);
        Arc::new(DataPool::new(self.data.clone(), classes).unwrap())
    }

    pub fn factory(&self) -> ClientFactory {
        let (data, models) = (self.data.clone(), self.models.clone());
        Arc::new(move |id| {
            let d = data.client(id as usize)?;
            Ok(Box::new(StandardClient::new(id, models()?, d)) as Box<dyn Client>)
        })
    }

    /// Runs the algorithm on `grid` for [`ROUNDS`] rounds (versions, for fedbuff).
    pub fn run(&self, grid: &mut dyn fedpace_core::Grid) -> RunOutcome {
        self.try_run(grid).unwrap()
    }

    /// [`Experiment::run`], returning the round loop's error.
    pub fn try_run(&self, grid: &mut dyn fedpace_core::Grid) -> fedpace_core::Result<RunOutcome> {
        let policy = PolicyConfig::Constant
            .build_for(self.init.spec().groups())
            .unwrap();
        let opts = RunOptions {
            rounds: ROUNDS,
            seed: SEED,
            eval_every: 1,
            finetune_steps: 2,
            personalized: Default::default(),
            max_test_samples: None,
            keep_records: true,
            eval_clients: None,
        };
        match self.strategy.build(self.base_plan.clone(), policy).unwrap() {
            Built::Sync(mut s) => {
                fedpace_core::run(s.as_mut(), grid, self.init.clone(), &opts, &mut Quiet)
            }
            Built::Async(mut a) => {
                let devices = Devices::new(Default::default(), SEED).unwrap();
                run_async(
                    a.strategy.as_mut(),
                    a.policy.as_mut(),
                    &a.base_plan,
                    grid,
                    &devices,
                    self.init.clone(),
                    &AsyncOptions {
                        updates: ROUNDS,
                        concurrency: a.concurrency,
                        rate_decay: a.rate_decay,
                        seed: SEED,
                        eval_every: 1,
                        finetune_steps: 2,
                        max_test_samples: None,
                        keep_records: true,
                        eval_clients: None,
                    },
                    &mut Quiet,
                )
            }
        }
    }

    /// The simulation, with the computed communication figures.
    pub fn simulate(&self) -> (RunOutcome, Vec<ClientTraffic>) {
        let sim = SimGrid::new(self.pool(), self.factory(), 2).unwrap();
        let mut grid = CountingGrid::new(sim);
        let out = self.run(&mut grid);
        (out, grid.take_traffic())
    }
}

pub struct Quiet;
impl Progress for Quiet {
    fn client_done(&self) {}
}
impl Observer for Quiet {
    fn progress(&self) -> &dyn Progress {
        self
    }
    fn round_finished(&mut self, _: &RoundRecord, _: &ParamTree) -> fedpace_core::Result<()> {
        Ok(())
    }
}

/// A local CA, a key ring and one credential per node range, in a fresh directory.
pub struct Federation {
    pub dir: PathBuf,
    pub ca: fedpace_net::LocalCa,
    pub ring: PathBuf,
    pub nodes: Vec<(PathBuf, Range<u64>)>,
}

pub fn federation(tag: &str, ranges: &[Range<u64>]) -> Federation {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("fedpace-deploy-{tag}-{}-{n}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let ca = generate_local_ca(&dir, &["localhost".into()]).unwrap();
    let ring = dir.join("keys.toml");
    let nodes = ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let key = dir.join(format!("node-{i}.key"));
            keys::generate(&ring, &format!("node-{i}"), vec![r.clone()], &key).unwrap();
            (key, r.clone())
        })
        .collect();
    Federation {
        dir,
        ca,
        ring,
        nodes,
    }
}

impl Federation {
    pub fn server(&self, tune: impl FnOnce(&mut ServerConfig)) -> Server {
        let mut cfg = ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            Some(self.ca.server_tls().unwrap()),
            KeySource::File(self.ring.clone()),
        );
        tune(&mut cfg);
        Server::start(cfg).unwrap()
    }

    pub fn node_config(&self, server: &str, i: usize) -> NodeConfig {
        let (key, range) = &self.nodes[i];
        let mut c = NodeConfig::new(
            server,
            Some(self.ca.client_tls("localhost").unwrap()),
            Credential::load(key).unwrap(),
            vec![range.clone()],
        );
        c.pull_wait = Duration::from_millis(500);
        c
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// The same experiment over loopback ([`Loopback`]: a TLS server and two node threads
/// hosting the clients). Returns the outcome, the measured communication figures and
/// what each node served.
pub fn over_loopback(x: &Experiment) -> (RunOutcome, Vec<ClientTraffic>, Vec<ServeStats>) {
    let registry = fedpace_algos::builtin().codecs.clone();
    let opts = LoopbackOptions {
        workers_per_node: 2,
        ..Default::default()
    };
    let mut lb = Loopback::start(x.pool(), x.factory(), registry, &opts).unwrap();
    let out = x.run(lb.grid());
    let traffic = lb.grid().take_traffic();
    (out, traffic, lb.finish().unwrap())
}

/// A run's records without wall-clock times, as JSON (every number exact).
pub fn records(out: &RunOutcome) -> Vec<serde_json::Value> {
    out.rounds
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            v.as_object_mut().unwrap().remove("wall_seconds");
            v
        })
        .collect()
}

pub fn bits(t: &ParamTree) -> Vec<u32> {
    t.as_slice().iter().map(|x| x.to_bits()).collect()
}
