//! Model specs as clients write them (`ModelSpec`, the `LayerSpec` union) and their conversion,
//! field by field with every error named, into the engine's `nn::ModelConfig`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::nn::{self, FieldError};

/// Largest size accepted for one dimension or a layer width; bigger ones cannot fit in memory and
/// would overflow parameter arithmetic.
pub const MAX_DIM: u64 = 1 << 31;

/// Activation applied by a dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActivationSpec {
    #[default]
    Linear,
    Relu,
    Sigmoid,
    Tanh,
    Softmax,
}

impl ActivationSpec {
    const ALL: [(&'static str, ActivationSpec); 5] = [
        ("linear", ActivationSpec::Linear),
        ("relu", ActivationSpec::Relu),
        ("sigmoid", ActivationSpec::Sigmoid),
        ("tanh", ActivationSpec::Tanh),
        ("softmax", ActivationSpec::Softmax),
    ];

    fn to_nn(self) -> nn::Activation {
        match self {
            ActivationSpec::Linear => nn::Activation::Linear,
            ActivationSpec::Relu => nn::Activation::Relu,
            ActivationSpec::Sigmoid => nn::Activation::Sigmoid,
            ActivationSpec::Tanh => nn::Activation::Tanh,
            ActivationSpec::Softmax => nn::Activation::Softmax,
        }
    }
}

/// Tag of a flatten layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlattenType {
    Flatten,
}
/// Tag of a dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DenseType {
    Dense,
}
/// Tag of a dropout layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DropoutType {
    Dropout,
}
/// Tag of a rescaling layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RescalingType {
    Rescaling,
}
/// Tag of a PCA layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PcaType {
    Pca,
}

/// Flattens each sample to one dimension (Keras `Flatten`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlattenLayer {
    #[serde(rename = "type")]
    pub type_: FlattenType,
    /// Layer name; Keras-style default (`flatten`, `flatten_1`, ...) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Fully connected layer (Keras `Dense`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DenseLayer {
    #[serde(rename = "type")]
    pub type_: DenseType,
    /// Layer name; Keras-style default (`dense`, `dense_1`, ...) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Number of output units, 1 to 2^31.
    pub units: u64,
    /// Activation after the affine map (default `linear`).
    #[serde(default)]
    pub activation: ActivationSpec,
    /// Whether the layer adds a bias vector (default true).
    #[serde(default = "default_true")]
    pub use_bias: bool,
}

fn default_true() -> bool {
    true
}

/// Randomly zeroes a fraction of its inputs while training (Keras `Dropout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DropoutLayer {
    #[serde(rename = "type")]
    pub type_: DropoutType,
    /// Layer name; Keras-style default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Fraction of inputs dropped, in [0, 1).
    pub rate: f64,
}

/// Computes `x * scale + offset` (Keras `Rescaling`), e.g. `scale: 1/255` for pixel values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RescalingLayer {
    #[serde(rename = "type")]
    pub type_: RescalingType,
    /// Layer name; Keras-style default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Multiplier, a finite number.
    pub scale: f64,
    /// Added after scaling (default 0).
    #[serde(default)]
    pub offset: f64,
}

/// Projects flat inputs on their principal components, fitted on the training inputs when a job
/// starts; give exactly one of `n_components` or `variance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PcaLayer {
    #[serde(rename = "type")]
    pub type_: PcaType,
    /// Layer name; Keras-style default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Number of components kept, at least 1 and at most the input features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_components: Option<u64>,
    /// Keep the fewest components explaining at least this fraction of the variance, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variance: Option<f64>,
}

/// One layer of a Sequential model, selected by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "type", mapping(
    ("flatten" = "#/components/schemas/FlattenLayer"),
    ("dense" = "#/components/schemas/DenseLayer"),
    ("dropout" = "#/components/schemas/DropoutLayer"),
    ("rescaling" = "#/components/schemas/RescalingLayer"),
    ("pca" = "#/components/schemas/PcaLayer"),
)))]
pub enum LayerSpec {
    Flatten(FlattenLayer),
    Dense(DenseLayer),
    Dropout(DropoutLayer),
    Rescaling(RescalingLayer),
    Pca(PcaLayer),
}

impl LayerSpec {
    pub fn name(&self) -> Option<&str> {
        match self {
            LayerSpec::Flatten(l) => l.name.as_deref(),
            LayerSpec::Dense(l) => l.name.as_deref(),
            LayerSpec::Dropout(l) => l.name.as_deref(),
            LayerSpec::Rescaling(l) => l.name.as_deref(),
            LayerSpec::Pca(l) => l.name.as_deref(),
        }
    }

