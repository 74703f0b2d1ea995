//! ONNX export of a saved model: the whole network, preprocessing included (rescaling, PCA), as one
//! ONNX graph (opset 13) that onnxruntime and every other ONNX consumer run as fitd does.
//!
//! The graph takes `input` `[batch, ...input_shape]` (float32, dynamic batch), flattens it, and
//! applies each layer with the operations fitd's engine uses, in the same order, so results agree
//! to float32 rounding: rescaling `x * scale + offset` (`Mul`, `Add`); PCA `x . components^T - shift`
//! with `shift = components . mean` (`MatMul`, `Sub`); dense `Gemm` and its activation (`Relu`,
//! `Sigmoid`, `Tanh`, `Softmax` over the units); dropout and flatten vanish at inference. The output
//! is `probabilities` `[batch, units]` for classifiers (softmax or one sigmoid unit), else `values`.
//!
//! The protobuf types are generated at build time from the ONNX project's `onnx.proto` (prost).

use std::collections::HashMap;

use prost::Message;

use super::{OutputKind, ServedModel};
use crate::nn::{Activation, LayerKind};

/// Types generated from `proto/onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
};

/// The operator set the graph uses: 13 has `Softmax` over one axis, as Keras computes it.
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13.
const IR_VERSION: i64 = 7;
/// The graph's input name.
pub const INPUT: &str = "input";

/// The name of the graph output for a model of `kind`.
pub fn output_name(kind: OutputKind) -> &'static str {
    match kind {
        OutputKind::Classifier | OutputKind::Binary => "probabilities",
        OutputKind::Regressor => "values",
    }
}

/// The `.onnx` file of `served`; `name` (the architecture's) becomes the graph name.
pub fn export(served: &ServedModel, name: &str) -> Vec<u8> {
    model_proto(served, name).encode_to_vec()
}

/// Builds the ONNX model of `served`.
pub fn model_proto(served: &ServedModel, name: &str) -> ModelProto {
    let model = &served.model;
    let tensors: HashMap<String, Vec<f32>> = model.tensors().into_iter().map(|t| (t.name, t.data)).collect();
    let mut g = Graph::default();
    let features = model.input_dim() as i64;
    let mut cur = g.node("Flatten", &[INPUT], vec![int_attr("axis", 1)]);
    let mut width = features;
    for (layer, lname) in model.config().layers.iter().zip(model.layer_names()) {
        match &layer.kind {
            LayerKind::Flatten | LayerKind::Dropout { .. } => {}
            LayerKind::Rescaling { scale, offset } => {
                if *scale != 1.0 {
                    let s = g.constant(&format!("{lname}.scale"), &[], vec![*scale]);
                    cur = g.node("Mul", &[&cur, &s], Vec::new());
                }
                if *offset != 0.0 {
                    let o = g.constant(&format!("{lname}.offset"), &[], vec![*offset]);
                    cur = g.node("Add", &[&cur, &o], Vec::new());
                }
            }
            LayerKind::Pca { .. } => {
                let p = model.pca(lname).expect("a saved model's pca layers are fitted");
                let (k, f) = p.components.dim();
                let ct = g.constant(
                    &format!("{lname}.components_t"),
                    &[f as i64, k as i64],
                    p.components.t().iter().copied().collect(),
                );
                let shift = g.constant(
                    &format!("{lname}.shift"),
                    &[k as i64],
                    p.components.dot(&p.mean).to_vec(),
                );
                cur = g.node("MatMul", &[&cur, &ct], Vec::new());
                cur = g.node("Sub", &[&cur, &shift], Vec::new());
                width = k as i64;
            }
            LayerKind::Dense {
                units,
                activation,
                use_bias,
            } => {
                let units = *units as i64;
                let kernel = g.constant(
                    &format!("{lname}.kernel"),
                    &[width, units],
                    tensors[&format!("{lname}.kernel")].clone(),
                );
                let mut inputs = vec![cur.clone(), kernel];
                if *use_bias {
                    inputs.push(g.constant(
                        &format!("{lname}.bias"),
                        &[units],
                        tensors[&format!("{lname}.bias")].clone(),
                    ));
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                cur = g.node("Gemm", &refs, Vec::new());
                cur = match activation {
                    Activation::Linear => cur,
                    Activation::Relu => g.node("Relu", &[&cur], Vec::new()),
                    Activation::Sigmoid => g.node("Sigmoid", &[&cur], Vec::new()),
                    Activation::Tanh => g.node("Tanh", &[&cur], Vec::new()),
                    Activation::Softmax => g.node("Softmax", &[&cur], vec![int_attr("axis", 1)]),
                };
                width = units;
            }
        }
    }
    let output = output_name(served.kind);
    g.nodes.last_mut().expect("the graph starts with Flatten").output = vec![output.to_string()];

    let input_dims = std::iter::once(Dimension {
        value: Some(dimension::Value::DimParam("batch".into())),
        ..Default::default()
    })
    .chain(served.spec.input_shape.iter().map(|&d| Dimension {
        value: Some(dimension::Value::DimValue(d as i64)),
        ..Default::default()
    }))
    .collect();
    let output_dims = vec![
        Dimension {
            value: Some(dimension::Value::DimParam("batch".into())),
            ..Default::default()
        },
        Dimension {
            value: Some(dimension::Value::DimValue(width)),
            ..Default::default()
        },
    ];
    let graph = GraphProto {
        name: Some(name.to_string()),
        node: g.nodes,
        initializer: g.initializers,
        input: vec![value_info(INPUT, input_dims)],
        output: vec![value_info(output, output_dims)],
        ..Default::default()
    };
    let kind = match served.kind {
        OutputKind::Classifier => "classifier",
        OutputKind::Binary => "binary",
        OutputKind::Regressor => "regressor",
    };
    ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("fitd".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!("fitd saved model {} ({name})", served.id)),
        graph: Some(graph),
        metadata_props: [
            ("fitd.saved_model_id", served.id.clone()),
            ("fitd.model_id", served.model_id.clone()),
            ("fitd.output_kind", kind.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        })
        .collect(),
        ..Default::default()
    }
}

