//! Secure aggregation: SecAgg+ (Bell et al. 2020) with SecAgg (Bonawitz et al. 2017) as its
//! complete-graph case (docs/privacy.md, "Secure aggregation").
//!
//! The server learns the sum of the surviving clients' quantised vectors and nothing else
//! about any one of them (semi-honest server, up to t − 1 colluding clients per
//! neighbourhood). Each stage has its own message types ([`messages`]); [`SecAggServer`] and
//! [`SecAggClient`] are state machines that consume one stage's messages and produce the
//! next, so the same code runs in one process ([`simulate`]) or behind a transport that
//! authenticates senders. The one decision: the crypto is X25519 + SHA-256 +
//! ChaCha20-Poly1305 + a ChaCha20 PRG, all from small single-purpose crates, and the
//! Shamir field is GF(2⁶¹ − 1).

mod bench;
mod client;
pub mod crypto;
pub mod messages;
mod quantize;
mod server;
pub mod shamir;

pub use bench::{bench_secagg, SecAggBench};
pub use client::SecAggClient;
pub use messages::ClientId;
pub use quantize::Quantization;
pub use server::{AggregateSum, Rejection, SecAggServer};

use crate::error::{invalid, Result};
use crate::rng::SecureRng;
use messages::{MaskedInput, PublicKeys, ShareKeys, UnmaskShares, WireSize};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// Parameters of a secure-aggregation session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecAggConfig {
    /// k: the size of each client's neighbourhood, itself included (Flower's
    /// `num_shares`); odd when smaller than the cohort. `None`, or k ≥ n, gives the complete
    /// graph (SecAgg).
    #[serde(default)]
    pub num_shares: Option<usize>,
    /// t: shares needed to rebuild a secret, and the fewest inputs the server may sum.
    /// Must satisfy k/2 < t ≤ k: a strict majority is what stops a server from collecting
    /// both secrets of one client from two disjoint groups.
    pub threshold: usize,
    /// Fixed-point encoding of the inputs.
    #[serde(default)]
    pub quantization: Quantization,
}

impl SecAggConfig {
    /// SecAgg over `n` clients with the smallest majority threshold ⌊n/2⌋ + 1.
    pub fn complete(n: usize) -> Self {
        Self {
            num_shares: None,
            threshold: n / 2 + 1,
            quantization: Quantization::default(),
        }
    }

    /// SecAgg+ with neighbourhoods of k (odd) and threshold ⌊k/2⌋ + 1.
    pub fn neighbourhoods(k: usize) -> Self {
        Self {
            num_shares: Some(k),
            threshold: k / 2 + 1,
            quantization: Quantization::default(),
        }
    }

    /// Checks the parameters for a cohort of `clients`; returns the effective
    /// neighbourhood size k.
    pub fn validate(&self, clients: usize) -> Result<usize> {
        if clients < 2 {
            return Err(invalid(
                "participants",
                clients,
                "secure aggregation needs at least 2 clients",
            ));
        }
        let k = match self.num_shares {
            None => clients,
            Some(k) if k >= clients => clients,
            Some(k) if k < 3 || k % 2 == 0 => {
                return Err(invalid(
                    "num_shares",
                    k,
                    format!("must be odd and ≥ 3 when below the cohort size {clients}"),
                ))
            }
            Some(k) => k,
        };
        let t = self.threshold;
        if !(2 * t > k && t <= k) {
            return Err(invalid(
                "threshold",
                t,
                format!("must satisfy k/2 < t ≤ k with k = {k}"),
            ));
        }
        self.quantization.validate(clients)?;
        Ok(k)
    }
}

/// When a simulated client stops answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropout {
    /// Never advertises keys.
    BeforeKeys,
    /// Advertises keys, never shares them.
    BeforeShares,
    /// Shares keys, never sends its masked input (the case that needs recovery).
    BeforeMaskedInput,
    /// Sends its masked input, never answers the unmask request.
    BeforeUnmask,
}

/// Bytes moved between one client and the server in a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Client → server.
    pub upload_bytes: usize,
    /// Server → client.
    pub download_bytes: usize,
}

/// Result of [`simulate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedSession {
    /// The unmasked sum and who is in it.
    pub result: AggregateSum,
    /// Bytes per client in compact binary encoding ([`messages::WireSize`]).
    pub traffic: BTreeMap<ClientId, Traffic>,
    /// Wall time of all client steps, summed over clients (one thread).
    pub client_seconds: f64,
    /// Wall time of the server's steps.
    pub server_seconds: f64,
}

