//! The cryptographic primitives of secure aggregation (docs/privacy.md, "Secure
//! aggregation"): X25519 key agreement, SHA-256 key derivation, ChaCha20-Poly1305 for the
//! shares in transit, and the ChaCha20 PRG that expands a 32-byte seed into a mask.

use crate::error::{Error, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

/// What a derived key is for; part of the derivation input (domain separation).
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyPurpose {
    /// Encrypting shares between two clients.
    Encryption,
    /// Seeding the pairwise mask between two clients.
    PairwiseMask,
}

/// SHA-256(label ‖ session ‖ X25519(secret, peer)). Fails when the peer's key is a
/// low-order point (the shared secret would not depend on our key).
pub(crate) fn agree(
    secret: &StaticSecret,
    peer: &[u8; 32],
    session: u64,
    purpose: KeyPurpose,
) -> Result<[u8; 32]> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer));
    if !shared.was_contributory() {
        return Err(Error::Protocol {
            stage: "key agreement",
            detail: "peer public key is a low-order point".into(),
        });
    }
    let label: &[u8] = match purpose {
        KeyPurpose::Encryption => b"fedpace/secagg/encryption",
        KeyPurpose::PairwiseMask => b"fedpace/secagg/pairwise-mask",
    };
    Ok(Sha256::new()
        .chain_update(label)
        .chain_update(session.to_le_bytes())
        .chain_update(shared.as_bytes())
        .finalize()
        .into())
}

/// The public key of a secret.
pub(crate) fn public_of(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}

/// Nonce = sender id (8 bytes LE) ‖ 0⁴: the key is per unordered pair and session, and each
/// sender encrypts once per receiver, so (key, nonce) never repeats. The associated data binds
/// session, sender and receiver.
fn nonce_and_aad(session: u64, from: u64, to: u64) -> ([u8; 12], [u8; 24]) {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&from.to_le_bytes());
    let mut aad = [0u8; 24];
    aad[..8].copy_from_slice(&session.to_le_bytes());
    aad[8..16].copy_from_slice(&from.to_le_bytes());
    aad[16..].copy_from_slice(&to.to_le_bytes());
    (nonce, aad)
}

/// Authenticated encryption of `plaintext` from `from` to `to`.
pub(crate) fn seal(key: &[u8; 32], session: u64, from: u64, to: u64, plaintext: &[u8]) -> Vec<u8> {
    let (nonce, aad) = nonce_and_aad(session, from, to);
    ChaCha20Poly1305::new(Key::from_slice(key))
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("ChaCha20-Poly1305 encryption of an in-memory buffer cannot fail")
}

/// Decrypts and authenticates what [`seal`] produced.
pub(crate) fn open(
    key: &[u8; 32],
    session: u64,
    from: u64,
    to: u64,
    ciphertext: &[u8],
) -> Result<Vec<u8>> {
    let (nonce, aad) = nonce_and_aad(session, from, to);
    ChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| Error::Protocol {
            stage: "masked input",
            detail: format!(
                "shares from client {from} fail authentication (tampered or wrong key)"
            ),
        })
}

/// Whether a mask is added to or subtracted from the accumulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSign {
    /// acc ← acc + PRG(seed)
    Add,
    /// acc ← acc − PRG(seed)
    Subtract,
}

/// Adds or subtracts the mask PRG(seed) — ChaCha20 keyed by `seed`, one draw per
/// coordinate, uniform on [0, 2^bits) — to `acc` with wrapping arithmetic. The caller
/// reduces mod 2^bits at the end (2^bits divides 2⁶⁴, so wrapping is exact).
pub fn apply_mask(acc: &mut [u64], seed: &[u8; 32], modulus_bits: u32, sign: MaskSign) {
    let mut prg = ChaCha20Rng::from_seed(*seed);
    let small = modulus_bits <= 32;
    for a in acc.iter_mut() {
        let m = if small {
            prg.next_u32() as u64
        } else {
            prg.next_u64()
        };
        *a = match sign {
            MaskSign::Add => a.wrapping_add(m),
            MaskSign::Subtract => a.wrapping_sub(m),
        };
    }
}

/// Reduces every element mod 2^bits.
pub(crate) fn reduce(acc: &mut [u64], modulus_bits: u32) {
    let mask = if modulus_bits >= 64 {
        u64::MAX
    } else {
        (1u64 << modulus_bits) - 1
    };
    for a in acc {
        *a &= mask;
    }
}
