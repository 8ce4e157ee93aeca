//! **NumPy** `.npy` and `.npz` files (docs/data-formats.md, "NumPy"): features and
//! labels as arrays, pooled and split by a partition, or one `.npz` per client.
//!
//! The `.npy` format (NumPy's `format.py`, versions 1–3): the magic `\x93NUMPY`, a
//! version, a little-endian header length (u16 in 1.0, u32 after), then a Python dict
//! literal such as `{'descr': '<f4', 'fortran_order': False, 'shape': (100, 784), }`,
//! then the data. The header parser here reads only that literal grammar (strings,
//! `True`/`False`, tuples of integers), caps the header at [`MAX_HEADER`] bytes and
//! the rank at [`MAX_RANK`], and checks the data length the header implies against
//! what the file holds before allocating; it never panics on any input (a proptest
//! feeds it arbitrary bytes). Numeric dtypes of either byte order are read (`b1`,
//! `i1`–`i8`, `u1`–`u8`, `f4`, `f8`); features become f32 (`f8` must fit), labels must
//! be non-negative whole numbers below [`crate::csv::MAX_CLASSES`].
//!
//! An `.npz` is a zip archive of `.npy` files (`np.savez`, stored, or
//! `np.savez_compressed`, deflated), read with the `zip` crate.

use crate::csv::MAX_CLASSES;
use crate::federation::dense_shape;
use crate::partition::Partition;
use crate::pooled::{PoolConfig, TestSplit};
use crate::{Error, Federation, Result};
use fedpace_core::data::{Dataset, DenseDataset};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest header accepted (NumPy itself refuses more than 10,000 bytes by default).
pub const MAX_HEADER: usize = 65_536;
/// The largest number of dimensions accepted (NumPy's own limit is 64).
pub const MAX_RANK: usize = 64;

/// Element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `b1`.
    Bool,
    /// Signed integer.
    Int,
    /// Unsigned integer.
    Uint,
    /// IEEE float.
    Float,
}

/// A parsed `descr` such as `<f4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dtype {
    /// Element kind.
    pub kind: Kind,
    /// Bytes per element (1, 2, 4 or 8).
    pub size: usize,
    /// Big-endian (`>`).
    pub big_endian: bool,
}

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Element type.
    pub dtype: Dtype,
    /// Column-major data.
    pub fortran_order: bool,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Offset of the data from the start of the file.
    pub data_offset: usize,
}

impl Header {
    /// Number of elements, or `None` on overflow.
    pub fn elements(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
    /// Data bytes, or `None` on overflow.
    pub fn data_bytes(&self) -> Option<usize> {
        self.elements()?.checked_mul(self.dtype.size)
    }
}

/// Parses the header at the start of `bytes` (which may hold more, e.g. the data).
pub fn parse_header(bytes: &[u8]) -> std::result::Result<Header, String> {
    let magic = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != magic {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("header truncated".into());
            }
            let l = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (l as usize, 12)
        }
        _ => {
            return Err(format!(
                "format version {major}.{minor}, expected 1.0, 2.0 or 3.0"
            ))
        }
    };
    if len > MAX_HEADER {
        return Err(format!("header of {len} bytes, at most {MAX_HEADER}"));
    }
    let end = start + len;
    let text = bytes
        .get(start..end)
        .ok_or_else(|| format!("header of {len} bytes, the file ends before"))?;
    let text = std::str::from_utf8(text).map_err(|_| "header is not text".to_string())?;
    let mut h = parse_dict(text)?;
    h.data_offset = end;
    Ok(h)
}

/// The header literal: `{'descr': …, 'fortran_order': …, 'shape': (…), }`.
fn parse_dict(text: &str) -> std::result::Result<Header, String> {
    let mut p = Lexer {
        s: text.as_bytes(),
        i: 0,
    };
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        match key.as_str() {
            "descr" if descr.is_none() => {
                p.skip_ws();
                if p.peek() == Some(b'[') {
                    return Err(
                        "structured dtype (a list in 'descr'): only plain numeric arrays are read"
                            .into(),
                    );
                }
                descr = Some(parse_dtype(&p.string()?)?);
            }
            "fortran_order" if fortran.is_none() => fortran = Some(p.boolean()?),
            "shape" if shape.is_none() => shape = Some(p.tuple()?),
            other => {
                return Err(format!(
                    "unexpected or repeated key '{other}' in the header"
                ))
            }
        }
        p.skip_ws();
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    let missing = |k: &str| format!("header has no '{k}'");
    Ok(Header {
        dtype: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
        data_offset: 0,
    })
}

