//! The LEAF Shakespeare next-character model: embedding → stacked LSTM → linear on the
//! last time step's output.
//!
//! Defaults (LEAF): vocabulary 80, embedding 8, 2 × LSTM 256, sequences of 80
//! characters; the label of a sample is the character that follows its sequence.
//!
//! PyTorch's formulation and gate order i, f, g, o:
//! `gates = x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh`, `c' = σ(f)⊙c + σ(i)⊙tanh(g)`,
//! `h' = σ(o)⊙tanh(c')`, with h and c starting at zero.
//!
//! Parameters (PyTorch `nn.Embedding` / `nn.LSTM(batch_first)` / `nn.Linear` names):
//! `embedding.weight` `[vocab, E]`; per layer l: `lstm.weight_ih_l{l}` `[4H, in]`,
//! `lstm.weight_hh_l{l}` `[4H, H]`, `lstm.bias_ih_l{l}` `[4H]`, `lstm.bias_hh_l{l}`
//! `[4H]` (all `body`); `fc.weight` `[classes, H]`, `fc.bias` (`head`).
//!
//! # Implementation: plain Rust on flat buffers (docs/arch/0014-fast-layers.md)
//!
//! Forward and backward are written out by hand on buffers the model keeps between
//! calls, with activations **time-major** (`[T·n, ·]`, the rows of step t together) so
//! that everything that does not depend on the recurrence is one large product over all
//! steps:
//!
//! - forward, per layer: the input projection `X·W_ihᵀ` of every step in one GEMM
//!   (`T·n` rows); then per step only the recurrent product `h_{t−1}·W_hhᵀ`, by
//!   [`fedpace_kernels::small_gemm`] against `W_hh` packed once per call into column
//!   panels (both ways, for forward and backward, in one pass over `W_hh`) (one register tile for the batch's 10 rows; 12 % of a step faster than the
//!   `gemm` crate's 6 + 4 row tiles on a transposed copy), and one fused pointwise pass
//!   ([`fedpace_kernels::pointwise::lstm_cell_forward`]) that keeps the activated gates,
//!   `c_t` and `tanh(c_t)` for backward;
//! - backward, per layer, steps in reverse: the pointwise pass
//!   ([`fedpace_kernels::pointwise::lstm_cell_backward`]) and the recurrent product
//!   `dh_{t−1} = dG_t·W_hh` (again by `small_gemm`, `W_hh` packed); then, over all steps at once,
//!   `[dW_ih | dW_hh] = dGᵀ·[X | H_{t−1}]` (one product, so that the `gemm` crate packs
//!   `dG` once for both: every layer's outputs live side by side in one buffer, each
//!   layer's one step down, so that `[X | H_{t−1}]` is a strided view of it; layer 0's
//!   `dW_hh` alone), the biases' column sums and the input gradient `dX = dG·W_ih`
//!   (the next layer down's output gradient).
//! - layer 0's input is a token's embedding, so its input projection is a row of
//!   `P = emb·W_ih0ᵀ` (`[vocab, 4H]`, computed once per call), gathered per step; in
//!   backward its gate gradients are summed per token (`S`, `[vocab, 4H]`) and
//!   `dW_ih0 = Sᵀ·emb`, `d emb = S·W_ih0` — products over the `vocab` rows instead of
//!   all `T·n`, whose `E = 8` columns made them slow passes over the gates.
//!
//! - while each recurrent product runs it asks for the cache lines of the next pointwise
//!   pass's rows ([`fedpace_kernels::small_gemm::gemm_prefetching`]): those rows lie in
//!   megabyte buffers, one 4 KB page after another, which the hardware prefetchers do
//!   not follow across pages (the backward cell pass was ≈ 5× slower in place than alone).
//!
//! [`Model::evaluate`] runs an inference-only forward: the same kernels on the same
//! values in the same order (so the same logits, loss and accuracy, bit for bit; test
//! `inference_forward_gives_the_training_forwards_bits`), with `P` and `W_hh`'s forward
//! packing made once per call and nothing kept for a backward pass (no past steps' gates,
//! `c` or `tanh(c)`, no top-layer outputs but the last, no backward packing).
//!
//! The sequential per-step products always run on the calling thread; the all-steps
//! products may use up to [`CharLstm::with_threads`] threads of the caller's rayon pool,
//! splitting their outputs, never a sum, so results do not depend on it.
//!
//! The same network on candle, [`crate::CandleCharLstm`], is the reference it is tested
//! against (`tests/fast_vs_candle.rs`), and both run the PyTorch golden test.

use crate::batch;
use crate::error::Result;
use crate::init::{self, Init};
use crate::mlp::grow;
use crate::{check_positive, check_spec, BODY, HEAD};
use fedpace_core::{Batch, EvalStats, Model};
use fedpace_kernels::pointwise::{
    add_column_sums, add_to, lstm_cell_backward, lstm_cell_forward, lstm_cell_forward_strided,
};
use fedpace_kernels::small_gemm;
use fedpace_kernels::{sgemm, MatMut, MatRef};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

pub(crate) const NAME: &str = "char-lstm";

/// Samples per forward pass in [`Model::evaluate`] (≈ 0.4 MB of buffers per sample of
/// 80 characters with the LEAF sizes: layer 1's gates and layer 0's outputs of every step): two full register tiles of
/// [`fedpace_kernels::small_gemm`]'s 10 rows (16 left a tile of 6 rows, whose
/// accumulators the compiler keeps in memory).
const EVAL_BLOCK: usize = 20;

/// The sizes of a char-LSTM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub vocab: usize,
    pub embedding: usize,
    pub hidden: usize,
    pub layers: usize,
    pub seq_len: usize,
    pub classes: usize,
}

