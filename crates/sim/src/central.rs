//! [`HeldOut`]: the server's held-out test set as a [`CentralEval`], evaluated in
//! parallel chunks (docs/library.md, "Central evaluation").

use fedpace_core::{CentralEval, Dataset, EvalStats, ModelFactory};
use fedpace_params::ParamTree;
use rayon::prelude::*;
use std::sync::Arc;

/// Samples per chunk (does not change results).
const CHUNK: usize = 512;

/// A test set the server holds, evaluated with models from a factory on a thread pool of
/// its own.
///
/// Deterministic whatever the thread count: the set is cut into chunks of 512 samples,
/// each evaluated by a fresh model; counts are integers and loss sums are added in chunk
/// order.
pub struct HeldOut {
    test: Arc<dyn Dataset>,
    models: ModelFactory,
    pool: rayon::ThreadPool,
}

impl HeldOut {
    /// Evaluates `test` with models from `models` on `threads` threads (0 = one per core).
    pub fn new(
        test: Arc<dyn Dataset>,
        models: ModelFactory,
        threads: usize,
    ) -> fedpace_core::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fedpace-eval-{i}"))
            .build()
            .map_err(|e| fedpace_core::Error::Backend(format!("thread pool: {e}")))?;
        Ok(Self { test, models, pool })
    }
}

impl CentralEval for HeldOut {
    fn evaluate(&mut self, global: &ParamTree) -> fedpace_core::Result<EvalStats> {
        let (test, models) = (&self.test, &self.models);
        let n = test.len();
        let chunks: Vec<(usize, usize)> = (0..n)
            .step_by(CHUNK)
            .map(|s| (s, (s + CHUNK).min(n)))
            .collect();
        let parts: Vec<fedpace_core::Result<EvalStats>> = self.pool.install(|| {
            chunks
                .into_par_iter()
                .map(|(a, b)| {
                    let mut m = models()?;
                    let idx: Vec<usize> = (a..b).collect();
                    m.evaluate(global, &test.batch(&idx))
                })
                .collect()
        });
        let mut total = EvalStats::default();
        for p in parts {
            total.merge(&p?);
        }
        Ok(total)
    }

    fn describe(&self) -> String {
        format!("{} held-out samples", self.test.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::data::DenseDataset;
    use fedpace_core::{Batch, Inputs, Model};
    use fedpace_params::ParamSpec;

    /// Loss of a sample = its input × the one parameter; correct when the label is 0.
    struct Scale;
    impl Model for Scale {
        fn spec(&self) -> Arc<ParamSpec> {
            Arc::new(ParamSpec::builder().add("w", &[1], "body").build().unwrap())
        }
        fn init(&self, _seed: u64) -> fedpace_core::Result<ParamTree> {
            Ok(ParamTree::zeros(self.spec()))
        }
        fn loss_and_grad(
            &mut self,
            _p: &ParamTree,
            _b: &Batch,
            _g: &mut [f32],
        ) -> fedpace_core::Result<f32> {
            unreachable!("evaluation only")
        }
        fn evaluate(&mut self, p: &ParamTree, b: &Batch) -> fedpace_core::Result<EvalStats> {
            let Inputs::Dense { data, .. } = &b.inputs else {
                unreachable!("dense inputs")
            };
            let w = f64::from(p.as_slice()[0]);
            Ok(EvalStats {
                loss_sum: data.iter().map(|&x| f64::from(x) * w).sum(),
                correct: b.labels.iter().filter(|&&l| l == 0).count() as u64,
                count: b.labels.len() as u64,
            })
        }
    }

    #[test]
    fn held_out_sums_every_chunk_and_is_the_same_on_any_thread_count() {
        // 1,300 samples (three chunks, the last partial); sample i has input i, label i % 3.
        let n = 1300;
        let test = Arc::new(
            DenseDataset::new(
                (0..n).map(|i| i as f32).collect(),
                vec![1],
                (0..n).map(|i| (i % 3) as u32).collect(),
                3,
            )
            .unwrap(),
        );
        let models: ModelFactory = Arc::new(|| Ok(Box::new(Scale) as Box<dyn Model>));
        let mut p = ParamTree::zeros(Scale.spec());
        p.as_mut_slice()[0] = 0.5;
        let stats: Vec<EvalStats> = [1, 2, 3]
            .iter()
            .map(|&t| {
                let mut h = HeldOut::new(test.clone(), models.clone(), t).unwrap();
                assert_eq!(h.describe(), "1300 held-out samples");
                h.evaluate(&p).unwrap()
            })
            .collect();
        assert_eq!(stats[0].count, 1300);
        assert_eq!(stats[0].correct, 434); // 0, 3, …, 1299
                                           // Σ i for i < 1300 = 844,350, × 0.5: exact in f64.
        assert_eq!(stats[0].loss_sum, 422_175.0);
        assert!(stats.iter().all(|s| s == &stats[0]));
    }
}
