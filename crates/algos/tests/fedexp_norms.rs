//! FedExP's server rate through the whole pipeline: the server step gets every client's
//! ‖Δ_k‖² (the pipeline computes them only for the server steps that read them). Golden
//! value by hand from the rule of docs/algorithms.md §A.4,
//! η_g = max{1, Σ_k ‖Δ_k‖² / (2M(‖Δ̄‖² + ε))}.

use fedpace_algos::fedopt::FedExpConfig;
use fedpace_algos::{Normalize, PolicyConfig, StrategyConfig};
use fedpace_core::{ClientInfo, Reply, Strategy, TrainReport, TrainRes};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

use fedpace_core::testing::plan;

#[test]
fn fedexp_server_rate_reads_every_clients_update_norm() {
    let spec = Arc::new(ParamSpec::builder().add("w", &[2], "all").build().unwrap());
    let pool: Vec<ClientInfo> = (0..2).map(|id| ClientInfo::new(id, 10, 0)).collect();
    let cfg = StrategyConfig::new(FedExpConfig { eps: 1e-3 })
        .with_clients_per_round(2)
        .with_normalize(Normalize::Off);
    let mut s: Box<dyn Strategy> = cfg
        .build(plan(), PolicyConfig::Constant.build())
        .unwrap()
        .into_sync()
        .unwrap();
    let mut x = ParamTree::zeros(spec.clone());
    s.configure_train(1, &Arc::new(x.clone()), &pool, 0)
        .unwrap();
    let reply = |client: u64, delta: Vec<f32>| Reply {
        client,
        result: Ok(TrainRes {
            delta: ParamTree::from_vec(spec.clone(), delta).unwrap(),
            num_examples: 10,
            report: TrainReport {
                steps: 1,
                rate_sum: vec![0.1],
                ..Default::default()
            },
            ext: Default::default(),
        }),
    };
    let replies = [reply(0, vec![1.0, 0.0]), reply(1, vec![-0.9, 0.0])];
    let summary = s.aggregate_train(1, &mut x, &replies, &pool).unwrap();
    // M = 2; Δ̄ = (0.05, 0), ‖Δ̄‖² = 0.0025; Σ‖Δ_k‖² = 1 + 0.81 = 1.81;
    // η_g = 1.81 / (2·2·(0.0025 + 0.001)) = 129.2857… (1 if the norms were missing).
    let want = 1.81 / (4.0 * (0.0025 + 0.001));
    assert!(
        (summary.server_lr - want).abs() < 1e-4 * want,
        "{} vs {want}",
        summary.server_lr
    );
    // x = 0 + η_g·Δ̄.
    assert!((x.as_slice()[0] as f64 - want * 0.05).abs() < 1e-3);
}
