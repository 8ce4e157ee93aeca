//! **IDX** files (MNIST, Fashion-MNIST; docs/datasets.md §1.1 rows 1–2), plain or gzip.
//!
//! Format: a big-endian header `0x00 0x00 type ndim` (type 0x08 = u8), then `ndim`
//! big-endian u32 dimensions, then the data. Images are magic `0x00000803`
//! (`[n, rows, cols]`), labels `0x00000801` (`[n]`). Everything in the header is checked
//! against the file length; any problem is an [`Error::Format`] naming the file.

use crate::federation::dense_shape;
use crate::partition::Partition;
use crate::pooled::{PoolConfig, TestSplit};
use crate::{Error, Federation, Result};
use fedpace_core::data::{Dataset, DenseDataset};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[data] source = "mnist"` or `"fashion-mnist"`: the IDX files of
/// `data_dir/<source>` split across clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MnistConfig {
    /// Number of clients. Default 30.
    pub num_clients: usize,
    /// How the pool is split (see [`PoolConfig`]). Default `iid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Fraction of each client's samples held out, in [0, 1). Default 0.2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Fraction of each client's training split held out as its validation split, in
    /// [0, 1) (docs/learned-rates.md, "Validation splits"). Default 0: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Where client test splits come from. Default `local`.
    pub test_split: TestSplit,
    /// Seed of the partition and the test splits. Default: the run's `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Standardise every pixel over the training pool, `(x − μ_j) / (σ_j + 0.001)`, as
    /// the pFedMe data script does (docs/algorithms.md §X.3); the same μ, σ apply to the test
    /// set. Default false (pixels in [0, 1]).
    pub standardize: bool,
    /// Put the source's test images into the pool before partitioning (all 70,000
    /// MNIST images, as the pFedMe data script does); clients' test splits then come
    /// from their own shares and there is no global test set. Default false.
    pub pool_test_set: bool,
    /// Check the fetched files against their pinned SHA-256 (see [`crate::cache`]).
    /// Default true.
    pub verify: bool,
}

impl Default for MnistConfig {
    fn default() -> Self {
        let pool = PoolConfig::default();
        Self {
            num_clients: pool.num_clients,
            partition: None,
            test_fraction: None,
            validation_fraction: None,
            test_split: TestSplit::Local,
            seed: None,
            standardize: false,
            pool_test_set: false,
            verify: true,
        }
    }
}

impl MnistConfig {
    /// The keys shared by every pooled source.
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            num_clients: self.num_clients,
            partition: self.partition.clone(),
            test_fraction: self.test_fraction,
            validation_fraction: self.validation_fraction,
            test_split: self.test_split,
            seed: self.seed,
        }
    }

    /// Checks every key; `source` is `mnist` or `fashion-mnist`.
    pub fn validate(&self, source: &str) -> Result<()> {
        if self.pool_test_set && self.test_split == TestSplit::PooledMatched {
            return Err(Error::invalid(
                "data.test_split",
                "pooled-matched",
                "local (data.pool_test_set = true leaves no separate test set to match from)",
            ));
        }
        self.pool().validate(source, true)
    }

    /// The federation from `data_dir/<source>`; `seed` is the run's.
    pub fn federation(&self, source: &str, data_dir: &Path, seed: u64) -> Result<Federation> {
        if self.verify {
            crate::cache::verify_cache(source, data_dir)?;
        }
        let (mut tr, mut te, shape) = load_dir(&data_dir.join(source), source)?;
        if self.pool_test_set {
            tr = concat(&tr, &te, &shape)?;
        }
        if self.standardize {
            (tr, te) = standardize(&tr, &te, &shape)?;
        }
        let test = (!self.pool_test_set).then(|| Arc::new(te) as Arc<dyn Dataset>);
        crate::pooled::federate(source, Arc::new(tr), test, shape, &self.pool(), seed)
    }
}

/// Magic of a u8 image file.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of a u8 label file.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// A parsed u8 IDX file: dimensions and data (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    /// Dimensions, the first one being the number of items.
    pub dims: Vec<usize>,
    /// Values.
    pub data: Vec<u8>,
}

/// Names of the four files of an MNIST-layout directory (each may also be `.gz`).
pub const MNIST_FILE_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Parses IDX bytes (gunzipping first if they start with the gzip magic), expecting
/// `magic`. `path` only names the file in errors.
pub fn parse(bytes: &[u8], expected_magic: u32, path: &Path) -> Result<Idx> {
    parse_from(bytes, Some(bytes.len() as u64), expected_magic, path)
}

