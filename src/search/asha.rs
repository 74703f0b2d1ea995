//! Asynchronous successive halving (ASHA, Li et al. 2018), the early-stopping form Determined and
//! Optuna use: every trial trains towards the full budget; when it completes the epochs of a rung
//! it goes on only if its objective is among the best `1 / eta` of the trials that reached that
//! rung so far (itself included); otherwise it stops there.
//!
//! The decision is a pure function of the rung's earlier results, so once stored it can be
//! replayed unchanged after a restart.

/// What happens to a trial at a rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Promote,
    Stop,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Promote => "promote",
            Decision::Stop => "stop",
        }
    }

    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "promote" => Some(Decision::Promote),
            "stop" => Some(Decision::Stop),
            _ => None,
        }
    }
}

/// The rungs, as epoch counts: `min_epochs * eta^k` for every `k` that stays below `max_epochs`
/// (a trial that gets past the last rung trains all `max_epochs`).
pub fn rungs(min_epochs: u32, max_epochs: u32, eta: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut r = min_epochs.max(1) as u64;
    while r < max_epochs as u64 {
        out.push(r as u32);
        r = r.saturating_mul(eta.max(2) as u64);
    }
    out
}

/// Whether a trial whose objective is `value` at a rung goes on, given the values `earlier`
/// trials had when they reached the same rung. It goes on when fewer than
/// `max(1, floor(n / eta))` of the `n` results (its own included) are strictly better. A
/// non-finite value always stops.
pub fn decide(earlier: &[f64], value: f64, eta: u32, maximize: bool) -> Decision {
    if !value.is_finite() {
        return Decision::Stop;
    }
    let n = earlier.len() + 1;
    let keep = (n / eta.max(2) as usize).max(1);
    let better = earlier
        .iter()
        .filter(|&&v| v.is_finite() && if maximize { v > value } else { v < value })
        .count();
    if better < keep {
        Decision::Promote
    } else {
        Decision::Stop
    }
}

/// The best of `values` in the objective's direction, ignoring non-finite ones, with its index.
pub fn best(values: impl IntoIterator<Item = f64>, maximize: bool) -> Option<(usize, f64)> {
    values
        .into_iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .fold(None, |acc, (i, v)| match acc {
            Some((_, b)) if (maximize && v <= b) || (!maximize && v >= b) => acc,
            _ => Some((i, v)),
        })
}
