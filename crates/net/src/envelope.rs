//! The server's checks on a raw request body before anything is decoded
//! (docs/network.md, "Nothing a client sends is trusted").
//!
//! A gRPC unary body is one frame: a flag byte (0: uncompressed; compression is refused,
//! so nothing inflates), a 4-byte big-endian length, and that many bytes of protobuf.
//! Before prost decodes it, [`count_field`] walks the top-level fields without
//! allocating and bounds the repeated ones, because prost materialises each element of a
//! repeated message (a 2-byte empty `Reply` becomes a ~60-byte struct): without the
//! bound a 16 MiB body could cost half a gigabyte.

use prost::Message;

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::proto;
use crate::wire;

fn invalid(field: &'static str, reason: String) -> Error {
    Error::Invalid {
        message: "request",
        field,
        reason,
    }
}

/// The protobuf message inside a one-frame gRPC body.
pub fn frame(body: &[u8]) -> Result<&[u8]> {
    if body.len() < 5 {
        return Err(invalid(
            "frame",
            format!("{} bytes: a gRPC frame has at least 5", body.len()),
        ));
    }
    if body[0] != 0 {
        return Err(invalid(
            "frame",
            format!("flag {}: compressed or unknown frames are refused", body[0]),
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let message = &body[5..];
    if len != message.len() {
        return Err(invalid(
            "frame",
            format!(
                "length {len} but {} bytes follow: exactly one message expected",
                message.len()
            ),
        ));
    }
    Ok(message)
}

fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// How many times top-level field `number` occurs in `message`; refuses malformed wire
/// data (prost would refuse it too, after allocating).
pub fn count_field(message: &[u8], number: u64) -> Result<usize> {
    let mut at = 0;
    let mut count = 0;
    while at < message.len() {
        let key = varint(message, &mut at)
            .ok_or_else(|| invalid("wire", format!("bad field key at byte {at}")))?;
        if key >> 3 == number {
            count += 1;
        }
        let skip = match key & 7 {
            0 => {
                varint(message, &mut at)
                    .ok_or_else(|| invalid("wire", format!("bad varint at byte {at}")))?;
                0
            }
            1 => 8,
            2 => varint(message, &mut at)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| invalid("wire", format!("bad length at byte {at}")))?,
            5 => 4,
            t => {
                return Err(invalid(
                    "wire",
                    format!("wire type {t} at byte {at}: not used by fedpace.v1"),
                ))
            }
        };
        at = at
            .checked_add(skip)
            .filter(|&end| end <= message.len())
            .ok_or_else(|| {
                invalid(
                    "wire",
                    format!("field runs past the end ({} bytes)", message.len()),
                )
            })?;
    }
    Ok(count)
}

/// The bound on repeated fields for the RPC at `path` (`None`: unknown path).
pub(crate) fn repeated_bound(
    path: &str,
    limits: &Limits,
) -> Option<Option<(u64, usize, &'static str)>> {
    let method = path.strip_prefix("/fedpace.v1.Fleet/")?;
    Some(match method {
        "Register" => Some((2, limits.max_ranges, "RegisterRequest.clients")),
        "Push" => Some((2, limits.max_replies_per_push, "PushRequest.replies")),
        "Heartbeat" | "Pull" | "Leave" => None,
        _ => return None,
    })
}

/// The checks on a raw body the server runs before decoding: size, one uncompressed
/// frame, well-formed top-level fields, repeated fields within their bound.
pub fn check_body<'a>(path: &str, body: &'a [u8], limits: &Limits) -> Result<&'a [u8]> {
    if body.len() > limits.max_request_bytes.saturating_add(5) {
        return Err(invalid(
            "body",
            format!("{} bytes: at most {}", body.len(), limits.max_request_bytes),
        ));
    }
    let bound = repeated_bound(path, limits)
        .ok_or_else(|| invalid("path", format!("{path:?}: no such RPC")))?;
    let message = frame(body)?;
    let count = match bound {
        Some((field, _, _)) => count_field(message, field)?,
        None => count_field(message, 0)?,
    };
    if let Some((_, max, name)) = bound {
        if count > max {
            return Err(invalid(
                "repeated",
                format!("{name}: {count} entries, at most {max}"),
            ));
        }
    }
    if path.ends_with("/Register") {
        let count = count_field(message, 3)?;
        let max = usize::try_from(limits.max_clients_per_node).unwrap_or(usize::MAX);
        if count > max {
            return Err(invalid(
                "repeated",
                format!("RegisterRequest.metadata: {count} entries, at most {max}"),
            ));
        }
    }
    Ok(message)
}

/// A request decoded and checked as the server does it: [`check_body`], prost, then the
/// per-field checks of [`wire`]. The fuzz tests drive this with random and mutated bodies.
#[derive(Debug)]
pub enum Decoded {
    /// Register with its checked, sorted ranges.
    Register(Vec<std::ops::Range<wire::ClientId>>),
    /// Heartbeat.
    Heartbeat(u64),
    /// Pull.
    Pull(proto::PullRequest),
    /// Push with its checked outcomes (a refused reply is a `Rejected` failure).
    Push(u64, Vec<wire::Outcome>),
    /// Leave.
    Leave(u64),
}

fn decode<M: Message + Default>(message: &[u8]) -> Result<M> {
    M::decode(message).map_err(|e| invalid("protobuf", e.to_string()))
}

/// Decodes and checks a raw request body for the RPC at `path`.
pub fn decode_request(path: &str, body: &[u8], limits: &Limits) -> Result<Decoded> {
    let message = check_body(path, body, limits)?;
    Ok(match path.trim_start_matches("/fedpace.v1.Fleet/") {
        "Register" => {
            let r: proto::RegisterRequest = decode(message)?;
            let ranges = wire::ranges_from_proto(
                &r.clients,
                limits.max_ranges,
                limits.max_clients_per_node,
            )?;
            wire::metadata_from_proto(r.metadata, &ranges)?;
            Decoded::Register(ranges)
        }
        "Heartbeat" => Decoded::Heartbeat(decode::<proto::HeartbeatRequest>(message)?.session),
        "Pull" => Decoded::Pull(decode(message)?),
        "Push" => {
            let r: proto::PushRequest = decode(message)?;
            let outcomes = r
                .replies
                .into_iter()
                .map(|p| wire::reply_from_proto(p, limits.max_reply_payload))
                .collect();
            Decoded::Push(r.session, outcomes)
        }
        _ => Decoded::Leave(decode::<proto::LeaveRequest>(message)?.session),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-encoded: field 2 (LEN) twice, field 1 (varint) once.
    #[test]
    fn count_field_walks_the_wire_format() {
        let m = [0x08, 0x96, 0x01, 0x12, 0x01, 0xff, 0x12, 0x00];
        assert_eq!(count_field(&m, 2).unwrap(), 2);
        assert_eq!(count_field(&m, 1).unwrap(), 1);
        // A length running past the end, a truncated varint, an unused wire type.
        assert!(count_field(&[0x12, 0x05, 0x00], 2).is_err());
        assert!(count_field(&[0x08, 0x80], 1).is_err());
        assert!(count_field(&[0x0b], 1).is_err());
    }

    #[test]
    fn frame_is_one_uncompressed_message() {
        assert_eq!(frame(&[0, 0, 0, 0, 2, 7, 8]).unwrap(), &[7, 8]);
        assert!(frame(&[1, 0, 0, 0, 0])
            .unwrap_err()
            .to_string()
            .contains("compressed"));
        assert!(frame(&[0, 0, 0, 0, 3, 7, 8]).is_err());
        assert!(frame(&[0, 0]).is_err());
    }
}
