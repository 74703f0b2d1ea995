"""Checks fitd's ONNX export with the ONNX project's own tools: `onnx.checker` (full check, with
shape inference) and `onnxruntime`, whose predictions must match fitd's within 1e-5.

Usage: check_onnx.py MODEL.onnx INSTANCES.npy OUTPUTS.npy OUTPUT_NAME
INSTANCES.npy: the instances in the model's input shape, batch first; OUTPUTS.npy: fitd's float32
predictions for them (`/v1/saved-models/{id}/predict` with `Accept: application/x-npy`).
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(model_path, inputs_path, outputs_path, output_name):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    opset = {o.domain: o.version for o in model.opset_import}
    assert opset.get("", 0) >= 13, opset
    x = np.load(inputs_path).astype(np.float32)
    want = np.load(outputs_path)

    graph = model.graph
    assert [i.name for i in graph.input] == ["input"], graph.input
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value, "the batch dimension is dynamic"
    assert [d.dim_value for d in dims[1:]] == list(x.shape[1:]), (dims, x.shape)
    assert [o.name for o in graph.output] == [output_name], graph.output
    out_dims = graph.output[0].type.tensor_type.shape.dim
    assert out_dims[1].dim_value == want.shape[1], (out_dims, want.shape)

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    # Whole batch, then one row and an odd slice: the batch dimension really is dynamic.
    for rows in (slice(None), slice(0, 1), slice(1, 4)):
        (got,) = session.run([output_name], {"input": x[rows]})
        assert got.dtype == np.float32 and got.shape == want[rows].shape, (got.shape, want[rows].shape)
        np.testing.assert_allclose(got, want[rows], rtol=1e-5, atol=1e-5)
    worst = float(np.max(np.abs(session.run([output_name], {"input": x})[0] - want)))
    ops = sorted({n.op_type for n in graph.node})
    print(f"ok: {x.shape[0]} rows, largest difference {worst:.2e}, ops {ops}")


if __name__ == "__main__":
    main(*sys.argv[1:])
