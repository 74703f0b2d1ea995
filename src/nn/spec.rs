//! Model architecture as the engine sees it: layer configs, checking, shape inference and the Keras-style summary.
//!
//! The HTTP layer turns its JSON specs into a [`ModelConfig`]; everything that can be said about an
//! architecture without weights (names, shapes, parameter counts, which fields are invalid) lives here,
//! so the server and the trainer agree on it.

use std::collections::HashMap;
use std::fmt::Write as _;

/// Element-wise activation applied after a dense layer's affine map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    Linear,
    Relu,
    Sigmoid,
    Tanh,
    Softmax,
}

impl Activation {
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
        }
    }
}

/// How many principal components a `pca` layer keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PcaSize {
    /// A fixed number of components.
    Components(usize),
    /// The fewest components whose explained-variance ratios sum to at least this fraction (0, 1].
    Variance(f64),
}

/// One layer's configuration; the set is closed, so every `match` names each kind.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerKind {
    Flatten,
    Dense {
        units: usize,
        activation: Activation,
        use_bias: bool,
    },
    Dropout {
        rate: f32,
    },
    Rescaling {
        scale: f32,
        offset: f32,
    },
    Pca {
        size: PcaSize,
    },
}

impl LayerKind {
    /// The Keras class-like type name, also the stem of default layer names.
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerKind::Flatten => "flatten",
            LayerKind::Dense { .. } => "dense",
            LayerKind::Dropout { .. } => "dropout",
            LayerKind::Rescaling { .. } => "rescaling",
            LayerKind::Pca { .. } => "pca",
        }
    }

    /// Keras's class name, shown in the text summary (`Dense`, `Dropout`, ...).
    pub fn class_name(&self) -> &'static str {
        match self {
            LayerKind::Flatten => "Flatten",
            LayerKind::Dense { .. } => "Dense",
            LayerKind::Dropout { .. } => "Dropout",
            LayerKind::Rescaling { .. } => "Rescaling",
            LayerKind::Pca { .. } => "PCA",
        }
    }
}

/// A layer with an optional user-given name.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerConfig {
    pub name: Option<String>,
    pub kind: LayerKind,
}

impl LayerConfig {
    pub fn new(kind: LayerKind) -> Self {
        LayerConfig { name: None, kind }
    }

    /// The rules on this layer's own fields, which hold whatever comes before it (unlike shapes and
    /// parameter counts); `index` is the layer's position, for the field paths.
    pub fn field_errors(&self, index: usize) -> Vec<FieldError> {
        let field = |f: &str| format!("layers[{index}].{f}");
        let mut errors = Vec::new();
        match &self.kind {
            LayerKind::Flatten => {}
            LayerKind::Dense { units, .. } => {
                if *units == 0 {
                    errors.push(FieldError::new(field("units"), "must be at least 1"));
                }
            }
            LayerKind::Dropout { rate } => {
                if !(rate.is_finite() && (0.0..1.0).contains(rate)) {
                    errors.push(FieldError::new(field("rate"), "must be in [0, 1)"));
                }
            }
            LayerKind::Rescaling { scale, offset } => {
                // The values arrive as f32: anything beyond its range is infinite here.
                let rule = "must be a finite number within the 32-bit float range (about ±3.4e38)";
                if !scale.is_finite() {
                    errors.push(FieldError::new(field("scale"), rule));
                }
                if !offset.is_finite() {
                    errors.push(FieldError::new(field("offset"), rule));
                }
            }
            LayerKind::Pca {
                size: PcaSize::Components(k),
            } => {
                if *k == 0 {
                    errors.push(FieldError::new(field("n_components"), "must be at least 1"));
                }
            }
            LayerKind::Pca {
                size: PcaSize::Variance(v),
            } => {
                if !(v.is_finite() && *v > 0.0 && *v <= 1.0) {
                    errors.push(FieldError::new(field("variance"), "must be in (0, 1]"));
                }
            }
        }
        errors
    }
}

/// A Sequential model: the shape of one input sample (no batch axis) and its layers in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub input_shape: Vec<usize>,
    pub layers: Vec<LayerConfig>,
}

