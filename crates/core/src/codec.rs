//! The versioned binary encoding of what travels and what is kept: [`ParamTree`],
//! [`TrainIns`], [`TrainRes`], [`EvalIns`], [`EvalRes`], [`LocalState`], and the steps of a
//! protocol exchange ([`ExchangeIns`] and the client's answer). Checkpoints use it; the
//! network grid sends the same bytes.
//!
//! A frame is `b"FDPC"`, the format version (`u16`, little-endian), the kind of value
//! (`u8`), a reserved `0` byte, then the body. Numbers are little-endian; buffers of
//! `f32` are a `u64` count and the raw values; strings and byte strings are a `u64`
//! length and the bytes; typed settings ([`RatePlan`], optimiser states) and every
//! extension payload are CBOR byte strings. Extensions are written as `(name, bytes)`
//! pairs in name order and decoded through a [`Registry`].
//!
//! Decoding never panics and never allocates more than a bounded multiple of the input:
//! every length prefix is checked against the bytes that remain before anything is
//! reserved, and every CBOR byte string is checked to hold each item its arrays and maps
//! claim before serde reserves room for them. The one exception is a reply's layout-only
//! delta, decoded to a zero tree as large as its layout: [`decode_train_res_within`]
//! bounds it by the model's size. A malformed, truncated or foreign-version input is an
//! [`crate::Error::Decode`] that says what was being read and why it failed. Every
//! decoder is fuzzed with a million random and mutated inputs, with the built-in payloads,
//! in `crates/algos/tests/codec_fuzz.rs` (docs/network.md, "Fuzzing"). See
//! `docs/arch/0008-extensions-and-codec.md`.

use crate::ext::{Extensions, Registry};
use crate::protocol::{
    ClientInfo, EvalIns, EvalRes, ExchangeIns, LocalState, PersonalEval, TrainIns, TrainReport,
    TrainRes,
};
use crate::{EvalStats, RatePlan};
use fedpace_params::{ParamSpec, ParamTree};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"FDPC";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A [`ParamTree`].
    ParamTree = 1,
    /// A [`TrainIns`].
    TrainIns = 2,
    /// A [`TrainRes`].
    TrainRes = 3,
    /// An [`EvalIns`].
    EvalIns = 4,
    /// An [`EvalRes`].
    EvalRes = 5,
    /// A [`LocalState`].
    LocalState = 6,
    /// An [`ExchangeIns`].
    ExchangeIns = 7,
    /// A client's answer to an [`ExchangeIns`] (its [`Extensions`]).
    ExchangeRes = 8,
    /// A [`ClientInfo`]: what a client reports about itself at registration.
    ClientInfo = 16,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::ParamTree,
            2 => Kind::TrainIns,
            3 => Kind::TrainRes,
            4 => Kind::EvalIns,
            5 => Kind::EvalRes,
            6 => Kind::LocalState,
            7 => Kind::ExchangeIns,
            8 => Kind::ExchangeRes,
            16 => Kind::ClientInfo,
            _ => return None,
        })
    }
}

fn err(msg: impl Into<String>) -> crate::Error {
    crate::Error::Decode(msg.into())
}

/// Appends values to a buffer.
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn frame(kind: Kind) -> Self {
        Self::frame_for(kind, 0)
    }
    /// A frame with room for `values` f32s besides a few KB of layout and fields, so a
    /// large model or update is not copied by the buffer growing.
    fn frame_for(kind: Kind, values: usize) -> Self {
        let mut out = Vec::with_capacity(4096 + 4 * values);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(kind as u8);
        out.push(0);
        Self { out }
    }
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.out.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn f32s(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        // Little-endian f32s are their own encoding: one copy (a model update is written
        // once per client and round, docs/network.md).
        #[cfg(target_endian = "little")]
        {
            // SAFETY: the slice covers exactly `v`'s memory; f32 has no padding bytes and
            // any byte may be read as a u8.
            let bytes =
                unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), size_of_val(v)) };
            self.out.extend_from_slice(bytes);
        }
        #[cfg(not(target_endian = "little"))]
        {
            let at = self.out.len();
            self.out.resize(at + 4 * v.len(), 0);
            for (d, x) in self.out[at..].chunks_exact_mut(4).zip(v) {
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
    }
    fn cbor<T: Serialize>(&mut self, what: &str, v: &T) -> crate::Result<()> {
        let mut b = Vec::new();
        ciborium::into_writer(v, &mut b)
            .map_err(|e| crate::Error::Backend(format!("encoding {what}: {e}")))?;
        self.bytes(&b);
        Ok(())
    }
    fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.u32(x);
            }
            None => self.u8(0),
        }
    }
    fn ext(&mut self, what: &str, e: &Extensions) -> crate::Result<()> {
        let entries = e
            .encode_entries()
            .map_err(|m| crate::Error::Backend(format!("encoding {what}: {m}")))?;
        self.u32(entries.len() as u32);
        for (name, b) in entries {
            self.str(name);
            self.bytes(&b);
        }
        Ok(())
    }
    fn spec(&mut self, s: &ParamSpec) {
        self.u32(s.entries().len() as u32);
        for e in s.entries() {
            self.str(&e.name);
            self.u32(e.shape.len() as u32);
            for d in &e.shape {
                self.u64(*d as u64);
            }
            self.str(&s.groups()[e.group]);
        }
    }
    fn tree(&mut self, t: &ParamTree) {
        self.spec(t.spec());
        self.f32s(t.as_slice());
    }
    /// A tree whose values are all +0.0 as its layout and no values (a reply whose update
    /// travels in a payload instead: compressed, or masked under secure aggregation).
    fn tree_or_zero(&mut self, t: &ParamTree) {
        if t.as_slice().iter().all(|v| v.to_bits() == 0) {
            self.spec(t.spec());
            self.u64(0);
        } else {
            self.tree(t);
        }
    }
    /// [`Writer::tree_or_zero`] without the values: writes the layout and the count,
    /// returns the bytes the values would take.
    fn tree_or_zero_len(&mut self, t: &ParamTree) -> usize {
        self.spec(t.spec());
        if t.as_slice().iter().all(|v| v.to_bits() == 0) {
            self.u64(0);
            0
        } else {
            self.u64(t.as_slice().len() as u64);
            4 * t.as_slice().len()
        }
    }
    fn stats(&mut self, s: &EvalStats) {
        self.f64(s.loss_sum);
        self.u64(s.correct);
        self.u64(s.count);
    }
}