/// `<f4`, `|u1`, `>i8`, `=f8`, …
fn parse_dtype(d: &str) -> std::result::Result<Dtype, String> {
    let b = d.as_bytes();
    let bad = || {
        format!("dtype '{d}': expected a numeric dtype such as '<f4', '<f8', '|u1', '<i8' or '|b1'")
    };
    if b.len() != 3 {
        return Err(bad());
    }
    let big_endian = match b[0] {
        b'<' | b'|' => false,
        b'>' => true,
        b'=' => cfg!(target_endian = "big"),
        _ => return Err(bad()),
    };
    let size = match b[2] {
        b'1' => 1,
        b'2' => 2,
        b'4' => 4,
        b'8' => 8,
        _ => return Err(bad()),
    };
    let kind = match (b[1], size) {
        (b'b', 1) => Kind::Bool,
        (b'i', _) => Kind::Int,
        (b'u', _) => Kind::Uint,
        (b'f', 4 | 8) => Kind::Float,
        _ => return Err(bad()),
    };
    Ok(Dtype {
        kind,
        size,
        big_endian,
    })
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "header: expected '{}' at byte {}",
                c as char, self.i
            ))
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        self.skip_ws();
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "header: expected a quoted string at byte {}",
                    self.i
                ))
            }
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or_else(|| "header: unterminated string".to_string())?;
        self.i = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec())
            .map_err(|_| "header: string is not text".to_string())
    }
    fn boolean(&mut self) -> std::result::Result<bool, String> {
        self.skip_ws();
        for (word, v) in [("True", true), ("False", false)] {
            if self.s[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!("header: expected True or False at byte {}", self.i))
    }
    /// `(3, 4)`, `(3,)`, `()`, with Python 2's `3L` accepted.
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            self.skip_ws();
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            if digits.is_empty() {
                return Err(format!("header: expected a dimension at byte {start}"));
            }
            let d: usize = digits
                .parse()
                .map_err(|_| format!("header: dimension {digits} is too large"))?;
            if self.peek() == Some(b'L') {
                self.i += 1;
            }
            dims.push(d);
            if dims.len() > MAX_RANK {
                return Err(format!("more than {MAX_RANK} dimensions"));
            }
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

/// One array: its shape and its values as f64 (exact for every integer below 2^53 and
/// for f32), in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f64>,
    /// Element kind.
    pub kind: Kind,
}