/// One broken rule, with the path of the offending field (`layers[2].rate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A dimension of an output shape; `None` where it is only known once a `pca` layer with a
/// variance target has been fitted.
pub type Dim = Option<usize>;

/// One row of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub name: String,
    pub kind: &'static str,
    pub class_name: &'static str,
    /// Output shape without the batch axis.
    pub output_shape: Vec<Dim>,
    /// Parameter count; `None` when it depends on a not yet fitted `pca` layer.
    pub params: Option<u64>,
    pub trainable: bool,
}

/// Keras `model.summary()` as data.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub rows: Vec<SummaryRow>,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<Dim>,
    pub total_params: Option<u64>,
    pub trainable_params: Option<u64>,
    pub non_trainable_params: Option<u64>,
}

impl ModelConfig {
    /// Layer names as Keras gives them: the type name, then `_1`, `_2`, ... for repeats;
    /// user-given names are kept as they are.
    pub fn layer_names(&self) -> Vec<String> {
        let mut seen: HashMap<&'static str, usize> = HashMap::new();
        self.layers
            .iter()
            .map(|layer| {
                let stem = layer.kind.type_name();
                let n = seen.entry(stem).or_insert(0);
                let generated = if *n == 0 {
                    stem.to_string()
                } else {
                    format!("{stem}_{n}")
                };
                *n += 1;
                layer.name.clone().unwrap_or(generated)
            })
            .collect()
    }

    /// Validates every field and infers shapes and parameter counts.
    ///
    /// All problems are reported at once, each naming its field. `param_cap` rejects models whose
    /// parameter count would exceed it, before any weight is allocated. `fitted_pca` gives the fitted
    /// component count of `pca` layers (by layer index) once known, so shapes after them are exact.
    pub fn check(
        &self,
        param_cap: u64,
        fitted_pca: &HashMap<usize, usize>,
    ) -> Result<Summary, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.input_shape.is_empty() {
            errors.push(FieldError::new("input_shape", "must have at least one dimension"));
        }
        for (i, d) in self.input_shape.iter().enumerate() {
            if *d == 0 {
                errors.push(FieldError::new(format!("input_shape[{i}]"), "must be at least 1"));
            }
        }
        if self.layers.is_empty() {
            errors.push(FieldError::new("layers", "must contain at least one layer"));
        }
        let names = self.layer_names();
        let mut name_seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                errors.push(FieldError::new(
                    format!("layers[{i}].name"),
                    "must be 1-64 characters of letters, digits, '_' or '-'",
                ));
            }
            if let Some(first) = name_seen.insert(name, i) {
                errors.push(FieldError::new(
                    format!("layers[{i}].name"),
                    format!("duplicates the name of layers[{first}] ({name:?})"),
                ));
            }
        }

        let mut shape: Vec<Dim> = self.input_shape.iter().map(|&d| Some(d)).collect();
        let mut rows = Vec::with_capacity(self.layers.len());
        let (mut total, mut trainable): (Option<u64>, Option<u64>) = (Some(0), Some(0));
        for (i, (layer, name)) in self.layers.iter().zip(&names).enumerate() {
            let field = |f: &str| format!("layers[{i}].{f}");
            errors.extend(layer.field_errors(i));
            let features: Dim = flat_len(&shape);
            let (out, params, is_trainable): (Vec<Dim>, Option<u64>, bool) = match &layer.kind {
                LayerKind::Flatten => (vec![features], Some(0), true),
                LayerKind::Dense { units, use_bias, .. } => {
                    if shape.len() != 1 {
                        errors.push(FieldError::new(
                            format!("layers[{i}]"),
                            format!(
                                "dense expects a flat input but receives shape {}; add a flatten layer before it",
                                fmt_shape(&shape)
                            ),
                        ));
                    }
                    let last = shape.last().copied().flatten();
                    let params =
                        last.map(|f| f as u64 * *units as u64 + if *use_bias { *units as u64 } else { 0 });
                    let mut out = shape.clone();
                    if let Some(l) = out.last_mut() {
                        *l = Some(*units);
                    }
                    (out, params, true)
                }
                LayerKind::Dropout { .. } | LayerKind::Rescaling { .. } => (shape.clone(), Some(0), true),
                LayerKind::Pca { size } => {
                    let k: Dim = match size {
                        PcaSize::Components(k) => {
                            if let Some(f) = features
                                && *k > f
                            {
                                errors.push(FieldError::new(
                                    field("n_components"),
                                    format!("must not exceed the {f} input features"),
                                ));
                            }
                            Some(*k)
                        }
                        PcaSize::Variance(_) => fitted_pca.get(&i).copied(),
                    };
                    // Mean (features) and components (features x k), stored with the weights, never trained.
                    let params = match (features, k) {
                        (Some(f), Some(k)) => Some(f as u64 + f as u64 * k as u64),
                        _ => None,
                    };
                    (vec![k], params, false)
                }
            };
            total = total.zip(params).map(|(a, b)| a.saturating_add(b));
            if is_trainable {
                trainable = trainable.zip(params).map(|(a, b)| a.saturating_add(b));
            }
            rows.push(SummaryRow {
                name: name.clone(),
                kind: layer.kind.type_name(),
                class_name: layer.kind.class_name(),
                output_shape: out.clone(),
                params,
                trainable: is_trainable,
            });
            shape = out;
        }
        if let Some(t) = total
            && t > param_cap
        {
            errors.push(FieldError::new(
                "layers",
                format!("the model has {t} parameters, more than the limit of {param_cap}"),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Summary {
            rows,
            input_shape: self.input_shape.clone(),
            output_shape: shape,
            total_params: total,
            trainable_params: trainable,
            non_trainable_params: total.zip(trainable).map(|(t, tr)| t - tr),
        })
    }
}

