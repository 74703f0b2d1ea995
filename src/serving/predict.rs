//! Predict and evaluate around a decoded model: instance parsing (nested or flat JSON arrays,
//! straight into one `f32` buffer), shape checks, output shaping by model kind, confusion matrices.

use std::fmt;

use ndarray::{Array2, ArrayView2};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::tensor::Dtype;
use crate::domain::model::{ActivationSpec, LayerSpec, ModelSpec};
use crate::nn::{self, FieldError, Loss, Targets};

/// What a model's output means, from its last layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Softmax over two or more units: a class and its probabilities.
    Classifier,
    /// One sigmoid unit: the probability of class 1.
    Binary,
    /// Anything else: the raw output values.
    Regressor,
}

impl OutputKind {
    pub fn of(spec: &ModelSpec) -> OutputKind {
        match spec.layers.last() {
            Some(LayerSpec::Dense(d)) if d.activation == ActivationSpec::Softmax && d.units >= 2 => {
                OutputKind::Classifier
            }
            Some(LayerSpec::Dense(d)) if d.activation == ActivationSpec::Sigmoid && d.units == 1 => {
                OutputKind::Binary
            }
            _ => OutputKind::Regressor,
        }
    }

    /// The loss a model of this kind is evaluated with, given the form of its targets.
    pub fn loss(self, targets: &Targets) -> Loss {
        match (self, targets) {
            (OutputKind::Classifier, Targets::Classes(_)) => Loss::SparseCategoricalCrossentropy,
            (OutputKind::Classifier, Targets::Dense(_)) => Loss::CategoricalCrossentropy,
            (OutputKind::Binary, _) => Loss::BinaryCrossentropy,
            (OutputKind::Regressor, _) => Loss::MeanSquaredError,
        }
    }
}

/// Numbers nested in arrays, flattened in row-major order, with the size of each nesting level.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nested {
    pub data: Vec<f32>,
    /// Length at each depth; `[n]` for a flat array, `[n, 28, 28]` for n 28x28 samples.
    pub shape: Vec<usize>,
}

impl<'de> Deserialize<'de> for Nested {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut acc = Acc::default();
        NestedSeed {
            acc: &mut acc,
            depth: 0,
        }
        .deserialize(d)?;
        let shape = match acc.dims.iter().copied().collect::<Option<Vec<usize>>>() {
            Some(s) => s,
            None => return Err(de::Error::custom("the arrays must be rectangular")),
        };
        Ok(Nested {
            data: acc.data,
            shape,
        })
    }
}

#[derive(Default)]
struct Acc {
    data: Vec<f32>,
    dims: Vec<Option<usize>>,
    leaf_depth: Option<usize>,
}

struct NestedSeed<'a> {
    acc: &'a mut Acc,
    depth: usize,
}

impl NestedSeed<'_> {
    fn leaf<E: de::Error>(self, v: f64) -> Result<(), E> {
        match self.acc.leaf_depth {
            None if self.depth == 0 => Err(E::custom("expected an array of numbers, got a single number")),
            None if self.acc.dims.len() > self.depth => Err(E::custom(
                "the arrays must be rectangular: numbers and arrays are mixed at the same depth",
            )),
            None => {
                self.acc.leaf_depth = Some(self.depth);
                self.acc.data.push(v as f32);
                Ok(())
            }
            Some(d) if d == self.depth => {
                self.acc.data.push(v as f32);
                Ok(())
            }
            Some(_) => Err(E::custom(
                "the arrays must be rectangular: numbers and arrays are mixed at the same depth",
            )),
        }
    }
}

impl<'de> DeserializeSeed<'de> for NestedSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NestedSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or an array of numbers")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(v as f64)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth;
        if self.acc.leaf_depth.is_some_and(|l| l <= depth) {
            return Err(de::Error::custom(
                "the arrays must be rectangular: numbers and arrays are mixed at the same depth",
            ));
        }
        if self.acc.dims.len() <= depth {
            self.acc.dims.resize(depth + 1, None);
        }
        let mut count = 0;
        while seq
            .next_element_seed(NestedSeed {
                acc: &mut *self.acc,
                depth: depth + 1,
            })?
            .is_some()
        {
            count += 1;
        }
        match self.acc.dims[depth] {
            None => self.acc.dims[depth] = Some(count),
            Some(c) if c == count => {}
            Some(c) => {
                return Err(de::Error::custom(format!(
                    "the arrays must be rectangular: arrays at depth {depth} have lengths {c} and {count}"
                )));
            }
        }
        Ok(())
    }
}

