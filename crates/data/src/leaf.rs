//! **LEAF** JSON files (docs/data-formats.md, "LEAF"): the federated format of FEMNIST,
//! Shakespeare and Sent140 — `{"users": [...], "num_samples": [...], "user_data":
//! {user: {"x": [...], "y": [...]}}}` — with one client per user (the natural
//! partition).
//!
//! `x` is either numbers (each sample a list, nested lists flattened; reshaped to
//! `sample_shape` if set, e.g. `[1, 28, 28]` for FEMNIST) or text (LEAF Shakespeare:
//! each sample a string of one length, each `y` one character; both are mapped to ids
//! in the 80-symbol vocabulary of [`crate::shakespeare::VOCAB`] and read as tokens).
//! Numeric `y` are class ids (whole numbers below [`crate::csv::MAX_CLASSES`]); text
//! `y` with numeric `x` are class names, numbered in sorted order. Every file is
//! checked against its own `users` and `num_samples`; a problem names the file, the
//! user and the sample. LEAF's own test files (`test_path`) give each user its test
//! split; otherwise each user's samples are split by `test_fraction`.

use crate::csv::MAX_CLASSES;
use crate::partition::Partition;
use crate::pooled::Pooled;
use crate::shakespeare::{char_id, VOCAB};
use crate::{Error, Federation, InputShape, Result};
use fedpace_core::data::{Batch, Dataset, DenseDataset, Inputs};
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[data.leaf]`: where the JSON files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafConfig {
    /// A LEAF `.json` file, or a directory of them (e.g. LEAF's `data/train/`).
    pub path: PathBuf,
    /// LEAF's test files for the same users (a file or a directory). Default: none,
    /// each user's samples are split by `data.test_fraction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_path: Option<PathBuf>,
    /// Shape of one numeric sample, e.g. `[1, 28, 28]` for FEMNIST's 784 pixels.
    /// Default: `[length]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_shape: Option<Vec<usize>>,
}

/// `[data] source = "leaf"`: LEAF JSON files (`[data.leaf]`), one client per user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LeafSourceConfig {
    /// Where the files are (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<LeafConfig>,
    /// Keep the first N users (file order, then each file's `users` order). Default all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<usize>,
    /// Only `natural` (the users are the clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Fraction of each user's samples held out, in [0, 1), when there are no test
    /// files. Default 0.2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Fraction of each client's training split held out as its validation split, in
    /// [0, 1) (docs/learned-rates.md, "Validation splits"). Default 0: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Seed of the test splits. Default: the run's `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl LeafSourceConfig {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            leaf: Some(LeafConfig {
                path: path.into(),
                test_path: None,
                sample_shape: None,
            }),
            ..Self::default()
        }
    }

    /// Checks every key without reading the files.
    pub fn validate(&self) -> Result<()> {
        let Some(l) = &self.leaf else {
            return Err(Error::invalid(
                "data.leaf",
                "(missing)",
                "a [data.leaf] table with at least `path` when source = \"leaf\"",
            ));
        };
        if self.max_clients == Some(0) {
            return Err(Error::invalid("data.max_clients", 0, "must be ≥ 1"));
        }
        if let Some(s) = &l.sample_shape {
            if s.is_empty() || s.contains(&0) {
                return Err(Error::invalid(
                    "data.leaf.sample_shape",
                    format!("{s:?}"),
                    "a non-empty list of positive sizes",
                ));
            }
        }
        crate::pooled::check_test_fraction(self.test_fraction)?;
        if let (Some(f), Some(_)) = (self.test_fraction, &l.test_path) {
            return Err(Error::invalid(
                "data.test_fraction",
                f,
                "not used with data.leaf.test_path (the test files give each user's split)",
            ));
        }
        match &self.partition {
            Some(p) => p.check("leaf", true),
            None => Ok(()),
        }
    }

    /// Reads the files and builds the federation; `seed` is the run's.
    pub fn federation(&self, seed: u64) -> Result<Federation> {
        self.validate()?;
        let l = self.leaf.as_ref().expect("validated");
        let mut train = read_users(&l.path)?;
        if let Some(m) = self.max_clients {
            train.truncate(m);
        }
        let test = l.test_path.as_ref().map(|p| read_users(p)).transpose()?;
        // One encoding (numbers or text, one length, one label map) for train and test.
        let all = train.iter().chain(test.iter().flatten());
        let enc = Encoding::of(all, l.sample_shape.as_deref(), &l.path)?;
        let (train_set, parts) = enc.dataset(&train)?;
        let name = format!("leaf ({})", l.path.display());
        let Some(test) = test else {
            let tf = self
                .test_fraction
                .unwrap_or(crate::pooled::DEFAULT_TEST_FRACTION);
            return crate::pooled::federate_parts(
                &name,
                train_set,
                parts,
                enc.input_shape(),
                tf,
                self.seed.unwrap_or(seed),
            );
        };
        let index: BTreeMap<&str, usize> = train
            .iter()
            .enumerate()
            .map(|(k, u)| (u.name.as_str(), k))
            .collect();
        let mut test_parts = vec![Vec::new(); train.len()];
        let (test_set, tparts) = enc.dataset(&test)?;
        for (u, part) in test.iter().zip(tparts) {
            match index.get(u.name.as_str()) {
                Some(&k) => test_parts[k] = part,
                // Users cut by `max_clients` are dropped from the test set too.
                None if self.max_clients.is_some() => {}
                None => {
                    return Err(Error::format(
                        &u.file,
                        format!("user '{}' has test data but no training data", u.name),
                    ))
                }
            }
        }
        let clients: Vec<(Vec<u32>, Vec<u32>)> = parts.into_iter().zip(test_parts).collect();
        let n = clients.len();
        let pooled = Pooled::with_splits(name.clone(), train_set, test_set, clients);
        Ok(Federation {
            global_test: pooled.global_test(),
            data: Arc::new(pooled),
            sample_shape: enc.input_shape(),
            num_classes: enc.classes,
            description: format!("{name}, {n} users, LEAF test files"),
            global_validation: None,
        })
    }
}

