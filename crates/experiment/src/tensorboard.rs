//! TensorBoard event files (`[output] tensorboard = true`, docs/outputs.md): scalars and
//! histograms per round, readable by TensorBoard's own reader.
//!
//! No maintained Rust crate writes them with few dependencies (tensorboard-rs pulls an
//! old `image` and protobuf 2; syntaxdot-summary writes scalars only), and the format is
//! small, so it is written here by hand:
//!
//! * a file is a sequence of TFRecords: `u64 length`, `u32 masked CRC32C(length)`,
//!   `data`, `u32 masked CRC32C(data)`, all little-endian, where
//!   `masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`;
//! * each record's data is a protobuf `Event { double wall_time = 1; int64 step = 2;
//!   string file_version = 3; Summary summary = 5; }`, the first one carrying
//!   `file_version = "brain.Event:2"`;
//! * `Summary { repeated Value value = 1; }`, `Value { string tag = 1; float
//!   simple_value = 2; HistogramProto histo = 5; }`, `HistogramProto { double min = 1,
//!   max = 2, num = 3, sum = 4, sum_squares = 5; repeated double bucket_limit = 6
//!   [packed]; repeated double bucket = 7 [packed]; }`.
//!
//! Each record goes out in one `write` call, so a reader never sees half a record
//! except at the very end of a file being written (TensorBoard waits for the rest).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bytewise with a table.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