/// Checks that `n` samples of `sample_shape` fit a model with `input_shape`: the sample shape must be
/// the input shape, or flat (`[features]`), or a bare number for one-feature models.
pub fn check_sample_shape(sample_shape: &[usize], input_shape: &[u64]) -> Result<(), String> {
    let features: u64 = input_shape.iter().product();
    let nested = sample_shape.len() == input_shape.len()
        && sample_shape.iter().zip(input_shape).all(|(a, b)| *a as u64 == *b);
    let flat = sample_shape.len() == 1 && sample_shape[0] as u64 == features;
    let scalar = sample_shape.is_empty() && features == 1;
    if nested || flat || scalar {
        Ok(())
    } else {
        Err(format!(
            "each instance must have the model's input shape {input_shape:?} (or be flat, [{features}]); got {sample_shape:?}"
        ))
    }
}

/// Checks a batch whose shape is `shape` (batch dimension first) against the model and the row
/// limit, before anything is allocated for it; returns `(rows, features)`. Errors name `field`.
pub fn batch_dims(
    field: &str,
    shape: &[usize],
    input_shape: &[u64],
    max_rows: usize,
) -> Result<(usize, usize), FieldError> {
    let Some((&n, sample)) = shape.split_first() else {
        return Err(FieldError::new(field, "must be an array of instances"));
    };
    if n == 0 {
        return Err(FieldError::new(field, "must contain at least one instance"));
    }
    if n > max_rows {
        return Err(FieldError::new(
            field,
            format!("holds {n} instances; at most {max_rows} are accepted per request"),
        ));
    }
    check_sample_shape(sample, input_shape).map_err(|m| FieldError::new(field, m))?;
    Ok((n, input_shape.iter().product::<u64>() as usize))
}

/// Turns parsed `instances` into a `(n, features)` matrix, refusing empty and oversized batches and
/// samples of the wrong shape. Errors name `field`.
pub fn instances_matrix(
    field: &str,
    nested: Nested,
    input_shape: &[u64],
    max_rows: usize,
) -> Result<Array2<f32>, FieldError> {
    let (n, features) = batch_dims(field, &nested.shape, input_shape, max_rows)?;
    Ok(Array2::from_shape_vec((n, features), nested.data).expect("shape checked"))
}

/// A `(n, features)` matrix from little-endian elements of `dtype` in row-major order, with the
/// checks of [`batch_dims`]; `bytes` must hold exactly the elements `shape` declares.
pub fn raw_matrix(
    field: &str,
    dtype: Dtype,
    shape: &[usize],
    bytes: &[u8],
    input_shape: &[u64],
    max_rows: usize,
) -> Result<Array2<f32>, FieldError> {
    let (n, features) = batch_dims(field, shape, input_shape, max_rows)?;
    if bytes.len() != n * features * dtype.size() {
        return Err(FieldError::new(
            field,
            format!(
                "holds {} bytes but {n} instances of {features} {} values need {}",
                bytes.len(),
                dtype.kserve_name(),
                n * features * dtype.size()
            ),
        ));
    }
    let mut x = Array2::zeros((n, features));
    dtype.decode_into(bytes, x.as_slice_mut().expect("new array"));
    Ok(x)
}

/// Finds the first NaN or infinite value, as a field error naming the instance and feature.
pub fn check_finite(field: &str, x: ArrayView2<f32>) -> Result<(), FieldError> {
    let cols = x.ncols().max(1);
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(p) => Err(FieldError::new(
            format!("{field}[{}]", p / cols),
            format!(
                "feature {} is not a finite number (NaN, infinity or beyond float32 range)",
                p % cols
            ),
        )),
    }
}

/// Rows the engine's batched predict processes at a time; splits at multiples of it give exactly the
/// bits one call over the whole batch would.
const ENGINE_CHUNK: usize = 256;

