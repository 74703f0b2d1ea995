//! The numeric engine: Sequential models, training, evaluation and prediction on ndarray.
//!
//! Knows nothing of HTTP, tokio or SQL.
pub mod callbacks;
pub mod config;
pub mod error;
pub mod kernels;
pub mod loss;
pub mod model;
pub mod optim;
pub mod pca;
mod pool;
pub mod schedule;
pub mod spec;
pub mod tensor_file;
pub mod train;

pub use callbacks::{
    Callback, EarlyStopping, EarlyStoppingDecision, EpochLogs, LearningRateScheduler, Mode, ModelCheckpoint,
    PlateauDecision, ReduceLrOnPlateau, TerminateOnNan,
};
pub use config::{MAX_BATCH_SIZE, MAX_EPOCHS, TrainConfig};
pub use error::{Error, Result};
pub use kernels::enable_flush_to_zero;
pub use loss::{Loss, Targets};
pub use model::{Evaluation, Model, NamedTensor};
pub use optim::Optimizer;
pub use pca::Pca;
pub use schedule::{LearningRate, Schedule};
pub use spec::{
    Activation, Dim, FieldError, LayerConfig, LayerKind, ModelConfig, PcaSize, Summary, SummaryRow,
};
pub use train::{Data, EpochOutcome, Rows, StopReason, Trainer, fit};
