//! `flower_compatible = true` reproduces Flower: the aggregate is the plain n_k-weighted
//! mean of the clients' updates (Flower's `aggregate_fit`), never normalised by rate
//! sums, and the server step is Flower's rule. Checked against the committed re-derivation
//! of Flower 1.42's FedAdam/FedAdagrad/FedYogi (`crates/optim/tests/golden/flower_server.py`
//! → `flower_server.json`): each round's golden pseudo-gradient is split between two
//! clients with different data sizes *and* different rate sums, so any normalisation would
//! move the result away from the golden parameters.

use fedpace_algos::fedopt::{FedAdagradConfig, FedAdamConfig, FedYogiConfig};
use fedpace_algos::{AlgorithmConfig, Normalize, PolicyConfig, StrategyConfig};
use fedpace_core::{ClientInfo, Reply, Strategy, TrainReport, TrainRes};
use fedpace_params::{ParamSpec, ParamTree};
use serde_json::Value;
use std::sync::Arc;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

use fedpace_core::testing::plan;

fn reply(
    client: u64,
    delta: Vec<f32>,
    n: u64,
    rate: f64,
    spec: &Arc<ParamSpec>,
) -> Reply<TrainRes> {
    Reply {
        client,
        result: Ok(TrainRes {
            delta: ParamTree::from_vec(spec.clone(), delta).unwrap(),
            num_examples: n,
            report: TrainReport {
                steps: 1,
                rate_sum: vec![rate; spec.num_groups()],
                ..Default::default()
            },
            ext: Default::default(),
        }),
    }
}

#[test]
fn flower_compatible_aggregate_matches_flower_rule() {
    let doc: Value =
        serde_json::from_str(include_str!("../../optim/tests/golden/flower_server.json")).unwrap();
    let spec = Arc::new(
        ParamSpec::builder()
            .add("w", &[2, 3], "body")
            .add("b", &[4], "head")
            .build()
            .unwrap(),
    );
    let pool: Vec<ClientInfo> = [(0u64, 1u64), (1, 3)]
        .iter()
        .map(|&(id, n)| ClientInfo::new(id, n, 0))
        .collect();
    let deltas: Vec<Vec<f32>> = doc["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    for case in ["fedadam", "fedadagrad", "fedyogi"] {
        let golden = doc["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == case)
            .unwrap();
        let hp = &golden["hyper"];
        let tau = hp["tau"].as_f64().unwrap();
        let (b1, b2) = (
            hp["beta1"].as_f64().unwrap_or(0.9),
            hp["beta2"].as_f64().unwrap_or(0.99),
        );
        let algorithm: AlgorithmConfig = match case {
            "fedadam" => FedAdamConfig {
                beta1: b1,
                beta2: b2,
                tau,
                flower_compatible: true,
            }
            .into(),
            "fedyogi" => FedYogiConfig {
                beta1: b1,
                beta2: b2,
                tau,
                flower_compatible: true,
            }
            .into(),
            _ => FedAdagradConfig {
                tau,
                flower_compatible: true,
            }
            .into(),
        };
        let mut cfg = StrategyConfig::new(algorithm)
            .with_clients_per_round(2)
            .with_normalize(Normalize::Off);
        cfg.round.server_lr = hp["server_lr"].as_f64();
        // The flag's promise: normalisation cannot be switched on beside it.
        let auto = cfg.clone().with_normalize(Normalize::Auto);
        let e = auto.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("strategy.normalize = auto: off with flower_compatible"),
            "{e}"
        );

        let mut s: Box<dyn Strategy> = cfg
            .build(plan(), PolicyConfig::Constant.build())
            .unwrap()
            .into_sync()
            .unwrap();
        let mut x = ParamTree::from_vec(spec.clone(), floats(&doc["x0"])).unwrap();
        for (t, (d, want)) in deltas
            .iter()
            .zip(golden["params"].as_array().unwrap())
            .enumerate()
        {
            let round = t as u32 + 1;
            let shared = Arc::new(x.clone());
            s.configure_train(round, &shared, &pool, 0).unwrap();
            // n = 1 and 3 with rate sums 0.1 and 0.4: (1·(d + e) + 3·(d − e/3)) / 4 = d.
            let e: Vec<f32> = (0..d.len()).map(|i| 0.01 * (i as f32 - 4.0)).collect();
            let a: Vec<f32> = d.iter().zip(&e).map(|(d, e)| d + e).collect();
            let b: Vec<f32> = d.iter().zip(&e).map(|(d, e)| d - e / 3.0).collect();
            let replies = [reply(0, a, 1, 0.1, &spec), reply(1, b, 3, 0.4, &spec)];
            let summary = s.aggregate_train(round, &mut x, &replies, &pool).unwrap();
            assert!(!summary.normalized, "{case}: round {round} was normalised");
            for (i, (&got, want)) in x
                .as_slice()
                .iter()
                .zip(want.as_array().unwrap())
                .enumerate()
            {
                let want = want.as_f64().unwrap();
                let err = (got as f64 - want).abs() / want.abs().max(0.01);
                assert!(err < 1e-4, "{case} round {round} [{i}]: {got} vs {want}");
            }
        }
    }
}
