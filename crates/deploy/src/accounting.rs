//! Communication accounting (docs/network.md, "Communication accounting").
//!
//! The figure per client, round and kind is the bytes of fedpace's own messages: the
//! encoded instruction sent (model, rate plan, every payload the strategy or policy
//! attached) and the encoded reply received (update, report, payloads) — the
//! [`fedpace_core::codec`] frames that travel as the gRPC messages' payload. The
//! [`crate::NetGrid`] measures them on what it hands to and takes from the transport, and
//! adds the transport's own ledger ([`fedpace_net::Traffic`]: the protobuf messages
//! around those payloads, a few dozen bytes more each); [`CountingGrid`] computes the
//! same figures in a simulation by encoding what its inner grid sends and returns. A
//! failed client's reply counts 0 bytes (its failure is not fedpace payload).

use fedpace_core::{
    codec, ClientId, ClientPool, EvalIns, EvalRes, ExchangeIns, Extensions, Grid, Progress, Reply,
    RoundTraffic, TrainIns, TrainRes,
};
use fedpace_net::Kind;
use std::collections::HashMap;
use std::sync::Arc;

/// One client's messages of one kind in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTraffic {
    /// The round (the dispatch number, for asynchronous strategies).
    pub round: u32,
    /// The client.
    pub client: ClientId,
    /// Train, evaluate, or the steps of a protocol exchange (summed over the round's).
    pub kind: Kind,
    /// Bytes of the encoded instruction.
    pub sent: u64,
    /// Bytes of the encoded reply (0 when the client failed).
    pub received: u64,
    /// Bytes of the protobuf `Instruction` messages as the transport counted them (0 in
    /// a simulation).
    pub wire_sent: u64,
    /// Bytes of the protobuf `Reply` messages as the transport counted them (0 in a
    /// simulation).
    pub wire_received: u64,
    /// Of `sent`, training only: the model's values and layout.
    pub model: u64,
    /// Of `sent`, training only: the rate plan (rates, group multipliers, schedule).
    pub plan: u64,
    /// Of `sent`, training only: the payloads the strategy or policy attached (SCAFFOLD's
    /// control variate, a learned-rate controller's state, …).
    pub instruction_payloads: u64,
    /// Of `received`, training only: the update's values and layout.
    pub update: u64,
    /// Of `received`, training only: the reply's payloads (auxiliary statistics the
    /// policy asked for, a control-variate update, …).
    pub reply_payloads: u64,
}

/// A training instruction's parts, in bytes: model, plan, payloads.
fn ins_parts(i: &TrainIns) -> Option<[u64; 3]> {
    let p = codec::train_ins_parts(i).ok()?;
    Some([p.params as u64, p.plan as u64, p.payloads as u64])
}

/// What the parts of training messages add to a round's figures, or to one client's row.
pub(crate) trait AddParts {
    /// The counters: model, plan, instruction payloads, update, reply payloads.
    fn parts(&mut self) -> [&mut u64; 5];
    /// An instruction's parts as [`ins_parts`] gives them.
    fn add_instruction_parts(&mut self, [model, plan, payloads]: [u64; 3]) {
        let [m, p, x, _, _] = self.parts();
        *m += model;
        *p += plan;
        *x += payloads;
    }
    /// A training instruction's model, plan and payloads.
    fn add_instruction(&mut self, i: &TrainIns) {
        if let Some(p) = ins_parts(i) {
            self.add_instruction_parts(p);
        }
    }
    /// A training reply's update and payloads.
    fn add_reply(&mut self, r: &TrainRes) {
        if let Ok(p) = codec::train_res_parts(r) {
            let [_, _, _, u, x] = self.parts();
            *u += p.params as u64;
            *x += p.payloads as u64;
        }
    }
}

impl AddParts for ClientTraffic {
    fn parts(&mut self) -> [&mut u64; 5] {
        [
            &mut self.model,
            &mut self.plan,
            &mut self.instruction_payloads,
            &mut self.update,
            &mut self.reply_payloads,
        ]
    }
}

impl AddParts for RoundTraffic {
    fn parts(&mut self) -> [&mut u64; 5] {
        [
            &mut self.model,
            &mut self.plan,
            &mut self.instruction_payloads,
            &mut self.update,
            &mut self.reply_payloads,
        ]
    }
}

impl ClientTraffic {
    /// This row's totals as a round's figures (no parts).
    pub(crate) fn round_figures(&self) -> RoundTraffic {
        let train = self.kind == Kind::Train;
        RoundTraffic {
            sent: self.sent,
            received: self.received,
            train_sent: if train { self.sent } else { 0 },
            train_received: if train { self.received } else { 0 },
            messages: 1,
            ..Default::default()
        }
    }

    pub(crate) fn sent(round: u32, client: ClientId, kind: Kind, bytes: usize) -> Self {
        Self {
            round,
            client,
            kind,
            sent: bytes as u64,
            received: 0,
            wire_sent: 0,
            wire_received: 0,
            model: 0,
            plan: 0,
            instruction_payloads: 0,
            update: 0,
            reply_payloads: 0,
        }
    }
}

/// Wraps a grid (the simulation's) and computes the bytes its messages would take on the
/// wire (see the module doc). Encoding every instruction and reply costs about one copy
/// of the model per client, so it is for accounting runs and tests.
pub struct CountingGrid<G> {
    inner: G,
    traffic: Vec<ClientTraffic>,
    round: RoundTraffic,
}

