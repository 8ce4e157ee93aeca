//! The configuration of a federation's data ([`DataConfig`], the `[data]` table of a
//! run config) and [`build`], which turns it into a [`Federation`].
//!
//! ```
//! use fedpace_data::{build, DataConfig, Partition, Source};
//! let cfg = DataConfig {
//!     source: Source::Optdigits,
//!     num_clients: 10,
//!     partition: Some(Partition::Dirichlet { alpha: 0.5, min_size: 10 }),
//!     ..DataConfig::default()
//! };
//! cfg.validate().unwrap();
//! let fed = build(&cfg, 42, std::path::Path::new("data")).unwrap();
//! assert_eq!(fed.data.num_clients(), 10);
//! assert_eq!(fed.num_classes, 10);
//! ```

use crate::pooled::Pooled;
use crate::synthetic::{Synthetic, SyntheticKind};
use crate::{partition, Error, Result};
use fedpace_core::data::{Dataset, FederatedDataset};
use fedpace_core::rng::{stream, Purpose};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the samples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// FedProx Synthetic(α, β), generated (DATASETS.md §4.2). 60 features, 10 classes.
    #[default]
    Synthetic,
    /// FedProx Synthetic-IID, generated: one shared model, v_k = 0.
    SyntheticIid,
    /// UCI optdigits, embedded: 1,797 samples of [1, 8, 8], 10 classes.
    Optdigits,
    /// MNIST from `data_dir/mnist` (`fedpace datasets fetch mnist`): [1, 28, 28], 10 classes.
    Mnist,
    /// Fashion-MNIST from `data_dir/fashion-mnist` (`fedpace datasets fetch fashion-mnist`).
    FashionMnist,
    /// Shakespeare by speaking role, LEAF-style, from `data_dir/shakespeare`
    /// (`fedpace datasets fetch shakespeare`): 80-char windows → next char, 80 classes.
    Shakespeare,
    /// A CSV file of numeric features (see `data.csv`).
    Csv,
    /// The benchmark workloads' data (BENCHMARKS.md): standard-normal features of
    /// `data.sample_shape`, uniform labels 0..9, client c seeded with 1000 + c.
    Bench,
}

impl Source {
    /// The kebab-case name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            Source::Synthetic => "synthetic",
            Source::SyntheticIid => "synthetic-iid",
            Source::Optdigits => "optdigits",
            Source::Mnist => "mnist",
            Source::FashionMnist => "fashion-mnist",
            Source::Shakespeare => "shakespeare",
            Source::Csv => "csv",
            Source::Bench => "bench",
        }
    }
    /// Whether clients come from the source itself (synthetic devices, Shakespeare
    /// roles) rather than from partitioning a pool.
    pub fn is_natural(self) -> bool {
        matches!(
            self,
            Source::Synthetic | Source::SyntheticIid | Source::Shakespeare | Source::Bench
        )
    }
}

/// How a pooled data set is split across clients (`data.partition`, a table tagged by
/// `kind`, e.g. `partition = { kind = "dirichlet", alpha = 0.5 }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Partition {
    /// Shuffle, then equal shares.
    Iid,
    /// Per-class Dirichlet with balancing (DATASETS.md §5.2).
    Dirichlet {
        /// Concentration α > 0: 100 ≈ IID, 0.5 moderate, 0.1 strong skew. Default 0.5.
        #[serde(default = "default_dirichlet_alpha")]
        alpha: f64,
        /// Redraw until every client holds at least this many samples. Default 10.
        #[serde(default = "default_min_size")]
        min_size: usize,
    },
    /// McMahan et al. 2017 shards: sort by label, cut into shards, deal them out.
    Shards {
        /// Shards per client. Default 2 (the paper's 100 clients × 2 × 300 on MNIST).
        #[serde(default = "default_two")]
        per_client: usize,
    },
    /// NIID-Bench "#C = k": each client holds `per_client` distinct labels.
    Labels {
        /// Labels per client, 1..=classes. Default 2.
        #[serde(default = "default_two")]
        per_client: usize,
    },
    /// pFedMe MNIST (ALGORITHMS.md X.3): client i holds labels `(i + j) mod C`, j <
    /// `per_client`, with random unequal sizes (pieces ∝ LogNormal(0, σ²)).
    CyclicLabels {
        /// Labels per client. Default 2.
        #[serde(default = "default_two")]
        per_client: usize,
        /// σ ≥ 0 of the lognormal piece weights (0 = equal). Default 0.5.
        #[serde(default = "default_half")]
        sigma: f64,
    },
    /// The pFedMe repository's MNIST script (ALGORITHMS.md X.3): the labels of
    /// `cyclic-labels` and the script's own steeply falling random sizes (see
    /// [`partition::pfedme`]).
    Pfedme {
        /// Labels per client. Default 2.
        #[serde(default = "default_two")]
        per_client: usize,
    },
    /// IID labels, client sizes ∝ LogNormal(0, σ²).
    PowerLaw {
        /// σ > 0 of the lognormal weights. Default 2 (FedProx MNIST).
        #[serde(default = "default_sigma")]
        sigma: f64,
    },
    /// The source's own clients (synthetic devices, Shakespeare roles).
    Natural,
}

