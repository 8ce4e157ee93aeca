//! The small dense networks the learned-rate methods keep on the server (or send to
//! clients): a multi-layer perceptron over flat `f32` parameters with a hand-written
//! backward pass ([`Mlp`]), and its parameters with their optimiser ([`Learner`]). Used by
//! the hypernetwork rate policy (`policies::hypernet`), pFedHN (`crate::pfedhn`) and
//! FedL2P (`crate::fedl2p`); docs/hypernetworks.md.
//!
//! The one decision a reader needs: no tensor library. These networks are tiny (an input
//! of a few to a few dozen features, width ≤ a few hundred) except pFedHN's output head,
//! which is one matrix–vector product; plain loops in a fixed order are fast enough, exactly
//! reproducible whatever the thread count, and their gradient is checked against a hand
//! derivation and finite differences in the tests. The optimiser is `fedpace_optim`'s, on a
//! [`ParamSpec`] whose groups (e.g. `hypernet`, `embedding`) get their own rates.

use fedpace_core::{Error, Result};
use fedpace_optim::{apply_updates, OptimizerSpec, State, StepContext, Transform};
use fedpace_params::{l2_norm, ParamSpec};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The non-linearity after a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `y = z`.
    Identity,
    /// `y = max(z, 0)` (derivative 0 at 0, as PyTorch).
    Relu,
}

/// A stack of dense layers `z_i = W_i a_{i−1} + b_i`, `a_i = act_i(z_i)`, over one flat
/// parameter vector laid out layer by layer as `W_i` (row-major `[out, in]`) then `b_i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    sizes: Vec<usize>,
    acts: Vec<Activation>,
    offsets: Vec<usize>,
}

/// What [`Mlp::forward`] keeps for the backward pass: every layer's output after its
/// activation, the input first.
#[derive(Debug, Clone, PartialEq)]
pub struct Tape {
    acts: Vec<Vec<f32>>,
}

impl Tape {
    /// The network's output.
    pub fn output(&self) -> &[f32] {
        self.acts.last().map(Vec::as_slice).unwrap_or(&[])
    }
}

impl Mlp {
    /// Layers of widths `sizes[0] → sizes[1] → … → sizes[L]` with `acts[i]` after layer
    /// `i` (`acts.len() == sizes.len() − 1`).
    pub fn new(sizes: Vec<usize>, acts: Vec<Activation>) -> Result<Self> {
        if sizes.len() < 2 || acts.len() != sizes.len() - 1 || sizes.contains(&0) {
            return Err(Error::invalid(
                "hypernetwork layers",
                format!("{sizes:?} with {} activations", acts.len()),
                "at least two widths > 0 and one activation per layer",
            ));
        }
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for w in sizes.windows(2) {
            offsets.push(at);
            at += w[0] * w[1] + w[1];
        }
        offsets.push(at);
        Ok(Self {
            sizes,
            acts,
            offsets,
        })
    }

