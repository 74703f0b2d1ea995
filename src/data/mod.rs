//! Dataset parsing: IDX (gzipped or raw), CSV with a header, NPY/NPZ, the built-in datasets,
//! downloads of MNIST/Fashion-MNIST, and rendering samples as PNG.
//!
//! Every parser ends in [`Dataset::new`], which checks what all formats share (finite features,
//! matching sample counts, labels fit for the task), so each problem is reported the same way.

pub mod builtin;
pub mod csv;
pub mod download;
pub mod idx;
pub mod npy;
pub mod png;

use std::collections::BTreeMap;

use ndarray::{Array1, Array2};

use crate::domain::dataset::DatasetKind;

/// Classification labels are integers in `0..MAX_CLASSES`; anything else is a regression target.
pub const MAX_CLASSES: i64 = 10_000;

/// A problem with uploaded or downloaded data; `part` names the form part or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{part}: {message}")]
    Invalid { part: String, message: String },
    #[error("reading the upload failed: {0}")]
    Io(std::io::Error),
}

impl Error {
    pub fn invalid(part: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            part: part.into(),
            message: message.into(),
        }
    }
}

impl From<std::io::Error> for Error {
    /// Read errors that a decoder raised about the data ([`CorruptPart`]) are the upload's fault.
    fn from(e: std::io::Error) -> Error {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<CorruptPart>()) {
            Some(c) => Error::invalid(c.part.clone(), c.message.clone()),
            None => Error::Io(e),
        }
    }
}

/// A decoder's complaint about the bytes of a part (a corrupt gzip or zip stream), carried through
/// `std::io::Read` so that it ends as a 422 naming the part.
#[derive(Debug)]
pub(crate) struct CorruptPart {
    part: String,
    message: String,
}

impl CorruptPart {
    pub(crate) fn io(part: &str, message: String) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            CorruptPart {
                part: part.to_string(),
                message,
            },
        )
    }
}

impl std::fmt::Display for CorruptPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.part, self.message)
    }
}

impl std::error::Error for CorruptPart {}

/// The cap on how much one upload may decode to, shared by its parts and claimed before each array
/// is allocated (or, for CSV, as rows are parsed).
///
/// Sizes count what is held while the upload is checked: 1 byte per `uint8` feature value, 4 per
/// other feature value (kept as float32), 8 per label.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: u64,
    used: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget { limit, used: 0 }
    }

    /// No cap, for data that ships with the binary.
    pub fn unlimited() -> Budget {
        Budget::new(u64::MAX)
    }

    /// Claims `bytes` for `what` in `part`, or says why the upload is too large.
    pub fn claim(&mut self, part: &str, what: &str, bytes: u64) -> Result<(), Error> {
        let total = self.used.saturating_add(bytes);
        if total > self.limit {
            return Err(Error::invalid(
                part,
                format!(
                    "{what} decodes to {bytes} bytes{}, over this server's limit of {} bytes for one dataset",
                    if self.used > 0 {
                        format!(" ({total} with the parts before it)")
                    } else {
                        String::new()
                    },
                    self.limit
                ),
            ));
        }
        self.used = total;
        Ok(())
    }

    /// Bytes that may still be claimed.
    pub fn remaining(&self) -> u64 {
        self.limit - self.used
    }
}

/// What kind of targets the caller says the labels are; `Auto` decides from the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskHint {
    Auto,
    Classification,
    Regression,
}

/// Labels as parsed, before deciding the task.
#[derive(Debug)]
pub enum RawLabels {
    /// Integer-typed labels (IDX, integer NPY).
    Ints(Vec<i64>),
    /// Real-valued labels, `(n, targets)` (CSV, float NPY).
    Floats(Array2<f64>),
}

/// Training targets.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// Class indices `0..n_classes`.
    Classes(Array1<u32>),
    /// Regression targets `(n, targets)`.
    Targets(Array2<f32>),
}

/// Feature values as decoded: `uint8` data (images) stays bytes, everything else is float32.
/// Shape `(n_samples, features)`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    U8(Array2<u8>),
    F32(Array2<f32>),
}

impl Features {
    pub fn nrows(&self) -> usize {
        match self {
            Features::U8(a) => a.nrows(),
            Features::F32(a) => a.nrows(),
        }
    }

