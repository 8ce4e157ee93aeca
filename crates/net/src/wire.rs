//! Validated values of the fleet protocol, and the checks that make them (docs/network.md).
//!
//! Everything a peer sends passes through one of the `*_from_proto` functions here
//! before it is used: they never panic, and they name the message and field they refuse.
//! Sizes are checked before this (the body limit), so nothing here allocates more than
//! the bytes already received.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::proto;

/// A logical client's id (the same as `fedpace_core::ClientId`).
pub type ClientId = u64;

/// Protocol revision of a registration in one request (`RegisterRequest.protocol`).
pub const PROTOCOL: u32 = 1;

/// Protocol revision of a registration in parts (`RegisterRequest.more`, `part_of`;
/// protocol 1.3): a server that predates parts refuses it, naming both revisions.
pub const PROTOCOL_PARTS: u32 = 2;

/// What an instruction asks a client to do; phase 2 of issue 13 gives each its payload type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Local training (payload: a train instruction).
    Train,
    /// Evaluation (payload: an evaluate instruction).
    Evaluate,
    /// One step of a protocol after training, e.g. secure aggregation's (payload: an
    /// exchange message).
    Exchange,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 3] = [Kind::Train, Kind::Evaluate, Kind::Exchange];

    pub(crate) fn to_proto(self) -> proto::Kind {
        match self {
            Kind::Train => proto::Kind::Train,
            Kind::Evaluate => proto::Kind::Evaluate,
            Kind::Exchange => proto::Kind::Exchange,
        }
    }

    fn from_proto(value: i32) -> Option<Kind> {
        match proto::Kind::try_from(value).ok()? {
            proto::Kind::Train => Some(Kind::Train),
            proto::Kind::Evaluate => Some(Kind::Evaluate),
            proto::Kind::Exchange => Some(Kind::Exchange),
            proto::Kind::Unspecified => None,
        }
    }

    /// Lower-case name (`train`, `evaluate`, `exchange`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Train => "train",
            Kind::Evaluate => "evaluate",
            Kind::Exchange => "exchange",
        }
    }
}

/// Why an instruction produced no payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Sent by the client: it ran and failed.
    Client,
    /// Sent by the client: it declined (busy, deadline already past, shutting down).
    Declined,
    /// Sent by the client: it could not decode the instruction's payload.
    BadInstruction,
    /// Decided by the server: no reply by the deadline.
    Deadline,
    /// Decided by the server: the client's node missed its heartbeats or left.
    Gone,
    /// Decided by the server: the client was not registered when the instruction was sent.
    NotConnected,
    /// Decided by the server: the reply broke a limit or a rule (reason says which).
    Rejected,
}

impl FailureKind {
    /// Lower-case name used in messages and metrics.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Client => "client error",
            FailureKind::Declined => "declined",
            FailureKind::BadInstruction => "bad instruction",
            FailureKind::Deadline => "deadline",
            FailureKind::Gone => "gone",
            FailureKind::NotConnected => "not connected",
            FailureKind::Rejected => "rejected",
        }
    }
}

/// A failed instruction: a value handed to aggregation, never a panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Who decided, and why in one word.
    pub kind: FailureKind,
    /// Human-readable detail (at most [`MAX_REASON_BYTES`] when it came from a client).
    pub reason: String,
}

/// Longest failure reason a client may send.
pub const MAX_REASON_BYTES: usize = 1024;

impl Failure {
    /// A failure with its reason.
    pub fn new(kind: FailureKind, reason: impl Into<String>) -> Failure {
        Failure {
            kind,
            reason: reason.into(),
        }
    }

