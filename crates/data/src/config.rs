//! The `[data]` table of a run config ([`DataConfig`]) and [`build`], which turns it
//! into a [`Federation`].
//!
//! `[data]` is tagged by `source` (default `synthetic`); each source takes its own keys,
//! typed in a struct next to its loader ([`SyntheticConfig`], [`MnistConfig`],
//! [`CsvSourceConfig`], …; docs/configuration.md lists them). A key the chosen source
//! does not take is an error naming it — nothing is silently ignored.
//!
//! ```
//! use fedpace_data::{build, DataConfig, Partition, Source};
//! let cfg = DataConfig::default()
//!     .with_source(Source::Optdigits)
//!     .with_num_clients(10)
//!     .with_partition(Partition::Dirichlet { alpha: 0.5, min_size: 10 });
//! cfg.validate().unwrap();
//! let fed = build(&cfg, 42, std::path::Path::new("data")).unwrap();
//! assert_eq!(fed.data.num_clients(), 10);
//! assert_eq!(fed.num_classes, 10);
//! ```

use crate::bench::BenchConfig;
use crate::csv::CsvSourceConfig;
use crate::idx::MnistConfig;
use crate::images::ImagesSourceConfig;
use crate::leaf::LeafSourceConfig;
use crate::npy::NpySourceConfig;
use crate::partition::Partition;
use crate::pooled::PoolConfig;
use crate::shakespeare::ShakespeareConfig;
use crate::synthetic::{SyntheticConfig, SyntheticIidConfig};
use crate::{Federation, Result};
use fedpace_core::data::Dataset;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The name of a source (`data.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// FedProx Synthetic(α, β), generated (docs/datasets.md §4.2). 60 features, 10 classes.
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
    /// A CSV file of numeric features (`[data.csv]`).
    Csv,
    /// The benchmark workloads' data (docs/benchmarks.md): standard-normal features of
    /// `data.sample_shape`, uniform labels 0..9, client c seeded with 1000 + c.
    Bench,
    /// NumPy `.npy`/`.npz` arrays (`[data.npy]`): a pool, or one file per client.
    Npy,
    /// LEAF JSON files (`[data.leaf]`): one client per user.
    Leaf,
    /// Image folders, one per class (`[data.images]`).
    Images,
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
            Source::Npy => "npy",
            Source::Leaf => "leaf",
            Source::Images => "images",
        }
    }
}

/// The `[data]` table: which data set, how many clients, how it is split. One variant
/// per source, each with its own keys (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum DataConfig {
    /// `synthetic`.
    Synthetic(SyntheticConfig),
    /// `synthetic-iid`.
    SyntheticIid(SyntheticIidConfig),
    /// `optdigits`: only the keys every pooled source takes.
    Optdigits(PoolConfig),
    /// `mnist`.
    Mnist(MnistConfig),
    /// `fashion-mnist`.
    FashionMnist(MnistConfig),
    /// `shakespeare`.
    Shakespeare(ShakespeareConfig),
    /// `csv`.
    Csv(CsvSourceConfig),
    /// `bench`.
    Bench(BenchConfig),
    /// `npy`.
    Npy(NpySourceConfig),
    /// `leaf`.
    Leaf(LeafSourceConfig),
    /// `images`.
    Images(ImagesSourceConfig),
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig::Synthetic(SyntheticConfig::default())
    }
}

/// A missing `source` means `synthetic`; the other keys go to the chosen source's
/// struct, whose errors name the key (`data.num_clients: invalid type …`,
/// `data.alpha: unknown field `alpha` for source = "mnist", expected one of …`).
impl<'de> Deserialize<'de> for DataConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(d)?;
        let source = match table.remove("source") {
            None => Source::Synthetic,
            Some(v) => Source::deserialize(v)
                .map_err(|e| D::Error::custom(format!("data.source: {}", one_line(&e))))?,
        };
        DataConfig::from_table(source, table).map_err(D::Error::custom)
    }
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("in `"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The keys of one source, from what is left of `[data]` after `source`.
fn section<T: DeserializeOwned>(
    source: Source,
    table: toml::Table,
) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let mut msg = one_line(e.inner());
        if let (Some(rest), false) = (msg.strip_prefix("unknown field "), path.contains('.')) {
            if let Some((key, tail)) = rest.split_once(", ") {
                msg = format!(
                    "unknown field {key} for source = \"{}\", {tail}",
                    source.name()
                );
            }
        }
        match path.as_str() {
            "." | "" => format!("data: {msg}"),
            p => format!("data.{p}: {msg}"),
        }
    })
}