/// Reads one `.npy` stream of `len` bytes (if known; an `.npz` entry's size is checked
/// the same way). `what` names the file (and entry) in errors.
pub fn read_array(mut r: impl Read, len: Option<u64>, what: &str) -> Result<Array> {
    let err = |m: String| Error::format(what, m);
    // The fixed part, then the header it announces.
    let mut head = vec![0u8; 12];
    let got = read_up_to(&mut r, &mut head).map_err(|e| err(format!("cannot read: {e}")))?;
    head.truncate(got);
    let hlen = match head.get(6) {
        Some(1) if got >= 10 => u16::from_le_bytes([head[8], head[9]]) as usize + 10,
        Some(2 | 3) if got >= 12 => {
            u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize + 12
        }
        _ => 12,
    };
    if hlen > MAX_HEADER + 12 {
        return Err(err(format!("header of {hlen} bytes, at most {MAX_HEADER}")));
    }
    if hlen > head.len() {
        let mut rest = vec![0u8; hlen - head.len()];
        let n = read_up_to(&mut r, &mut rest).map_err(|e| err(format!("cannot read: {e}")))?;
        head.extend_from_slice(&rest[..n]);
    }
    let h = parse_header(&head).map_err(err)?;
    let bytes = h
        .data_bytes()
        .ok_or_else(|| err(format!("shape {:?} overflows", h.shape)))?;
    if let Some(len) = len {
        let have = len.saturating_sub(h.data_offset as u64);
        if have != bytes as u64 {
            return Err(err(format!(
                "shape {:?} of {}-byte values needs {bytes} data bytes, the file has {have}",
                h.shape, h.dtype.size
            )));
        }
    }
    let mut data = Vec::new();
    r.take(bytes as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if data.len() != bytes {
        return Err(err(format!(
            "shape {:?} needs {bytes} data bytes, the file has {}{}",
            h.shape,
            data.len().min(bytes),
            if data.len() > bytes { " and more" } else { "" }
        )));
    }
    let mut values: Vec<f64> = data
        .chunks_exact(h.dtype.size)
        .map(|c| decode(c, h.dtype))
        .collect();
    if h.fortran_order && h.shape.len() > 1 {
        values = fortran_to_c(&values, &h.shape);
    }
    Ok(Array {
        shape: h.shape,
        values,
        kind: h.dtype.kind,
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn decode(c: &[u8], t: Dtype) -> f64 {
    let mut b = [0u8; 8];
    b[..c.len()].copy_from_slice(c);
    if t.big_endian {
        b[..c.len()].reverse();
    }
    let u = u64::from_le_bytes(b);
    let bits = 8 * t.size as u32;
    match t.kind {
        Kind::Bool => (u != 0) as u8 as f64,
        Kind::Uint => u as f64,
        Kind::Int => {
            // Sign-extend from `bits`.
            let shift = 64 - bits;
            (((u << shift) as i64) >> shift) as f64
        }
        Kind::Float if t.size == 4 => f32::from_bits(u as u32) as f64,
        Kind::Float => f64::from_bits(u),
    }
}

/// Column-major values of `shape` in row-major order.
fn fortran_to_c(values: &[f64], shape: &[usize]) -> Vec<f64> {
    let n = values.len();
    let mut out = vec![0.0; n];
    let mut idx = vec![0usize; shape.len()];
    for (c, slot) in out.iter_mut().enumerate() {
        // Row-major index c → multi-index → column-major offset.
        let mut rem = c;
        for d in (0..shape.len()).rev() {
            idx[d] = rem % shape[d];
            rem /= shape[d];
        }
        let mut f = 0;
        for d in (0..shape.len()).rev() {
            f = f * shape[d] + idx[d];
        }
        *slot = values[f];
    }
    out
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Array> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    read_array(
        std::io::BufReader::new(f),
        Some(len),
        &path.display().to_string(),
    )
}

/// Reads the arrays `names` (without `.npy`) from an `.npz` file, in that order.
pub fn read_npz(path: &Path, names: &[&str]) -> Result<Vec<Array>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f))
        .map_err(|e| Error::format(path, format!("not a readable .npz (zip) file: {e}")))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let entry = format!("{name}.npy");
        let have: Vec<String> = zip
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.trim_end_matches(".npy").to_string()))
            .collect();
        let file = zip.by_name(&entry).map_err(|_| {
            Error::format(
                path,
                format!("no array '{name}' (it holds: {})", have.join(", ")),
            )
        })?;
        let size = file.size();
        let what = format!("{}[{name}]", path.display());
        out.push(read_array(file, Some(size), &what)?);
    }
    Ok(out)
}

/// Features: `x` of shape `(n, d…)` as f32 samples of shape `[d…]` (`[1]` for a 1-D
/// `x`), each multiplied by `scale`.
fn features(x: &Array, scale: f64, what: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    if x.shape.is_empty() {
        return Err(Error::format(
            what,
            "a 0-dimensional array, expected (samples, …)",
        ));
    }
    let shape = match x.shape.len() {
        1 => vec![1],
        _ => x.shape[1..].to_vec(),
    };
    let mut out = Vec::with_capacity(x.values.len());
    for (i, &v) in x.values.iter().enumerate() {
        let f = (v * scale) as f32;
        if !f.is_finite() {
            let d: usize = shape.iter().product::<usize>().max(1);
            return Err(Error::format(
                what,
                format!(
                    "sample {}, value {} = {v:e}: not a finite f32",
                    i / d,
                    i % d
                ),
            ));
        }
        out.push(f);
    }
    Ok((out, shape))
}