/// One user's samples as read.
struct User {
    name: String,
    file: PathBuf,
    x: Vec<Sample>,
    y: Vec<Label>,
}

/// The LEAF files of `path` (a file or a directory of `.json` files), users in order.
fn read_users(path: &Path) -> Result<Vec<User>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        f.sort();
        if f.is_empty() {
            return Err(Error::format(path, "no .json files"));
        }
        f
    } else {
        vec![path.to_path_buf()]
    };
    let mut users = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
        let file: LeafFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(&f, format!("not a LEAF JSON file: {e}")))?;
        if file.users.len() != file.num_samples.len() {
            return Err(Error::format(
                &f,
                format!(
                    "{} users but {} num_samples",
                    file.users.len(),
                    file.num_samples.len()
                ),
            ));
        }
        let mut data = file.user_data;
        if let Some(extra) = data.keys().find(|k| !file.users.contains(k)) {
            return Err(Error::format(
                &f,
                format!("user_data has '{extra}', which is not in users"),
            ));
        }
        for (name, n) in file.users.into_iter().zip(file.num_samples) {
            if let Some(other) = seen.insert(name.clone(), f.clone()) {
                return Err(Error::format(
                    &f,
                    format!("user '{name}' is also in {}", other.display()),
                ));
            }
            let d = data.remove(&name).ok_or_else(|| {
                Error::format(&f, format!("user '{name}' has no entry in user_data"))
            })?;
            if d.x.len() != n || d.y.len() != n {
                return Err(Error::format(
                    &f,
                    format!(
                        "user '{name}': num_samples says {n}, x has {}, y has {}",
                        d.x.len(),
                        d.y.len()
                    ),
                ));
            }
            users.push(User {
                name,
                file: f.clone(),
                x: d.x,
                y: d.y,
            });
        }
    }
    Ok(users)
}

#[derive(Deserialize)]
struct LeafFile {
    users: Vec<String>,
    num_samples: Vec<usize>,
    user_data: BTreeMap<String, UserData>,
}