fn default_dirichlet_alpha() -> f64 {
    0.5
}
fn default_min_size() -> usize {
    10
}
fn default_two() -> usize {
    2
}
fn default_half() -> f64 {
    0.5
}
fn default_sigma() -> f64 {
    2.0
}

impl Partition {
    /// The kebab-case tag.
    pub fn name(&self) -> &'static str {
        match self {
            Partition::Iid => "iid",
            Partition::Dirichlet { .. } => "dirichlet",
            Partition::Shards { .. } => "shards",
            Partition::Labels { .. } => "labels",
            Partition::CyclicLabels { .. } => "cyclic-labels",
            Partition::Pfedme { .. } => "pfedme",
            Partition::PowerLaw { .. } => "power-law",
            Partition::Natural => "natural",
        }
    }
}

/// Where each client's test split comes from (see [`crate::pooled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TestSplit {
    /// Hold out `test_fraction` of the client's own share (default).
    #[default]
    Local,
    /// Train on the whole share; draw a test split from the source's pooled test set
    /// with the same label distribution.
    PooledMatched,
}

/// Which CSV column holds the label: a header name or a 0-based index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelColumn {
    /// 0-based column index.
    Index(usize),
    /// Header name.
    Name(String),
}

/// A CSV source (`data.csv`): a header line, then one sample per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// The training file (relative paths are relative to the working directory).
    pub path: PathBuf,
    /// An optional held-out file with the same columns (the global test set).
    #[serde(default)]
    pub test_path: Option<PathBuf>,
    /// The label column, by header name or 0-based index. Default: the last column.
    #[serde(default)]
    pub label: Option<LabelColumn>,
    /// Field separator. Default `,`.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
}

fn default_delimiter() -> char {
    ','
}

impl CsvConfig {
    /// A config for `path` with the label in the last column.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            test_path: None,
            label: None,
            delimiter: ',',
        }
    }
}

/// The `[data]` table: which data set, how many clients, how it is split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Data source: `synthetic` | `synthetic-iid` | `optdigits` | `mnist` |
    /// `fashion-mnist` | `shakespeare` | `csv`. Default `synthetic`.
    pub source: Source,
    /// Synthetic only: std of the per-device model mean u_k (α ≥ 0). Default 1.
    pub alpha: f64,
    /// Synthetic only: std of the per-device feature mean B_k (β ≥ 0). Default 1.
    pub beta: f64,
    /// Number of clients (synthetic devices, or shares of a pooled set). Default 30.
    /// Ignored by `shakespeare`, whose clients are its roles (see `max_clients`).
    pub num_clients: usize,
    /// How a pooled set is split across clients. Default: the source's own clients for
    /// `synthetic*` and `shakespeare` (`natural`), `iid` for the others.
    pub partition: Option<Partition>,
    /// Fraction of each client's samples held out for its test split, in [0, 1).
    /// Default: 0.1 for `synthetic*` (FedProx 90/10), 0.2 otherwise (LEAF/FedAvg 80/20;
    /// Shakespeare's split is temporal).
    pub test_fraction: Option<f64>,
    /// Where client test splits come from: `local` (default) or `pooled-matched`
    /// (sources with their own test set).
    pub test_split: TestSplit,
    /// The CSV source; required when `source = "csv"`.
    pub csv: Option<CsvConfig>,
    /// Shakespeare only: keep the first N roles (in play-file, then first-line order).
    /// Default: all.
    pub max_clients: Option<usize>,
    /// `bench` only: shape of one sample. Default `[60]` (W-LR); `[1, 28, 28]` for W-MLP
    /// and W-CNN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_shape: Option<Vec<usize>>,
    /// `bench` only: samples per client. Default 600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_per_client: Option<usize>,
    /// MNIST / Fashion-MNIST: standardise every pixel over the training pool,
    /// `(x − μ_j) / (σ_j + 0.001)`, as the pFedMe data script does (ALGORITHMS.md X.3);
    /// the same μ, σ apply to the test set. Default false (pixels in [0, 1]).
    pub standardize: bool,
    /// MNIST / Fashion-MNIST: put the source's test images into the pool before
    /// partitioning (all 70,000 MNIST images, as the pFedMe data script does); clients'
    /// test splits then come from their own shares and there is no global test set.
    /// Default false (only the training images are partitioned).
    pub pool_test_set: bool,
    /// Seed of everything about the data (generation, partition, test splits), so one
    /// federation can be trained with several run seeds. Default: the run's `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: Source::Synthetic,
            alpha: 1.0,
            beta: 1.0,
            num_clients: 30,
            partition: None,
            test_fraction: None,
            test_split: TestSplit::Local,
            csv: None,
            max_clients: None,
            sample_shape: None,
            samples_per_client: None,
            standardize: false,
            pool_test_set: false,
            seed: None,
        }
    }
}