impl<G: Grid> CountingGrid<G> {
    /// Counts around `inner`.
    pub fn new(inner: G) -> Self {
        Self {
            inner,
            traffic: Vec::new(),
            round: RoundTraffic::default(),
        }
    }

    /// The wrapped grid.
    pub fn inner(&mut self) -> &mut G {
        &mut self.inner
    }

    /// Takes the figures recorded since the last call, ordered by round, client, kind
    /// (a protocol's steps in one round add up).
    pub fn take_traffic(&mut self) -> Vec<ClientTraffic> {
        merged(std::mem::take(&mut self.traffic))
    }

    fn count<I, O>(
        &mut self,
        kind: Kind,
        ins: &[(ClientId, I)],
        replies: &[Reply<O>],
        round: impl Fn(&I) -> u32,
        ins_len: impl Fn(&I) -> usize,
        res_len: impl Fn(&O) -> usize,
    ) {
        for (c, i) in ins {
            let mut t = ClientTraffic::sent(round(i), *c, kind, ins_len(i));
            if let Some(Ok(o)) = replies.iter().find(|r| r.client == *c).map(|r| &r.result) {
                t.received = res_len(o) as u64;
            }
            self.round.add(&t.round_figures());
            self.traffic.push(t);
        }
    }
}

/// Sorts rows by (round, client, kind) and adds up rows of the same key (the four steps
/// of secure aggregation are four exchange messages of one round).
pub(crate) fn merged(mut rows: Vec<ClientTraffic>) -> Vec<ClientTraffic> {
    rows.sort_by_key(|r| (r.round, r.client, r.kind));
    let mut out: Vec<ClientTraffic> = Vec::with_capacity(rows.len());
    for mut r in rows {
        match out.last_mut() {
            Some(l) if (l.round, l.client, l.kind) == (r.round, r.client, r.kind) => {
                l.sent += r.sent;
                l.received += r.received;
                l.wire_sent += r.wire_sent;
                l.wire_received += r.wire_received;
                for (a, b) in l.parts().into_iter().zip(r.parts()) {
                    *a += *b;
                }
            }
            _ => out.push(r),
        }
    }
    out
}

/// Each client's training-instruction parts ([`ins_parts`]), taken before the
/// instructions are dropped.
pub(crate) fn instruction_parts(ins: &[(ClientId, TrainIns)]) -> HashMap<ClientId, [u64; 3]> {
    ins.iter()
        .filter_map(|(c, i)| Some((*c, ins_parts(i)?)))
        .collect()
}

/// Adds each training row's parts: its client's instruction (from [`instruction_parts`])
/// and its reply when it succeeded.
pub(crate) fn add_parts(
    rows: &mut [ClientTraffic],
    ins: &HashMap<ClientId, [u64; 3]>,
    replies: &[Reply<TrainRes>],
) {
    let res: HashMap<ClientId, &TrainRes> = replies
        .iter()
        .filter_map(|r| r.result.as_ref().ok().map(|o| (r.client, o)))
        .collect();
    for row in rows {
        if let Some(&p) = ins.get(&row.client) {
            row.add_instruction_parts(p);
        }
        if let Some(r) = res.get(&row.client) {
            row.add_reply(r);
        }
    }
}

fn len_or_zero(b: fedpace_core::Result<Vec<u8>>) -> usize {
    b.map_or(0, |b| b.len())
}

impl<G: Grid> Grid for CountingGrid<G> {
    fn pool(&self) -> Arc<dyn ClientPool> {
        self.inner.pool()
    }

    fn take_round_traffic(&mut self) -> Option<RoundTraffic> {
        Some(std::mem::take(&mut self.round))
    }

    fn train(
        &mut self,
        ins: Vec<(ClientId, TrainIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<TrainRes>> {
        let keep: Vec<(ClientId, TrainIns)> = ins.clone();
        let replies = self.inner.train(ins, progress);
        for (_, i) in &keep {
            self.round.add_instruction(i);
        }
        for r in &replies {
            if let Ok(res) = &r.result {
                self.round.add_reply(res);
            }
        }
        let start = self.traffic.len();
        self.count(
            Kind::Train,
            &keep,
            &replies,
            |i| i.round,
            |i| codec::train_ins_len(i).unwrap_or(0),
            |r| codec::train_res_len(r).unwrap_or(0),
        );
        add_parts(
            &mut self.traffic[start..],
            &instruction_parts(&keep),
            &replies,
        );
        replies
    }

    fn evaluate(
        &mut self,
        ins: Vec<(ClientId, EvalIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<EvalRes>> {
        let keep: Vec<(ClientId, EvalIns)> = ins.clone();
        let replies = self.inner.evaluate(ins, progress);
        self.count(
            Kind::Evaluate,
            &keep,
            &replies,
            |i| i.round,
            |i| len_or_zero(codec::encode_eval_ins(i)),
            |r| codec::encode_eval_res(r).len(),
        );
        replies
    }

    fn exchange(
        &mut self,
        ins: Vec<(ClientId, ExchangeIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<Extensions>> {
        let keep: Vec<(ClientId, ExchangeIns)> = ins.clone();
        let replies = self.inner.exchange(ins, progress);
        self.count(
            Kind::Exchange,
            &keep,
            &replies,
            |i| i.round,
            |i| len_or_zero(codec::encode_exchange_ins(i)),
            |r| len_or_zero(codec::encode_exchange_res(r)),
        );
        replies
    }
}