    pub fn ncols(&self) -> usize {
        match self {
            Features::U8(a) => a.ncols(),
            Features::F32(a) => a.ncols(),
        }
    }

    /// The values as float32, converting bytes (exactly) into a new array.
    pub fn into_f32(self) -> Array2<f32> {
        match self {
            Features::U8(a) => a.mapv(f32::from),
            Features::F32(a) => a,
        }
    }

    /// The rows in `order`.
    pub fn select_rows(&self, order: &[usize]) -> Features {
        match self {
            Features::U8(a) => Features::U8(a.select(ndarray::Axis(0), order)),
            Features::F32(a) => Features::F32(a.select(ndarray::Axis(0), order)),
        }
    }

    /// Smallest and largest value (infinities when there are none).
    pub fn min_max(&self) -> (f32, f32) {
        match self {
            Features::U8(a) => a.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(f32::from(v)), hi.max(f32::from(v)))
            }),
            Features::F32(a) => a.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            }),
        }
    }
}

impl From<Array2<f32>> for Features {
    fn from(a: Array2<f32>) -> Features {
        Features::F32(a)
    }
}

impl From<Array2<u8>> for Features {
    fn from(a: Array2<u8>) -> Features {
        Features::U8(a)
    }
}

/// Decoded training data: one flat row per sample.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `(n_samples, features)`; `features` is the product of `input_shape`.
    pub x: Features,
    pub labels: Labels,
    /// Shape of one sample, e.g. `[28, 28]`.
    pub input_shape: Vec<usize>,
}

/// Summary statistics stored with a dataset and shown in its view.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub kind: DatasetKind,
    pub n_samples: usize,
    pub n_features: usize,
    pub n_classes: Option<usize>,
    pub n_targets: Option<usize>,
    pub class_counts: Option<BTreeMap<u32, u64>>,
    pub feature_min: f32,
    pub feature_max: f32,
}

impl Dataset {
    /// Checks and assembles a dataset. `part_x`/`part_y` name where features and labels came from.
    pub fn new(
        x: Features,
        input_shape: Vec<usize>,
        labels: RawLabels,
        task: TaskHint,
        part_x: &str,
        part_y: &str,
    ) -> Result<Dataset, Error> {
        let n = x.nrows();
        if n == 0 {
            return Err(Error::invalid(part_x, "contains no samples"));
        }
        if input_shape.iter().product::<usize>() != x.ncols() || input_shape.is_empty() {
            return Err(Error::invalid(
                "input_shape",
                format!(
                    "{input_shape:?} does not have the {} features of each sample",
                    x.ncols()
                ),
            ));
        }
        if let Features::F32(a) = &x
            && let Some((i, v)) = a.iter().enumerate().find(|(_, v)| !v.is_finite())
        {
            let (row, col) = (i / a.ncols().max(1), i % a.ncols().max(1));
            return Err(Error::invalid(
                part_x,
                format!("sample {row}, feature {col} is {v}; features must be finite numbers"),
            ));
        }
        let n_labels = match &labels {
            RawLabels::Ints(v) => v.len(),
            RawLabels::Floats(a) => a.nrows(),
        };
        if n_labels != n {
            return Err(Error::invalid(
                part_y,
                format!("has {n_labels} labels but there are {n} samples"),
            ));
        }
        let labels = decide_labels(labels, task, part_y)?;
        Ok(Dataset {
            x,
            labels,
            input_shape,
        })
    }

    pub fn kind(&self) -> DatasetKind {
        match self.labels {
            Labels::Classes(_) => DatasetKind::Classification,
            Labels::Targets(_) => DatasetKind::Regression,
        }
    }

    pub fn stats(&self) -> Stats {
        let (lo, hi) = self.x.min_max();
        let (n_classes, n_targets, class_counts) = match &self.labels {
            Labels::Classes(y) => {
                let mut counts = BTreeMap::new();
                for &c in y {
                    *counts.entry(c).or_insert(0u64) += 1;
                }
                let n_classes = y.iter().max().map(|&m| m as usize + 1).unwrap_or(0);
                (Some(n_classes), None, Some(counts))
            }
            Labels::Targets(t) => (None, Some(t.ncols()), None),
        };
        Stats {
            kind: self.kind(),
            n_samples: self.x.nrows(),
            n_features: self.x.ncols(),
            n_classes,
            n_targets,
            class_counts,
            feature_min: lo,
            feature_max: hi,
        }
    }
}

