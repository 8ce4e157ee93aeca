//! The networked [`Grid`] (docs/network.md, "Deployment").
//!
//! One call of [`Grid::train`] or [`Grid::evaluate`] is one batch on the
//! [`fedpace_net::Server`]: every instruction is encoded with [`codec`] (clients given
//! byte-identical instructions share one buffer), sent with the call's deadline, and
//! every arrival is decoded and checked before the strategy sees it:
//!
//! - a payload that does not decode, an update whose layout differs from the model's,
//!   non-finite values, a malformed report or payload ([`validate_train_res`]), a claim
//!   of more training samples than the client registered, or evaluation counts that
//!   cannot be (more correct than counted, a non-finite loss) — each is a failure of that
//!   client naming the reason (`rejected: …` for what did not decode);
//! - a transport failure (deadline, node gone, not connected) is a failure naming it; a
//!   client's own error or panic arrives as it was raised.
//!
//! Replies come back in client-id order, as from the simulation grid. A call in which
//! fewer than the quorum replied ([`NetGridConfig::required`]) fails every client with
//! the counts, so the round loop treats the round as one without training.

use crate::accounting::{AddParts, ClientTraffic};
use crate::host::from_wire;
use bytes::Bytes;
use fedpace_core::protocol::validate_train_res;
use fedpace_core::{
    codec, ClientFailure, ClientId, ClientPool, EvalIns, EvalRes, ExchangeIns, Extensions, Grid,
    Progress, RatePlan, Registry, Reply, RoundTraffic, TrainIns, TrainRes,
};
use fedpace_net::{Kind, Server};
use fedpace_params::ParamSpec;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Deadlines and quorum of a [`NetGrid`].
#[derive(Debug, Clone, PartialEq)]
pub struct NetGridConfig {
    /// How long a training instruction may take, sending to reply (default 10 min).
    pub train_deadline: Duration,
    /// How long an evaluation instruction may take (default 10 min).
    pub eval_deadline: Duration,
    /// Fewest successful replies a call needs (default 1).
    pub quorum: usize,
    /// Fewest successful replies as a fraction of the clients sent to, in `[0, 1]`
    /// (default 0); the larger of the two counts applies.
    pub quorum_fraction: f64,
}

impl Default for NetGridConfig {
    fn default() -> Self {
        Self {
            train_deadline: Duration::from_secs(600),
            eval_deadline: Duration::from_secs(600),
            quorum: 1,
            quorum_fraction: 0.0,
        }
    }
}

impl NetGridConfig {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> fedpace_core::Result<()> {
        use fedpace_core::Error;
        if !(0.0..=1.0).contains(&self.quorum_fraction) {
            return Err(Error::invalid(
                "grid.quorum_fraction",
                self.quorum_fraction,
                "a fraction in [0, 1]",
            ));
        }
        for (field, d) in [
            ("grid.train_deadline", self.train_deadline),
            ("grid.eval_deadline", self.eval_deadline),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "0 s", "a positive duration"));
            }
        }
        Ok(())
    }

    /// Successful replies needed out of `sent` instructions: the larger of
    /// [`NetGridConfig::quorum`] and ⌈`quorum_fraction` × `sent`⌉, at most `sent`.
    pub fn required(&self, sent: usize) -> usize {
        let frac = (self.quorum_fraction * sent as f64).ceil() as usize;
        self.quorum.max(frac).min(sent)
    }
}

/// The networked grid (see the module doc).
pub struct NetGrid {
    server: Arc<Server>,
    pool: Arc<dyn ClientPool>,
    registry: Registry,
    config: NetGridConfig,
    traffic: Vec<ClientTraffic>,
    /// The highest training round (asynchronously: dispatch number) sent so far.
    last_sent: u64,
    /// The round of the last checkpoint (`None`: none taken by this grid).
    checkpoint: Option<u64>,
    /// Training runs on the real clock through [`NetGrid::real_clock`]'s source.
    real_clock: bool,
    round: RoundTraffic,
}

impl NetGrid {
    /// A grid sending through `server` to the clients of `pool` (what the server knows
    /// of them), decoding payloads with `registry`.
    pub fn new(
        server: Arc<Server>,
        pool: Arc<dyn ClientPool>,
        registry: Registry,
        config: NetGridConfig,
    ) -> fedpace_core::Result<NetGrid> {
        config.validate()?;
        Ok(NetGrid {
            server,
            pool,
            registry,
            config,
            traffic: Vec::new(),
            last_sent: 0,
            checkpoint: None,
            real_clock: false,
            round: RoundTraffic::default(),
        })
    }

