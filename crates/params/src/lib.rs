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
    pub fn build(self) -> Result<ParamSpec> {
        let mut entries = Vec::with_capacity(self.items.len());
        let mut groups: Vec<String> = Vec::new();
        let mut offset = 0;
        for (name, shape, group) in self.items {
            if entries.iter().any(|e: &ParamEntry| e.name == name) {
                return Err(Error::DuplicateName(name));
            }
            let g = match groups.iter().position(|x| *x == group) {
                Some(g) => g,
                None => {
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
    /// Errors unless `other` has the same names, shapes and groups.
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
        Err(Error::SpecMismatch {
            name: String::new(),
            detail: format!(
                "{} tensors / groups {:?} vs {} tensors / groups {:?}",
                self.entries.len(),
                self.groups,
                other.entries.len(),
                other.groups
            ),
        })
    }
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
        self.data.iter().all(|v| v.is_finite())
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
    fn norm_and_dot_match_hand_values() {
        assert_eq!(l2_norm(&[3.0, 4.0]), 5.0);
        assert_eq!(dot(&[1.0, 2.0], &[3.0, -1.0]), 1.0);
        let mut y = vec![1.0, 1.0];
        axpy(2.0, &[1.0, -1.0], &mut y);
        assert_eq!(y, vec![3.0, -1.0]);
    }
}
