//! The messages of one secure-aggregation session, one type per stage and direction
//! (docs/privacy.md, "Secure aggregation"). All are serde-serialisable; [`WireSize`] gives the
//! bytes each would take in a compact binary encoding (fixed-width integers, `u32` length
//! prefixes, masked vectors packed at ⌈bits/8⌉ bytes per element).

use super::shamir::Share;
use super::SecAggConfig;
use serde::{Deserialize, Serialize};

/// A client's id within a session (also its Shamir evaluation point minus one).
pub type ClientId = u64;

/// Stage 0, server → client: the session's parameters and the client's neighbours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// Session (round) id; bound into every derived key and ciphertext.
    pub session: u64,
    /// The protocol parameters.
    pub config: SecAggConfig,
    /// Length of the vector to aggregate.
    pub dimension: usize,
    /// The recipient.
    pub client: ClientId,
    /// The recipient's neighbours (without itself), sorted.
    pub neighbours: Vec<ClientId>,
}

/// Stage 0, client → server (AdvertiseKeys): two X25519 public keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeys {
    /// The sender.
    pub client: ClientId,
    /// c^PK: for encrypting shares.
    pub encryption_key: [u8; 32],
    /// s^PK: for the pairwise masks.
    pub mask_key: [u8; 32],
}

/// Stage 1, server → client: the public keys of the client's live neighbours (and its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDirectory {
    /// One entry per live neighbour plus the recipient, sorted by client.
    pub keys: Vec<PublicKeys>,
}

/// One encrypted pair of shares, addressed to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedShares {
    /// The recipient.
    pub to: ClientId,
    /// ChaCha20-Poly1305 of (from, to, share of s^SK, share of b).
    pub ciphertext: Vec<u8>,
}

/// Stage 1, client → server (ShareKeys): the sender's shares for each neighbour, encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareKeys {
    /// The sender.
    pub client: ClientId,
    /// One per neighbour in the sender's directory, in id order (the server checks both).
    pub shares: Vec<EncryptedShares>,
}

/// One encrypted pair of shares, as forwarded to its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedShare {
    /// Who encrypted it.
    pub from: ClientId,
    /// As sent.
    pub ciphertext: Vec<u8>,
}

/// Stage 2, server → client: the shares other live clients made for the recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedShares {
    /// Sorted by sender.
    pub shares: Vec<ForwardedShare>,
}

/// Stage 2, client → server (MaskedInputCollection): y = x + PRG(b) + Σ ±PRG(s_uv) mod 2^bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    /// The sender.
    pub client: ClientId,
    /// The masked vector, every element < 2^bits.
    pub masked: Vec<u64>,
}

/// Stage 3, server → client: which of the recipient's neighbours sent a masked input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskRequest {
    /// Neighbours (and the recipient) whose masked input arrived: reveal shares of b.
    pub survivors: Vec<ClientId>,
    /// Neighbours that shared keys but sent no masked input: reveal shares of s^SK.
    pub dropped: Vec<ClientId>,
}

/// A share together with whose secret it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedShare {
    /// Whose secret this is a share of.
    pub owner: ClientId,
    /// The share.
    pub share: Share,
}

/// Stage 3, client → server (Unmasking): the shares the request asked for, never both kinds
/// for one owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskShares {
    /// The sender.
    pub client: ClientId,
    /// Shares of b_v for each survivor v.
    pub self_mask_shares: Vec<OwnedShare>,
    /// Shares of s_v^SK for each dropped v.
    pub mask_key_shares: Vec<OwnedShare>,
}

/// Bytes a message takes in a compact binary encoding (see the module doc).
pub trait WireSize {
    /// Encoded size in bytes.
    fn wire_bytes(&self) -> usize;
}

const ID: usize = 8;
const LEN: usize = 4;
const KEY: usize = 32;
const SHARE: usize = 8 + 8 * super::shamir::CHUNKS;

impl WireSize for Setup {
    fn wire_bytes(&self) -> usize {
        // session, config (num_shares, threshold, c, L, bits), dimension, client, neighbours
        8 + (8 + 8 + 4 + 8 + 4) + 8 + ID + LEN + ID * self.neighbours.len()
    }
}

impl WireSize for PublicKeys {
    fn wire_bytes(&self) -> usize {
        ID + 2 * KEY
    }
}

impl WireSize for KeyDirectory {
    fn wire_bytes(&self) -> usize {
        LEN + self.keys.iter().map(WireSize::wire_bytes).sum::<usize>()
    }
}

impl WireSize for ShareKeys {
    fn wire_bytes(&self) -> usize {
        ID + LEN
            + self
                .shares
                .iter()
                .map(|s| ID + LEN + s.ciphertext.len())
                .sum::<usize>()
    }
}

impl WireSize for ForwardedShares {
    fn wire_bytes(&self) -> usize {
        LEN + self
            .shares
            .iter()
            .map(|s| ID + LEN + s.ciphertext.len())
            .sum::<usize>()
    }
}

impl MaskedInput {
    /// Encoded size with elements packed at ⌈bits/8⌉ bytes.
    pub fn wire_bytes_packed(&self, modulus_bits: u32) -> usize {
        ID + LEN + self.masked.len() * modulus_bits.div_ceil(8) as usize
    }
}

impl WireSize for UnmaskRequest {
    fn wire_bytes(&self) -> usize {
        2 * LEN + ID * (self.survivors.len() + self.dropped.len())
    }
}

impl WireSize for UnmaskShares {
    fn wire_bytes(&self) -> usize {
        ID + 2 * LEN + (ID + SHARE) * (self.self_mask_shares.len() + self.mask_key_shares.len())
    }
}
