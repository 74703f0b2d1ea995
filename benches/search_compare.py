#!/usr/bin/env python3
"""Hyperparameter search side by side: fitd's searches against Keras Tuner, in one run.

Both sides search the same space over the same data and model (see keras_tuner_search.py):
  MNIST 10k training digits (8,000; the last 20 % for validation), Flatten -> Rescaling(1/255) ->
  Dense(units, relu) -> Dropout(rate) -> Dense(10, softmax), Adam, batch 32;
  learning_rate log-uniform [1e-4, 1e-2], units int [32, 256] step 32, rate uniform [0, 0.5];
  objective val_accuracy (max), a trial's score being its best epoch.
Searches:
  random:    --trials trials of --epochs epochs (fitd `random`, Keras Tuner RandomSearch).
  hyperband: --max-epochs and --factor (fitd `hyperband`, Keras Tuner Hyperband with one iteration).

fitd runs as the release binary with --workers 2 (the machine's 2 cores; a trial trains on one
thread) and the search with max_concurrent_trials 2; Keras Tuner runs its trials one after the
other, each on TensorFlow's default threads (every core). Wall time is from the request (fitd:
POST /v1/searches; Keras Tuner: building the tuner) to the end of the search (fitd: the `done` event).
Per-trial overhead is the time from a trial being created to its first epoch starting (fitd: the
trial job's created_at to the client receiving epoch 0, less that epoch's duration; Keras Tuner:
on_trial_begin to the first on_epoch_begin).

Usage: benches/search_compare.sh [--trials 24] [--epochs 5] [--max-epochs 9] [--factor 3]
       [--seed 7] [--methods random,hyperband] [--venv ~/.venv-bench] [--bin PATH]
Without the venv (numpy, tensorflow-cpu, keras-tuner) it runs fitd alone and exits 2.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "mnist-10k"


def busy_s():
    """Busy CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU seconds used by one process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Machine:
    """How many cores the rest of the machine used while something ran."""

    def __init__(self, own):
        self.own = own  # () -> CPU seconds of what is measured
        self.b0, self.o0, self.t0 = busy_s(), own(), time.perf_counter()

    def others(self):
        wall = time.perf_counter() - self.t0
        return max(0.0, (busy_s() - self.b0) - (self.own() - self.o0)) / wall


