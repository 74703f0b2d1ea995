"""Checks a fitd model export from Python: loads it with safetensors.numpy, rebuilds the forward
pass in numpy from the `spec` metadata, and compares with the server's predictions.

Usage: check_safetensors.py MODEL.safetensors CASE.json
CASE.json holds {"instances": [[...], ...], "predictions": [... as the server returned ...]}.
"""

import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def forward(spec, tensors, x):
    x = x.reshape(x.shape[0], -1).astype(np.float32)
    for layer in spec["layers"]:
        kind, name = layer["type"], layer["name"]
        if kind in ("flatten", "dropout"):
            continue
        if kind == "rescaling":
            x = x * np.float32(layer["scale"]) + np.float32(layer.get("offset", 0.0))
        elif kind == "pca":
            x = (x - tensors[f"{name}.mean"]) @ tensors[f"{name}.components"].T
        elif kind == "dense":
            x = x @ tensors[f"{name}.kernel"]
            if layer.get("use_bias", True):
                x = x + tensors[f"{name}.bias"]
            act = layer.get("activation", "linear")
            if act == "relu":
                x = np.maximum(x, 0)
            elif act == "sigmoid":
                x = 1 / (1 + np.exp(-x))
            elif act == "tanh":
                x = np.tanh(x)
            elif act == "softmax":
                e = np.exp(x - x.max(axis=1, keepdims=True))
                x = e / e.sum(axis=1, keepdims=True)
        else:
            raise SystemExit(f"unknown layer type {kind}")
    return x


def main(model_path, case_path):
    tensors = load_file(model_path)
    for name, t in tensors.items():
        assert t.dtype == np.float32, f"{name} is {t.dtype}"
    with safe_open(model_path, framework="numpy") as f:
        meta = f.metadata()
    assert meta["format"] == "fitd.model/1", meta.get("format")
    spec = json.loads(meta["spec"])
    case = json.load(open(case_path))
    x = np.asarray(case["instances"], dtype=np.float32)
    out = forward(spec, tensors, x)
    preds = case["predictions"]
    for i, p in enumerate(preds):
        if "probabilities" in p:
            got = np.asarray(p["probabilities"], dtype=np.float32)
            assert int(np.argmax(out[i])) == p["class"], (i, out[i], p)
        elif "probability" in p:
            got = np.asarray([p["probability"]], dtype=np.float32)
        else:
            got = np.asarray(p["value"], dtype=np.float32)
        np.testing.assert_allclose(out[i], got, rtol=1e-4, atol=1e-5)
    print(f"ok: {len(preds)} predictions of {len(tensors)} tensors reproduced in numpy")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
