//! Parameter trees: an ordered `name → tensor` map stored in **one flat `f32` buffer**,
//! with a group label per tensor (`body`, `head`, …) so that rates can differ per layer.
//!
//! The one decision a reader needs: every algorithm (optimisers, aggregation, server
//! transforms) works on the flat buffer and on per-group index ranges, never on framework
//! tensors. The model converts to and from its tensor library at the edge. This keeps
//! aggregation a single streaming pass and makes state trivially serialisable.

use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::Arc;

/// Errors raised when parameter trees do not line up.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A buffer's length does not match the spec it was paired with.
    #[error("parameter buffer has {got} values, spec expects {expected}")]
    LengthMismatch {
        /// Values the spec needs.
        expected: usize,
        /// Values supplied.
        got: usize,
    },
    /// Two specs that must be identical differ (names, shapes or groups).
    #[error("parameter specs differ at {name:?}: {detail}")]
    SpecMismatch {
        /// First tensor name where they differ.
        name: String,
        /// What differs.
        detail: String,
    },
    /// A tensor name was looked up that the spec does not have.
    #[error("no parameter named {0:?}")]
    UnknownName(String),
    /// A tensor was declared twice.
    #[error("parameter {0:?} declared twice")]
    DuplicateName(String),
    /// Group rules that do not fit the model's tensors.
    #[error("{0}")]
    Grouping(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One named tensor inside a [`ParamSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamEntry {
    /// Dotted name, e.g. `fc1.weight`.
    pub name: String,
    /// Tensor shape (row-major).
    pub shape: Vec<usize>,
    /// Index into [`ParamSpec::groups`].
    pub group: usize,
    /// Offset of the first value in the flat buffer.
    pub offset: usize,
}

impl ParamEntry {
    /// Number of values (product of the shape).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the tensor has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Range of this tensor in the flat buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The layout of a model's parameters: ordered tensors, their shapes and group labels.
///
/// ```
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder()
///     .add("fc.weight", &[10, 60], "body")
///     .add("fc.bias", &[10], "head")
///     .build()
///     .unwrap();
/// assert_eq!(spec.total_len(), 610);
/// assert_eq!(spec.groups(), &["body".to_string(), "head".to_string()]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    entries: Vec<ParamEntry>,
    groups: Vec<String>,
    total: usize,
}

/// Builder for [`ParamSpec`].
#[derive(Debug, Default)]
pub struct ParamSpecBuilder {
    items: Vec<(String, Vec<usize>, String)>,
}

impl ParamSpecBuilder {
    /// Appends a tensor with its group label.
    pub fn add(mut self, name: &str, shape: &[usize], group: &str) -> Self {
        self.items
            .push((name.to_string(), shape.to_vec(), group.to_string()));
        self
    }
    /// Finishes the spec; groups are numbered in order of first appearance.
    ///
    /// Linear in the number of tensors (names and groups are looked up by hash): a layout
    /// decoded from an untrusted peer may hold tens of thousands.
    pub fn build(self) -> Result<ParamSpec> {
        let mut entries = Vec::with_capacity(self.items.len());
        let mut groups: Vec<String> = Vec::new();
        let mut names = std::collections::HashSet::with_capacity(self.items.len());
        let mut group_index: std::collections::HashMap<String, usize> =
            std::collections::HashMap::new();
        let mut offset = 0;
        for (name, shape, group) in self.items {
            if !names.insert(name.clone()) {
                return Err(Error::DuplicateName(name));
            }
            let g = match group_index.get(&group) {
                Some(&g) => g,
                None => {
                    group_index.insert(group.clone(), groups.len());
                    groups.push(group);
                    groups.len() - 1
                }
            };
            let e = ParamEntry {
                name,
                shape,
                group: g,
                offset,
            };
            offset += e.len();
            entries.push(e);
        }
        Ok(ParamSpec {
            entries,
            groups,
            total: offset,
        })
    }
}

impl ParamSpec {
    /// Starts a builder.
    pub fn builder() -> ParamSpecBuilder {
        ParamSpecBuilder::default()
    }
    /// The tensors in order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }
    /// Group labels, indexed by [`ParamEntry::group`].
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
    /// Number of groups.
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }
    /// Index of a group label.
    pub fn group_index(&self, label: &str) -> Option<usize> {
        self.groups.iter().position(|g| g == label)
    }
    /// Total number of scalar parameters.
    pub fn total_len(&self) -> usize {
        self.total
    }
    /// Looks up a tensor by name.
    pub fn entry(&self, name: &str) -> Result<&ParamEntry> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| Error::UnknownName(name.to_string()))
    }
    /// Flat-buffer ranges of every tensor in group `g`, in order.
    pub fn group_ranges(&self, g: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        self.entries
            .iter()
            .filter(move |e| e.group == g)
            .map(|e| e.range())
    }
    /// For every scalar, its group index (handy for per-group loops on flat buffers).
    pub fn group_of_each_value(&self) -> Vec<u16> {
        let mut out = vec![0u16; self.total];
        for e in &self.entries {
            out[e.range()].fill(e.group as u16);
        }
        out
    }
    /// Errors unless `other` has the same layout: the same tensors (names, shapes) in the
    /// same order. Group labels may differ — they are a view on the layout for rates and
    /// personal layers, not part of it ([`ParamSpec::regroup`]).
    pub fn check_same(&self, other: &ParamSpec) -> Result<()> {
        if self == other {
            return Ok(());
        }
        for (a, b) in self.entries.iter().zip(other.entries.iter()) {
            if a.name != b.name || a.shape != b.shape {
                return Err(Error::SpecMismatch {
                    name: a.name.clone(),
                    detail: format!("{:?}{:?} vs {:?}{:?}", a.name, a.shape, b.name, b.shape),
                });
            }
        }
        if self.entries.len() != other.entries.len() {
            return Err(Error::SpecMismatch {
                name: String::new(),
                detail: format!(
                    "{} tensors vs {} tensors",
                    self.entries.len(),
                    other.entries.len()
                ),
            });
        }
        Ok(())
    }

    /// The same tensors with group labels assigned by `rules` (see [`GroupRules`]); the
    /// flat layout is unchanged, so values laid out by `self` are laid out by the result.
    /// Groups are numbered in order of first appearance among the tensors.
    ///
    /// ```
    /// use fedpace_params::{GroupRules, ParamSpec};
    /// let spec = ParamSpec::builder()
    ///     .add("conv1.weight", &[2], "body").add("conv1.bias", &[1], "body")
    ///     .add("fc1.weight", &[2], "body").add("fc2.weight", &[2], "head")
    ///     .build().unwrap();
    /// let g = spec.regroup(&GroupRules::PerLayer).unwrap();
    /// assert_eq!(g.groups(), &["conv1", "fc1", "fc2"]);
    /// let rules = GroupRules::Patterns([("conv".to_string(), vec!["conv*".to_string()])].into());
    /// assert_eq!(spec.regroup(&rules).unwrap().groups(), &["conv", "body", "head"]);
    /// ```
    pub fn regroup(&self, rules: &GroupRules) -> Result<ParamSpec> {
        let mut b = ParamSpec::builder();
        for e in &self.entries {
            let label = match rules {
                GroupRules::Model => self.groups[e.group].clone(),
                GroupRules::PerTensor => e.name.clone(),
                GroupRules::PerLayer => match e.name.rsplit_once('.') {
                    Some((layer, _)) => layer.to_string(),
                    None => e.name.clone(),
                },
                GroupRules::Patterns(table) => {
                    let hits: Vec<&String> = table
                        .iter()
                        .filter(|(_, pats)| pats.iter().any(|p| glob_match(p, &e.name)))
                        .map(|(label, _)| label)
                        .collect();
                    match hits.as_slice() {
                        [] => self.groups[e.group].clone(),
                        [one] => (*one).clone(),
                        [a, b, ..] => {
                            return Err(Error::Grouping(format!(
                                "tensor {:?} matches the patterns of both {a:?} and {b:?}",
                                e.name
                            )))
                        }
                    }
                }
            };
            b = b.add(&e.name, &e.shape, &label);
        }
        if let GroupRules::Patterns(table) = rules {
            for (label, pats) in table {
                for p in pats {
                    if !self.entries.iter().any(|e| glob_match(p, &e.name)) {
                        let names: Vec<&str> =
                            self.entries.iter().map(|e| e.name.as_str()).collect();
                        return Err(Error::Grouping(format!(
                            "{label} = {p:?} matches no tensor of the model ({names:?})"
                        )));
                    }
                }
            }
        }
        b.build()
    }
}

