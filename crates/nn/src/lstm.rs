//! The LEAF Shakespeare next-character model: embedding → stacked LSTM → linear on the
//! last time step's output.
//!
//! Defaults (LEAF): vocabulary 80, embedding 8, 2 × LSTM 256, sequences of 80
//! characters; the label of a sample is the character that follows its sequence.
//!
//! The LSTM cell is written with candle ops (so candle's autograd differentiates it) in
//! PyTorch's formulation and gate order i, f, g, o:
//! `gates = x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh`, `c' = σ(f)⊙c + σ(i)⊙tanh(g)`,
//! `h' = σ(o)⊙tanh(c')`, with h and c starting at zero. Every time step is its own
//! tensor: slicing steps out of one `[n, T, ·]` tensor made each step's backward pad its
//! gradient to full size, which cost 3.5× the whole epoch.
//!
//! Parameters (PyTorch `nn.Embedding` / `nn.LSTM(batch_first)` / `nn.Linear` names):
//! `embedding.weight` `[vocab, E]`; per layer l: `lstm.weight_ih_l{l}` `[4H, in]`,
//! `lstm.weight_hh_l{l}` `[4H, H]`, `lstm.bias_ih_l{l}` `[4H]`, `lstm.bias_hh_l{l}`
//! `[4H]` (all `body`); `fc.weight` `[classes, H]`, `fc.bias` (`head`).

use crate::batch;
use crate::error::Result;
use crate::graph::{self, linear, Params, Scratch};
use crate::init::{self, Init};
use crate::{check_positive, check_spec, BODY, HEAD};
use candle_core::{Device, Tensor};
use fedpace_core::{Batch, EvalStats, Model};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

const NAME: &str = "char-lstm";

/// Character-level LSTM classifier over token sequences.
#[derive(Debug, Clone)]
pub struct CharLstm {
    spec: Arc<ParamSpec>,
    vocab: usize,
    hidden: usize,
    layers: usize,
    seq_len: usize,
    classes: usize,
    device: Device,
    scratch: Scratch,
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
        let mut b = ParamSpec::builder().add("embedding.weight", &[vocab, embedding], BODY);
        for l in 0..layers {
            let input = if l == 0 { embedding } else { hidden };
            b = b
                .add(&format!("lstm.weight_ih_l{l}"), &[4 * hidden, input], BODY)
                .add(&format!("lstm.weight_hh_l{l}"), &[4 * hidden, hidden], BODY)
                .add(&format!("lstm.bias_ih_l{l}"), &[4 * hidden], BODY)
                .add(&format!("lstm.bias_hh_l{l}"), &[4 * hidden], BODY);
        }
        let spec = b
            .add("fc.weight", &[classes, hidden], HEAD)
            .add("fc.bias", &[classes], HEAD)
            .build()?;
        Ok(Self {
            spec: Arc::new(spec),
            vocab,
            hidden,
            layers,
            seq_len,
            classes,
            device: Device::Cpu,
            scratch: Scratch::default(),
        })
    }

    fn forward(&self, p: &Params, ids: &[u32], n: usize) -> Result<Tensor> {
        let (t_len, hd) = (self.seq_len, self.hidden);
        let t = &p.tensors;
        // Per-step tensors throughout: slicing one [n, T, ·] tensor per step would make
        // every step's backward pad its gradient to the full [n, T, ·] size.
        let mut xs = Vec::with_capacity(t_len);
        for step in 0..t_len {
            let ids_t: Vec<u32> = (0..n).map(|i| ids[i * t_len + step]).collect();
            let ids_t = Tensor::from_vec(ids_t, n, &self.device)?;
            xs.push(t[0].embedding(&ids_t)?);
        }
        let mut h = None;
        for l in 0..self.layers {
            let (w_ih, w_hh, b_ih, b_hh) =
                (&t[1 + 4 * l], &t[2 + 4 * l], &t[3 + 4 * l], &t[4 + 4 * l]);
            let (w_ih_t, w_hh_t, bias) = (w_ih.t()?, w_hh.t()?, (b_ih + b_hh)?);
            let mut hl = Tensor::zeros((n, hd), candle_core::DType::F32, &self.device)?;
            let mut c = hl.clone();
            for x in xs.iter_mut() {
                let gates = (x.matmul(&w_ih_t)? + hl.matmul(&w_hh_t)?)?.broadcast_add(&bias)?;
                let i_f = candle_nn::ops::sigmoid(&gates.narrow(1, 0, 2 * hd)?)?;
                let i = i_f.narrow(1, 0, hd)?;
                let f = i_f.narrow(1, hd, hd)?;
                let g = gates.narrow(1, 2 * hd, hd)?.tanh()?;
                let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * hd, hd)?)?;
                c = ((f * &c)? + (i * g)?)?;
                hl = (o * c.tanh()?)?;
                // This step's output is the next layer's input.
                *x = hl.clone();
            }
            h = Some(hl);
        }
        let h = h.expect("at least one layer");
        let nt = t.len();
        linear(&h, &t[nt - 2], &t[nt - 1])
    }

    fn ids<'a>(&self, batch: &'a Batch) -> Result<&'a [u32]> {
        batch::tokens(NAME, batch, self.seq_len, self.vocab, self.classes)
    }
}

impl Model for CharLstm {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }

    fn init(&self, seed: u64) -> fedpace_core::Result<ParamTree> {
        let mut p = ParamTree::zeros(self.spec.clone());
        let lstm = Init::fan_in(self.hidden);
        let parts: Vec<(usize, Init)> = self
            .spec
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
        Ok(p)
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
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = graph::loss_and_grad(
            &self.spec,
            &self.device,
            params,
            &batch.labels,
            self.classes,
            &mut scratch,
            grad,
            |p| self.forward(p, ids, batch.len()),
        );
        self.scratch = scratch;
        Ok(r?)
    }

    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> fedpace_core::Result<EvalStats> {
        check_spec(NAME, &self.spec, params)?;
        let ids = self.ids(batch)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = graph::evaluate(
            &self.spec,
            &self.device,
            params,
            &batch.labels,
            self.classes,
            &mut scratch,
            |p| self.forward(p, ids, batch.len()),
        );
        self.scratch = scratch;
        Ok(r?)
    }
}