impl DataConfig {
    fn from_table(source: Source, t: toml::Table) -> std::result::Result<Self, String> {
        Ok(match source {
            Source::Synthetic => DataConfig::Synthetic(section(source, t)?),
            Source::SyntheticIid => DataConfig::SyntheticIid(section(source, t)?),
            Source::Optdigits => DataConfig::Optdigits(section(source, t)?),
            Source::Mnist => DataConfig::Mnist(section(source, t)?),
            Source::FashionMnist => DataConfig::FashionMnist(section(source, t)?),
            Source::Shakespeare => DataConfig::Shakespeare(section(source, t)?),
            Source::Csv => DataConfig::Csv(section(source, t)?),
            Source::Bench => DataConfig::Bench(section(source, t)?),
            Source::Npy => DataConfig::Npy(section(source, t)?),
            Source::Leaf => DataConfig::Leaf(section(source, t)?),
            Source::Images => DataConfig::Images(section(source, t)?),
        })
    }

    /// Synthetic(α, β) with the default 30 devices.
    pub fn synthetic(alpha: f64, beta: f64) -> Self {
        DataConfig::Synthetic(SyntheticConfig {
            alpha,
            beta,
            ..SyntheticConfig::default()
        })
    }

    /// The default config of `source`.
    pub fn of(source: Source) -> Self {
        match source {
            Source::Synthetic => Self::default(),
            Source::SyntheticIid => DataConfig::SyntheticIid(Default::default()),
            Source::Optdigits => DataConfig::Optdigits(Default::default()),
            Source::Mnist => DataConfig::Mnist(Default::default()),
            Source::FashionMnist => DataConfig::FashionMnist(Default::default()),
            Source::Shakespeare => DataConfig::Shakespeare(Default::default()),
            Source::Csv => DataConfig::Csv(Default::default()),
            Source::Bench => DataConfig::Bench(Default::default()),
            Source::Npy => DataConfig::Npy(Default::default()),
            Source::Leaf => DataConfig::Leaf(Default::default()),
            Source::Images => DataConfig::Images(Default::default()),
        }
    }

    /// The source.
    pub fn source(&self) -> Source {
        match self {
            DataConfig::Synthetic(_) => Source::Synthetic,
            DataConfig::SyntheticIid(_) => Source::SyntheticIid,
            DataConfig::Optdigits(_) => Source::Optdigits,
            DataConfig::Mnist(_) => Source::Mnist,
            DataConfig::FashionMnist(_) => Source::FashionMnist,
            DataConfig::Shakespeare(_) => Source::Shakespeare,
            DataConfig::Csv(_) => Source::Csv,
            DataConfig::Bench(_) => Source::Bench,
            DataConfig::Npy(_) => Source::Npy,
            DataConfig::Leaf(_) => Source::Leaf,
            DataConfig::Images(_) => Source::Images,
        }
    }

    /// Whether clients come from the source itself (synthetic devices, Shakespeare
    /// roles, bench clients, LEAF users, per-client NumPy files) rather than from
    /// partitioning a pool.
    pub fn is_natural(&self) -> bool {
        match self {
            DataConfig::Npy(c) => c.per_client(),
            _ => matches!(
                self,
                DataConfig::Synthetic(_)
                    | DataConfig::SyntheticIid(_)
                    | DataConfig::Shakespeare(_)
                    | DataConfig::Bench(_)
                    | DataConfig::Leaf(_)
            ),
        }
    }

