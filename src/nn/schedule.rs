//! Learning rates: a constant, or one of Keras 3's schedules evaluated at every optimizer step.
//!
//! The formulas follow `keras.optimizers.schedules` (Keras 3) term by term. Keras evaluates them in
//! float32; here they are evaluated in f64 and rounded once to the f32 the update kernels use, so a
//! value differs from Keras's by at most a few float32 ulps.

use super::config::{Range, check_f64, check_steps};
use super::spec::FieldError;

/// Boundaries a piecewise-constant schedule may have; each step looks one up.
pub const MAX_BOUNDARIES: usize = 1000;

/// The learning rate an optimizer was given: a number, or a schedule of the step count.
#[derive(Debug, Clone, PartialEq)]
pub enum LearningRate {
    /// Keras's float `learning_rate`: a variable that callbacks may change between epochs.
    Constant(f64),
    /// A `LearningRateSchedule`, evaluated at `optimizer.iterations` before every update.
    Schedule(Schedule),
}

impl From<f64> for LearningRate {
    fn from(v: f64) -> Self {
        LearningRate::Constant(v)
    }
}

impl LearningRate {
    /// The constant value, if this is not a schedule.
    pub fn constant(&self) -> Option<f64> {
        match self {
            LearningRate::Constant(v) => Some(*v),
            LearningRate::Schedule(_) => None,
        }
    }

    /// The rules on the value or the schedule's parameters, with `path` naming the field.
    pub(crate) fn field_errors(&self, path: &str, errors: &mut Vec<FieldError>) {
        match self {
            LearningRate::Constant(v) => check_f64(errors, path, *v, Range::LEARNING_RATE, true),
            LearningRate::Schedule(s) => s.field_errors(path, errors),
        }
    }
}

/// One of Keras 3's learning-rate schedules, with Keras's parameter names.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// `initial_learning_rate * decay_rate ^ (step / decay_steps)`; with `staircase` the exponent is
    /// floored.
    ExponentialDecay {
        initial_learning_rate: f64,
        decay_steps: u64,
        decay_rate: f64,
        staircase: bool,
    },
    /// `initial_learning_rate / (1 + decay_rate * step / decay_steps)`; with `staircase` the
    /// quotient is floored.
    InverseTimeDecay {
        initial_learning_rate: f64,
        decay_steps: u64,
        decay_rate: f64,
        staircase: bool,
    },
    /// `values[0]` while `step <= boundaries[0]`, `values[i]` while `boundaries[i-1] < step <=
    /// boundaries[i]`, `values[last]` after the last boundary.
    PiecewiseConstantDecay { boundaries: Vec<u64>, values: Vec<f64> },
    /// Optional linear warmup from `initial_learning_rate` to `warmup_target` over `warmup_steps`,
    /// then a cosine from the peak down to `alpha` times the peak over `decay_steps`, then flat.
    CosineDecay {
        initial_learning_rate: f64,
        decay_steps: u64,
        alpha: f64,
        warmup_target: Option<f64>,
        warmup_steps: u64,
    },
    /// `(initial - end) * (1 - step / decay_steps) ^ power + end`, the step capped at
    /// `decay_steps`; with `cycle`, `decay_steps` grows to the first multiple above the step.
    PolynomialDecay {
        initial_learning_rate: f64,
        decay_steps: u64,
        end_learning_rate: f64,
        power: f64,
        cycle: bool,
    },
}