/// Reads values from a slice; every read checks the bytes that remain.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: &'static str,
}

impl<'a> Reader<'a> {
    fn frame(buf: &'a [u8], want: Kind, kind: &'static str) -> crate::Result<Self> {
        if buf.len() < 8 {
            return Err(err(format!(
                "{kind}: {} bytes is shorter than a frame header (8)",
                buf.len()
            )));
        }
        if buf[..4] != MAGIC {
            return Err(err(format!(
                "{kind}: not a fedpace frame (starts with {:02x?}, expected \"FDPC\")",
                &buf[..4]
            )));
        }
        let version = u16::from_le_bytes([buf[4], buf[5]]);
        if version != FORMAT_VERSION {
            return Err(err(format!(
                "{kind}: format version {version}, this build reads version {FORMAT_VERSION}"
            )));
        }
        match Kind::from_u8(buf[6]) {
            Some(k) if k == want => {}
            Some(k) => return Err(err(format!("{kind}: the frame holds a {k:?}"))),
            None => return Err(err(format!("{kind}: unknown frame kind {}", buf[6]))),
        }
        if buf[7] != 0 {
            return Err(err(format!(
                "{kind}: reserved header byte is {}, expected 0",
                buf[7]
            )));
        }
        Ok(Self { buf, pos: 8, kind })
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> crate::Result<&'a [u8]> {
        if n > self.left() {
            return Err(err(format!(
                "{}: truncated at byte {} reading {what} (needs {n} bytes, {} left)",
                self.kind,
                self.pos,
                self.left()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> crate::Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> crate::Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> crate::Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn f32(&mut self, what: &str) -> crate::Result<f32> {
        Ok(f32::from_bits(self.u32(what)?))
    }
    fn f64(&mut self, what: &str) -> crate::Result<f64> {
        Ok(f64::from_bits(self.u64(what)?))
    }

    /// A length prefix, checked to fit in what is left when each item takes at least
    /// `item` bytes.
    fn len(&mut self, item: usize, what: &str) -> crate::Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let need = n.checked_mul(item.max(1) as u64);
        match need {
            Some(b) if b <= self.left() as u64 => Ok(n as usize),
            _ => Err(err(format!(
                "{}: {what} at byte {at} claims {n} items of {item} bytes, only {} bytes left",
                self.kind,
                self.left()
            ))),
        }
    }
    fn bytes(&mut self, what: &str) -> crate::Result<&'a [u8]> {
        let n = self.len(1, what)?;
        self.take(n, what)
    }
    fn str(&mut self, what: &str) -> crate::Result<&'a str> {
        let at = self.pos;
        let b = self.bytes(what)?;
        std::str::from_utf8(b)
            .map_err(|_| err(format!("{}: {what} at byte {at} is not UTF-8", self.kind)))
    }
    fn f32s(&mut self, what: &str) -> crate::Result<Vec<f32>> {
        let n = self.len(4, what)?;
        let b = self.take(4 * n, what)?;
        #[cfg(target_endian = "little")]
        {
            let mut out: Vec<f32> = Vec::with_capacity(n);
            // SAFETY: `b` holds exactly 4 × n bytes and `out` has room for n f32s (4 × n
            // bytes, not overlapping `b`); every bit pattern is a valid f32, so after the
            // copy the first n elements are initialised.
            unsafe {
                std::ptr::copy_nonoverlapping(b.as_ptr(), out.as_mut_ptr().cast::<u8>(), b.len());
                out.set_len(n);
            }
            Ok(out)
        }
        #[cfg(not(target_endian = "little"))]
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    fn bool(&mut self, what: &str) -> crate::Result<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(err(format!(
                "{}: {what} at byte {} is {b}, expected 0 or 1",
                self.kind,
                self.pos - 1
            ))),
        }
    }
    fn opt_u32(&mut self, what: &str) -> crate::Result<Option<u32>> {
        Ok(if self.bool(what)? {
            Some(self.u32(what)?)
        } else {
            None
        })
    }
    fn cbor<T: DeserializeOwned>(&mut self, what: &str) -> crate::Result<T> {
        let at = self.pos;
        let b = self.bytes(what)?;
        check_cbor(b).map_err(|e| err(format!("{}: {what} at byte {at}: CBOR {e}", self.kind)))?;
        ciborium::from_reader(b)
            .map_err(|e| err(format!("{}: {what} at byte {at}: {e}", self.kind)))
    }
    fn ext(&mut self, what: &str, registry: &Registry) -> crate::Result<Extensions> {
        let n = self.u32(what)? as usize;
        let mut out = Extensions::new();
        let mut last: Option<&str> = None;
        for _ in 0..n {
            let at = self.pos;
            let name = self.str(what)?;
            if last.is_some_and(|l| l >= name) {
                return Err(err(format!(
                    "{}: {what} at byte {at}: extension {name:?} out of order or repeated",
                    self.kind
                )));
            }
            last = Some(name);
            let b = self.bytes(what)?;
            check_cbor(b).map_err(|e| {
                err(format!(
                    "{}: {what} at byte {at}: extension {name:?}: CBOR {e}",
                    self.kind
                ))
            })?;
            let p = registry
                .decode(name, b)
                .map_err(|e| err(format!("{}: {what} at byte {at}: {e}", self.kind)))?;
            out.insert_erased(p);
        }
        Ok(out)
    }
    fn spec(&mut self) -> crate::Result<Arc<ParamSpec>> {
        // Each tensor takes at least 8 + 4 + 8 bytes.
        let n = self.u32("spec.tensors")? as usize;
        if n.saturating_mul(20) > self.left() {
            return Err(err(format!(
                "{}: spec claims {n} tensors, only {} bytes left",
                self.kind,
                self.left()
            )));
        }
        let mut b = ParamSpec::builder();
        let mut total: u64 = 0;
        for _ in 0..n {
            let name = self.str("spec.name")?.to_string();
            let dims = self.u32("spec.shape")? as usize;
            if dims.saturating_mul(8) > self.left() {
                return Err(err(format!(
                    "{}: tensor {name:?} claims {dims} dimensions, only {} bytes left",
                    self.kind,
                    self.left()
                )));
            }
            let mut shape = Vec::with_capacity(dims);
            let mut len: u64 = 1;
            for _ in 0..dims {
                let d = self.u64("spec.shape")?;
                len = len.checked_mul(d).ok_or_else(|| {
                    err(format!("{}: tensor {name:?}: shape overflows", self.kind))
                })?;
                shape.push(usize::try_from(d).map_err(|_| {
                    err(format!(
                        "{}: tensor {name:?}: dimension {d} too large",
                        self.kind
                    ))
                })?);
            }
            total = total
                .checked_add(len)
                .ok_or_else(|| err(format!("{}: spec size overflows", self.kind)))?;
            let group = self.str("spec.group")?.to_string();
            b = b.add(&name, &shape, &group);
        }
        let _ = total;
        b.build()
            .map(Arc::new)
            .map_err(|e| err(format!("{}: spec: {e}", self.kind)))
    }
    fn tree(&mut self) -> crate::Result<ParamTree> {
        let spec = self.spec()?;
        let v = self.f32s("values")?;
        ParamTree::from_vec(spec, v).map_err(|e| err(format!("{}: {e}", self.kind)))
    }
    /// What [`Writer::tree_or_zero`] wrote: no values stand for all zeros. A layout of
    /// more than `max_values` values is refused before anything is allocated for them:
    /// the zero tree is the one value this codec builds larger than its input.
    fn tree_or_zero(&mut self, max_values: usize) -> crate::Result<ParamTree> {
        let spec = self.spec()?;
        if spec.total_len() > max_values {
            return Err(err(format!(
                "{}: the layout has {} values, more than the {max_values} expected",
                self.kind,
                spec.total_len()
            )));
        }
        let v = self.f32s("values")?;
        if v.is_empty() {
            return Ok(ParamTree::zeros(spec));
        }
        ParamTree::from_vec(spec, v).map_err(|e| err(format!("{}: {e}", self.kind)))
    }
    fn stats(&mut self, what: &str) -> crate::Result<EvalStats> {
        Ok(EvalStats {
            loss_sum: self.f64(what)?,
            correct: self.u64(what)?,
            count: self.u64(what)?,
        })
    }
    fn finish(self) -> crate::Result<()> {
        if self.left() == 0 {
            Ok(())
        } else {
            Err(err(format!(
                "{}: {} trailing bytes after the value",
                self.kind,
                self.left()
            )))
        }
    }
}

/// The deepest nesting of CBOR arrays and maps [`check_cbor`] reads (ciborium's own
/// recursion limit).
const CBOR_DEPTH: usize = 256;

/// Checks, without allocating, that `b` starts with one well-formed CBOR item whose
/// arrays and maps hold every item they claim.
///
/// serde reserves room for as many elements as a sequence's head claims (up to 1 MiB a
/// sequence, at every level of nesting), so a few bytes claiming 2³² elements would make
/// decoding reserve megabytes. Once every claimed item is known to be present, each
/// reservation is at most one element per item actually in the input.
fn check_cbor(b: &[u8]) -> Result<(), String> {
    cbor_item(b, &mut 0, 0)
}

/// Reads a CBOR head at `pos`, skipping tags: the major type and its argument (`None`
/// for an indefinite length or a break).
fn cbor_head(b: &[u8], pos: &mut usize) -> Result<(u8, Option<u64>), String> {
    loop {
        let at = *pos;
        let first = *b.get(at).ok_or_else(|| format!("truncated at byte {at}"))?;
        *pos += 1;
        let (major, info) = (first >> 5, first & 0x1f);
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24..=27 => {
                let n = 1usize << (info - 24);
                let v = b
                    .get(*pos..*pos + n)
                    .ok_or_else(|| format!("truncated at byte {at}"))?;
                *pos += n;
                Some(v.iter().fold(0u64, |a, &x| a << 8 | u64::from(x)))
            }
            31 => None,
            _ => return Err(format!("reserved head {first:#04x} at byte {at}")),
        };
        match (major, arg) {
            (6, Some(_)) => continue,
            (0 | 1 | 6, None) => return Err(format!("indefinite head {first:#04x} at byte {at}")),
            _ => return Ok((major, arg)),
        }
    }
}

