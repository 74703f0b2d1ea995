//! The numeric engine: Sequential models, training, evaluation and prediction on ndarray.
//!
//! Knows nothing of HTTP, tokio or SQL.
pub mod spec;

pub use spec::{
    Activation, Dim, FieldError, LayerConfig, LayerKind, ModelConfig, PcaSize, Summary, SummaryRow,
};
