//! Which checkpoints to keep: a pure decision over the monitored metric's history, so it can be
//! tested with tables and replayed exactly after a restart.

/// What to do after an epoch's checkpoint has been stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The epoch whose checkpoint is the best so far, if any monitored value was a number.
    pub best: Option<usize>,
    /// Stored epochs to delete.
    pub delete: Vec<usize>,
}

/// The first epoch with the best value (later equal values do not replace it, as Keras's
/// `save_best_only` compares strictly); NaN values never count.
pub fn best_epoch(values: &[f64], maximize: bool) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (e, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, b)) if maximize => v > b,
            Some((_, b)) => v < b,
        };
        if better {
            best = Some((e, v));
        }
    }
    best.map(|(e, _)| e)
}

/// Keeps the latest checkpoint (the resume point) and the best by the monitored metric; `values`
/// holds the metric for epochs `0..=latest`, `stored` the epochs with a checkpoint (latest included).
pub fn decide(values: &[f64], maximize: bool, stored: &[usize]) -> Retention {
    let best = best_epoch(values, maximize);
    let latest = values.len().checked_sub(1);
    let delete = stored
        .iter()
        .copied()
        .filter(|&e| Some(e) != latest && Some(e) != best)
        .collect();
    Retention { best, delete }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_and_the_best() {
        let nan = f64::NAN;
        // (values, maximize, stored) -> (best, delete)
        let table: &[(&[f64], bool, &[usize], Option<usize>, &[usize])] = &[
            (&[1.0], false, &[0], Some(0), &[]),
            (&[1.0, 0.5], false, &[0, 1], Some(1), &[0]),
            (&[1.0, 2.0], false, &[0, 1], Some(0), &[]),
            (&[1.0, 2.0, 3.0], false, &[0, 1, 2], Some(0), &[1]),
            (&[1.0, 2.0, 0.5], false, &[0, 1, 2], Some(2), &[0, 1]),
            (&[0.5, 0.7, 0.7], true, &[0, 1, 2], Some(1), &[0]),
            (&[nan, nan], false, &[0, 1], None, &[0]),
            (&[nan, 3.0, nan], false, &[0, 1, 2], Some(1), &[0]),
        ];
        for (values, max, stored, best, delete) in table {
            let r = decide(values, *max, stored);
            assert_eq!(r.best, *best, "{values:?}");
            assert_eq!(r.delete, *delete, "{values:?}");
        }
    }
}