    pub(crate) fn to_proto(&self) -> proto::Failure {
        let code = match self.kind {
            FailureKind::Client => proto::FailureCode::Client,
            FailureKind::Declined => proto::FailureCode::Declined,
            FailureKind::BadInstruction => proto::FailureCode::BadInstruction,
            // Server-side kinds never travel; a node sending one means "client error".
            _ => proto::FailureCode::Client,
        };
        let mut reason = self.reason.clone();
        truncate_utf8(&mut reason, MAX_REASON_BYTES);
        proto::Failure {
            code: code as i32,
            reason,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.reason)
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// One instruction as a node receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// Server-assigned id, echoed in the reply.
    pub id: u64,
    /// The logical client it is for.
    pub client: ClientId,
    /// The round (or model version, for asynchronous strategies).
    pub round: u64,
    /// What to do.
    pub kind: Kind,
    /// Replies after this are late.
    pub deadline: SystemTime,
    /// Opaque bytes (phase 2: the encoded instruction).
    pub payload: Bytes,
    /// Which of the client's kept states to use (0: not set; docs/checkpoints.md, "Over
    /// the network"): training starts from the newest state of a round before this one
    /// and its result is this round's state; evaluation uses the newest state of this
    /// round or before.
    pub state_round: u64,
    /// The server can restart from no earlier than this round (0: not set): a client may
    /// forget every state older than its newest one of this round or before.
    pub durable_round: u64,
}

/// A node's answer to one instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The instruction's id.
    pub instruction: u64,
    /// The client that ran it.
    pub client: ClientId,
    /// Payload bytes, or why there are none.
    pub result: Result<Bytes, Failure>,
}

impl Outcome {
    /// The outcome for `instruction`.
    pub fn for_instruction(instruction: &Instruction, result: Result<Bytes, Failure>) -> Outcome {
        Outcome {
            instruction: instruction.id,
            client: instruction.client,
            result,
        }
    }

    pub(crate) fn to_proto(&self) -> proto::Reply {
        let outcome = match &self.result {
            Ok(payload) => proto::reply::Outcome::Payload(payload.clone()),
            Err(failure) => proto::reply::Outcome::Failure(failure.to_proto()),
        };
        proto::Reply {
            instruction: self.instruction,
            client: self.client,
            outcome: Some(outcome),
        }
    }
}

fn invalid(message: &'static str, field: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        message,
        field,
        reason: reason.into(),
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// Checks an instruction received by a node.
pub fn instruction_from_proto(p: proto::Instruction, max_payload: usize) -> Result<Instruction> {
    let kind = Kind::from_proto(p.kind)
        .ok_or_else(|| invalid("Instruction", "kind", format!("{}: unknown kind", p.kind)))?;
    if p.payload.len() > max_payload {
        return Err(invalid(
            "Instruction",
            "payload",
            format!("{} bytes: at most {max_payload}", p.payload.len()),
        ));
    }
    Ok(Instruction {
        id: p.id,
        client: p.client,
        round: p.round,
        kind,
        deadline: from_unix_ms(p.deadline_unix_ms),
        payload: p.payload,
        state_round: p.state_round,
        durable_round: p.durable_round,
    })
}

/// The one payload a node keeps so that later instructions of the same session may name it
/// instead of carrying it (`Instruction.payload_of`, protocol 1.2; docs/network.md, "One
/// model per node"): the payload of the latest instruction the node received in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldPayload {
    /// The session it arrived in; instruction ids name payloads only within one.
    pub session: u64,
    /// The instruction it came with.
    pub instruction: u64,
    /// The payload.
    pub payload: Bytes,
}

impl HeldPayload {
    /// What a Pull in `session` says it holds (`PullRequest.holding`): the instruction id,
    /// or 0 when the payload is from another session or there is none.
    pub fn holding(held: Option<&HeldPayload>, session: u64) -> u64 {
        held.filter(|h| h.session == session)
            .map_or(0, |h| h.instruction)
    }
}

/// Checks the instructions of one Pull reply received in `session`, whose request said it
/// held `held` (see [`HeldPayload::holding`]), and fills in the payloads they name by
/// `payload_of`. Returns them and the payload the node holds afterwards. A name that is
/// neither the held payload nor the latest full payload before it in the reply, or that
/// comes with payload bytes of its own, refuses the whole reply, naming the field.
pub fn instructions_from_proto(
    list: Vec<proto::Instruction>,
    session: u64,
    held: Option<HeldPayload>,
    max_payload: usize,
) -> Result<(Vec<Instruction>, Option<HeldPayload>)> {
    let mut last = held.filter(|h| h.session == session);
    let mut out = Vec::with_capacity(list.len());
    for mut p in list {
        if p.payload_of == 0 {
            last = Some(HeldPayload {
                session,
                instruction: p.id,
                payload: p.payload.clone(),
            });
        } else {
            if !p.payload.is_empty() {
                return Err(invalid(
                    "Instruction",
                    "payload_of",
                    format!(
                        "{} with a payload of {} bytes: a named payload comes alone",
                        p.payload_of,
                        p.payload.len()
                    ),
                ));
            }
            match &last {
                Some(h) if h.instruction == p.payload_of => p.payload = h.payload.clone(),
                _ => {
                    return Err(invalid(
                        "Instruction",
                        "payload_of",
                        format!(
                            "{}: this node holds the payload of {}",
                            p.payload_of,
                            last.as_ref()
                                .map_or("no instruction".to_string(), |h| format!(
                                    "instruction {}",
                                    h.instruction
                                ))
                        ),
                    ))
                }
            }
        }
        out.push(instruction_from_proto(p, max_payload)?);
    }
    Ok((out, last))
}