/// The TFRecord checksum: CRC32C rotated right by 15 plus a constant.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Minimal protobuf encoding (the wire types used here).
mod pb {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    pub fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, ((field as u64) << 3) | wire as u64);
    }
    // Plain proto3 scalars are left out when zero (their default), as protobuf's own
    // encoder does; a field inside a `oneof` is always written.
    pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        if v.to_bits() != 0 {
            key(out, field, 1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    pub fn oneof_float(out: &mut Vec<u8>, field: u32, v: f32) {
        key(out, field, 5);
        out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn int64(out: &mut Vec<u8>, field: u32, v: i64) {
        if v != 0 {
            key(out, field, 0);
            varint(out, v as u64);
        }
    }
    pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        key(out, field, 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    pub fn packed_doubles(out: &mut Vec<u8>, field: u32, v: &[f64]) {
        if !v.is_empty() {
            let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            bytes(out, field, &b);
        }
    }
}

/// A histogram as TensorBoard stores it: bucket `i` counts values in
/// `(bucket_limit[i-1], bucket_limit[i]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    min: f64,
    max: f64,
    num: f64,
    sum: f64,
    sum_squares: f64,
    bucket_limit: Vec<f64>,
    bucket: Vec<f64>,
}

impl Histogram {
    /// `bins` equal-width buckets between the smallest and largest finite value (one
    /// bucket when they are equal); `None` when there is no finite value.
    pub fn of(values: &[f64], bins: usize) -> Option<Self> {
        let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let (bucket_limit, bucket) = if hi > lo {
            let bins = bins.max(1);
            let w = (hi - lo) / bins as f64;
            let mut counts = vec![0.0; bins];
            for x in &v {
                // Right-closed buckets, as TensorBoard reads them.
                let i = ((x - lo) / w).ceil() as usize;
                counts[i.saturating_sub(1).min(bins - 1)] += 1.0;
            }
            let limits = (1..=bins)
                .map(|i| if i == bins { hi } else { lo + w * i as f64 })
                .collect();
            (limits, counts)
        } else {
            (vec![hi], vec![v.len() as f64])
        };
        Some(Self {
            min: lo,
            max: hi,
            num: v.len() as f64,
            sum: v.iter().sum(),
            sum_squares: v.iter().map(|x| x * x).sum(),
            bucket_limit,
            bucket,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        pb::double(&mut out, 1, self.min);
        pb::double(&mut out, 2, self.max);
        pb::double(&mut out, 3, self.num);
        pb::double(&mut out, 4, self.sum);
        pb::double(&mut out, 5, self.sum_squares);
        pb::packed_doubles(&mut out, 6, &self.bucket_limit);
        pb::packed_doubles(&mut out, 7, &self.bucket);
        out
    }
}

/// One value of a summary.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar (`simple_value`).
    Scalar(f32),
    /// A histogram (`histo`).
    Histogram(Histogram),
}

/// The bytes of an `Event` at `step` holding the tagged values.
pub fn encode_event(wall_time: f64, step: i64, values: &[(String, Value)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in values {
        let mut value = Vec::new();
        pb::bytes(&mut value, 1, tag.as_bytes());
        match v {
            Value::Scalar(x) => pb::oneof_float(&mut value, 2, *x),
            Value::Histogram(h) => pb::bytes(&mut value, 5, &h.encode()),
        }
        pb::bytes(&mut summary, 1, &value);
    }
    let mut event = Vec::new();
    pb::double(&mut event, 1, wall_time);
    pb::int64(&mut event, 2, step);
    pb::bytes(&mut event, 5, &summary);
    event
}

fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut event = Vec::new();
    pb::double(&mut event, 1, wall_time);
    pb::int64(&mut event, 2, 0);
    pb::bytes(&mut event, 3, b"brain.Event:2");
    event
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Appends events to one `events.out.tfevents.*` file.
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir` and a new event file in it (named as TensorBoard expects:
    /// `events.out.tfevents.<seconds>.<host>.<pid>`).
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().replace(['/', ' '], "_"))
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now() as u64,
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut w = Self { file, path };
        w.write_event(&file_version_event(now()))?;
        Ok(w)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, event: &[u8]) -> std::io::Result<()> {
        self.file.write_all(&frame_record(event))
    }

    /// Writes the values of `step` (one record, one write).
    pub fn write(&mut self, step: i64, values: &[(String, Value)]) -> std::io::Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.write_event(&encode_event(now(), step, values))
    }

    /// Flushes the file to disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_values() {
        // RFC 3720 B.4 / the CRC catalogue: CRC-32C("123456789") = 0xE3069283;
        // 32 zero bytes → 0x8A9136AA; 32 bytes 0xFF → 0x62A8AB43.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
    }

    #[test]
    fn a_scalar_event_encodes_as_protobuf_by_hand() {
        // Event{wall_time=1.5, step=3, summary{value{tag="a", simple_value=0.25}}}:
        // 09 <1.5 f64> 10 03 | 2a 0a (summary, 10 bytes) | 0a 08 (value, 8 bytes) |
        // 0a 01 "a" (tag) 15 <0.25 f32> (simple_value)
        let mut want = vec![0x09];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0x03, 0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01, b'a', 0x15]);
        want.extend_from_slice(&0.25f32.to_le_bytes());
        let got = encode_event(1.5, 3, &[("a".into(), Value::Scalar(0.25))]);
        assert_eq!(got, want);
        let rec = frame_record(&got);
        assert_eq!(&rec[..8], &(got.len() as u64).to_le_bytes());
        assert_eq!(rec.len(), got.len() + 16);
    }

    #[test]
    fn histogram_buckets_cover_every_value() {
        let h = Histogram::of(&[0.1, 0.2, 0.2, 0.4, f64::NAN], 3).unwrap();
        assert_eq!(h.num, 4.0);
        assert_eq!(h.bucket.iter().sum::<f64>(), 4.0);
        assert_eq!(*h.bucket_limit.last().unwrap(), 0.4);
        assert_eq!(h.bucket, vec![3.0, 0.0, 1.0]);
        let one = Histogram::of(&[0.05; 7], 30).unwrap();
        assert_eq!(
            (one.bucket_limit.clone(), one.bucket.clone()),
            (vec![0.05], vec![7.0])
        );
        assert!(Histogram::of(&[f64::NAN], 3).is_none());
    }
}