impl Shape {
    pub fn new(
        vocab: usize,
        embedding: usize,
        hidden: usize,
        layers: usize,
        seq_len: usize,
        classes: usize,
    ) -> Result<Self> {
        for (f, v) in [
            ("vocab", vocab),
            ("embedding", embedding),
            ("hidden", hidden),
            ("layers", layers),
            ("seq_len", seq_len),
            ("classes", classes),
        ] {
            check_positive(NAME, f, v)?;
        }
        Ok(Self {
            vocab,
            embedding,
            hidden,
            layers,
            seq_len,
            classes,
        })
    }

    /// The parameter layout.
    pub fn spec(&self) -> Result<ParamSpec> {
        let (e, h) = (self.embedding, self.hidden);
        let mut b = ParamSpec::builder().add("embedding.weight", &[self.vocab, e], BODY);
        for l in 0..self.layers {
            let input = if l == 0 { e } else { h };
            b = b
                .add(&format!("lstm.weight_ih_l{l}"), &[4 * h, input], BODY)
                .add(&format!("lstm.weight_hh_l{l}"), &[4 * h, h], BODY)
                .add(&format!("lstm.bias_ih_l{l}"), &[4 * h], BODY)
                .add(&format!("lstm.bias_hh_l{l}"), &[4 * h], BODY);
        }
        Ok(b.add("fc.weight", &[self.classes, h], HEAD)
            .add("fc.bias", &[self.classes], HEAD)
            .build()?)
    }

    /// PyTorch's default initialisation, from `seed`.
    pub fn init(&self, spec: &Arc<ParamSpec>, seed: u64) -> ParamTree {
        let mut p = ParamTree::zeros(spec.clone());
        let lstm = Init::fan_in(self.hidden);
        let parts: Vec<(usize, Init)> = spec
            .entries()
            .iter()
            .map(|e| {
                let init = if e.name == "embedding.weight" {
                    Init::Normal(1.0)
                } else if e.name.starts_with("lstm.") {
                    lstm
                } else {
                    Init::fan_in(self.hidden)
                };
                (e.len(), init)
            })
            .collect();
        init::fill(seed, &parts, p.as_mut_slice());
        p
    }

    /// Input width of layer `l`.
    fn input(&self, l: usize) -> usize {
        if l == 0 {
            self.embedding
        } else {
            self.hidden
        }
    }
}

/// Character-level LSTM classifier over token sequences.
#[derive(Debug, Clone)]
pub struct CharLstm {
    spec: Arc<ParamSpec>,
    shape: Shape,
    threads: usize,
    work: Work,
    infer: InferWork,
}

/// One layer's stored forward pass, time-major (`[T·n, ·]`).
#[derive(Debug, Clone, Default)]
struct LayerWork {
    /// Activated gates `σ(i), σ(f), tanh(g), σ(o)`, `[T·n, 4H]`.
    gates: Vec<f32>,
    /// Cell states `c_t`, `[T·n, H]`.
    c: Vec<f32>,
    /// `tanh(c_t)`, `[T·n, H]`.
    tanh_c: Vec<f32>,
    /// `W_hhᵀ` (`H × 4H`, the forward recurrent product's `B`) and `W_hh` (`4H × H`, the
    /// backward's), packed for [`fedpace_kernels::small_gemm`].
    w_fwd: Vec<f32>,
    w_bwd: Vec<f32>,
    /// `b_ih + b_hh`.
    bias: Vec<f32>,
}

/// Buffers kept between calls (grown, never shrunk).
#[derive(Debug, Clone, Default)]
struct Work {
    /// Layer 0's input projection of every token, `[vocab, 4H]` (`P = emb·W_ih0ᵀ`).
    token_proj: Vec<f32>,
    /// Layer 0's gate gradients summed per token, `[vocab, 4H]`.
    token_grad: Vec<f32>,
    layers: Vec<LayerWork>,
    /// Every layer's outputs `h_t`, side by side and shifted by one step a layer:
    /// `[(T + L − 1)·n, L·H]`, layer l's output of row r (time-major) in row `r + l·n`,
    /// columns `l·H..(l+1)·H` ([`y_at`]); rows `(l−1)·n..l·n` of layer l's columns are
    /// zeros (its `h_{−1}`). So rows `r` of columns `(l−1)·H..(l+1)·H` from row `(l−1)·n`
    /// on are `[x_t, h_{t−1}]` of layer l, the right operand of both its weight
    /// gradients in one product (docs/arch/0052-char-lstm-weight-gradients-in-one-product.md).
    ys: Vec<f32>,
    /// Layer l's two weight gradients `[dW_ih | dW_hh]`, `[4H, in + H]`, before they
    /// are copied to their tensors.
    dw: Vec<f32>,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    /// Gradient of the gates' pre-activations, `[T·n, 4H]`.
    dgates: Vec<f32>,
    /// Gradient of the current layer's outputs `[T·n, H]`, and of its inputs.
    dy: Vec<f32>,
    dx: Vec<f32>,
    /// Gradient of the top layer's last output, `[n, H]`.
    dh_last: Vec<f32>,
    /// Recurrent gradients `dh_{t−1}` and `dc_{t−1}`, `[n, H]`.
    dh_rec: Vec<f32>,
    dc: Vec<f32>,
}