    /// `input → hidden (ReLU) → … → output (linear)`: `hidden` widths with a ReLU after
    /// each, a linear last layer.
    pub fn relu(input: usize, hidden: &[usize], output: usize) -> Result<Self> {
        let mut sizes = vec![input];
        sizes.extend_from_slice(hidden);
        sizes.push(output);
        let mut acts = vec![Activation::Relu; hidden.len()];
        acts.push(Activation::Identity);
        Self::new(sizes, acts)
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    /// Whether the network has no parameters (never, once built).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Input width.
    pub fn input(&self) -> usize {
        self.sizes[0]
    }

    /// Output width.
    pub fn output(&self) -> usize {
        *self.sizes.last().unwrap_or(&0)
    }

    /// Number of layers.
    pub fn layers(&self) -> usize {
        self.acts.len()
    }

    /// Where layer `i`'s weight and bias sit in the flat vector.
    fn layer(&self, i: usize) -> (usize, usize, usize, usize) {
        let (fan_in, fan_out) = (self.sizes[i], self.sizes[i + 1]);
        let w = self.offsets[i];
        (w, w + fan_in * fan_out, fan_in, fan_out)
    }

    /// The layout as tensors `layer{i}.weight` `[out, in]` and `layer{i}.bias`, all in
    /// group `group`.
    pub fn add_to_spec(
        &self,
        mut b: fedpace_params::ParamSpecBuilder,
        prefix: &str,
        group: &str,
    ) -> fedpace_params::ParamSpecBuilder {
        for i in 0..self.layers() {
            let (fan_in, fan_out) = (self.sizes[i], self.sizes[i + 1]);
            b = b
                .add(
                    &format!("{prefix}layer{i}.weight"),
                    &[fan_out, fan_in],
                    group,
                )
                .add(&format!("{prefix}layer{i}.bias"), &[fan_out], group);
        }
        b
    }

    /// PyTorch's default initialisation of `nn.Linear`: weights and biases
    /// `U(−1/√fan_in, 1/√fan_in)`.
    pub fn init_default(&self, params: &mut [f32], rng: &mut impl Rng) {
        for i in 0..self.layers() {
            let (w, b, fan_in, fan_out) = self.layer(i);
            let bound = 1.0 / (fan_in as f64).sqrt();
            for v in &mut params[w..b + fan_out] {
                *v = rng.gen_range(-bound..bound) as f32;
            }
        }
    }

    /// Sets the last layer's weights and biases to 0, so that the output starts at 0
    /// whatever the input (a learned offset that starts at the baseline).
    pub fn zero_last(&self, params: &mut [f32]) {
        let (w, b, _, fan_out) = self.layer(self.layers() - 1);
        params[w..b + fan_out].fill(0.0);
    }

    /// The output for input `x` (length [`Mlp::input`]), with what backward needs.
    pub fn forward(&self, params: &[f32], x: &[f32]) -> Tape {
        debug_assert_eq!(params.len(), self.len());
        debug_assert_eq!(x.len(), self.input());
        let mut acts = Vec::with_capacity(self.layers() + 1);
        acts.push(x.to_vec());
        for i in 0..self.layers() {
            let (w, b, fan_in, fan_out) = self.layer(i);
            let a = &acts[i];
            let mut z = Vec::with_capacity(fan_out);
            for o in 0..fan_out {
                let row = &params[w + o * fan_in..w + (o + 1) * fan_in];
                let s: f64 = row
                    .iter()
                    .zip(a)
                    .map(|(wi, ai)| *wi as f64 * *ai as f64)
                    .sum();
                let v = (s + params[b + o] as f64) as f32;
                z.push(match self.acts[i] {
                    Activation::Identity => v,
                    Activation::Relu => v.max(0.0),
                });
            }
            acts.push(z);
        }
        Tape { acts }
    }

    /// Back-propagates `d_out = ∂L/∂output` through the pass recorded in `tape`: adds
    /// `∂L/∂params` into `grad` and returns `∂L/∂input`.
    pub fn backward(
        &self,
        params: &[f32],
        tape: &Tape,
        d_out: &[f32],
        grad: &mut [f32],
    ) -> Vec<f32> {
        debug_assert_eq!(d_out.len(), self.output());
        let mut dy: Vec<f32> = d_out.to_vec();
        for i in (0..self.layers()).rev() {
            let (w, b, fan_in, fan_out) = self.layer(i);
            if self.acts[i] == Activation::Relu {
                for (d, a) in dy.iter_mut().zip(&tape.acts[i + 1]) {
                    if *a <= 0.0 {
                        *d = 0.0;
                    }
                }
            }
            let a = &tape.acts[i];
            let mut dx = vec![0f64; fan_in];
            for (o, &d) in dy.iter().enumerate().take(fan_out) {
                grad[b + o] += d;
                if d == 0.0 {
                    continue;
                }
                let row = w + o * fan_in;
                for j in 0..fan_in {
                    grad[row + j] += d * a[j];
                    dx[j] += d as f64 * params[row + j] as f64;
                }
            }
            dy = dx.into_iter().map(|v| v as f32).collect();
        }
        dy
    }
}

/// Parameters with their optimiser: the server side of every hypernetwork. The state is a
/// value ([`LearnerState`]) for checkpoints.
#[derive(Debug)]
pub struct Learner {
    spec: Arc<ParamSpec>,
    /// The parameters, laid out by the spec.
    pub params: Vec<f32>,
    optimizer: OptimizerSpec,
    tx: Box<dyn Transform>,
    state: State,
    /// Rate per group of the spec.
    rates: Vec<f32>,
    clip: Option<f64>,
}

/// What [`Learner`] saves: its parameters and optimiser state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnerState {
    #[serde(with = "fedpace_core::ext::f32s")]
    params: Vec<f32>,
    optimizer: State,
}

