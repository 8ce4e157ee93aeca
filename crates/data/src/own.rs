//! A client's own data (docs/network.md, "Clients bring their own data"): one file (or
//! folder) in any format fedpace reads, split into the client's training, validation and
//! test parts exactly as a simulation splits client `k`'s share of a pool.
//!
//! The samples are read in file order; the split is [`crate::pooled`]'s local split
//! (`rng::stream(data seed, 0, k, Purpose::Partition)`, ⌊(1 − test_fraction)·n⌋ training
//! samples) followed by [`crate::validation`]'s, both keyed by the client's id `k`. So a
//! client whose file holds, in order, the samples a simulation's per-client source gives
//! client `k` (`source = "npy"` with `npy.clients`, one `.npz` per client) has the same
//! splits, sample for sample, as in that simulation; and any client has the same split
//! *sizes* as a simulated client with as many samples.
//!
//! Shakespeare's text ([`OwnFormat::Shakespeare`]) is split as `source = "shakespeare"`
//! splits a role instead — temporally, then the last windows for validation — so a
//! participant bringing role R's lines has simulated client R's windows
//! ([`crate::shakespeare::own_federation`]).

use crate::csv::CsvConfig;
use crate::error::{Error, Result};
use crate::federation::{Federation, InputShape};
use crate::images::{ImagesConfig, ImagesSourceConfig};
use crate::leaf::LeafSourceConfig;
use crate::npy::NpyConfig;
use crate::partition::Partition;
use crate::DataConfig;
use fedpace_core::data::Dataset;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The formats a client's own data may come in (`fedpace client --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnFormat {
    /// An IDX image file (u8, `[n, rows, cols]`) and its IDX label file (`labels`).
    Idx,
    /// A CSV file with a header; the label column as the config's `[data.csv]` says
    /// (default: the last column).
    Csv,
    /// An `.npz` with arrays `x` and `y` (names as the config's `[data.npy]` says), or a
    /// `.npy` of features and its labels `.npy` (`labels`).
    Npy,
    /// A LEAF JSON file (or a directory of them) holding this client's one user.
    Leaf,
    /// A directory with one sub-directory of images per class.
    Images,
    /// Text for the next-character model of `source = "shakespeare"`: a plain text file
    /// of one speaker's lines, or a play file as fetched with `role` naming one role
    /// ([`crate::shakespeare::own_federation`]).
    Shakespeare,
}

impl OwnFormat {
    /// Every format, by its name (`idx`, `csv`, `npy`, `leaf`, `images`, `shakespeare`).
    pub const ALL: [(&'static str, OwnFormat); 6] = [
        ("idx", OwnFormat::Idx),
        ("csv", OwnFormat::Csv),
        ("npy", OwnFormat::Npy),
        ("leaf", OwnFormat::Leaf),
        ("images", OwnFormat::Images),
        ("shakespeare", OwnFormat::Shakespeare),
    ];

    /// The format of `path` by its extension (`.npy`/`.npz`, `.csv`, `.json`, IDX's
    /// `-ubyte`/`.idx*`, `.txt`/`.md` for Shakespeare's text); a directory of images
    /// otherwise.
    pub fn guess(path: &Path) -> OwnFormat {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".npy") || name.ends_with(".npz") {
            OwnFormat::Npy
        } else if name.ends_with(".csv") {
            OwnFormat::Csv
        } else if name.ends_with(".json") {
            OwnFormat::Leaf
        } else if name.ends_with("-ubyte") || name.contains(".idx") {
            OwnFormat::Idx
        } else if name.ends_with(".txt") || name.ends_with(".md") {
            OwnFormat::Shakespeare
        } else {
            OwnFormat::Images
        }
    }
}

/// Where a client's own data is.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnData {
    /// The format.
    pub format: OwnFormat,
    /// The file or directory.
    pub path: PathBuf,
    /// The labels file, for an IDX image file or a features `.npy`.
    pub labels: Option<PathBuf>,
    /// The speaking role to take from a play file (format `shakespeare` only).
    pub role: Option<String>,
}

