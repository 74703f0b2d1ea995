"""Drives fitd's Open Inference Protocol routes with Triton's own HTTP client, tritonclient.http.

Sends the instances as FP32 and as UINT8, each as binary tensor data and as JSON, asks for the output
as binary and as JSON (and leaves it to the client's default), on the plain and the versioned route,
and checks every answer equals the expected outputs bit for bit. Also checks metadata, readiness and
that a refused request raises the client's exception with fitd's message.

Usage: check_triton.py HOST:PORT MODEL INSTANCES.npy OUTPUTS.npy
"""

import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main(url, model, inputs_path, outputs_path):
    x = np.load(inputs_path)
    want = np.load(outputs_path)
    assert x.dtype == np.uint8 and want.dtype == np.float32, (x.dtype, want.dtype)
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(model)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata(model)
    assert meta["inputs"][0]["shape"] == [-1, 28, 28], meta
    assert meta["outputs"][0]["name"] == "output", meta

    checked = 0
    for dtype, datatype in [(np.float32, "FP32"), (np.uint8, "UINT8")]:
        for binary_in in (True, False):
            for binary_out in (True, False, None):
                for version in ("", "1"):
                    inp = httpclient.InferInput("input", list(x.shape), datatype)
                    inp.set_data_from_numpy(x.astype(dtype), binary_data=binary_in)
                    outputs = None
                    if binary_out is not None:
                        outputs = [httpclient.InferRequestedOutput("output", binary_data=binary_out)]
                    res = client.infer(model, [inp], outputs=outputs, request_id="req-7", model_version=version)
                    got = res.as_numpy("output")
                    assert got is not None and got.dtype == np.float32, (datatype, binary_in, binary_out)
                    assert got.shape == want.shape, (got.shape, want.shape)
                    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
                    response = res.get_response()
                    assert response["id"] == "req-7" and response["model_name"] == model, response
                    is_binary = "binary_data_size" in response["outputs"][0].get("parameters", {})
                    assert is_binary == (binary_out is not False), response
                    checked += 1

    bad = httpclient.InferInput("input", [x.shape[0], 27, 28], "UINT8")
    bad.set_data_from_numpy(np.zeros((x.shape[0], 27, 28), dtype=np.uint8))
    try:
        client.infer(model, [bad])
    except InferenceServerException as e:
        assert "got [27, 28]" in e.message(), e.message()
    else:
        raise AssertionError("a wrong input shape was accepted")
    print(f"ok: {checked} tritonclient requests on {x.shape[0]} instances matched")


if __name__ == "__main__":
    main(*sys.argv[1:])