    /// The same layer carrying `name`.
    pub fn with_name(&self, name: String) -> LayerSpec {
        let mut out = self.clone();
        let slot = match &mut out {
            LayerSpec::Flatten(l) => &mut l.name,
            LayerSpec::Dense(l) => &mut l.name,
            LayerSpec::Dropout(l) => &mut l.name,
            LayerSpec::Rescaling(l) => &mut l.name,
            LayerSpec::Pca(l) => &mut l.name,
        };
        *slot = Some(name);
        out
    }

    fn to_nn(&self) -> nn::LayerConfig {
        let kind = match self {
            LayerSpec::Flatten(_) => nn::LayerKind::Flatten,
            LayerSpec::Dense(l) => nn::LayerKind::Dense {
                units: l.units as usize,
                activation: l.activation.to_nn(),
                use_bias: l.use_bias,
            },
            LayerSpec::Dropout(l) => nn::LayerKind::Dropout { rate: l.rate as f32 },
            LayerSpec::Rescaling(l) => nn::LayerKind::Rescaling {
                scale: l.scale as f32,
                offset: l.offset as f32,
            },
            LayerSpec::Pca(l) => nn::LayerKind::Pca {
                size: match (l.n_components, l.variance) {
                    (Some(k), _) => nn::PcaSize::Components(k as usize),
                    (None, Some(v)) => nn::PcaSize::Variance(v),
                    // parse_layer guarantees one of them; Variance(0) would be rejected by check.
                    (None, None) => nn::PcaSize::Variance(0.0),
                },
            },
        };
        nn::LayerConfig {
            name: self.name().map(str::to_string),
            kind,
        }
    }
}

/// A Sequential model's architecture: input shape (one sample, no batch axis) and layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub input_shape: Vec<u64>,
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    pub fn to_nn(&self) -> nn::ModelConfig {
        nn::ModelConfig {
            input_shape: self.input_shape.iter().map(|&d| d as usize).collect(),
            layers: self.layers.iter().map(LayerSpec::to_nn).collect(),
        }
    }

    /// Validates everything the engine checks, with `param_cap` as the parameter limit.
    pub fn check(&self, param_cap: u64) -> Result<nn::Summary, Vec<FieldError>> {
        self.to_nn().check(param_cap, &std::collections::HashMap::new())
    }

    /// The layers with their Keras-style names filled in.
    pub fn named_layers(&self) -> Vec<LayerSpec> {
        let names = self.to_nn().layer_names();
        self.layers
            .iter()
            .zip(names)
            .map(|(l, n)| l.with_name(n))
            .collect()
    }
}

/// Checks an `input_shape` given as JSON numbers.
pub fn parse_input_shape(value: &[Value], errors: &mut Vec<FieldError>) -> Vec<u64> {
    let mut shape = Vec::with_capacity(value.len());
    let mut total: u64 = 1;
    for (i, d) in value.iter().enumerate() {
        match d.as_u64() {
            Some(d) if (1..=MAX_DIM).contains(&d) => {
                total = total.saturating_mul(d);
                shape.push(d);
            }
            _ => errors.push(FieldError::new(
                format!("input_shape[{i}]"),
                format!("must be an integer between 1 and {MAX_DIM}"),
            )),
        }
    }
    if value.is_empty() {
        errors.push(FieldError::new("input_shape", "must have at least one dimension"));
    } else if total > 1 << 32 {
        errors.push(FieldError::new(
            "input_shape",
            "describes more than 2^32 features per sample",
        ));
    }
    shape
}