    /// Marks the grid as driving a run resumed from a checkpoint taken after training
    /// round (asynchronously: dispatch number) `round`; 0 when unknown. Clients then keep
    /// every state from that round on until the next checkpoint (docs/checkpoints.md,
    /// "Over the network").
    pub fn resumed_from(&mut self, round: u64) {
        self.checkpoint = Some(round);
    }

    /// What clients are told they may forget up to: the last checkpoint's round, or
    /// without one every state but the newest (a run without periodic checkpoints is
    /// only checkpointed when stopped, after a complete round).
    fn durable_round(&self) -> u64 {
        self.checkpoint.unwrap_or(self.last_sent)
    }

    /// The transport.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Takes the communication figures recorded since the last call: one row per
    /// client, round and kind, ordered so (a protocol's steps in one round add up).
    pub fn take_traffic(&mut self) -> Vec<ClientTraffic> {
        crate::accounting::merged(std::mem::take(&mut self.traffic))
    }

    /// Sends one instruction per item and waits for every one to settle, decoding and
    /// checking each reply with `check` as it arrives (while other clients still train).
    /// Results are in item order.
    fn exchange<T>(
        &mut self,
        kind: Kind,
        items: Vec<(ClientId, u32, Result<Bytes, ClientFailure>)>,
        deadline: Duration,
        progress: &dyn Progress,
        check: impl Fn(ClientId, &[u8]) -> Result<T, ClientFailure>,
    ) -> Vec<(ClientId, Result<T, ClientFailure>)> {
        let mut batch = self.server.batch();
        // Which kept client state each instruction uses (docs/checkpoints.md, "Over the
        // network"): training its round's predecessor, evaluation the newest so far.
        self.server.set_durable_round(self.durable_round());
        match kind {
            Kind::Train => {
                let top = items.iter().map(|i| u64::from(i.1)).max().unwrap_or(0);
                self.last_sent = self.last_sent.max(top);
            }
            // On the real clock training is sent elsewhere: the newest state (0 = unset).
            Kind::Evaluate if self.real_clock => batch.set_state_round(Some(0)),
            Kind::Evaluate => batch.set_state_round(Some(self.last_sent + 1)),
            // A secure-aggregation step reads the state its round's training left (the
            // host picks it from the instruction's round).
            Kind::Exchange => {}
        }
        let mut out: Vec<(ClientId, Option<Result<T, ClientFailure>>)> =
            Vec::with_capacity(items.len());
        // This call's traffic rows, found by (round, client); instruction id → index in
        // `out` and in `rows`.
        let mut rows: Vec<ClientTraffic> = Vec::with_capacity(items.len());
        let mut row_of: HashMap<(u32, ClientId), usize> = HashMap::with_capacity(items.len());
        let mut index: HashMap<u64, (usize, usize)> = HashMap::with_capacity(items.len());
        let mut groups: BTreeMap<u32, Vec<(ClientId, Bytes, usize)>> = BTreeMap::new();
        for (client, round, payload) in items {
            match payload {
                Ok(b) => {
                    groups
                        .entry(round)
                        .or_default()
                        .push((client, b, out.len()));
                    out.push((client, None));
                }
                Err(f) => out.push((client, Some(Err(f)))),
            }
        }
        for (&round, group) in &groups {
            let at: Vec<usize> = group.iter().map(|g| g.2).collect();
            let sent: Vec<(ClientId, Bytes)> = group.iter().map(|g| (g.0, g.1.clone())).collect();
            match batch.send(u64::from(round), kind, sent, deadline) {
                Ok(ids) => {
                    for (id, (client, b, i)) in ids.into_iter().zip(group) {
                        row_of.insert((round, *client), rows.len());
                        index.insert(id, (*i, rows.len()));
                        rows.push(ClientTraffic::sent(round, *client, kind, b.len()));
                    }
                }
                Err(e) => {
                    for i in at {
                        out[i].1 = Some(Err(ClientFailure::Error(format!("sending: {e}"))));
                    }
                }
            }
        }
        drop(groups);
        // Every instruction settles by its deadline (the server's tick); the margin only
        // guards against a server that stopped.
        let give_up = std::time::Instant::now() + deadline + Duration::from_secs(30);
        while batch.outstanding() > 0 {
            let wait = give_up.saturating_duration_since(std::time::Instant::now());
            let Some(a) = batch.recv_timeout(wait) else {
                break;
            };
            let Some(&(i, row)) = index.get(&a.instruction) else {
                continue;
            };
            progress.client_done();
            if let Ok(b) = &a.result {
                rows[row].received += b.len() as u64;
            }
            let client = out[i].0;
            out[i].1 = Some(
                a.result
                    .map_err(|f| from_wire(&f))
                    .and_then(|b| check(client, &b)),
            );
        }
        for &round in row_of.keys().map(|(r, _)| r).collect::<BTreeSet<_>>() {
            for w in self.server.take_traffic_of(u64::from(round), kind) {
                if let Some(&row) = row_of.get(&(round, w.client)) {
                    rows[row].wire_sent += w.sent_bytes;
                    rows[row].wire_received += w.received_bytes;
                }
            }
        }
        for r in &rows {
            self.round.add(&r.round_figures());
        }
        self.traffic.append(&mut rows);
        out.into_iter()
            .map(|(c, r)| {
                (
                    c,
                    r.unwrap_or_else(|| {
                        Err(ClientFailure::Error(
                            "no reply: the server stopped before the deadline".into(),
                        ))
                    }),
                )
            })
            .collect()
    }