/// The shape of one model input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputShape {
    /// Dense features of this shape (e.g. `[60]`, `[1, 28, 28]`).
    Dense(Vec<usize>),
    /// Token sequences.
    Tokens {
        /// Sequence length.
        seq_len: usize,
        /// Vocabulary size.
        vocab: usize,
    },
}

/// A built federation: the clients' data and what a model needs to know about it.
#[derive(Clone)]
pub struct Federation {
    /// The clients' data, produced on demand.
    pub data: Arc<dyn FederatedDataset>,
    /// Shape of one input sample.
    pub sample_shape: InputShape,
    /// Number of label classes.
    pub num_classes: usize,
    /// The source's own held-out set (MNIST's 10k test images, a CSV `test_path`), if any.
    pub global_test: Option<Arc<dyn Dataset>>,
    /// One line for logs, e.g. `optdigits, 10 clients, dirichlet(alpha=0.5)`.
    pub description: String,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("description", &self.description)
            .field("num_clients", &self.data.num_clients())
            .field("sample_shape", &self.sample_shape)
            .field("num_classes", &self.num_classes)
            .finish()
    }
}

impl DataConfig {
    /// Synthetic(α, β) with `num_clients` devices.
    pub fn synthetic(alpha: f64, beta: f64) -> Self {
        Self {
            alpha,
            beta,
            ..Self::default()
        }
    }
    /// Sets the source.
    pub fn with_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }
    /// Sets the number of clients.
    pub fn with_num_clients(mut self, n: usize) -> Self {
        self.num_clients = n;
        self
    }
    /// Sets the partition.
    pub fn with_partition(mut self, p: Partition) -> Self {
        self.partition = Some(p);
        self
    }
    /// Sets the test fraction.
    pub fn with_test_fraction(mut self, f: f64) -> Self {
        self.test_fraction = Some(f);
        self
    }

    /// The partition in effect: the configured one or the source's default.
    pub fn effective_partition(&self) -> Partition {
        self.partition
            .clone()
            .unwrap_or(if self.source.is_natural() {
                Partition::Natural
            } else {
                Partition::Iid
            })
    }

    /// The test fraction in effect.
    pub fn effective_test_fraction(&self) -> f64 {
        self.test_fraction.unwrap_or(match self.source {
            Source::Synthetic | Source::SyntheticIid => 0.1,
            Source::Bench => 0.0,
            _ => 0.2,
        })
    }

    /// Checks every field without touching the disk. Errors name the field by its
    /// dotted path, e.g. `data.partition.alpha = -1: must be > 0`.
    pub fn validate(&self) -> Result<()> {
        let std_ok = |v: f64| v.is_finite() && v >= 0.0;
        if !std_ok(self.alpha) {
            return Err(Error::invalid(
                "data.alpha",
                self.alpha,
                "must be ≥ 0 (a standard deviation)",
            ));
        }
        if !std_ok(self.beta) {
            return Err(Error::invalid(
                "data.beta",
                self.beta,
                "must be ≥ 0 (a standard deviation)",
            ));
        }
        if self.num_clients == 0 {
            return Err(Error::invalid("data.num_clients", 0, "must be ≥ 1"));
        }
        if let Some(f) = self.test_fraction {
            if !(f.is_finite() && (0.0..1.0).contains(&f)) {
                return Err(Error::invalid("data.test_fraction", f, "must be in [0, 1)"));
            }
            if self.test_split == TestSplit::PooledMatched && f == 0.0 {
                return Err(Error::invalid(
                    "data.test_fraction",
                    f,
                    "must be > 0 with test_split = \"pooled-matched\"",
                ));
            }
        }
        match self.effective_partition() {
            Partition::Natural if !self.source.is_natural() => {
                return Err(Error::invalid(
                    "data.partition.kind",
                    "natural",
                    format!(
                        "source {} has no natural clients; use iid, dirichlet, shards, labels or power-law",
                        self.source.name()
                    ),
                ))
            }
            Partition::Natural => {}
            p if self.source.is_natural() => {
                return Err(Error::invalid(
                    "data.partition.kind",
                    p.name(),
                    format!(
                        "natural (source {} brings its own clients)",
                        self.source.name()
                    ),
                ))
            }
            Partition::Dirichlet { alpha, .. } if !(alpha.is_finite() && alpha > 0.0) => {
                return Err(Error::invalid("data.partition.alpha", alpha, "must be > 0"))
            }
            Partition::CyclicLabels { sigma, .. } if !(sigma.is_finite() && sigma >= 0.0) => {
                return Err(Error::invalid("data.partition.sigma", sigma, "must be >= 0"))
            }
            Partition::Shards { per_client: 0 }
            | Partition::Labels { per_client: 0 }
            | Partition::CyclicLabels { per_client: 0, .. }
            | Partition::Pfedme { per_client: 0 } => {
                return Err(Error::invalid("data.partition.per_client", 0, "must be ≥ 1"))
            }
            Partition::PowerLaw { sigma } if !(sigma.is_finite() && sigma > 0.0) => {
                return Err(Error::invalid("data.partition.sigma", sigma, "must be > 0"))
            }
            _ => {}
        }
        match (&self.csv, self.source) {
            (None, Source::Csv) => {
                return Err(Error::invalid(
                    "data.csv",
                    "(missing)",
                    "a [data.csv] table with at least `path` when source = \"csv\"",
                ))
            }
            (Some(_), s) if s != Source::Csv => {
                return Err(Error::invalid(
                    "data.csv",
                    "(set)",
                    format!("only used with source = \"csv\", not \"{}\"", s.name()),
                ))
            }
            (Some(c), _) if c.delimiter == '"' || c.delimiter == '\n' => {
                return Err(Error::invalid(
                    "data.csv.delimiter",
                    format!("{:?}", c.delimiter),
                    "a separator other than a quote or newline",
                ))
            }
            _ => {}
        }
        if self.source != Source::Bench {
            let bench_only = [
                ("data.sample_shape", self.sample_shape.is_some()),
                ("data.samples_per_client", self.samples_per_client.is_some()),
            ];
            if let Some((field, _)) = bench_only.iter().find(|f| f.1) {
                return Err(Error::invalid(
                    *field,
                    "(set)",
                    format!(
                        "only used with source = \"bench\", not \"{}\"",
                        self.source.name()
                    ),
                ));
            }
        }
        match (self.max_clients, self.source) {
            (Some(0), _) => return Err(Error::invalid("data.max_clients", 0, "must be ≥ 1")),
            (Some(m), s) if s != Source::Shakespeare => {
                return Err(Error::invalid(
                    "data.max_clients",
                    m,
                    format!(
                        "only used with source = \"shakespeare\", not \"{}\"",
                        s.name()
                    ),
                ))
            }
            _ => {}
        }
        if self.standardize && !matches!(self.source, Source::Mnist | Source::FashionMnist) {
            return Err(Error::invalid(
                "data.standardize",
                true,
                format!(
                    "only used with source = \"mnist\" or \"fashion-mnist\", not \"{}\"",
                    self.source.name()
                ),
            ));
        }
        if self.pool_test_set && !matches!(self.source, Source::Mnist | Source::FashionMnist) {
            return Err(Error::invalid(
                "data.pool_test_set",
                true,
                format!(
                    "only used with source = \"mnist\" or \"fashion-mnist\", not \"{}\"",
                    self.source.name()
                ),
            ));
        }
        if self.pool_test_set && self.test_split == TestSplit::PooledMatched {
            return Err(Error::invalid(
                "data.test_split",
                "pooled-matched",
                "local (data.pool_test_set = true leaves no separate test set to match from)",
            ));
        }
        if self.test_split == TestSplit::PooledMatched
            && !matches!(
                self.source,
                Source::Mnist | Source::FashionMnist | Source::Csv
            )
        {
            return Err(Error::invalid(
                "data.test_split",
                "pooled-matched",
                format!(
                    "local (source {} has no pooled test set)",
                    self.source.name()
                ),
            ));
        }
        Ok(())
    }
}

