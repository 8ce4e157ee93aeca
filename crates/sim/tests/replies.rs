//! The grid's replies to a round of training: in client-id order whatever thread ran
//! each client, each reply checked (shape, finite values, report) on the thread that
//! trained the client, a rejected reply keeping the state the client trained to, the
//! same on one thread as on three.

use fedpace_core::{
    Client, ClientFactory, ClientFailure, ClientId, ClientInfo, EvalIns, EvalRes, Grid, LocalState,
    Progress, Reply, TrainIns, TrainReport, TrainRes,
};
use fedpace_params::{ParamSpec, ParamTree};
use fedpace_sim::SimGrid;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Client `id` replies with a delta of `id` in every value, except: ids ≡ 1 (mod 7)
/// reply with a NaN, ids ≡ 2 (mod 7) with one value too many, ids ≡ 3 (mod 7) with a
/// negative rate sum. Every client counts its rounds in its state before replying.
struct Scripted {
    id: ClientId,
}

impl Client for Scripted {
    fn train(&mut self, ins: &TrainIns, state: &mut LocalState) -> fedpace_core::Result<TrainRes> {
        state.rounds_trained += 1;
        let spec = ins.params.spec().clone();
        let mut values = vec![self.id as f32; spec.total_len()];
        match self.id % 7 {
            1 => values[0] = f32::NAN,
            2 => values.push(0.0),
            _ => {}
        }
        let rate = if self.id % 7 == 3 { -1.0 } else { 1.0 };
        // A wrong-length delta needs a spec of that length.
        let delta = if values.len() == spec.total_len() {
            ParamTree::from_vec(spec, values)?
        } else {
            let long = ParamSpec::builder()
                .add("w", &[values.len()], "all")
                .build()?;
            ParamTree::from_vec(Arc::new(long), values)?
        };
        Ok(TrainRes {
            delta,
            num_examples: 10,
            report: TrainReport {
                steps: 1,
                rate_sum: vec![rate],
                ..Default::default()
            },
            ext: Default::default(),
        })
    }

    fn evaluate(&mut self, _: &EvalIns, _: &mut LocalState) -> fedpace_core::Result<EvalRes> {
        Err(fedpace_core::Error::Backend("not used".into()))
    }
}

struct Count(AtomicUsize);
impl Progress for Count {
    fn client_done(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

use fedpace_core::testing::plan;

/// One round of `n` clients (sent in reverse id order) on `threads` threads: the
/// replies (delta or failure) and every client's rounds trained afterwards.
fn round(n: u64, threads: usize) -> (Vec<Reply<TrainRes>>, Vec<u32>) {
    let pool: Vec<ClientInfo> = (0..n).map(|i| ClientInfo::new(i, 10, 0)).collect();
    let factory: ClientFactory = Arc::new(|id| Ok(Box::new(Scripted { id }) as Box<dyn Client>));
    let mut grid = SimGrid::new(pool, factory, threads).unwrap();
    let spec = Arc::new(ParamSpec::builder().add("w", &[3], "all").build().unwrap());
    let params = Arc::new(ParamTree::zeros(spec));
    let ins: Vec<(ClientId, TrainIns)> = (0..n)
        .rev()
        .map(|id| (id, TrainIns::new(1, params.clone(), plan(), 0)))
        .collect();
    let progress = Count(AtomicUsize::new(0));
    let replies = grid.train(ins, &progress);
    assert_eq!(progress.0.load(Ordering::Relaxed), n as usize);
    let states = (0..n)
        .map(|id| grid.state_of(id).unwrap().rounds_trained)
        .collect();
    (replies, states)
}

#[test]
fn replies_are_checked_and_in_client_order_on_any_thread_count() {
    let n = 50;
    let (one, states_one) = round(n, 1);
    for threads in [2, 3] {
        let (many, states_many) = round(n, threads);
        assert_eq!(states_many, states_one, "{threads} threads");
        assert_eq!(many.len(), one.len());
        for (a, b) in one.iter().zip(&many) {
            assert_eq!(a.client, b.client);
            match (&a.result, &b.result) {
                (Ok(x), Ok(y)) => assert_eq!(x.delta.as_slice(), y.delta.as_slice()),
                (Err(x), Err(y)) => assert_eq!(format!("{x:?}"), format!("{y:?}")),
                _ => panic!("client {}: {:?} vs {:?}", a.client, a.result, b.result),
            }
        }
    }
    for (i, r) in one.iter().enumerate() {
        assert_eq!(r.client, i as u64, "replies in client-id order");
        match (r.client % 7, &r.result) {
            (1, Err(ClientFailure::NonFinite)) => {}
            (
                2,
                Err(ClientFailure::WrongShape {
                    expected: 3,
                    got: 4,
                }),
            ) => {}
            (3, Err(ClientFailure::BadReport(m))) => assert!(m.contains("rate_sum"), "{m}"),
            (_, Ok(res)) if ![1, 2, 3].contains(&(r.client % 7)) => {
                assert_eq!(res.delta.as_slice(), &[r.client as f32; 3]);
            }
            (_, other) => panic!("client {}: {other:?}", r.client),
        }
    }
    // A rejected reply is the server's verdict on the update; the client did train, and
    // keeps the state it trained to (as before the check moved onto the client threads).
    assert!(states_one.iter().all(|&r| r == 1), "{states_one:?}");
}