/// Parses an IDX stream of `len` bytes (if known), gzip or plain. The header is read
/// first and the data may then be at most 16 + product(dims) bytes: a gzip stream is
/// decompressed only that far (so a small file that expands to gigabytes is refused
/// after reading one byte too many), and a plain file's length is checked before
/// anything is allocated.
pub fn parse_from(
    mut r: impl Read,
    len: Option<u64>,
    expected_magic: u32,
    path: &Path,
) -> Result<Idx> {
    let mut start = [0u8; 2];
    let got = read_full(&mut r, &mut start).map_err(|e| Error::io(path, e))?;
    let r = std::io::Cursor::new(start[..got].to_vec()).chain(r);
    if start[..got] == [0x1f, 0x8b] {
        let gz = flate2::read::GzDecoder::new(r);
        return parse_stream(gz, None, true, expected_magic, path);
    }
    parse_stream(r, len, false, expected_magic, path)
}

/// Reads into `buf` until full or end of stream; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
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

fn parse_stream(
    mut r: impl Read,
    len: Option<u64>,
    gzip: bool,
    expected_magic: u32,
    path: &Path,
) -> Result<Idx> {
    let read_err = |e: std::io::Error| match gzip {
        true => Error::format(path, format!("bad gzip stream: {e}")),
        false => Error::io(path, e),
    };
    let mut head = [0u8; 4];
    let got = read_full(&mut r, &mut head).map_err(read_err)?;
    if got < 4 {
        return Err(Error::format(
            path,
            format!("{got} bytes, too short for an IDX header"),
        ));
    }
    let magic = u32::from_be_bytes(head);
    if magic != expected_magic {
        return Err(Error::format(
            path,
            format!("magic number 0x{magic:08x}, expected 0x{expected_magic:08x}"),
        ));
    }
    let ndim = head[3] as usize;
    let mut raw = vec![0u8; 4 * ndim];
    let got = read_full(&mut r, &mut raw).map_err(read_err)?;
    if got < raw.len() {
        return Err(Error::format(
            path,
            format!(
                "{} bytes, too short for a header with {ndim} dimensions",
                4 + got
            ),
        ));
    }
    let dims: Vec<usize> = raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("dimensions {dims:?} overflow")))?;
    let header = 4 + 4 * ndim;
    let mismatch = |got: u64| {
        Error::format(
            path,
            format!("dimensions {dims:?} need {expected} data bytes, the file has {got}"),
        )
    };
    if let Some(len) = len {
        let got = len.saturating_sub(header as u64);
        if got != expected as u64 {
            return Err(mismatch(got));
        }
    }
    let mut data = Vec::new();
    // Read one byte past the claim, to tell "exactly right" from "too long".
    r.take(expected as u64 + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() != expected {
        return Err(match (len, data.len() > expected) {
            (None, true) => Error::format(
                path,
                format!(
                    "dimensions {dims:?} need {expected} data bytes, the {}stream holds more",
                    if gzip { "gzip " } else { "" }
                ),
            ),
            _ => mismatch(data.len() as u64),
        });
    }
    Ok(Idx { dims, data })
}

/// Reads and parses one IDX file, streaming (see [`parse_from`]).
pub fn read(path: &Path, expected_magic: u32) -> Result<Idx> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    parse_from(std::io::BufReader::new(f), Some(len), expected_magic, path)
}

/// Reads an image file and a label file into a data set of `[1, rows, cols]` samples
/// with pixels scaled to [0, 1] (÷255) and labels below `num_classes`.
pub fn load_pair(images: &Path, labels: &Path, num_classes: usize) -> Result<DenseDataset> {
    let im = read(images, IMAGES_MAGIC)?;
    let lb = read(labels, LABELS_MAGIC)?;
    if im.dims.len() != 3 {
        return Err(Error::format(
            images,
            format!("{} dimensions, expected 3", im.dims.len()),
        ));
    }
    if lb.dims.len() != 1 {
        return Err(Error::format(
            labels,
            format!("{} dimensions, expected 1", lb.dims.len()),
        ));
    }
    if im.dims[0] != lb.dims[0] {
        return Err(Error::format(
            labels,
            format!(
                "{} labels but {} has {} images",
                lb.dims[0],
                images.display(),
                im.dims[0]
            ),
        ));
    }
    if let Some((i, &l)) = lb
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= num_classes)
    {
        return Err(Error::format(
            labels,
            format!("label {l} at item {i}, expected below {num_classes}"),
        ));
    }
    let features = im.data.iter().map(|&p| p as f32 / 255.0).collect();
    let labels = lb.data.iter().map(|&l| l as u32).collect();
    let shape = vec![1, im.dims[1], im.dims[2]];
    Ok(DenseDataset::new(features, shape, labels, num_classes)?)
}