/// `model.predict(x)` over up to `threads` threads, splitting the rows at multiples of the engine's
/// chunk so the result is bit-identical to a single call. Small batches run on the calling thread.
///
/// # Shapes
/// `x`: `(n, features)` -> `(n, outputs)`
pub fn predict_split(model: &nn::Model, x: ArrayView2<f32>, threads: usize) -> nn::Result<Array2<f32>> {
    let n = x.nrows();
    let chunks = n.div_ceil(ENGINE_CHUNK);
    let parts = threads.clamp(1, chunks.max(1));
    let per = chunks.div_ceil(parts) * ENGINE_CHUNK;
    let starts: Vec<usize> = (0..n).step_by(per.max(1)).collect();
    // A one-row part would take the engine's single-row path, whose sums differ in the last bits.
    if starts.len() < 2 || n - starts[starts.len() - 1] < 2 {
        return model.predict(x);
    }
    let outs = std::thread::scope(|scope| {
        let handles: Vec<_> = starts[1..]
            .iter()
            .map(|&a| {
                let part = x.slice(ndarray::s![a..(a + per).min(n), ..]);
                scope.spawn(move || model.predict(part))
            })
            .collect();
        let mut outs = vec![model.predict(x.slice(ndarray::s![0..per, ..]))];
        outs.extend(
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
        );
        outs
    });
    let outs = outs.into_iter().collect::<nn::Result<Vec<_>>>()?;
    let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
    Ok(ndarray::concatenate(ndarray::Axis(0), &views).expect("parts share their width"))
}

/// One prediction, shaped by the model kind.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Prediction {
    /// Softmax classifiers: the most probable class and every class's probability.
    Class { class: usize, probabilities: Vec<f32> },
    /// One sigmoid unit: class 1 when `probability >= 0.5`, and the probability of class 1.
    Binary { class: u8, probability: f32 },
    /// Regressors and other outputs: the output values.
    Value { value: Vec<f32> },
}

/// Index of the largest value; the first one on ties, as `numpy.argmax`.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Shapes each output row.
pub fn shape_predictions(kind: OutputKind, out: ArrayView2<f32>) -> Vec<Prediction> {
    out.rows()
        .into_iter()
        .map(|row| {
            let row = row.to_vec();
            match kind {
                OutputKind::Classifier => Prediction::Class {
                    class: argmax(&row),
                    probabilities: row,
                },
                OutputKind::Binary => Prediction::Binary {
                    class: u8::from(row[0] >= 0.5),
                    probability: row[0],
                },
                OutputKind::Regressor => Prediction::Value { value: row },
            }
        })
        .collect()
}

/// Loss, accuracy and (for classifiers) the confusion matrix over a labelled data set.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EvaluationView {
    pub loss: f64,
    /// `null` for regressors.
    pub accuracy: Option<f64>,
    pub n_samples: usize,
    /// The loss used (Keras name).
    pub loss_name: String,
    /// `confusion_matrix[true][predicted]` counts; `null` for regressors and one-hot targets.
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
}