/// Reads `own` as client `client`'s data and splits it as `base` (the experiment's
/// `[data]` table: its test and validation fractions, its seed, and the keys of the
/// format when `base` is of that source) says; `run_seed` is the run's seed. The
/// federation returned holds the data as client `client` (the ids below it are empty),
/// so [`Federation::data`]`.client(client)` is this client's splits. Errors name the file.
pub fn own_federation(
    own: &OwnData,
    base: &DataConfig,
    client: usize,
    num_classes: usize,
    run_seed: u64,
) -> Result<Federation> {
    let seed = base.data_seed(run_seed);
    if own.format == OwnFormat::Shakespeare {
        let fed = crate::shakespeare::own_federation(
            &own.path,
            own.role.as_deref(),
            base.effective_test_fraction(),
            client,
        )?;
        // As `build` splits `source = "shakespeare"`: the last windows, after a gap.
        return crate::validation::with_validation(
            fed,
            base.effective_validation_fraction(),
            crate::validation::Order::Tail {
                gap: crate::shakespeare::SEQ_LEN,
            },
            seed,
        );
    }
    let (samples, shape) = own_test_set(own, base, num_classes, run_seed)?;
    let mut parts: Vec<Vec<u32>> = vec![Vec::new(); client];
    parts.push((0..samples.len() as u32).collect());
    let fed = crate::pooled::federate_parts(
        &format!("own data ({})", own.path.display()),
        samples,
        parts,
        shape,
        base.effective_test_fraction(),
        seed,
    )?;
    crate::validation::with_validation(
        fed,
        base.effective_validation_fraction(),
        crate::validation::Order::Random,
        seed,
    )
}

/// Every sample of `own`, in file order, none held out, and one sample's shape: a
/// server's test set of its own (`fedpace server --test-data`). Format keys as for
/// [`own_federation`]; labels must be below `num_classes`. Errors name the file.
pub fn own_test_set(
    own: &OwnData,
    base: &DataConfig,
    num_classes: usize,
    run_seed: u64,
) -> Result<(Arc<dyn Dataset>, InputShape)> {
    let (samples, shape) = read(own, base, num_classes, run_seed)?;
    if samples.is_empty() {
        return Err(Error::format(&own.path, "no samples"));
    }
    if let Some(max) = (0..samples.len()).map(|i| samples.label(i)).max() {
        if max as usize >= num_classes {
            return Err(Error::format(
                &own.path,
                format!(
                    "label {max}: the model has {num_classes} classes ([input] num_classes); \
                     expected labels below {num_classes}"
                ),
            ));
        }
    }
    Ok((samples, shape))
}