/// Checks a reply received by the server. A reply that breaks a rule (missing outcome,
/// payload over the limit, unknown failure code, overlong reason) becomes a
/// [`FailureKind::Rejected`] failure of its instruction, naming the field.
pub fn reply_from_proto(p: proto::Reply, max_payload: usize) -> Outcome {
    let rejected = |field: &str, reason: String| {
        Err(Failure::new(
            FailureKind::Rejected,
            format!("Reply.{field}: {reason}"),
        ))
    };
    let result = match p.outcome {
        None => rejected("outcome", "missing: payload or failure expected".into()),
        Some(proto::reply::Outcome::Payload(payload)) if payload.len() > max_payload => rejected(
            "payload",
            format!("{} bytes: at most {max_payload}", payload.len()),
        ),
        Some(proto::reply::Outcome::Payload(payload)) => Ok(payload),
        Some(proto::reply::Outcome::Failure(f)) => match proto::FailureCode::try_from(f.code) {
            _ if f.reason.len() > MAX_REASON_BYTES => rejected(
                "failure.reason",
                format!("{} bytes: at most {MAX_REASON_BYTES}", f.reason.len()),
            ),
            Ok(proto::FailureCode::Client) => Err(Failure::new(FailureKind::Client, f.reason)),
            Ok(proto::FailureCode::Declined) => Err(Failure::new(FailureKind::Declined, f.reason)),
            Ok(proto::FailureCode::BadInstruction) => {
                Err(Failure::new(FailureKind::BadInstruction, f.reason))
            }
            _ => rejected(
                "failure.code",
                format!(
                    "{}: expected 1 (client), 2 (declined) or 3 (bad instruction)",
                    f.code
                ),
            ),
        },
    };
    Outcome {
        instruction: p.instruction,
        client: p.client,
        result,
    }
}

/// Checks a node's client ranges: each non-empty, disjoint, at most `max_clients` ids and
/// `max_ranges` ranges in all. Returns them sorted.
pub fn ranges_from_proto(
    ranges: &[proto::ClientRange],
    max_ranges: usize,
    max_clients: u64,
) -> Result<Vec<std::ops::Range<ClientId>>> {
    if ranges.is_empty() {
        return Err(invalid(
            "RegisterRequest",
            "clients",
            "empty: at least one client range expected",
        ));
    }
    if ranges.len() > max_ranges {
        return Err(invalid(
            "RegisterRequest",
            "clients",
            format!("{} ranges: at most {max_ranges}", ranges.len()),
        ));
    }
    let mut out: Vec<std::ops::Range<ClientId>> = Vec::with_capacity(ranges.len());
    let mut total: u64 = 0;
    for r in ranges {
        if r.start >= r.end {
            return Err(invalid(
                "ClientRange",
                "end",
                format!("{}..{}: end must exceed start", r.start, r.end),
            ));
        }
        total = total.saturating_add(r.end - r.start);
        if total > max_clients {
            return Err(invalid(
                "RegisterRequest",
                "clients",
                format!("more than {max_clients} clients on one node"),
            ));
        }
        out.push(r.start..r.end);
    }
    out.sort_by_key(|r| r.start);
    for pair in out.windows(2) {
        if pair[0].end > pair[1].start {
            return Err(invalid(
                "RegisterRequest",
                "clients",
                format!("ranges {:?} and {:?} overlap", pair[0], pair[1]),
            ));
        }
    }
    Ok(out)
}

