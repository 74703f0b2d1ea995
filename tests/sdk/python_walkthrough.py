#!/usr/bin/env python3
"""Every operation of openapi/openapi.yaml through a Python client generated from it.

Generates the client with openapi-python-client (with openapi/python-client.yaml, which maps the
PNG and `.npy` media types onto bytes), starts the fitd binary on a free port with a fresh
database and an admin token, and walks the whole API through the generated client only: datasets
(built-ins, CSV, NPY and IDX uploads, the sample PNG, PCA), models, jobs with their events,
history, checkpoints, labels, comparison and cancel, saved models with predict (JSON, `.npy`,
PNG), evaluate, weights, export and import, KServe v2 (JSON and binary tensors), aliases,
webhooks, searches, tokens and sessions. Each answer must have the status the step expects, parse
into the generated model of that status, and match the spec's schema for it. At the end the set
of operations called must equal the spec's set.

    python3 tests/sdk/python_walkthrough.py --fitd-bin target/debug/fitd [--workdir DIR]
"""

import argparse
import gzip
import importlib
import io
import json
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "openapi" / "openapi.yaml"
CONFIG_PATH = ROOT / "openapi" / "python-client.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())

# operationId -> (METHOD, path), from the spec.
OPERATIONS = {
    op["operationId"]: (method.upper(), path)
    for path, item in SPEC["paths"].items()
    for method, op in item.items()
    if method in ("get", "put", "post", "delete", "patch", "head")
}
CALLED = set()


def fail(message):
    raise AssertionError(message)


