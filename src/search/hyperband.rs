//! Hyperband (Li et al. 2018) as brackets of asynchronous successive halving: bracket `s` starts
//! its trials at `ceil(max_epochs / eta^s)` epochs, the most aggressive bracket first and the last
//! one (`s = 0`) training every trial the full `max_epochs`. Within a bracket a trial is compared
//! only with the trials of the same bracket (ASHA's rule, see `asha::decide`).
//!
//! The bracket sizes and rung epochs are Keras Tuner's (`HyperbandOracle`, one iteration), computed
//! in integers: with `max_epochs = 9, eta = 3` the brackets start 9, 5 and 3 trials with rungs at
//! [1, 3], [3] and none. A search with more trials than one iteration starts the next iteration.
//! Which bracket trial `n` is in depends on `n` alone, so a resumed search puts it in the same one.

/// One bracket of an iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bracket {
    /// `s`: how many times a trial of it can be promoted.
    pub s: u32,
    /// Trials it starts.
    pub trials: u64,
    /// Its rungs, as epoch counts (`s` of them, below `max_epochs`).
    pub rungs: Vec<u32>,
}

/// The brackets of one Hyperband iteration, in the order their trials start (`s` from the largest
/// down to 0). `s_max` is the largest `s` with `min_epochs * eta^s <= max_epochs`.
pub fn brackets(min_epochs: u32, max_epochs: u32, eta: u32) -> Vec<Bracket> {
    let (min, max, eta) = (
        min_epochs.max(1) as u64,
        max_epochs.max(1) as u64,
        eta.max(2) as u64,
    );
    let mut s_max = 0u32;
    while min * eta.pow(s_max + 1) <= max {
        s_max += 1;
    }
    // Keras Tuner's `ceil(1 + log_eta(max_epochs))`, for max/min: exact when max/min is a power
    // of eta.
    let exact = min * eta.pow(s_max) == max;
    let end = s_max as u64 + 1 + u64::from(!exact);
    (0..=s_max)
        .rev()
        .map(|s| Bracket {
            s,
            trials: (end * eta.pow(s)).div_ceil(s as u64 + 1),
            rungs: (0..s).map(|k| max.div_ceil(eta.pow(s - k)) as u32).collect(),
        })
        .collect()
}

/// The index (into `brackets`) of trial `n`'s bracket; iterations repeat the same layout.
pub fn bracket_of(brackets: &[Bracket], n: u64) -> usize {
    let per_iteration: u64 = brackets.iter().map(|b| b.trials).sum();
    let mut rest = n % per_iteration.max(1);
    for (i, b) in brackets.iter().enumerate() {
        if rest < b.trials {
            return i;
        }
        rest -= b.trials;
    }
    brackets.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(min: u32, max: u32, eta: u32) -> Vec<(u32, u64, Vec<u32>)> {
        brackets(min, max, eta)
            .into_iter()
            .map(|b| (b.s, b.trials, b.rungs))
            .collect()
    }

    #[test]
    fn brackets_are_keras_tuners() {
        // keras_tuner.Hyperband(max_epochs=9, factor=3): rounds of 9/3/1, 5/2 and 3 trials at
        // 1/3/9, 3/9 and 9 epochs: 17 configurations.
        assert_eq!(
            layout(1, 9, 3),
            vec![(2, 9, vec![1, 3]), (1, 5, vec![3]), (0, 3, vec![])]
        );
        // max_epochs=27: 27, 12, 6 and 4 trials.
        assert_eq!(
            layout(1, 27, 3),
            vec![
                (3, 27, vec![1, 3, 9]),
                (2, 12, vec![3, 9]),
                (1, 6, vec![9]),
                (0, 4, vec![])
            ]
        );
        // Not a power of the factor: ceil(1 + log3(10)) = 4, epochs rounded up.
        assert_eq!(
            layout(1, 10, 3),
            vec![(2, 12, vec![2, 4]), (1, 6, vec![4]), (0, 4, vec![])]
        );
        assert_eq!(
            layout(1, 4, 2),
            vec![(2, 4, vec![1, 2]), (1, 3, vec![2]), (0, 3, vec![])]
        );
        // min_epochs shifts the smallest rung; a budget below min * eta leaves one bracket.
        assert_eq!(layout(3, 9, 3), vec![(1, 3, vec![3]), (0, 2, vec![])]);
        assert_eq!(layout(2, 5, 3), vec![(0, 2, vec![])]);
    }

    #[test]
    fn trials_fill_the_brackets_in_order_and_iterations_repeat() {
        let b = brackets(1, 9, 3);
        let of: Vec<usize> = (0..19).map(|n| bracket_of(&b, n)).collect();
        assert_eq!(of, vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 0, 0]);
    }
}
