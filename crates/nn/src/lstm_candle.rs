//! The LEAF char-LSTM ([`crate::CharLstm`]) on candle: the **reference** implementation.
//!
//! Same parameters, layout, initialisation and group labels as [`crate::CharLstm`]. The
//! LSTM cell is written with candle ops (so candle's autograd differentiates it) in
//! PyTorch's formulation and gate order i, f, g, o:
//! `gates = x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh`, `c' = σ(f)⊙c + σ(i)⊙tanh(g)`,
//! `h' = σ(o)⊙tanh(c')`, with h and c starting at zero. Every time step is its own
//! tensor: slicing steps out of one `[n, T, ·]` tensor made each step's backward pad its
//! gradient to full size, which cost 3.5× the whole epoch. It is golden-tested against
//! PyTorch (`tests/golden.rs`), and the plain-Rust [`crate::CharLstm`] is tested against
//! it (`tests/fast_vs_candle.rs`). It is not used by the factory.

use crate::batch;
use crate::check_spec;
use crate::error::Result;
use crate::graph::{self, linear, Params, Scratch};
use crate::lstm::{Shape, NAME};
use candle_core::{Device, Tensor};
use fedpace_core::{Batch, EvalStats, Model};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

/// Character-level LSTM classifier over token sequences, on candle (reference).
#[derive(Debug, Clone)]
pub struct CandleCharLstm {
    spec: Arc<ParamSpec>,
    shape: Shape,
    device: Device,
    scratch: Scratch,
}

impl CandleCharLstm {
    /// A model for sequences of `seq_len` ids below `vocab`, predicting one of `classes`.
    ///
    /// ```
    /// use fedpace_nn::CandleCharLstm;
    /// use fedpace_core::Model;
    /// let m = CandleCharLstm::new(80, 8, 256, 2, 80, 80).unwrap();
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
            device: Device::Cpu,
            scratch: Scratch::default(),
        })
    }

    fn forward(&self, p: &Params, ids: &[u32], n: usize) -> Result<Tensor> {
        let (t_len, hd) = (self.shape.seq_len, self.shape.hidden);
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
        for l in 0..self.shape.layers {
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
        let s = &self.shape;
        batch::tokens(NAME, batch, s.seq_len, s.vocab, s.classes)
    }
}

impl Model for CandleCharLstm {
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
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = graph::loss_and_grad(
            &self.spec,
            &self.device,
            params,
            &batch.labels,
            self.shape.classes,
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
            self.shape.classes,
            &mut scratch,
            |p| self.forward(p, ids, batch.len()),
        );
        self.scratch = scratch;
        Ok(r?)
    }
}