/// Labels: `y` of shape `(n,)` or `(n, 1)`, whole numbers in `0..MAX_CLASSES`.
fn labels(y: &Array, n: usize, what: &str) -> Result<Vec<u32>> {
    let ok_shape = match y.shape.as_slice() {
        [m] | [m, 1] => *m == n,
        _ => false,
    };
    if !ok_shape {
        return Err(Error::format(
            what,
            format!(
                "labels of shape {:?}, expected ({n},) to match the features",
                y.shape
            ),
        ));
    }
    y.values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() == 0.0 && v >= 0.0 && v < MAX_CLASSES as f64 {
                Ok(v as u32)
            } else {
                Err(Error::format(
                    what,
                    format!(
                        "label {v} at index {i}: labels are class ids, whole numbers in 0..{MAX_CLASSES}"
                    ),
                ))
            }
        })
        .collect()
}

/// `[data.npy]`: where the arrays are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpyConfig {
    /// The pool: an `.npz` holding arrays named `x` and `y`, or a `.npy` of features
    /// (then `labels` is the `.npy` of labels). Not with `clients`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The labels `.npy` when `path` is a `.npy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<PathBuf>,
    /// An optional held-out pool of the same form (the global test set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_path: Option<PathBuf>,
    /// The labels `.npy` when `test_path` is a `.npy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_labels: Option<PathBuf>,
    /// Instead of a pool: a directory with one `.npz` per client (arrays `x`, `y`),
    /// clients in file-name order (the natural partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<PathBuf>,
    /// Name of the features array in an `.npz`. Default `x`.
    #[serde(default = "default_x")]
    pub x: String,
    /// Name of the labels array in an `.npz`. Default `y`.
    #[serde(default = "default_y")]
    pub y: String,
    /// Every feature is multiplied by this (e.g. `0.00392156862745098` = 1/255 for
    /// u8 pixels). Default 1.
    #[serde(default = "default_scale")]
    pub scale: f64,
}

fn default_x() -> String {
    "x".into()
}
fn default_y() -> String {
    "y".into()
}
fn default_scale() -> f64 {
    1.0
}

impl NpyConfig {
    /// A pool read from `path` (an `.npz` with arrays `x`, `y`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
            labels: None,
            test_path: None,
            test_labels: None,
            clients: None,
            x: default_x(),
            y: default_y(),
            scale: default_scale(),
        }
    }

    /// One features/labels pair: an `.npz` (arrays `x`, `y`) or a `.npy` and its labels.
    pub fn load(&self, path: &Path, labels_path: Option<&Path>) -> Result<DenseDataset> {
        let shown = path.display().to_string();
        let (x, y, y_what) = match labels_path {
            None => {
                let mut a = read_npz(path, &[&self.x, &self.y])?;
                let y = a.pop().expect("two arrays");
                let x = a.pop().expect("two arrays");
                (x, y, format!("{shown}[{}]", self.y))
            }
            Some(l) => (read_npy(path)?, read_npy(l)?, l.display().to_string()),
        };
        let (f, shape) = features(&x, self.scale, &shown)?;
        let n = x.shape[0];
        let y = labels(&y, n, &y_what)?;
        let classes = y.iter().max().map_or(0, |&m| m as usize + 1);
        Ok(DenseDataset::new(f, shape, y, classes)?)
    }
}

