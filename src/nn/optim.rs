//! Optimizers with Keras 3's defaults and update formulas, and their per-parameter state.

use super::config::{Range, check_f64};
use super::kernels;
use super::schedule::LearningRate;
use super::spec::FieldError;

/// An optimizer and its hyper-parameters, as given (the update kernels compute in f32); the
/// `*_default()` constructors give Keras 3's defaults.
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    Sgd {
        learning_rate: LearningRate,
        momentum: f64,
        nesterov: bool,
    },
    Adagrad {
        learning_rate: LearningRate,
        initial_accumulator_value: f64,
        epsilon: f64,
    },
    Rmsprop {
        learning_rate: LearningRate,
        rho: f64,
        momentum: f64,
        epsilon: f64,
    },
    Adam {
        learning_rate: LearningRate,
        beta_1: f64,
        beta_2: f64,
        epsilon: f64,
    },
}

impl Optimizer {
    /// `keras.optimizers.SGD()`: learning rate 0.01, no momentum.
    pub fn sgd_default() -> Self {
        Optimizer::Sgd {
            learning_rate: LearningRate::Constant(0.01),
            momentum: 0.0,
            nesterov: false,
        }
    }

    /// `keras.optimizers.Adagrad()`: learning rate 0.001, initial accumulator 0.1, epsilon 1e-7.
    pub fn adagrad_default() -> Self {
        Optimizer::Adagrad {
            learning_rate: LearningRate::Constant(0.001),
            initial_accumulator_value: 0.1,
            epsilon: 1e-7,
        }
    }

    /// `keras.optimizers.RMSprop()`: learning rate 0.001, rho 0.9, no momentum, epsilon 1e-7.
    pub fn rmsprop_default() -> Self {
        Optimizer::Rmsprop {
            learning_rate: LearningRate::Constant(0.001),
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
        }
    }

