//! Issue 6 (scale): the client pool costs nothing per registered client. A federation
//! of ten million clients is built, sampled and trained (SCAFFOLD with a by-data-size
//! policy, so both the per-client state and the pool-wide mean are exercised) while a
//! counting allocator watches the heap; and a lazy pool gives the same run as the same
//! metadata listed row by row.

mod common;
use common::*;
use fedpace_algos::pipeline::Weighting;
use fedpace_algos::scaffold::{ScaffoldOption, ScaffoldServer};
use fedpace_algos::{Normalize, Pipeline, PolicyConfig};
use fedpace_core::round::{Observer, RoundRecord, RunOptions};
use fedpace_core::{ClientData, ClientInfo, ClientPool, Dataset, FederatedDataset, Grid, Progress};
use fedpace_params::ParamTree;
use fedpace_sim::{DataPool, DeviceClasses, SimGrid};
use std::collections::BTreeMap;
use std::sync::Arc;

#[path = "../../../test-support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{peak_of, MEASURING};

/// `n` clients; client k holds `20 + k % 5` points (the quadratic of tests/common),
/// generated when asked.
struct Generated {
    n: usize,
}

fn size(k: usize) -> usize {
    20 + k % 5
}

impl FederatedDataset for Generated {
    fn name(&self) -> String {
        "generated".into()
    }
    fn num_clients(&self) -> usize {
        self.n
    }
    fn num_classes(&self) -> usize {
        1
    }
    fn client(&self, id: usize) -> fedpace_core::Result<ClientData> {
        let pts = (0..size(id))
            .map(|i| [(id % 7) as f32 - 3.0, (i % 3) as f32])
            .collect();
        let d: Arc<dyn Dataset> = Arc::new(Points(pts));
        Ok(ClientData {
            train: d,
            test: Arc::new(Points(Vec::new())),
            validation: None,
        })
    }
    fn train_len(&self, id: usize) -> fedpace_core::Result<usize> {
        Ok(size(id))
    }
    fn test_len(&self, _id: usize) -> fedpace_core::Result<usize> {
        Ok(0)
    }
}

fn factory_of(data: Arc<Generated>) -> fedpace_core::ClientFactory {
    Arc::new(move |id| {
        let d = data.client(id as usize)?;
        Ok(Box::new(fedpace_algos::StandardClient::new(
            id,
            Box::new(Quadratic),
            d,
        )) as Box<dyn fedpace_core::Client>)
    })
}

struct Quiet;
impl Progress for Quiet {
    fn client_done(&self) {}
}
impl Observer for Quiet {
    fn progress(&self) -> &dyn Progress {
        self
    }
    fn round_finished(&mut self, _r: &RoundRecord, _g: &ParamTree) -> fedpace_core::Result<()> {
        Ok(())
    }
}

fn scaffold(per_round: usize) -> Pipeline {
    let policy = PolicyConfig::ByDataSize {
        gamma: -0.5,
        min: 0.25,
        max: 4.0,
    }
    .build();
    Pipeline::new(
        "scaffold",
        settings(per_round, 1.0, Normalize::Off, plan(0.1, 3)),
        policy,
        Box::new(ScaffoldServer::new(ScaffoldOption::II)),
    )
    .with_weighting(Weighting::Uniform)
}

fn run(grid: &mut SimGrid, per_round: usize, rounds: u32) -> fedpace_core::round::RunOutcome {
    let opts = RunOptions {
        rounds,
        seed: 5,
        eval_every: 0,
        finetune_steps: 0,
        personalized: Default::default(),
        max_test_samples: None,
        keep_records: true,
        eval_clients: None,
    };
    let init = ParamTree::from_vec(spec(), vec![0.5, -1.0]).unwrap();
    fedpace_core::run(&mut scaffold(per_round), grid, init, &opts, &mut Quiet).unwrap()
}

#[test]
fn issue6_a_pool_of_ten_million_clients_allocates_nothing_per_client() {
    let _serial = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 10_000_000;
    let data = Arc::new(Generated { n: N });
    let classes: BTreeMap<String, f64> = [("slow".to_string(), 0.3)].into_iter().collect();
    // Building the pool and the grid.
    let (mut grid, built) = peak_of(|| {
        let pool = DataPool::new(data.clone(), DeviceClasses::new(&classes, N, 1)).unwrap();
        SimGrid::new(pool, factory_of(data.clone()), 2).unwrap()
    });
    assert!(built < 1 << 20, "building the pool took {built} bytes");
    eprintln!("heap growth: building {built} B");
    let pool = grid.pool();
    assert_eq!(pool.len(), N);
    let last = pool.info(N as u64 - 1).unwrap();
    assert_eq!(
        (last.id, last.num_train, last.num_test),
        (N as u64 - 1, 24, 0)
    );
    assert!(pool.info(N as u64).is_err());
    let slow = (0..10_000u64)
        .filter(|&i| pool.info(i * 997).unwrap().device.as_deref() == Some("slow"))
        .count();
    assert!((2_700..3_300).contains(&slow), "{slow} of 10,000 slow");
    // The pool-wide total: a pass over ten million sizes, holding nothing.
    let (total, summed) = peak_of(|| pool.total_train().unwrap());
    assert_eq!(total, 22 * N as u64); // sizes 20..24 in equal shares
                                      // (A few KB of slack: the test harness allocates on its own thread.)
    assert!(summed < 64 << 10, "the pass allocated {summed} bytes");
    drop(pool);
    // Two rounds of 1,000 clients: memory follows the clients in flight (their data,
    // models, states, replies), not the ten million registered (a row each would be
    // ≥ 720 MB; the grid keeps 1,000 SCAFFOLD states per round).
    let (out, ran) = peak_of(|| run(&mut grid, 1000, 2));
    assert_eq!(out.rounds.len(), 2);
    assert_eq!(out.rounds[0].sampled.len(), 1000);
    assert!(out
        .rounds
        .iter()
        .all(|r| r.clients.iter().all(|c| c.failure.is_none())));
    eprintln!("heap growth: total_train pass {summed} B, two rounds {ran} B at peak");
    assert!(ran < 10 << 20, "two rounds took {ran} bytes at peak");
}

#[test]
fn a_lazy_pool_runs_like_the_same_rows_listed() {
    let _serial = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    // Above the histogram limit, so the pool computes rows on demand.
    let n = 5000;
    let data = Arc::new(Generated { n });
    let lazy = DataPool::new(data.clone(), DeviceClasses::none()).unwrap();
    let rows: Vec<ClientInfo> = (0..n as u64).map(|id| lazy.info(id).unwrap()).collect();
    let a = run(
        &mut SimGrid::new(lazy, factory_of(data.clone()), 2).unwrap(),
        40,
        3,
    );
    let b = run(&mut SimGrid::new(rows, factory_of(data), 1).unwrap(), 40, 3);
    assert_eq!(a.global.as_slice(), b.global.as_slice());
    for (x, y) in a.rounds.iter().zip(&b.rounds) {
        assert_eq!(x.sampled, y.sampled);
    }
}
