//! Serving trained models: file formats (weights, export, checkpoint weights), PNG inputs, the
//! decoded-model cache and prediction/evaluation shaping. Knows nothing of HTTP or SQL.
pub mod cache;
pub mod fastjson;
pub mod formats;
pub mod image;
pub mod npy;
pub mod onnx;
pub mod predict;
pub mod tensor;

pub use cache::ModelCache;
pub use formats::{ExportMeta, FormatError};
pub use predict::{EvaluationView, Nested, OutputKind, Prediction};

use crate::domain::model::ModelSpec;
use crate::nn::{self, NamedTensor};

/// A saved model decoded and ready to predict; shared by every request through the cache.
#[derive(Debug)]
pub struct ServedModel {
    /// Saved-model id.
    pub id: String,
    /// The architecture (`models.id`) it instantiates.
    pub model_id: String,
    pub spec: ModelSpec,
    pub model: nn::Model,
    pub kind: OutputKind,
    /// Bytes of weights held, what the cache budgets.
    pub size_bytes: usize,
}

impl ServedModel {
    /// Builds the network of `spec` and loads `tensors` into it; every mismatching tensor is reported.
    pub fn build(
        id: String,
        model_id: String,
        spec: ModelSpec,
        tensors: &[NamedTensor],
    ) -> nn::Result<ServedModel> {
        let mut model = nn::Model::new(&spec.to_nn(), 0)?;
        model.load_tensors(tensors)?;
        let size_bytes = tensors.iter().map(|t| t.data.len() * 4).sum();
        Ok(ServedModel {
            id,
            model_id,
            kind: OutputKind::of(&spec),
            spec,
            model,
            size_bytes,
        })
    }

    /// Features per sample.
    pub fn input_dim(&self) -> usize {
        self.model.input_dim()
    }
}