    /// `keras.optimizers.Adam()`: learning rate 0.001, betas 0.9 / 0.999, epsilon 1e-7.
    pub fn adam_default() -> Self {
        Optimizer::Adam {
            learning_rate: LearningRate::Constant(0.001),
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }

    /// The Keras defaults for a Keras optimizer name (`sgd`, `adagrad`, `rmsprop`, `adam`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sgd" => Some(Self::sgd_default()),
            "adagrad" => Some(Self::adagrad_default()),
            "rmsprop" => Some(Self::rmsprop_default()),
            "adam" => Some(Self::adam_default()),
            _ => None,
        }
    }

    /// The Keras name.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adagrad { .. } => "adagrad",
            Optimizer::Rmsprop { .. } => "rmsprop",
            Optimizer::Adam { .. } => "adam",
        }
    }

    /// The learning rate or schedule.
    pub fn learning_rate(&self) -> &LearningRate {
        match self {
            Optimizer::Sgd { learning_rate, .. }
            | Optimizer::Adagrad { learning_rate, .. }
            | Optimizer::Rmsprop { learning_rate, .. }
            | Optimizer::Adam { learning_rate, .. } => learning_rate,
        }
    }

    /// The same optimizer with another learning rate or schedule.
    pub fn with_learning_rate(mut self, lr: LearningRate) -> Self {
        match &mut self {
            Optimizer::Sgd { learning_rate, .. }
            | Optimizer::Adagrad { learning_rate, .. }
            | Optimizer::Rmsprop { learning_rate, .. }
            | Optimizer::Adam { learning_rate, .. } => *learning_rate = lr,
        }
        self
    }

    /// Names of the per-parameter state slots, as stored in a saved training state.
    pub(crate) fn slot_names(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd { momentum, .. } if *momentum != 0.0 => &["momentum"],
            Optimizer::Sgd { .. } => &[],
            Optimizer::Adagrad { .. } => &["accumulator"],
            Optimizer::Rmsprop { momentum, .. } if *momentum != 0.0 => &["velocity", "momentum"],
            Optimizer::Rmsprop { .. } => &["velocity"],
            Optimizer::Adam { .. } => &["m", "v"],
        }
    }

    fn slot_init(&self) -> f32 {
        match self {
            Optimizer::Adagrad {
                initial_accumulator_value,
                ..
            } => *initial_accumulator_value as f32,
            _ => 0.0,
        }
    }

    /// The rules on every hyper-parameter, each error naming `path.<parameter>`: ranges Keras
    /// enforces (SGD's momentum in [0, 1]) or that training needs (betas and rho below 1, so the
    /// bias corrections and averages stay finite; a positive epsilon).
    pub(crate) fn field_errors(&self, path: &str, errors: &mut Vec<FieldError>) {
        let f = |name: &str| format!("{path}.{name}");
        self.learning_rate().field_errors(&f("learning_rate"), errors);
        let unit = Range::closed(0.0, 1.0);
        let below_one = Range::closed_open(0.0, 1.0);
        let epsilon = Range::new_open_closed(0.0, 10.0);
        match self {
            Optimizer::Sgd { momentum, .. } => check_f64(errors, &f("momentum"), *momentum, unit, true),
            Optimizer::Adagrad {
                initial_accumulator_value,
                epsilon: eps,
                ..
            } => {
                check_f64(
                    errors,
                    &f("initial_accumulator_value"),
                    *initial_accumulator_value,
                    Range::closed(0.0, 1e6),
                    true,
                );
                check_f64(errors, &f("epsilon"), *eps, epsilon, true);
            }
            Optimizer::Rmsprop {
                rho,
                momentum,
                epsilon: eps,
                ..
            } => {
                check_f64(errors, &f("rho"), *rho, below_one, true);
                check_f64(errors, &f("momentum"), *momentum, unit, true);
                check_f64(errors, &f("epsilon"), *eps, epsilon, true);
            }
            Optimizer::Adam {
                beta_1,
                beta_2,
                epsilon: eps,
                ..
            } => {
                check_f64(errors, &f("beta_1"), *beta_1, below_one, true);
                check_f64(errors, &f("beta_2"), *beta_2, below_one, true);
                check_f64(errors, &f("epsilon"), *eps, epsilon, true);
            }
        }
    }
}

/// Per-parameter optimizer state (moments, accumulators), the step counter and the learning-rate
/// variable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OptimizerState {
    /// Completed update steps (Keras's `optimizer.iterations`).
    pub iterations: u64,
    /// Keras's `learning_rate` variable (float32) for a constant learning rate, which callbacks may
    /// set between epochs; unused under a schedule.
    pub learning_rate: f32,
    /// `slots[param][slot]`, each as long as the parameter.
    pub slots: Vec<Vec<Vec<f32>>>,
}

impl OptimizerState {
    pub fn new(opt: &Optimizer, param_lens: &[usize]) -> Self {
        let n_slots = opt.slot_names().len();
        let init = opt.slot_init();
        OptimizerState {
            iterations: 0,
            learning_rate: opt.learning_rate().constant().unwrap_or(0.0) as f32,
            slots: param_lens
                .iter()
                .map(|&len| vec![vec![init; len]; n_slots])
                .collect(),
        }
    }

    /// The learning rate the next update uses (Keras's `optimizer.learning_rate`): the variable, or
    /// the schedule at the current step count.
    pub fn current_learning_rate(&self, opt: &Optimizer) -> f32 {
        match opt.learning_rate() {
            LearningRate::Constant(_) => self.learning_rate,
            LearningRate::Schedule(s) => s.at(self.iterations) as f32,
        }
    }