    /// Fails every reply when fewer than the quorum succeeded; sorts by client id.
    fn settle<T>(&self, what: &str, round: u32, mut replies: Vec<Reply<T>>) -> Vec<Reply<T>> {
        replies.sort_by_key(|r| r.client);
        let ok = replies.iter().filter(|r| r.result.is_ok()).count();
        let need = self.config.required(replies.len());
        if ok < need {
            let why = format!(
                "round {round}: {what} quorum not met: {ok} of {} replied, at least {need} needed",
                replies.len()
            );
            for r in &mut replies {
                r.result = Err(ClientFailure::Error(why.clone()));
            }
        }
        replies
    }

    /// A source of asynchronous arrivals on the real clock over this grid's server
    /// (docs/network.md, "Asynchronous strategies on the real clock"); from now on the
    /// grid's evaluations read each client's newest state.
    pub fn real_clock(&mut self) -> crate::NetArrivals {
        self.real_clock = true;
        crate::NetArrivals::new(
            self.server.clone(),
            self.pool.clone(),
            self.registry.clone(),
            self.config.train_deadline,
        )
    }
}

/// Decodes and checks one training reply (see the module doc).
pub(crate) fn check_train(
    pool: &dyn ClientPool,
    registry: &Registry,
    client: ClientId,
    bytes: &[u8],
    spec: &ParamSpec,
) -> Result<TrainRes, ClientFailure> {
    // A layout-only delta (a compressed or masked update) larger than the model is refused
    // before its zero tree is allocated.
    let res = codec::decode_train_res_within(bytes, registry, spec.total_len())
        .map_err(|e| ClientFailure::BadReport(format!("rejected: {e}")))?;
    let got = res.delta.as_slice().len();
    if got != spec.total_len() {
        return Err(ClientFailure::WrongShape {
            expected: spec.total_len(),
            got,
        });
    }
    if res.delta.spec().as_ref() != spec {
        return Err(ClientFailure::BadReport(
            "rejected: the update's layout (names, shapes or groups) differs from the model's"
                .into(),
        ));
    }
    validate_train_res(&res, spec)?;
    if let Ok(info) = pool.info(client) {
        if res.num_examples > info.num_train {
            return Err(ClientFailure::BadReport(format!(
                "rejected: num_examples = {}: more than the {} training samples the client \
                 registered",
                res.num_examples, info.num_train
            )));
        }
    }
    Ok(res)
}

/// Encodes every instruction; clients whose bytes equal the previous client's share its
/// buffer (the common case: one model and one plan for all). An instruction that `same`
/// finds equal to the previous one (the same model buffer, every other field equal) is
/// not encoded again.
fn encode_all<I>(
    ins: &[(ClientId, I)],
    round: impl Fn(&I) -> u32,
    same: impl Fn(&I, &I) -> bool,
    encode: impl Fn(&I) -> fedpace_core::Result<Vec<u8>>,
) -> Vec<(ClientId, u32, Result<Bytes, ClientFailure>)> {
    let mut last: Option<(&I, Bytes)> = None;
    ins.iter()
        .map(|(c, i)| {
            let b = match &last {
                Some((prev, l)) if same(prev, i) => Ok(l.clone()),
                _ => encode(i)
                    .map(|v| match &last {
                        Some((_, l)) if l[..] == v[..] => l.clone(),
                        _ => Bytes::from(v),
                    })
                    .map_err(|e| ClientFailure::Error(format!("encoding the instruction: {e}"))),
            };
            if let Ok(b) = &b {
                last = Some((i, b.clone()));
            }
            (*c, round(i), b)
        })
        .collect()
}

