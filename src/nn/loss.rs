//! Losses, the accuracy metric and targets: values, fused output gradients and the checks that a loss
//! fits the output layer and the targets.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};

use super::error::{Error, Result};
use super::spec::Activation;

/// Keras's `epsilon()`: probabilities are clipped to `[EPS, 1 - EPS]` before taking logs.
const EPS: f64 = 1e-7;

/// The training objective, named as in Keras.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loss {
    /// One sigmoid unit per independent 0/1 label.
    BinaryCrossentropy,
    /// Softmax output against one-hot (or probability) targets.
    CategoricalCrossentropy,
    /// Softmax output against integer class labels.
    SparseCategoricalCrossentropy,
    /// Mean squared error over the output units.
    MeanSquaredError,
}

impl Loss {
    /// The Keras name (`sparse_categorical_crossentropy`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Loss::BinaryCrossentropy => "binary_crossentropy",
            Loss::CategoricalCrossentropy => "categorical_crossentropy",
            Loss::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
            Loss::MeanSquaredError => "mean_squared_error",
        }
    }

    /// Parses a Keras name; `mse` is accepted for `mean_squared_error`.
    pub fn from_name(name: &str) -> Option<Loss> {
        match name {
            "binary_crossentropy" => Some(Loss::BinaryCrossentropy),
            "categorical_crossentropy" => Some(Loss::CategoricalCrossentropy),
            "sparse_categorical_crossentropy" => Some(Loss::SparseCategoricalCrossentropy),
            "mean_squared_error" | "mse" => Some(Loss::MeanSquaredError),
            _ => None,
        }
    }

    /// Whether `accuracy` means something for this loss (it does not for regression).
    pub fn has_accuracy(self) -> bool {
        !matches!(self, Loss::MeanSquaredError)
    }

    /// Whether the output activation's derivative is folded into the loss gradient, which is then
    /// taken with respect to the pre-activation (softmax/sigmoid + crossentropy: `p - t`).
    pub(crate) fn fused(self) -> bool {
        !matches!(self, Loss::MeanSquaredError)
    }

    /// Checks that the loss fits the model's last layer (`None` if it is not a dense layer).
    pub(crate) fn check_output(self, last_dense: Option<(usize, Activation)>) -> Result<()> {
        let err = |reason: String| {
            Err(Error::LossOutput {
                loss: self.as_str(),
                reason,
            })
        };
        match (self, last_dense) {
            (Loss::MeanSquaredError, _) => Ok(()),
            (_, None) => err("the last layer must be a dense layer".into()),
            (Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy, Some((units, act))) => {
                if act != Activation::Softmax {
                    err(format!(
                        "the last dense layer must use softmax activation, not {}",
                        act.as_str()
                    ))
                } else if units < 2 {
                    err(format!(
                        "a softmax output needs at least 2 units, the last dense layer has {units}; \
                         use 1 sigmoid unit with binary_crossentropy for two classes"
                    ))
                } else {
                    Ok(())
                }
            }
            (Loss::BinaryCrossentropy, Some((_, act))) => {
                if act != Activation::Sigmoid {
                    err(format!(
                        "the last dense layer must use sigmoid activation, not {}",
                        act.as_str()
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// What the model is trained to output.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Integer class labels (sparse crossentropy) or 0/1 labels (binary crossentropy, one unit).
    /// Shape `(n_samples,)`.
    Classes(Array1<u32>),
    /// One-hot rows, probabilities or regression values. Shape `(n_samples, output_units)`.
    Dense(Array2<f32>),
}

impl Targets {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(c) => c.len(),
            Targets::Dense(d) => d.nrows(),
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples in `range`, copied.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Targets {
        match self {
            Targets::Classes(c) => Targets::Classes(c.slice(ndarray::s![range]).to_owned()),
            Targets::Dense(d) => Targets::Dense(d.slice(ndarray::s![range, ..]).to_owned()),
        }
    }

    /// Checks the targets against the loss and the output width; `what` names the data set.
    pub(crate) fn check(&self, loss: Loss, units: usize, what: &'static str) -> Result<()> {
        let err = |reason: String| {
            Err(Error::Targets {
                loss: loss.as_str(),
                reason: format!("{what}: {reason}"),
            })
        };
        match (loss, self) {
            (Loss::SparseCategoricalCrossentropy, Targets::Classes(c)) => {
                match c.iter().enumerate().find(|(_, l)| **l as usize >= units) {
                    Some((i, l)) => err(format!(
                        "label {l} at sample {i} is out of range for {units} output units (labels must be 0..{units})"
                    )),
                    None => Ok(()),
                }
            }
            (Loss::SparseCategoricalCrossentropy, Targets::Dense(_)) => {
                err("expects integer class labels; use categorical_crossentropy for one-hot targets".into())
            }
            (Loss::CategoricalCrossentropy, Targets::Classes(_)) => {
                err("expects one-hot targets; use sparse_categorical_crossentropy for integer labels".into())
            }
            (Loss::BinaryCrossentropy, Targets::Classes(c)) => {
                if units != 1 {
                    return err(format!(
                        "class labels need exactly 1 sigmoid output unit, the model has {units}"
                    ));
                }
                match c.iter().enumerate().find(|(_, l)| **l > 1) {
                    Some((i, l)) => err(format!("label {l} at sample {i} is not 0 or 1")),
                    None => Ok(()),
                }
            }
            (Loss::MeanSquaredError, Targets::Classes(_)) => {
                err("expects real-valued target rows, not class labels".into())
            }
            (_, Targets::Dense(d)) => {
                if d.ncols() != units {
                    return err(format!(
                        "target rows have {} values but the model outputs {units}",
                        d.ncols()
                    ));
                }
                if let Some((pos, _)) = d.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                    return err(format!("non-finite target at sample {}", pos / units.max(1)));
                }
                if loss == Loss::BinaryCrossentropy
                    && let Some((pos, v)) = d.iter().enumerate().find(|(_, v)| !(0.0..=1.0).contains(*v))
                {
                    return err(format!("target {v} at sample {} is outside [0, 1]", pos / units));
                }
                Ok(())
            }
        }
    }
}

/// Summed loss and summed accuracy credit of a batch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BatchStats {
    pub loss: f64,
    pub correct: f64,
}

fn clip(p: f32) -> f64 {
    (p as f64).clamp(EPS, 1.0 - EPS)
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Loss and accuracy of a batch and, if `grad` is given, the gradient of the batch-mean loss.
///
/// The gradient is with respect to the output layer's pre-activation when the loss is fused
/// ([`Loss::fused`]), otherwise with respect to the output.
///
/// # Shapes
/// `out`: `(n, units)`; sample `r` of the batch is target `row(r)`; `grad`: `(n, units)`.
pub(crate) fn batch_loss(
    loss: Loss,
    out: ArrayView2<f32>,
    targets: &Targets,
    row: impl Fn(usize) -> usize,
    mut grad: Option<ArrayViewMut2<f32>>,
) -> BatchStats {
    let (n, units) = out.dim();
    let inv_n = 1.0 / n as f32;
    let inv_nu = 1.0 / (n * units) as f32;
    let mut stats = BatchStats::default();
    for r in 0..n {
        let p = out.row(r);
        let p = p.as_slice().expect("output rows are contiguous");
        let mut g = grad.as_mut().map(|g| g.row_mut(r));
        let t = row(r);
        match (loss, targets) {
            (Loss::SparseCategoricalCrossentropy, Targets::Classes(c)) => {
                let label = c[t] as usize;
                stats.loss -= clip(p[label]).ln();
                stats.correct += (argmax(p) == label) as u8 as f64;
                if let Some(g) = g.as_mut() {
                    for (j, (g, &p)) in g.iter_mut().zip(p).enumerate() {
                        *g = (p - (j == label) as u8 as f32) * inv_n;
                    }
                }
            }
            (Loss::CategoricalCrossentropy, Targets::Dense(d)) => {
                let y = d.row(t);
                let mut sum_t = 0.0f32;
                for (&p, &y) in p.iter().zip(y) {
                    stats.loss -= y as f64 * clip(p).ln();
                    sum_t += y;
                }
                let ty = y
                    .iter()
                    .enumerate()
                    .fold(0, |b, (i, &v)| if v > y[b] { i } else { b });
                stats.correct += (argmax(p) == ty) as u8 as f64;
                if let Some(g) = g.as_mut() {
                    // d/dz of -sum t log softmax(z) is p sum(t) - t, which is p - t for one-hot rows.
                    for ((g, &p), &y) in g.iter_mut().zip(p).zip(y) {
                        *g = (p * sum_t - y) * inv_n;
                    }
                }
            }
            (Loss::BinaryCrossentropy, _) => {
                let mut hits = 0usize;
                for j in 0..units {
                    let y = match targets {
                        Targets::Classes(c) => c[t] as f32,
                        Targets::Dense(d) => d[[t, j]],
                    };
                    let pc = clip(p[j]);
                    stats.loss -= (y as f64 * pc.ln() + (1.0 - y as f64) * (1.0 - pc).ln()) / units as f64;
                    hits += ((p[j] > 0.5) == (y > 0.5)) as usize;
                    if let Some(g) = g.as_mut() {
                        g[j] = (p[j] - y) * inv_nu;
                    }
                }
                stats.correct += hits as f64 / units as f64;
            }
            (Loss::MeanSquaredError, Targets::Dense(d)) => {
                let y = d.row(t);
                for j in 0..units {
                    let e = p[j] - y[j];
                    stats.loss += (e as f64) * (e as f64) / units as f64;
                    if let Some(g) = g.as_mut() {
                        g[j] = 2.0 * e * inv_nu;
                    }
                }
            }
            // Excluded by `Targets::check` before any batch runs.
            (Loss::SparseCategoricalCrossentropy, Targets::Dense(_))
            | (Loss::CategoricalCrossentropy, Targets::Classes(_))
            | (Loss::MeanSquaredError, Targets::Classes(_)) => {
                unreachable!("targets are checked against the loss before training")
            }
        }
    }
    stats
}