/// `[data] source = "npy"`: NumPy arrays (`[data.npy]`), a pool split across clients
/// or one file per client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NpySourceConfig {
    /// Where the arrays are (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub npy: Option<NpyConfig>,
    /// Number of clients of a pool. Default 30; with `npy.clients`, the number of files
    /// (if set, it must match).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_clients: Option<usize>,
    /// How a pool is split. Default `iid`; only `natural` with `npy.clients`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Fraction of each client's samples held out, in [0, 1). Default 0.2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Fraction of each client's training split held out as its validation split, in
    /// [0, 1) (docs/learned-rates.md, "Validation splits"). Default 0: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Where client test splits come from (`pooled-matched` needs `npy.test_path`).
    pub test_split: TestSplit,
    /// Seed of the partition and the test splits. Default: the run's `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for NpySourceConfig {
    fn default() -> Self {
        Self {
            npy: None,
            num_clients: None,
            partition: None,
            test_fraction: None,
            validation_fraction: None,
            test_split: TestSplit::Local,
            seed: None,
        }
    }
}

impl NpySourceConfig {
    /// Whether the clients are the files of `npy.clients`.
    pub fn per_client(&self) -> bool {
        self.npy.as_ref().is_some_and(|n| n.clients.is_some())
    }

    /// The keys shared by every pooled source.
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            num_clients: self
                .num_clients
                .unwrap_or(PoolConfig::default().num_clients),
            partition: self.partition.clone(),
            test_fraction: self.test_fraction,
            validation_fraction: self.validation_fraction,
            test_split: self.test_split,
            seed: self.seed,
        }
    }

    /// Checks every key without reading the files.
    pub fn validate(&self) -> Result<()> {
        let Some(n) = &self.npy else {
            return Err(Error::invalid(
                "data.npy",
                "(missing)",
                "a [data.npy] table with `path` or `clients` when source = \"npy\"",
            ));
        };
        if !(n.scale.is_finite() && n.scale != 0.0) {
            return Err(Error::invalid(
                "data.npy.scale",
                n.scale,
                "a finite, non-zero factor",
            ));
        }
        let npy_ext = |p: &Path| p.extension().is_some_and(|e| e == "npy");
        match (&n.path, &n.clients) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(Error::invalid(
                    "data.npy",
                    "(path and clients)",
                    "either `path` (a pool to partition) or `clients` (one .npz per client)",
                ))
            }
            (Some(p), None) => {
                for (file, labels, key) in [
                    (Some(p), &n.labels, "data.npy.labels"),
                    (n.test_path.as_ref(), &n.test_labels, "data.npy.test_labels"),
                ] {
                    let Some(file) = file else { continue };
                    if npy_ext(file) != labels.is_some() {
                        return Err(Error::invalid(
                            key,
                            labels.as_ref().map_or("(missing)".into(), |l| l.display().to_string()),
                            format!(
                                "the labels .npy exactly when {} is a .npy (an .npz holds both arrays)",
                                file.display()
                            ),
                        ));
                    }
                }
                self.pool().validate("npy", n.test_path.is_some())?;
            }
            (None, Some(_)) => {
                for (key, set) in [
                    ("data.npy.labels", n.labels.is_some()),
                    ("data.npy.test_path", n.test_path.is_some()),
                    ("data.npy.test_labels", n.test_labels.is_some()),
                ] {
                    if set {
                        return Err(Error::invalid(
                            key,
                            "(set)",
                            "not used with data.npy.clients (each client's .npz holds its data)",
                        ));
                    }
                }
                if self.num_clients == Some(0) {
                    return Err(Error::invalid("data.num_clients", 0, "must be ≥ 1"));
                }
                crate::pooled::check_test_fraction(self.test_fraction)?;
                if self.test_split != TestSplit::Local {
                    return Err(Error::invalid(
                        "data.test_split",
                        "pooled-matched",
                        "local (per-client files have no pooled test set)",
                    ));
                }
                if let Some(p) = &self.partition {
                    p.check("npy with clients", true)?;
                }
            }
        }
        Ok(())
    }

    /// Reads the arrays and builds the federation; `seed` is the run's.
    pub fn federation(&self, seed: u64) -> Result<Federation> {
        self.validate()?;
        let n = self.npy.as_ref().expect("validated");
        if let Some(dir) = &n.clients {
            return self.per_client_federation(n, dir, seed);
        }
        let path = n.path.as_ref().expect("validated");
        let train = n.load(path, n.labels.as_deref())?;
        let test = match &n.test_path {
            Some(t) => Some(n.load(t, n.test_labels.as_deref())?),
            None => None,
        };
        let (train, test) = same_classes(train, test, path, n.test_path.as_deref())?;
        let shape = dense_shape(&train);
        let test = test.map(|t| Arc::new(t) as Arc<dyn Dataset>);
        crate::pooled::federate("npy", Arc::new(train), test, shape, &self.pool(), seed)
    }

    fn per_client_federation(&self, n: &NpyConfig, dir: &Path, seed: u64) -> Result<Federation> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "npz"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::format(
                dir,
                "no .npz files (one per client expected)",
            ));
        }
        if let Some(k) = self.num_clients.filter(|&k| k != files.len()) {
            return Err(Error::invalid(
                "data.num_clients",
                k,
                format!(
                    "{} (the .npz files in {}), or leave it out",
                    files.len(),
                    dir.display()
                ),
            ));
        }
        let mut parts = Vec::with_capacity(files.len());
        let (mut features, mut labels) = (Vec::new(), Vec::new());
        let mut shape: Option<(Vec<usize>, PathBuf)> = None;
        for f in &files {
            let d = n.load(f, None)?;
            let s = dense_shape(&d);
            match &shape {
                Some((s0, f0)) if *s0 != s => {
                    return Err(Error::format(
                        f,
                        format!("samples of shape {s:?}, but {} has {s0:?}", f0.display()),
                    ))
                }
                Some(_) => {}
                None => shape = Some((s, f.clone())),
            }
            let start = labels.len() as u32;
            for i in 0..d.len() {
                features.extend_from_slice(d.sample(i));
            }
            labels.extend_from_slice(d.labels());
            parts.push((start..labels.len() as u32).collect());
        }
        let shape = shape.expect("at least one file").0;
        let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        let pool = DenseDataset::new(features, shape.clone(), labels, classes)?;
        crate::pooled::federate_parts(
            &format!("npy per-client ({})", dir.display()),
            Arc::new(pool),
            parts,
            crate::InputShape::Dense(shape),
            self.test_fraction
                .unwrap_or(crate::pooled::DEFAULT_TEST_FRACTION),
            self.seed.unwrap_or(seed),
        )
    }
}