#[derive(Deserialize)]
struct UserData {
    x: Vec<Sample>,
    y: Vec<Label>,
}

/// One `x`: numbers (nested lists flattened) or a string.
enum Sample {
    Numbers(Vec<f32>),
    Text(String),
}

/// One `y`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Label {
    Number(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sample;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of numbers or a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Sample, E> {
                Ok(Sample::Text(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Sample, A::Error> {
                let mut out = Vec::new();
                while a.next_element_seed(Flatten(&mut out, 0))?.is_some() {}
                Ok(Sample::Numbers(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Appends a number, or every number of a nested list (at most 8 levels deep).
struct Flatten<'a>(&'a mut Vec<f32>, usize);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number or a list of numbers")
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<(), E> {
        let x = v as f32;
        if !x.is_finite() {
            return Err(E::custom(format!("value {v:e} is not a finite f32")));
        }
        self.0.push(x);
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<(), E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<(), E> {
        self.visit_f64(v as f64)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<(), A::Error> {
        if self.1 >= 8 {
            return Err(serde::de::Error::custom("lists nested more than 8 deep"));
        }
        while a.next_element_seed(Flatten(self.0, self.1 + 1))?.is_some() {}
        Ok(())
    }
}

/// How every user's samples are encoded: numbers of one length, or text of one
/// length; labels by id or by sorted name.
struct Encoding {
    text: bool,
    len: usize,
    shape: Vec<usize>,
    names: Option<Vec<String>>,
    classes: usize,
}

impl Encoding {
    fn of<'a>(
        users: impl Iterator<Item = &'a User> + Clone,
        shape: Option<&[usize]>,
        path: &Path,
    ) -> Result<Self> {
        let first = users
            .clone()
            .find_map(|u| u.x.first().map(|s| (u, s)))
            .ok_or_else(|| Error::format(path, "no samples in any file"))?;
        let text = matches!(first.1, Sample::Text(_));
        let len = match first.1 {
            Sample::Numbers(v) => v.len(),
            Sample::Text(t) => t.chars().count(),
        };
        if len == 0 {
            return Err(Error::format(
                &first.0.file,
                format!("user '{}', sample 0: empty", first.0.name),
            ));
        }
        let shape = match shape {
            Some(s) if text => {
                return Err(Error::invalid(
                    "data.leaf.sample_shape",
                    format!("{s:?}"),
                    "only for numeric samples (these are text)",
                ))
            }
            Some(s) if s.iter().product::<usize>() != len => {
                return Err(Error::invalid(
                    "data.leaf.sample_shape",
                    format!("{s:?}"),
                    format!("a shape of {len} values (the samples' length)"),
                ))
            }
            Some(s) => s.to_vec(),
            None => vec![len],
        };
        let mut names = BTreeSet::new();
        let (mut max_id, mut numbers) = (0usize, false);
        for u in users {
            let at = |i: usize, what: String| {
                Error::format(&u.file, format!("user '{}', sample {i}: {what}", u.name))
            };
            for (i, (x, y)) in u.x.iter().zip(&u.y).enumerate() {
                match (x, text) {
                    (Sample::Numbers(v), false) if v.len() == len => {}
                    (Sample::Text(t), true) if t.chars().count() == len => {}
                    (Sample::Numbers(v), false) => {
                        return Err(at(
                            i,
                            format!("{} values, expected {len} like the first sample", v.len()),
                        ))
                    }
                    (Sample::Text(t), true) => {
                        return Err(at(
                            i,
                            format!(
                                "{} characters, expected {len} like the first sample",
                                t.chars().count()
                            ),
                        ))
                    }
                    _ => {
                        return Err(at(
                            i,
                            "numbers and text mixed; expected one kind in every sample".into(),
                        ))
                    }
                }
                match (y, text) {
                    (Label::Text(s), true) if s.chars().count() == 1 => {}
                    (_, true) => {
                        return Err(at(i, "with text samples each y is one character".into()))
                    }
                    (Label::Number(v), false) => {
                        if !(v.fract() == 0.0 && *v >= 0.0 && *v < MAX_CLASSES as f64) {
                            return Err(at(
                                i,
                                format!(
                                    "label {v}: class ids are whole numbers in 0..{MAX_CLASSES}"
                                ),
                            ));
                        }
                        max_id = max_id.max(*v as usize);
                        numbers = true;
                    }
                    (Label::Text(s), false) => {
                        names.insert(s.clone());
                    }
                }
            }
        }
        let (names, classes) = match (text, names.is_empty()) {
            (true, _) => (None, VOCAB.len()),
            (false, true) => (None, max_id + 1),
            (false, false) if numbers => {
                return Err(Error::format(path, "labels mix numbers and names"))
            }
            (false, false) => {
                if names.len() > MAX_CLASSES {
                    return Err(Error::format(
                        path,
                        format!("{} distinct labels, at most {MAX_CLASSES}", names.len()),
                    ));
                }
                let n: Vec<String> = names.into_iter().collect();
                let k = n.len();
                (Some(n), k)
            }
        };
        Ok(Self {
            text,
            len,
            shape,
            names,
            classes,
        })
    }

    fn input_shape(&self) -> InputShape {
        match self.text {
            true => InputShape::Tokens {
                seq_len: self.len,
                vocab: VOCAB.len(),
            },
            false => InputShape::Dense(self.shape.clone()),
        }
    }

    /// All users' samples as one data set, and each user's indices into it.
    fn dataset(&self, users: &[User]) -> Result<(Arc<dyn Dataset>, Parts)> {
        let total: usize = users.iter().map(|u| u.x.len()).sum();
        let mut parts = Vec::with_capacity(users.len());
        let mut labels = Vec::with_capacity(total);
        let mut values = Vec::with_capacity(if self.text { 0 } else { total * self.len });
        let mut tokens = Vec::with_capacity(if self.text { total * self.len } else { 0 });
        for u in users {
            let start = labels.len() as u32;
            for (i, (x, y)) in u.x.iter().zip(&u.y).enumerate() {
                let at = |what: String| {
                    Error::format(&u.file, format!("user '{}', sample {i}: {what}", u.name))
                };
                let id = |c: char| {
                    char_id(c).ok_or_else(|| {
                        at(format!(
                            "character {c:?} is not in the 80-symbol vocabulary"
                        ))
                    })
                };
                match x {
                    Sample::Numbers(v) => values.extend_from_slice(v),
                    Sample::Text(t) => {
                        for c in t.chars() {
                            tokens.push(id(c)?);
                        }
                    }
                }
                labels.push(match y {
                    Label::Number(v) => *v as u32,
                    Label::Text(s) => match &self.names {
                        Some(n) => n.binary_search(s).expect("seen in Encoding::of") as u32,
                        None => id(s.chars().next().expect("one character"))? as u32,
                    },
                });
            }
            parts.push((start..labels.len() as u32).collect());
        }
        let set: Arc<dyn Dataset> = if self.text {
            Arc::new(TokenDataset {
                tokens,
                seq_len: self.len,
                labels,
                classes: self.classes,
            })
        } else {
            Arc::new(DenseDataset::new(
                values,
                self.shape.clone(),
                labels,
                self.classes,
            )?)
        };
        Ok((set, parts))
    }
}

/// Each client's sample indices.
type Parts = Vec<Vec<u32>>;

/// Fixed-length token sequences and their labels (LEAF Shakespeare).
struct TokenDataset {
    tokens: Vec<u8>,
    seq_len: usize,
    labels: Vec<u32>,
    classes: usize,
}

impl Dataset for TokenDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }
    fn batch(&self, indices: &[usize]) -> Batch {
        let l = self.seq_len;
        let mut data = Vec::with_capacity(indices.len() * l);
        for &i in indices {
            data.extend(self.tokens[i * l..(i + 1) * l].iter().map(|&t| t as u32));
        }
        Batch {
            inputs: Inputs::Tokens { data, seq_len: l },
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}