/// Reads one CBOR item at `pos`, inside `depth` arrays and maps.
fn cbor_item(b: &[u8], pos: &mut usize, depth: usize) -> Result<(), String> {
    let at = *pos;
    let (major, arg) = cbor_head(b, pos)?;
    let left = (b.len() - *pos) as u64;
    match (major, arg) {
        (0 | 1 | 7, Some(_)) => Ok(()),
        (7, None) => Err(format!("break outside a container at byte {at}")),
        (2 | 3, Some(n)) if n <= left => {
            *pos += n as usize;
            Ok(())
        }
        (2 | 3, None) => loop {
            // Chunks of definite length and the same major type, then a break.
            if b.get(*pos) == Some(&0xff) {
                *pos += 1;
                return Ok(());
            }
            let chunk = *pos;
            match cbor_head(b, pos)? {
                (m, Some(n)) if m == major && n <= (b.len() - *pos) as u64 => *pos += n as usize,
                _ => return Err(format!("bad string chunk at byte {chunk}")),
            }
        },
        (4 | 5, _) if depth >= CBOR_DEPTH => {
            Err(format!("nested more than {CBOR_DEPTH} deep at byte {at}"))
        }
        (4 | 5, Some(n)) => {
            // Every item takes at least a byte.
            let items = if major == 5 {
                n.checked_mul(2)
            } else {
                Some(n)
            };
            match items {
                Some(k) if k <= left => {
                    for _ in 0..k {
                        cbor_item(b, pos, depth + 1)?;
                    }
                    Ok(())
                }
                _ => Err(format!(
                    "container at byte {at} claims {n} entries, only {left} bytes left"
                )),
            }
        }
        (4 | 5, None) => loop {
            if b.get(*pos) == Some(&0xff) {
                *pos += 1;
                return Ok(());
            }
            for _ in 0..=(major - 4) {
                cbor_item(b, pos, depth + 1)?;
            }
        },
        _ => Err(format!(
            "string at byte {at} claims {} bytes, only {left} left",
            arg.unwrap_or(0)
        )),
    }
}

/// Encodes a parameter tree (layout and values).
pub fn encode_params(t: &ParamTree) -> Vec<u8> {
    let mut w = Writer::frame_for(Kind::ParamTree, t.as_slice().len());
    w.tree(t);
    w.out
}

/// Decodes a parameter tree.
pub fn decode_params(b: &[u8]) -> crate::Result<ParamTree> {
    let mut r = Reader::frame(b, Kind::ParamTree, "ParamTree")?;
    let t = r.tree()?;
    r.finish()?;
    Ok(t)
}