/// How tensors are put into parameter groups (the unit of per-layer rates, personal and
/// frozen layers). Written in a config as `groups = "per-tensor"`, `groups = "per-layer"`,
/// or a table `label → [patterns]`, e.g. `{ conv = ["conv*"], head = ["fc2.*"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GroupRules {
    /// The model's own labels (`body` and `head` for the built-in models).
    #[default]
    Model,
    /// One group per tensor, labelled with the tensor's name.
    PerTensor,
    /// One group per layer: the tensor name up to its last `.` (`fc1.weight`,
    /// `fc1.bias` → `fc1`).
    PerLayer,
    /// Tensors whose name matches one of a label's glob patterns (`*` any run of
    /// characters, `?` one character) get that label; the others keep the model's label.
    /// A tensor matching two labels, or a pattern matching no tensor, is an error.
    Patterns(std::collections::BTreeMap<String, Vec<String>>),
}

impl Serialize for GroupRules {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            GroupRules::Model => s.serialize_str("model"),
            GroupRules::PerTensor => s.serialize_str("per-tensor"),
            GroupRules::PerLayer => s.serialize_str("per-layer"),
            GroupRules::Patterns(t) => t.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for GroupRules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = GroupRules;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "\"model\", \"per-tensor\", \"per-layer\", or a table of label = [patterns]",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<GroupRules, E> {
                match v {
                    "model" => Ok(GroupRules::Model),
                    "per-tensor" => Ok(GroupRules::PerTensor),
                    "per-layer" => Ok(GroupRules::PerLayer),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<GroupRules, A::Error> {
                let t: std::collections::BTreeMap<String, Vec<String>> =
                    Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(GroupRules::Patterns(t))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether `name` matches the glob `pattern` (`*`: any run of characters, `?`: one).
///
/// ```
/// use fedpace_params::glob_match;
/// assert!(glob_match("fc2.*", "fc2.weight"));
/// assert!(glob_match("conv*", "conv1.bias"));
/// assert!(!glob_match("fc?.bias", "fc10.bias"));
/// ```
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

/// Parameter values laid out by a shared [`ParamSpec`].
///
/// ```
/// use fedpace_params::{ParamSpec, ParamTree};
/// use std::sync::Arc;
/// let spec = Arc::new(ParamSpec::builder().add("w", &[2, 2], "body").build().unwrap());
/// let mut p = ParamTree::zeros(spec);
/// p.tensor_mut("w").unwrap()[3] = 1.5;
/// assert_eq!(p.as_slice(), &[0.0, 0.0, 0.0, 1.5]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ParamTree {
    spec: Arc<ParamSpec>,
    data: Vec<f32>,
}

impl ParamTree {
    /// All-zero values.
    pub fn zeros(spec: Arc<ParamSpec>) -> Self {
        let data = vec![0.0; spec.total_len()];
        Self { spec, data }
    }
    /// Wraps a buffer, checking its length.
    pub fn from_vec(spec: Arc<ParamSpec>, data: Vec<f32>) -> Result<Self> {
        if data.len() != spec.total_len() {
            return Err(Error::LengthMismatch {
                expected: spec.total_len(),
                got: data.len(),
            });
        }
        Ok(Self { spec, data })
    }
    /// The layout.
    pub fn spec(&self) -> &Arc<ParamSpec> {
        &self.spec
    }
    /// The flat values.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
    /// The flat values, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// Consumes the tree, returning the buffer.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
    /// One tensor's values.
    pub fn tensor(&self, name: &str) -> Result<&[f32]> {
        let r = self.spec.entry(name)?.range();
        Ok(&self.data[r])
    }
    /// One tensor's values, mutable.
    pub fn tensor_mut(&mut self, name: &str) -> Result<&mut [f32]> {
        let r = self.spec.entry(name)?.range();
        Ok(&mut self.data[r])
    }
    /// Global L2 norm over all values (accumulated in f64).
    pub fn l2_norm(&self) -> f64 {
        l2_norm(&self.data)
    }
    /// Whether every value is finite.
    pub fn all_finite(&self) -> bool {
        // Chunks checked without an early exit inside (so the check vectorises; one
        // value at a time it was 0.5 % of the W-CNN run), an early exit between them.
        self.data
            .chunks(1024)
            .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()))
    }
}

/// L2 norm of a slice, accumulated in f64.
pub fn l2_norm(x: &[f32]) -> f64 {
    x.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

/// Dot product of two slices, accumulated in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// `y ← y + a·x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[cfg(test)]
mod tests {
    /// A layout of 100,000 tensors in 50,000 groups builds (names and groups looked up by
    /// hash: as a pairwise scan it took seconds), and a repeated name is still refused.
    #[test]
    fn a_layout_of_many_tensors_builds_and_still_refuses_a_repeated_name() {
        let mut b = ParamSpec::builder();
        for i in 0..100_000 {
            b = b.add(&format!("t{i}"), &[2], &format!("g{}", i / 2));
        }
        let spec = b.build().unwrap();
        assert_eq!(spec.total_len(), 200_000);
        assert_eq!(spec.groups().len(), 50_000);
        let mut b = ParamSpec::builder();
        for i in 0..100_000 {
            b = b.add(&format!("t{i}"), &[1], "body");
        }
        let e = b.add("t99999", &[1], "body").build().unwrap_err();
        assert!(
            matches!(e, Error::DuplicateName(ref n) if n == "t99999"),
            "{e}"
        );
    }

    use super::*;

    fn spec() -> Arc<ParamSpec> {
        Arc::new(
            ParamSpec::builder()
                .add("a", &[2, 3], "body")
                .add("b", &[3], "head")
                .add("c", &[4], "body")
                .build()
                .unwrap(),
        )
    }

    /// Every non-finite value is found, wherever it falls among the chunks checked.
    #[test]
    fn all_finite_finds_every_non_finite_value() {
        let spec = Arc::new(
            ParamSpec::builder()
                .add("w", &[3000], "body")
                .build()
                .unwrap(),
        );
        let finite = ParamTree::from_vec(spec.clone(), vec![1.5; 3000]).unwrap();
        assert!(finite.all_finite());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 1023, 1024, 2047, 2999] {
                let mut v = vec![1.5; 3000];
                v[at] = bad;
                let t = ParamTree::from_vec(spec.clone(), v).unwrap();
                assert!(!t.all_finite(), "{bad} at {at}");
            }
        }
    }

