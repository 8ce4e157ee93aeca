//! The hypernetwork methods' learned state survives a checkpoint (docs/hypernetworks.md):
//! a run interrupted after round 2, its strategy saved and restored into a freshly built
//! one, ends bit-identical to the run that went straight through — the hypernetwork rate
//! policy (its network, Adam moments, embeddings, baselines and pending perturbations),
//! pFedHN (hypernetwork, momentum, embedding table) and FedL2P (meta-net and its
//! optimiser).

mod common;

use common::*;
use fedpace_algos::fedl2p::Fedl2pConfig;
use fedpace_algos::pfedhn::PFedHnConfig;
use fedpace_algos::{Built, PolicyConfig, StrategyConfig};
use fedpace_core::{Grid, Strategy};
use fedpace_params::ParamTree;
use fedpace_sim::SimGrid;
use std::sync::Arc;

const CLIENTS: u64 = 5;
const SEED: u64 = 11;

fn build(s: &StrategyConfig, policy: &PolicyConfig) -> Box<dyn Strategy> {
    let groups = spec().groups().to_vec();
    match s
        .build(plan(0.1, 3), policy.build_for(&groups).unwrap())
        .unwrap()
    {
        Built::Sync(st) => st,
        Built::Async(_) => panic!("{} is synchronous", s.name()),
    }
}

/// Rounds `from..=to` of `strategy` on `grid` from `global`.
fn rounds(
    strategy: &mut dyn Strategy,
    grid: &mut SimGrid,
    global: &mut ParamTree,
    from: u32,
    to: u32,
) {
    let pool = grid.pool();
    for round in from..=to {
        let shared = Arc::new(global.clone());
        let ins = strategy
            .configure_train(round, &shared, pool.as_ref(), SEED)
            .unwrap();
        let replies = grid.train(ins, &NoProgress);
        assert!(replies.iter().all(|r| r.result.is_ok()));
        strategy
            .aggregate_train(round, global, &replies, pool.as_ref())
            .unwrap();
    }
}

fn straight_and_resumed(s: StrategyConfig, policy: PolicyConfig) {
    let name = format!("{} × {}", s.name(), policy.name());
    let mut grid = SimGrid::new(pool(CLIENTS), factory(), 1).unwrap();
    let init = ParamTree::from_vec(spec(), vec![0.5, -0.5]).unwrap();

    let mut a = build(&s, &policy);
    let mut ga = init.clone();
    rounds(a.as_mut(), &mut grid, &mut ga, 1, 4);

    let mut b = build(&s, &policy);
    let mut gb = init;
    rounds(b.as_mut(), &mut grid, &mut gb, 1, 2);
    let saved = b.save_state().unwrap();
    drop(b);
    let mut c = build(&s, &policy);
    c.restore_state(&saved).unwrap();
    rounds(c.as_mut(), &mut grid, &mut gb, 3, 4);

    assert_eq!(
        ga.as_slice(),
        gb.as_slice(),
        "{name}: global model after resume"
    );
    assert!(
        a.save_state().unwrap() == c.save_state().unwrap(),
        "{name}: learned state after resume"
    );
    assert_ne!(
        saved,
        a.save_state().unwrap(),
        "{name}: rounds 3–4 changed nothing"
    );
}

#[test]
fn hypernet_policy_state_survives_a_checkpoint() {
    let policy: PolicyConfig =
        serde_json::from_str(r#"{"name": "hypernet", "hidden": 8, "sigma": 0.3}"#).unwrap();
    straight_and_resumed(
        StrategyConfig::named("fedavg")
            .unwrap()
            .with_clients_per_round(3),
        policy,
    );
}

#[test]
fn pfedhn_state_survives_a_checkpoint() {
    let s = StrategyConfig::new(PFedHnConfig {
        hidden: 8,
        ..Default::default()
    })
    .with_clients_per_round(2);
    straight_and_resumed(s, PolicyConfig::default());
}

#[test]
fn fedl2p_state_survives_a_checkpoint() {
    let s = StrategyConfig::new(Fedl2pConfig {
        hidden: 8,
        meta_steps: 2,
        ..Default::default()
    })
    .with_clients_per_round(3);
    straight_and_resumed(s, PolicyConfig::default());
}

/// Issue 12: the hypernetwork policy learns from the clients' validation signal. The
/// round asks every planned client for it (the validation probe, attached for the
/// policy), and every report comes back carrying it — under FedAvg and under a
/// personalised recipe (FedL2P), whose clients answer the probe too. A policy that does
/// not learn from validation gets no probe.
#[test]
fn hypernet_policy_asks_for_and_learns_from_validation_signals() {
    use fedpace_algos::probe::{ValidationProbe, ValidationSignal};
    let policy: PolicyConfig =
        serde_json::from_str(r#"{"name": "hypernet", "hidden": 8, "sigma": 0.3}"#).unwrap();
    let fedl2p = StrategyConfig::new(Fedl2pConfig {
        hidden: 8,
        meta_steps: 2,
        ..Default::default()
    });
    for s in [StrategyConfig::named("fedavg").unwrap(), fedl2p] {
        let s = s.with_clients_per_round(3);
        let mut st = build(&s, &policy);
        let mut grid = SimGrid::new(pool(CLIENTS), factory(), 1).unwrap();
        let pool = grid.pool();
        let mut g = ParamTree::from_vec(spec(), vec![0.5, -0.5]).unwrap();
        for round in 1..=3 {
            let ins = st
                .configure_train(round, &Arc::new(g.clone()), pool.as_ref(), SEED)
                .unwrap();
            assert!(
                ins.iter()
                    .all(|(_, i)| i.ext.get::<ValidationProbe>().is_some()),
                "{}: round {round} without the probe",
                s.name()
            );
            let replies = grid.train(ins, &NoProgress);
            for r in &replies {
                let res = r.result.as_ref().unwrap();
                let sig = res.report.ext.get::<ValidationSignal>().unwrap();
                assert!(sig.after.count > 0 && sig.before.loss_sum.is_finite());
            }
            st.aggregate_train(round, &mut g, &replies, pool.as_ref())
                .unwrap();
        }
    }
    let mut plain = build(
        &StrategyConfig::named("fedavg")
            .unwrap()
            .with_clients_per_round(3),
        &PolicyConfig::Constant,
    );
    let grid = SimGrid::new(pool(CLIENTS), factory(), 1).unwrap();
    let ins = plain
        .configure_train(
            1,
            &Arc::new(ParamTree::from_vec(spec(), vec![0.5, -0.5]).unwrap()),
            grid.pool().as_ref(),
            SEED,
        )
        .unwrap();
    assert!(ins
        .iter()
        .all(|(_, i)| i.ext.get::<ValidationProbe>().is_none()));
}
