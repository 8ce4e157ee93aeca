//! Secure aggregation (SecAgg+, SecAgg as its complete-graph case) as the aggregation stage
//! of the linear path (docs/privacy.md, "Secure aggregation" and "Wiring").
//!
//! Clients pre-scale their update as the linear path asks (their weight, their rate
//! normalisation, or DP's clip, capped weight and noise share), append the scalars the
//! server needs to a tail ([`TailLayout`]), quantise the whole vector into the field and
//! keep it ([`SecurePending`]); their training reply carries a zero update and a report
//! without statistics. The protocol then runs as four exchanges after training
//! (`Strategy::exchange` → `Grid::exchange` → the client part [`SecureClientPart`]):
//! advertise keys, share keys, masked input, unmask. The server only ever sees masked
//! vectors, and learns the exact sum of the survivors' quantised vectors.
//!
//! In simulation, `dropout` makes a share of the cohort stop answering at a stage drawn
//! uniformly among the four (their masks are recovered when they drop after sharing
//! keys); fewer survivors than the threshold abort the round with the protocol's error.

use super::{stream, Purpose};
use crate::parts::ExchangeHandler;
use fedpace_core::ext::Payload;
use fedpace_core::{
    ClientId, Error, ExchangeIns, Extensions, LocalState, Reply, Result, SecureSummary, Session,
};
use fedpace_privacy::secagg::messages::{
    ForwardedShares, KeyDirectory, MaskedInput, PublicKeys, Setup, ShareKeys, UnmaskRequest,
    UnmaskShares, WireSize,
};
use fedpace_privacy::secagg::{
    AggregateSum, Dropout, Quantization, SecAggClient, SecAggConfig, SecAggServer, Traffic,
};
use fedpace_privacy::Randomness;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `[secure_aggregation]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecureConfig {
    /// k, the neighbourhood size of SecAgg+ (odd, ≥ 3); absent, or ≥ the cohort: SecAgg.
    pub num_shares: Option<usize>,
    /// t as a share of the neighbourhood, in (0.5, 1]; absent: the smallest majority
    /// ⌊k/2⌋ + 1.
    pub threshold: Option<f64>,
    /// Fixed-point encoding (Flower's defaults: `clipping_range` 8, `levels` 2²²,
    /// `modulus_bits` 32).
    pub quantization: Quantization,
    /// Simulation only: the share of each round's cohort that stops answering during the
    /// protocol, at a stage drawn uniformly among the four.
    pub dropout: f64,
}

impl Default for SecureConfig {
    fn default() -> Self {
        Self {
            num_shares: None,
            threshold: None,
            quantization: Quantization::default(),
            dropout: 0.0,
        }
    }
}

impl SecureConfig {
    /// Checks ranges; errors name the key under `secure_aggregation.`.
    pub fn validate(&self) -> Result<()> {
        if let Some(k) = self.num_shares {
            if k < 3 || k % 2 == 0 {
                return Err(Error::invalid(
                    "secure_aggregation.num_shares",
                    k,
                    "an odd neighbourhood size >= 3",
                ));
            }
        }
        if let Some(t) = self.threshold {
            if !(t > 0.5 && t <= 1.0) {
                return Err(Error::invalid(
                    "secure_aggregation.threshold",
                    t,
                    "a share of the neighbourhood in (0.5, 1] (a strict majority)",
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                "secure_aggregation.dropout",
                self.dropout,
                "a share of the cohort in [0, 1)",
            ));
        }
        self.quantization
            .validate(1)
            .map_err(|e| Error::invalid("secure_aggregation.quantization", e, "valid settings"))
    }

    /// The neighbourhood size k and threshold t for a cohort of `n`.
    pub fn graph(&self, n: usize) -> (usize, usize) {
        let k = match self.num_shares {
            Some(k) if k < n => k,
            _ => n,
        };
        let t = match self.threshold {
            Some(f) => ((f * k as f64).ceil() as usize).clamp(k / 2 + 1, k.max(1)),
            None => k / 2 + 1,
        };
        (k, t)
    }

    /// Checks a cohort of `n` against the quantisation (n · L < 2^bits) and the graph.
    pub fn check_cohort(&self, n: usize) -> Result<()> {
        let (k, t) = self.graph(n);
        SecAggConfig {
            num_shares: Some(k),
            threshold: t,
            quantization: self.quantization,
        }
        .validate(n)
        .map(|_| ())
        .map_err(|e| {
            Error::invalid(
                "secure_aggregation",
                e,
                format!("settings that fit a cohort of {n} clients"),
            )
        })
    }
}

/// What a client appends to its update, in this order, under secure aggregation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TailLayout {
    /// `[w_k, w_k·Λ_{k,g}/rate_scale_g …]` (the linear path's [`crate::local::PreScaled`]).
    pub pre_scaled: Option<Vec<f64>>,
    /// `[b_k − ½ + noise]` (DP's [`super::dp::DpScaled`]).
    pub dp_bit: bool,
    /// `[ln s_k, 1]` (`rates = "local"`).
    pub local_statistic: bool,
}

impl TailLayout {
    /// Number of tail values: 1 (the saturation flag) + the parts present.
    pub fn len(&self) -> usize {
        1 + self.pre_scaled.as_ref().map_or(0, |s| 1 + s.len())
            + self.dp_bit as usize
            + 2 * self.local_statistic as usize
    }
    /// Never empty (the saturation flag).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Sent with every instruction under secure aggregation: how to build the input vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecureInput {
    /// The tail's layout.
    pub tail: TailLayout,
    /// The fixed-point encoding.
    pub quantization: Quantization,
    /// Where the client's keys and rounding come from.
    pub randomness: Randomness,
}

impl Payload for SecureInput {
    const NAME: &'static str = "secure-input";
}

/// A client's quantised input, kept in its state from training until its masked input
/// leaves (client-private; never sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurePending {
    /// The round it was trained in.
    pub round: u32,
    /// The quantised vector (update, then tail).
    pub input: Vec<u64>,
    /// Where its keys come from.
    pub randomness: Randomness,
}

impl Payload for SecurePending {
    const NAME: &'static str = "secure-pending";
    fn heap_bytes(&self) -> usize {
        8 * self.input.len()
    }
}

macro_rules! message {
    ($(#[$doc:meta] $name:ident($inner:ty) = $key:literal;)*) => {
        $(
            #[$doc]
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            pub struct $name(pub $inner);
            impl Payload for $name {
                const NAME: &'static str = $key;
            }
        )*
    };
}

message! {
    /// Stage 0, server → client.
    SecureSetup(Setup) = "secagg-setup";
    /// Stage 0, client → server.
    SecureKeys(PublicKeys) = "secagg-keys";
    /// Stage 1, server → client.
    SecureDirectory(KeyDirectory) = "secagg-directory";
    /// Stage 1, client → server.
    SecureShares(ShareKeys) = "secagg-shares";
    /// Stage 2, server → client.
    SecureForwarded(ForwardedShares) = "secagg-forwarded";
    /// Stage 2, client → server.
    SecureMasked(MaskedInput) = "secagg-masked";
    /// Stage 3, server → client.
    SecureUnmaskRequest(UnmaskRequest) = "secagg-unmask-request";
    /// Stage 3, client → server.
    SecureUnmask(UnmaskShares) = "secagg-unmask";
}

/// Registers the payloads and the client part.
pub(crate) fn register(a: &mut crate::registry::Algorithms) {
    a.passive_payload::<SecureInput>()
        .payload::<SecurePending>()
        .payload::<SecureSetup>()
        .payload::<SecureKeys>()
        .payload::<SecureDirectory>()
        .payload::<SecureShares>()
        .payload::<SecureForwarded>()
        .payload::<SecureMasked>()
        .payload::<SecureUnmaskRequest>()
        .payload::<SecureUnmask>();
    a.parts().add_exchange(SecureClientPart);
}

/// Builds the client's input: `update ++ tail`, quantised with the client's generator.
/// Returns the quantised vector; the first tail value is 1 when any value lies outside
/// the quantisation range (counted by the secure sum itself).
pub fn pack(
    update: &[f32],
    tail: &[f64],
    q: &Quantization,
    rng: &mut impl Rng,
) -> Result<Vec<u64>> {
    let c = q.clipping_range as f64;
    let saturated =
        update.iter().any(|v| (*v as f64).abs() > c) || tail.iter().any(|v| v.abs() > c);
    let mut v: Vec<f32> = Vec::with_capacity(update.len() + 1 + tail.len());
    v.extend_from_slice(update);
    v.push(if saturated { 1.0 } else { 0.0 });
    v.extend(tail.iter().map(|x| *x as f32));
    q.quantize(&v, rng).map_err(super::dp::privacy_error)
}

/// The client's session between exchanges.
struct ClientSession {
    client: SecAggClient,
    input: Vec<u64>,
}

/// The client part that answers the protocol's messages.
pub struct SecureClientPart;

fn protocol_error(e: fedpace_privacy::Error) -> Error {
    Error::Backend(e.to_string())
}

impl ExchangeHandler for SecureClientPart {
    fn payloads(&self) -> &'static [&'static str] {
        &[
            SecureSetup::NAME,
            SecureDirectory::NAME,
            SecureForwarded::NAME,
            SecureUnmaskRequest::NAME,
        ]
    }

    fn exchange(
        &self,
        id: ClientId,
        ins: &ExchangeIns,
        state: &mut LocalState,
        session: &mut Session,
    ) -> Result<Extensions> {
        let m = &ins.msg;
        if let Some(SecureSetup(setup)) = m.get::<SecureSetup>() {
            let pending = state.ext.remove::<SecurePending>().ok_or_else(|| {
                Error::invalid(
                    "secure aggregation",
                    "no pending input",
                    "a client that trained this round",
                )
            })?;
            if pending.round != ins.round || setup.client != id {
                return Err(Error::invalid(
                    "secure aggregation setup",
                    format!("round {} for client {}", ins.round, setup.client),
                    format!("round {} for client {id}", pending.round),
                ));
            }
            if setup.dimension != pending.input.len() {
                return Err(Error::invalid(
                    "secure aggregation setup",
                    format!("dimension {}", setup.dimension),
                    format!("this client's input length {}", pending.input.len()),
                ));
            }
            let rng = pending
                .randomness
                .rng(stream(ins.round, id, Purpose::SecAggClient))
                .map_err(protocol_error)?;
            let (client, keys) = SecAggClient::new(setup.clone(), rng).map_err(protocol_error)?;
            session.insert(ClientSession {
                client,
                input: pending.input,
            });
            return Ok(Extensions::new().with(SecureKeys(keys)));
        }
        let s = session.get_mut::<ClientSession>().ok_or_else(|| {
            Error::invalid(
                "secure aggregation",
                "a message without a session",
                "the setup first",
            )
        })?;
        if let Some(SecureDirectory(d)) = m.get::<SecureDirectory>() {
            let r = s.client.share_keys(d.clone()).map_err(protocol_error)?;
            return Ok(Extensions::new().with(SecureShares(r)));
        }
        if let Some(SecureForwarded(f)) = m.get::<SecureForwarded>() {
            let input = std::mem::take(&mut s.input);
            let r = s
                .client
                .masked_input(f.clone(), &input)
                .map_err(protocol_error)?;
            return Ok(Extensions::new().with(SecureMasked(r)));
        }
        if let Some(SecureUnmaskRequest(u)) = m.get::<SecureUnmaskRequest>() {
            let r = s.client.unmask(u.clone()).map_err(protocol_error)?;
            session.take::<ClientSession>();
            return Ok(Extensions::new().with(SecureUnmask(r)));
        }
        Err(Error::invalid(
            "secure aggregation",
            format!("message {:?}", m.names().collect::<Vec<_>>()),
            "a protocol message",
        ))
    }
}

/// One round's running session on the server.
struct Running {
    server: SecAggServer,
    step: u8,
    dropouts: BTreeMap<ClientId, Dropout>,
    traffic: BTreeMap<ClientId, Traffic>,
    participants: usize,
    neighbourhood: usize,
    threshold: usize,
    seed: u64,
}

/// What the protocol left for aggregation: the dequantised sum of the survivors' vectors.
#[derive(Debug, Clone)]
pub(crate) struct SecureResult {
    /// Σ of the survivors' vectors (update then tail), dequantised.
    pub sum: Vec<f32>,
    /// The raw integer sum and who is in it.
    pub raw: AggregateSum,
    /// For the round's summary.
    pub summary: SecureSummary,
}

/// The server's side (see the module doc).
pub struct SecureStage {
    config: SecureConfig,
    randomness: Randomness,
    running: Option<Running>,
    result: Option<SecureResult>,
    /// The raw sum of the last aggregated round (kept for inspection).
    last: Option<AggregateSum>,
    /// The threshold t of this round, fixed when the instructions went out (distributed
    /// noise is split over t clients, so no smaller sum may be produced).
    round_threshold: usize,
}

impl SecureStage {
    /// A stage from a validated config.
    pub fn new(config: SecureConfig, randomness: Randomness) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            randomness,
            running: None,
            result: None,
            last: None,
            round_threshold: 0,
        })
    }

    /// The config.
    pub fn config(&self) -> &SecureConfig {
        &self.config
    }

    /// Fixes this round's threshold from the cohort sent out; returns it.
    pub fn plan_round(&mut self, cohort: usize) -> usize {
        self.round_threshold = self.config.graph(cohort).1;
        self.result = None;
        self.running = None;
        self.round_threshold
    }

    /// The instruction payload.
    pub fn input(&self, tail: TailLayout) -> SecureInput {
        SecureInput {
            tail,
            quantization: self.config.quantization,
            randomness: self.randomness,
        }
    }

    /// The raw sum of the last aggregated round (for inspection: tests, tools).
    pub fn last_sum(&self) -> Option<&AggregateSum> {
        self.last.as_ref()
    }

    /// Takes the last round's result.
    pub(crate) fn take_result(&mut self, round: u32) -> Result<SecureResult> {
        let r = self.result.take().ok_or_else(|| {
            Error::invalid(
                format!("round {round}: secure aggregation"),
                "no result",
                "the protocol to have run after training",
            )
        })?;
        self.last = Some(r.raw.clone());
        Ok(r)
    }

    /// One protocol step: `participants` (sorted) are the clients whose training is to be
    /// summed; `answers` the replies to the last step (None to start).
    pub(crate) fn step(
        &mut self,
        round: u32,
        seed: u64,
        dimension: usize,
        participants: &[ClientId],
        answers: Option<Vec<Reply<Extensions>>>,
    ) -> Result<Vec<(ClientId, ExchangeIns)>> {
        let fail = |e: fedpace_privacy::Error| Error::Backend(format!("round {round}: {e}"));
        let Some(answers) = answers else {
            return self.start(round, seed, dimension, participants);
        };
        let run = self.running.as_mut().ok_or_else(|| {
            Error::invalid(
                "secure aggregation",
                "answers without a session",
                "a started session",
            )
        })?;
        let msg = |to: ClientId, ext: Extensions| {
            (
                to,
                ExchangeIns {
                    round,
                    seed: run.seed,
                    msg: ext,
                },
            )
        };
        run.step += 1;
        let step = run.step;
        let mut out = Vec::new();
        let traffic = &mut run.traffic;
        let dropouts = &run.dropouts;
        let drops = |id: &ClientId, at: Dropout| dropouts.get(id) == Some(&at);
        match step {
            1 => {
                let keys = collect(&answers, |r: &SecureKeys| (r.0.client, r.0.clone()));
                for (id, k) in &keys {
                    traffic.entry(*id).or_default().upload_bytes += k.wire_bytes();
                }
                let dirs = run
                    .server
                    .receive_keys(keys.into_iter().map(|(_, k)| k).collect())
                    .map_err(fail)?;
                for (id, d) in dirs {
                    traffic.entry(id).or_default().download_bytes += d.wire_bytes();
                    if !drops(&id, Dropout::BeforeShares) {
                        out.push(msg(id, Extensions::new().with(SecureDirectory(d))));
                    }
                }
            }
            2 => {
                let shares = collect(&answers, |r: &SecureShares| (r.0.client, r.0.clone()));
                for (id, s) in &shares {
                    traffic.entry(*id).or_default().upload_bytes += s.wire_bytes();
                }
                let fwd = run
                    .server
                    .receive_shares(shares.into_iter().map(|(_, s)| s).collect())
                    .map_err(fail)?;
                for (id, f) in fwd {
                    traffic.entry(id).or_default().download_bytes += f.wire_bytes();
                    if !drops(&id, Dropout::BeforeMaskedInput) {
                        out.push(msg(id, Extensions::new().with(SecureForwarded(f))));
                    }
                }
            }
            3 => {
                let bits = self.config.quantization.modulus_bits;
                let masked = collect(&answers, |r: &SecureMasked| (r.0.client, r.0.clone()));
                for (id, m) in &masked {
                    traffic.entry(*id).or_default().upload_bytes += m.wire_bytes_packed(bits);
                }
                let reqs = run
                    .server
                    .receive_masked(masked.into_iter().map(|(_, m)| m).collect())
                    .map_err(fail)?;
                for (id, r) in reqs {
                    traffic.entry(id).or_default().download_bytes += r.wire_bytes();
                    if !drops(&id, Dropout::BeforeUnmask) {
                        out.push(msg(id, Extensions::new().with(SecureUnmaskRequest(r))));
                    }
                }
            }
            _ => {
                let shares = collect(&answers, |r: &SecureUnmask| (r.0.client, r.0.clone()));
                for (id, s) in &shares {
                    traffic.entry(*id).or_default().upload_bytes += s.wire_bytes();
                }
                let raw = run
                    .server
                    .receive_unmask(shares.into_iter().map(|(_, s)| s).collect())
                    .map_err(fail)?;
                let q = &self.config.quantization;
                let sum = q.dequantize_sum(&raw.sum, raw.survivors.len());
                let mean = |f: fn(&Traffic) -> usize| {
                    raw.survivors
                        .iter()
                        .map(|id| run.traffic.get(id).map_or(0, f))
                        .sum::<usize>() as f64
                        / raw.survivors.len().max(1) as f64
                };
                let summary = SecureSummary {
                    participants: run.participants,
                    survivors: raw.survivors.len(),
                    threshold: run.threshold,
                    neighbourhood: run.neighbourhood,
                    upload_bytes: mean(|t| t.upload_bytes),
                    download_bytes: mean(|t| t.download_bytes),
                    saturated_clients: 0.0,
                };
                self.result = Some(SecureResult { sum, raw, summary });
                self.running = None;
            }
        }
        Ok(out)
    }

    fn start(
        &mut self,
        round: u32,
        seed: u64,
        dimension: usize,
        participants: &[ClientId],
    ) -> Result<Vec<(ClientId, ExchangeIns)>> {
        let n = participants.len();
        let t = self.round_threshold;
        if n < t.max(2) {
            return Err(Error::Backend(format!(
                "round {round}: secure aggregation, setup: {n} clients trained, the threshold \
                 is {}; round aborted",
                t.max(2)
            )));
        }
        let (k, _) = self.config.graph(n);
        let config = SecAggConfig {
            num_shares: Some(k),
            threshold: t,
            quantization: self.config.quantization,
        };
        let mut rng = self
            .randomness
            .rng(stream(round, 0, Purpose::SecAggServer))
            .map_err(protocol_error)?;
        let (server, setups) =
            SecAggServer::new(round as u64, &config, dimension, participants, &mut rng)
                .map_err(|e| Error::Backend(format!("round {round}: {e}")))?;
        let mut drop_rng = self
            .randomness
            .rng(stream(round, 0, Purpose::SecAggDropout))
            .map_err(protocol_error)?;
        let stages = [
            Dropout::BeforeKeys,
            Dropout::BeforeShares,
            Dropout::BeforeMaskedInput,
            Dropout::BeforeUnmask,
        ];
        let mut dropouts = BTreeMap::new();
        for &id in participants {
            let u: f64 = drop_rng.gen();
            let at = drop_rng.gen_range(0..stages.len());
            if u < self.config.dropout {
                dropouts.insert(id, stages[at]);
            }
        }
        let mut traffic: BTreeMap<ClientId, Traffic> = BTreeMap::new();
        let mut out = Vec::new();
        for s in setups {
            let id = s.client;
            traffic.entry(id).or_default().download_bytes += s.wire_bytes();
            if dropouts.get(&id) != Some(&Dropout::BeforeKeys) {
                out.push((
                    id,
                    ExchangeIns {
                        round,
                        seed,
                        msg: Extensions::new().with(SecureSetup(s)),
                    },
                ));
            }
        }
        self.running = Some(Running {
            server,
            step: 0,
            dropouts,
            traffic,
            participants: n,
            neighbourhood: k,
            threshold: t,
            seed,
        });
        Ok(out)
    }
}

/// The answers carrying payload `T` whose protocol sender is the client that sent the
/// reply (the grid authenticates the reply's client; a message naming another sender is
/// set aside, its sender treated as dropped).
fn collect<T: Payload, M>(
    answers: &[Reply<Extensions>],
    f: impl Fn(&T) -> (ClientId, M),
) -> Vec<(ClientId, M)> {
    answers
        .iter()
        .filter_map(|r| {
            let ext = r.result.as_ref().ok()?;
            let (claimed, m) = f(ext.get::<T>()?);
            (claimed == r.client).then_some((claimed, m))
        })
        .collect()
}

/// Splits a dequantised sum into the update part (length `params`) and the tail.
pub(crate) fn split(sum: &[f32], params: usize) -> (Vec<f32>, Vec<f64>) {
    let tail = sum[params..].iter().map(|v| *v as f64).collect();
    (sum[..params].to_vec(), tail)
}