fn decide_labels(labels: RawLabels, task: TaskHint, part: &str) -> Result<Labels, Error> {
    let as_class = |v: f64| -> Option<u32> {
        (v.fract() == 0.0 && v >= 0.0 && v < MAX_CLASSES as f64).then_some(v as u32)
    };
    match (labels, task) {
        (RawLabels::Ints(v), TaskHint::Regression) => {
            let n = v.len();
            Ok(Labels::Targets(
                Array2::from_shape_vec((n, 1), v.into_iter().map(|l| l as f32).collect())
                    .expect("n x 1 matches n values"),
            ))
        }
        (RawLabels::Ints(v), TaskHint::Auto | TaskHint::Classification) => {
            let mut out = Vec::with_capacity(v.len());
            for (i, l) in v.into_iter().enumerate() {
                if !(0..MAX_CLASSES).contains(&l) {
                    return Err(Error::invalid(
                        part,
                        format!("label {i} is {l}; class labels must be integers in 0..{MAX_CLASSES}"),
                    ));
                }
                out.push(l as u32);
            }
            Ok(Labels::Classes(Array1::from(out)))
        }
        (RawLabels::Floats(a), task) => {
            if let Some((i, v)) = a.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(Error::invalid(
                    part,
                    format!("label {} is {v}; labels must be finite", i / a.ncols()),
                ));
            }
            let single = a.ncols() == 1;
            let classes: Option<Vec<u32>> = if single {
                a.iter().map(|&v| as_class(v)).collect()
            } else {
                None
            };
            match (task, classes) {
                (TaskHint::Regression, _) | (TaskHint::Auto, None) => {
                    Ok(Labels::Targets(a.mapv(|v| v as f32)))
                }
                (TaskHint::Auto | TaskHint::Classification, Some(c)) => Ok(Labels::Classes(Array1::from(c))),
                (TaskHint::Classification, None) => {
                    let bad = a.iter().position(|&v| as_class(v).is_none()).unwrap_or(0);
                    let message = if single {
                        format!(
                            "label {} is {}; classification labels must be integers in 0..{MAX_CLASSES}",
                            bad,
                            a.iter().nth(bad).copied().unwrap_or_default()
                        )
                    } else {
                        "classification needs one label per sample, not several target columns".to_string()
                    };
                    Err(Error::invalid(part, message))
                }
            }
        }
    }
}

/// Parses `28,28` (or `[28, 28]`) into a shape.
pub fn parse_shape(text: &str) -> Result<Vec<usize>, Error> {
    let trimmed = text.trim().trim_start_matches('[').trim_end_matches(']');
    let dims: Result<Vec<usize>, _> = trimmed.split(',').map(|d| d.trim().parse::<usize>()).collect();
    match dims {
        Ok(d) if !d.is_empty() && d.iter().all(|&d| d > 0) => Ok(d),
        _ => Err(Error::invalid(
            "input_shape",
            format!("{text:?} is not a list of positive integers like 28,28"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_labels_that_are_whole_numbers_are_classes_unless_regression_is_asked() {
        let x = Array2::<f32>::zeros((3, 2));
        let y = Array2::from_shape_vec((3, 1), vec![0.0, 2.0, 1.0]).unwrap();
        let d = Dataset::new(
            Features::F32(x.clone()),
            vec![2],
            RawLabels::Floats(y.clone()),
            TaskHint::Auto,
            "x",
            "y",
        )
        .unwrap();
        assert_eq!(d.labels, Labels::Classes(Array1::from(vec![0, 2, 1])));
        let d = Dataset::new(
            Features::F32(x),
            vec![2],
            RawLabels::Floats(y),
            TaskHint::Regression,
            "x",
            "y",
        )
        .unwrap();
        assert!(matches!(d.labels, Labels::Targets(_)));
    }

    #[test]
    fn fractional_labels_are_rejected_for_classification() {
        let x = Array2::<f32>::zeros((2, 1));
        let y = Array2::from_shape_vec((2, 1), vec![0.0, 1.5]).unwrap();
        let err = Dataset::new(
            Features::F32(x),
            vec![1],
            RawLabels::Floats(y),
            TaskHint::Classification,
            "x",
            "y",
        )
        .unwrap_err();
        assert!(err.to_string().contains("label 1 is 1.5"), "{err}");
    }
}