/// Buffers of the inference-only forward ([`CharLstm::infer`], used by
/// [`Model::evaluate`]): nothing is kept for a backward pass. Per step only the state the
/// next step reads (`c`, and `h` of the top layer) is kept; a lower layer's outputs are
/// kept for all steps because the next layer's input projection is one product over
/// them, as in training (the same calls, so the same bits).
#[derive(Debug, Clone, Default)]
struct InferWork {
    /// `P = emb·W_ih0ᵀ`, `[vocab, 4H]`, computed once per [`Model::evaluate`] call.
    token_proj: Vec<f32>,
    /// Per layer: `W_hhᵀ` packed for [`fedpace_kernels::small_gemm`] and `b_ih + b_hh`,
    /// once per [`Model::evaluate`] call.
    w_fwd: Vec<Vec<f32>>,
    bias: Vec<Vec<f32>>,
    /// Gates: `[T·n, 4H]` of a layer above the first (its input projections of every
    /// step); layer 0 uses the first `[n, 4H]` rows step by step.
    gates: Vec<f32>,
    /// Outputs of every step of a layer below the top, `[T·n, H]`: the layer being run
    /// and the one below it, alternately.
    y: [Vec<f32>; 2],
    /// The top layer's `h_{t−1}` and `h_t`, and any layer's `c_{t−1}` and `c_t` (`[2, n, H]`,
    /// slot `t mod 2`); `tanh(c_t)`, `[n, H]`, overwritten every step.
    h_top: Vec<f32>,
    c: Vec<f32>,
    tanh_c: Vec<f32>,
}

/// The buffers of one char-LSTM (training and inference work) and the shape they were
/// grown for.
type Buffers = (Shape, Work, InferWork);

thread_local! {
    /// The buffers of the last char-LSTM dropped on this thread, for the next one of the
    /// same shape to start from (docs/arch/0046-char-lstm-buffers-kept.md, as the CNN's).
    /// A simulation builds a client's model for each local run and drops it after, and
    /// growing ≈ 20 MB of zeroed buffers each time and writing them for the first time
    /// cost ≈ 1 % of a client's 20 steps. Every call writes what it reads
    /// of them (they are reused across steps and batch sizes already), so what a previous
    /// model left there changes no result.
    static SPARE: std::cell::RefCell<Option<Buffers>> = const { std::cell::RefCell::new(None) };
}

impl Drop for CharLstm {
    fn drop(&mut self) {
        if self.work.layers.is_empty() && self.infer.w_fwd.is_empty() {
            return;
        }
        let spare = (
            self.shape,
            std::mem::take(&mut self.work),
            std::mem::take(&mut self.infer),
        );
        // During thread teardown the slot may be gone: the buffers are then just freed.
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = Some(spare);
            }
        });
    }
}

/// Slot `prev` of `buf` to read and slot `cur` to write (slots of `len` values; distinct).
fn two_slots(buf: &mut [f32], prev: usize, cur: usize, len: usize) -> (&[f32], &mut [f32]) {
    debug_assert!(prev != cur);
    if prev < cur {
        let (a, b) = buf.split_at_mut(cur * len);
        (&a[prev * len..][..len], &mut b[..len])
    } else {
        let (a, b) = buf.split_at_mut(prev * len);
        (&b[..len], &mut a[cur * len..][..len])
    }
}

/// Where layer `l`'s output of time-major row `r` starts in [`Work::ys`] (`n` rows a
/// step, `layers` layers of width `h`): row `r + l·n`, column `l·h`.
fn y_at(l: usize, r: usize, n: usize, h: usize, layers: usize) -> usize {
    (r + l * n) * layers * h + l * h
}

/// The logits `z = h_T·W_fcᵀ + b` of `n` last outputs `last` (`[n, H]`, rows `ld`
/// apart) into `z` (`[n, classes]`); `p`'s last two tensors are `fc.weight` and
/// `fc.bias`.
#[allow(clippy::too_many_arguments)]
fn fc_logits(
    spec: &ParamSpec,
    p: &[f32],
    last: &[f32],
    n: usize,
    h: usize,
    ld: usize,
    z: &mut [f32],
) {
    let e = spec.entries();
    let nt = e.len();
    let c = z.len() / n;
    sgemm(
        MatMut::row_major(z, n, c, c),
        MatRef::row_major(last, n, h, ld),
        MatRef::transposed(&p[e[nt - 2].range()], h, c, h),
        false,
        1,
    );
    let fc_b = &p[e[nt - 1].range()];
    for row in z.chunks_exact_mut(c) {
        for (v, b) in row.iter_mut().zip(fc_b) {
            *v += b;
        }
    }
}

/// Indices of one layer's tensors in the spec.
fn layer_entries(l: usize) -> (usize, usize, usize, usize) {
    (1 + 4 * l, 2 + 4 * l, 3 + 4 * l, 4 + 4 * l)
}

impl CharLstm {
    /// A model for sequences of `seq_len` ids below `vocab`, predicting one of `classes`.
    ///
    /// ```
    /// use fedpace_nn::CharLstm;
    /// use fedpace_core::Model;
    /// let m = CharLstm::new(80, 8, 256, 2, 80, 80).unwrap();
    /// assert_eq!(m.spec().total_len(), 819_920);
    /// ```
    pub fn new(
        vocab: usize,
        embedding: usize,
        hidden: usize,
        layers: usize,
        seq_len: usize,
        classes: usize,
    ) -> Result<Self> {
        let shape = Shape::new(vocab, embedding, hidden, layers, seq_len, classes)?;
        Ok(Self {
            spec: Arc::new(shape.spec()?),
            shape,
            threads: 1,
            work: Work::default(),
            infer: InferWork::default(),
        })
    }