/// Whether two training instructions encode to the same bytes, told without encoding
/// them: one model buffer, no payloads, every other field equal. `false` only costs an
/// encoding (and a comparison of the bytes).
fn same_train(a: &TrainIns, b: &TrainIns) -> bool {
    let TrainIns {
        round,
        params,
        plan,
        seed,
        ext,
    } = a;
    Arc::ptr_eq(params, &b.params)
        && *round == b.round
        && *seed == b.seed
        && ext.is_empty()
        && b.ext.is_empty()
        && same_plan(plan, &b.plan)
}

/// Equal plans with equal bits: `==` alone takes −0.0 for +0.0, which encode differently;
/// `{:?}` prints every float so that it reads back to the same bits.
fn same_plan(a: &RatePlan, b: &RatePlan) -> bool {
    a == b && format!("{a:?}") == format!("{b:?}")
}

/// [`same_train`] for evaluation instructions.
fn same_eval(a: &EvalIns, b: &EvalIns) -> bool {
    let EvalIns {
        round,
        params,
        finetune_steps,
        max_test_samples,
        plan,
        seed,
        personalized,
        ext,
    } = a;
    Arc::ptr_eq(params, &b.params)
        && *round == b.round
        && *finetune_steps == b.finetune_steps
        && *max_test_samples == b.max_test_samples
        && *seed == b.seed
        && *personalized == b.personalized
        && ext.is_empty()
        && b.ext.is_empty()
        && same_plan(plan, &b.plan)
}

fn check_eval(bytes: &[u8]) -> Result<EvalRes, ClientFailure> {
    let res = codec::decode_eval_res(bytes)
        .map_err(|e| ClientFailure::BadReport(format!("rejected: {e}")))?;
    for (which, s) in [
        ("global", Some(res.global)),
        ("personalized", res.personalized),
    ] {
        let Some(s) = s else { continue };
        if !s.loss_sum.is_finite() || s.correct > s.count {
            return Err(ClientFailure::BadReport(format!(
                "rejected: {which} evaluation: loss_sum = {}, correct = {}, count = {}: expected \
                 a finite loss and correct <= count",
                s.loss_sum, s.correct, s.count
            )));
        }
    }
    Ok(res)
}

impl Grid for NetGrid {
    fn pool(&self) -> Arc<dyn ClientPool> {
        self.pool.clone()
    }

    /// The clients keep their own states, one per round they trained in: a checkpoint
    /// holds none of them, and from now on tells them that states older than this
    /// point may go (docs/checkpoints.md, "Over the network"). Called between rounds,
    /// with nothing in flight.
    fn visit_states(
        &mut self,
        _visit: &mut dyn FnMut(ClientId, &fedpace_core::LocalState) -> fedpace_core::Result<()>,
    ) -> fedpace_core::Result<()> {
        self.checkpoint = Some(self.last_sent);
        Ok(())
    }

    fn take_round_traffic(&mut self) -> Option<RoundTraffic> {
        Some(std::mem::take(&mut self.round))
    }