/// Most bytes of one client's metadata (`ClientMetadata.info`): sizes, a device class
/// and shared statistics such as a label histogram of a few hundred classes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Checks `RegisterRequest.metadata` against the registered `ranges`: every entry names
/// a client of the ranges, at most once, with at most [`MAX_METADATA_BYTES`]. Returns
/// the entries sorted by client.
pub fn metadata_from_proto(
    entries: Vec<proto::ClientMetadata>,
    ranges: &[std::ops::Range<ClientId>],
) -> Result<Vec<(ClientId, Bytes)>> {
    let mut out: Vec<(ClientId, Bytes)> = Vec::with_capacity(entries.len());
    for m in entries {
        if !ranges.iter().any(|r| r.contains(&m.client)) {
            return Err(invalid(
                "ClientMetadata",
                "client",
                format!("{}: not in the registered ranges", m.client),
            ));
        }
        if m.info.len() > MAX_METADATA_BYTES {
            return Err(invalid(
                "ClientMetadata",
                "info",
                format!(
                    "client {}: {} bytes: at most {MAX_METADATA_BYTES}",
                    m.client,
                    m.info.len()
                ),
            ));
        }
        out.push((m.client, m.info));
    }
    sorted_metadata(out)
}

/// Sorts metadata entries by client and refuses a client named more than once (the
/// parts of a registration together, as one request's entries).
pub fn sorted_metadata(mut out: Vec<(ClientId, Bytes)>) -> Result<Vec<(ClientId, Bytes)>> {
    out.sort_by_key(|m| m.0);
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(invalid(
            "ClientMetadata",
            "client",
            format!("{}: more than one entry", w[0].0),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(id: u64, payload: &'static [u8], payload_of: u64) -> proto::Instruction {
        proto::Instruction {
            id,
            client: id,
            round: 1,
            kind: proto::Kind::Train as i32,
            deadline_unix_ms: 1_800_000_000_000,
            payload: Bytes::from_static(payload),
            state_round: 1,
            durable_round: 0,
            payload_of,
        }
    }

    fn held(session: u64, instruction: u64, payload: &'static [u8]) -> Option<HeldPayload> {
        Some(HeldPayload {
            session,
            instruction,
            payload: Bytes::from_static(payload),
        })
    }

    #[test]
    fn named_payloads_are_the_held_one_or_the_latest_full_one_of_the_reply() {
        let list = vec![
            ins(10, b"", 7),  // the held payload
            ins(11, b"b", 0), // a new one, held from here on
            ins(12, b"", 11),
            ins(13, b"", 11),
        ];
        let (out, now) = instructions_from_proto(list, 3, held(3, 7, b"a"), 64).unwrap();
        let payloads: Vec<&[u8]> = out.iter().map(|i| i.payload.as_ref()).collect();
        assert_eq!(payloads, [&b"a"[..], b"b", b"b", b"b"]);
        assert_eq!(now, held(3, 11, b"b"));
        // What the next Pull says it holds: only within the session it came in.
        assert_eq!(HeldPayload::holding(now.as_ref(), 3), 11);
        assert_eq!(HeldPayload::holding(now.as_ref(), 4), 0);
        assert_eq!(HeldPayload::holding(None, 3), 0);
    }

    #[test]
    fn a_name_the_node_cannot_resolve_refuses_the_reply_naming_the_field() {
        let refused = |list: Vec<proto::Instruction>, held: Option<HeldPayload>| {
            instructions_from_proto(list, 3, held, 64)
                .unwrap_err()
                .to_string()
        };
        // Not the held one.
        let e = refused(vec![ins(10, b"", 6)], held(3, 7, b"a"));
        assert!(
            e.contains("payload_of")
                && e.contains("6: this node holds the payload of instruction 7"),
            "{e}"
        );
        // Held from another session (a server restart reuses instruction ids).
        let e = refused(vec![ins(10, b"", 7)], held(2, 7, b"a"));
        assert!(
            e.contains("7: this node holds the payload of no instruction"),
            "{e}"
        );
        // An earlier full one that a later full one replaced.
        let e = refused(
            vec![ins(10, b"x", 0), ins(11, b"y", 0), ins(12, b"", 10)],
            None,
        );
        assert!(
            e.contains("10: this node holds the payload of instruction 11"),
            "{e}"
        );
        // A name with bytes of its own.
        let e = refused(vec![ins(10, b"z", 7)], held(3, 7, b"a"));
        assert!(
            e.contains("payload_of") && e.contains("a named payload comes alone"),
            "{e}"
        );
        // A named payload is checked against the size limit like a carried one.
        let e = instructions_from_proto(vec![ins(10, b"", 7)], 3, held(3, 7, b"abcdef"), 4)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("payload") && e.contains("6 bytes: at most 4"),
            "{e}"
        );
    }
}
