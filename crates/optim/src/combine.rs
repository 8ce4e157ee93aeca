//! Combinators: run transforms in sequence ([`chain`]), give different transforms to
//! labelled parameter groups ([`partition`]), apply a transform to a subset only
//! ([`masked`]), and stop groups from moving ([`freeze`]).
//!
//! The one decision: `partition` and `masked` run their inner transform on a
//! **gathered sub-buffer** laid out by a sub-spec (the selected tensors, in order, with
//! their labels), so inner states are sized to their subset and an inner transform
//! cannot tell it is nested. Global quantities (e.g. the norm of `clip_by_global_norm`)
//! are then taken over the subset only. The sub-layout is rebuilt at each step (a few
//! small allocations per tensor plus one gather/scatter copy); cache it if profiles
//! ever show it.

use crate::{check_len, check_rates, Error, Result, State, StepContext, Transform};
use fedpace_params::{ParamEntry, ParamSpec};
use std::ops::Range;

// ---------------------------------------------------------------------------------------
// chain

/// Applies transforms one after another; state is one child per transform.
#[derive(Debug)]
pub struct Chain(pub Vec<Box<dyn Transform>>);

/// Builds a [`Chain`].
///
/// ```
/// use fedpace_optim::{chain, clip_by_global_norm, scale_by_rate, trace};
/// let tx = chain(vec![Box::new(clip_by_global_norm(1.0)), Box::new(trace(0.9, false)),
///                     Box::new(scale_by_rate())]);
/// assert_eq!(tx.0.len(), 3);
/// ```
pub fn chain(parts: Vec<Box<dyn Transform>>) -> Chain {
    Chain(parts)
}

impl Chain {
    /// Appends a transform.
    pub fn then<T: Transform + 'static>(mut self, t: T) -> Self {
        self.0.push(Box::new(t));
        self
    }
}

fn check_children(state: &State, n: usize, name: &str) -> Result<()> {
    if state.children.len() != n {
        return Err(Error::StateMismatch(format!(
            "{name} of {n} transforms got state with {} children",
            state.children.len()
        )));
    }
    Ok(())
}