/// Builds the federation described by `cfg`. `cfg.seed`, or else `seed` (the run's),
/// drives generation and partitioning; `data_dir` holds fetched data sets
/// (`data_dir/<name>/`).
pub fn build(cfg: &DataConfig, seed: u64, data_dir: &Path) -> Result<Federation> {
    cfg.validate()?;
    let seed = cfg.seed.unwrap_or(seed);
    let tf = cfg.effective_test_fraction();
    match cfg.source {
        Source::Synthetic | Source::SyntheticIid => {
            let kind = if cfg.source == Source::Synthetic {
                SyntheticKind::NonIid {
                    alpha: cfg.alpha,
                    beta: cfg.beta,
                }
            } else {
                SyntheticKind::Iid
            };
            let s = Synthetic::new(kind, cfg.num_clients, tf, seed)?;
            Ok(Federation {
                description: format!("{}, {} devices (seed {seed})", s.name(), cfg.num_clients),
                data: Arc::new(s),
                sample_shape: InputShape::Dense(vec![crate::synthetic::FEATURES]),
                num_classes: crate::synthetic::CLASSES,
                global_test: None,
            })
        }
        Source::Bench => {
            let shape = cfg.sample_shape.clone().unwrap_or_else(|| vec![60]);
            let samples = cfg
                .samples_per_client
                .unwrap_or(crate::bench::DEFAULT_SAMPLES);
            let b = crate::bench::BenchData::new(cfg.num_clients, shape.clone(), samples, tf)?;
            Ok(Federation {
                description: format!(
                    "bench {shape:?} × {samples}, {} clients (seeds 1000 + c)",
                    cfg.num_clients
                ),
                data: Arc::new(b),
                sample_shape: InputShape::Dense(shape),
                num_classes: crate::bench::CLASSES,
                global_test: None,
            })
        }
        Source::Shakespeare => {
            crate::fetch::verify_cache("shakespeare", data_dir)?;
            let dir = data_dir.join("shakespeare");
            let s = crate::shakespeare::Shakespeare::load_dir(&dir, tf, cfg.max_clients)?;
            Ok(Federation {
                description: format!("shakespeare by role, {} clients", s.num_clients()),
                data: Arc::new(s),
                sample_shape: InputShape::Tokens {
                    seq_len: crate::shakespeare::SEQ_LEN,
                    vocab: crate::shakespeare::VOCAB.len(),
                },
                num_classes: crate::shakespeare::VOCAB.len(),
                global_test: None,
            })
        }
        Source::Optdigits | Source::Mnist | Source::FashionMnist | Source::Csv => {
            let (train, test): (Arc<dyn Dataset>, Option<Arc<dyn Dataset>>);
            let shape;
            match cfg.source {
                Source::Optdigits => {
                    train = Arc::new(crate::optdigits::load()?);
                    test = None;
                    shape = crate::optdigits::SAMPLE_SHAPE.to_vec();
                }
                Source::Mnist | Source::FashionMnist => {
                    let name = cfg.source.name();
                    crate::fetch::verify_cache(name, data_dir)?;
                    let (mut tr, mut te) = crate::idx::load_mnist_dir(&data_dir.join(name), name)?;
                    if cfg.pool_test_set {
                        tr = concat(&tr, &te)?;
                    }
                    if cfg.standardize {
                        (tr, te) = standardize(&tr, &te)?;
                    }
                    train = Arc::new(tr);
                    test = (!cfg.pool_test_set).then(|| Arc::new(te) as Arc<dyn Dataset>);
                    shape = vec![1, 28, 28];
                }
                _ => {
                    let c = cfg.csv.as_ref().expect("validated");
                    let (tr, te) = crate::csv::load(c)?;
                    shape = vec![tr.sample_len()];
                    train = Arc::new(tr);
                    test = te.map(|t| Arc::new(t) as Arc<dyn Dataset>);
                }
            }
            let labels: Vec<u32> = (0..train.len()).map(|i| train.label(i)).collect();
            let k = train.num_classes();
            let n = cfg.num_clients;
            let mut rng = stream(seed, 0, u64::MAX, Purpose::Partition);
            let p = cfg.effective_partition();
            let parts = match &p {
                Partition::Iid => partition::iid(labels.len(), n, &mut rng)?,
                Partition::Dirichlet { alpha, min_size } => {
                    partition::dirichlet(&labels, k, n, *alpha, *min_size, &mut rng)?
                }
                Partition::Shards { per_client } => {
                    partition::shards(&labels, n, *per_client, &mut rng)?
                }
                Partition::Labels { per_client } => {
                    partition::labels_per_client(&labels, k, n, *per_client, &mut rng)?
                }
                Partition::CyclicLabels { per_client, sigma } => {
                    partition::cyclic_labels(&labels, k, n, *per_client, *sigma, &mut rng)?
                }
                Partition::Pfedme { per_client } => {
                    partition::pfedme(&labels, k, n, *per_client, &mut rng)?
                }
                Partition::PowerLaw { sigma } => {
                    partition::power_law(labels.len(), n, *sigma, &mut rng)?
                }
                Partition::Natural => unreachable!("rejected by validate"),
            };
            let desc = format!(
                "{}, {n} clients, {} partition, test {} {tf} (seed {seed})",
                cfg.source.name(),
                describe(&p),
                match cfg.test_split {
                    TestSplit::Local => "local",
                    TestSplit::PooledMatched => "pooled-matched",
                },
            );
            let pooled = Pooled::new(
                cfg.source.name().to_string(),
                train,
                test,
                parts,
                tf,
                cfg.test_split,
                seed,
            )?;
            Ok(Federation {
                global_test: pooled.global_test(),
                data: Arc::new(pooled),
                sample_shape: InputShape::Dense(shape),
                num_classes: k,
                description: desc,
            })
        }
    }
}

