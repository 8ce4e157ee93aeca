//! Cost of secure aggregation against plain summation, measured side by side in one run
//! (docs/privacy.md, "Cost"); `fedpace bench` and `examples/secagg_bench.rs` call it.

use super::{simulate, Dropout, SecAggConfig};
use crate::error::Result;
use crate::rng::SecureRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// Measured cost of one secure-aggregation round against plain summation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecAggBench {
    /// Clients in the round.
    pub clients: usize,
    /// Parameters per client.
    pub dimension: usize,
    /// Neighbourhood size k used (clients = complete graph, SecAgg).
    pub neighbourhood: usize,
    /// Clients that dropped before sending their masked input.
    pub dropped: usize,
    /// Plain summation of the f32 updates (server), seconds.
    pub plain_seconds: f64,
    /// Secure aggregation, all clients' work (quantise, keys, shares, masks), summed, seconds.
    pub secagg_client_seconds: f64,
    /// Secure aggregation, the server's work (routing, sum, unmasking), seconds.
    pub secagg_server_seconds: f64,
    /// Plain: bytes each client uploads (f32 per parameter).
    pub plain_upload_bytes_per_client: usize,
    /// Secure aggregation: bytes a surviving client uploads, all stages (mean over the
    /// clients whose input is in the sum).
    pub secagg_upload_bytes_per_client: f64,
    /// Secure aggregation: protocol bytes a surviving client downloads, all stages (mean).
    pub secagg_download_bytes_per_client: f64,
    /// Largest |secure sum − plain sum| over coordinates (quantisation error).
    pub max_abs_error: f64,
}

impl SecAggBench {
    /// Secure-aggregation upload per client / plain upload per client.
    pub fn upload_expansion(&self) -> f64 {
        self.secagg_upload_bytes_per_client / self.plain_upload_bytes_per_client as f64
    }

    /// Total secure-aggregation time (clients + server) / plain summation time.
    pub fn time_ratio(&self) -> f64 {
        (self.secagg_client_seconds + self.secagg_server_seconds) / self.plain_seconds
    }
}

/// One round of `clients` × `dimension` random updates in [−1, 1], summed plainly and with
/// secure aggregation (default quantisation: c = 8, 2²² levels, modulus 2³²), in this
/// thread. `num_shares` = `None` runs SecAgg; `Some(k)` SecAgg+ with threshold ⌊k/2⌋ + 1.
/// `dropped` clients (the last ids) stop before sending their masked input, so the server
/// must recover their masks.
pub fn bench_secagg(
    clients: usize,
    dimension: usize,
    num_shares: Option<usize>,
    dropped: usize,
    seed: u64,
) -> Result<SecAggBench> {
    let config = match num_shares {
        None => SecAggConfig::complete(clients),
        Some(k) => SecAggConfig::neighbourhoods(k),
    };
    let neighbourhood = config.validate(clients)?;
    let mut rng = SecureRng::simulated(seed, 0);
    let updates: Vec<Vec<f32>> = (0..clients)
        .map(|_| {
            (0..dimension)
                .map(|_| rng.gen_range(-1.0f32..1.0))
                .collect()
        })
        .collect();
    let survivors = clients.saturating_sub(dropped);

    let clock = Instant::now();
    let mut plain = vec![0.0f32; dimension];
    for u in &updates[..survivors] {
        fedpace_params::axpy(1.0, u, &mut plain);
    }
    let plain_seconds = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let inputs = updates
        .iter()
        .enumerate()
        .map(|(id, u)| Ok((id as u64, config.quantization.quantize(u, &mut rng)?)))
        .collect::<Result<Vec<_>>>()?;
    let quantize_seconds = clock.elapsed().as_secs_f64();
    let dropouts: BTreeMap<u64, Dropout> = (survivors..clients)
        .map(|id| (id as u64, Dropout::BeforeMaskedInput))
        .collect();
    let session = simulate(&config, 1, &inputs, &dropouts, seed)?;
    let secure = config
        .quantization
        .dequantize_sum(&session.result.sum, session.result.survivors.len());
    let mean_over_survivors = |bytes: fn(&super::Traffic) -> usize| {
        let who = &session.result.survivors;
        who.iter()
            .map(|id| bytes(&session.traffic[id]))
            .sum::<usize>() as f64
            / who.len() as f64
    };
    let max_abs_error = secure
        .iter()
        .zip(&plain)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max);
    Ok(SecAggBench {
        clients,
        dimension,
        neighbourhood,
        dropped,
        plain_seconds,
        secagg_client_seconds: session.client_seconds + quantize_seconds,
        secagg_server_seconds: session.server_seconds,
        plain_upload_bytes_per_client: 8 + 4 + 4 * dimension,
        secagg_upload_bytes_per_client: mean_over_survivors(|t| t.upload_bytes),
        secagg_download_bytes_per_client: mean_over_survivors(|t| t.download_bytes),
        max_abs_error,
    })
}