/// Parses one layer from JSON, collecting every problem under `prefix` (e.g. `layers[2]`).
pub fn parse_layer(prefix: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<LayerSpec> {
    let Some(obj) = value.as_object() else {
        errors.push(FieldError::new(prefix, "must be an object with a `type`"));
        return None;
    };
    let types = "one of flatten, dense, dropout, rescaling, pca";
    let Some(ty) = obj.get("type") else {
        errors.push(FieldError::new(
            format!("{prefix}.type"),
            format!("is required; {types}"),
        ));
        return None;
    };
    let allowed: &[&str] = match ty.as_str() {
        Some("flatten") => &["type", "name"],
        Some("dense") => &["type", "name", "units", "activation", "use_bias"],
        Some("dropout") => &["type", "name", "rate"],
        Some("rescaling") => &["type", "name", "scale", "offset"],
        Some("pca") => &["type", "name", "n_components", "variance"],
        _ => {
            errors.push(FieldError::new(
                format!("{prefix}.type"),
                format!("must be {types}"),
            ));
            return None;
        }
    };
    let ty = ty.as_str().unwrap_or_default();
    let before = errors.len();
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(FieldError::new(
                format!("{prefix}.{key}"),
                format!("is not a field of a {ty} layer (allowed: {})", allowed.join(", ")),
            ));
        }
    }
    let mut f = Fields { prefix, obj, errors };
    let name = f.opt_string("name");
    let layer = match ty {
        "flatten" => LayerSpec::Flatten(FlattenLayer {
            type_: FlattenType::Flatten,
            name,
        }),
        "dense" => {
            let units = f.required(|f| f.dim("units"), "units").unwrap_or(1);
            let activation = match f.obj.get("activation") {
                None => ActivationSpec::Linear,
                Some(v) => match ActivationSpec::ALL.iter().find(|(s, _)| Some(*s) == v.as_str()) {
                    Some((_, a)) => *a,
                    None => {
                        f.error(
                            "activation",
                            "must be one of linear, relu, sigmoid, tanh, softmax",
                        );
                        ActivationSpec::Linear
                    }
                },
            };
            let use_bias = f.opt_bool("use_bias").unwrap_or(true);
            LayerSpec::Dense(DenseLayer {
                type_: DenseType::Dense,
                name,
                units,
                activation,
                use_bias,
            })
        }
        "dropout" => LayerSpec::Dropout(DropoutLayer {
            type_: DropoutType::Dropout,
            name,
            rate: f.required(|f| f.number("rate"), "rate").unwrap_or(0.0),
        }),
        "rescaling" => LayerSpec::Rescaling(RescalingLayer {
            type_: RescalingType::Rescaling,
            name,
            scale: f.required(|f| f.number("scale"), "scale").unwrap_or(1.0),
            offset: f.number("offset").unwrap_or(0.0),
        }),
        _ => {
            let n_components = f.dim("n_components");
            let variance = f.number("variance");
            let given = (f.obj.contains_key("n_components"), f.obj.contains_key("variance"));
            match given {
                (true, true) => f.error("n_components", "give either n_components or variance, not both"),
                (false, false) => f.error("n_components", "one of n_components or variance is required"),
                _ => {}
            }
            LayerSpec::Pca(PcaLayer {
                type_: PcaType::Pca,
                name,
                n_components,
                variance,
            })
        }
    };
    (errors.len() == before).then_some(layer)
}

/// Typed access to a layer's fields that records a named error for each bad one.
struct Fields<'a> {
    prefix: &'a str,
    obj: &'a Map<String, Value>,
    errors: &'a mut Vec<FieldError>,
}

impl Fields<'_> {
    fn error(&mut self, key: &str, message: &str) {
        self.errors
            .push(FieldError::new(format!("{}.{key}", self.prefix), message));
    }

    fn required<T>(&mut self, get: impl FnOnce(&mut Self) -> Option<T>, key: &str) -> Option<T> {
        if !self.obj.contains_key(key) {
            self.error(key, "is required");
            return None;
        }
        get(self)
    }

    fn dim(&mut self, key: &str) -> Option<u64> {
        let v = self.obj.get(key)?;
        match v.as_u64() {
            Some(n) if (1..=MAX_DIM).contains(&n) => Some(n),
            _ => {
                self.error(key, &format!("must be an integer between 1 and {MAX_DIM}"));
                None
            }
        }
    }

    fn number(&mut self, key: &str) -> Option<f64> {
        let v = self.obj.get(key)?;
        match v.as_f64() {
            Some(n) => Some(n),
            None => {
                self.error(key, "must be a number");
                None
            }
        }
    }

    fn opt_bool(&mut self, key: &str) -> Option<bool> {
        let v = self.obj.get(key)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.error(key, "must be true or false");
                None
            }
        }
    }

    fn opt_string(&mut self, key: &str) -> Option<String> {
        let v = self.obj.get(key)?;
        match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.error(key, "must be a string");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_layer_names_every_bad_field() {
        let mut errors = Vec::new();
        let layer = parse_layer(
            "layers[1]",
            &json!({"type": "dense", "units": -3, "activation": "gelu", "colour": 1}),
            &mut errors,
        );
        assert!(layer.is_none());
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["layers[1].colour", "layers[1].units", "layers[1].activation"]
        );
    }

    #[test]
    fn layer_spec_round_trips_through_its_json_form() {
        let mut errors = Vec::new();
        let v = json!({"type": "dense", "units": 10, "activation": "softmax"});
        let layer = parse_layer("layers[0]", &v, &mut errors).expect("valid layer");
        let back: LayerSpec = serde_json::from_value(serde_json::to_value(&layer).unwrap()).unwrap();
        assert_eq!(back, layer);
    }
}