/// `a` followed by `b` (same sample shape and classes).
fn concat(
    a: &fedpace_core::data::DenseDataset,
    b: &fedpace_core::data::DenseDataset,
) -> Result<fedpace_core::data::DenseDataset> {
    let mut f = Vec::with_capacity((a.len() + b.len()) * a.sample_len());
    let mut y = Vec::with_capacity(a.len() + b.len());
    for ds in [a, b] {
        for i in 0..ds.len() {
            f.extend_from_slice(ds.sample(i));
        }
        y.extend_from_slice(ds.labels());
    }
    Ok(fedpace_core::data::DenseDataset::new(
        f,
        vec![1, 28, 28],
        y,
        a.num_classes(),
    )?)
}

/// Per-feature `(x − μ_j) / (σ_j + 0.001)` with μ, σ (population) from `train`.
fn standardize(
    train: &fedpace_core::data::DenseDataset,
    test: &fedpace_core::data::DenseDataset,
) -> Result<(
    fedpace_core::data::DenseDataset,
    fedpace_core::data::DenseDataset,
)> {
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
    let apply = |ds: &fedpace_core::data::DenseDataset| {
        let mut f = Vec::with_capacity(ds.len() * d);
        for i in 0..ds.len() {
            f.extend(
                ds.sample(i)
                    .iter()
                    .zip(&scale)
                    .map(|(x, (m, s))| (x - m) / s),
            );
        }
        fedpace_core::data::DenseDataset::new(
            f,
            vec![1, 28, 28],
            ds.labels().to_vec(),
            ds.num_classes(),
        )
    };
    Ok((apply(train)?, apply(test)?))
}

