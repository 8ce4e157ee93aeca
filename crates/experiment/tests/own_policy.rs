//! A rate policy of the user's own, registered by name (`Registry::with_policy`), and a
//! pooled array data set split by a built-in partitioner (`federation_from_pooled`):
//! what the Python package builds on (docs/library.md, docs/python.md).

use fedpace_core::{ClientInfo, RatePlan, RatePolicy};
use fedpace_data::{Partition, PoolConfig};
use fedpace_experiment::{federation_from_pooled, Experiment, Registry, RunOptions};

/// Odd clients train at `factor` × the base rate (default ½), even ones at the base.
struct OddFactor(f32);

impl RatePolicy for OddFactor {
    fn describe(&self) -> String {
        format!("odd-factor({})", self.0)
    }
    fn plan(
        &mut self,
        _round: u32,
        client: &ClientInfo,
        base: &RatePlan,
    ) -> fedpace_core::Result<RatePlan> {
        let mut p = base.clone();
        if client.id % 2 == 1 {
            p.base_lr *= self.0;
        }
        Ok(p)
    }
}

fn registry() -> Registry {
    Registry::new()
        .with_policy("odd-factor", |input| {
            let factor = match input.options.get("factor") {
                None => 0.5,
                Some(v) => v
                    .as_float()
                    .ok_or_else(|| fedpace_core::Error::invalid("policy.factor", v, "a number"))?
                    as f32,
            };
            Ok(Box::new(OddFactor(factor)) as Box<dyn RatePolicy>)
        })
        .unwrap()
}

const EXPERIMENT: &str = r#"
name = "own-policy"
rounds = 2
[data]
source = "synthetic"
num_clients = 6
[model]
name = "logistic-regression"
[client]
lr = 0.04
epochs = 1
[strategy]
name = "fedavg"
clients_per_round = 6
[policy]
name = "odd-factor"
factor = 0.25
"#;

#[test]
fn a_registered_policy_plans_every_client_and_is_recorded_by_name() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let exp = reg.experiment(EXPERIMENT, "exp.toml", &[]).unwrap();
    let result = exp.run(RunOptions::default().with_dir(&out)).unwrap();
    assert_eq!(result.summary["policy"], "odd-factor");
    assert_eq!(result.clients.len(), 6);
    for row in &result.clients {
        let want = if row.id % 2 == 1 {
            0.04f32 * 0.25
        } else {
            0.04f32
        };
        assert_eq!(row.rounds_trained, 2, "client {}", row.id);
        assert_eq!(
            row.mean_assigned_lr,
            Some(f64::from(want)),
            "client {}",
            row.id
        );
    }
    // The run directory's config names the policy and its options, and reads back.
    let written = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        written.contains("name = \"odd-factor\"") && written.contains("factor = 0.25"),
        "{written}"
    );
    // (The data's defaults are written out, so compare the resolved configs.)
    let again = reg.load(out.join("config.toml"), &[]).unwrap();
    assert_eq!(again.config().registered, exp.config().registered);
    assert_eq!(again.config().to_toml(), exp.config().to_toml());
    // Without the registry, the name is not a policy fedpace knows.
    let e = Experiment::from_toml_str(EXPERIMENT, "exp.toml", &[]).unwrap_err();
    assert!(e.is_usage() && e.to_string().contains("odd-factor"), "{e}");
}

#[test]
fn registered_policies_are_checked() {
    let e = Registry::new()
        .with_policy("by-data-size", |_| unreachable!())
        .unwrap_err()
        .to_string();
    assert!(e.contains("a built-in policy has this name"), "{e}");
    // The builder's error names the policy.
    let e = registry()
        .experiment(EXPERIMENT, "exp.toml", &["policy.factor=\"x\"".into()])
        .unwrap()
        .prepare()
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        e, "policy \"odd-factor\": policy.factor = \"x\": a number",
        "{e}"
    );
    // A policy of one's own sees every report in the clear: refused with [privacy].
    let e = registry()
        .experiment(
            EXPERIMENT,
            "exp.toml",
            &[
                "privacy.clip=1.0".into(),
                "privacy.noise_multiplier=1.0".into(),
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[privacy]: not supported with the registered policy \"odd-factor\""),
        "{e}"
    );
}

/// 120 samples of 3 classes, one feature (the label), labels in blocks.
fn pool() -> (Vec<f32>, Vec<u32>) {
    let y: Vec<u32> = (0..120).map(|i| (i / 40) as u32).collect();
    (y.iter().map(|&l| l as f32).collect(), y)
}

fn cfg(partition: Partition) -> PoolConfig {
    PoolConfig {
        num_clients: 4,
        partition: Some(partition),
        test_fraction: Some(0.25),
        ..Default::default()
    }
}

#[test]
fn pooled_arrays_are_split_by_the_built_in_partitioners() {
    let (x, y) = pool();
    let fed = federation_from_pooled(
        "pooled",
        vec![1],
        3,
        x.clone(),
        y.clone(),
        &cfg(Partition::Iid),
        7,
        None,
    )
    .unwrap();
    assert_eq!(fed.data.num_clients(), 4);
    // IID: 30 samples each, ⌊0.75·30⌋ = 22 train and 8 test; every sample used once.
    let mut labels = Vec::new();
    for k in 0..4 {
        let c = fed.data.client(k).unwrap();
        assert_eq!((c.train.len(), c.test.len()), (22, 8));
        for d in [&c.train, &c.test] {
            labels.extend((0..d.len()).map(|i| d.label(i)));
        }
    }
    labels.sort_unstable();
    assert_eq!(labels, y);
    // Shards of one label each: every client holds a single class.
    let shards = federation_from_pooled(
        "pooled",
        vec![1],
        3,
        x.clone(),
        y.clone(),
        &PoolConfig {
            num_clients: 3,
            ..cfg(Partition::Shards { per_client: 1 })
        },
        7,
        None,
    )
    .unwrap();
    for k in 0..3 {
        let c = shards.data.client(k).unwrap();
        let first = c.train.label(0);
        assert!((0..c.train.len()).all(|i| c.train.label(i) == first));
    }
    // Errors name the data set and the problem.
    let e = federation_from_pooled(
        "pooled",
        vec![1],
        3,
        x.clone(),
        y.clone(),
        &cfg(Partition::Dirichlet {
            alpha: -1.0,
            min_size: 1,
        }),
        7,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("data \"pooled\": data.partition.alpha = -1"),
        "{e}"
    );
    let e = federation_from_pooled("pooled", vec![2], 3, x, y, &cfg(Partition::Iid), 7, None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("data \"pooled\": x, y: features"), "{e}");
}