def generate_client(workdir):
    out = workdir / "fitd_client"
    cmd = [
        "openapi-python-client", "generate", "--path", str(SPEC_PATH), "--config", str(CONFIG_PATH),
        "--meta", "none", "--output-path", str(out), "--overwrite",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    log = res.stdout + res.stderr
    if res.returncode != 0:
        fail(f"openapi-python-client failed:\n{log}")
    # A schema or operation the generator cannot read is dropped with a warning: none allowed.
    if "Warning" in log or "WARNING" in log or "Unable to" in log:
        fail(f"openapi-python-client warned about the spec:\n{log}")
    sys.path.insert(0, str(workdir))
    return importlib.import_module("fitd_client")


def schema_validator(schema):
    root = dict(schema)
    root["components"] = SPEC["components"]
    return Draft202012Validator(root)


def check_schema(value, schema, what):
    errors = sorted(schema_validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        lines = "\n".join(f"  at {'/'.join(map(str, e.path)) or '$'}: {e.message}" for e in errors[:10])
        fail(f"{what}: the answer does not match the spec:\n{lines}\n{json.dumps(value)[:2000]}")


def call(fn, expect, *args, **kwargs):
    """Calls `fn.sync_detailed`, asserts the status (or one of a tuple), and checks the answer
    against what the spec documents for it."""
    op_id = fn.__name__.rsplit(".", 1)[1]
    method, path = OPERATIONS[op_id]
    res = fn.sync_detailed(*args, **kwargs)
    code = int(res.status_code)
    what = f"{method} {path} ({op_id})"
    if code not in (expect if isinstance(expect, tuple) else (expect,)):
        fail(f"{what} answered {code}, expected {expect}: {res.content[:2000]!r}")
    documented = SPEC["paths"][path][method.lower()]["responses"].get(str(code))
    if documented is None:
        fail(f"{what} answered {code}, which the spec does not document")
    content_type = res.headers.get("content-type", "").split(";")[0].strip()
    declared = documented.get("content") or {}
    if declared:
        if content_type not in declared:
            fail(f"{what} answered `{content_type}`; the spec declares {sorted(declared)}")
        schema = declared[content_type].get("schema", {})
        if content_type.endswith("json"):
            check_schema(json.loads(res.content), schema, what)
        elif schema.get("$ref"):
            target = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            if target.get("format") == "binary" and res.parsed is not None and not hasattr(res.parsed, "payload"):
                fail(f"{what}: the generated client did not read the binary answer as a file")
    elif res.content:
        fail(f"{what} answered {code} with a body, which the spec does not declare")
    CALLED.add(op_id)
    return res


def parsed(res, model):
    if not isinstance(res.parsed, model):
        fail(f"expected a {model.__name__}, the client parsed {type(res.parsed).__name__}: {res.content[:500]!r}")
    return res.parsed


def sse_events(text):
    """The events of a finished text/event-stream body, as (event, id, data) tuples."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = {"event": "message", "id": None, "data": []}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "data":
                fields["data"].append(value)
            elif key in ("event", "id"):
                fields[key] = value
        if fields["data"]:
            events.append((fields["event"], fields["id"], json.loads("\n".join(fields["data"]))))
    return events


def npy(array_bytes, dtype, shape):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        dtype, "".join(f"{n}, " for n in shape) if len(shape) == 1 else ", ".join(map(str, shape)))
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + array_bytes


def idx(magic_type, dims, data):
    return gzip.compress(struct.pack(">HBB", 0, magic_type, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + data)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(fitd_bin, workdir, token):
    token_file = workdir / "admin-token"
    token_file.write_text(token)
    port = free_port()
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen(
        [fitd_bin, "serve", "--addr", f"127.0.0.1:{port}", "--db", str(workdir / "fitd.db"),
         "--admin-token-file", str(token_file), "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            fail(f"fitd exited with {proc.returncode}; see {workdir / 'server.log'}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    fail("fitd did not answer /healthz within 60 s")


def wait_for(what, probe, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.3)
    fail(f"timed out waiting for {what}")


def walkthrough(url, token):
    from fitd_client import AuthenticatedClient, Client
    from fitd_client.api.aliases import alias_history, delete_alias, get_alias, list_aliases, put_alias
    from fitd_client.api.datasets import (create_dataset, create_pca_dataset, delete_dataset, get_dataset,
                                          get_dataset_cache, get_dataset_sample, list_datasets)
    from fitd_client.api.health import healthz, readyz
    from fitd_client.api.jobs import (cancel_job, compare_jobs, create_job, delete_job, get_job, get_job_history,
                                      job_events, list_job_checkpoints, list_jobs, patch_job)
    from fitd_client.api.kserve_v2 import (v2_infer, v2_live, v2_model_metadata, v2_model_ready, v2_ready,
                                           v2_server_metadata, v2_version_infer, v2_version_metadata,
                                           v2_version_ready)
    from fitd_client.api.metrics import metrics
    from fitd_client.api.models import append_layer, create_model, delete_model, get_model, get_model_summary, list_models
    from fitd_client.api.saved_models import (create_saved_model, delete_saved_model, evaluate, export_saved_model,
                                              get_model_cache, get_saved_model, get_weights, import_saved_model,
                                              list_saved_models, predict, upload_weights)
    from fitd_client.api.searches import cancel_search, create_search, get_search, list_searches, search_events
    from fitd_client.api.tokens import create_session, create_token, delete_session, get_session, list_tokens, revoke_token
    from fitd_client.api.webhooks import create_webhook, delete_webhook, list_webhook_deliveries, list_webhooks
    from fitd_client import models as m
    from fitd_client.types import File

    client = AuthenticatedClient(base_url=url, token=token, raise_on_unexpected_status=True, timeout=120)
    anonymous = Client(base_url=url, raise_on_unexpected_status=True, timeout=30)

    def body(model, data):
        """A request body built from JSON as a user writes it; the model must keep all of it."""
        value = model.from_dict(data)
        if value.to_dict() != data:
            fail(f"{model.__name__} does not keep {data}: {value.to_dict()}")
        return value

    # Health, metrics, KServe v2 server endpoints.
    assert parsed(call(healthz, 200, client=anonymous), m.HealthView).status == "ok"
    call(readyz, 200, client=anonymous)
    call(v2_live, 200, client=anonymous)
    call(v2_ready, 200, client=anonymous)
    assert parsed(call(v2_server_metadata, 200, client=client), m.ServerMetadata).name == "fitd"

    # A token is needed: without one, 401 as documented.
    call(list_datasets, 401, client=anonymous)

    # Datasets: a built-in, uploads (CSV, NPY pair, IDX), a PCA, the sample PNG.
    digits = parsed(call(create_dataset, 201, client=client, body=body(m.CreateBuiltinDatasetRequest, {"source": "digits"})), m.DatasetView)
    assert digits.input_shape == [8, 8] and digits.n_classes == 10, digits
    csv_rows = ["a,b,label"] + [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(40)]
    csv_ds = parsed(call(create_dataset, 201, client=client, body=m.UploadDatasetForm(
        name="tiny-csv", file=File(payload=io.BytesIO("\n".join(csv_rows).encode()), file_name="tiny.csv"))), m.DatasetView)
    assert csv_ds.n_samples == 40 and csv_ds.input_shape == [2], csv_ds
    x = struct.pack("<24f", *[float(i % 5) for i in range(24)])
    y = struct.pack("<6q", 0, 1, 0, 1, 0, 1)
    npy_ds = parsed(call(create_dataset, 201, client=client, body=m.UploadDatasetForm(
        name="tiny-npy", x=File(payload=io.BytesIO(npy(x, "<f4", (6, 4))), file_name="x.npy"),
        y=File(payload=io.BytesIO(npy(y, "<i8", (6,))), file_name="y.npy"))), m.DatasetView)
    assert npy_ds.n_samples == 6 and npy_ds.input_shape == [4], npy_ds
    images = bytes((i * 37) % 256 for i in range(12 * 4 * 4))
    idx_ds = parsed(call(create_dataset, 201, client=client, body=m.UploadDatasetForm(
        images=File(payload=io.BytesIO(idx(0x08, [12, 4, 4], images)), file_name="images-idx3-ubyte.gz"),
        labels=File(payload=io.BytesIO(idx(0x08, [12], bytes(i % 3 for i in range(12)))), file_name="labels-idx1-ubyte.gz"))), m.DatasetView)
    assert idx_ds.n_samples == 12 and idx_ds.input_shape == [4, 4], idx_ds
    png = call(get_dataset_sample, 200, digits.id, 0, client=client)
    png_bytes = png.content
    assert png_bytes.startswith(b"\x89PNG\r\n\x1a\n"), png_bytes[:16]
    assert png.parsed.payload.read() == png_bytes
    label = int(png.headers["x-label"])
    assert 0 <= label < 10, label
    call(get_dataset_sample, 404, digits.id, 100000, client=client)
    call(get_dataset_sample, 422, csv_ds.id, 0, client=client)  # 1-D samples have no image
    pca = parsed(call(create_pca_dataset, 201, digits.id, client=client, body=body(m.CreatePcaRequest, {"n_components": 5})), m.PcaDatasetView)
    assert pca.dataset.input_shape == [5], pca
    listed = parsed(call(list_datasets, 200, client=client, limit=2), m.DatasetList)
    assert len(listed.items) == 2 and listed.next_, listed
    assert parsed(call(get_dataset, 200, csv_ds.id, client=client), m.DatasetView).name == "tiny-csv"
    call(get_dataset, 404, "00000000-0000-0000-0000-000000000000", client=client)
    call(delete_dataset, 204, npy_ds.id, client=client)
    call(get_dataset, 404, npy_ds.id, client=client)
    call(get_dataset_cache, 200, client=client)

    # Models.
    mlp = {"name": "digits-mlp", "input_shape": [8, 8],
           "layers": [{"type": "flatten"}, {"type": "rescaling", "scale": 0.0625},
                      {"type": "dense", "units": 16, "activation": "relu"},
                      {"type": "dense", "units": 10, "activation": "softmax"}]}
    model = parsed(call(create_model, 201, client=client, body=body(m.CreateModelRequest, mlp)), m.ModelView)
    summary = parsed(call(get_model_summary, 200, model.id, client=client), m.SummaryView)
    assert summary.total_params == 64 * 16 + 16 + 16 * 10 + 10, summary
    scratch = parsed(call(create_model, 201, client=client, body=body(m.CreateModelRequest, {
        "name": "scratch", "input_shape": [2], "layers": [{"type": "dense", "units": 3, "activation": "relu"}]})), m.ModelView)
    grown = parsed(call(append_layer, 200, scratch.id, client=client,
                        body=body(m.DenseLayer, {"type": "dense", "units": 2, "activation": "softmax"})), m.ModelView)
    assert len(grown.layers) == 2, grown
    call(create_model, 422, client=client, body=body(m.CreateModelRequest, {
        "name": "bad", "input_shape": [2], "layers": [{"type": "dense", "units": 0}]}))
    assert parsed(call(get_model, 200, model.id, client=client), m.ModelView).name == "digits-mlp"
    assert len(parsed(call(list_models, 200, client=client), m.ModelList).items) == 2
    call(delete_model, 204, scratch.id, client=client)

    # A webhook first, so the jobs below make deliveries.
    hook = parsed(call(create_webhook, 201, client=client, body=body(m.CreateWebhook, {
        "url": "http://127.0.0.1:9/fitd", "events": ["job.*"], "secret": "s" * 24})), m.WebhookView)
    assert any(w.id == hook.id for w in parsed(call(list_webhooks, 200, client=client), m.WebhookList).items)

    # Jobs: train, watch, label, compare, cancel, delete.
    job_request = {
        "model_id": model.id, "dataset_id": digits.id, "validation": {"split": 0.2},
        "compile": {"optimizer": {"type": "adam", "learning_rate": 0.01},
                    "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        "fit": {"epochs": 4, "batch_size": 32, "seed": 7},
        "callbacks": [{"type": "model_checkpoint", "monitor": "val_loss", "save_best_only": True}],
        "name": "digits-adam", "tags": {"team": "sdk"}}
    job = parsed(call(create_job, 202, client=client, body=body(m.CreateJobRequest, job_request)), m.JobView)
    bad = dict(job_request, fit={"epochs": 0, "batch_size": 32})
    call(create_job, 422, client=client, body=body(m.CreateJobRequest, bad))

    def finished(job_id):
        def probe():
            view = parsed(call(get_job, 200, job_id, client=client), m.JobView)
            return view if str(view.status) in ("succeeded", "failed", "cancelled") else None
        return probe

    job = wait_for("the job to finish", finished(job.id))
    assert str(job.status) == "succeeded", job
    history = parsed(call(get_job_history, 200, job.id, client=client), m.HistoryView)
    assert len(history.epoch) == 4 and len(history.history["val_accuracy"]) == 4, history
    assert history.history["val_accuracy"][-1] > 0.5, history.history
    events = sse_events(call(job_events, 200, job.id, client=client).content.decode())
    kinds = [e[0] for e in events]
    assert kinds[-1] == "done" and kinds.count("epoch") == 4, kinds
    named = {"status": "StatusEvent", "epoch": "EpochEvent", "progress": "ProgressEvent",
             "checkpoint": "CheckpointEvent", "done": "DoneEvent"}
    for kind, _, data in events:
        check_schema(data, {"$ref": f"#/components/schemas/{named[kind]}"}, f"the `{kind}` event")
    streamed = [d for k, _, d in events if k == "epoch"]
    assert [e["loss"] for e in streamed] == history.history["loss"], (streamed, history.history)
    checkpoints = parsed(call(list_job_checkpoints, 200, job.id, client=client), m.CheckpointList)
    assert checkpoints.items and any(c.is_best for c in checkpoints.items), checkpoints
    patched = parsed(call(patch_job, 200, job.id, client=client, body=body(m.JobPatch, {
        "notes": "trained through the generated SDK", "tags": {"stage": "walkthrough"}})), m.JobView)
    assert patched.tags.to_dict() == {"team": "sdk", "stage": "walkthrough"}, patched.tags
    found = parsed(call(list_jobs, 200, client=client, tag=["team:sdk"], status=m.JobStatus.SUCCEEDED), m.JobList)
    assert [j.id for j in found.items] == [job.id], found
    call(list_jobs, 422, client=client, order_by="no.such")
    long_request = dict(job_request, fit={"epochs": 500, "batch_size": 8, "seed": 8}, name="to-cancel")
    long_job = parsed(call(create_job, 202, client=client, body=body(m.CreateJobRequest, long_request)), m.JobView)
    # Queued: cancelled at once (200); already running: stops before its next batch (202).
    parsed(call(cancel_job, (200, 202), long_job.id, client=client), m.JobView)
    long_job = wait_for("the cancelled job to stop", finished(long_job.id))
    assert str(long_job.status) == "cancelled", long_job
    call(cancel_job, 409, long_job.id, client=client)
    comparison = parsed(call(compare_jobs, 200, client=client, ids=f"{job.id},{long_job.id}"), m.Comparison)
    assert "fit.epochs" in comparison.differing, comparison.differing
    call(compare_jobs, 422, client=client, ids=job.id)

    # Saved models: from the job, from a checkpoint; predict, evaluate, weights, export, import.
    saved_id = job.saved_model_id
    saved = parsed(call(get_saved_model, 200, saved_id, client=client), m.SavedModelView)
    assert saved.model_id == model.id, saved
    epoch = checkpoints.items[0].epoch
    from_ckpt = parsed(call(create_saved_model, 201, client=client, body=body(m.CreateSavedModelRequest, {
        "job_id": job.id, "epoch": epoch})), m.SavedModelView)
    listed = parsed(call(list_saved_models, 200, client=client, model_id=model.id), m.SavedModelList)
    assert {s.id for s in listed.items} >= {saved_id, from_ckpt.id}, listed
    image = [[float((r * 8 + c) % 16) for c in range(8)] for r in range(8)]
    pred = parsed(call(predict, 200, saved_id, client=client, body=body(m.PredictRequest, {"instances": [image]})), m.PredictResponse)
    first = pred.predictions[0]
    assert isinstance(first, m.ClassPrediction) and len(first.probabilities) == 10, first
    flat = parsed(call(predict, 200, saved_id, client=client, body=body(m.PredictRequest, {"instances": [sum(image, [])]})), m.PredictResponse)
    assert flat.predictions[0].to_dict() == first.to_dict(), "nested and flat instances differ"
    two = parsed(call(predict, 200, saved_id, client=client, body=body(m.PredictRequest, {"instances": [image, image]})), m.PredictResponse)
    assert [p.class_ for p in two.predictions] == [first.class_] * 2, two
    pixels = struct.pack("<64B", *[int(v) for v in sum(image, [])])
    by_npy = parsed(call(predict, 200, saved_id, client=client, body=File(payload=io.BytesIO(npy(pixels, "|u1", (1, 8, 8))), file_name="x.npy")), m.PredictResponse)
    assert by_npy.predictions[0].to_dict() == first.to_dict(), (by_npy, first)
    by_png = parsed(call(predict, 200, saved_id, client=client, body=m.PredictUpload(image=File(payload=io.BytesIO(png_bytes), file_name="sample.png", mime_type="image/png"))), m.PredictResponse)
    assert isinstance(by_png.predictions[0], m.ClassPrediction), by_png
    call(predict, 422, saved_id, client=client, body=body(m.PredictRequest, {"instances": [[1.0, 2.0]]}))
    evaluation = parsed(call(evaluate, 200, saved_id, client=client, body=body(m.EvaluateRequest, {"dataset_id": digits.id})), m.EvaluationView)
    assert evaluation.n_samples == digits.n_samples and evaluation.accuracy > 0.5, evaluation
    weights = call(get_weights, 200, saved_id, client=client)
    assert isinstance(weights.parsed, File) and weights.content[8:9] == b"{", weights.content[:16]
    uploaded = parsed(call(upload_weights, 201, model.id, client=client, body=File(payload=io.BytesIO(weights.content), file_name="w.safetensors")), m.SavedModelView)
    again = parsed(call(predict, 200, uploaded.id, client=client, body=body(m.PredictRequest, {"instances": [image]})), m.PredictResponse)
    assert again.predictions[0].to_dict() == first.to_dict()
    from_form = parsed(call(upload_weights, 201, model.id, client=client, body=m.SafetensorsUpload(file=File(payload=io.BytesIO(weights.content), file_name="w.safetensors"))), m.SavedModelView)
    call(upload_weights, 422, model.id, client=client, body=File(payload=io.BytesIO(b"not safetensors"), file_name="w.safetensors"))
    exported = call(export_saved_model, 200, saved_id, client=client)
    assert isinstance(exported.parsed, File) and len(exported.content) > len(weights.content)
    onnx = call(export_saved_model, 200, saved_id, client=client, format_="onnx")
    # An ONNX ModelProto: field 1 (`ir_version`, a varint) first, and the opset domain inside.
    assert onnx.content[:1] == b"\x08" and b"input" in onnx.content and onnx.content != exported.content, onnx.content[:16]
    imported = parsed(call(import_saved_model, 201, client=client, body=File(payload=io.BytesIO(exported.content), file_name="model.safetensors")), m.SavedModelView)
    same = parsed(call(predict, 200, imported.id, client=client, body=body(m.PredictRequest, {"instances": [image]})), m.PredictResponse)
    assert same.predictions[0].to_dict() == first.to_dict()
    call(get_model_cache, 200, client=client)

    # KServe v2.
    meta = parsed(call(v2_model_metadata, 200, saved_id, client=client), m.ModelMetadata)
    assert meta.inputs[0].shape == [-1, 8, 8], meta
    assert parsed(call(v2_model_ready, 200, saved_id, client=client), m.ModelReadyView).ready
    call(v2_version_metadata, 200, saved_id, "1", client=client)
    call(v2_version_ready, 200, saved_id, "1", client=client)
    infer = parsed(call(v2_infer, 200, saved_id, client=client, body=body(m.InferRequest, {
        "inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": image}]})), m.InferResponse)
    assert infer.outputs[0].shape == [1, 10] and len(infer.outputs[0].data) == 10, infer
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": 64}}]}).encode()
    binary = parsed(call(v2_version_infer, 200, saved_id, "1", client=client,
                         body=File(payload=io.BytesIO(header + pixels)), inference_header_content_length=str(len(header))), m.InferResponse)
    assert binary.outputs[0].data == infer.outputs[0].data, (binary, infer)
    call(v2_infer, 404, "no-such-model", client=client, body=body(m.InferRequest, {
        "inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": image}]}))

    # Aliases.
    call(put_alias, 201, "production", client=client, body=body(m.PutAlias, {"saved_model_id": saved_id}))
    moved = parsed(call(put_alias, 200, "production", client=client, body=body(m.PutAlias, {"saved_model_id": from_ckpt.id})), m.AliasView)
    assert moved.saved_model_id == from_ckpt.id
    assert parsed(call(get_alias, 200, "production", client=client), m.AliasView).saved_model_id == from_ckpt.id
    assert [a.name for a in parsed(call(list_aliases, 200, client=client), m.AliasList).items] == ["production"]
    assert len(parsed(call(alias_history, 200, "production", client=client), m.AliasHistory).items) == 2
    via_alias = parsed(call(predict, 200, "production", client=client, body=body(m.PredictRequest, {"instances": [image]})), m.PredictResponse)
    assert len(via_alias.predictions) == 1
    call(delete_saved_model, 409, from_ckpt.id, client=client)
    call(delete_alias, 204, "production", client=client)
    call(get_alias, 404, "production", client=client)
    call(delete_saved_model, 204, imported.id, client=client)
    call(delete_saved_model, 204, from_form.id, client=client)

    # Webhook deliveries of the jobs' status changes.
    deliveries = parsed(call(list_webhook_deliveries, 200, hook.id, client=client), m.DeliveryList)
    assert deliveries.items, deliveries
    call(delete_webhook, 204, hook.id, client=client)

    # Searches: one that finishes, one cancelled.
    search_request = {
        "base": {k: v for k, v in job_request.items() if k not in ("name", "tags", "callbacks")}
        | {"fit": {"epochs": 1, "batch_size": 64, "seed": 1}},
        "space": [{"path": "compile.optimizer.learning_rate", "type": "choice", "values": [0.01, 0.003]}],
        "objective": {"metric": "val_loss"}, "method": "grid", "max_trials": 2}
    search = parsed(call(create_search, 202, client=client, body=body(m.CreateSearchRequest, search_request)), m.SearchView)

    def search_done(search_id):
        def probe():
            view = parsed(call(get_search, 200, search_id, client=client), m.SearchView)
            return view if str(view.status) in ("succeeded", "failed", "cancelled") else None
        return probe

    search = wait_for("the search to finish", search_done(search.id))
    assert str(search.status) == "succeeded" and len(search.trials) == 2, search
    search_kinds = [e[0] for e in sse_events(call(search_events, 200, search.id, client=client).content.decode())]
    assert search_kinds.count("trial_finished") == 2 and search_kinds[-1] == "done", search_kinds
    big = dict(search_request, max_trials=50, space=[{"path": "compile.optimizer.learning_rate",
                                                     "type": "log_uniform", "low": 1e-4, "high": 1e-1}], method="random")
    big["base"] = dict(big["base"], fit={"epochs": 200, "batch_size": 8, "seed": 1})
    doomed = parsed(call(create_search, 202, client=client, body=body(m.CreateSearchRequest, big)), m.SearchView)
    call(cancel_search, 202, doomed.id, client=client)
    doomed = wait_for("the search to stop", search_done(doomed.id))
    assert str(doomed.status) == "cancelled", doomed
    assert len(parsed(call(list_searches, 200, client=client), m.SearchList).items) == 2

    # Deleting: a finished job, the dataset a finished job used (409 unless cascading).
    call(delete_job, 204, long_job.id, client=client)
    call(get_job, 404, long_job.id, client=client)
    call(delete_dataset, 204, idx_ds.id, client=client)
    call(delete_dataset, 409, digits.id, client=client)

    # Metrics, with the token.
    text = call(metrics, 200, client=client).content.decode()
    assert "fitd_http_requests_total" in text

    # Tokens and sessions.
    created = parsed(call(create_token, 201, client=client, body=body(m.CreateTokenRequest, {"name": "reader", "scopes": ["read"]})), m.CreatedTokenView)
    reader = AuthenticatedClient(base_url=url, token=created.token, raise_on_unexpected_status=True)
    call(list_models, 200, client=reader)
    call(create_model, 403, client=reader, body=body(m.CreateModelRequest, mlp))
    assert any(t.id == created.id for t in parsed(call(list_tokens, 200, client=client), m.TokenList).items)
    session = parsed(call(create_session, 200, client=anonymous, body=body(m.SignIn, {"token": created.token})), m.SessionView)
    assert session.scopes == ["read"], session
    cookie = anonymous.get_httpx_client().cookies.get("fitd_session")
    assert cookie, "the session cookie was not set"
    assert parsed(call(get_session, 200, client=anonymous), m.SessionView).name == "reader"
    call(delete_session, 204, client=anonymous)
    assert parsed(call(get_session, 200, client=anonymous), m.SessionView).signed_in is False
    revoked = parsed(call(revoke_token, 200, created.id, client=client), m.TokenView)
    assert revoked.revoked_at, revoked
    call(list_models, 401, client=reader)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fitd-bin", required=True)
    parser.add_argument("--workdir", help="where the client, database and server log go (default: a temporary directory)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fitd-sdk-"))
    workdir.mkdir(parents=True, exist_ok=True)
    generate_client(workdir)
    token = "fitd_" + secrets.token_hex(24)
    proc, url = start_server(args.fitd_bin, workdir, token)
    try:
        walkthrough(url, token)
    except BaseException:
        print(f"server log: {workdir / 'server.log'}", file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    missing = sorted(set(OPERATIONS) - CALLED)
    extra = sorted(CALLED - set(OPERATIONS))
    if missing or extra:
        fail(f"operations not called through the generated client: {missing}; not in the spec: {extra}")
    print(f"{len(CALLED)} of {len(OPERATIONS)} operations called through the generated Python client")


if __name__ == "__main__":
    main()