fn write_report(w: &mut Writer, r: &TrainReport) -> crate::Result<()> {
    w.u32(r.steps);
    w.u64(r.rate_sum.len() as u64);
    for x in &r.rate_sum {
        w.f64(*x);
    }
    w.f32(r.loss_before);
    w.f32(r.loss_after);
    w.f32(r.train_loss);
    w.f64(r.update_norm);
    w.f64(r.grad_norm);
    w.ext("report.ext", &r.ext)
}

fn read_report(r: &mut Reader<'_>, reg: &Registry) -> crate::Result<TrainReport> {
    let steps = r.u32("report.steps")?;
    let n = r.len(8, "report.rate_sum")?;
    let mut rate_sum = Vec::with_capacity(n);
    for _ in 0..n {
        rate_sum.push(r.f64("report.rate_sum")?);
    }
    Ok(TrainReport {
        steps,
        rate_sum,
        loss_before: r.f32("report.loss_before")?,
        loss_after: r.f32("report.loss_after")?,
        train_loss: r.f32("report.train_loss")?,
        update_norm: r.f64("report.update_norm")?,
        grad_norm: r.f64("report.grad_norm")?,
        ext: r.ext("report.ext", reg)?,
    })
}

/// Encodes a train instruction.
pub fn encode_train_ins(i: &TrainIns) -> crate::Result<Vec<u8>> {
    let mut w = Writer::frame_for(Kind::TrainIns, i.params.as_slice().len());
    w.u32(i.round);
    w.u64(i.seed);
    w.cbor("plan", &i.plan)?;
    w.tree(&i.params);
    w.ext("ext", &i.ext)?;
    Ok(w.out)
}

/// The bytes of an encoded message by part (see [`train_ins_parts`],
/// [`train_res_parts`]); `total` is the whole frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parts {
    /// The whole frame.
    pub total: usize,
    /// The parameters: the model of an instruction, the update of a reply (layout, count
    /// and values).
    pub params: usize,
    /// The rate plan (instructions).
    pub plan: usize,
    /// The extension payloads (of a reply: its own and its report's).
    pub payloads: usize,
}

/// [`encode_train_ins`]'s output by part, computed without copying the model's values.
pub fn train_ins_parts(i: &TrainIns) -> crate::Result<Parts> {
    let mut w = Writer::frame(Kind::TrainIns);
    w.u32(i.round);
    w.u64(i.seed);
    let at = w.out.len();
    w.cbor("plan", &i.plan)?;
    let plan = w.out.len() - at;
    let at = w.out.len();
    w.spec(i.params.spec());
    w.u64(i.params.as_slice().len() as u64);
    let values = 4 * i.params.as_slice().len();
    let params = w.out.len() - at + values;
    let at = w.out.len();
    w.ext("ext", &i.ext)?;
    let payloads = w.out.len() - at;
    Ok(Parts {
        total: w.out.len() + values,
        params,
        plan,
        payloads,
    })
}

/// The length of [`encode_train_ins`]'s output, computed without copying the model's
/// values (the communication figures count it for every client).
pub fn train_ins_len(i: &TrainIns) -> crate::Result<usize> {
    Ok(train_ins_parts(i)?.total)
}

/// Decodes a train instruction.
pub fn decode_train_ins(b: &[u8], reg: &Registry) -> crate::Result<TrainIns> {
    let mut r = Reader::frame(b, Kind::TrainIns, "TrainIns")?;
    let round = r.u32("round")?;
    let seed = r.u64("seed")?;
    let plan: RatePlan = r.cbor("plan")?;
    let params = Arc::new(r.tree()?);
    let ext = r.ext("ext", reg)?;
    r.finish()?;
    Ok(TrainIns {
        round,
        params,
        plan,
        seed,
        ext,
    })
}

/// Encodes a client's reply to a train instruction.
pub fn encode_train_res(res: &TrainRes) -> crate::Result<Vec<u8>> {
    let mut w = Writer::frame_for(Kind::TrainRes, res.delta.as_slice().len());
    w.u64(res.num_examples);
    w.tree_or_zero(&res.delta);
    write_report(&mut w, &res.report)?;
    w.ext("ext", &res.ext)?;
    Ok(w.out)
}

/// [`encode_train_res`]'s output by part, computed without copying the update's values.
pub fn train_res_parts(res: &TrainRes) -> crate::Result<Parts> {
    let mut w = Writer::frame(Kind::TrainRes);
    w.u64(res.num_examples);
    let at = w.out.len();
    let values = w.tree_or_zero_len(&res.delta);
    let params = w.out.len() - at + values;
    write_report(&mut w, &res.report)?;
    let mut report_ext = Writer { out: Vec::new() };
    report_ext.ext("report.ext", &res.report.ext)?;
    let at = w.out.len();
    w.ext("ext", &res.ext)?;
    let payloads = w.out.len() - at + report_ext.out.len();
    Ok(Parts {
        total: w.out.len() + values,
        params,
        plan: 0,
        payloads,
    })
}

/// The length of [`encode_train_res`]'s output, computed without copying the update's
/// values: what a round counts as the bytes uploaded, for every reply.
pub fn train_res_len(res: &TrainRes) -> crate::Result<usize> {
    Ok(train_res_parts(res)?.total)
}

/// The most values a decoded tree may have: 4 bytes each must fit in `isize::MAX`.
const MAX_TREE_VALUES: usize = isize::MAX as usize / 4;

/// Decodes a client's reply to a train instruction.
///
/// A reply whose update travels in a payload (compressed, or masked) carries its delta as
/// a layout alone, decoded to a zero tree as large as the layout says: the one
/// allocation that the input's length does not bound. Here only a layout beyond
/// `isize::MAX` bytes is refused; a smaller one that memory cannot hold aborts the
/// process. Whoever decodes replies from clients it does not trust should use
/// [`decode_train_res_within`] with its model's size.
pub fn decode_train_res(b: &[u8], reg: &Registry) -> crate::Result<TrainRes> {
    decode_train_res_within(b, reg, MAX_TREE_VALUES)
}

/// [`decode_train_res`] for a model of `max_values` parameters: a delta whose layout has
/// more values is refused before they are allocated, so decoding allocates at most
/// `4 × max_values` bytes beyond a bounded multiple of the input.
pub fn decode_train_res_within(
    b: &[u8],
    reg: &Registry,
    max_values: usize,
) -> crate::Result<TrainRes> {
    let mut r = Reader::frame(b, Kind::TrainRes, "TrainRes")?;
    let num_examples = r.u64("num_examples")?;
    let delta = r.tree_or_zero(max_values)?;
    let report = read_report(&mut r, reg)?;
    let ext = r.ext("ext", reg)?;
    r.finish()?;
    Ok(TrainRes {
        delta,
        num_examples,
        report,
        ext,
    })
}