    /// The keys most sources share, as mutable references (`num_clients` is `None` for
    /// sources whose clients are counted by the data, e.g. Shakespeare's roles).
    fn shared_mut(&mut self) -> Shared<'_> {
        match self {
            DataConfig::Synthetic(c) => Shared {
                num_clients: Some(&mut c.num_clients),
                partition: &mut c.partition,
                test_fraction: &mut c.test_fraction,
                validation_fraction: &mut c.validation_fraction,
                seed: Some(&mut c.seed),
            },
            DataConfig::SyntheticIid(c) => Shared {
                num_clients: Some(&mut c.num_clients),
                partition: &mut c.partition,
                test_fraction: &mut c.test_fraction,
                validation_fraction: &mut c.validation_fraction,
                seed: Some(&mut c.seed),
            },
            DataConfig::Optdigits(c) => Shared {
                num_clients: Some(&mut c.num_clients),
                partition: &mut c.partition,
                test_fraction: &mut c.test_fraction,
                validation_fraction: &mut c.validation_fraction,
                seed: Some(&mut c.seed),
            },
            DataConfig::Mnist(c) | DataConfig::FashionMnist(c) => Shared {
                num_clients: Some(&mut c.num_clients),
                partition: &mut c.partition,
                test_fraction: &mut c.test_fraction,
                validation_fraction: &mut c.validation_fraction,
                seed: Some(&mut c.seed),
            },
            DataConfig::Shakespeare(c) => Shared {
                num_clients: None,
                partition: &mut c.partition,
                test_fraction: &mut c.test_fraction,
                validation_fraction: &mut c.validation_fraction,
                seed: None,
            },
            DataConfig::Csv(c) => Shared {
                num_clients: Some(&mut c.num_clients),
                partition: &mut c.partition,
                test_fraction: &mut c.test_fraction,
                validation_fraction: &mut c.validation_fraction,
                seed: Some(&mut c.seed),
            },
            DataConfig::Bench(c) => Shared {
                num_clients: Some(&mut c.num_clients),
                partition: &mut c.partition,
                test_fraction: &mut c.test_fraction,
                validation_fraction: &mut c.validation_fraction,
                seed: None,
            },
            // `num_clients` is optional here (with per-client files the files count
            // them): see `num_clients` and `with_num_clients`.
            DataConfig::Npy(c) => Shared {
                num_clients: None,
                partition: &mut c.partition,
                test_fraction: &mut c.test_fraction,
                validation_fraction: &mut c.validation_fraction,
                seed: Some(&mut c.seed),
            },
            DataConfig::Leaf(c) => Shared {
                num_clients: None,
                partition: &mut c.partition,
                test_fraction: &mut c.test_fraction,
                validation_fraction: &mut c.validation_fraction,
                seed: Some(&mut c.seed),
            },
            DataConfig::Images(c) => Shared {
                num_clients: Some(&mut c.num_clients),
                partition: &mut c.partition,
                test_fraction: &mut c.test_fraction,
                validation_fraction: &mut c.validation_fraction,
                seed: Some(&mut c.seed),
            },
        }
    }

    /// The number of clients asked for, if the source takes `num_clients`.
    pub fn num_clients(&self) -> Option<usize> {
        match self {
            DataConfig::Npy(c) => c
                .num_clients
                .or((!c.per_client()).then(|| c.pool().num_clients)),
            _ => self.clone().shared_mut().num_clients.map(|n| *n),
        }
    }

    /// The default config of `source`, keeping this one's `num_clients` and
    /// `test_fraction` where both sources take them.
    pub fn with_source(self, source: Source) -> Self {
        let mut out = Self::of(source);
        let mut old = self;
        let (from, to) = (old.shared_mut(), out.shared_mut());
        if let (Some(a), Some(b)) = (from.num_clients, to.num_clients) {
            *b = *a;
        }
        *to.test_fraction = *from.test_fraction;
        *to.validation_fraction = *from.validation_fraction;
        out
    }

    /// Sets the number of clients (ignored by sources whose data counts them).
    pub fn with_num_clients(mut self, n: usize) -> Self {
        if let DataConfig::Npy(c) = &mut self {
            c.num_clients = Some(n);
        } else if let Some(c) = self.shared_mut().num_clients {
            *c = n;
        }
        self
    }

    /// Sets the partition.
    pub fn with_partition(mut self, p: Partition) -> Self {
        *self.shared_mut().partition = Some(p);
        self
    }

    /// Sets the test fraction.
    pub fn with_test_fraction(mut self, f: f64) -> Self {
        *self.shared_mut().test_fraction = Some(f);
        self
    }

    /// The partition in effect: the configured one or the source's default (`natural`
    /// for sources with their own clients, `iid` otherwise).
    pub fn effective_partition(&self) -> Partition {
        let natural = self.is_natural();
        self.clone()
            .shared_mut()
            .partition
            .clone()
            .unwrap_or(if natural {
                Partition::Natural
            } else {
                Partition::Iid
            })
    }

    /// The test fraction in effect: 0.1 for `synthetic*` (FedProx 90/10), 0 for
    /// `bench`, 0.2 otherwise (LEAF/FedAvg 80/20; Shakespeare's split is temporal).
    pub fn effective_test_fraction(&self) -> f64 {
        let default = match self {
            DataConfig::Synthetic(_) | DataConfig::SyntheticIid(_) => {
                crate::synthetic::DEFAULT_TEST_FRACTION
            }
            DataConfig::Bench(_) => 0.0,
            _ => crate::pooled::DEFAULT_TEST_FRACTION,
        };
        self.clone().shared_mut().test_fraction.unwrap_or(default)
    }

    /// Sets the validation fraction.
    pub fn with_validation_fraction(mut self, f: f64) -> Self {
        *self.shared_mut().validation_fraction = Some(f);
        self
    }

    /// The validation fraction in effect: the share of each client's training split
    /// held out as its validation split (default 0: no validation splits).
    pub fn effective_validation_fraction(&self) -> f64 {
        self.clone().shared_mut().validation_fraction.unwrap_or(0.0)
    }

    /// The seed of the data (generation, partition, splits): the source's `seed` key,
    /// else the run's `run_seed`.
    pub fn data_seed(&self, run_seed: u64) -> u64 {
        self.clone()
            .shared_mut()
            .seed
            .and_then(|s| *s)
            .unwrap_or(run_seed)
    }

    /// This config with every default that depends on the source written out (the
    /// partition and test fraction in effect): what a run records as `config.toml`.
    pub fn resolved(&self) -> Self {
        let (p, tf) = (self.effective_partition(), self.effective_test_fraction());
        let mut out = self.clone();
        let s = out.shared_mut();
        *s.partition = Some(p);
        *s.test_fraction = Some(tf);
        out
    }

    /// Checks every key without touching the disk. Errors name the key by its dotted
    /// path, e.g. `data.partition.alpha = -1: must be > 0`.
    pub fn validate(&self) -> Result<()> {
        crate::validation::check_fraction(self.clone().shared_mut().validation_fraction.as_ref())?;
        match self {
            DataConfig::Synthetic(c) => c.validate(),
            DataConfig::SyntheticIid(c) => c.validate(),
            DataConfig::Optdigits(c) => c.validate("optdigits", false),
            DataConfig::Mnist(c) => c.validate("mnist"),
            DataConfig::FashionMnist(c) => c.validate("fashion-mnist"),
            DataConfig::Shakespeare(c) => c.validate(),
            DataConfig::Csv(c) => c.validate(),
            DataConfig::Bench(c) => c.validate(),
            DataConfig::Npy(c) => c.validate(),
            DataConfig::Leaf(c) => c.validate(),
            DataConfig::Images(c) => c.validate(),
        }
    }
}

