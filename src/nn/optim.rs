//! Optimizers with Keras 3's defaults and update formulas, and their per-parameter state.

use super::error::{Error, Result};
use super::kernels;

/// An optimizer and its hyper-parameters; the `*_default()` constructors give Keras 3's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Sgd {
        learning_rate: f32,
        momentum: f32,
        nesterov: bool,
    },
    Adagrad {
        learning_rate: f32,
        initial_accumulator_value: f32,
        epsilon: f32,
    },
    Rmsprop {
        learning_rate: f32,
        rho: f32,
        momentum: f32,
        epsilon: f32,
    },
    Adam {
        learning_rate: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
}

impl Optimizer {
    /// `keras.optimizers.SGD()`: learning rate 0.01, no momentum.
    pub fn sgd_default() -> Self {
        Optimizer::Sgd {
            learning_rate: 0.01,
            momentum: 0.0,
            nesterov: false,
        }
    }

    /// `keras.optimizers.Adagrad()`: learning rate 0.001, initial accumulator 0.1, epsilon 1e-7.
    pub fn adagrad_default() -> Self {
        Optimizer::Adagrad {
            learning_rate: 0.001,
            initial_accumulator_value: 0.1,
            epsilon: 1e-7,
        }
    }

    /// `keras.optimizers.RMSprop()`: learning rate 0.001, rho 0.9, no momentum, epsilon 1e-7.
    pub fn rmsprop_default() -> Self {
        Optimizer::Rmsprop {
            learning_rate: 0.001,
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
        }
    }

    /// `keras.optimizers.Adam()`: learning rate 0.001, betas 0.9 / 0.999, epsilon 1e-7.
    pub fn adam_default() -> Self {
        Optimizer::Adam {
            learning_rate: 0.001,
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
            } => *initial_accumulator_value,
            _ => 0.0,
        }
    }

    /// Rejects hyper-parameters Keras would reject or that cannot train.
    pub(crate) fn check(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(Error::TrainOption {
                field,
                reason: reason.into(),
            })
        };
        let (lr, eps) = match *self {
            Optimizer::Sgd {
                learning_rate,
                momentum,
                ..
            } => {
                if !(0.0..=1.0).contains(&momentum) {
                    return bad("optimizer.momentum", "must be in [0, 1]");
                }
                (learning_rate, 1.0)
            }
            Optimizer::Adagrad {
                learning_rate,
                initial_accumulator_value,
                epsilon,
            } => {
                if !(initial_accumulator_value.is_finite() && initial_accumulator_value >= 0.0) {
                    return bad(
                        "optimizer.initial_accumulator_value",
                        "must be a finite number >= 0",
                    );
                }
                (learning_rate, epsilon)
            }
            Optimizer::Rmsprop {
                learning_rate,
                rho,
                momentum,
                epsilon,
            } => {
                if !(0.0..1.0).contains(&rho) {
                    return bad("optimizer.rho", "must be in [0, 1)");
                }
                if !(0.0..=1.0).contains(&momentum) {
                    return bad("optimizer.momentum", "must be in [0, 1]");
                }
                (learning_rate, epsilon)
            }
            Optimizer::Adam {
                learning_rate,
                beta_1,
                beta_2,
                epsilon,
            } => {
                if !(0.0..1.0).contains(&beta_1) {
                    return bad("optimizer.beta_1", "must be in [0, 1)");
                }
                if !(0.0..1.0).contains(&beta_2) {
                    return bad("optimizer.beta_2", "must be in [0, 1)");
                }
                (learning_rate, epsilon)
            }
        };
        if !(lr.is_finite() && lr > 0.0) {
            return bad("optimizer.learning_rate", "must be a finite number > 0");
        }
        if !(eps.is_finite() && eps > 0.0) {
            return bad("optimizer.epsilon", "must be a finite number > 0");
        }
        Ok(())
    }
}

/// Per-parameter optimizer state (moments, accumulators) and the step counter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OptimizerState {
    /// Completed update steps (Keras's `optimizer.iterations`).
    pub iterations: u64,
    /// `slots[param][slot]`, each as long as the parameter.
    pub slots: Vec<Vec<Vec<f32>>>,
}

impl OptimizerState {
    pub fn new(opt: &Optimizer, param_lens: &[usize]) -> Self {
        let n_slots = opt.slot_names().len();
        let init = opt.slot_init();
        OptimizerState {
            iterations: 0,
            slots: param_lens
                .iter()
                .map(|&len| vec![vec![init; len]; n_slots])
                .collect(),
        }
    }

    /// The coefficients of the current update step, shared by every parameter and block; call
    /// [`OptimizerState::finish_step`] once every parameter has been updated.
    pub fn step(&self, opt: &Optimizer) -> Step {
        let kind = match *opt {
            Optimizer::Adam {
                learning_rate,
                beta_1,
                beta_2,
                epsilon,
            } => {
                let t = (self.iterations + 1) as f64;
                let alpha = learning_rate as f64 * (1.0 - (beta_2 as f64).powf(t)).sqrt()
                    / (1.0 - (beta_1 as f64).powf(t));
                StepKind::Adam {
                    alpha: alpha as f32,
                    beta_1,
                    beta_2,
                    epsilon,
                }
            }
            other => StepKind::Plain(other),
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
    Plain(Optimizer),
    Adam {
        alpha: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
}

/// One update step with its per-step coefficients (Adam's bias correction) computed once, to be
/// applied to whole parameters or to any block of one: the formulas are element-wise.
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
            StepKind::Plain(Optimizer::Sgd {
                learning_rate,
                momentum,
                nesterov,
            }) => {
                if momentum == 0.0 {
                    kernels::sgd(w, g, learning_rate);
                } else {
                    kernels::sgd_momentum(w, g, s0, learning_rate, momentum, nesterov);
                }
            }
            StepKind::Plain(Optimizer::Adagrad {
                learning_rate,
                epsilon,
                ..
            }) => kernels::adagrad(w, g, s0, learning_rate, epsilon),
            StepKind::Plain(Optimizer::Rmsprop {
                learning_rate,
                rho,
                momentum,
                epsilon,
            }) => {
                if momentum == 0.0 {
                    kernels::rmsprop(w, g, s0, learning_rate, rho, epsilon);
                } else {
                    kernels::rmsprop_momentum(w, g, s0, s1, learning_rate, rho, momentum, epsilon);
                }
            }
            StepKind::Plain(Optimizer::Adam { .. }) => unreachable!("adam steps are StepKind::Adam"),
        }
    }
}