impl Transform for Chain {
    fn init(&self, spec: &ParamSpec) -> State {
        State {
            count: 0,
            buffers: vec![],
            children: self.0.iter().map(|t| t.init(spec)).collect(),
        }
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_children(state, self.0.len(), "chain")?;
        for (t, s) in self.0.iter().zip(state.children.iter_mut()) {
            t.update(updates, s, params, ctx)?;
        }
        state.count += 1;
        Ok(())
    }
    fn set_anchor(&self, state: &mut State, anchor: &[f32], spec: &ParamSpec) -> Result<usize> {
        check_children(state, self.0.len(), "chain")?;
        let mut n = 0;
        for (t, s) in self.0.iter().zip(state.children.iter_mut()) {
            n += t.set_anchor(s, anchor, spec)?;
        }
        Ok(n)
    }
    fn tensor_scales<'s>(&self, state: &'s State) -> Option<&'s [f32]> {
        self.0
            .iter()
            .zip(&state.children)
            .find_map(|(t, s)| t.tensor_scales(s))
    }
    fn update_and_apply(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &mut [f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_children(state, self.0.len(), "chain")?;
        match self.0.split_last() {
            Some((last, rest)) => {
                for (t, s) in rest.iter().zip(state.children.iter_mut()) {
                    t.update(updates, s, params, ctx)?;
                }
                let s = state
                    .children
                    .last_mut()
                    .expect("checked: one state a child");
                last.update_and_apply(updates, s, params, ctx)?;
            }
            None => crate::apply_updates(params, updates),
        }
        state.count += 1;
        Ok(())
    }
    /// A chain of one plain-SGD transform.
    fn plain_sgd(&self) -> bool {
        matches!(self.0.as_slice(), [t] if t.plain_sgd())
    }
    fn update_and_apply_except(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &mut [f32],
        ctx: &StepContext<'_>,
        done: &[bool],
    ) -> Result<()> {
        check_children(state, self.0.len(), "chain")?;
        check_len("tensor flags", done.len(), ctx.spec.entries().len())?;
        if !done.iter().any(|&d| d) {
            return self.update_and_apply(updates, state, params, ctx);
        }
        match self.0.as_slice() {
            [t] if t.plain_sgd() => {
                t.update_and_apply_except(updates, &mut state.children[0], params, ctx, done)?
            }
            _ => return Err(Error::NotPlainSgd(format!("{self:?}"))),
        }
        state.count += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// sub-layouts

/// A subset of a spec's tensors, with the gather/scatter maps to the full buffer.
struct Subset {
    spec: ParamSpec,
    ranges: Vec<Range<usize>>,
    /// Sub-spec group index → full-spec group index.
    group_map: Vec<usize>,
}

impl Subset {
    fn new(full: &ParamSpec, pick: impl Fn(&ParamEntry) -> bool) -> Subset {
        let mut b = ParamSpec::builder();
        let mut ranges = vec![];
        let mut group_map: Vec<usize> = vec![];
        for e in full.entries().iter().filter(|e| pick(e)) {
            b = b.add(&e.name, &e.shape, &full.groups()[e.group]);
            ranges.push(e.range());
            if !group_map.contains(&e.group) {
                group_map.push(e.group);
            }
        }
        let spec = b
            .build()
            .expect("a subset of a valid spec has unique names");
        Subset {
            spec,
            ranges,
            group_map,
        }
    }
    fn gather(&self, full: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.spec.total_len());
        for r in &self.ranges {
            out.extend_from_slice(&full[r.clone()]);
        }
        out
    }
    fn scatter(&self, sub: &[f32], full: &mut [f32]) {
        let mut o = 0;
        for r in &self.ranges {
            full[r.clone()].copy_from_slice(&sub[o..o + r.len()]);
            o += r.len();
        }
    }
    /// Runs `t` on the subset of `updates` in place.
    fn run(
        &self,
        t: &dyn Transform,
        updates: &mut [f32],
        state: &mut State,
        params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        let mut u = self.gather(updates);
        // Params are optional for transforms that do not read them.
        let p = if params.len() == ctx.spec.total_len() {
            self.gather(params)
        } else {
            vec![]
        };
        let rates: Vec<f32> = self.group_map.iter().map(|&g| ctx.group_rates[g]).collect();
        let sub_ctx = StepContext {
            spec: &self.spec,
            group_rates: &rates,
            step: ctx.step,
        };
        t.update(&mut u, state, &p, &sub_ctx)?;
        self.scatter(&u, updates);
        Ok(())
    }
    fn set_anchor(&self, t: &dyn Transform, state: &mut State, anchor: &[f32]) -> Result<usize> {
        t.set_anchor(state, &self.gather(anchor), &self.spec)
    }
}

fn check_io(updates: &[f32], ctx: &StepContext<'_>) -> Result<()> {
    check_rates(ctx)?;
    check_len("updates", updates.len(), ctx.spec.total_len())
}

// ---------------------------------------------------------------------------------------
// partition

/// Different transforms for different parameter-group labels (optax `multi_transform`).
/// Each group is handled by the first part that names its label, else by the default;
/// a group with neither is an [`Error::Partition`] at the first update (or at
/// [`Partition::check`]). Labels that the model does not have are ignored, so one
/// recipe can serve models with and without, say, a `head` group.
/// State: one child per part, then one for the default if there is one.
#[derive(Debug, Default)]
pub struct Partition {
    parts: Vec<(Vec<String>, Box<dyn Transform>)>,
    default: Option<Box<dyn Transform>>,
}

/// Starts an empty [`Partition`].
///
/// ```
/// use fedpace_optim::{adam, freeze, partition, sgd, StepContext, Transform};
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder().add("w", &[2], "body").add("b", &[1], "head")
///     .add("e", &[1], "embed").build().unwrap();
/// let tx = partition()
///     .group("body", adam(0.9, 0.999, 1e-8))
///     .group("head", sgd())
///     .with_default(freeze(&["embed"]));
/// let mut state = tx.init(&spec);
/// let mut g = vec![1.0, 1.0, 1.0, 1.0];
/// let ctx = StepContext { spec: &spec, group_rates: &[0.1, 0.5, 1.0], step: 0 };
/// tx.update(&mut g, &mut state, &[0.0; 4], &ctx).unwrap();
/// assert_eq!(g[2], -0.5);
/// assert_eq!(g[3], 0.0);
/// ```
pub fn partition() -> Partition {
    Partition::default()
}

impl Partition {
    /// Sends the tensors of group `label` to `t`.
    pub fn group<T: Transform + 'static>(self, label: &str, t: T) -> Self {
        self.groups(&[label], t)
    }
    /// Sends the tensors of all `labels` to one transform (one shared state).
    pub fn groups<T: Transform + 'static>(mut self, labels: &[&str], t: T) -> Self {
        self.parts
            .push((labels.iter().map(|s| s.to_string()).collect(), Box::new(t)));
        self
    }
    /// The transform for groups no part names.
    pub fn with_default<T: Transform + 'static>(mut self, t: T) -> Self {
        self.default = Some(Box::new(t));
        self
    }

    /// For each group of `spec`, the part index (`parts.len()` = the default).
    fn assignment(&self, spec: &ParamSpec) -> Result<Vec<usize>> {
        let mut seen = std::collections::HashSet::new();
        for l in self.parts.iter().flat_map(|(ls, _)| ls) {
            if !seen.insert(l) {
                return Err(Error::Partition(format!("group {l:?} is named twice")));
            }
        }
        spec.groups()
            .iter()
            .map(
                |label| match self.parts.iter().position(|(ls, _)| ls.contains(label)) {
                    Some(i) => Ok(i),
                    None if self.default.is_some() => Ok(self.parts.len()),
                    None => Err(Error::Partition(format!(
                        "group {label:?} has no transform and there is no default"
                    ))),
                },
            )
            .collect()
    }

    /// Errors unless every group of `spec` is assigned exactly once.
    pub fn check(&self, spec: &ParamSpec) -> Result<()> {
        self.assignment(spec).map(|_| ())
    }

    fn transforms(&self) -> impl Iterator<Item = &dyn Transform> {
        self.parts
            .iter()
            .map(|(_, t)| t.as_ref())
            .chain(self.default.as_deref())
    }

    fn subsets(&self, spec: &ParamSpec) -> Result<Vec<Subset>> {
        let assign = self.assignment(spec)?;
        Ok((0..self.transforms().count())
            .map(|i| Subset::new(spec, |e| assign[e.group] == i))
            .collect())
    }
}

