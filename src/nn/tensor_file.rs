//! The one safetensors codec of fitd: named float32 tensors with string metadata, as every file
//! fitd writes holds them (weights, whole-model exports, training checkpoints, stored saved models).
//! What the metadata means belongs to each caller; the bytes are always made and read here.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::model::NamedTensor;

/// Why bytes are not a file of float32 tensors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorFileError {
    /// Not a safetensors file at all (truncated, corrupt header, ...).
    #[error("not a safetensors file: {0}")]
    NotSafetensors(String),
    /// A safetensors file with tensors that are not float32; one entry per tensor, sorted.
    #[error("tensors must be F32: {}", .0.join("; "))]
    Dtype(Vec<String>),
}

/// Serialises `tensors` (little-endian `F32`) with `metadata`.
pub fn encode(tensors: &[NamedTensor], metadata: HashMap<String, String>) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors.iter().zip(&bytes).map(|(t, b)| {
        (
            t.name.clone(),
            TensorView::new(Dtype::F32, t.shape.clone(), b).expect("a NamedTensor's shape matches its data"),
        )
    });
    let metadata = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize(views, metadata).expect("serialising in-memory f32 tensors cannot fail")
}

/// Reads every tensor, sorted by name, and the metadata; all tensors must be `F32`.
pub fn decode(bytes: &[u8]) -> Result<(Vec<NamedTensor>, HashMap<String, String>), TensorFileError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| TensorFileError::NotSafetensors(e.to_string()))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| TensorFileError::NotSafetensors(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let mut bad = Vec::new();
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bad.push(format!("{name} is {:?}", view.dtype()));
            continue;
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.push(NamedTensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    if !bad.is_empty() {
        bad.sort();
        return Err(TensorFileError::Dtype(bad));
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((tensors, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn tensors_and_metadata_round_trip_bit_for_bit() {
        let meta = HashMap::from([("format".to_string(), "x/1".to_string())]);
        let (back, got) = decode(&encode(&tensors(), meta.clone())).unwrap();
        assert_eq!(got, meta);
        let bits = |t: &[NamedTensor]| {
            t.iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.shape.clone(),
                        t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&back), bits(&tensors()));
        assert!(decode(&encode(&tensors(), HashMap::new())).unwrap().1.is_empty());
    }

    #[test]
    fn garbage_and_other_dtypes_are_refused() {
        assert!(matches!(
            decode(b"hello world"),
            Err(TensorFileError::NotSafetensors(_))
        ));
        let data = vec![0u8; 8];
        let view = TensorView::new(Dtype::F64, vec![1], &data).unwrap();
        let bytes = safetensors::serialize([("dense.kernel", view)], None).unwrap();
        assert_eq!(
            decode(&bytes).unwrap_err(),
            TensorFileError::Dtype(vec!["dense.kernel is F64".into()])
        );
    }
}