fn flat_len(shape: &[Dim]) -> Dim {
    shape
        .iter()
        .try_fold(1usize, |acc, d| d.map(|d| acc.saturating_mul(d)))
}

/// `(None, 28, 28)` as Keras prints shapes, the leading `None` being the batch axis.
pub fn fmt_shape(shape: &[Dim]) -> String {
    let mut s = String::from("(None");
    for d in shape {
        match d {
            Some(d) => write!(s, ", {d}").unwrap(),
            None => s.push_str(", None"),
        }
    }
    s.push(')');
    s
}

fn fmt_count(n: Option<u64>) -> String {
    let Some(n) = n else { return "?".into() };
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_bytes(params: Option<u64>) -> String {
    let Some(p) = params else { return "?".into() };
    let b = p as f64 * 4.0;
    if b < 1024.0 {
        format!("{b:.2} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2} KB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} MB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

impl Summary {
    /// The table Keras prints for `model.summary()`.
    pub fn to_table(&self, model_name: &str) -> String {
        let headers = ["Layer (type)", "Output Shape", "Param #"];
        let cells: Vec<[String; 3]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    format!("{} ({})", r.name, r.class_name),
                    fmt_shape(&r.output_shape),
                    fmt_count(r.params),
                ]
            })
            .collect();
        let mut widths = headers.map(|h| h.len());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.len());
            }
        }
        // Keras pads each column and frames the table with heavy rules for the header, light below.
        let rule = |l: &str, fill: &str, mid: &str, r: &str| {
            let parts: Vec<String> = widths.iter().map(|w| fill.repeat(w + 2)).collect();
            format!("{l}{}{r}", parts.join(mid))
        };
        let line = |c: &[String; 3], bar: &str| {
            format!(
                "{bar} {:<w0$} {bar} {:<w1$} {bar} {:>w2$} {bar}",
                c[0],
                c[1],
                c[2],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )
        };
        let mut t = String::new();
        writeln!(t, "Model: \"{model_name}\"").unwrap();
        writeln!(t, "{}", rule("┏", "━", "┳", "┓")).unwrap();
        writeln!(t, "{}", line(&headers.map(String::from), "┃")).unwrap();
        writeln!(t, "{}", rule("┡", "━", "╇", "┩")).unwrap();
        for (i, row) in cells.iter().enumerate() {
            writeln!(t, "{}", line(row, "│")).unwrap();
            if i + 1 < cells.len() {
                writeln!(t, "{}", rule("├", "─", "┼", "┤")).unwrap();
            }
        }
        writeln!(t, "{}", rule("└", "─", "┴", "┘")).unwrap();
        writeln!(
            t,
            " Total params: {} ({})",
            fmt_count(self.total_params),
            fmt_bytes(self.total_params)
        )
        .unwrap();
        writeln!(
            t,
            " Trainable params: {} ({})",
            fmt_count(self.trainable_params),
            fmt_bytes(self.trainable_params)
        )
        .unwrap();
        writeln!(
            t,
            " Non-trainable params: {} ({})",
            fmt_count(self.non_trainable_params),
            fmt_bytes(self.non_trainable_params)
        )
        .unwrap();
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book_model() -> ModelConfig {
        ModelConfig {
            input_shape: vec![28, 28],
            layers: vec![
                LayerConfig::new(LayerKind::Flatten),
                LayerConfig::new(LayerKind::Dense {
                    units: 100,
                    activation: Activation::Relu,
                    use_bias: true,
                }),
                LayerConfig::new(LayerKind::Dropout { rate: 0.3 }),
                LayerConfig::new(LayerKind::Dense {
                    units: 10,
                    activation: Activation::Softmax,
                    use_bias: true,
                }),
            ],
        }
    }

    #[test]
    fn book_model_has_79510_parameters_and_keras_names() {
        let s = book_model().check(50_000_000, &HashMap::new()).unwrap();
        assert_eq!(s.total_params, Some(79_510));
        assert_eq!(s.trainable_params, Some(79_510));
        assert_eq!(s.non_trainable_params, Some(0));
        let names: Vec<_> = s.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["flatten", "dense", "dropout", "dense_1"]);
        assert_eq!(s.rows[0].output_shape, vec![Some(784)]);
        assert_eq!(s.output_shape, vec![Some(10)]);
        let table = s.to_table("fashion-mlp");
        assert!(table.contains("dense_1 (Dense)"), "{table}");
        let row = table.lines().find(|l| l.contains("dense (Dense)")).unwrap();
        assert!(
            row.starts_with("│ dense (Dense) ") && row.ends_with(" 78,500 │"),
            "{table}"
        );
        let header = table.lines().nth(2).unwrap();
        assert_eq!(header.matches('┃').count(), 4, "{table}");
        assert!(table.contains("Total params: 79,510 (310.59 KB)"), "{table}");
    }

    #[test]
    fn every_bad_field_is_reported() {
        let mut m = book_model();
        m.layers[1].kind = LayerKind::Dense {
            units: 0,
            activation: Activation::Relu,
            use_bias: true,
        };
        m.layers[2].kind = LayerKind::Dropout { rate: 1.0 };
        let errs = m.check(50_000_000, &HashMap::new()).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["layers[1].units", "layers[2].rate"]);
    }

    #[test]
    fn dense_on_unflattened_input_is_rejected() {
        let mut m = book_model();
        m.layers.remove(0);
        let errs = m.check(50_000_000, &HashMap::new()).unwrap_err();
        assert_eq!(errs[0].field, "layers[0]");
        assert!(errs[0].message.contains("flatten"));
    }

    #[test]
    fn parameter_cap_rejects_huge_models() {
        let mut m = book_model();
        m.layers[1].kind = LayerKind::Dense {
            units: 1_000_000,
            activation: Activation::Relu,
            use_bias: true,
        };
        let errs = m.check(50_000_000, &HashMap::new()).unwrap_err();
        assert_eq!(errs[0].field, "layers");
        assert!(errs[0].message.contains("limit"));
    }

    #[test]
    fn pca_is_non_trainable_and_variance_shapes_are_unknown_until_fitted() {
        let mut m = book_model();
        m.layers.insert(
            1,
            LayerConfig::new(LayerKind::Pca {
                size: PcaSize::Components(50),
            }),
        );
        let s = m.check(50_000_000, &HashMap::new()).unwrap();
        assert_eq!(s.rows[1].params, Some(784 + 784 * 50));
        assert_eq!(s.non_trainable_params, Some(784 + 784 * 50));
        m.layers[1].kind = LayerKind::Pca {
            size: PcaSize::Variance(0.9),
        };
        let s = m.check(50_000_000, &HashMap::new()).unwrap();
        assert_eq!(s.total_params, None);
        let fitted = HashMap::from([(1, 87)]);
        let s = m.check(50_000_000, &fitted).unwrap();
        assert_eq!(s.rows[2].params, Some(87 * 100 + 100));
    }
}