    /// The most threads of the current rayon pool the all-steps products of one call
    /// may use: `1` (the default) keeps a call on the calling thread, `0` uses as many as
    /// the pool has. Results never depend on it (see the module doc).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Takes this thread's spare buffers ([`SPARE`]) if this model has none yet and
    /// they were grown for its shape.
    fn adopt_spare(&mut self) {
        if !self.work.layers.is_empty() || !self.infer.w_fwd.is_empty() {
            return;
        }
        let spare = SPARE
            .try_with(|s| {
                let mut s = s.try_borrow_mut().ok()?;
                match &*s {
                    Some((shape, ..)) if *shape == self.shape => s.take(),
                    _ => None,
                }
            })
            .ok()
            .flatten();
        if let Some((_, work, infer)) = spare {
            self.work = work;
            self.infer = infer;
        }
    }

    fn gemm_threads(&self) -> usize {
        match self.threads {
            0 => rayon::current_num_threads(),
            t => t,
        }
    }

    /// Forward pass of the `n` sequences `ids` (`[n, T]`): fills every layer's stored
    /// activations and the logits `[n, classes]`.
    fn forward(&mut self, p: &[f32], ids: &[u32], n: usize) {
        let s = self.shape;
        let (t_len, h, e_dim) = (s.seq_len, s.hidden, s.embedding);
        let rows = t_len * n;
        let threads = self.gemm_threads();
        let e = self.spec.entries();
        let w = &mut self.work;
        // Layer 0's input is a token's embedding, so its input projection is a row of
        // P = emb·W_ih0ᵀ (`[vocab, 4H]`, one small product) rather than a product over
        // all T·n rows with E = 8 columns.
        let g4 = 4 * h;
        grow(&mut w.token_proj, s.vocab * g4);
        sgemm(
            MatMut::row_major(&mut w.token_proj[..s.vocab * g4], s.vocab, g4, g4),
            MatRef::row_major(&p[e[0].range()], s.vocab, e_dim, e_dim),
            MatRef::transposed(&p[e[1].range()], e_dim, g4, e_dim),
            false,
            1,
        );
        w.layers.resize_with(s.layers, LayerWork::default);
        let ld = s.layers * h;
        let y_at = |l: usize, r: usize| y_at(l, r, n, h, s.layers);
        // The span of one step's n output rows of a layer, from its y_at: (n − 1)·ld + h.
        let step_len = (n - 1) * ld + h;
        grow(&mut w.ys, (rows + (s.layers - 1) * n) * ld);
        for l in 0..s.layers {
            let (iw, hw, ib, hb) = layer_entries(l);
            let in_dim = s.input(l);
            let lw = &mut w.layers[l];
            grow(&mut lw.gates, rows * 4 * h);
            grow(&mut lw.c, rows * h);
            grow(&mut lw.tanh_c, rows * h);
            if l > 0 {
                // Layer l's h_{−1}: zeros, next to the first step's input.
                for r in 0..n {
                    w.ys[((l - 1) * n + r) * ld + l * h..][..h].fill(0.0);
                }
            }
            grow(&mut lw.w_fwd, small_gemm::packed_len(h, 4 * h));
            grow(&mut lw.w_bwd, small_gemm::packed_len(4 * h, h));
            grow(&mut lw.bias, 4 * h);
            let w_hh = &p[e[hw].range()];
            // Both packs in one pass over W_hh (cold: the update just wrote it).
            small_gemm::pack_both(w_hh, 4 * h, h, &mut lw.w_fwd, &mut lw.w_bwd);
            for ((b, &bi), &bh) in lw
                .bias
                .iter_mut()
                .zip(&p[e[ib].range()])
                .zip(&p[e[hb].range()])
            {
                *b = bi + bh;
            }
            if l > 0 {
                // Input projections of every step: G = X·W_ihᵀ.
                sgemm(
                    MatMut::row_major(&mut lw.gates[..rows * g4], rows, g4, g4),
                    MatRef::row_major(&w.ys[y_at(l - 1, 0)..], rows, in_dim, ld),
                    MatRef::transposed(&p[e[iw].range()], in_dim, g4, in_dim),
                    false,
                    threads,
                );
            }
            for t in 0..t_len {
                let (prev_c, cur_c) = lw.c.split_at_mut(t * n * h);
                let (prev_y, cur_y) = w.ys.split_at_mut(y_at(l, t * n));
                let cur_y = &mut cur_y[..step_len];
                let (g, next_g) = lw.gates[t * n * 4 * h..].split_at_mut(n * 4 * h);
                if l == 0 {
                    // Layer 0's input projections, time-major: row s of step t is token
                    // ids[s, t]'s row of P, gathered step by step from the 320 KB table
                    // (in cache) into rows the step's product and cell pass then find
                    // in cache too.
                    for (smp, dst) in g.chunks_exact_mut(g4).enumerate() {
                        let id = ids[smp * t_len + t] as usize;
                        dst.copy_from_slice(&w.token_proj[id * g4..][..g4]);
                    }
                }
                let c_prev = (t > 0).then(|| &prev_c[(t - 1) * n * h..]);
                if t > 0 {
                    // G_t += h_{t−1}·W_hhᵀ, asking meanwhile for this step's outputs
                    // and the next step's gate rows.
                    let next = &next_g[..next_g.len().min(n * 4 * h)];
                    let ahead = [
                        &cur_c[..n * h],
                        &lw.tanh_c[t * n * h..][..n * h],
                        &cur_y[..],
                        next,
                    ];
                    small_gemm::gemm_prefetching(
                        n,
                        4 * h,
                        h,
                        &prev_y[y_at(l, (t - 1) * n)..],
                        ld,
                        &lw.w_fwd,
                        g,
                        4 * h,
                        true,
                        &ahead,
                    );
                }
                lstm_cell_forward_strided(
                    h,
                    &lw.bias[..4 * h],
                    g,
                    c_prev,
                    &mut cur_c[..n * h],
                    &mut lw.tanh_c[t * n * h..][..n * h],
                    cur_y,
                    ld,
                );
            }
        }
        // Logits from the top layer's last output: z = h_T·W_fcᵀ + b.
        let c = s.classes;
        let last = &w.ys[y_at(s.layers - 1, (t_len - 1) * n)..][..step_len];
        grow(&mut w.logits, n * c);
        fc_logits(&self.spec, p, last, n, h, ld, &mut w.logits[..n * c]);
    }

