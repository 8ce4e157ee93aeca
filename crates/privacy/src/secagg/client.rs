//! A client's side of one secure-aggregation session: a state machine that answers each
//! stage's server message (docs/privacy.md, "Secure aggregation").

use super::crypto::{agree, apply_mask, open, public_of, reduce, seal, KeyPurpose, MaskSign};
use super::messages::{
    ClientId, EncryptedShares, ForwardedShares, KeyDirectory, MaskedInput, OwnedShare, PublicKeys,
    Setup, ShareKeys, UnmaskRequest, UnmaskShares,
};
use super::shamir::{split, Share, CHUNKS};
use super::SecAggConfig;
use crate::error::{Error, Result};
use crate::rng::SecureRng;
use rand::RngCore;
use std::collections::{BTreeMap, BTreeSet};
use x25519_dalek::StaticSecret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Directory,
    Shares,
    Unmask,
    Finished,
}

/// Plaintext of one encrypted share pair: from, to, share of s^SK, share of b.
const PLAINTEXT: usize = 16 + 2 * (8 + 8 * CHUNKS);

/// Client state for one session. Holds its two X25519 secrets and its self-mask seed for the
/// session only; all randomness comes from the [`SecureRng`] it was given (OS entropy in a
/// deployment).
pub struct SecAggClient {
    id: ClientId,
    session: u64,
    config: SecAggConfig,
    dimension: usize,
    neighbours: BTreeSet<ClientId>,
    rng: SecureRng,
    encryption_secret: StaticSecret,
    mask_secret: StaticSecret,
    self_mask_seed: [u8; 32],
    stage: Stage,
    directory: BTreeMap<ClientId, PublicKeys>,
    /// Shares held for each owner (itself included): (of s^SK, of b).
    held: BTreeMap<ClientId, (Share, Share)>,
}