/// `dir/name`, or `dir/name.gz` if only that exists.
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Some(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// MNIST-layout train and test sets from `dir` (`train-images-idx3-ubyte`,
/// `train-labels-idx1-ubyte`, `t10k-…`, each plain or `.gz`); `name` is the data set name
/// used in the "run `fedpace datasets fetch`" error when files are missing.
pub fn load_mnist_dir(dir: &Path, name: &str) -> Result<(DenseDataset, DenseDataset)> {
    load_dir(dir, name).map(|(train, test, _)| (train, test))
}

/// [`load_mnist_dir`] and the sample shape, the same for train and test (checked).
fn load_dir(dir: &Path, name: &str) -> Result<(DenseDataset, DenseDataset, Vec<usize>)> {
    let get = |f: &str| {
        find(dir, f).ok_or_else(|| Error::Missing {
            name: name.to_string(),
            dir: dir.display().to_string(),
        })
    };
    let [train_images, train_labels, test_images, test_labels] = MNIST_FILE_NAMES;
    let train = load_pair(&get(train_images)?, &get(train_labels)?, 10)?;
    let test_images = get(test_images)?;
    let test = load_pair(&test_images, &get(test_labels)?, 10)?;
    let (shape, test_shape) = (dense_shape(&train), dense_shape(&test));
    if test_shape != shape {
        return Err(Error::format(
            &test_images,
            format!(
                "images of {}×{}, expected {}×{} like the training images",
                test_shape[1], test_shape[2], shape[1], shape[2]
            ),
        ));
    }
    Ok((train, test, shape))
}

/// `a` followed by `b` (same sample shape and classes).
fn concat(a: &DenseDataset, b: &DenseDataset, shape: &[usize]) -> Result<DenseDataset> {
    let mut f = Vec::with_capacity((a.len() + b.len()) * a.sample_len());
    let mut y = Vec::with_capacity(a.len() + b.len());
    for ds in [a, b] {
        for i in 0..ds.len() {
            f.extend_from_slice(ds.sample(i));
        }
        y.extend_from_slice(ds.labels());
    }
    Ok(DenseDataset::new(f, shape.to_vec(), y, a.num_classes())?)
}

/// Per-feature `(x − μ_j) / (σ_j + 0.001)` with μ, σ (population) from `train`.
fn standardize(
    train: &DenseDataset,
    test: &DenseDataset,
    shape: &[usize],
) -> Result<(DenseDataset, DenseDataset)> {
    let d = train.sample_len();
    let n = train.len().max(1) as f64;
    let (mut mu, mut sq) = (vec![0f64; d], vec![0f64; d]);
    for i in 0..train.len() {
        for (j, &x) in train.sample(i).iter().enumerate() {
            mu[j] += x as f64;
            sq[j] += x as f64 * x as f64;
        }
    }
    let scale: Vec<(f32, f32)> = (0..d)
        .map(|j| {
            let m = mu[j] / n;
            let sd = (sq[j] / n - m * m).max(0.0).sqrt();
            (m as f32, (sd + 0.001) as f32)
        })
        .collect();
    let apply = |ds: &DenseDataset| {
        let mut f = Vec::with_capacity(ds.len() * d);
        for i in 0..ds.len() {
            f.extend(
                ds.sample(i)
                    .iter()
                    .zip(&scale)
                    .map(|(x, (m, s))| (x - m) / s),
            );
        }
        DenseDataset::new(f, shape.to_vec(), ds.labels().to_vec(), ds.num_classes())
    };
    Ok((apply(train)?, apply(test)?))
}

/// Encodes u8 data as an IDX file (for tests and tools).
pub fn encode(magic: u32, dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::Dataset;
    use std::io::Write;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fedpace-idx-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write_set(dir: &Path, prefix: &str, n: usize, gzip: bool) {
        let pixels: Vec<u8> = (0..n * 4).map(|i| (i * 37 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let im = encode(IMAGES_MAGIC, &[n, 2, 2], &pixels);
        let lb = encode(LABELS_MAGIC, &[n], &labels);
        let (im, lb, ext) = if gzip {
            (gz(&im), gz(&lb), ".gz")
        } else {
            (im, lb, "")
        };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), im).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lb).unwrap();
    }

    #[test]
    fn round_trip_plain_and_gzip() {
        for gzip in [false, true] {
            let d = tmpdir(if gzip { "gz" } else { "plain" });
            write_set(&d, "train", 12, gzip);
            write_set(&d, "t10k", 5, gzip);
            let (train, test) = load_mnist_dir(&d, "mnist").unwrap();
            assert_eq!((train.len(), test.len()), (12, 5));
            assert_eq!(train.label(11), 1);
            let b = train.batch(&[1]);
            match b.inputs {
                fedpace_core::Inputs::Dense { data, sample_shape } => {
                    assert_eq!(sample_shape, vec![1, 2, 2]);
                    let want: Vec<f32> = (4..8).map(|i| (i * 37 % 256) as f32 / 255.0).collect();
                    assert_eq!(data, want);
                }
                other => panic!("{other:?}"),
            }
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    /// Issue 10 (D15): a 700 KB `.gz` expanding to 600 MB was decompressed whole
    /// before the size check. Now at most one byte past the header's claim is read:
    /// 64 MiB of zeros behind a header claiming 4 bytes fails fast, in little memory.
    #[test]
    fn gzip_is_decompressed_only_as_far_as_the_header_claims() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&encode(LABELS_MAGIC, &[4], &[0, 1, 2, 3]))
            .unwrap();
        for _ in 0..64 {
            e.write_all(&vec![0u8; 1 << 20]).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        // A reader that counts what the decoder pulls out of the compressed stream.
        struct Counting<'a>(&'a [u8], usize);
        impl Read for Counting<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.read(buf)?;
                self.1 += n;
                Ok(n)
            }
        }
        let mut c = Counting(&bomb, 0);
        let err = parse_from(&mut c, None, LABELS_MAGIC, Path::new("bomb.gz")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bomb.gz: dimensions [4] need 4 data bytes, the gzip stream holds more"
        );
        assert!(c.1 < 64 << 10, "read {} compressed bytes", c.1);
        // A plain file's claim is checked against its length before allocating.
        let huge = encode(IMAGES_MAGIC, &[60_000, 28, 28], &[1, 2, 3]);
        let e = parse(&huge, IMAGES_MAGIC, Path::new("p")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p: dimensions [60000, 28, 28] need 47040000 data bytes, the file has 3"
        );
    }

    #[test]
    fn malformed_files_are_errors_naming_the_file() {
        let p = Path::new("bad-file");
        let e = parse(&encode(LABELS_MAGIC, &[3], &[1, 2]), LABELS_MAGIC, p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad-file: dimensions [3] need 3 data bytes, the file has 2"
        );
        let e = parse(&encode(LABELS_MAGIC, &[1], &[1]), IMAGES_MAGIC, p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad-file: magic number 0x00000801, expected 0x00000803"
        );
        let e = parse(&[0, 0, 8], IMAGES_MAGIC, p).unwrap_err();
        assert!(e.to_string().contains("too short"), "{e}");
        let e = parse(&[0, 0, 8, 3, 0, 0], IMAGES_MAGIC, p).unwrap_err();
        assert!(e.to_string().contains("too short for a header"), "{e}");
        let e = parse(&[0x1f, 0x8b, 1, 2, 3], IMAGES_MAGIC, p).unwrap_err();
        assert!(
            e.to_string().starts_with("bad-file: bad gzip stream"),
            "{e}"
        );
        let huge = encode(IMAGES_MAGIC, &[u32::MAX as usize; 3], &[]);
        assert!(parse(&huge, IMAGES_MAGIC, p).is_err());

        let d = tmpdir("mismatch");
        write_set(&d, "train", 4, false);
        std::fs::write(
            d.join("train-labels-idx1-ubyte"),
            encode(LABELS_MAGIC, &[3], &[0, 1, 2]),
        )
        .unwrap();
        let e = load_pair(
            &d.join("train-images-idx3-ubyte"),
            &d.join("train-labels-idx1-ubyte"),
            10,
        )
        .unwrap_err();
        assert!(e.to_string().contains("3 labels but"), "{e}");
        std::fs::write(
            d.join("train-labels-idx1-ubyte"),
            encode(LABELS_MAGIC, &[4], &[0, 1, 12, 2]),
        )
        .unwrap();
        let e = load_pair(
            &d.join("train-images-idx3-ubyte"),
            &d.join("train-labels-idx1-ubyte"),
            10,
        )
        .unwrap_err();
        assert!(e.to_string().contains("label 12 at item 2"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
        let d = tmpdir("missing");
        write_set(&d, "train", 4, false);
        let e = load_mnist_dir(&d, "mnist").unwrap_err();
        assert!(
            e.to_string().contains("run `fedpace datasets fetch mnist`"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