    /// What [`CharLstm::infer`] needs of the parameters whatever the batch: `P`, and per
    /// layer `W_hhᵀ` packed and the summed biases (the values [`CharLstm::forward`] makes
    /// every call).
    fn prepare_inference(&mut self, p: &[f32]) {
        let s = self.shape;
        let (h, e_dim, g4) = (s.hidden, s.embedding, 4 * s.hidden);
        let e = self.spec.entries();
        let iw = &mut self.infer;
        grow(&mut iw.token_proj, s.vocab * g4);
        sgemm(
            MatMut::row_major(&mut iw.token_proj[..s.vocab * g4], s.vocab, g4, g4),
            MatRef::row_major(&p[e[0].range()], s.vocab, e_dim, e_dim),
            MatRef::transposed(&p[e[1].range()], e_dim, g4, e_dim),
            false,
            1,
        );
        iw.w_fwd.resize_with(s.layers, Vec::new);
        iw.bias.resize_with(s.layers, Vec::new);
        for l in 0..s.layers {
            let (_, hw, ib, hb) = layer_entries(l);
            grow(&mut iw.w_fwd[l], small_gemm::packed_len(h, g4));
            // W_hhᵀ as `pack_both` packs it (the same values).
            small_gemm::pack(&p[e[hw].range()], h, g4, 1, h, &mut iw.w_fwd[l]);
            grow(&mut iw.bias[l], g4);
            for ((b, &bi), &bh) in iw.bias[l]
                .iter_mut()
                .zip(&p[e[ib].range()])
                .zip(&p[e[hb].range()])
            {
                *b = bi + bh;
            }
        }
    }

    /// Inference-only forward of the `n` sequences `ids` (`[n, T]`) into
    /// `work.logits[..n·classes]`, after [`CharLstm::prepare_inference`] with the same
    /// `p`: the same kernels on the same values in the same order as
    /// [`CharLstm::forward`], so the same logits bit for bit, but nothing is stored for
    /// a backward pass (no `c`, `tanh(c)` or gates of past steps, no top-layer outputs
    /// but the last, no backward packing of `W_hh`).
    fn infer(&mut self, p: &[f32], ids: &[u32], n: usize) {
        let s = self.shape;
        let (t_len, h) = (s.seq_len, s.hidden);
        let (rows, g4, nh) = (t_len * n, 4 * s.hidden, n * s.hidden);
        let threads = self.gemm_threads();
        let e = self.spec.entries();
        let iw = &mut self.infer;
        grow(&mut iw.gates, if s.layers > 1 { rows * g4 } else { n * g4 });
        grow(&mut iw.c, 2 * nh);
        grow(&mut iw.tanh_c, nh);
        grow(&mut iw.h_top, 2 * nh);
        // Layer l > 0 reads y[(l − 1) mod 2]; the top layer writes only `h_top`.
        for (k, y) in iw.y.iter_mut().enumerate() {
            if s.layers > k + 1 {
                grow(y, rows * h);
            }
        }
        for l in 0..s.layers {
            let top = l + 1 == s.layers;
            let (y0, y1) = iw.y.split_at_mut(1);
            let (below, out) = if l % 2 == 0 {
                (&y1[0], &mut y0[0])
            } else {
                (&y0[0], &mut y1[0])
            };
            if l > 0 {
                let (iw_entry, ..) = layer_entries(l);
                sgemm(
                    MatMut::row_major(&mut iw.gates[..rows * g4], rows, g4, g4),
                    MatRef::row_major(&below[..rows * h], rows, h, h),
                    MatRef::transposed(&p[e[iw_entry].range()], h, g4, h),
                    false,
                    threads,
                );
            }
            // The top layer's outputs go to two slots, the others' to one per step.
            let out: &mut [f32] = if top { &mut iw.h_top } else { out };
            let slot = |t: usize| if top { t % 2 } else { t };
            for t in 0..t_len {
                let g = if l == 0 {
                    let g = &mut iw.gates[..n * g4];
                    for (smp, dst) in g.chunks_exact_mut(g4).enumerate() {
                        let id = ids[smp * t_len + t] as usize;
                        dst.copy_from_slice(&iw.token_proj[id * g4..][..g4]);
                    }
                    g
                } else {
                    &mut iw.gates[t * n * g4..][..n * g4]
                };
                let tanh_c = &mut iw.tanh_c[..nh];
                if t == 0 {
                    lstm_cell_forward(
                        h,
                        &iw.bias[l][..g4],
                        g,
                        None,
                        &mut iw.c[..nh],
                        tanh_c,
                        &mut out[..nh],
                    );
                    continue;
                }
                let (h_prev, h_cur) = two_slots(out, slot(t - 1), slot(t), nh);
                small_gemm::gemm(n, g4, h, h_prev, h, &iw.w_fwd[l], g, g4, true);
                let (c_prev, c_cur) = two_slots(&mut iw.c[..2 * nh], (t - 1) % 2, t % 2, nh);
                lstm_cell_forward(h, &iw.bias[l][..g4], g, Some(c_prev), c_cur, tanh_c, h_cur);
            }
        }
        let c = s.classes;
        let last = &iw.h_top[((t_len - 1) % 2) * nh..][..nh];
        grow(&mut self.work.logits, n * c);
        fc_logits(&self.spec, p, last, n, h, h, &mut self.work.logits[..n * c]);
    }

