//! The safetensors files fitd reads and writes: bare weights (Keras `save_weights`), whole-model
//! exports (Keras `save`) and the weights inside a training checkpoint.
//!
//! Tensor names are `<layer name>.<kind>` as [`crate::nn::Model::tensors`] gives them:
//! `dense.kernel` `(inputs, units)`, `dense.bias` `(units,)`, and for a fitted `pca` layer
//! `pca.mean` `(features,)`, `pca.components` `(k, features)`, `pca.explained_variance_ratio` `(k,)`.
//! Every tensor is little-endian `F32`, so `safetensors.numpy.load_file` reads them as `float32`.

use std::collections::HashMap;

use crate::domain::model::{LayerSpec, ModelSpec};
use crate::nn::NamedTensor;
use crate::nn::tensor_file::{self, TensorFileError};

/// `format` metadata of a weights file.
pub const WEIGHTS_FORMAT: &str = "fitd.weights/1";
/// `format` metadata of a whole-model export.
pub const EXPORT_FORMAT: &str = "fitd.model/1";
/// Prefix of the model tensors inside a training checkpoint (`nn::Trainer::save_state`).
const STATE_MODEL_PREFIX: &str = "model/";

/// Why a safetensors file was refused; each names the problem so it can be shown to a client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// The bytes are not a safetensors file at all (truncated, corrupt header, ...).
    #[error("not a safetensors file: {0}")]
    NotSafetensors(String),
    /// The file is safetensors but some tensors are not float32; one entry per tensor.
    #[error("tensors must be F32: {}", .0.join("; "))]
    Dtype(Vec<String>),
    /// A whole-model export lacks metadata or carries metadata that cannot be read.
    #[error("not a fitd model export: {0}")]
    Export(String),
}

/// Metadata stored in an export next to the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportMeta {
    /// The architecture, layers named.
    pub spec: ModelSpec,
    /// The architecture's human name when exported.
    pub name: String,
    /// Metrics of the saved model (JSON object), kept for reference.
    pub metrics: serde_json::Value,
}

/// Serialises `tensors` as a safetensors file with `metadata` (the one codec, [`tensor_file`]).
pub fn encode(tensors: &[NamedTensor], metadata: HashMap<String, String>) -> Vec<u8> {
    tensor_file::encode(tensors, metadata)
}

/// A weights file: the tensors only, with `format` metadata.
pub fn encode_weights(tensors: &[NamedTensor]) -> Vec<u8> {
    encode(tensors, HashMap::from([("format".into(), WEIGHTS_FORMAT.into())]))
}

/// A whole-model export: the tensors plus the spec, name, metrics and a readable description of the
/// preprocessing (`rescaling` scale/offset, fitted `pca` sizes) in the metadata.
pub fn encode_export(tensors: &[NamedTensor], meta: &ExportMeta) -> Vec<u8> {
    let named = ModelSpec {
        input_shape: meta.spec.input_shape.clone(),
        layers: meta.spec.named_layers(),
    };
    let mut preprocessing = serde_json::Map::new();
    for layer in &named.layers {
        match layer {
            LayerSpec::Rescaling(r) => {
                preprocessing.insert(
                    r.name.clone().unwrap_or_default(),
                    serde_json::json!({"type": "rescaling", "scale": r.scale, "offset": r.offset}),
                );
            }
            LayerSpec::Pca(p) => {
                let name = p.name.clone().unwrap_or_default();
                let k = tensors
                    .iter()
                    .find(|t| t.name == format!("{name}.components"))
                    .map(|t| t.shape[0]);
                preprocessing.insert(
                    name.clone(),
                    serde_json::json!({"type": "pca", "n_components": k,
                        "mean": format!("{name}.mean"), "components": format!("{name}.components")}),
                );
            }
            LayerSpec::Flatten(_) | LayerSpec::Dense(_) | LayerSpec::Dropout(_) => {}
        }
    }
    let spec_json = serde_json::to_string(&named).expect("a model spec always serialises");
    encode(
        tensors,
        HashMap::from([
            ("format".into(), EXPORT_FORMAT.into()),
            ("spec".into(), spec_json),
            ("name".into(), meta.name.clone()),
            ("metrics".into(), meta.metrics.to_string()),
            (
                "preprocessing".into(),
                serde_json::Value::Object(preprocessing).to_string(),
            ),
        ]),
    )
}

/// Reads every tensor of a safetensors file and its metadata; all tensors must be `F32`.
pub fn decode(bytes: &[u8]) -> Result<(Vec<NamedTensor>, HashMap<String, String>), FormatError> {
    tensor_file::decode(bytes).map_err(|e| match e {
        TensorFileError::NotSafetensors(m) => FormatError::NotSafetensors(m),
        TensorFileError::Dtype(list) => FormatError::Dtype(list),
    })
}

