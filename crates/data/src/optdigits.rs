//! **UCI optdigits**, embedded (docs/datasets.md §1.1 row 9, §7(a)2).
//!
//! 1,797 handwritten digits of 8×8 pixels valued 0..16, 10 classes: the UCI "optdigits"
//! test part as shipped in scikit-learn (`sklearn/datasets/data/digits.csv.gz`).
//! Licence CC BY 4.0, E. Alpaydin and C. Kaynak, UCI Machine Learning Repository; see
//! `crates/data/embedded/ATTRIBUTION.md`. `scripts/fetch-optdigits.py` regenerates the
//! embedded file: 65 raw bytes per sample (64 pixels, then the label), gzip -9.
//!
//! Loaded samples have shape `[1, 8, 8]` and values scaled to [0, 1] (÷16).

use crate::{Error, Result};
use fedpace_core::data::DenseDataset;
use sha2::{Digest, Sha256};
use std::io::Read;

/// The embedded file (raw u8, gzip).
pub const EMBEDDED: &[u8] = include_bytes!("../embedded/optdigits.u8.gz");
/// SHA-256 of [`EMBEDDED`], as printed by `scripts/fetch-optdigits.py`.
pub const SHA256: &str = "6b3813480b45407631ebcd3c2fbc69f43e6a7e3a3883dbf9f797004c0f0be0fc";
/// Number of samples.
pub const SAMPLES: usize = 1797;
/// Number of classes.
pub const CLASSES: usize = 10;
/// Shape of one sample.
pub const SAMPLE_SHAPE: [usize; 3] = [1, 8, 8];

/// Decodes the embedded data set.
pub fn load() -> Result<DenseDataset> {
    decode(EMBEDDED, "embedded optdigits.u8.gz")
}

/// Decodes an optdigits file in the embedded format (gzip of 65-byte records).
pub fn decode(gz: &[u8], name: &str) -> Result<DenseDataset> {
    let mut raw = Vec::with_capacity(SAMPLES * 65);
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .map_err(|e| Error::format(name, format!("not a valid gzip stream: {e}")))?;
    if raw.is_empty() || raw.len() % 65 != 0 {
        return Err(Error::format(
            name,
            format!("{} bytes, expected a multiple of 65", raw.len()),
        ));
    }
    let n = raw.len() / 65;
    let mut features = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in raw.chunks_exact(65).enumerate() {
        if let Some(&p) = rec[..64].iter().find(|&&p| p > 16) {
            return Err(Error::format(
                name,
                format!("sample {i}: pixel value {p}, expected 0..=16"),
            ));
        }
        if rec[64] as usize >= CLASSES {
            return Err(Error::format(
                name,
                format!("sample {i}: label {}, expected 0..=9", rec[64]),
            ));
        }
        features.extend(rec[..64].iter().map(|&p| p as f32 / 16.0));
        labels.push(rec[64] as u32);
    }
    Ok(DenseDataset::new(
        features,
        SAMPLE_SHAPE.to_vec(),
        labels,
        CLASSES,
    )?)
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::Dataset;

    #[test]
    fn embedded_file_matches_its_pinned_hash() {
        assert_eq!(sha256_hex(EMBEDDED), SHA256);
    }

    #[test]
    fn loads_1797_samples_scaled_to_unit_interval() {
        let d = load().unwrap();
        assert_eq!(d.len(), SAMPLES);
        // sklearn's load_digits histogram.
        assert_eq!(
            d.label_histogram(),
            vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
        );
        let mut max = 0f32;
        for i in 0..d.len() {
            for &v in d.sample(i) {
                assert!((0.0..=1.0).contains(&v));
                max = max.max(v);
            }
        }
        assert_eq!(max, 1.0);
        // First sample of load_digits is a 0 whose first row is [0,0,5,13,9,1,0,0].
        assert_eq!(d.label(0), 0);
        let row: Vec<f32> = d.sample(0)[..8].iter().map(|v| v * 16.0).collect();
        assert_eq!(row, vec![0., 0., 5., 13., 9., 1., 0., 0.]);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        assert!(decode(b"not gzip", "x")
            .unwrap_err()
            .to_string()
            .starts_with("x: not a valid gzip"));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &[0u8; 64]).unwrap();
        let gz = enc.finish().unwrap();
        let e = decode(&gz, "short.gz").unwrap_err().to_string();
        assert_eq!(e, "short.gz: 64 bytes, expected a multiple of 65");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut rec = vec![0u8; 65];
        rec[64] = 12;
        std::io::Write::write_all(&mut enc, &rec).unwrap();
        let e = decode(&enc.finish().unwrap(), "y").unwrap_err().to_string();
        assert!(e.contains("label 12"), "{e}");
    }
}