def build_fitd():
    out = subprocess.run(
        ["cargo", "build", "--release", "--bin", "fitd", "--message-format=json"],
        cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stdout.write(out.stderr)
        raise SystemExit("cargo build --release failed")
    exe = None
    for line in out.stdout.splitlines():
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "fitd" and m.get("executable"):
            exe = m["executable"]
    return exe


class Fitd:
    def __init__(self, binary, work):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.base = f"http://127.0.0.1:{port}"
        # A private copy, so a rebuild during the measurement cannot swap the binary.
        exe = Path(work) / "fitd"
        shutil.copy(binary, exe)
        self.log = open(Path(work) / "server.log", "w")
        self.proc = subprocess.Popen(
            [str(exe), "serve", "--addr", f"127.0.0.1:{port}", "--db", str(Path(work) / "fitd.db"),
             "--workers", "2"],
            stdout=self.log, stderr=self.log, env={**os.environ, "RUST_LOG": "warn"})
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{self.base}/readyz", timeout=1).status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("fitd did not start; see its log")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)

    def call(self, method, path, body=None, headers=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"content-type": "application/json"} if body is not None else {}
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        with urllib.request.urlopen(req, timeout=60) as res:
            return json.loads(res.read() or b"null")

    def upload_idx(self, name, images, labels):
        boundary = uuid.uuid4().hex
        parts = []
        for field, value, filename in [("name", name.encode(), None),
                                       ("images", Path(images).read_bytes(), Path(images).name),
                                       ("labels", Path(labels).read_bytes(), Path(labels).name)]:
            disp = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
            parts.append(f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.call("POST", "/v1/datasets", raw=body,
                         headers={"content-type": f"multipart/form-data; boundary={boundary}"})

    def events(self, path):
        """Yields (arrival time, event name, data) from an SSE stream until it ends."""
        req = urllib.request.Request(self.base + path, headers={"accept": "text/event-stream"})
        with urllib.request.urlopen(req, timeout=600) as res:
            name, data = "message", []
            for line in res:
                line = line.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif line == "" and data:
                    yield time.time(), name, json.loads("\n".join(data))
                    name, data = "message", []


def utc(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def run_fitd(srv, model_id, ds_id, method, args):
    base = {"model_id": model_id, "dataset_id": ds_id, "validation": {"split": 0.2},
            "compile": {"optimizer": {"type": "adam"}, "loss": "sparse_categorical_crossentropy",
                        "metrics": ["accuracy"]},
            "fit": {"epochs": args.epochs if method == "random" else args.max_epochs,
                    "batch_size": 32, "shuffle": True, "seed": args.seed}}
    body = {"base": base,
            "space": [
                {"path": "compile.optimizer.learning_rate", "type": "log_uniform", "low": 1e-4, "high": 1e-2},
                {"path": "model.layers[2].units", "type": "int", "low": 32, "high": 256, "step": 32},
                {"path": "model.layers[3].rate", "type": "uniform", "low": 0.0, "high": 0.5}],
            "objective": {"metric": "val_accuracy"}, "method": method,
            "max_trials": args.trials if method == "random" else args.hyperband_trials,
            "max_concurrent_trials": 2, "seed": args.seed}
    if method == "hyperband":
        body["min_epochs"] = 1
        body["reduction_factor"] = args.factor
    machine = Machine(lambda: proc_cpu(srv.proc.pid))
    t0 = time.time()
    search = srv.call("POST", "/v1/searches", body)
    first_epoch_seen = {}
    for at, name, data in srv.events(f"/v1/searches/{search['id']}/events"):
        if name == "trial_epoch" and data["epoch"] == 0:
            first_epoch_seen.setdefault(data["job_id"], at)
        if name == "done":
            wall = at - t0
            break
    others = machine.others()
    s = srv.call("GET", f"/v1/searches/{search['id']}")
    overhead, epoch_s = [], []
    for t in s["trials"]:
        job = srv.call("GET", f"/v1/jobs/{t['job_id']}")
        durations = {d["epoch"]: d["duration_ms"] / 1e3
                     for _, name, d in srv.events(f"/v1/jobs/{t['job_id']}/events") if name == "epoch"}
        epoch_s += durations.values()
        if t["job_id"] in first_epoch_seen and 0 in durations:
            overhead.append(first_epoch_seen[t["job_id"]] - durations[0] - utc(job["created_at"]))
    return {"tool": "fitd", "method": method, "wall_s": wall, "best": s["best"]["objective"],
            "best_params": s["best"]["params"], "trials": len(s["trials"]), "epochs": len(epoch_s),
            "epoch_s": epoch_s, "overhead_s": overhead, "others": others,
            "stopped": sum(t["status"] == "stopped" for t in s["trials"])}


def run_keras(args, method):
    cmd = [str(Path(args.venv) / "bin" / "python"), str(REPO / "benches" / "keras_tuner_search.py"),
           "--data", str(DATA), "--method", method, "--trials", str(args.trials), "--epochs",
           str(args.epochs), "--max-epochs", str(args.max_epochs), "--factor", str(args.factor),
           "--seed", str(args.seed)]
    print(f"$ {' '.join(cmd)}", flush=True)
    t = {}

    def own():
        return t.get("cpu", 0.0)

    machine = Machine(own)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The child's CPU is known only once it has ended; sample it from /proc while it runs.
    while p.poll() is None:
        try:
            t["cpu"] = proc_cpu(p.pid)
        except OSError:
            pass
        time.sleep(0.2)
    out, err = p.communicate()
    others = machine.others()
    if p.returncode != 0:
        sys.stdout.write(err[-4000:])
        raise SystemExit(f"keras_tuner_search.py failed ({p.returncode})")
    r = json.loads(out.strip().splitlines()[-1])
    r["others"] = others
    return r


def med(v):
    return statistics.median(v) if v else float("nan")


def line(r):
    return (f"{r['tool'][:28]:<28} {r['wall_s']:>8.1f} {r['trials']:>7} {r['epochs']:>7} "
            f"{med(r['epoch_s']):>9.3f} {med(r['overhead_s']):>9.3f} {r['best']:>9.4f} {r['others']:>7.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=9)
    ap.add_argument("--factor", type=int, default=3)
    ap.add_argument("--hyperband-trials", type=int, default=0,
                    help="fitd hyperband max_trials (default: as many configurations as Keras Tuner's "
                         "Hyperband tries for --max-epochs and --factor)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--methods", default="random,hyperband")
    ap.add_argument("--venv", default=os.path.expanduser("~/.venv-bench"))
    ap.add_argument("--bin", help="a fitd binary to use instead of building the release one")
    args = ap.parse_args()
    if not args.hyperband_trials:
        args.hyperband_trials = keras_tuner_hyperband_configs(args.max_epochs, args.factor)
    have_keras = (Path(args.venv) / "bin" / "python").exists() and subprocess.run(
        [str(Path(args.venv) / "bin" / "python"), "-c", "import keras_tuner, tensorflow"],
        capture_output=True).returncode == 0

    binary = args.bin or build_fitd()
    work = tempfile.mkdtemp(prefix="fitd-search-bench-")
    srv = Fitd(binary, work)
    results = []
    try:
        ds = srv.upload_idx("mnist-10k", DATA / "train-images-idx3-ubyte.gz", DATA / "train-labels-idx1-ubyte.gz")
        model = srv.call("POST", "/v1/models", {
            "name": "search-mlp", "input_shape": [28, 28],
            "layers": [{"type": "flatten"}, {"type": "rescaling", "scale": 1 / 255},
                       {"type": "dense", "units": 64, "activation": "relu"},
                       {"type": "dropout", "rate": 0.2},
                       {"type": "dense", "units": 10, "activation": "softmax"}]})
        for method in args.methods.split(","):
            print(f"\n--- {method}", flush=True)
            f = run_fitd(srv, model["id"], ds["id"], method, args)
            print(json.dumps({k: v for k, v in f.items() if k not in ("epoch_s", "overhead_s")}), flush=True)
            k = run_keras(args, method) if have_keras else None
            if k:
                print(json.dumps({k2: v for k2, v in k.items() if k2 not in ("epoch_s", "overhead_s")}), flush=True)
            results.append((method, f, k))
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'':<28} {'wall s':>8} {'trials':>7} {'epochs':>7} {'s/epoch':>9} {'overhead':>9} "
          f"{'best':>9} {'others':>7}")
    for method, f, k in results:
        print(f"== {method}")
        print(line(f))
        if k:
            print(line(k))
            print(f"Keras Tuner / fitd wall time: {k['wall_s'] / f['wall_s']:.1f}x; "
                  f"best val_accuracy fitd {f['best']:.4f} vs Keras Tuner {k['best']:.4f} "
                  f"({'as good or better' if f['best'] >= k['best'] else 'worse'}); "
                  f"per-trial overhead (median) fitd {med(f['overhead_s']) * 1e3:.0f} ms vs "
                  f"Keras Tuner {med(k['overhead_s']) * 1e3:.0f} ms")
    print("(s/epoch and overhead are medians over trials; others = cores the rest of the machine "
          "used meanwhile)")
    if not have_keras:
        print(f"Keras Tuner skipped: no tensorflow and keras-tuner in {args.venv} "
              "(see ../shared/bench/README.md)")
        return 2
    return 0


def keras_tuner_hyperband_configs(max_epochs, factor):
    """How many configurations Keras Tuner's Hyperband (one iteration) samples."""
    import math

    brackets, e = 0, max_epochs
    while e >= 1:
        e /= factor
        brackets += 1
    end0 = math.ceil(1 + math.log(max_epochs, factor))
    return sum(math.ceil(end0 / (b + 1) * factor ** b) for b in range(brackets))


if __name__ == "__main__":
    sys.exit(main())
