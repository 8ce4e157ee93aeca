//! Client metadata at registration (docs/network.md, "Client metadata").
//!
//! Each client describes itself when its node registers: a [`codec::encode_client_info`]
//! frame per client (sizes, device class, and the payloads it chose to share, e.g. its
//! [`fedpace_core::LabelHistogram`]) in `RegisterRequest.metadata`. The server assembles
//! its [`ClientPool`] from these ([`registered_pool`]), so rate policies that read
//! metadata (`by-data-size`, `by-label-skew`, `by-device`, …) see over the network what
//! they see in simulation, and nothing a client did not send.

use bytes::Bytes;
use fedpace_core::{codec, ClientId, ClientInfo, ClientPool, Registry};
use fedpace_net::Server;

/// The registration metadata of the clients of `pool` whose ids fall in `ranges`: one
/// encoded [`ClientInfo`] each, as the pool describes it (a simulation pool already
/// reduced to what clients share, [`fedpace_core::Disclosed`]).
pub fn metadata_of(
    pool: &dyn ClientPool,
    ranges: &[std::ops::Range<ClientId>],
) -> Result<Vec<(ClientId, Bytes)>, String> {
    let mut out = Vec::new();
    for id in pool.ids() {
        if !ranges.iter().any(|r| r.contains(&id)) {
            continue;
        }
        let info = pool.info(id).map_err(|e| format!("client {id}: {e}"))?;
        out.push((id, encode(&info)?));
    }
    Ok(out)
}

/// One client's registration metadata.
pub fn encode(info: &ClientInfo) -> Result<Bytes, String> {
    codec::encode_client_info(info)
        .map(Bytes::from)
        .map_err(|e| format!("client {}: encoding its metadata: {e}", info.id))
}

/// The pool of clients `ids` as they described themselves when they registered with
/// `server`, decoded with `registry`; with `share`, only the payloads it names are kept
/// (`client.share`: what the server's configuration lets policies read). An error names
/// the first client that sent no metadata, metadata that does not decode, or metadata
/// for another id.
pub fn registered_pool(
    server: &Server,
    ids: impl IntoIterator<Item = ClientId>,
    registry: &Registry,
    share: Option<&[String]>,
) -> Result<Vec<ClientInfo>, String> {
    let mut out: Vec<ClientInfo> = Vec::new();
    for id in ids {
        let bytes = server.client_metadata(id).ok_or_else(|| {
            format!(
                "client {id} registered without metadata (sizes, shared statistics): its \
                 node predates registration metadata; expected a fedpace node of this version"
            )
        })?;
        let mut info = codec::decode_client_info(&bytes, registry)
            .map_err(|e| format!("client {id}: its registration metadata: {e}"))?;
        if info.id != id {
            return Err(format!(
                "client {id}: its registration metadata describes client {}; expected {id}",
                info.id
            ));
        }
        if let Some(share) = share {
            info.metadata.retain(|name| share.iter().any(|s| s == name));
        }
        out.push(info);
    }
    out.sort_by_key(|c| c.id);
    out.dedup_by_key(|c| c.id);
    Ok(out)
}