/// Encodes an evaluation instruction.
pub fn encode_eval_ins(i: &EvalIns) -> crate::Result<Vec<u8>> {
    let mut w = Writer::frame_for(Kind::EvalIns, i.params.as_slice().len());
    w.u32(i.round);
    w.u64(i.seed);
    w.u32(i.finetune_steps);
    w.opt_u32(i.max_test_samples);
    w.u8(match i.personalized {
        PersonalEval::Finetune => 0,
        PersonalEval::PersonalModel => 1,
    });
    w.cbor("plan", &i.plan)?;
    w.tree(&i.params);
    w.ext("ext", &i.ext)?;
    Ok(w.out)
}

/// Decodes an evaluation instruction.
pub fn decode_eval_ins(b: &[u8], reg: &Registry) -> crate::Result<EvalIns> {
    let mut r = Reader::frame(b, Kind::EvalIns, "EvalIns")?;
    let round = r.u32("round")?;
    let seed = r.u64("seed")?;
    let finetune_steps = r.u32("finetune_steps")?;
    let max_test_samples = r.opt_u32("max_test_samples")?;
    let personalized = match r.u8("personalized")? {
        0 => PersonalEval::Finetune,
        1 => PersonalEval::PersonalModel,
        x => {
            return Err(err(format!(
                "EvalIns: personalized is {x}, expected 0 (finetune) or 1 (personal-model)"
            )))
        }
    };
    let plan: RatePlan = r.cbor("plan")?;
    let params = Arc::new(r.tree()?);
    let ext = r.ext("ext", reg)?;
    r.finish()?;
    Ok(EvalIns {
        round,
        params,
        finetune_steps,
        max_test_samples,
        plan,
        seed,
        personalized,
        ext,
    })
}

/// Encodes an evaluation result.
pub fn encode_eval_res(e: &EvalRes) -> Vec<u8> {
    let mut w = Writer::frame(Kind::EvalRes);
    w.stats(&e.global);
    match &e.personalized {
        Some(p) => {
            w.u8(1);
            w.stats(p);
        }
        None => w.u8(0),
    }
    match &e.validation {
        Some(v) => {
            w.u8(1);
            w.stats(&v.global);
            match &v.personalized {
                Some(p) => {
                    w.u8(1);
                    w.stats(p);
                }
                None => w.u8(0),
            }
        }
        None => w.u8(0),
    }
    w.out
}

/// Decodes an evaluation result.
pub fn decode_eval_res(b: &[u8]) -> crate::Result<EvalRes> {
    let mut r = Reader::frame(b, Kind::EvalRes, "EvalRes")?;
    let global = r.stats("global")?;
    let personalized = if r.bool("personalized")? {
        Some(r.stats("personalized")?)
    } else {
        None
    };
    let validation = if r.bool("validation")? {
        let global = r.stats("validation.global")?;
        let personalized = if r.bool("validation.personalized")? {
            Some(r.stats("validation.personalized")?)
        } else {
            None
        };
        Some(crate::SplitStats {
            global,
            personalized,
        })
    } else {
        None
    };
    r.finish()?;
    Ok(EvalRes {
        global,
        personalized,
        validation,
    })
}

/// Encodes a client's local state.
pub fn encode_local_state(s: &LocalState) -> crate::Result<Vec<u8>> {
    let mut w = Writer::frame(Kind::LocalState);
    w.u32(s.rounds_trained);
    w.u64(s.steps_done);
    match &s.optimizer {
        Some(o) => {
            w.u8(1);
            w.cbor("optimizer", o)?;
        }
        None => w.u8(0),
    }
    w.ext("ext", &s.ext)?;
    Ok(w.out)
}

/// Decodes a client's local state.
pub fn decode_local_state(b: &[u8], reg: &Registry) -> crate::Result<LocalState> {
    let mut r = Reader::frame(b, Kind::LocalState, "LocalState")?;
    let rounds_trained = r.u32("rounds_trained")?;
    let steps_done = r.u64("steps_done")?;
    let optimizer = if r.bool("optimizer")? {
        Some(r.cbor("optimizer")?)
    } else {
        None
    };
    let ext = r.ext("ext", reg)?;
    r.finish()?;
    Ok(LocalState {
        rounds_trained,
        steps_done,
        optimizer,
        ext,
    })
}

/// Encodes one step of a protocol exchange (secure aggregation's messages).
pub fn encode_exchange_ins(i: &ExchangeIns) -> crate::Result<Vec<u8>> {
    let mut w = Writer::frame(Kind::ExchangeIns);
    w.u32(i.round);
    w.u64(i.seed);
    w.ext("msg", &i.msg)?;
    Ok(w.out)
}

/// Decodes one step of a protocol exchange.
pub fn decode_exchange_ins(b: &[u8], reg: &Registry) -> crate::Result<ExchangeIns> {
    let mut r = Reader::frame(b, Kind::ExchangeIns, "ExchangeIns")?;
    let round = r.u32("round")?;
    let seed = r.u64("seed")?;
    let msg = r.ext("msg", reg)?;
    r.finish()?;
    Ok(ExchangeIns { round, seed, msg })
}

/// Encodes a client's answer to an exchange step.
pub fn encode_exchange_res(e: &Extensions) -> crate::Result<Vec<u8>> {
    let mut w = Writer::frame(Kind::ExchangeRes);
    w.ext("msg", e)?;
    Ok(w.out)
}

/// Decodes a client's answer to an exchange step.
pub fn decode_exchange_res(b: &[u8], reg: &Registry) -> crate::Result<Extensions> {
    let mut r = Reader::frame(b, Kind::ExchangeRes, "ExchangeRes")?;
    let msg = r.ext("msg", reg)?;
    r.finish()?;
    Ok(msg)
}

/// The most bytes of a device class name in a [`ClientInfo`] frame.
pub const MAX_DEVICE_BYTES: usize = 256;

/// Encodes what a client reports about itself when it registers over the network
/// (docs/network.md, "Client metadata"): its id, sizes, device class and the payloads
/// it shares.
pub fn encode_client_info(c: &ClientInfo) -> crate::Result<Vec<u8>> {
    let mut w = Writer::frame(Kind::ClientInfo);
    w.u64(c.id);
    w.u64(c.num_train);
    w.u64(c.num_test);
    match &c.device {
        Some(d) => {
            w.u8(1);
            w.str(d);
        }
        None => w.u8(0),
    }
    w.ext("metadata", &c.metadata)?;
    // Kept per client for a whole run (a node's registration, the server's pool): not
    // the frame's few KB of headroom, which for 100,000 clients was 410 MB.
    let mut out = w.out;
    out.shrink_to_fit();
    Ok(out)
}

