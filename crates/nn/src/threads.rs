//! How many threads one model call uses, and how to keep it to one.
//!
//! The candle models ([`crate::CandleMlp`], [`crate::CandleCnn`],
//! [`crate::CandleCharLstm`]) run on candle 0.11, whose CPU kernels parallelise through
//! **rayon's current pool**: matrix
//! products go through the `gemm` crate, which splits work into
//! `RAYON_NUM_THREADS` (default: physical cores) tasks scheduled on the pool the caller
//! runs in; convolutions and some element-wise kernels use `into_par_iter` / `scope`
//! on that same pool. Nothing is cached, so the pool the call runs inside decides.
//!
//! Consequences:
//! * Called from a thread of a rayon pool of N threads (e.g. the simulation's client
//!   pool), a model call may spread over those N threads by work-stealing. Results do not
//!   depend on the number of threads (kernels split outputs, never reductions).
//! * To keep a call on one thread — e.g. two single-threaded clients side by side on two
//!   cores — run it inside [`single_threaded`], or set `RAYON_NUM_THREADS=1` for the whole
//!   process.
//!
//! The built-in models are plain Rust. Logistic regression and the MLP run on the
//! calling thread. The CNN ([`crate::Cnn`]) runs its fixed blocks of samples as tasks on
//! the current rayon pool (at most [`crate::Cnn::with_threads`] threads; 0, the default,
//! means every idle one) and its fully connected GEMMs split their outputs; the
//! char-LSTM ([`crate::CharLstm`]) splits the outputs of its all-steps products the same
//! way (at most [`crate::CharLstm::with_threads`] threads) and runs its recurrence on the
//! calling thread. Results depend on none of these.

use std::cell::OnceCell;

thread_local! {
    static POOL: OnceCell<rayon::ThreadPool> = const { OnceCell::new() };
}

/// Runs `f` on a one-thread rayon pool owned by the calling thread, so every candle
/// kernel inside runs sequentially on that one worker. The pool is created on first use
/// and reused by later calls from the same thread (a hand-off costs a few µs).
///
/// ```
/// let s = fedpace_nn::threads::single_threaded(|| rayon::current_num_threads());
/// assert_eq!(s, 1);
/// ```
pub fn single_threaded<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    POOL.with(|cell| {
        let pool = cell.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "fedpace-nn-1".into())
                .build()
                .expect("building a one-thread rayon pool")
        });
        pool.install(f)
    })
}