/// Nodes and initializers under construction; values are named `v0`, `v1`, ... in order.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Graph {
    /// Appends an `op` node reading `inputs`; returns the name of its output.
    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let n = self.nodes.len();
        let out = format!("v{n}");
        self.nodes.push(NodeProto {
            name: Some(format!("{op}_{n}")),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute,
            ..Default::default()
        });
        out
    }

    /// Adds a float32 initializer; returns its name.
    fn constant(&mut self, name: &str, dims: &[i64], values: Vec<f32>) -> String {
        debug_assert_eq!(dims.iter().product::<i64>() as usize, values.len());
        self.initializers.push(TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            float_data: values,
            ..Default::default()
        });
        name.to_string()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::ModelSpec;

    fn served(spec: serde_json::Value) -> ServedModel {
        let spec: ModelSpec = serde_json::from_value(spec).unwrap();
        let model = crate::nn::Model::new(&spec.to_nn(), 3).unwrap();
        ServedModel::build("s1".into(), "m1".into(), spec, &model.tensors()).unwrap()
    }

    #[test]
    fn the_book_model_becomes_flatten_gemm_relu_gemm_softmax_with_a_dynamic_batch() {
        let s = served(serde_json::json!({"input_shape": [28, 28], "layers": [
            {"type": "flatten"}, {"type": "dense", "units": 100, "activation": "relu"},
            {"type": "dropout", "rate": 0.3}, {"type": "dense", "units": 10, "activation": "softmax"}]}));
        let bytes = export(&s, "book");
        let m = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(m.opset_import[0].version, Some(13));
        let g = m.graph.unwrap();
        let ops: Vec<_> = g.node.iter().map(|n| n.op_type.clone().unwrap()).collect();
        assert_eq!(ops, ["Flatten", "Gemm", "Relu", "Gemm", "Softmax"]);
        assert_eq!(g.node.last().unwrap().output, ["probabilities"]);
        let dims = |v: &ValueInfoProto| match &v.r#type.as_ref().unwrap().value {
            Some(type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| match d.value.as_ref().unwrap() {
                    dimension::Value::DimValue(v) => v.to_string(),
                    dimension::Value::DimParam(p) => p.clone(),
                })
                .collect::<Vec<_>>(),
            _ => panic!("not a tensor"),
        };
        assert_eq!(g.input[0].name.as_deref(), Some("input"));
        assert_eq!(dims(&g.input[0]), ["batch", "28", "28"]);
        assert_eq!(dims(&g.output[0]), ["batch", "10"]);
        let kernel = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some("dense.kernel"))
            .unwrap();
        assert_eq!(kernel.dims, [784, 100]);
        assert_eq!(kernel.float_data, s.model.tensors()[0].data);
    }

    #[test]
    fn regressors_output_values_and_unit_scales_add_no_nodes() {
        let s = served(serde_json::json!({"input_shape": [3], "layers": [
            {"type": "rescaling", "scale": 1.0, "offset": -1.0},
            {"type": "dense", "units": 2, "use_bias": false}]}));
        let g = model_proto(&s, "r").graph.unwrap();
        let ops: Vec<_> = g.node.iter().map(|n| n.op_type.clone().unwrap()).collect();
        assert_eq!(ops, ["Flatten", "Add", "Gemm"]);
        assert_eq!(g.node[2].input.len(), 2, "no bias input");
        assert_eq!(g.output[0].name.as_deref(), Some("values"));
    }
}