impl std::fmt::Debug for SecAggClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecAggClient")
            .field("id", &self.id)
            .field("session", &self.session)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl SecAggClient {
    /// Stage 0: takes the server's [`Setup`], draws two key pairs and the self-mask seed,
    /// and returns the public keys to advertise.
    pub fn new(setup: Setup, mut rng: SecureRng) -> Result<(Self, PublicKeys)> {
        let neighbours: BTreeSet<ClientId> = setup.neighbours.iter().copied().collect();
        let stage = "advertise keys";
        if neighbours.len() != setup.neighbours.len() || neighbours.contains(&setup.client) {
            return Err(protocol(
                stage,
                "the neighbour list repeats a client or contains the recipient".into(),
            ));
        }
        let holders = neighbours.len() + 1;
        let t = setup.config.threshold;
        if !(2 * t > holders && t <= holders) {
            return Err(protocol(
                stage,
                format!("threshold {t} is not in ({holders}/2, {holders}]"),
            ));
        }
        if setup.dimension == 0 {
            return Err(protocol(stage, "dimension 0".into()));
        }
        setup.config.quantization.validate(1)?;
        let encryption_secret = StaticSecret::random_from_rng(&mut rng);
        let mask_secret = StaticSecret::random_from_rng(&mut rng);
        let mut self_mask_seed = [0u8; 32];
        rng.fill_bytes(&mut self_mask_seed);
        let keys = PublicKeys {
            client: setup.client,
            encryption_key: public_of(&encryption_secret),
            mask_key: public_of(&mask_secret),
        };
        let client = Self {
            id: setup.client,
            session: setup.session,
            config: setup.config,
            dimension: setup.dimension,
            neighbours,
            rng,
            encryption_secret,
            mask_secret,
            self_mask_seed,
            stage: Stage::Directory,
            directory: BTreeMap::new(),
            held: BTreeMap::new(),
        };
        Ok((client, keys))
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Stage 1: checks the directory, splits s^SK and b into t-of-k Shamir shares (one per
    /// directory entry, itself included) and encrypts each neighbour's pair to it.
    pub fn share_keys(&mut self, directory: KeyDirectory) -> Result<ShareKeys> {
        let stage = "share keys";
        self.expect(Stage::Directory, stage)?;
        let mut entries = BTreeMap::new();
        let mut keys_seen = BTreeSet::new();
        for k in directory.keys {
            if k.client != self.id && !self.neighbours.contains(&k.client) {
                return Err(protocol(
                    stage,
                    format!("directory lists client {}, not a neighbour", k.client),
                ));
            }
            if !keys_seen.insert(k.encryption_key) || !keys_seen.insert(k.mask_key) {
                return Err(protocol(
                    stage,
                    format!("client {}'s public keys repeat another's", k.client),
                ));
            }
            if entries.insert(k.client, k).is_some() {
                return Err(protocol(stage, "directory lists a client twice".into()));
            }
        }
        match entries.get(&self.id) {
            Some(own)
                if own.encryption_key == public_of(&self.encryption_secret)
                    && own.mask_key == public_of(&self.mask_secret) => {}
            _ => {
                return Err(protocol(
                    stage,
                    "directory does not carry this client's own keys".into(),
                ))
            }
        }
        let t = self.config.threshold;
        if entries.len() < t {
            return Err(Error::TooFewSurvivors {
                stage,
                what: format!("live clients in client {}'s neighbourhood", self.id),
                available: entries.len(),
                threshold: t,
            });
        }
        let holders: Vec<ClientId> = entries.keys().copied().collect();
        let xs: Vec<u64> = holders.iter().map(|&v| v + 1).collect();
        let key_shares = split(&self.mask_secret.to_bytes(), t, &xs, &mut self.rng)?;
        let seed_shares = split(&self.self_mask_seed, t, &xs, &mut self.rng)?;
        let mut shares = Vec::with_capacity(holders.len() - 1);
        for ((&v, key_share), seed_share) in holders.iter().zip(key_shares).zip(seed_shares) {
            if v == self.id {
                self.held.insert(v, (key_share, seed_share));
                continue;
            }
            let key = agree(
                &self.encryption_secret,
                &entries[&v].encryption_key,
                self.session,
                KeyPurpose::Encryption,
            )?;
            let plaintext = encode_pair(self.id, v, &key_share, &seed_share);
            shares.push(EncryptedShares {
                to: v,
                ciphertext: seal(&key, self.session, self.id, v, &plaintext),
            });
        }
        self.directory = entries;
        self.stage = Stage::Shares;
        Ok(ShareKeys {
            client: self.id,
            shares,
        })
    }

    /// Stage 2 for a float update: quantises it (stochastic rounding with this client's
    /// generator, docs/privacy.md "Quantisation") and masks it.
    pub fn masked_update(
        &mut self,
        forwarded: ForwardedShares,
        update: &[f32],
    ) -> Result<MaskedInput> {
        let encoded = self.config.quantization.quantize(update, &mut self.rng)?;
        self.masked_input(forwarded, &encoded)
    }

    /// Stage 2: decrypts and keeps the shares neighbours sent, then returns
    /// y = x + PRG(b) + Σ_v ±PRG(s_uv) mod 2^bits, summing over the neighbours whose shares
    /// arrived (+ when this id < v). `input` holds integers in 0..=L.
    pub fn masked_input(
        &mut self,
        forwarded: ForwardedShares,
        input: &[u64],
    ) -> Result<MaskedInput> {
        let stage = "masked input";
        self.expect(Stage::Shares, stage)?;
        crate::error::check_len("secure-aggregation input", self.dimension, input.len())?;
        let levels = self.config.quantization.levels;
        if let Some(i) = input.iter().position(|&x| x > levels) {
            return Err(crate::error::invalid(
                "input",
                input[i],
                format!("element {i} must be ≤ levels = {levels}"),
            ));
        }
        for f in forwarded.shares {
            let Some(keys) = self.directory.get(&f.from).filter(|_| f.from != self.id) else {
                return Err(protocol(
                    stage,
                    format!("shares from client {}, not in the directory", f.from),
                ));
            };
            if self.held.contains_key(&f.from) {
                return Err(protocol(
                    stage,
                    format!("two sets of shares from client {}", f.from),
                ));
            }
            let key = agree(
                &self.encryption_secret,
                &keys.encryption_key,
                self.session,
                KeyPurpose::Encryption,
            )?;
            let plaintext = open(&key, self.session, f.from, self.id, &f.ciphertext)?;
            let (from, to, key_share, seed_share) = decode_pair(&plaintext)?;
            if from != f.from
                || to != self.id
                || key_share.x != self.id + 1
                || seed_share.x != self.id + 1
            {
                return Err(protocol(
                    stage,
                    format!("shares from client {} are addressed inconsistently", f.from),
                ));
            }
            self.held.insert(f.from, (key_share, seed_share));
        }
        let t = self.config.threshold;
        if self.held.len() < t {
            return Err(Error::TooFewSurvivors {
                stage,
                what: format!("live clients in client {}'s neighbourhood", self.id),
                available: self.held.len(),
                threshold: t,
            });
        }
        let bits = self.config.quantization.modulus_bits;
        let mut masked = input.to_vec();
        apply_mask(&mut masked, &self.self_mask_seed, bits, MaskSign::Add);
        for &v in self.held.keys().filter(|&&v| v != self.id) {
            let seed = agree(
                &self.mask_secret,
                &self.directory[&v].mask_key,
                self.session,
                KeyPurpose::PairwiseMask,
            )?;
            let sign = if self.id < v {
                MaskSign::Add
            } else {
                MaskSign::Subtract
            };
            apply_mask(&mut masked, &seed, bits, sign);
        }
        reduce(&mut masked, bits);
        self.stage = Stage::Unmask;
        Ok(MaskedInput {
            client: self.id,
            masked,
        })
    }

    /// Stage 3: reveals shares of b for the survivors and of s^SK for the dropped — after
    /// checking that the two lists are disjoint, together name exactly the clients it holds
    /// shares for, include itself among the survivors, and leave at least t survivors.
    /// Answers once per session.
    pub fn unmask(&mut self, request: UnmaskRequest) -> Result<UnmaskShares> {
        let stage = "unmask";
        self.expect(Stage::Unmask, stage)?;
        self.stage = Stage::Finished;
        let survivors: BTreeSet<ClientId> = request.survivors.iter().copied().collect();
        let dropped: BTreeSet<ClientId> = request.dropped.iter().copied().collect();
        if survivors.len() != request.survivors.len() || dropped.len() != request.dropped.len() {
            return Err(protocol(stage, "the request repeats a client".into()));
        }
        if let Some(v) = survivors.intersection(&dropped).next() {
            return Err(protocol(
                stage,
                format!("client {v} is listed as both survivor and dropped; refusing to reveal both of its secrets"),
            ));
        }
        if !survivors.contains(&self.id) {
            return Err(protocol(
                stage,
                "the request lists this client as dropped".into(),
            ));
        }
        let named: BTreeSet<ClientId> = survivors.union(&dropped).copied().collect();
        let held: BTreeSet<ClientId> = self.held.keys().copied().collect();
        if named != held {
            return Err(protocol(
                stage,
                format!("the request names {named:?}, this client holds shares of {held:?}"),
            ));
        }
        if survivors.len() < self.config.threshold {
            return Err(Error::TooFewSurvivors {
                stage,
                what: format!("live clients in client {}'s neighbourhood", self.id),
                available: survivors.len(),
                threshold: self.config.threshold,
            });
        }
        let pick = |set: &BTreeSet<ClientId>, key_share: bool| {
            set.iter()
                .map(|&owner| {
                    let (k, s) = &self.held[&owner];
                    OwnedShare {
                        owner,
                        share: if key_share { k.clone() } else { s.clone() },
                    }
                })
                .collect()
        };
        Ok(UnmaskShares {
            client: self.id,
            self_mask_shares: pick(&survivors, false),
            mask_key_shares: pick(&dropped, true),
        })
    }

    fn expect(&self, stage: Stage, name: &'static str) -> Result<()> {
        if self.stage == stage {
            Ok(())
        } else {
            Err(protocol(
                name,
                format!("client {} is not at this stage ({:?})", self.id, self.stage),
            ))
        }
    }
}

fn protocol(stage: &'static str, detail: String) -> Error {
    Error::Protocol { stage, detail }
}

fn encode_pair(from: ClientId, to: ClientId, key_share: &Share, seed_share: &Share) -> Vec<u8> {
    let mut out = Vec::with_capacity(PLAINTEXT);
    out.extend_from_slice(&from.to_le_bytes());
    out.extend_from_slice(&to.to_le_bytes());
    for share in [key_share, seed_share] {
        out.extend_from_slice(&share.x.to_le_bytes());
        for y in share.y {
            out.extend_from_slice(&y.to_le_bytes());
        }
    }
    out
}

fn decode_pair(bytes: &[u8]) -> Result<(ClientId, ClientId, Share, Share)> {
    if bytes.len() != PLAINTEXT {
        return Err(protocol(
            "masked input",
            format!(
                "share plaintext has {} bytes, expected {PLAINTEXT}",
                bytes.len()
            ),
        ));
    }
    let word = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    let share = |start: usize| {
        let mut y = [0u64; CHUNKS];
        for (c, v) in y.iter_mut().enumerate() {
            *v = word(start + 1 + c);
        }
        Share { x: word(start), y }
    };
    Ok((word(0), word(1), share(2), share(3 + CHUNKS)))
}
