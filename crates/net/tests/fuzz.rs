//! The server's envelope decoding (size and frame checks, repeated-field bounds, prost,
//! field checks) and the node's instruction decoding never panic and never allocate
//! more than a bounded multiple of their input, on a million random and mutated inputs
//! (docs/network.md, "Fuzzing"). Seeded: a failure names the case to replay.
#![allow(clippy::single_range_in_vec_init)] // client ranges are a Vec<Range> by design

mod common;

use bytes::Bytes;
use common::framed;
use fedpace_net::envelope::{decode_request, Decoded};
use fedpace_net::proto;
use fedpace_net::{wire, Limits};
use prost::Message;

#[path = "../../../test-support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::peak_of;

/// xorshift64*: small, seeded, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PATHS: [&str; 6] = [
    "/fedpace.v1.Fleet/Register",
    "/fedpace.v1.Fleet/Heartbeat",
    "/fedpace.v1.Fleet/Pull",
    "/fedpace.v1.Fleet/Push",
    "/fedpace.v1.Fleet/Leave",
    "/fedpace.v1.Fleet/Nope",
];

/// Valid bodies of every request, the seeds of the mutations.
fn seeds() -> Vec<(usize, Vec<u8>)> {
    let reply = |i: u64, ok: bool| proto::Reply {
        instruction: i,
        client: i % 7,
        outcome: Some(if ok {
            proto::reply::Outcome::Payload(Bytes::from(vec![i as u8; (i % 40) as usize]))
        } else {
            proto::reply::Outcome::Failure(proto::Failure {
                code: 1,
                reason: "nan".into(),
            })
        }),
    };
    vec![
        (
            0,
            framed(&proto::RegisterRequest {
                protocol: 2,
                clients: vec![
                    proto::ClientRange { start: 0, end: 10 },
                    proto::ClientRange { start: 20, end: 25 },
                ],
                metadata: vec![proto::ClientMetadata {
                    client: 3,
                    info: vec![7u8; 40].into(),
                }],
                more: true,
                part_of: 0x1234_5678_9abc,
            }),
        ),
        (
            1,
            framed(&proto::HeartbeatRequest {
                session: 0xdead_beef,
            }),
        ),
        (
            2,
            framed(&proto::PullRequest {
                session: 3,
                wait_ms: 1000,
                max_bytes: 1 << 20,
                holding: Some(1 << 40),
            }),
        ),
        (
            3,
            framed(&proto::PushRequest {
                session: 9,
                replies: (0..6).map(|i| reply(i, i % 3 != 0)).collect(),
            }),
        ),
        (4, framed(&proto::LeaveRequest { session: 1 })),
    ]
}

fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let n = body.len().max(1);
        match rng.below(7) {
            0 if !body.is_empty() => {
                let i = rng.below(n);
                body[i] ^= 1 << rng.below(8);
            }
            1 if !body.is_empty() => {
                let i = rng.below(n);
                body[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(n + 1).min(body.len());
                body.insert(i, [0x80, 0xff, 0x12, 0x0a, 0x00][rng.below(5)]);
            }
            3 if !body.is_empty() => {
                let i = rng.below(n);
                body.remove(i);
            }
            4 => body.truncate(rng.below(n + 1)),
            5 => {
                // A huge varint length somewhere: the classic allocation bait.
                let i = rng.below(n + 1).min(body.len());
                body.splice(i..i, [0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
            _ => {
                // Repeat a slice (field duplication).
                if body.len() > 2 {
                    let a = rng.below(body.len() - 1);
                    let b = (a + 1 + rng.below(16)).min(body.len());
                    let chunk = body[a..b].to_vec();
                    for _ in 0..1 + rng.below(64) {
                        body.extend_from_slice(&chunk);
                    }
                }
            }
        }
    }
    // Half the time keep the frame header consistent, so the protobuf layer is reached.
    if rng.below(2) == 0 && body.len() >= 5 {
        let len = (body.len() - 5) as u32;
        body[0] = 0;
        body[1..5].copy_from_slice(&len.to_be_bytes());
    }
}

#[test]
fn envelope_decoding_survives_a_million_random_and_mutated_inputs() {
    let mut limits = Limits::for_model(64 * 1024);
    limits.max_replies_per_push = 64;
    limits.max_ranges = 8;
    let seeds = seeds();
    // The seeds decode as what they are.
    for (path, body) in &seeds {
        let d = decode_request(PATHS[*path], body, &limits).unwrap();
        assert!(matches!(
            (path, &d),
            (0, Decoded::Register(_))
                | (1, Decoded::Heartbeat(_))
                | (2, Decoded::Pull(_))
                | (3, Decoded::Push(..))
                | (4, Decoded::Leave(_))
        ));
    }
    let cases: u64 = std::env::var("FEDPACE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut rng = Rng(0x5eed_f00d_2026_1204);
    let (mut accepted, mut worst_ratio) = (0u64, 0f64);
    for case in 0..cases {
        let (path, body) = if rng.below(4) == 0 {
            let len = rng.below(600);
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len >= 5 && rng.below(2) == 0 {
                b[0] = 0;
                let l = (len - 5) as u32;
                b[1..5].copy_from_slice(&l.to_be_bytes());
            }
            (rng.below(PATHS.len()), b)
        } else {
            let (p, seed) = &seeds[rng.below(seeds.len())];
            let mut b = seed.clone();
            mutate(&mut rng, &mut b);
            // Sometimes send it to the wrong RPC.
            (
                if rng.below(8) == 0 {
                    rng.below(PATHS.len())
                } else {
                    *p
                },
                b,
            )
        };
        let (result, peak) = peak_of(|| decode_request(PATHS[path], &body, &limits).is_ok());
        accepted += u64::from(result);
        // Decoding may copy the body and build structs, never more than this.
        let bound = 64 * body.len() + 16 * 1024;
        assert!(
            peak <= bound,
            "case {case}: {} bytes to {} allocated {peak} (bound {bound})",
            body.len(),
            PATHS[path]
        );
        if body.len() >= 256 {
            worst_ratio = worst_ratio.max(peak as f64 / body.len() as f64);
        }
    }
    eprintln!("{cases} cases, {accepted} decoded as valid, worst allocation {worst_ratio:.1}× input (inputs ≥ 256 bytes)");
    assert!(
        accepted > cases / 100,
        "mutations should still reach valid decodes: {accepted}"
    );
}

#[test]
fn node_side_instruction_decoding_survives_random_and_mutated_pull_replies() {
    let seed = proto::PullReply {
        instructions: (0..4)
            .map(|i| proto::Instruction {
                id: 1 << 40 | i,
                client: i,
                round: 3,
                kind: 1 + (i % 2) as i32,
                deadline_unix_ms: 1_800_000_000_000,
                payload: Bytes::from(if i % 2 == 1 { vec![] } else { vec![7u8; 30] }),
                state_round: 3,
                durable_round: 2,
                // Two of the four name the payload of the one before them.
                payload_of: if i % 2 == 1 { 1 << 40 | (i - 1) } else { 0 },
            })
            .collect(),
        finished: false,
    }
    .encode_to_vec();
    let mut rng = Rng(0xfeed_beef);
    let cases: u64 = std::env::var("FEDPACE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
        / 4;
    let mut valid = 0u64;
    for _ in 0..cases {
        let mut body = seed.clone();
        mutate(&mut rng, &mut body);
        let (n, peak) = peak_of(|| {
            proto::PullReply::decode(body.as_slice()).map_or(0, |r| {
                // Resolved against a held payload whose id a mutation may hit, as a node
                // does (`Instruction.payload_of`).
                let held = wire::HeldPayload {
                    session: 5,
                    instruction: 1 << 40,
                    payload: Bytes::from_static(b"held"),
                };
                wire::instructions_from_proto(r.instructions, 5, Some(held), 1024)
                    .map_or(0, |(list, _)| list.len())
            })
        });
        valid += n as u64;
        assert!(
            peak <= 64 * body.len() + 16 * 1024,
            "{} bytes allocated {peak}",
            body.len()
        );
    }
    assert!(valid > 0);
}
