//! **CSV** data sets: a header line, then one sample per line of numeric features and a
//! label column (by header name or 0-based index; default the last column).
//!
//! Labels that are all non-negative integers are used as class ids (classes =
//! max + 1); otherwise the distinct label strings, sorted, are numbered 0, 1, … The
//! train and test files share that mapping. Either way there may be at most
//! [`MAX_CLASSES`] classes: a larger id is an error naming its file and line (a model
//! with 4 billion outputs is never what was meant). Features are used as written (no
//! scaling). Fields may be wrapped in double quotes; quoted delimiters are not
//! supported. A UTF-8 byte-order mark before the header is skipped. Every problem names
//! the file and line.

use crate::partition::Partition;
use crate::pooled::{PoolConfig, TestSplit};
use crate::{Error, Federation, Result};
use fedpace_core::data::{Dataset, DenseDataset};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// `[data] source = "csv"`: the `[data.csv]` file(s) split across clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvSourceConfig {
    /// The files and how to read them (`[data.csv]`, required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvConfig>,
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
    /// Where client test splits come from (`pooled-matched` needs `test_path`).
    pub test_split: TestSplit,
    /// Seed of the partition and the test splits. Default: the run's `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for CsvSourceConfig {
    fn default() -> Self {
        Self {
            csv: None,
            num_clients: PoolConfig::default().num_clients,
            partition: None,
            test_fraction: None,
            validation_fraction: None,
            test_split: TestSplit::Local,
            seed: None,
        }
    }
}

impl CsvSourceConfig {
    /// A source reading `csv`, with the pool defaults.
    pub fn new(csv: CsvConfig) -> Self {
        Self {
            csv: Some(csv),
            ..Self::default()
        }
    }

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

    /// Checks every key without reading the files.
    pub fn validate(&self) -> Result<()> {
        let Some(c) = &self.csv else {
            return Err(Error::invalid(
                "data.csv",
                "(missing)",
                "a [data.csv] table with at least `path` when source = \"csv\"",
            ));
        };
        if c.delimiter == '"' || c.delimiter == '\n' {
            return Err(Error::invalid(
                "data.csv.delimiter",
                format!("{:?}", c.delimiter),
                "a separator other than a quote or newline",
            ));
        }
        self.pool().validate("csv", c.test_path.is_some())
    }

    /// Reads the file(s) and splits them; `seed` is the run's.
    pub fn federation(&self, seed: u64) -> Result<Federation> {
        self.validate()?;
        let c = self.csv.as_ref().expect("validated");
        let (tr, te) = load(c)?;
        let shape = vec![tr.sample_len()];
        let test = te.map(|t| Arc::new(t) as Arc<dyn Dataset>);
        crate::pooled::federate("csv", Arc::new(tr), test, shape, &self.pool(), seed)
    }
}

/// The most classes a CSV source may have (integer labels must be below it).
pub const MAX_CLASSES: usize = 100_000;

struct Table {
    features: Vec<f32>,
    labels: Vec<String>,
    /// 1-based line of each label.
    lines: Vec<usize>,
    width: usize,
}

fn read_table(
    path: &Path,
    label: &Option<LabelColumn>,
    delimiter: char,
) -> Result<(Vec<String>, Table)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let at = |line: usize, what: String| Error::format(format!("{}:{line}", path.display()), what);
    let split = |l: &str| -> Vec<String> {
        l.split(delimiter)
            .map(|f| {
                let f = f.trim();
                f.strip_prefix('"')
                    .and_then(|f| f.strip_suffix('"'))
                    .unwrap_or(f)
                    .to_string()
            })
            .collect()
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, head) = lines
        .next()
        .ok_or_else(|| Error::format(path, "empty file, expected a header line"))?;
    let header = split(head);
    if header.len() < 2 {
        return Err(at(
            1,
            format!(
                "header has {} column(s), expected at least 2 (features and a label)",
                header.len()
            ),
        ));
    }
    let col = match label {
        None => header.len() - 1,
        Some(LabelColumn::Index(i)) if *i < header.len() => *i,
        Some(LabelColumn::Index(i)) => {
            return Err(Error::invalid(
                "data.csv.label",
                i,
                format!("a column index below {} ({})", header.len(), path.display()),
            ))
        }
        Some(LabelColumn::Name(n)) => header.iter().position(|h| h == n).ok_or_else(|| {
            Error::invalid(
                "data.csv.label",
                n,
                format!(
                    "one of the header columns of {}: {}",
                    path.display(),
                    header.join(", ")
                ),
            )
        })?,
    };
    let width = header.len() - 1;
    let mut t = Table {
        features: Vec::new(),
        labels: Vec::new(),
        lines: Vec::new(),
        width,
    };
    for (i, line) in lines {
        let fields = split(line);
        if fields.len() != header.len() {
            return Err(at(
                i + 1,
                format!("{} fields, expected {}", fields.len(), header.len()),
            ));
        }
        for (j, f) in fields.iter().enumerate() {
            if j == col {
                continue;
            }
            let v: f32 = f.parse().map_err(|_| {
                at(
                    i + 1,
                    format!("column '{}' = '{f}' is not a number", header[j]),
                )
            })?;
            if !v.is_finite() {
                return Err(at(
                    i + 1,
                    format!("column '{}' = '{f}' is not finite", header[j]),
                ));
            }
            t.features.push(v);
        }
        if fields[col].is_empty() {
            return Err(at(
                i + 1,
                format!("empty label in column '{}'", header[col]),
            ));
        }
        t.labels.push(fields[col].clone());
        t.lines.push(i + 1);
    }
    if t.labels.is_empty() {
        return Err(Error::format(path, "no data rows after the header"));
    }
    Ok((header, t))
}