    /// Backward pass from `work.dlogits` (after [`CharLstm::forward`] of the same
    /// sequences): writes every parameter's gradient into `grad`.
    fn backward(&mut self, p: &[f32], ids: &[u32], n: usize, grad: &mut [f32]) {
        let s = self.shape;
        let (t_len, h, c) = (s.seq_len, s.hidden, s.classes);
        let rows = t_len * n;
        let threads = self.gemm_threads();
        let e = self.spec.entries();
        let nt = e.len();
        let w = &mut self.work;
        let dz = &w.dlogits[..n * c];
        let ld = s.layers * h;
        let y_at = |l: usize, r: usize| y_at(l, r, n, h, s.layers);
        let last = &w.ys[y_at(s.layers - 1, (t_len - 1) * n)..][..(n - 1) * ld + h];
        // fc: dW = dZᵀ·h_T, db = Σ dZ, dh_T = dZ·W_fc.
        sgemm(
            MatMut::row_major(&mut grad[e[nt - 2].range()], c, h, h),
            MatRef::transposed(dz, c, n, c),
            MatRef::row_major(last, n, h, ld),
            false,
            1,
        );
        let gb = &mut grad[e[nt - 1].range()];
        gb.fill(0.0);
        add_column_sums(dz, gb);
        grow(&mut w.dh_last, n * h);
        sgemm(
            MatMut::row_major(&mut w.dh_last[..n * h], n, h, h),
            MatRef::row_major(dz, n, c, c),
            MatRef::row_major(&p[e[nt - 2].range()], c, h, h),
            false,
            1,
        );
        grow(&mut w.dgates, rows * 4 * h);
        grow(&mut w.dy, rows * h);
        grow(&mut w.dx, rows * h);
        grow(&mut w.dh_rec, n * h);
        grow(&mut w.dc, n * h);
        for l in (0..s.layers).rev() {
            let (iw, hw, ib, hb) = layer_entries(l);
            let in_dim = s.input(l);
            let lw = &w.layers[l];
            let top = l + 1 == s.layers;
            let (dh_rec, dc) = (&mut w.dh_rec[..n * h], &mut w.dc[..n * h]);
            dh_rec.fill(0.0);
            dc.fill(0.0);
            let dgates = &mut w.dgates[..rows * 4 * h];
            for t in (0..t_len).rev() {
                let dy = if top {
                    (t + 1 == t_len).then_some(&w.dh_last[..n * h])
                } else {
                    Some(&w.dy[t * n * h..][..n * h])
                };
                let dg = &mut dgates[t * n * 4 * h..][..n * 4 * h];
                lstm_cell_backward(
                    h,
                    &lw.gates[t * n * 4 * h..][..n * 4 * h],
                    (t > 0).then(|| &lw.c[(t - 1) * n * h..][..n * h]),
                    &lw.tanh_c[t * n * h..][..n * h],
                    dh_rec,
                    dy,
                    dc,
                    dg,
                );
                if t > 0 {
                    // dh_{t−1} = dG_t·W_hh, asking meanwhile for what step t − 1's
                    // pointwise pass reads and writes.
                    let (before, _) = dgates.split_at(t * n * 4 * h);
                    fn rows_of(v: &[f32], step: usize, n: usize, width: usize) -> &[f32] {
                        &v[step * n * width..][..n * width]
                    }
                    let ahead = [
                        rows_of(&lw.gates, t - 1, n, 4 * h),
                        rows_of(&lw.tanh_c, t - 1, n, h),
                        if t > 1 {
                            rows_of(&lw.c, t - 2, n, h)
                        } else {
                            &[]
                        },
                        if top {
                            &[]
                        } else {
                            rows_of(&w.dy, t - 1, n, h)
                        },
                        rows_of(before, t - 1, n, 4 * h),
                    ];
                    small_gemm::gemm_prefetching(
                        n,
                        h,
                        4 * h,
                        &dgates[t * n * 4 * h..][..n * 4 * h],
                        4 * h,
                        &lw.w_bwd,
                        dh_rec,
                        h,
                        false,
                        &ahead,
                    );
                }
            }
            let dgates = &w.dgates[..rows * 4 * h];
            if l > 0 {
                // [dW_ih | dW_hh] = dGᵀ·[X | H_{t−1}] over every step (h_{−1} = 0): one
                // product, so the `gemm` crate packs dG once for both.
                let wc = in_dim + h;
                grow(&mut w.dw, 4 * h * wc);
                sgemm(
                    MatMut::row_major(&mut w.dw[..4 * h * wc], 4 * h, wc, wc),
                    MatRef::transposed(dgates, 4 * h, rows, 4 * h),
                    MatRef::row_major(&w.ys[y_at(l - 1, 0)..], rows, wc, ld),
                    false,
                    threads,
                );
                let (lo, hi) = grad.split_at_mut(e[hw].range().start);
                let (gih, ghh) = (&mut lo[e[iw].range()], &mut hi[..4 * h * h]);
                for ((row, ih), hh) in w.dw[..4 * h * wc]
                    .chunks_exact(wc)
                    .zip(gih.chunks_exact_mut(in_dim))
                    .zip(ghh.chunks_exact_mut(h))
                {
                    ih.copy_from_slice(&row[..in_dim]);
                    hh.copy_from_slice(&row[in_dim..]);
                }
            } else {
                // Layer 0 (its dW_ih comes from the per-token sums below):
                // dW_hh = Σ_{t ≥ 1} dG_tᵀ·h_{t−1}.
                sgemm(
                    MatMut::row_major(&mut grad[e[hw].range()], 4 * h, h, h),
                    MatRef::transposed(&dgates[n * 4 * h..], 4 * h, rows - n, 4 * h),
                    MatRef::row_major(&w.ys[y_at(l, 0)..], rows - n, h, ld),
                    false,
                    threads,
                );
            }
            // The biases' gradients: the column sums of dG, rows in order (layer 0's in
            // the same pass as its per-token sums, below).
            let gbi = &mut grad[e[ib].range()];
            gbi.fill(0.0);
            if l > 0 {
                add_column_sums(dgates, gbi);
                let (lo, hi) = grad.split_at_mut(e[hb].range().start);
                hi[..4 * h].copy_from_slice(&lo[e[ib].range()]);
            }
            if l > 0 {
                // dX = dG·W_ih: the output gradient of the layer below.
                sgemm(
                    MatMut::row_major(&mut w.dx[..rows * in_dim], rows, in_dim, in_dim),
                    MatRef::row_major(dgates, rows, 4 * h, 4 * h),
                    MatRef::row_major(&p[e[iw].range()], 4 * h, in_dim, in_dim),
                    false,
                    threads,
                );
                std::mem::swap(&mut w.dy, &mut w.dx);
            }
        }
        // Layer 0's input is emb[id] for each row's token, so with S[v] = Σ of the gate
        // gradients of the rows whose token is v (added in (step, sample) order),
        // dW_ih0 = Σ_r dG_rᵀ·emb[id_r] = Sᵀ·emb and the embedding's gradient
        // d emb[v] = Σ_{r: id_r = v} dG_r·W_ih0 = S[v]·W_ih0: products of `vocab` rows
        // instead of T·n.
        let (g4, e_dim, vocab) = (4 * h, s.embedding, s.vocab);
        grow(&mut w.token_grad, vocab * g4);
        let sums = &mut w.token_grad[..vocab * g4];
        sums.fill(0.0);
        let (ib0, hb0) = (layer_entries(0).2, layer_entries(0).3);
        let (lo, hi) = grad.split_at_mut(e[hb0].range().start);
        let gbi = &mut lo[e[ib0].range()];
        for (r, dg) in w.dgates[..rows * g4].chunks_exact(g4).enumerate() {
            let (t, smp) = (r / n, r % n);
            let id = ids[smp * t_len + t] as usize;
            add_to(&mut sums[id * g4..][..g4], dg);
            add_to(gbi, dg);
        }
        hi[..g4].copy_from_slice(gbi);
        let sums = &w.token_grad[..vocab * g4];
        sgemm(
            MatMut::row_major(&mut grad[e[1].range()], g4, e_dim, e_dim),
            MatRef::transposed(sums, g4, vocab, g4),
            MatRef::row_major(&p[e[0].range()], vocab, e_dim, e_dim),
            false,
            1,
        );
        sgemm(
            MatMut::row_major(&mut grad[e[0].range()], vocab, e_dim, e_dim),
            MatRef::row_major(sums, vocab, g4, g4),
            MatRef::row_major(&p[e[1].range()], g4, e_dim, e_dim),
            false,
            1,
        );
    }