/// Reads a whole-model export: its tensors and the spec and name from its metadata.
///
/// The spec is parsed leniently here (serde); the caller validates it like a new model.
pub fn decode_export(bytes: &[u8]) -> Result<(Vec<NamedTensor>, ExportMeta, serde_json::Value), FormatError> {
    let (tensors, meta) = decode(bytes)?;
    match meta.get("format").map(String::as_str) {
        Some(EXPORT_FORMAT) => {}
        Some(WEIGHTS_FORMAT) => {
            return Err(FormatError::Export(
                "this is a weights file without an architecture; upload it to POST /v1/models/{id}/weights"
                    .into(),
            ));
        }
        Some(other) => {
            return Err(FormatError::Export(format!(
                "metadata format is {other:?}, expected {EXPORT_FORMAT:?}"
            )));
        }
        None => {
            return Err(FormatError::Export(format!(
                "metadata has no \"format\" entry (expected {EXPORT_FORMAT:?})"
            )));
        }
    }
    let spec_text = meta
        .get("spec")
        .ok_or_else(|| FormatError::Export("metadata has no \"spec\" entry".into()))?;
    let spec_value: serde_json::Value = serde_json::from_str(spec_text)
        .map_err(|e| FormatError::Export(format!("metadata \"spec\" is not JSON: {e}")))?;
    let spec: ModelSpec = serde_json::from_value(spec_value.clone())
        .map_err(|e| FormatError::Export(format!("metadata \"spec\" is not a model spec: {e}")))?;
    let metrics = match meta.get("metrics") {
        None => serde_json::json!({}),
        Some(m) => serde_json::from_str(m)
            .map_err(|e| FormatError::Export(format!("metadata \"metrics\" is not JSON: {e}")))?,
    };
    let name = meta.get("name").cloned().unwrap_or_else(|| "imported".into());
    Ok((tensors, ExportMeta { spec, name, metrics }, spec_value))
}

/// The model weights held in a training checkpoint (`nn::Trainer::save_state` bytes), without the
/// optimizer slots or best-weights snapshot.
pub fn weights_from_training_state(bytes: &[u8]) -> Result<Vec<NamedTensor>, FormatError> {
    let (tensors, _) = decode(bytes)?;
    Ok(tensors
        .into_iter()
        .filter_map(|t| {
            t.name.strip_prefix(STATE_MODEL_PREFIX).map(|n| NamedTensor {
                name: n.to_string(),
                ..t.clone()
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, TensorView};

    fn tensors() -> Vec<NamedTensor> {
        vec![
            NamedTensor {
                name: "dense.bias".into(),
                shape: vec![2],
                data: vec![0.5, -0.25],
            },
            NamedTensor {
                name: "dense.kernel".into(),
                shape: vec![3, 2],
                data: vec![1.0, f32::MIN_POSITIVE, -3.5, 1e-42, 7.0, -0.0],
            },
        ]
    }

    #[test]
    fn weights_round_trip_bit_for_bit() {
        let bytes = encode_weights(&tensors());
        let (back, meta) = decode(&bytes).unwrap();
        assert_eq!(meta["format"], WEIGHTS_FORMAT);
        assert_eq!(back.len(), 2);
        for (a, b) in back.iter().zip(tensors()) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.shape, b.shape);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.data), bits(&b.data));
        }
    }

    #[test]
    fn garbage_is_not_safetensors() {
        assert!(matches!(
            decode(b"hello world"),
            Err(FormatError::NotSafetensors(_))
        ));
        let mut truncated = encode_weights(&tensors());
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(decode(&truncated), Err(FormatError::NotSafetensors(_))));
    }

    #[test]
    fn non_f32_tensors_are_named() {
        let data = vec![0u8; 8];
        let view = TensorView::new(Dtype::F64, vec![1], &data).unwrap();
        let bytes = safetensors::serialize([("dense.kernel", view)], None).unwrap();
        let err = decode(&bytes).unwrap_err();
        assert_eq!(err, FormatError::Dtype(vec!["dense.kernel is F64".into()]));
    }

    #[test]
    fn a_weights_file_is_not_an_export() {
        let err = decode_export(&encode_weights(&tensors())).unwrap_err();
        assert!(err.to_string().contains("without an architecture"), "{err}");
    }

    #[test]
    fn checkpoint_weights_drop_optimizer_and_best_tensors() {
        let mut all = Vec::new();
        for t in tensors() {
            for prefix in ["model/", "opt/", "best/"] {
                all.push(NamedTensor {
                    name: format!("{prefix}{}", t.name),
                    ..t.clone()
                });
            }
        }
        let got = weights_from_training_state(&encode(&all, HashMap::new())).unwrap();
        assert_eq!(got, tensors());
    }
}
