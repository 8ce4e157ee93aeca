//! The server's side of one secure-aggregation session: a state machine fed the replies of
//! each stage, answering with the next stage's messages (docs/privacy.md, "Secure
//! aggregation").

use super::crypto::{agree, apply_mask, public_of, reduce, KeyPurpose, MaskSign};
use super::messages::{
    ClientId, ForwardedShare, ForwardedShares, KeyDirectory, MaskedInput, PublicKeys, Setup,
    ShareKeys, UnmaskRequest, UnmaskShares,
};
use super::shamir::{combine, Share};
use super::SecAggConfig;
use crate::error::{Error, Result};
use crate::rng::SecureRng;
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, BTreeSet};
use x25519_dalek::StaticSecret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Keys,
    Shares,
    Masked,
    Unmask,
    Finished,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Keys => "advertise keys",
            Stage::Shares => "share keys",
            Stage::Masked => "masked input",
            Stage::Unmask => "unmask",
            Stage::Finished => "finished",
        }
    }
}

/// A reply the server set aside (its sender is then treated as dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stage of the reply.
    pub stage: &'static str,
    /// Sender named in the reply.
    pub client: ClientId,
    /// Why it was set aside.
    pub reason: String,
}

/// The unmasked result of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateSum {
    /// Σ of the survivors' inputs mod 2^bits (exact: the inputs cannot wrap).
    pub sum: Vec<u64>,
    /// Clients whose input is in the sum, sorted.
    pub survivors: Vec<ClientId>,
}

/// Server state for one session. Replies that break the protocol are set aside (see
/// [`SecAggServer::rejections`]) and their senders treated as dropped; the session aborts
/// with [`Error::TooFewSurvivors`] as soon as some secret could no longer be recovered or
/// fewer than t inputs would be summed.
#[derive(Debug)]
pub struct SecAggServer {
    session: u64,
    dimension: usize,
    threshold: usize,
    modulus_bits: u32,
    neighbours: BTreeMap<ClientId, BTreeSet<ClientId>>,
    stage: Stage,
    keys: BTreeMap<ClientId, PublicKeys>,
    shared: BTreeSet<ClientId>,
    survivors: BTreeSet<ClientId>,
    ciphertexts: BTreeMap<(ClientId, ClientId), Vec<u8>>,
    sum: Vec<u64>,
    rejections: Vec<Rejection>,
}

