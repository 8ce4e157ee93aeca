//! The checkpoint contract at the level of a whole run (docs/checkpoints.md): **n rounds
//! straight = k rounds, a checkpoint, a fresh strategy and a fresh grid restored from
//! it, and the remaining rounds** — the same model bytes and the same round records
//! (wall times aside). The checkpoint goes through the same values a checkpoint file
//! holds: the server state bytes, and every client state encoded with the codec and
//! decoded through `registry`.
//!
//! Use [`check_strategy_resumes`] for a synchronous strategy (a new pipeline stage, a
//! policy inside it) and [`check_async_resumes`] for an asynchronous one; the per-part
//! check is `fedpace_core::testing::check_resumes`.

use crate::{run_async_from, AsyncOptions, Devices, SimGrid};
use fedpace_core::asynchronous::AsyncStrategy;
use fedpace_core::codec::{decode_local_state, encode_local_state};
use fedpace_core::round::{Observer, RoundRecord, RunOptions};
use fedpace_core::{
    Checkpoint, ClientId, LocalState, Progress, RatePlan, RatePolicy, Registry, Result, Start,
    Strategy,
};
use fedpace_params::ParamTree;

/// What a checkpoint held, in memory.
struct Saved {
    global: ParamTree,
    server: Vec<u8>,
    states: Vec<(ClientId, LocalState)>,
}

/// Records every round (without wall times) and checkpoints at round `at`.
struct Capture<'a> {
    at: Option<u32>,
    registry: &'a Registry,
    records: Vec<serde_json::Value>,
    saved: Option<Saved>,
}

struct NoProgress;
impl Progress for NoProgress {
    fn client_done(&self) {}
}

impl Observer for Capture<'_> {
    fn progress(&self) -> &dyn Progress {
        &NoProgress
    }
    fn round_finished(&mut self, record: &RoundRecord, _global: &ParamTree) -> Result<()> {
        let mut v = serde_json::to_value(record).expect("records serialise");
        v["wall_seconds"] = serde_json::Value::Null;
        self.records.push(v);
        Ok(())
    }
    fn checkpoint_due(&self, round: u32, _stopping: bool) -> bool {
        Some(round) == self.at
    }
    fn checkpoint(&mut self, cp: Checkpoint<'_>) -> Result<()> {
        let mut states = Vec::new();
        let registry = self.registry;
        cp.grid.visit_states(&mut |id, s| {
            let bytes = encode_local_state(s)?;
            states.push((id, decode_local_state(&bytes, registry)?));
            Ok(())
        })?;
        self.saved = Some(Saved {
            global: cp.global.clone(),
            server: cp.server,
            states,
        });
        Ok(())
    }
}

/// Checks that a synchronous run of `make()` on `grid()` from `init` resumes bit-exactly
/// from a checkpoint after round `k` of `opts.rounds` (see the module doc). Panics where
/// it does not, naming the round.
pub fn check_strategy_resumes(
    make: impl Fn() -> Box<dyn Strategy>,
    grid: impl Fn() -> SimGrid,
    init: &ParamTree,
    opts: &RunOptions,
    k: u32,
    registry: &Registry,
) {
    let run = |start: Start, at: Option<u32>, g: &mut SimGrid| {
        let mut obs = Capture {
            at,
            registry,
            records: Vec::new(),
            saved: None,
        };
        let out =
            fedpace_core::run_from(make().as_mut(), g, start, opts, &mut obs).expect("the run");
        (out.global, obs)
    };
    let (straight, all) = run(Start::Fresh(init.clone()), None, &mut grid());
    let (_, first) = run(Start::Fresh(init.clone()), Some(k), &mut grid());
    compare(straight, all, first, k, |saved| {
        let mut g = grid();
        g.restore_states(saved.states)
            .expect("restoring client states");
        run(
            Start::Resume {
                global: saved.global,
                server: saved.server,
            },
            None,
            &mut g,
        )
    });
}

/// [`check_strategy_resumes`] for an asynchronous algorithm on the simulated clock of
/// `devices`: `make` builds its server half and policy.
#[allow(clippy::too_many_arguments)]
pub fn check_async_resumes(
    make: impl Fn() -> (Box<dyn AsyncStrategy>, Box<dyn RatePolicy>),
    base_plan: &RatePlan,
    devices: &Devices,
    grid: impl Fn() -> SimGrid,
    init: &ParamTree,
    opts: &AsyncOptions,
    k: u32,
    registry: &Registry,
) {
    let run = |start: Start, at: Option<u32>, g: &mut SimGrid| {
        let mut obs = Capture {
            at,
            registry,
            records: Vec::new(),
            saved: None,
        };
        let (mut s, mut p) = make();
        let out = run_async_from(
            s.as_mut(),
            p.as_mut(),
            base_plan,
            g,
            devices,
            start,
            registry,
            opts,
            &mut obs,
        )
        .expect("the run");
        (out.global, obs)
    };
    let (straight, all) = run(Start::Fresh(init.clone()), None, &mut grid());
    let (_, first) = run(Start::Fresh(init.clone()), Some(k), &mut grid());
    compare(straight, all, first, k, |saved| {
        let mut g = grid();
        g.restore_states(saved.states)
            .expect("restoring client states");
        run(
            Start::Resume {
                global: saved.global,
                server: saved.server,
            },
            None,
            &mut g,
        )
    });
}

fn compare<'a>(
    straight: ParamTree,
    all: Capture<'a>,
    first: Capture<'a>,
    k: u32,
    resume: impl FnOnce(Saved) -> (ParamTree, Capture<'a>),
) {
    let saved = first.saved.expect("a checkpoint at round k");
    assert_eq!(
        first.records[..k as usize],
        all.records[..k as usize],
        "rounds before the checkpoint"
    );
    let (resumed, rest) = resume(saved);
    for (i, (a, b)) in rest
        .records
        .iter()
        .zip(&all.records[k as usize..])
        .enumerate()
    {
        assert_eq!(
            a,
            b,
            "round {} after resuming from round {k} differs from the straight run",
            k as usize + 1 + i
        );
    }
    assert_eq!(rest.records.len(), all.records.len() - k as usize);
    let bits = |t: &ParamTree| t.as_slice().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&resumed),
        bits(&straight),
        "final model after resuming from round {k}"
    );
}
