//! Central evaluation: the server's own evaluation of the global model on data it holds
//! (a held-out test set such as MNIST's 10,000 test images), separate from the grid that
//! runs the clients (docs/library.md, "Central evaluation"; docs/arch/0015-library-and-central-evaluation.md).
//!
//! A [`CentralEval`] is owned by the server side of a run — in the loops, the
//! [`Observer`](crate::Observer) answers [`Observer::evaluate_central`](crate::Observer::evaluate_central)
//! — so that a simulated grid and a network grid run the same evaluation of the same
//! global model, and a grid never needs the server's data.

use crate::model::EvalStats;
use crate::Result;
use fedpace_params::ParamTree;

/// The server's evaluation of the global model on data it holds.
///
/// Results are sums ([`EvalStats`]) over the server's samples; an implementation must
/// return the same bits for the same parameters whatever its thread count (add partial
/// sums in a fixed order).
pub trait CentralEval: Send + Sync {
    /// Evaluates `global` on the server's data.
    fn evaluate(&mut self, global: &ParamTree) -> Result<EvalStats>;
    /// One line for logs: what is evaluated (e.g. "10000 held-out samples").
    fn describe(&self) -> String;
}