/// Runs one session in this process: every client's messages go straight to the server
/// and back. `inputs` are the clients' quantised vectors; `dropouts` says who stops
/// answering when. Client generators are simulation streams of `seed` (see
/// [`SecureRng::simulated`]). Deterministic: the same arguments give the same sum and
/// masked vectors.
pub fn simulate(
    config: &SecAggConfig,
    session: u64,
    inputs: &[(ClientId, Vec<u64>)],
    dropouts: &BTreeMap<ClientId, Dropout>,
    seed: u64,
) -> Result<SimulatedSession> {
    let dimension = inputs.first().map_or(0, |(_, x)| x.len());
    let ids: Vec<ClientId> = inputs.iter().map(|(id, _)| *id).collect();
    let input_of: BTreeMap<ClientId, &Vec<u64>> = inputs.iter().map(|(id, x)| (*id, x)).collect();
    let drops = |id: &ClientId, at: Dropout| dropouts.get(id) == Some(&at);
    let mut traffic: BTreeMap<ClientId, Traffic> =
        ids.iter().map(|&id| (id, Traffic::default())).collect();
    let (mut client_seconds, mut server_seconds) = (0.0, 0.0);

    let clock = Instant::now();
    let mut server_rng = SecureRng::simulated(seed, stream_id(session, u64::MAX));
    let (mut server, setups) =
        SecAggServer::new(session, config, dimension, &ids, &mut server_rng)?;
    server_seconds += clock.elapsed().as_secs_f64();

    let mut clients = BTreeMap::new();
    let mut keys: Vec<PublicKeys> = Vec::new();
    for setup in setups {
        let id = setup.client;
        traffic.get_mut(&id).expect("a participant").download_bytes += setup.wire_bytes();
        if drops(&id, Dropout::BeforeKeys) {
            continue;
        }
        let clock = Instant::now();
        let (client, public) =
            SecAggClient::new(setup, SecureRng::simulated(seed, stream_id(session, id)))?;
        client_seconds += clock.elapsed().as_secs_f64();
        traffic.get_mut(&id).expect("a participant").upload_bytes += public.wire_bytes();
        keys.push(public);
        clients.insert(id, client);
    }

    let clock = Instant::now();
    let directories = server.receive_keys(keys)?;
    server_seconds += clock.elapsed().as_secs_f64();
    let mut share_replies: Vec<ShareKeys> = Vec::new();
    for (id, directory) in directories {
        traffic.get_mut(&id).expect("a participant").download_bytes += directory.wire_bytes();
        if drops(&id, Dropout::BeforeShares) {
            continue;
        }
        let clock = Instant::now();
        let reply = clients
            .get_mut(&id)
            .expect("directory for a live client")
            .share_keys(directory)?;
        client_seconds += clock.elapsed().as_secs_f64();
        traffic.get_mut(&id).expect("a participant").upload_bytes += reply.wire_bytes();
        share_replies.push(reply);
    }

    let clock = Instant::now();
    let forwarded = server.receive_shares(share_replies)?;
    server_seconds += clock.elapsed().as_secs_f64();
    let mut masked: Vec<MaskedInput> = Vec::new();
    for (id, shares) in forwarded {
        traffic.get_mut(&id).expect("a participant").download_bytes += shares.wire_bytes();
        if drops(&id, Dropout::BeforeMaskedInput) {
            continue;
        }
        let clock = Instant::now();
        let reply = clients
            .get_mut(&id)
            .expect("shares for a live client")
            .masked_input(shares, input_of[&id])?;
        client_seconds += clock.elapsed().as_secs_f64();
        traffic.get_mut(&id).expect("a participant").upload_bytes +=
            reply.wire_bytes_packed(config.quantization.modulus_bits);
        masked.push(reply);
    }

    let clock = Instant::now();
    let requests = server.receive_masked(masked)?;
    server_seconds += clock.elapsed().as_secs_f64();
    let mut unmask: Vec<UnmaskShares> = Vec::new();
    for (id, request) in requests {
        traffic.get_mut(&id).expect("a participant").download_bytes += request.wire_bytes();
        if drops(&id, Dropout::BeforeUnmask) {
            continue;
        }
        let clock = Instant::now();
        let reply = clients
            .get_mut(&id)
            .expect("request for a live client")
            .unmask(request)?;
        client_seconds += clock.elapsed().as_secs_f64();
        traffic.get_mut(&id).expect("a participant").upload_bytes += reply.wire_bytes();
        unmask.push(reply);
    }

    let clock = Instant::now();
    let result = server.receive_unmask(unmask)?;
    server_seconds += clock.elapsed().as_secs_f64();
    Ok(SimulatedSession {
        result,
        traffic,
        client_seconds,
        server_seconds,
    })
}

/// The simulation stream of one party in one session.
fn stream_id(session: u64, party: u64) -> u64 {
    session.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ party
}