/// Loads `cfg.path` (and `cfg.test_path`, if set) as `[features]`-shaped samples.
pub fn load(cfg: &CsvConfig) -> Result<(DenseDataset, Option<DenseDataset>)> {
    let (header, train) = read_table(&cfg.path, &cfg.label, cfg.delimiter)?;
    let test = match &cfg.test_path {
        Some(p) => {
            let (h, t) = read_table(p, &cfg.label, cfg.delimiter)?;
            if h != header {
                return Err(Error::format(
                    p,
                    format!("header differs from {}'s", cfg.path.display()),
                ));
            }
            Some(t)
        }
        None => None,
    };
    let all = train
        .labels
        .iter()
        .chain(test.iter().flat_map(|t| t.labels.iter()));
    let ints: Option<Vec<u32>> = all.clone().map(|l| l.parse::<u32>().ok()).collect();
    // Integer labels are ids; otherwise ids index the sorted distinct names.
    let names: Option<Vec<String>> = match &ints {
        Some(_) => {
            let files = [(&cfg.path, &train)]
                .into_iter()
                .chain(cfg.test_path.iter().zip(test.iter()));
            for (path, t) in files {
                let big = t
                    .labels
                    .iter()
                    .zip(&t.lines)
                    .find(|(l, _)| l.parse::<u32>().is_ok_and(|v| v as usize >= MAX_CLASSES));
                if let Some((l, line)) = big {
                    return Err(Error::format(
                        format!("{}:{line}", path.display()),
                        format!(
                            "label {l}: integer labels are class ids, expected below \
                             {MAX_CLASSES} (at most {MAX_CLASSES} classes)"
                        ),
                    ));
                }
            }
            None
        }
        None => {
            let mut names: Vec<String> = all.cloned().collect();
            names.sort();
            names.dedup();
            if names.len() > MAX_CLASSES {
                return Err(Error::format(
                    &cfg.path,
                    format!(
                        "{} distinct labels, at most {MAX_CLASSES} classes (is data.csv.label \
                         the label column?)",
                        names.len()
                    ),
                ));
            }
            Some(names)
        }
    };
    let num_classes = match (&ints, &names) {
        (Some(v), _) => v.iter().max().map_or(0, |&m| m as usize + 1),
        (None, Some(n)) => n.len(),
        (None, None) => unreachable!(),
    };
    let map = |l: &str| -> u32 {
        match &names {
            None => l.parse().expect("checked above"),
            Some(n) => n
                .binary_search_by(|x| x.as_str().cmp(l))
                .expect("seen above") as u32,
        }
    };
    let make = |t: Table| -> Result<DenseDataset> {
        let labels = t.labels.iter().map(|l| map(l)).collect();
        Ok(DenseDataset::new(
            t.features,
            vec![t.width],
            labels,
            num_classes,
        )?)
    };
    let test = test.map(&make).transpose()?;
    Ok((make(train)?, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::Dataset;
    use std::path::PathBuf;

    fn write(name: &str, body: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("fedpace-csv-{}-{name}", std::process::id()));
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn loads_features_and_labels_by_name_index_or_last() {
        let p = write(
            "ok.csv",
            "a,species,b\n1.5,setosa,2\n\n3,virginica,4\n5,setosa,6\n",
        );
        let mut cfg = CsvConfig::new(&p);
        cfg.label = Some(LabelColumn::Name("species".into()));
        let (d, t) = load(&cfg).unwrap();
        assert!(t.is_none());
        assert_eq!(d.len(), 3);
        assert_eq!(d.num_classes(), 2);
        assert_eq!(d.labels(), &[0, 1, 0]);
        assert_eq!(d.sample(1), &[3.0, 4.0]);
        cfg.label = Some(LabelColumn::Index(2));
        let e = load(&cfg).unwrap_err().to_string();
        assert!(e.contains("line 2") || e.contains(":2:"), "{e}");
        let p2 = write("ints.csv", "x;y;label\n0.5;1;2\n\"0.25\";2;0\n");
        let mut c2 = CsvConfig::new(&p2);
        c2.delimiter = ';';
        let (d, _) = load(&c2).unwrap();
        assert_eq!(d.labels(), &[2, 0]);
        assert_eq!(d.num_classes(), 3);
        assert_eq!(d.sample(1), &[0.25, 2.0]);
        std::fs::remove_file(p).unwrap();
        std::fs::remove_file(p2).unwrap();
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let p = write("bad.csv", "a,b,label\n1,2,0\n1,x,1\n");
        let e = load(&CsvConfig::new(&p)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}:3: column 'b' = 'x' is not a number", p.display())
        );
        let p = write("short.csv", "a,b,label\n1,2,0\n1,2\n");
        let e = load(&CsvConfig::new(&p)).unwrap_err().to_string();
        assert_eq!(e, format!("{}:3: 2 fields, expected 3", p.display()));
        let mut cfg = CsvConfig::new(&p);
        cfg.label = Some(LabelColumn::Name("y".into()));
        let e = load(&cfg).unwrap_err().to_string();
        assert!(
            e.starts_with("data.csv.label = y: one of the header columns"),
            "{e}"
        );
        let e = load(&CsvConfig::new("/nonexistent.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent.csv: "), "{e}");
    }

    /// Issue 10 (D9): a label of 4294967295 asked for 4 billion classes and aborted.
    #[test]
    fn huge_integer_labels_are_refused_naming_file_and_line() {
        let tr = write("big-train.csv", "a,label\n1,0\n2,1\n");
        let te = write("big-test.csv", "a,label\n1,0\n2,4294967295\n");
        let mut cfg = CsvConfig::new(&tr);
        cfg.test_path = Some(te.clone());
        let e = load(&cfg).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:3: label 4294967295: integer labels are class ids, expected below 100000 \
                 (at most 100000 classes)",
                te.display()
            )
        );
        let ok = write("edge.csv", "a,label\n1,99999\n");
        assert_eq!(
            load(&CsvConfig::new(&ok)).unwrap().0.num_classes(),
            MAX_CLASSES
        );
        let many: String = std::iter::once("a,label\n".to_string())
            .chain((0..=MAX_CLASSES).map(|i| format!("1,x{i}\n")))
            .collect();
        let names = write("names.csv", &many);
        let e = load(&CsvConfig::new(&names)).unwrap_err().to_string();
        assert!(
            e.contains("100001 distinct labels, at most 100000 classes"),
            "{e}"
        );
        for p in [tr, te, ok, names] {
            std::fs::remove_file(p).unwrap();
        }
    }

    /// Issue 10 (D16): a byte-order mark stayed in the first header name.
    #[test]
    fn a_utf8_bom_before_the_header_is_skipped() {
        let p = write("bom.csv", "\u{feff}f0,f1,y\n1,2,0\n3,4,1\n");
        let mut cfg = CsvConfig::new(&p);
        cfg.label = Some(LabelColumn::Name("f0".into()));
        let (d, _) = load(&cfg).unwrap();
        assert_eq!(d.labels(), &[1, 3]);
        assert_eq!(d.sample(1), &[4.0, 1.0]);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn build_partitions_a_csv_with_its_own_test_set() {
        let mut body = String::from("f1,f2,label\n");
        for i in 0..200 {
            body.push_str(&format!("{},{},{}\n", i, i * 2, i % 4));
        }
        let tr = write("train.csv", &body);
        let te = write("test.csv", "f1,f2,label\n1,2,3\n4,5,0\n");
        let mut csv = CsvConfig::new(&tr);
        csv.test_path = Some(te.clone());
        let cfg = crate::DataConfig::Csv(CsvSourceConfig {
            num_clients: 4,
            partition: Some(crate::Partition::Labels { per_client: 1 }),
            ..CsvSourceConfig::new(csv)
        });
        let fed = crate::build(&cfg, 1, Path::new(".")).unwrap();
        assert_eq!(fed.sample_shape, crate::InputShape::Dense(vec![2]));
        assert_eq!(fed.num_classes, 4);
        assert_eq!(fed.global_test.unwrap().len(), 2);
        for k in 0..4 {
            let c = fed.data.client(k).unwrap();
            let h = c.train.label_histogram();
            assert_eq!(h.iter().filter(|&&x| x > 0).count(), 1, "{h:?}");
            assert_eq!(c.train.len() + c.test.len(), 50);
        }
        std::fs::remove_file(tr).unwrap();
        std::fs::remove_file(te).unwrap();
    }
}