/// The samples of `own` in file order, and one sample's shape.
fn read(
    own: &OwnData,
    base: &DataConfig,
    num_classes: usize,
    run_seed: u64,
) -> Result<(Arc<dyn Dataset>, InputShape)> {
    let path = &own.path;
    if own.role.is_some() && own.format != OwnFormat::Shakespeare {
        return Err(Error::invalid(
            "--role",
            own.role.as_deref().unwrap_or_default(),
            format!(
                "no role: {} is not Shakespeare's text; expected --role only with \
                 --format shakespeare",
                path.display()
            ),
        ));
    }
    let needs_labels = match own.format {
        OwnFormat::Idx => true,
        OwnFormat::Npy => path.extension().is_some_and(|e| e == "npy"),
        _ => false,
    };
    if needs_labels != own.labels.is_some() {
        return Err(Error::invalid(
            "--labels",
            own.labels
                .as_ref()
                .map_or("(missing)".into(), |l| l.display().to_string()),
            format!(
                "the labels file exactly when {} is an IDX image file or a features .npy",
                path.display()
            ),
        ));
    }
    let dense = |d: fedpace_core::data::DenseDataset| {
        let shape = InputShape::Dense(crate::federation::dense_shape(&d));
        (Arc::new(d) as Arc<dyn Dataset>, shape)
    };
    Ok(match own.format {
        OwnFormat::Shakespeare => (
            crate::shakespeare::own_windows(path, own.role.as_deref())?,
            InputShape::Tokens {
                seq_len: crate::shakespeare::SEQ_LEN,
                vocab: crate::shakespeare::VOCAB.len(),
            },
        ),
        OwnFormat::Npy => {
            let mut cfg = match base {
                DataConfig::Npy(c) => c.npy.clone().unwrap_or_else(|| NpyConfig::new(path)),
                _ => NpyConfig::new(path),
            };
            cfg.path = Some(path.clone());
            dense(cfg.load(path, own.labels.as_deref())?)
        }
        OwnFormat::Csv => {
            let mut cfg = match base {
                DataConfig::Csv(c) => c.csv.clone().unwrap_or_else(|| CsvConfig::new(path)),
                _ => CsvConfig::new(path),
            };
            cfg.path = path.clone();
            cfg.test_path = None;
            dense(crate::csv::load(&cfg)?.0)
        }
        OwnFormat::Idx => {
            let labels = own.labels.as_deref().expect("checked above");
            dense(crate::idx::load_pair(path, labels, num_classes)?)
        }
        OwnFormat::Leaf => {
            let mut cfg = match base {
                DataConfig::Leaf(c) => c.clone(),
                _ => LeafSourceConfig::new(path),
            };
            let leaf = cfg.leaf.get_or_insert_with(|| crate::leaf::LeafConfig {
                path: path.clone(),
                test_path: None,
                sample_shape: None,
            });
            leaf.path = path.clone();
            leaf.test_path = None;
            cfg.max_clients = None;
            cfg.partition = Some(Partition::Natural);
            cfg.test_fraction = Some(0.0);
            cfg.validation_fraction = None;
            let fed = cfg.federation(run_seed)?;
            if fed.data.num_clients() != 1 {
                return Err(Error::format(
                    path,
                    format!(
                        "{} users; expected one (a client's own data is one LEAF user)",
                        fed.data.num_clients()
                    ),
                ));
            }
            whole(&fed, path)?
        }
        OwnFormat::Images => {
            let mut images = match base {
                DataConfig::Images(c) => c.images.clone(),
                _ => None,
            }
            .unwrap_or(ImagesConfig {
                path: path.clone(),
                test_path: None,
                grayscale: false,
                resize: None,
            });
            images.path = path.clone();
            images.test_path = None;
            let cfg = ImagesSourceConfig {
                images: Some(images),
                num_clients: 1,
                partition: Some(Partition::Iid),
                test_fraction: Some(0.0),
                ..Default::default()
            };
            let fed = cfg.federation(run_seed)?;
            whole(&fed, path)?
        }
    })
}

/// Every sample of the one client of `fed` (its training split: the test fraction was 0).
fn whole(fed: &Federation, path: &Path) -> Result<(Arc<dyn Dataset>, InputShape)> {
    let c = fed
        .data
        .client(0)
        .map_err(|e| Error::format(path, e.to_string()))?;
    Ok((c.train, fed.sample_shape.clone()))
}

/// The order a client's own file must have for its split to be a given one: position
/// `order[j]` of the file holds the `j`-th sample of (training split, then test split).
/// It is the permutation [`own_federation`] applies (the local split's shuffle for
/// client `client` under data seed `seed`).
pub fn file_order(n: usize, client: usize, seed: u64) -> Vec<u32> {
    use rand::seq::SliceRandom;
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut fedpace_core::rng::stream(
        seed,
        0,
        client as u64,
        fedpace_core::rng::Purpose::Partition,
    ));
    order
}

