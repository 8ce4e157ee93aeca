//! Softmax cross-entropy on plain slices, shared by every model.
//!
//! Candle models compute their logits with candle, then this function computes the loss
//! and ∂loss/∂logits in one pass (log-sum-exp with the row maximum subtracted), and the
//! gradient is pushed back through candle's graph. That is both cheaper than candle's
//! `log_softmax` + `nll` graph and numerically identical for every model.

/// Sum of per-sample cross-entropy losses and number of argmax hits over row-major
/// logits `[n, classes]`. If `dlogits` is given, writes ∂(mean loss)/∂logits into it:
/// (softmax(z) − onehot(y)) / n.
///
/// Labels must be `< classes` (checked by the caller).
pub fn softmax_xent(
    logits: &[f32],
    labels: &[u32],
    classes: usize,
    mut dlogits: Option<&mut [f32]>,
) -> (f64, u64) {
    let n = labels.len();
    debug_assert_eq!(logits.len(), n * classes);
    let inv_n = 1.0 / n.max(1) as f32;
    let mut loss_sum = 0.0f64;
    let mut correct = 0u64;
    for (i, &y) in labels.iter().enumerate() {
        let row = &logits[i * classes..(i + 1) * classes];
        let y = y as usize;
        let mut max = f32::NEG_INFINITY;
        let mut arg = 0;
        for (c, &z) in row.iter().enumerate() {
            if z > max {
                max = z;
                arg = c;
            }
        }
        if arg == y {
            correct += 1;
        }
        let sum: f32 = row.iter().map(|&z| (z - max).exp()).sum();
        let lse = sum.ln() + max;
        loss_sum += (lse - row[y]) as f64;
        if let Some(d) = dlogits.as_deref_mut() {
            let drow = &mut d[i * classes..(i + 1) * classes];
            let inv_sum = 1.0 / sum;
            for (dz, &z) in drow.iter_mut().zip(row) {
                *dz = (z - max).exp() * inv_sum * inv_n;
            }
            drow[y] -= inv_n;
        }
    }
    (loss_sum, correct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_log_classes() {
        let (l, _) = softmax_xent(&[0.0; 8], &[1, 3], 4, None);
        assert!((l / 2.0 - (4.0f64).ln()).abs() < 1e-6);
    }

    #[test]
    fn huge_logits_stay_finite() {
        let mut d = vec![0.0; 3];
        let (l, c) = softmax_xent(&[1e4, -1e4, 0.0], &[0], 3, Some(&mut d));
        assert!(l.is_finite() && l.abs() < 1e-6);
        assert_eq!(c, 1);
        assert!(d.iter().all(|v| v.is_finite()));
        let (l, _) = softmax_xent(&[1e4, -1e4, 0.0], &[1], 3, None);
        assert!((l - 2e4).abs() < 1.0);
    }

    #[test]
    fn gradient_rows_sum_to_zero() {
        let mut d = vec![0.0; 6];
        softmax_xent(&[0.3, -1.0, 2.0, 0.0, 0.5, 0.1], &[2, 0], 3, Some(&mut d));
        for r in d.chunks(3) {
            assert!(r.iter().sum::<f32>().abs() < 1e-6);
        }
    }
}