impl SecAggServer {
    /// Starts a session over `participants` (distinct ids < 2⁶⁰) for vectors of length
    /// `dimension`. The neighbourhood graph is a ring of k = `num_shares` clients (k odd,
    /// each client with (k − 1)/2 neighbours on either side) under a random permutation drawn
    /// from `rng`, or the complete graph when k ≥ n. Returns the [`Setup`] for each client.
    pub fn new(
        session: u64,
        config: &SecAggConfig,
        dimension: usize,
        participants: &[ClientId],
        rng: &mut SecureRng,
    ) -> Result<(Self, Vec<Setup>)> {
        let n = participants.len();
        let mut unique = BTreeSet::new();
        if let Some(&id) = participants.iter().find(|&&id| !unique.insert(id)) {
            return Err(crate::error::invalid(
                "participants",
                id,
                "client id listed twice",
            ));
        }
        if let Some(&id) = unique.iter().find(|&&id| id >= 1 << 60) {
            return Err(crate::error::invalid(
                "participants",
                id,
                "client ids must be < 2^60",
            ));
        }
        if dimension == 0 {
            return Err(crate::error::invalid("dimension", 0, "must be ≥ 1"));
        }
        let k = config.validate(n)?;
        let mut order: Vec<ClientId> = unique.iter().copied().collect();
        order.shuffle(rng);
        let half = (k - 1) / 2;
        let neighbours: BTreeMap<ClientId, BTreeSet<ClientId>> = order
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                let set: BTreeSet<ClientId> = if k >= n {
                    unique.iter().copied().filter(|&v| v != u).collect()
                } else {
                    (1..=half)
                        .flat_map(|d| [order[(i + d) % n], order[(i + n - d) % n]])
                        .collect()
                };
                (u, set)
            })
            .collect();
        let setups = neighbours
            .iter()
            .map(|(&u, set)| Setup {
                session,
                config: config.clone(),
                dimension,
                client: u,
                neighbours: set.iter().copied().collect(),
            })
            .collect();
        let server = Self {
            session,
            dimension,
            threshold: config.threshold,
            modulus_bits: config.quantization.modulus_bits,
            neighbours,
            stage: Stage::Keys,
            keys: BTreeMap::new(),
            shared: BTreeSet::new(),
            survivors: BTreeSet::new(),
            ciphertexts: BTreeMap::new(),
            sum: Vec::new(),
            rejections: Vec::new(),
        };
        Ok((server, setups))
    }

    /// The neighbours of `client` (without itself), if it is a participant.
    pub fn neighbours_of(&self, client: ClientId) -> Option<&BTreeSet<ClientId>> {
        self.neighbours.get(&client)
    }

    /// Replies set aside so far, with reasons.
    pub fn rejections(&self) -> &[Rejection] {
        &self.rejections
    }

    /// Stage 0 → 1: collects the public keys; returns each live client's [`KeyDirectory`].
    pub fn receive_keys(
        &mut self,
        replies: Vec<PublicKeys>,
    ) -> Result<BTreeMap<ClientId, KeyDirectory>> {
        self.expect(Stage::Keys)?;
        let mut seen_keys = BTreeSet::new();
        for reply in replies {
            let client = reply.client;
            let reason = if !self.neighbours.contains_key(&client) {
                Some("not a participant".to_string())
            } else if self.keys.contains_key(&client) {
                Some("second reply".to_string())
            } else if reply.encryption_key == reply.mask_key
                || seen_keys.contains(&reply.encryption_key)
                || seen_keys.contains(&reply.mask_key)
            {
                Some("public key already in use".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                self.reject(client, reason);
                continue;
            }
            seen_keys.insert(reply.encryption_key);
            seen_keys.insert(reply.mask_key);
            self.keys.insert(client, reply);
        }
        let live: BTreeSet<ClientId> = self.keys.keys().copied().collect();
        self.check_holders(&live, &live)?;
        self.stage = Stage::Shares;
        Ok(live
            .iter()
            .map(|&u| {
                let keys = self
                    .holders(u)
                    .filter(|v| live.contains(v))
                    .map(|v| self.keys[&v].clone())
                    .collect();
                (u, KeyDirectory { keys })
            })
            .collect())
    }

    /// Stage 1 → 2: collects the encrypted shares; returns, for each client that sent its
    /// own, the shares addressed to it.
    pub fn receive_shares(
        &mut self,
        replies: Vec<ShareKeys>,
    ) -> Result<BTreeMap<ClientId, ForwardedShares>> {
        self.expect(Stage::Shares)?;
        for reply in replies {
            let u = reply.client;
            if !self.keys.contains_key(&u) || self.shared.contains(&u) {
                self.reject(u, "not expected at this stage, or a second reply".into());
                continue;
            }
            let expected: Vec<ClientId> = self.neighbours[&u]
                .iter()
                .copied()
                .filter(|v| self.keys.contains_key(v))
                .collect();
            let got: Vec<ClientId> = reply.shares.iter().map(|s| s.to).collect();
            if got != expected {
                self.reject(
                    u,
                    format!("shares addressed to {got:?}, expected one each for {expected:?}"),
                );
                continue;
            }
            for s in reply.shares {
                self.ciphertexts.insert((u, s.to), s.ciphertext);
            }
            self.shared.insert(u);
        }
        let shared = self.shared.clone();
        self.check_holders(&shared, &shared)?;
        self.stage = Stage::Masked;
        let mut out: BTreeMap<ClientId, ForwardedShares> = shared
            .iter()
            .map(|&v| (v, ForwardedShares { shares: Vec::new() }))
            .collect();
        for ((from, to), ciphertext) in std::mem::take(&mut self.ciphertexts) {
            if shared.contains(&from) {
                if let Some(f) = out.get_mut(&to) {
                    f.shares.push(ForwardedShare { from, ciphertext });
                }
            }
        }
        Ok(out)
    }

    /// Stage 2 → 3: sums the masked inputs; returns each survivor's [`UnmaskRequest`].
    pub fn receive_masked(
        &mut self,
        replies: Vec<MaskedInput>,
    ) -> Result<BTreeMap<ClientId, UnmaskRequest>> {
        self.expect(Stage::Masked)?;
        self.sum = vec![0u64; self.dimension];
        let modulus_bits = self.modulus_bits;
        for reply in replies {
            let u = reply.client;
            let reason = if !self.shared.contains(&u) || self.survivors.contains(&u) {
                Some("not expected at this stage, or a second reply".to_string())
            } else if reply.masked.len() != self.dimension {
                Some(format!(
                    "masked vector has length {}, expected {}",
                    reply.masked.len(),
                    self.dimension
                ))
            } else if let Some(i) = reply.masked.iter().position(|&m| m >> modulus_bits != 0) {
                Some(format!(
                    "masked[{i}] = {} is not below 2^{modulus_bits}",
                    reply.masked[i]
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                self.reject(u, reason);
                continue;
            }
            for (s, m) in self.sum.iter_mut().zip(&reply.masked) {
                *s = s.wrapping_add(*m);
            }
            self.survivors.insert(u);
        }
        if self.survivors.len() < self.threshold {
            self.stage = Stage::Finished;
            return Err(Error::TooFewSurvivors {
                stage: "masked input",
                what: "survivors".into(),
                available: self.survivors.len(),
                threshold: self.threshold,
            });
        }
        let (shared, survivors) = (self.shared.clone(), self.survivors.clone());
        self.check_holders(&shared, &survivors)?;
        self.stage = Stage::Unmask;
        Ok(survivors
            .iter()
            .map(|&u| {
                let (mut alive, mut dropped) = (Vec::new(), Vec::new());
                for v in self.holders(u).filter(|v| shared.contains(v)) {
                    if survivors.contains(&v) {
                        alive.push(v);
                    } else {
                        dropped.push(v);
                    }
                }
                (
                    u,
                    UnmaskRequest {
                        survivors: alive,
                        dropped,
                    },
                )
            })
            .collect())
    }

    /// Stage 3 → done: reconstructs every survivor's self-mask seed and every dropped
    /// client's mask key, removes the masks, and returns the exact sum.
    pub fn receive_unmask(&mut self, replies: Vec<UnmaskShares>) -> Result<AggregateSum> {
        self.expect(Stage::Unmask)?;
        let mut self_mask_shares: BTreeMap<ClientId, Vec<Share>> = BTreeMap::new();
        let mut key_shares: BTreeMap<ClientId, Vec<Share>> = BTreeMap::new();
        let mut answered = BTreeSet::new();
        for reply in replies {
            let u = reply.client;
            if !self.survivors.contains(&u) || !answered.insert(u) {
                self.reject(u, "not expected at this stage, or a second reply".into());
                continue;
            }
            let owners =
                |s: &[super::messages::OwnedShare]| s.iter().map(|o| o.owner).collect::<Vec<_>>();
            let (want_alive, want_dropped): (Vec<ClientId>, Vec<ClientId>) = self
                .holders(u)
                .filter(|v| self.shared.contains(v))
                .partition(|v| self.survivors.contains(v));
            let all_shares = reply.self_mask_shares.iter().chain(&reply.mask_key_shares);
            if owners(&reply.self_mask_shares) != want_alive
                || owners(&reply.mask_key_shares) != want_dropped
            {
                self.reject(u, "shares do not match the unmask request".into());
                continue;
            }
            if let Some(bad) = all_shares.clone().find(|o| o.share.x != u + 1) {
                self.reject(
                    u,
                    format!(
                        "share of client {} is at x = {}, expected {}",
                        bad.owner,
                        bad.share.x,
                        u + 1
                    ),
                );
                continue;
            }
            for o in reply.self_mask_shares {
                self_mask_shares.entry(o.owner).or_default().push(o.share);
            }
            for o in reply.mask_key_shares {
                key_shares.entry(o.owner).or_default().push(o.share);
            }
        }
        self.stage = Stage::Finished;
        let needed: Vec<ClientId> = self.shared.iter().copied().collect();
        for v in needed {
            let shares = if self.survivors.contains(&v) {
                self_mask_shares.remove(&v)
            } else {
                key_shares.remove(&v)
            }
            .unwrap_or_default();
            if shares.len() < self.threshold {
                return Err(Error::TooFewSurvivors {
                    stage: "unmask",
                    what: format!("shares of client {v}'s secret"),
                    available: shares.len(),
                    threshold: self.threshold,
                });
            }
            let secret = combine(&shares, self.threshold)?;
            if self.survivors.contains(&v) {
                apply_mask(
                    &mut self.sum,
                    &secret,
                    self.modulus_bits,
                    MaskSign::Subtract,
                );
            } else {
                self.cancel_pairwise_masks_of_dropped(v, secret)?;
            }
        }
        let mut sum = std::mem::take(&mut self.sum);
        reduce(&mut sum, self.modulus_bits);
        Ok(AggregateSum {
            sum,
            survivors: self.survivors.iter().copied().collect(),
        })
    }

    /// Removes the masks ±PRG(s_wv) that each surviving neighbour w of dropped client v
    /// added (+ when w < v), using v's reconstructed mask key.
    fn cancel_pairwise_masks_of_dropped(
        &mut self,
        v: ClientId,
        secret_bytes: [u8; 32],
    ) -> Result<()> {
        let secret = StaticSecret::from(secret_bytes);
        if public_of(&secret) != self.keys[&v].mask_key {
            return Err(Error::Protocol {
                stage: "unmask",
                detail: format!("the mask key reconstructed for client {v} does not match its public key (corrupt shares)"),
            });
        }
        let partners: Vec<ClientId> = self.neighbours[&v]
            .iter()
            .copied()
            .filter(|w| self.survivors.contains(w))
            .collect();
        for w in partners {
            let seed = agree(
                &secret,
                &self.keys[&w].mask_key,
                self.session,
                KeyPurpose::PairwiseMask,
            )?;
            let sign = if w < v {
                MaskSign::Subtract
            } else {
                MaskSign::Add
            };
            apply_mask(&mut self.sum, &seed, self.modulus_bits, sign);
        }
        Ok(())
    }

    /// The holders of `u`'s shares: u and its neighbours, in id order.
    fn holders(&self, u: ClientId) -> impl Iterator<Item = ClientId> + '_ {
        let own = std::iter::once(u);
        let mut all: Vec<ClientId> = own.chain(self.neighbours[&u].iter().copied()).collect();
        all.sort_unstable();
        all.into_iter()
    }

    /// Aborts unless every client in `owners` has ≥ t share holders in `live`.
    fn check_holders(
        &mut self,
        owners: &BTreeSet<ClientId>,
        live: &BTreeSet<ClientId>,
    ) -> Result<()> {
        for &v in owners {
            let available = self.holders(v).filter(|w| live.contains(w)).count();
            if available < self.threshold {
                let stage = self.stage.name();
                self.stage = Stage::Finished;
                return Err(Error::TooFewSurvivors {
                    stage,
                    what: format!("live share holders of client {v}"),
                    available,
                    threshold: self.threshold,
                });
            }
        }
        if owners.len() < self.threshold {
            let stage = self.stage.name();
            self.stage = Stage::Finished;
            return Err(Error::TooFewSurvivors {
                stage,
                what: "live clients".into(),
                available: owners.len(),
                threshold: self.threshold,
            });
        }
        Ok(())
    }

    fn expect(&self, stage: Stage) -> Result<()> {
        if self.stage == stage {
            Ok(())
        } else {
            Err(Error::Protocol {
                stage: stage.name(),
                detail: format!("the session is at stage `{}`", self.stage.name()),
            })
        }
    }

    fn reject(&mut self, client: ClientId, reason: String) {
        self.rejections.push(Rejection {
            stage: self.stage.name(),
            client,
            reason,
        });
    }
}