impl Schedule {
    /// Keras's `type` name (`exponential_decay`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Schedule::ExponentialDecay { .. } => "exponential_decay",
            Schedule::InverseTimeDecay { .. } => "inverse_time_decay",
            Schedule::PiecewiseConstantDecay { .. } => "piecewise_constant_decay",
            Schedule::CosineDecay { .. } => "cosine_decay",
            Schedule::PolynomialDecay { .. } => "polynomial_decay",
        }
    }

    /// The learning rate for the update after `step` completed steps (Keras's `schedule(iterations)`).
    pub fn at(&self, step: u64) -> f64 {
        let step = step as f64;
        match self {
            Schedule::ExponentialDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                staircase,
            } => {
                let mut p = step / *decay_steps as f64;
                if *staircase {
                    p = p.floor();
                }
                initial_learning_rate * decay_rate.powf(p)
            }
            Schedule::InverseTimeDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                staircase,
            } => {
                let mut p = step / *decay_steps as f64;
                if *staircase {
                    p = p.floor();
                }
                initial_learning_rate / (1.0 + decay_rate * p)
            }
            Schedule::PiecewiseConstantDecay { boundaries, values } => {
                // The first boundary not below the step: `step <= boundaries[i]` picks `values[i]`.
                let i = boundaries.partition_point(|&b| (b as f64) < step);
                values[i]
            }
            Schedule::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                let decay_steps = *decay_steps as f64;
                let decay = |step: f64, from: f64| {
                    let completed = step / decay_steps;
                    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * completed).cos());
                    from * ((1.0 - alpha) * cosine + alpha)
                };
                match warmup_target {
                    None => decay(step.min(decay_steps), *initial_learning_rate),
                    Some(target) => {
                        let warmup_steps = *warmup_steps as f64;
                        let step = step.min(decay_steps + warmup_steps);
                        if step < warmup_steps {
                            (target - initial_learning_rate) * (step / warmup_steps) + initial_learning_rate
                        } else {
                            decay(step - warmup_steps, *target)
                        }
                    }
                }
            }
            Schedule::PolynomialDecay {
                initial_learning_rate,
                decay_steps,
                end_learning_rate,
                power,
                cycle,
            } => {
                let mut decay_steps = *decay_steps as f64;
                let mut step = step;
                if *cycle {
                    let multiplier = if step == 0.0 {
                        1.0
                    } else {
                        (step / decay_steps).ceil()
                    };
                    decay_steps *= multiplier;
                } else {
                    step = step.min(decay_steps);
                }
                let p = step / decay_steps;
                (initial_learning_rate - end_learning_rate) * (1.0 - p).powf(*power) + end_learning_rate
            }
        }
    }

    fn field_errors(&self, path: &str, errors: &mut Vec<FieldError>) {
        let f = |name: &str| format!("{path}.{name}");
        match self {
            Schedule::ExponentialDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                ..
            } => {
                check_f64(
                    errors,
                    &f("initial_learning_rate"),
                    *initial_learning_rate,
                    Range::LEARNING_RATE,
                    true,
                );
                check_steps(errors, &f("decay_steps"), *decay_steps, 1);
                // A rate above 1 grows without bound and overflows within a long run.
                check_f64(
                    errors,
                    &f("decay_rate"),
                    *decay_rate,
                    Range::new_open_closed(0.0, 1.0),
                    false,
                );
            }
            Schedule::InverseTimeDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                ..
            } => {
                check_f64(
                    errors,
                    &f("initial_learning_rate"),
                    *initial_learning_rate,
                    Range::LEARNING_RATE,
                    true,
                );
                check_steps(errors, &f("decay_steps"), *decay_steps, 1);
                check_f64(
                    errors,
                    &f("decay_rate"),
                    *decay_rate,
                    Range::closed(0.0, 1e6),
                    false,
                );
            }
            Schedule::PiecewiseConstantDecay { boundaries, values } => {
                if boundaries.is_empty() || boundaries.len() > MAX_BOUNDARIES {
                    errors.push(FieldError::new(
                        f("boundaries"),
                        format!("must have 1 to {MAX_BOUNDARIES} step numbers"),
                    ));
                } else if let Some(i) = boundaries.windows(2).position(|w| w[1] <= w[0]) {
                    errors.push(FieldError::new(
                        format!("{path}.boundaries[{}]", i + 1),
                        "must be larger than the boundary before it (boundaries are strictly increasing)",
                    ));
                } else {
                    for (i, &b) in boundaries.iter().enumerate() {
                        check_steps(errors, &format!("{path}.boundaries[{i}]"), b, 0);
                    }
                }
                if values.len() != boundaries.len() + 1 {
                    errors.push(FieldError::new(
                        f("values"),
                        format!(
                            "must have one more entry than boundaries ({} boundaries, {} values)",
                            boundaries.len(),
                            values.len()
                        ),
                    ));
                }
                for (i, &v) in values.iter().enumerate().take(MAX_BOUNDARIES + 1) {
                    check_f64(
                        errors,
                        &format!("{path}.values[{i}]"),
                        v,
                        Range::SCHEDULED_RATE,
                        true,
                    );
                }
            }
            Schedule::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                // With a warmup, the start is often 0; without one, 0 would never train.
                let range = if warmup_target.is_some() {
                    Range::SCHEDULED_RATE
                } else {
                    Range::LEARNING_RATE
                };
                check_f64(
                    errors,
                    &f("initial_learning_rate"),
                    *initial_learning_rate,
                    range,
                    true,
                );
                check_steps(errors, &f("decay_steps"), *decay_steps, 1);
                check_f64(errors, &f("alpha"), *alpha, Range::closed(0.0, 1.0), false);
                match warmup_target {
                    Some(t) => check_f64(errors, &f("warmup_target"), *t, Range::LEARNING_RATE, true),
                    None if *warmup_steps > 0 => errors.push(FieldError::new(
                        f("warmup_steps"),
                        "needs warmup_target, the learning rate the warmup reaches",
                    )),
                    None => {}
                }
                check_steps(errors, &f("warmup_steps"), *warmup_steps, 0);
            }
            Schedule::PolynomialDecay {
                initial_learning_rate,
                decay_steps,
                end_learning_rate,
                power,
                ..
            } => {
                check_f64(
                    errors,
                    &f("initial_learning_rate"),
                    *initial_learning_rate,
                    Range::LEARNING_RATE,
                    true,
                );
                check_steps(errors, &f("decay_steps"), *decay_steps, 1);
                check_f64(
                    errors,
                    &f("end_learning_rate"),
                    *end_learning_rate,
                    Range::SCHEDULED_RATE,
                    true,
                );
                check_f64(
                    errors,
                    &f("power"),
                    *power,
                    Range::new_open_closed(0.0, 1e3),
                    false,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-30)
    }

    #[test]
    fn piecewise_constant_takes_the_value_up_to_and_including_each_boundary() {
        let s = Schedule::PiecewiseConstantDecay {
            boundaries: vec![100, 110],
            values: vec![1.0, 0.5, 0.1],
        };
        for (step, want) in [
            (0, 1.0),
            (100, 1.0),
            (101, 0.5),
            (110, 0.5),
            (111, 0.1),
            (10_000, 0.1),
        ] {
            assert_eq!(s.at(step), want, "step {step}");
        }
    }

    #[test]
    fn polynomial_cycle_uses_the_next_multiple_of_decay_steps() {
        let s = Schedule::PolynomialDecay {
            initial_learning_rate: 0.1,
            decay_steps: 10,
            end_learning_rate: 0.01,
            power: 1.0,
            cycle: true,
        };
        // Step 15: decay over 20 steps, 3/4 done.
        assert!(close(s.at(15), 0.09 * 0.25 + 0.01));
        assert!(close(s.at(0), 0.1));
        // Exactly on a multiple: the end value (Keras's ceil(10/10) = 1).
        assert!(close(s.at(10), 0.01));
        let flat = Schedule::PolynomialDecay {
            initial_learning_rate: 0.1,
            decay_steps: 10,
            end_learning_rate: 0.01,
            power: 1.0,
            cycle: false,
        };
        assert!(close(flat.at(15), 0.01));
    }

    #[test]
    fn cosine_warmup_rises_linearly_then_decays_from_the_target() {
        let s = Schedule::CosineDecay {
            initial_learning_rate: 0.0,
            decay_steps: 100,
            alpha: 0.1,
            warmup_target: Some(0.2),
            warmup_steps: 10,
        };
        assert_eq!(s.at(0), 0.0);
        assert!(close(s.at(5), 0.1));
        assert!(close(s.at(10), 0.2));
        assert!(close(s.at(60), 0.2 * (0.9 * 0.5 + 0.1)));
        assert!(close(s.at(110), 0.2 * 0.1));
        assert!(close(s.at(1_000), 0.2 * 0.1));
    }

    #[test]
    fn every_schedule_parameter_is_range_checked_by_its_path() {
        let mut errors = Vec::new();
        Schedule::PiecewiseConstantDecay {
            boundaries: vec![5, 5],
            values: vec![0.1, f64::INFINITY],
        }
        .field_errors("lr", &mut errors);
        Schedule::CosineDecay {
            initial_learning_rate: 0.0,
            decay_steps: 0,
            alpha: 1.5,
            warmup_target: None,
            warmup_steps: 3,
        }
        .field_errors("cos", &mut errors);
        Schedule::ExponentialDecay {
            initial_learning_rate: 1e308,
            decay_steps: 10,
            decay_rate: 1.5,
            staircase: false,
        }
        .field_errors("exp", &mut errors);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "lr.boundaries[1]",
                "lr.values",
                "lr.values[1]",
                "cos.initial_learning_rate",
                "cos.decay_steps",
                "cos.alpha",
                "cos.warmup_steps",
                "exp.initial_learning_rate",
                "exp.decay_rate"
            ]
        );
    }
}