impl Transform for Partition {
    /// Unassigned groups are reported by `update`; `init` then gives their part an
    /// empty layout.
    fn init(&self, spec: &ParamSpec) -> State {
        let assign = self.assignment(spec).unwrap_or_default();
        let children = self
            .transforms()
            .enumerate()
            .map(|(i, t)| t.init(&Subset::new(spec, |e| assign.get(e.group) == Some(&i)).spec))
            .collect();
        State {
            count: 0,
            buffers: vec![],
            children,
        }
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_io(updates, ctx)?;
        let subsets = self.subsets(ctx.spec)?;
        check_children(state, subsets.len(), "partition")?;
        for ((t, sub), s) in self
            .transforms()
            .zip(&subsets)
            .zip(state.children.iter_mut())
        {
            sub.run(t, updates, s, params, ctx)?;
        }
        state.count += 1;
        Ok(())
    }
    fn set_anchor(&self, state: &mut State, anchor: &[f32], spec: &ParamSpec) -> Result<usize> {
        check_len("anchor", anchor.len(), spec.total_len())?;
        let subsets = self.subsets(spec)?;
        check_children(state, subsets.len(), "partition")?;
        let mut n = 0;
        for ((t, sub), s) in self
            .transforms()
            .zip(&subsets)
            .zip(state.children.iter_mut())
        {
            n += sub.set_anchor(t, s, anchor)?;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------
// masked

/// Which tensors a [`Masked`] or [`Freeze`] acts on. Names the model does not have are
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every tensor whose group label is listed.
    Groups(Vec<String>),
    /// The tensors with these names.
    Tensors(Vec<String>),
}

impl Selector {
    /// Tensors in any of these groups.
    pub fn groups(labels: &[&str]) -> Self {
        Selector::Groups(labels.iter().map(|s| s.to_string()).collect())
    }
    /// Tensors with these names.
    pub fn tensors(names: &[&str]) -> Self {
        Selector::Tensors(names.iter().map(|s| s.to_string()).collect())
    }
    /// Whether the tensor `e` of `spec` is selected.
    pub fn selects(&self, spec: &ParamSpec, e: &ParamEntry) -> bool {
        match self {
            Selector::Groups(ls) => ls.iter().any(|l| *l == spec.groups()[e.group]),
            Selector::Tensors(ns) => ns.contains(&e.name),
        }
    }
}

/// Applies `inner` to the selected tensors only; the others pass through unchanged
/// (identity). State: `children = [inner state over the selected tensors]`.
#[derive(Debug)]
pub struct Masked {
    inner: Box<dyn Transform>,
    selector: Selector,
}

/// Builds [`Masked`].
///
/// ```
/// use fedpace_optim::{chain, clip_by_global_norm, masked, scale_by_rate, Selector, Transform};
/// // clip only the body, then step everything
/// let tx = chain(vec![
///     Box::new(masked(clip_by_global_norm(1.0), Selector::groups(&["body"]))),
///     Box::new(scale_by_rate()),
/// ]);
/// # let _ = tx;
/// ```
pub fn masked<T: Transform + 'static>(inner: T, selector: Selector) -> Masked {
    Masked {
        inner: Box::new(inner),
        selector,
    }
}

impl Transform for Masked {
    fn init(&self, spec: &ParamSpec) -> State {
        let sub = Subset::new(spec, |e| self.selector.selects(spec, e));
        State {
            count: 0,
            buffers: vec![],
            children: vec![self.inner.init(&sub.spec)],
        }
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_io(updates, ctx)?;
        check_children(state, 1, "masked")?;
        let sub = Subset::new(ctx.spec, |e| self.selector.selects(ctx.spec, e));
        sub.run(
            self.inner.as_ref(),
            updates,
            &mut state.children[0],
            params,
            ctx,
        )?;
        state.count += 1;
        Ok(())
    }
    fn set_anchor(&self, state: &mut State, anchor: &[f32], spec: &ParamSpec) -> Result<usize> {
        check_len("anchor", anchor.len(), spec.total_len())?;
        check_children(state, 1, "masked")?;
        let sub = Subset::new(spec, |e| self.selector.selects(spec, e));
        sub.set_anchor(self.inner.as_ref(), &mut state.children[0], anchor)
    }
}

// ---------------------------------------------------------------------------------------
// freeze

/// Zeroes the updates of the selected tensors, so they never move (FedPer/FedRep/FedBABU
/// frozen parts, docs/algorithms.md §C.7). Stateless.
#[derive(Debug, Clone)]
pub struct Freeze {
    selector: Selector,
}

/// Builds [`Freeze`] for the listed group labels.
///
/// ```
/// use fedpace_optim::{chain, freeze, sgd, StepContext, Transform};
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder().add("w", &[1], "body").add("b", &[1], "head").build().unwrap();
/// let tx = chain(vec![Box::new(sgd()), Box::new(freeze(&["head"]))]);
/// let mut g = vec![1.0, 1.0];
/// let ctx = StepContext { spec: &spec, group_rates: &[0.1, 0.1], step: 0 };
/// tx.update(&mut g, &mut tx.init(&spec), &[0.0, 0.0], &ctx).unwrap();
/// assert_eq!(g, vec![-0.1, 0.0]);
/// ```
pub fn freeze(labels: &[&str]) -> Freeze {
    Freeze {
        selector: Selector::groups(labels),
    }
}

impl Freeze {
    /// Freezes what `selector` picks (e.g. single tensors).
    pub fn selecting(selector: Selector) -> Self {
        Freeze { selector }
    }
}

impl Transform for Freeze {
    fn init(&self, _spec: &ParamSpec) -> State {
        State::default()
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        _params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_len("updates", updates.len(), ctx.spec.total_len())?;
        for e in ctx.spec.entries() {
            if self.selector.selects(ctx.spec, e) {
                updates[e.range()].fill(0.0);
            }
        }
        state.count += 1;
        Ok(())
    }
}