fn describe(p: &Partition) -> String {
    match p {
        Partition::Dirichlet { alpha, min_size } => {
            format!("dirichlet(alpha={alpha}, min_size={min_size})")
        }
        Partition::Shards { per_client } => format!("shards({per_client} per client)"),
        Partition::Labels { per_client } => format!("labels({per_client} per client)"),
        Partition::PowerLaw { sigma } => format!("power-law(sigma={sigma})"),
        Partition::CyclicLabels { per_client, sigma } => {
            format!("cyclic-labels({per_client} per client, sigma={sigma})")
        }
        Partition::Pfedme { per_client } => format!("pfedme({per_client} per client)"),
        other => other.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_synthetic_1_1_with_30_clients() {
        let fed = build(&DataConfig::default(), 1, Path::new("/nonexistent")).unwrap();
        assert_eq!(fed.data.num_clients(), 30);
        assert_eq!(fed.data.name(), "synthetic(1,1)");
        assert_eq!(fed.sample_shape, InputShape::Dense(vec![60]));
        assert_eq!(fed.num_classes, 10);
        let c = fed.data.client(0).unwrap();
        let n = c.train.len() + c.test.len();
        assert_eq!(c.train.len(), (0.9 * n as f64 + 1e-9).floor() as usize);
    }

    #[test]
    fn serde_names_are_kebab_case_and_unknown_fields_are_rejected() {
        let cfg: DataConfig = serde_json::from_str(
            r#"{"source":"fashion-mnist","num_clients":100,
                "partition":{"kind":"dirichlet","alpha":0.1},"test_fraction":0.25}"#,
        )
        .unwrap();
        assert_eq!(cfg.source, Source::FashionMnist);
        assert_eq!(cfg.num_clients, 100);
        assert_eq!(
            cfg.partition,
            Some(Partition::Dirichlet {
                alpha: 0.1,
                min_size: 10
            })
        );
        assert_eq!(cfg.alpha, 1.0);
        let back: DataConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert!(serde_json::from_str::<DataConfig>(r#"{"clients":3}"#).is_err());
        assert!(
            serde_json::from_str::<DataConfig>(r#"{"partition":{"kind":"shards","x":1}}"#).is_err()
        );
        let p: Partition = serde_json::from_str(r#"{"kind":"power-law"}"#).unwrap();
        assert_eq!(p, Partition::PowerLaw { sigma: 2.0 });
        let c: CsvConfig = serde_json::from_str(r#"{"path":"a.csv","label":"y"}"#).unwrap();
        assert_eq!(c.label, Some(LabelColumn::Name("y".into())));
        let c: CsvConfig = serde_json::from_str(r#"{"path":"a.csv","label":0}"#).unwrap();
        assert_eq!(c.label, Some(LabelColumn::Index(0)));
    }

    #[test]
    fn validation_errors_name_the_field() {
        let base = DataConfig::default().with_source(Source::Optdigits);
        let cases: Vec<(DataConfig, &str)> = vec![
            (
                base.clone().with_partition(Partition::Dirichlet {
                    alpha: -1.0,
                    min_size: 10,
                }),
                "data.partition.alpha = -1: must be > 0",
            ),
            (DataConfig::synthetic(-0.5, 1.0), "data.alpha = -0.5: must be ≥ 0 (a standard deviation)"),
            (base.clone().with_num_clients(0), "data.num_clients = 0: must be ≥ 1"),
            (base.clone().with_test_fraction(1.0), "data.test_fraction = 1: must be in [0, 1)"),
            (
                base.clone().with_partition(Partition::Shards { per_client: 0 }),
                "data.partition.per_client = 0: must be ≥ 1",
            ),
            (
                base.clone().with_partition(Partition::PowerLaw { sigma: 0.0 }),
                "data.partition.sigma = 0: must be > 0",
            ),
            (
                base.clone().with_partition(Partition::Natural),
                "data.partition.kind = natural: source optdigits has no natural clients; use iid, dirichlet, shards, labels or power-law",
            ),
            (
                DataConfig::default().with_partition(Partition::Iid),
                "data.partition.kind = iid: natural (source synthetic brings its own clients)",
            ),
            (
                DataConfig::default().with_source(Source::Csv),
                "data.csv = (missing): a [data.csv] table with at least `path` when source = \"csv\"",
            ),
            (
                DataConfig {
                    max_clients: Some(3),
                    ..base.clone()
                },
                "data.max_clients = 3: only used with source = \"shakespeare\", not \"optdigits\"",
            ),
        ];
        for (cfg, msg) in cases {
            assert_eq!(cfg.validate().unwrap_err().to_string(), msg);
        }
    }

    #[test]
    fn optdigits_partitions_cover_every_sample_once() {
        for p in [
            Partition::Iid,
            Partition::Dirichlet {
                alpha: 0.5,
                min_size: 10,
            },
            Partition::Shards { per_client: 2 },
            Partition::Labels { per_client: 3 },
            Partition::PowerLaw { sigma: 1.0 },
        ] {
            let cfg = DataConfig::default()
                .with_source(Source::Optdigits)
                .with_num_clients(12)
                .with_partition(p.clone());
            let fed = build(&cfg, 9, Path::new("/nonexistent")).unwrap();
            assert_eq!(fed.sample_shape, InputShape::Dense(vec![1, 8, 8]));
            let mut total = 0;
            for k in 0..12 {
                let c = fed.data.client(k).unwrap();
                total += c.train.len() + c.test.len();
                assert_eq!(fed.data.train_len(k).unwrap(), c.train.len());
                if c.train.len() + c.test.len() >= 10 {
                    assert!(!c.test.is_empty(), "{p:?}: client {k} has no test split");
                }
            }
            assert_eq!(total, crate::optdigits::SAMPLES, "{p:?}");
            // Same seed, same federation.
            let again = build(&cfg, 9, Path::new("/nonexistent")).unwrap();
            assert_eq!(
                again.data.client(3).unwrap().train.batch(&[0]).labels,
                fed.data.client(3).unwrap().train.batch(&[0]).labels
            );
        }
    }

    #[test]
    fn missing_fetched_data_says_which_command_to_run() {
        let cfg = DataConfig::default().with_source(Source::Mnist);
        let e = build(&cfg, 0, Path::new("/nonexistent")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("run `fedpace datasets fetch mnist`"),
            "{e}"
        );
    }

    /// `pool_test_set` puts MNIST's test images into the partitioned pool (all 70,000 in
    /// the real set): here 6 training + 4 test images, all of them reach some client and
    /// no global test set remains; without it only the 6 training images are split.
    #[test]
    fn pool_test_set_partitions_train_and_test_images_together() {
        use crate::idx::{encode, IMAGES_MAGIC, LABELS_MAGIC};
        let dir = std::env::temp_dir().join(format!("fedpace-pool-{}", std::process::id()));
        let mnist = dir.join("mnist");
        std::fs::create_dir_all(&mnist).unwrap();
        // Gzipped: files under other names than the pinned ones are the user's own and
        // are not checked against the real MNIST's SHA-256 (crate::cache).
        let gz = |bytes: Vec<u8>| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            e.finish().unwrap()
        };
        let write = |name: &str, n: usize| {
            let px: Vec<u8> = (0..n * 784).map(|i| (i % 251) as u8).collect();
            let lb: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            std::fs::write(
                mnist.join(format!("{name}-images-idx3-ubyte.gz")),
                gz(encode(IMAGES_MAGIC, &[n, 28, 28], &px)),
            )
            .unwrap();
            std::fs::write(
                mnist.join(format!("{name}-labels-idx1-ubyte.gz")),
                gz(encode(LABELS_MAGIC, &[n], &lb)),
            )
            .unwrap();
        };
        write("train", 6);
        write("t10k", 4);
        let total = |fed: &Federation| {
            (0..2)
                .map(|k| {
                    let c = fed.data.client(k).unwrap();
                    c.train.len() + c.test.len()
                })
                .sum::<usize>()
        };
        let mut cfg = DataConfig::default().with_source(Source::Mnist);
        cfg.num_clients = 2;
        cfg.standardize = true;
        let plain = build(&cfg, 0, &dir).unwrap();
        assert_eq!(total(&plain), 6);
        assert!(plain.global_test.is_some());
        cfg.pool_test_set = true;
        let pooled = build(&cfg, 0, &dir).unwrap();
        assert_eq!(total(&pooled), 10);
        assert!(pooled.global_test.is_none());
        // A fixed data seed gives the same federation under any run seed.
        cfg.seed = Some(4);
        let (a, b) = (build(&cfg, 0, &dir).unwrap(), build(&cfg, 1, &dir).unwrap());
        for k in 0..2 {
            let (ca, cb) = (a.data.client(k).unwrap(), b.data.client(k).unwrap());
            let all: Vec<usize> = (0..ca.train.len()).collect();
            assert_eq!(ca.train.batch(&all), cb.train.batch(&all));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pool_test_set_is_rejected_where_it_means_nothing() {
        let mut cfg = DataConfig {
            pool_test_set: true,
            ..DataConfig::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("data.pool_test_set") && e.contains("synthetic"),
            "{e}"
        );
        cfg.source = Source::Mnist;
        cfg.num_clients = 20;
        cfg.test_split = TestSplit::PooledMatched;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("data.test_split"), "{e}");
    }
}