/// Writes client `k` of the federation `base` describes (run seed `run_seed`, fetched
/// data under `data_dir`) as `out/client-<k>.npz` (arrays `x`, f32, and `y`, i64) for
/// every client, in the order ([`file_order`]) that makes [`own_federation`] give each
/// client the training, validation and test samples the simulation gives it. Returns
/// the files. Dense samples only; the source must split each client locally by
/// `test_fraction` (every source but `test_split = "pooled-matched"` and LEAF test files).
pub fn export(
    base: &DataConfig,
    run_seed: u64,
    data_dir: &Path,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    if base.source().name() == "shakespeare" {
        return Err(shakespeare_not_exported());
    }
    let fed = crate::build(
        &base.clone().with_validation_fraction(0.0),
        run_seed,
        data_dir,
    )?;
    let InputShape::Dense(shape) = &fed.sample_shape else {
        return Err(shakespeare_not_exported());
    };
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let seed = base.data_seed(run_seed);
    let tf = base.effective_test_fraction();
    let n_clients = fed.data.num_clients();
    let width = n_clients.saturating_sub(1).to_string().len().max(3);
    let mut files = Vec::with_capacity(n_clients);
    for k in 0..n_clients {
        let c = fed
            .data
            .client(k)
            .map_err(|e| Error::invalid("client", k, e.to_string()))?;
        let n = c.train.len() + c.test.len();
        if crate::pooled::split_point(n, tf) != c.train.len() || c.test.len() > n {
            return Err(Error::invalid(
                "data.test_split",
                format!("client {k}: {} training of {n} samples", c.train.len()),
                format!("a local split by test_fraction = {tf} (what a client's own data gets)"),
            ));
        }
        let mut at = vec![0u32; n];
        for (j, &p) in file_order(n, k, seed).iter().enumerate() {
            at[p as usize] = j as u32;
        }
        let per: usize = shape.iter().product();
        let mut x: Vec<u8> = Vec::with_capacity(4 * per * n);
        let mut y: Vec<u8> = Vec::with_capacity(8 * n);
        for &j in &at {
            let (d, i) = if (j as usize) < c.train.len() {
                (&c.train, j as usize)
            } else {
                (&c.test, j as usize - c.train.len())
            };
            match d.batch(&[i]).inputs {
                fedpace_core::data::Inputs::Dense { data, .. } => {
                    for v in data {
                        x.extend_from_slice(&v.to_le_bytes());
                    }
                }
                fedpace_core::data::Inputs::Tokens { .. } => unreachable!("dense checked"),
            }
            y.extend_from_slice(&i64::from(d.label(i)).to_le_bytes());
        }
        let mut x_shape = vec![n];
        x_shape.extend_from_slice(shape);
        let path = out.join(format!("client-{k:0width$}.npz"));
        write_npz(
            &path,
            &[
                ("x", npy_bytes("<f4", &x_shape, &x)),
                ("y", npy_bytes("<i8", &[n], &y)),
            ],
        )?;
        files.push(path);
    }
    Ok(files)
}

/// Why [`export`] writes no files for Shakespeare, and what a client does instead.
fn shakespeare_not_exported() -> Error {
    Error::invalid(
        "data.source",
        "shakespeare",
        "a source of dense samples: Shakespeare's clients are speaking roles, not sample \
         files; give a client its role as it is, `fedpace client CONFIG --data PLAY.md \
         --role NAME` (a play file under the data directory's shakespeare/plays, its role as \
         clients.csv names it), or its own lines, `--data LINES.txt`",
    )
}

/// An `.npy` file (format 1.0, C order) of `data` (already little-endian `descr`).
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// An `.npz` (a stored zip, as `np.savez` writes) of named `.npy` files, written beside
/// and renamed into place.
pub fn write_npz(path: &Path, arrays: &[(&str, Vec<u8>)]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("npz.tmp");
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut z = zip::ZipWriter::new(std::io::BufWriter::new(f));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(arrays.iter().any(|a| a.1.len() >= u32::MAX as usize));
    let io = |e: std::io::Error| Error::io(&tmp, e);
    for (name, bytes) in arrays {
        z.start_file(format!("{name}.npy"), opts)
            .map_err(|e| Error::format(&tmp, e.to_string()))?;
        z.write_all(bytes).map_err(io)?;
    }
    z.finish()
        .map_err(|e| Error::format(&tmp, e.to_string()))?
        .flush()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_guessed_from_the_name() {
        for (name, want) in [
            ("a/x.npz", OwnFormat::Npy),
            ("x.NPY", OwnFormat::Npy),
            ("t.csv", OwnFormat::Csv),
            ("u.json", OwnFormat::Leaf),
            ("train-images-idx3-ubyte.gz", OwnFormat::Idx),
            ("photos", OwnFormat::Images),
            ("my-lines.txt", OwnFormat::Shakespeare),
            ("plays/tragedy/hamlet.md", OwnFormat::Shakespeare),
        ] {
            assert_eq!(OwnFormat::guess(Path::new(name)), want, "{name}");
        }
    }
}