/// Decodes a [`ClientInfo`]; a device class over [`MAX_DEVICE_BYTES`] is refused.
pub fn decode_client_info(b: &[u8], reg: &Registry) -> crate::Result<ClientInfo> {
    let mut r = Reader::frame(b, Kind::ClientInfo, "ClientInfo")?;
    let id = r.u64("id")?;
    let num_train = r.u64("num_train")?;
    let num_test = r.u64("num_test")?;
    let device = if r.bool("device")? {
        let d = r.str("device")?;
        if d.len() > MAX_DEVICE_BYTES {
            return Err(err(format!(
                "ClientInfo: device: {} bytes; expected at most {MAX_DEVICE_BYTES}",
                d.len()
            )));
        }
        Some(d.to_string())
    } else {
        None
    };
    let metadata = r.ext("metadata", reg)?;
    r.finish()?;
    Ok(ClientInfo {
        id,
        num_train,
        num_test,
        device,
        metadata,
    })
}

/// Encodes any serde value as CBOR (the encoding of payloads and of stage states).
pub fn to_cbor<T: Serialize>(v: &T) -> crate::Result<Vec<u8>> {
    let mut b = Vec::new();
    ciborium::into_writer(v, &mut b).map_err(|e| crate::Error::Backend(e.to_string()))?;
    Ok(b)
}