/// Evaluates `model` on `(x, y)`.
///
/// # Shapes
/// `x`: `(n, features)`; `y`: `n` targets.
pub fn evaluate(
    model: &nn::Model,
    kind: OutputKind,
    x: ArrayView2<f32>,
    y: &Targets,
) -> nn::Result<EvaluationView> {
    let loss = kind.loss(y);
    let ev = model.evaluate(x, y, loss, 256)?;
    let confusion_matrix = match (kind, y) {
        (OutputKind::Classifier | OutputKind::Binary, Targets::Classes(labels)) => {
            let out = model.predict(x)?;
            let k = if kind == OutputKind::Binary {
                2
            } else {
                out.ncols()
            };
            let mut m = vec![vec![0u64; k]; k];
            for (row, &label) in out.rows().into_iter().zip(labels) {
                let pred = match kind {
                    OutputKind::Binary => usize::from(row[0] >= 0.5),
                    _ => argmax(row.as_slice().expect("owned rows")),
                };
                // Labels were checked against the output width by `evaluate`.
                m[label as usize][pred] += 1;
            }
            Some(m)
        }
        _ => None,
    };
    Ok(EvaluationView {
        loss: ev.loss,
        accuracy: ev.accuracy,
        n_samples: x.nrows(),
        loss_name: loss.as_str().to_string(),
        confusion_matrix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Nested, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn nested_arrays_flatten_row_major_with_their_shape() {
        let n = parse("[[[1, 2], [3, 4.5]], [[5, 6], [7, -8e-1]]]").unwrap();
        assert_eq!(n.shape, vec![2, 2, 2]);
        assert_eq!(n.data, vec![1.0, 2.0, 3.0, 4.5, 5.0, 6.0, 7.0, -0.8]);
    }

    #[test]
    fn ragged_and_mixed_arrays_are_refused() {
        for bad in [
            "[[1, 2], [3]]",
            "[[1, 2], 3]",
            "[1, [2]]",
            "[[[1]], [2]]",
            "[[[]], [2]]",
            "[\"a\"]",
            "3",
            "[null]",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn flat_nested_and_scalar_samples_are_accepted() {
        assert!(check_sample_shape(&[2, 3], &[2, 3]).is_ok());
        assert!(check_sample_shape(&[6], &[2, 3]).is_ok());
        assert!(check_sample_shape(&[], &[1]).is_ok());
        let err = check_sample_shape(&[3, 2], &[2, 3]).unwrap_err();
        assert!(err.contains("[2, 3]") && err.contains("got [3, 2]"), "{err}");
    }

    #[test]
    fn empty_and_oversized_batches_are_refused() {
        let empty = instances_matrix("instances", parse("[]").unwrap(), &[2], 5).unwrap_err();
        assert!(empty.message.contains("at least one"), "{empty:?}");
        let big = instances_matrix("instances", parse("[[1,2],[3,4],[5,6]]").unwrap(), &[2], 2).unwrap_err();
        assert!(big.message.contains("holds 3 instances; at most 2"), "{big:?}");
        let ok = instances_matrix("instances", parse("[[1,2],[3,4]]").unwrap(), &[2], 2).unwrap();
        assert_eq!(ok.dim(), (2, 2));
    }

    #[test]
    fn values_beyond_f32_are_reported_with_their_position() {
        let x = instances_matrix("instances", parse("[[1, 2], [3, 1e39]]").unwrap(), &[2], 9).unwrap();
        let err = check_finite("instances", x.view()).unwrap_err();
        assert_eq!(err.field, "instances[1]");
        assert!(err.message.starts_with("feature 1 "), "{err:?}");
    }

    #[test]
    fn split_predictions_equal_one_call_to_the_bit() {
        let cfg = nn::ModelConfig {
            input_shape: vec![20],
            layers: vec![
                nn::LayerConfig::new(nn::LayerKind::Dense {
                    units: 16,
                    activation: nn::Activation::Relu,
                    use_bias: true,
                }),
                nn::LayerConfig::new(nn::LayerKind::Dense {
                    units: 5,
                    activation: nn::Activation::Softmax,
                    use_bias: true,
                }),
            ],
        };
        let model = nn::Model::new(&cfg, 3).unwrap();
        for n in [1, 2, 255, 257, 513, 600, 1000] {
            let x = Array2::from_shape_fn((n, 20), |(i, j)| ((i * 31 + j * 7) % 17) as f32 - 8.0);
            let one = model.predict(x.view()).unwrap();
            for threads in [1, 2, 3] {
                let split = predict_split(&model, x.view(), threads).unwrap();
                let bits = |a: &Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&split), bits(&one), "n={n} threads={threads}");
            }
        }
    }

    #[test]
    fn predictions_take_the_model_kind_shape() {
        let out = ndarray::array![[0.1f32, 0.7, 0.2]];
        assert_eq!(
            shape_predictions(OutputKind::Classifier, out.view()),
            vec![Prediction::Class {
                class: 1,
                probabilities: vec![0.1, 0.7, 0.2]
            }]
        );
        let p = ndarray::array![[0.5f32], [0.25]];
        let got = shape_predictions(OutputKind::Binary, p.view());
        assert_eq!(
            got,
            vec![
                Prediction::Binary {
                    class: 1,
                    probability: 0.5
                },
                Prediction::Binary {
                    class: 0,
                    probability: 0.25
                }
            ]
        );
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