    #[test]
    fn offsets_and_groups_follow_declaration_order() {
        let s = spec();
        assert_eq!(s.total_len(), 13);
        assert_eq!(s.entry("c").unwrap().offset, 9);
        let body: Vec<_> = s.group_ranges(0).collect();
        assert_eq!(body, vec![0..6, 9..13]);
        let g = s.group_of_each_value();
        assert_eq!(g[6..9], [1, 1, 1]);
        assert_eq!(g[9], 0);
    }

    #[test]
    fn wrong_length_is_an_error_not_a_panic() {
        let e = ParamTree::from_vec(spec(), vec![0.0; 5]).unwrap_err();
        assert_eq!(
            e,
            Error::LengthMismatch {
                expected: 13,
                got: 5
            }
        );
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let e = ParamSpec::builder()
            .add("a", &[1], "x")
            .add("a", &[1], "x")
            .build()
            .unwrap_err();
        assert_eq!(e, Error::DuplicateName("a".into()));
    }

    #[test]
    fn regrouping_keeps_the_layout_and_names_conflicts() {
        let s = spec();
        let t = s.regroup(&GroupRules::PerTensor).unwrap();
        assert_eq!(t.groups(), &["a", "b", "c"]);
        assert_eq!(t.total_len(), s.total_len());
        assert_eq!(t.entry("c").unwrap().range(), s.entry("c").unwrap().range());
        s.check_same(&t).unwrap();
        assert_eq!(s.regroup(&GroupRules::Model).unwrap(), *s);
        let two = GroupRules::Patterns(
            [
                ("x".to_string(), vec!["a".into()]),
                ("y".to_string(), vec!["?".into()]),
            ]
            .into(),
        );
        let e = s.regroup(&two).unwrap_err().to_string();
        assert_eq!(
            e,
            "tensor \"a\" matches the patterns of both \"x\" and \"y\""
        );
        let none = GroupRules::Patterns([("x".to_string(), vec!["zz*".into()])].into());
        assert!(s
            .regroup(&none)
            .unwrap_err()
            .to_string()
            .starts_with("x = \"zz*\" matches no tensor"));
        let other = ParamSpec::builder().add("a", &[6], "body").build().unwrap();
        assert!(s.check_same(&other).is_err());
    }

    #[test]
    fn glob_matches_by_hand() {
        for (p, n, want) in [
            ("*", "", true),
            ("conv*", "conv1.weight", true),
            ("*.bias", "fc2.bias", true),
            ("*.bias", "fc2.weight", false),
            ("fc?.*", "fc2.weight", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("lstm.*_l0", "lstm.weight_ih_l0", true),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn norm_and_dot_match_hand_values() {
        assert_eq!(l2_norm(&[3.0, 4.0]), 5.0);
        assert_eq!(dot(&[1.0, 2.0], &[3.0, -1.0]), 1.0);
        let mut y = vec![1.0, 1.0];
        axpy(2.0, &[1.0, -1.0], &mut y);
        assert_eq!(y, vec![3.0, -1.0]);
    }
}