    /// The coefficients of the current update step, shared by every parameter and block; call
    /// [`OptimizerState::finish_step`] once every parameter has been updated.
    pub fn step(&self, opt: &Optimizer) -> Step {
        let lr = self.current_learning_rate(opt);
        let kind = match *opt {
            Optimizer::Adam {
                beta_1,
                beta_2,
                epsilon,
                ..
            } => {
                let (beta_1, beta_2) = (beta_1 as f32, beta_2 as f32);
                let t = (self.iterations + 1) as f64;
                let alpha =
                    lr as f64 * (1.0 - (beta_2 as f64).powf(t)).sqrt() / (1.0 - (beta_1 as f64).powf(t));
                StepKind::Adam {
                    alpha: alpha as f32,
                    beta_1,
                    beta_2,
                    epsilon: epsilon as f32,
                }
            }
            Optimizer::Sgd {
                momentum, nesterov, ..
            } => StepKind::Sgd {
                lr,
                momentum: momentum as f32,
                nesterov,
            },
            Optimizer::Adagrad { epsilon, .. } => StepKind::Adagrad {
                lr,
                epsilon: epsilon as f32,
            },
            Optimizer::Rmsprop {
                rho,
                momentum,
                epsilon,
                ..
            } => StepKind::Rmsprop {
                lr,
                rho: rho as f32,
                momentum: momentum as f32,
                epsilon: epsilon as f32,
            },
        };
        Step { kind }
    }

    pub fn finish_step(&mut self) {
        self.iterations += 1;
    }
}

/// The first two slots of a parameter (empty slices where the optimizer has fewer).
pub(crate) fn split_slots(slots: &mut [Vec<f32>]) -> (&mut [f32], &mut [f32]) {
    match slots {
        [] => (&mut [], &mut []),
        [a] => (a.as_mut_slice(), &mut []),
        [a, b, ..] => (a.as_mut_slice(), b.as_mut_slice()),
    }
}

#[derive(Debug, Clone, Copy)]
enum StepKind {
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
    },
    Adagrad {
        lr: f32,
        epsilon: f32,
    },
    Rmsprop {
        lr: f32,
        rho: f32,
        momentum: f32,
        epsilon: f32,
    },
    Adam {
        alpha: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
}

/// One update step with its per-step coefficients (the learning rate, Adam's bias correction)
/// computed once, to be applied to whole parameters or to any block of one: the formulas are
/// element-wise.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    kind: StepKind,
}

impl Step {
    /// Updates `w` from `g` and the matching ranges of the parameter's slots `s0`, `s1` (in
    /// [`Optimizer::slot_names`] order; unused ones may be empty).
    pub fn apply(&self, w: &mut [f32], g: &[f32], s0: &mut [f32], s1: &mut [f32]) {
        match self.kind {
            StepKind::Adam {
                alpha,
                beta_1,
                beta_2,
                epsilon,
            } => kernels::adam(w, g, s0, s1, alpha, beta_1, beta_2, epsilon),
            StepKind::Sgd {
                lr,
                momentum,
                nesterov,
            } => {
                if momentum == 0.0 {
                    kernels::sgd(w, g, lr);
                } else {
                    kernels::sgd_momentum(w, g, s0, lr, momentum, nesterov);
                }
            }
            StepKind::Adagrad { lr, epsilon } => kernels::adagrad(w, g, s0, lr, epsilon),
            StepKind::Rmsprop {
                lr,
                rho,
                momentum,
                epsilon,
            } => {
                if momentum == 0.0 {
                    kernels::rmsprop(w, g, s0, lr, rho, epsilon);
                } else {
                    kernels::rmsprop_momentum(w, g, s0, s1, lr, rho, momentum, epsilon);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keras_defaults_round_to_the_same_f32_as_f32_literals() {
        // Results stay bit-identical with runs (and checkpoints) from when these were f32 literals.
        for (a, b) in [
            (0.001f64, 0.001f32),
            (0.01, 0.01),
            (0.9, 0.9),
            (0.999, 0.999),
            (1e-7, 1e-7),
            (0.1, 0.1),
        ] {
            assert_eq!((a as f32).to_bits(), b.to_bits(), "{a}");
        }
    }
}
