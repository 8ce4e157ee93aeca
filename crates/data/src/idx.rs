//! **IDX** files (MNIST, Fashion-MNIST; DATASETS.md §1.1 rows 1–2), plain or gzip.
//!
//! Format: a big-endian header `0x00 0x00 type ndim` (type 0x08 = u8), then `ndim`
//! big-endian u32 dimensions, then the data. Images are magic `0x00000803`
//! (`[n, rows, cols]`), labels `0x00000801` (`[n]`). Everything in the header is checked
//! against the file length; any problem is an [`Error::Format`] naming the file.

use crate::{Error, Result};
use fedpace_core::data::DenseDataset;
use std::io::Read;
use std::path::{Path, PathBuf};

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

/// Parses IDX bytes (gunzipping first if they start with the gzip magic), expecting
/// `magic`. `path` only names the file in errors.
pub fn parse(bytes: &[u8], expected_magic: u32, path: &Path) -> Result<Idx> {
    let owned;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("bad gzip stream: {e}")))?;
        owned = out;
        &owned[..]
    } else {
        bytes
    };
    if bytes.len() < 4 {
        return Err(Error::format(
            path,
            format!("{} bytes, too short for an IDX header", bytes.len()),
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected_magic {
        return Err(Error::format(
            path,
            format!("magic number 0x{magic:08x}, expected 0x{expected_magic:08x}"),
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(Error::format(
            path,
            format!(
                "{} bytes, too short for a header with {ndim} dimensions",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("dimensions {dims:?} overflow")))?;
    let got = bytes.len() - header;
    if got != expected {
        return Err(Error::format(
            path,
            format!("dimensions {dims:?} need {expected} data bytes, the file has {got}"),
        ));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads and parses one IDX file.
pub fn read(path: &Path, expected_magic: u32) -> Result<Idx> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes, expected_magic, path)
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
    Ok(DenseDataset::new(
        features,
        vec![1, im.dims[1], im.dims[2]],
        labels,
        num_classes,
    )?)
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
    let get = |f: &str| {
        find(dir, f).ok_or_else(|| Error::Missing {
            name: name.to_string(),
            dir: dir.display().to_string(),
        })
    };
    let train = load_pair(
        &get("train-images-idx3-ubyte")?,
        &get("train-labels-idx1-ubyte")?,
        10,
    )?;
    let test = load_pair(
        &get("t10k-images-idx3-ubyte")?,
        &get("t10k-labels-idx1-ubyte")?,
        10,
    )?;
    Ok((train, test))
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