    fn train(
        &mut self,
        ins: Vec<(ClientId, TrainIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<TrainRes>> {
        let Some(first) = ins.first() else {
            return Vec::new();
        };
        let (round, spec) = (first.1.round, first.1.params.spec().clone());
        let items = encode_all(&ins, |i| i.round, same_train, codec::encode_train_ins);
        for ((_, i), item) in ins.iter().zip(&items) {
            if item.2.is_ok() {
                self.round.add_instruction(i);
            }
        }
        let parts = crate::accounting::instruction_parts(&ins);
        drop(ins);
        let start = self.traffic.len();
        let (pool, registry) = (self.pool.clone(), self.registry.clone());
        let replies: Vec<Reply<TrainRes>> = self
            .exchange(
                Kind::Train,
                items,
                self.config.train_deadline,
                progress,
                |client, b| check_train(pool.as_ref(), &registry, client, b, &spec),
            )
            .into_iter()
            .map(|(client, result)| Reply { client, result })
            .collect();
        for r in &replies {
            if let Ok(res) = &r.result {
                self.round.add_reply(res);
            }
        }
        // This call's rows (the instructions sent): their parts.
        crate::accounting::add_parts(&mut self.traffic[start..], &parts, &replies);
        self.settle("training", round, replies)
    }

    fn evaluate(
        &mut self,
        ins: Vec<(ClientId, EvalIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<EvalRes>> {
        let Some(round) = ins.first().map(|i| i.1.round) else {
            return Vec::new();
        };
        let items = encode_all(&ins, |i| i.round, same_eval, codec::encode_eval_ins);
        drop(ins);
        let replies = self
            .exchange(
                Kind::Evaluate,
                items,
                self.config.eval_deadline,
                progress,
                |_, b| check_eval(b),
            )
            .into_iter()
            .map(|(client, result)| Reply { client, result })
            .collect();
        self.settle("evaluation", round, replies)
    }

    /// One step of the strategy's protocol (secure aggregation): one batch of
    /// [`Kind::Exchange`] instructions under the training deadline. No quorum applies:
    /// the protocol has its own threshold, and a client that fails, declines or misses the
    /// deadline is one that dropped out.
    fn exchange(
        &mut self,
        ins: Vec<(ClientId, ExchangeIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<Extensions>> {
        let items = encode_all(&ins, |i| i.round, |_, _| false, codec::encode_exchange_ins);
        drop(ins);
        let registry = self.registry.clone();
        let mut replies: Vec<Reply<Extensions>> = self
            .exchange(
                Kind::Exchange,
                items,
                self.config.train_deadline,
                progress,
                |_, b| {
                    codec::decode_exchange_res(b, &registry)
                        .map_err(|e| ClientFailure::BadReport(format!("rejected: {e}")))
                },
            )
            .into_iter()
            .map(|(client, result)| Reply { client, result })
            .collect();
        replies.sort_by_key(|r| r.client);
        replies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::EvalStats;

    #[test]
    fn quorum_is_the_larger_count_capped_by_the_clients_sent() {
        let c = |quorum, quorum_fraction| NetGridConfig {
            quorum,
            quorum_fraction,
            ..Default::default()
        };
        assert_eq!(c(1, 0.0).required(10), 1);
        assert_eq!(c(1, 0.7).required(10), 7);
        assert_eq!(c(1, 0.71).required(10), 8);
        assert_eq!(c(9, 0.5).required(10), 9);
        assert_eq!(c(20, 0.0).required(10), 10);
        assert_eq!(c(1, 1.0).required(0), 0);
        let e = c(1, 1.5).validate().unwrap_err().to_string();
        assert!(
            e.contains("grid.quorum_fraction") && e.contains("1.5"),
            "{e}"
        );
    }

    #[test]
    fn instructions_share_bytes_only_when_they_would_encode_alike() {
        use fedpace_params::{ParamSpec, ParamTree};
        let spec = Arc::new(ParamSpec::builder().add("w", &[3], "body").build().unwrap());
        let model = Arc::new(ParamTree::from_vec(spec, vec![0.5, -1.0, 2.0]).unwrap());
        let plan = fedpace_core::testing::plan();
        let ins = |plan: RatePlan| TrainIns::new(2, model.clone(), plan, 7);
        let mut negative_zero = plan.clone();
        negative_zero.base_lr = -0.0;
        let mut zero = plan.clone();
        zero.base_lr = 0.0;
        let list = vec![
            (0, ins(plan.clone())),
            (1, ins(plan.clone())),
            (2, ins(zero)),
            (3, ins(negative_zero)),
            (
                4,
                TrainIns::new(2, Arc::new((*model).clone()), plan.clone(), 7),
            ),
        ];
        let out = encode_all(&list, |i| i.round, same_train, codec::encode_train_ins);
        let bytes: Vec<Bytes> = out.into_iter().map(|(_, _, b)| b.unwrap()).collect();
        for (b, (_, i)) in bytes.iter().zip(&list) {
            assert_eq!(b[..], codec::encode_train_ins(i).unwrap()[..]);
        }
        // The second shares the first's buffer; ±0.0 rates do not share; an equal model
        // in another buffer is encoded and, found equal, shares too.
        assert_eq!(bytes[0].as_ptr(), bytes[1].as_ptr());
        assert_ne!(bytes[2][..], bytes[3][..]);
        assert_ne!(bytes[3].as_ptr(), bytes[4].as_ptr());
        assert_eq!(bytes[0][..], bytes[4][..]);
    }

    #[test]
    fn impossible_evaluation_counts_are_rejected() {
        let good = EvalRes {
            global: EvalStats {
                loss_sum: 3.0,
                correct: 2,
                count: 4,
            },
            personalized: None,
            validation: None,
        };
        assert!(check_eval(&codec::encode_eval_res(&good)).is_ok());
        let mut bad = good;
        bad.personalized = Some(EvalStats {
            loss_sum: f64::NAN,
            correct: 0,
            count: 1,
        });
        let e = check_eval(&codec::encode_eval_res(&bad)).unwrap_err();
        assert!(e.to_string().contains("personalized"), "{e}");
        bad.personalized = None;
        bad.global.correct = 5;
        assert!(check_eval(&codec::encode_eval_res(&bad)).is_err());
        let e = check_eval(b"FDPC").unwrap_err();
        assert!(e.to_string().contains("rejected"), "{e}");
    }
}