/// Gives train and test one class count (the larger) and checks their sample shapes agree.
fn same_classes(
    train: DenseDataset,
    test: Option<DenseDataset>,
    path: &Path,
    test_path: Option<&Path>,
) -> Result<(DenseDataset, Option<DenseDataset>)> {
    let Some(test) = test else {
        return Ok((train, None));
    };
    let tp = test_path.expect("test set read from a path");
    if dense_shape(&test) != dense_shape(&train) {
        return Err(Error::format(
            tp,
            format!(
                "samples of shape {:?}, but {} has {:?}",
                dense_shape(&test),
                path.display(),
                dense_shape(&train)
            ),
        ));
    }
    let k = train.num_classes().max(test.num_classes());
    let remake = |d: DenseDataset| -> Result<DenseDataset> {
        let shape = dense_shape(&d);
        let f: Vec<f32> = (0..d.len()).flat_map(|i| d.sample(i).to_vec()).collect();
        Ok(DenseDataset::new(f, shape, d.labels().to_vec(), k)?)
    };
    Ok((remake(train)?, Some(remake(test)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_every_numeric_dtype_in_both_byte_orders() {
        let a = read_array(
            &npy("<i2", false, "(3,)", &[1, 0, 0xff, 0xff, 0, 0x80])[..],
            None,
            "t",
        )
        .unwrap();
        assert_eq!(a.values, [1.0, -1.0, -32768.0]);
        let a = read_array(&npy(">u4", false, "(1,)", &[0, 0, 1, 2])[..], None, "t").unwrap();
        assert_eq!(a.values, [258.0]);
        let f = 1.5f32.to_le_bytes();
        let a = read_array(&npy("<f4", false, "(1, 1)", &f)[..], None, "t").unwrap();
        assert_eq!(
            (a.values.as_slice(), a.shape.as_slice()),
            (&[1.5][..], &[1, 1][..])
        );
        let a = read_array(&npy("|b1", false, "(2,)", &[0, 7])[..], None, "t").unwrap();
        assert_eq!(a.values, [0.0, 1.0]);
        // Column-major [[1, 2, 3], [4, 5, 6]] is stored 1 4 2 5 3 6.
        let a = read_array(
            &npy("|u1", true, "(2, 3)", &[1, 4, 2, 5, 3, 6])[..],
            None,
            "t",
        )
        .unwrap();
        assert_eq!(a.values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn bad_headers_and_sizes_are_one_line_errors_naming_the_file() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04".to_vec(), "f.npy: not a .npy file"),
            (
                npy("<c8", false, "(1,)", &[0; 8]),
                "f.npy: dtype '<c8': expected a numeric dtype",
            ),
            (
                npy("<f4", false, "(2, 2)", &[0; 12]),
                "f.npy: shape [2, 2] of 4-byte values needs 16 data bytes, the file has 12",
            ),
            (
                npy("<f4", false, "(4294967296, 4294967296, 4294967296)", &[]),
                "f.npy: shape [4294967296, 4294967296, 4294967296] overflows",
            ),
        ];
        for (bytes, want) in cases {
            let len = bytes.len() as u64;
            let e = read_array(&bytes[..], Some(len), "f.npy")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{e}");
            assert_eq!(e.lines().count(), 1);
        }
        let mut big = b"\x93NUMPY\x02\x00".to_vec();
        big.extend_from_slice(&(1u32 << 30).to_le_bytes());
        let e = read_array(&big[..], None, "f").unwrap_err().to_string();
        assert!(e.contains("at most 65536"), "{e}");
        let e = parse_header(&npy("<f4", false, "(1,)", &[])[..20]).unwrap_err();
        assert!(e.contains("ends before"), "{e}");
        let structured = npy("[('a', '<f4')]", false, "(1,)", &[])
            .iter()
            .map(|&b| if b == b'\'' { b'"' } else { b })
            .collect::<Vec<u8>>();
        assert!(parse_header(&structured).is_err());
    }

    #[test]
    fn labels_must_be_class_ids() {
        let y = Array {
            shape: vec![3],
            values: vec![0.0, 2.5, 1.0],
            kind: Kind::Float,
        };
        let e = labels(&y, 3, "y.npy").unwrap_err().to_string();
        assert!(e.starts_with("y.npy: label 2.5 at index 1"), "{e}");
        let y = Array {
            shape: vec![2],
            values: vec![0.0, 1e9],
            kind: Kind::Int,
        };
        assert!(labels(&y, 2, "y").is_err());
        assert!(labels(&y, 3, "y")
            .unwrap_err()
            .to_string()
            .contains("expected (3,)"));
    }

    proptest! {
        /// No input makes the header parser or the reader panic or allocate beyond
        /// what the bytes hold.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_header(&bytes);
            let _ = read_array(&bytes[..], Some(bytes.len() as u64), "p");
            let _ = read_array(&bytes[..], None, "p");
        }

        /// A valid magic and version followed by arbitrary header text never panics.
        #[test]
        fn arbitrary_header_text_never_panics(text in "[{}()':, A-Za-z0-9<>|=_\\[\\]\"]{0,120}") {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(text.len() as u16).to_le_bytes());
            b.extend_from_slice(text.as_bytes());
            let _ = parse_header(&b);
            let _ = read_array(&b[..], None, "p");
        }

        /// Headers numpy writes parse back to their shape and dtype.
        #[test]
        fn written_headers_round_trip(shape in proptest::collection::vec(0usize..1000, 0..5),
                                      dt in prop::sample::select(vec!["<f4", "<f8", "|u1", ">i8", "<u2", "|b1"])) {
            let s = match shape.len() {
                1 => format!("({},)", shape[0]),
                _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
            };
            let h = parse_header(&npy(dt, false, &s, &[])).unwrap();
            prop_assert_eq!(h.shape, shape);
            prop_assert_eq!(h.dtype, parse_dtype(dt).unwrap());
        }
    }
}