/// See [`DataConfig::shared_mut`].
struct Shared<'a> {
    num_clients: Option<&'a mut usize>,
    partition: &'a mut Option<Partition>,
    test_fraction: &'a mut Option<f64>,
    validation_fraction: &'a mut Option<f64>,
    /// The source's own seed key (`None` for sources without one).
    seed: Option<&'a mut Option<u64>>,
}

/// Builds the federation described by `cfg`. The config's `seed`, or else `seed` (the
/// run's), drives generation and partitioning; `data_dir` holds fetched data sets
/// (`data_dir/<name>/`).
pub fn build(cfg: &DataConfig, seed: u64, data_dir: &Path) -> Result<Federation> {
    cfg.validate()?;
    let fed = build_splits(cfg, seed, data_dir)?;
    let order = match cfg {
        DataConfig::Shakespeare(_) => crate::validation::Order::Tail {
            gap: crate::shakespeare::SEQ_LEN,
        },
        _ => crate::validation::Order::Random,
    };
    crate::validation::with_validation(
        fed,
        cfg.effective_validation_fraction(),
        order,
        cfg.data_seed(seed),
    )
}

/// The source's train and test splits (and held-out set), before validation splits.
fn build_splits(cfg: &DataConfig, seed: u64, data_dir: &Path) -> Result<Federation> {
    match cfg {
        DataConfig::Synthetic(c) => c.federation(seed),
        DataConfig::SyntheticIid(c) => c.federation(seed),
        DataConfig::Bench(c) => c.federation(),
        DataConfig::Shakespeare(c) => c.federation(data_dir),
        DataConfig::Optdigits(c) => {
            let train = Arc::new(crate::optdigits::load()?) as Arc<dyn Dataset>;
            let shape = crate::optdigits::SAMPLE_SHAPE.to_vec();
            crate::pooled::federate("optdigits", train, None, shape, c, seed)
        }
        DataConfig::Mnist(c) => c.federation("mnist", data_dir, seed),
        DataConfig::FashionMnist(c) => c.federation("fashion-mnist", data_dir, seed),
        DataConfig::Csv(c) => c.federation(seed),
        DataConfig::Npy(c) => c.federation(seed),
        DataConfig::Leaf(c) => c.federation(seed),
        DataConfig::Images(c) => c.federation(seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CsvConfig, InputShape, LabelColumn, TestSplit};

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
        let DataConfig::FashionMnist(m) = &cfg else {
            panic!("{cfg:?}")
        };
        assert_eq!(m.num_clients, 100);
        assert_eq!(
            m.partition,
            Some(Partition::Dirichlet {
                alpha: 0.1,
                min_size: 10
            })
        );
        assert!(m.verify);
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

    /// Issue 11: `[data]` was one flat bag whose keys were silently ignored by the
    /// sources that do not use them (`alpha` on MNIST). Each source now takes only its
    /// own keys; errors name the key on one line.
    #[test]
    fn each_source_takes_only_its_own_keys_and_errors_name_the_key() {
        let parse = |text: &str| -> std::result::Result<DataConfig, String> {
            toml::from_str::<DataConfig>(text).map_err(|e| one_line(&e))
        };
        assert_eq!(parse("").unwrap(), DataConfig::default());
        assert_eq!(parse("num_clients = 7").unwrap().num_clients(), Some(7));
        let cases = [
            (
                "source = \"mnist\"\nalpha = 1.0",
                "data.alpha: unknown field `alpha` for source = \"mnist\", expected one of `num_clients`",
            ),
            (
                "source = \"shakespeare\"\nnum_clients = 3",
                "data.num_clients: unknown field `num_clients` for source = \"shakespeare\"",
            ),
            (
                "num_clients = \"many\"",
                "data.num_clients: invalid type: string \"many\", expected usize",
            ),
            ("source = \"cifar\"", "data.source: unknown variant `cifar`"),
            (
                "source = \"optdigits\"\npartition = { kind = \"shards\", x = 1 }",
                "data.partition: unknown field `x`",
            ),
            (
                "source = \"csv\"\ncsv = { path = \"a.csv\", sep = \";\" }",
                "data.csv.sep: unknown field `sep`",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        // NaN survives to the range check (a JSON buffer would have turned it into null).
        let e = parse("test_fraction = nan")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.to_string(), "data.test_fraction = NaN: must be in [0, 1)");
    }

    /// Every example config still parses and validates, and its resolved form (what a
    /// run writes as `config.toml`) parses back to the same config.
    #[test]
    fn every_example_data_table_parses_and_resolves() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let table: toml::Table = toml::from_str(&text).unwrap();
            let data = table
                .get("data")
                .cloned()
                .unwrap_or(toml::Value::Table(Default::default()));
            let cfg: DataConfig = data
                .try_into()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            cfg.validate().unwrap();
            let resolved = cfg.resolved();
            let text = toml::to_string(&resolved).unwrap();
            let again: DataConfig = toml::from_str(&text).unwrap();
            assert_eq!(again, resolved, "{}", path.display());
            n += 1;
        }
        assert!(n >= 40, "{n}");
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
                DataConfig::Shakespeare(crate::ShakespeareConfig {
                    max_clients: Some(0),
                    ..Default::default()
                }),
                "data.max_clients = 0: must be ≥ 1",
            ),
            (
                DataConfig::Bench(crate::BenchConfig {
                    sample_shape: vec![100_000, 100_000, 100_000],
                    ..Default::default()
                }),
                "data.sample_shape = [100000, 100000, 100000]: at most 268435456 values per client",
            ),
        ];
        for (cfg, msg) in cases {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.starts_with(msg), "{e}");
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
        let mut m = MnistConfig {
            num_clients: 2,
            standardize: true,
            ..Default::default()
        };
        let plain = build(&DataConfig::Mnist(m.clone()), 0, &dir).unwrap();
        assert_eq!(total(&plain), 6);
        assert!(plain.global_test.is_some());
        m.pool_test_set = true;
        let pooled = build(&DataConfig::Mnist(m.clone()), 0, &dir).unwrap();
        assert_eq!(total(&pooled), 10);
        assert!(pooled.global_test.is_none());
        // A fixed data seed gives the same federation under any run seed.
        m.seed = Some(4);
        let cfg = DataConfig::Mnist(m);
        let (a, b) = (build(&cfg, 0, &dir).unwrap(), build(&cfg, 1, &dir).unwrap());
        for k in 0..2 {
            let (ca, cb) = (a.data.client(k).unwrap(), b.data.client(k).unwrap());
            let all: Vec<usize> = (0..ca.train.len()).collect();
            assert_eq!(ca.train.batch(&all), cb.train.batch(&all));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pooled_matched_needs_a_separate_test_set() {
        let m = MnistConfig {
            num_clients: 20,
            pool_test_set: true,
            test_split: TestSplit::PooledMatched,
            ..Default::default()
        };
        let e = DataConfig::Mnist(m).validate().unwrap_err().to_string();
        assert!(
            e.starts_with("data.test_split = pooled-matched: local"),
            "{e}"
        );
        let o = PoolConfig {
            test_split: TestSplit::PooledMatched,
            ..Default::default()
        };
        let e = DataConfig::Optdigits(o).validate().unwrap_err().to_string();
        assert!(e.contains("source optdigits has no pooled test set"), "{e}");
    }

    /// Issue 10 (D15): a well-formed but wrong MNIST was used without a word. Files
    /// under the pinned names are checked against their SHA-256; `verify = false` lets
    /// a user put their own files there.
    #[test]
    fn wrong_files_under_pinned_names_are_refused_unless_verify_is_off() {
        use crate::idx::{encode, IMAGES_MAGIC, LABELS_MAGIC};
        let dir = std::env::temp_dir().join(format!("fedpace-wrong-{}", std::process::id()));
        let mnist = dir.join("mnist");
        std::fs::create_dir_all(&mnist).unwrap();
        for (name, n) in [("train", 20), ("t10k", 5)] {
            let px: Vec<u8> = (0..n * 784).map(|i| (i % 7) as u8).collect();
            let lb: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            std::fs::write(
                mnist.join(format!("{name}-images-idx3-ubyte")),
                encode(IMAGES_MAGIC, &[n, 28, 28], &px),
            )
            .unwrap();
            std::fs::write(
                mnist.join(format!("{name}-labels-idx1-ubyte")),
                encode(LABELS_MAGIC, &[n], &lb),
            )
            .unwrap();
        }
        let mut m = MnistConfig {
            num_clients: 2,
            ..Default::default()
        };
        let e = build(&DataConfig::Mnist(m.clone()), 0, &dir)
            .unwrap_err()
            .to_string();
        let file = mnist.join("train-images-idx3-ubyte");
        assert!(
            e.starts_with(&format!("{}: SHA-256 ", file.display())),
            "{e}"
        );
        assert!(
            e.contains("run `fedpace datasets fetch mnist` to replace it"),
            "{e}"
        );
        m.verify = false;
        let fed = build(&DataConfig::Mnist(m), 0, &dir).unwrap();
        assert_eq!(fed.data.num_clients(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