impl Learner {
    /// Parameters `params` laid out by `spec`, trained by `optimizer` at `rates` (one per
    /// group), each gradient clipped to global norm `clip` first when given.
    pub fn new(
        spec: Arc<ParamSpec>,
        params: Vec<f32>,
        optimizer: OptimizerSpec,
        rates: Vec<f32>,
        clip: Option<f64>,
    ) -> Result<Self> {
        if params.len() != spec.total_len() || rates.len() != spec.num_groups() {
            return Err(Error::invalid(
                "hypernetwork parameters",
                format!("{} values, {} rates", params.len(), rates.len()),
                format!(
                    "{} values and {} rates",
                    spec.total_len(),
                    spec.num_groups()
                ),
            ));
        }
        let tx = optimizer.build()?;
        let state = tx.init(&spec);
        Ok(Self {
            spec,
            params,
            optimizer,
            tx,
            state,
            rates,
            clip,
        })
    }

    /// The layout.
    pub fn spec(&self) -> &Arc<ParamSpec> {
        &self.spec
    }

    /// One optimiser step on `grad` (∂L/∂params, consumed), after clipping. A gradient
    /// with a non-finite value is skipped (returns false): it would poison the network.
    pub fn step(&mut self, grad: &mut [f32]) -> Result<bool> {
        if grad.iter().any(|g| !g.is_finite()) {
            return Ok(false);
        }
        if let Some(c) = self.clip {
            let n = l2_norm(grad);
            if n > c {
                let s = (c / n) as f32;
                grad.iter_mut().for_each(|g| *g *= s);
            }
        }
        let ctx = StepContext {
            spec: &self.spec,
            group_rates: &self.rates,
            step: self.state.count,
        };
        self.tx.update(grad, &mut self.state, &self.params, &ctx)?;
        apply_updates(&mut self.params, grad);
        Ok(true)
    }

    /// The state to save.
    pub fn save(&self) -> LearnerState {
        LearnerState {
            params: self.params.clone(),
            optimizer: self.state.clone(),
        }
    }

    /// Restores what [`Learner::save`] returned; errors name what does not fit.
    pub fn restore(&mut self, s: LearnerState) -> Result<()> {
        if s.params.len() != self.params.len() {
            return Err(Error::invalid(
                "hypernetwork state",
                format!("{} parameters", s.params.len()),
                format!("{} (the configured network)", self.params.len()),
            ));
        }
        let fresh = self.tx.init(&self.spec);
        let same_shape = fresh.buffers.len() == s.optimizer.buffers.len()
            && fresh
                .buffers
                .iter()
                .zip(&s.optimizer.buffers)
                .all(|(a, b)| a.len() == b.len())
            && fresh.children.len() == s.optimizer.children.len();
        if !same_shape {
            return Err(Error::invalid(
                "hypernetwork state",
                "an optimiser state of another shape",
                format!("the state of {:?}", self.optimizer.name()),
            ));
        }
        self.params = s.params;
        self.state = s.optimizer;
        Ok(())
    }
}

/// A standard normal draw (Box–Muller; the `rand` crate alone has no normal law).
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The golden numbers of `tests/golden/hypernetworks.py` (one case of its JSON), and a
/// reader of its number lists.
#[cfg(test)]
pub(crate) mod golden {
    /// The case `name` of `tests/golden/hypernetworks.json`.
    pub fn case(name: &str) -> serde_json::Value {
        let all: serde_json::Value =
            serde_json::from_str(include_str!("../tests/golden/hypernetworks.json"))
                .expect("tests/golden/hypernetworks.json parses");
        all[name].clone()
    }

    /// A list of numbers as `f32`.
    pub fn floats(v: &serde_json::Value) -> Vec<f32> {
        v.as_array()
            .unwrap_or_else(|| panic!("a list of numbers, not {v}"))
            .iter()
            .map(|x| x.as_f64().expect("a number") as f32)
            .collect()
    }