/// Decodes a CBOR value; `what` names it in the error.
pub fn from_cbor<T: DeserializeOwned>(b: &[u8], what: &str) -> crate::Result<T> {
    ciborium::from_reader(b).map_err(|e| err(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext::Payload;
    use crate::protocol::LocalWork;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Down {
        #[serde(with = "crate::ext::f32s::arc")]
        control: Arc<Vec<f32>>,
        option: u8,
    }
    impl Payload for Down {
        const NAME: &'static str = "test-down";
    }
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Note(String);
    impl Payload for Note {
        const NAME: &'static str = "test-note";
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register::<Down>().unwrap();
        r.register::<Note>().unwrap();
        r
    }

    fn tree() -> ParamTree {
        let spec = Arc::new(
            ParamSpec::builder()
                .add("fc.weight", &[2, 3], "body")
                .add("fc.bias", &[2], "head")
                .build()
                .unwrap(),
        );
        ParamTree::from_vec(spec, (0..8).map(|i| i as f32 * 0.25 - 1.0).collect()).unwrap()
    }

    fn plan() -> RatePlan {
        RatePlan {
            base_lr: 0.1,
            group_multipliers: vec![1.0, 2.0],
            schedule: Default::default(),
            work: LocalWork::Steps(3),
            max_steps: Some(2),
            batch_size: 4,
            optimizer: fedpace_optim::OptimizerSpec::Adam {
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            state_mode: fedpace_optim::StateMode::Keep,
            prox_mu: 0.5,
        }
    }

    fn ins() -> TrainIns {
        TrainIns {
            round: 3,
            params: Arc::new(tree()),
            plan: plan(),
            seed: 42,
            ext: Extensions::new()
                .with(Down {
                    control: Arc::new(vec![1.5, f32::MIN_POSITIVE, -0.0]),
                    option: 2,
                })
                .with(Note("héllo".into())),
        }
    }

    fn res() -> TrainRes {
        TrainRes {
            delta: tree(),
            num_examples: 17,
            report: TrainReport {
                steps: 3,
                rate_sum: vec![0.3, 0.6],
                loss_before: 2.0,
                loss_after: 1.0,
                train_loss: 1.5,
                update_norm: 0.7,
                grad_norm: 3.25,
                ext: Extensions::new().with(Note("report".into())),
            },
            ext: Extensions::new().with(Note("reply".into())),
        }
    }

    fn state() -> LocalState {
        LocalState {
            rounds_trained: 4,
            steps_done: 99,
            optimizer: Some(fedpace_optim::State {
                count: 7,
                buffers: vec![vec![0.1, 0.2]],
                children: vec![fedpace_optim::State::default()],
            }),
            ext: Extensions::new().with(Note("state".into())),
        }
    }

    fn eval_ins() -> EvalIns {
        EvalIns {
            round: 9,
            params: Arc::new(tree()),
            finetune_steps: 5,
            max_test_samples: Some(100),
            plan: plan(),
            seed: 1,
            personalized: PersonalEval::PersonalModel,
            ext: Extensions::new().with(Note("eval".into())),
        }
    }

    /// Decodes and reports success.
    type Decodes = fn(&[u8], &Registry) -> bool;

    /// Every encoding of the test values, with a decoder that only reports success.
    fn encodings() -> Vec<(&'static str, Vec<u8>, Decodes)> {
        vec![
            ("params", encode_params(&tree()), |b, _| {
                decode_params(b).is_ok()
            }),
            ("train_ins", encode_train_ins(&ins()).unwrap(), |b, r| {
                decode_train_ins(b, r).is_ok()
            }),
            ("train_res", encode_train_res(&res()).unwrap(), |b, r| {
                decode_train_res(b, r).is_ok()
            }),
            ("eval_ins", encode_eval_ins(&eval_ins()).unwrap(), |b, r| {
                decode_eval_ins(b, r).is_ok()
            }),
            (
                "eval_res",
                encode_eval_res(&EvalRes {
                    global: EvalStats {
                        loss_sum: 1.5,
                        correct: 3,
                        count: 4,
                    },
                    personalized: None,
                    validation: Some(crate::SplitStats {
                        global: EvalStats::default(),
                        personalized: Some(EvalStats::default()),
                    }),
                }),
                |b, _| decode_eval_res(b).is_ok(),
            ),
            (
                "local_state",
                encode_local_state(&state()).unwrap(),
                |b, r| decode_local_state(b, r).is_ok(),
            ),
        ]
    }

    /// A reply whose update travels in a payload (compressed or masked) carries a zero
    /// delta: its frame holds the layout and no values, and decodes to the zero tree; a
    /// delta with a single -0.0 keeps its values.
    #[test]
    fn zero_deltas_travel_as_layout_only() {
        let r = registry();
        let mut z = res();
        z.delta = ParamTree::zeros(tree().spec().clone());
        let dense = encode_train_res(&res()).unwrap().len();
        let b = encode_train_res(&z).unwrap();
        assert_eq!(dense - b.len(), 4 * tree().as_slice().len());
        assert_eq!(decode_train_res(&b, &r).unwrap().delta, z.delta);
        let mut neg = z.clone();
        neg.delta.as_mut_slice()[1] = -0.0;
        let back = decode_train_res(&encode_train_res(&neg).unwrap(), &r).unwrap();
        assert_eq!(back.delta.as_slice()[1].to_bits(), (-0.0f32).to_bits());
    }

    /// The lengths counted without encoding are the encoded lengths, for dense and zero
    /// updates and instructions with and without payloads.
    #[test]
    fn computed_lengths_equal_encoded_lengths() {
        let mut z = res();
        z.delta = ParamTree::zeros(tree().spec().clone());
        let mut bare = res();
        bare.ext = Extensions::new();
        bare.report.ext = Extensions::new();
        for r in [res(), z, bare] {
            assert_eq!(
                train_res_len(&r).unwrap(),
                encode_train_res(&r).unwrap().len()
            );
        }
        let mut plain = ins();
        plain.ext = Extensions::new();
        for i in [ins(), plain] {
            assert_eq!(
                train_ins_len(&i).unwrap(),
                encode_train_ins(&i).unwrap().len()
            );
        }
    }

    /// A client's self-description round-trips; an oversized device class and a
    /// payload the registry does not know are refused.
    #[test]
    fn client_info_round_trips_and_refuses_what_it_cannot_read() {
        let mut c = ClientInfo::new(7, 120, 30);
        c.device = Some("slow".into());
        c.metadata.insert(crate::LabelHistogram(vec![3, 0, 117]));
        let reg = Registry::new();
        let b = encode_client_info(&c).unwrap();
        assert_eq!(decode_client_info(&b, &reg).unwrap(), c);
        // Kept per client for a whole run: no headroom (it was 4 KB a client).
        assert!(
            b.capacity() < 2 * b.len(),
            "{} of {}",
            b.capacity(),
            b.len()
        );
        let bare = ClientInfo::new(0, 1, 0);
        let b = encode_client_info(&bare).unwrap();
        assert_eq!(decode_client_info(&b, &reg).unwrap(), bare);
        c.device = Some("x".repeat(MAX_DEVICE_BYTES + 1));
        let e = decode_client_info(&encode_client_info(&c).unwrap(), &reg).unwrap_err();
        assert!(e.to_string().contains("device: 257 bytes"), "{e}");
        let mut odd = ClientInfo::new(1, 1, 1);
        odd.metadata.insert(Note("x".into()));
        let e = decode_client_info(&encode_client_info(&odd).unwrap(), &reg).unwrap_err();
        assert!(e.to_string().contains("ClientInfo"), "{e}");
        for cut in 0..b.len() {
            assert!(decode_client_info(&b[..cut], &reg).is_err());
        }
    }

    #[test]
    fn every_value_round_trips_exactly() {
        let r = registry();
        assert_eq!(decode_params(&encode_params(&tree())).unwrap(), tree());
        let i = decode_train_ins(&encode_train_ins(&ins()).unwrap(), &r).unwrap();
        assert_eq!(
            (i.round, i.seed, &i.plan, i.params.as_ref(), &i.ext),
            (3, 42, &plan(), &tree(), &ins().ext)
        );
        // -0.0 and subnormals keep their bits.
        let c = &i.ext.get::<Down>().unwrap().control;
        assert_eq!(c[2].to_bits(), (-0.0f32).to_bits());
        let x = decode_train_res(&encode_train_res(&res()).unwrap(), &r).unwrap();
        assert_eq!(
            (&x.delta, x.num_examples, &x.report, &x.ext),
            (&res().delta, 17, &res().report, &res().ext)
        );
        assert_eq!(
            decode_local_state(&encode_local_state(&state()).unwrap(), &r).unwrap(),
            state()
        );
        let e = decode_eval_ins(&encode_eval_ins(&eval_ins()).unwrap(), &r).unwrap();
        assert_eq!(
            (
                e.round,
                e.finetune_steps,
                e.max_test_samples,
                e.personalized,
                &e.ext
            ),
            (
                9,
                5,
                Some(100),
                PersonalEval::PersonalModel,
                &eval_ins().ext
            )
        );
        let er = EvalRes {
            global: EvalStats {
                loss_sum: 0.5,
                correct: 1,
                count: 2,
            },
            personalized: Some(EvalStats::default()),
            validation: None,
        };
        assert_eq!(decode_eval_res(&encode_eval_res(&er)).unwrap(), er);
        let with_validation = EvalRes {
            validation: Some(crate::SplitStats {
                global: EvalStats {
                    loss_sum: 0.25,
                    correct: 2,
                    count: 3,
                },
                personalized: None,
            }),
            ..er
        };
        assert_eq!(
            decode_eval_res(&encode_eval_res(&with_validation)).unwrap(),
            with_validation
        );
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_value() {
        let r = registry();
        for (name, bytes, decode) in encodings() {
            assert!(decode(&bytes, &r), "{name} does not decode");
            for cut in 0..bytes.len() {
                assert!(!decode(&bytes[..cut], &r), "{name} cut at {cut} decoded");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(!decode(&longer, &r), "{name} with a trailing byte decoded");
        }
        let b = encode_params(&tree());
        let e = decode_params(&b[..b.len() - 3]).unwrap_err().to_string();
        assert!(e.starts_with("ParamTree: values at byte"), "{e}");
        let e = decode_params(&b[..10]).unwrap_err().to_string();
        assert_eq!(
            e,
            "ParamTree: truncated at byte 8 reading spec.tensors (needs 4 bytes, 2 left)"
        );
    }

    #[test]
    fn foreign_versions_kinds_and_magic_are_refused_with_what_differs() {
        let r = registry();
        let mut b = encode_train_ins(&ins()).unwrap();
        b[4] = 2;
        assert_eq!(
            decode_train_ins(&b, &r).unwrap_err().to_string(),
            "TrainIns: format version 2, this build reads version 1"
        );
        let b = encode_params(&tree());
        assert_eq!(
            decode_train_ins(&b, &r).unwrap_err().to_string(),
            "TrainIns: the frame holds a ParamTree"
        );
        let e = decode_params(b"PK\x03\x04....").unwrap_err().to_string();
        assert!(e.starts_with("ParamTree: not a fedpace frame"), "{e}");
        // An extension this build does not know.
        let e = decode_train_ins(&encode_train_ins(&ins()).unwrap(), &Registry::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown extension \"test-down\""), "{e}");
    }

    #[test]
    fn huge_length_prefixes_are_refused_before_allocating() {
        // A ParamTree whose value count claims 2^61 floats.
        let mut w = Writer::frame(Kind::ParamTree);
        w.spec(tree().spec());
        w.u64(1 << 61);
        let e = decode_params(&w.out).unwrap_err().to_string();
        assert!(e.contains("claims 2305843009213693952 items"), "{e}");
        // A spec claiming u32::MAX tensors.
        let mut w = Writer::frame(Kind::ParamTree);
        w.u32(u32::MAX);
        let e = decode_params(&w.out).unwrap_err().to_string();
        assert!(e.contains("claims 4294967295 tensors"), "{e}");
        // A tensor whose shape overflows.
        let mut w = Writer::frame(Kind::ParamTree);
        w.u32(1);
        w.str("w");
        w.u32(2);
        w.u64(u64::MAX);
        w.u64(4);
        w.str("body");
        w.f32s(&[]);
        let e = decode_params(&w.out).unwrap_err().to_string();
        assert!(e.contains("shape overflows"), "{e}");
    }

    /// A layout-only delta is decoded to a zero tree as large as its layout: one claiming
    /// more values than memory holds is refused (it made `ParamTree::zeros` abort), and
    /// `decode_train_res_within` refuses one larger than the model before allocating.
    #[test]
    fn layout_only_deltas_larger_than_expected_are_refused_before_allocating() {
        let r = registry();
        let layout_only = |shape: &[usize]| {
            let mut w = Writer::frame(Kind::TrainRes);
            w.u64(1);
            let spec = ParamSpec::builder()
                .add("w", shape, "body")
                .build()
                .unwrap();
            w.spec(&spec);
            w.u64(0);
            write_report(&mut w, &res().report).unwrap();
            w.ext("ext", &Extensions::new()).unwrap();
            w.out
        };
        let e = decode_train_res(&layout_only(&[1 << 31, 1 << 31]), &r)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the layout has 4611686018427387904 values"),
            "{e}"
        );
        let b = layout_only(&[1 << 20]);
        let e = decode_train_res_within(&b, &r, 8).unwrap_err().to_string();
        assert_eq!(
            e,
            "TrainRes: the layout has 1048576 values, more than the 8 expected"
        );
        assert_eq!(
            decode_train_res_within(&b, &r, 1 << 20)
                .unwrap()
                .delta
                .as_slice()
                .len(),
            1 << 20
        );
        let mut z = res();
        z.delta = ParamTree::zeros(tree().spec().clone());
        let b = encode_train_res(&z).unwrap();
        assert_eq!(decode_train_res_within(&b, &r, 8).unwrap().delta, z.delta);
        assert!(decode_train_res_within(&b, &r, 7).is_err());
    }

    /// CBOR is checked before serde sees it: every container must hold the items it
    /// claims (serde reserves room for as many as claimed), heads must be well formed,
    /// nesting is bounded; indefinite lengths, tags and floats are read.
    #[test]
    fn cbor_is_checked_before_serde_reserves_what_it_claims() {
        for ok in [
            &[0x00][..],
            &[0x83, 0x01, 0xf9, 0x3c, 0x00, 0x62, b'h', b'i'],
            &[0x9f, 0x01, 0x9f, 0xff, 0xff],
            &[0xbf, 0x61, b'a', 0x5f, 0x41, 0x00, 0x40, 0xff, 0xff],
            &[0xc2, 0x42, 0x01, 0x00],
            &[0xa1, 0x01, 0xfb, 0, 0, 0, 0, 0, 0, 0, 0, 0xee],
        ] {
            check_cbor(ok).unwrap_or_else(|e| panic!("{ok:02x?}: {e}"));
        }
        for (bad, why) in [
            (&[][..], "truncated at byte 0"),
            (
                &[0x9a, 0xff, 0xff, 0xff, 0xff, 0x00],
                "claims 4294967295 entries",
            ),
            (
                &[0xa2, 0x01, 0x02, 0x03],
                "claims 2 entries, only 3 bytes left",
            ),
            (
                &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                "string at byte 0",
            ),
            (&[0x82, 0x01, 0x19, 0x01], "truncated at byte 2"),
            (&[0x1c], "reserved head 0x1c"),
            (&[0xff], "break outside a container"),
            (&[0x1f], "indefinite head"),
            (&[0x5f, 0x61, b'a', 0xff], "bad string chunk at byte 1"),
            (&[0x9f, 0x01], "truncated at byte 2"),
        ] {
            let e = check_cbor(bad).unwrap_err();
            assert!(e.contains(why), "{bad:02x?}: {e}");
        }
        let deep = vec![0x81; 300];
        assert!(check_cbor(&deep)
            .unwrap_err()
            .contains("nested more than 256"));
        // Through a decoder: the frame, the extension and the offset are named.
        let mut w = Writer::frame(Kind::ExchangeRes);
        w.u32(1);
        w.str("test-down");
        w.bytes(&[
            0xa1, 0x67, b'c', b'o', b'n', b't', b'r', b'o', b'l', 0x9a, 0, 1, 0, 0,
        ]);
        let e = decode_exchange_res(&w.out, &registry())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "ExchangeRes: msg at byte 12: extension \"test-down\": CBOR container at byte 9 \
             claims 65536 entries, only 0 bytes left"
        );
    }

    #[test]
    fn values_that_do_not_fit_their_spec_are_refused() {
        let mut w = Writer::frame(Kind::ParamTree);
        w.spec(tree().spec());
        w.f32s(&[1.0; 7]);
        let e = decode_params(&w.out).unwrap_err().to_string();
        assert!(e.contains("7") && e.contains("8"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let r = registry();
            let _ = decode_params(&bytes);
            let _ = decode_train_ins(&bytes, &r);
            let _ = decode_train_res(&bytes, &r);
            let _ = decode_eval_ins(&bytes, &r);
            let _ = decode_eval_res(&bytes);
            let _ = decode_local_state(&bytes, &r);
        }

        #[test]
        fn random_corruptions_of_valid_frames_never_panic(
            which in 0usize..6,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let r = registry();
            let (_, mut bytes, decode) = encodings().swap_remove(which);
            for (at, v) in edits {
                let i = at.index(bytes.len());
                bytes[i] = v;
            }
            let _ = decode(&bytes, &r);
        }
    }
}
