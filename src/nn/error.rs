//! The engine's error type: every way a spec, a dataset or a training run can be refused.

use super::spec::FieldError;

/// Everything the engine can refuse, each variant naming the problem precisely enough to show a user.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// The architecture breaks one or more rules; every broken field is listed.
    #[error("invalid model: {}", fmt_fields(.0))]
    InvalidSpec(Vec<FieldError>),
    /// The inputs do not have the feature count the model's input shape implies.
    #[error("{what} has {got} features per sample but the model's input shape needs {expected}")]
    InputShape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Inputs and targets disagree on the number of samples.
    #[error("{what}: {inputs} input samples but {targets} targets")]
    SampleCount {
        what: &'static str,
        inputs: usize,
        targets: usize,
    },
    /// A dataset with no samples where at least one is needed.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// An input value is NaN or infinite.
    #[error("{what} contains a non-finite value (NaN or infinity) at sample {row}, feature {col}")]
    NonFinite {
        what: &'static str,
        row: usize,
        col: usize,
    },
    /// The loss does not fit the output layer (e.g. sparse crossentropy on a 1-unit softmax).
    #[error("loss {loss} does not fit the output layer: {reason}")]
    LossOutput { loss: &'static str, reason: String },
    /// The targets do not fit the loss or the output layer (e.g. a label >= units).
    #[error("targets do not fit loss {loss}: {reason}")]
    Targets { loss: &'static str, reason: String },
    /// The training configuration breaks one or more rules; every broken field is listed by its
    /// request path (`compile.optimizer.learning_rate`).
    #[error("invalid training configuration: {}", fmt_fields(.0))]
    InvalidConfig(Vec<FieldError>),
    /// A training option does not fit the model or data (no trainable layer, a split that leaves
    /// one side empty, ...).
    #[error("invalid training option {field}: {reason}")]
    TrainOption { field: &'static str, reason: String },
    /// The loss became NaN, or too large for the 32-bit floats training computes in.
    #[error(
        "the loss became {value} at epoch {epoch}, batch {batch}; lower the learning rate or rescale the inputs"
    )]
    LossDiverged { epoch: usize, batch: usize, value: f64 },
    /// A `pca` layer is used before it has been fitted on training data.
    #[error("pca layer {0} has not been fitted; train the model or load its tensors first")]
    PcaNotFitted(String),
    /// PCA could not be fitted (too few samples, degenerate data, ...).
    #[error("pca: {0}")]
    Pca(String),
    /// Tensors given to `load_tensors` do not match the model; one message per bad tensor.
    #[error("weights do not match the model: {}", .0.join("; "))]
    WeightMismatch(Vec<String>),
    /// A saved training state could not be read or does not belong to this model and configuration.
    #[error("invalid training state: {0}")]
    State(String),
    /// The trainer has already run all its epochs or was stopped.
    #[error("training is already finished")]
    Finished,
}

fn fmt_fields(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