    /// Asserts `got ≈ want` element-wise (absolute and relative tolerance `tol`).
    pub fn assert_close(what: &str, got: &[f32], want: &serde_json::Value, tol: f64) {
        let want = floats(want);
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let (a, b) = (*a as f64, *b as f64);
            assert!(
                (a - b).abs() <= tol * b.abs().max(1.0),
                "{what}[{i}]: {a} vs {b} (script)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// 2 → 2 (ReLU) → 1 (linear), parameters chosen so that one hidden unit is active
    /// and one is not.
    fn toy() -> (Mlp, Vec<f32>) {
        let m = Mlp::relu(2, &[2], 1).unwrap();
        // W1 = [[1, 2], [-1, 1]], b1 = [0.5, -2], W2 = [[3, -1]], b2 = [0.25]
        let p = vec![1.0, 2.0, -1.0, 1.0, 0.5, -2.0, 3.0, -1.0, 0.25];
        (m, p)
    }

    #[test]
    fn mlp_gradient_matches_hand_derivation_on_a_toy_network() {
        let (m, p) = toy();
        assert_eq!(m.len(), 9);
        let x = [1.0f32, 0.5];
        // z1 = W1 x + b1 = [1 + 1 + 0.5, -1 + 0.5 - 2] = [2.5, -2.5]; a1 = [2.5, 0]
        // y = 3·2.5 − 0 + 0.25 = 7.75
        let t = m.forward(&p, &x);
        assert_eq!(t.output(), &[7.75]);
        // L = ½ y²: ∂L/∂y = 7.75.
        // ∂L/∂W2 = 7.75·a1 = [19.375, 0]; ∂L/∂b2 = 7.75
        // ∂L/∂a1 = 7.75·W2 = [23.25, −7.75]; ReLU: ∂L/∂z1 = [23.25, 0]
        // ∂L/∂W1 = ∂z1 ⊗ x = [[23.25, 11.625], [0, 0]]; ∂L/∂b1 = [23.25, 0]
        // ∂L/∂x = W1ᵀ ∂z1 = [23.25, 46.5]
        let mut g = vec![0.0; 9];
        let dx = m.backward(&p, &t, &[7.75], &mut g);
        assert_eq!(
            g,
            vec![23.25, 11.625, 0.0, 0.0, 23.25, 0.0, 19.375, 0.0, 7.75]
        );
        assert_eq!(dx, vec![23.25, 46.5]);
    }

    #[test]
    fn mlp_gradient_matches_finite_differences() {
        let m = Mlp::new(
            vec![3, 5, 4, 2],
            vec![Activation::Relu, Activation::Identity, Activation::Identity],
        )
        .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut p = vec![0.0; m.len()];
        m.init_default(&mut p, &mut rng);
        let x = [0.3f32, -0.7, 1.1];
        // L = Σ_k c_k y_k
        let c = [0.5f32, -1.5];
        let loss = |p: &[f32], x: &[f32]| -> f64 {
            let y = m.forward(p, x);
            y.output()
                .iter()
                .zip(&c)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum()
        };
        let t = m.forward(&p, &x);
        let mut g = vec![0.0; m.len()];
        let dx = m.backward(&p, &t, &c, &mut g);
        let h = 1e-3f32;
        for i in 0..m.len() {
            let mut a = p.clone();
            a[i] += h;
            let mut b = p.clone();
            b[i] -= h;
            let fd = (loss(&a, &x) - loss(&b, &x)) / (2.0 * h as f64);
            assert!(
                (fd - g[i] as f64).abs() < 2e-3,
                "param {i}: {fd} vs {}",
                g[i]
            );
        }
        for i in 0..3 {
            let mut a = x;
            a[i] += h;
            let mut b = x;
            b[i] -= h;
            let fd = (loss(&p, &a) - loss(&p, &b)) / (2.0 * h as f64);
            assert!((fd - dx[i] as f64).abs() < 2e-3, "input {i}");
        }
    }

    #[test]
    fn zero_last_layer_gives_zero_output() {
        let (m, mut p) = toy();
        m.zero_last(&mut p);
        assert_eq!(m.forward(&p, &[3.0, -1.0]).output(), &[0.0]);
    }

    #[test]
    fn learner_sgd_step_by_hand_and_state_round_trip() {
        let (m, p) = toy();
        let spec = Arc::new(
            m.add_to_spec(ParamSpec::builder(), "", "hypernet")
                .build()
                .unwrap(),
        );
        let sgd: OptimizerSpec = serde_json::from_str(r#"{"name": "sgd"}"#).unwrap();
        let mut l = Learner::new(spec.clone(), p.clone(), sgd, vec![0.5], Some(1.0)).unwrap();
        // ‖g‖ = 2 → clipped to norm 1 → g = [1, 0, …]; step −0.5·g.
        let mut g = vec![0.0; 9];
        g[0] = 2.0;
        assert!(l.step(&mut g).unwrap());
        assert_eq!(l.params[0], 1.0 - 0.5);
        let mut bad = vec![f32::NAN; 9];
        assert!(
            !l.step(&mut bad).unwrap(),
            "non-finite gradients are skipped"
        );
        let saved = l.save();
        let mut l2 = Learner::new(
            spec,
            p,
            serde_json::from_str(r#"{"name": "sgd"}"#).unwrap(),
            vec![0.5],
            Some(1.0),
        )
        .unwrap();
        l2.restore(saved.clone()).unwrap();
        assert_eq!(l2.save(), saved);
    }
}