    fn ids<'a>(&self, batch: &'a Batch) -> Result<&'a [u32]> {
        let s = &self.shape;
        batch::tokens(NAME, batch, s.seq_len, s.vocab, s.classes)
    }
}

impl Model for CharLstm {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }

    fn init(&self, seed: u64) -> fedpace_core::Result<ParamTree> {
        Ok(self.shape.init(&self.spec, seed))
    }

    fn loss_and_grad(
        &mut self,
        params: &ParamTree,
        batch: &Batch,
        grad: &mut [f32],
    ) -> fedpace_core::Result<f32> {
        check_spec(NAME, &self.spec, params)?;
        batch::grad_len(NAME, grad, self.spec.total_len())?;
        let ids = self.ids(batch)?;
        let n = batch.len();
        if n == 0 {
            grad.fill(0.0);
            return Ok(0.0);
        }
        let p = params.as_slice();
        self.adopt_spare();
        self.forward(p, ids, n);
        let c = self.shape.classes;
        let w = &mut self.work;
        grow(&mut w.dlogits, n * c);
        let (loss_sum, _) = crate::xent::softmax_xent(
            &w.logits[..n * c],
            &batch.labels,
            c,
            Some(&mut w.dlogits[..n * c]),
        );
        self.backward(p, ids, n, grad);
        Ok((loss_sum / n as f64) as f32)
    }

    /// Every gradient value is written (products that overwrite, bias sums from a
    /// zeroed start, zeros for an empty batch), so a local step skips zeroing `grad`.
    fn overwrites_grad(&self) -> bool {
        true
    }

    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> fedpace_core::Result<EvalStats> {
        check_spec(NAME, &self.spec, params)?;
        let ids = self.ids(batch)?;
        let (t_len, c) = (self.shape.seq_len, self.shape.classes);
        let mut stats = EvalStats::default();
        if batch.is_empty() {
            return Ok(stats);
        }
        self.adopt_spare();
        self.prepare_inference(params.as_slice());
        for (xb, yb) in ids
            .chunks(EVAL_BLOCK * t_len)
            .zip(batch.labels.chunks(EVAL_BLOCK))
        {
            let nb = yb.len();
            self.infer(params.as_slice(), xb, nb);
            let (loss_sum, correct) =
                crate::xent::softmax_xent(&self.work.logits[..nb * c], yb, c, None);
            stats.loss_sum += loss_sum;
            stats.correct += correct;
            stats.count += nb as u64;
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::Inputs;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The model's initialisation with every bias redrawn from ±0.2 (gates away from ½),
    /// and `n` random sequences with random labels.
    fn case(m: &CharLstm, n: usize, seed: u64) -> (ParamTree, Batch) {
        let s = m.shape;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut p = m.init(seed).unwrap();
        for e in m.spec.entries() {
            if e.name.contains("bias") {
                for v in &mut p.as_mut_slice()[e.range()] {
                    *v = rng.gen_range(-0.2..0.2);
                }
            }
        }
        let data = (0..n * s.seq_len)
            .map(|_| rng.gen_range(0..s.vocab as u32))
            .collect();
        let labels = (0..n).map(|_| rng.gen_range(0..s.classes as u32)).collect();
        let batch = Batch {
            inputs: Inputs::Tokens {
                data,
                seq_len: s.seq_len,
            },
            labels,
        };
        (p, batch)
    }

    /// The loss, gradient bits and evaluation of `p` on `batch` by `m`.
    fn step_bits(m: &mut CharLstm, p: &ParamTree, batch: &Batch) -> (u32, Vec<u32>, EvalStats) {
        let mut grad = vec![f32::NAN; m.spec.total_len()];
        let loss = m.loss_and_grad(p, batch, &mut grad).unwrap();
        let stats = m.evaluate(p, batch).unwrap();
        (
            loss.to_bits(),
            grad.iter().map(|g| g.to_bits()).collect(),
            stats,
        )
    }

    /// A model that starts from the buffers a dropped model left on its thread (one of
    /// the same shape that ran other parameters on a larger batch, and after one of
    /// another shape) gives the bits of a model on a thread that never ran one.
    #[test]
    fn a_model_built_after_another_is_dropped_gives_a_fresh_models_bits() {
        let shape = (13, 4, 16, 2, 7, 11);
        let model =
            move || CharLstm::new(shape.0, shape.1, shape.2, shape.3, shape.4, shape.5).unwrap();
        let (p, batch) = case(&model(), 10, 3);
        let fresh = std::thread::spawn({
            let (p, batch) = (p.clone(), batch.clone());
            move || step_bits(&mut model(), &p, &batch)
        })
        .join()
        .unwrap();
        let reused = std::thread::spawn(move || {
            let (p_other, big) = case(&model(), 25, 9);
            let mut first = model();
            step_bits(&mut first, &p_other, &big);
            drop(first);
            let got = step_bits(&mut model(), &p, &batch);
            // The spare is taken (and left again on drop) by the next model of this shape.
            assert!(SPARE.with(|s| s.borrow().is_some()));
            // A model of another shape in between replaces the spare; the next model
            // of the first shape starts from nothing and still gives the same bits.
            let other = CharLstm::new(13, 4, 8, 1, 5, 13).unwrap();
            let (po, bo) = case(&other, 4, 2);
            let mut other = other;
            step_bits(&mut other, &po, &bo);
            drop(other);
            let again = step_bits(&mut model(), &p, &batch);
            (got, again)
        })
        .join()
        .unwrap();
        assert!(reused.0 == fresh, "after a model of the same shape");
        assert!(reused.1 == fresh, "after a model of another shape");
    }

    /// Per block of [`EVAL_BLOCK`] samples, the logits of the training forward and of
    /// the inference forward, and [`Model::evaluate`]'s counts.
    fn run(m: &mut CharLstm, p: &ParamTree, batch: &Batch) -> (Vec<u32>, Vec<u32>, EvalStats) {
        let ids = m.ids(batch).unwrap().to_vec();
        let (t_len, c) = (m.shape.seq_len, m.shape.classes);
        let (mut train, mut infer) = (Vec::new(), Vec::new());
        let mut reference = EvalStats::default();
        m.prepare_inference(p.as_slice());
        for (xb, yb) in ids
            .chunks(EVAL_BLOCK * t_len)
            .zip(batch.labels.chunks(EVAL_BLOCK))
        {
            let nb = yb.len();
            m.forward(p.as_slice(), xb, nb);
            let z = &m.work.logits[..nb * c];
            train.extend(z.iter().map(|v| v.to_bits()));
            let (loss_sum, correct) = crate::xent::softmax_xent(z, yb, c, None);
            reference.merge(&EvalStats {
                loss_sum,
                correct,
                count: nb as u64,
            });
            m.infer(p.as_slice(), xb, nb);
            infer.extend(m.work.logits[..nb * c].iter().map(|v| v.to_bits()));
        }
        let stats = m.evaluate(p, batch).unwrap();
        assert_eq!(stats.loss_sum.to_bits(), reference.loss_sum.to_bits());
        assert_eq!(
            (stats.correct, stats.count),
            (reference.correct, reference.count)
        );
        (train, infer, stats)
    }

    /// The inference-only forward gives the training forward's logits, loss sum and
    /// correct count bit for bit — one, two and three layers, a last block shorter than
    /// [`EVAL_BLOCK`], and with the all-steps products on one thread or split over two.
    #[test]
    fn inference_forward_gives_the_training_forwards_bits() {
        for (shape, n) in [
            ((13, 4, 16, 1, 7, 13), 9),
            ((13, 4, 16, 3, 7, 11), 45),
            ((80, 8, 256, 2, 20, 80), 45),
        ] {
            let model = |threads| {
                CharLstm::new(shape.0, shape.1, shape.2, shape.3, shape.4, shape.5)
                    .unwrap()
                    .with_threads(threads)
            };
            let (p, batch) = case(&model(1), n, 5);
            let (train, infer, one) = run(&mut model(1), &p, &batch);
            assert!(train == infer, "logits, {shape:?}");
            assert_eq!(one.count, n as u64);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            let (train2, infer2, two) = pool.install(|| run(&mut model(2), &p, &batch));
            assert!(train2 == train && infer2 == infer, "threads, {shape:?}");
            assert_eq!(one, two);
        }
    }
}
