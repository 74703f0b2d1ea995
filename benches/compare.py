#!/usr/bin/env python3
"""Side-by-side speed comparison: fitd's engine bench against the PyTorch, numpy (and Keras) references.

Runs, in alternating order for several rounds, on the same data (../shared/bench/make_idx.py):
  * fitd:  target/release/deps/engine-* --only book_adam@32,book_adam@256 --threads 1,2
  * torch: shared/bench/torch_mlp.py --only book_adam@32,book_adam@256
  * numpy: shared/bench/numpy_mlp.py (1 and 2 BLAS threads, batch 32 and 256)
  * keras: shared/bench/keras_mlp.py --only book_adam@32,book_adam@256 (with --keras; needs
    tensorflow in the venv)
and prints median s/epoch per workload, the ratios fitd/torch and fitd/numpy (median of the
per-round ratios, so slow drift of the machine cancels), and the single-row predict latency ratio.

Without the reference venv it still runs fitd, says the references were skipped, and exits 2.
Usage: benches/compare.py [--rounds N] [--epochs E] [--keras] [--venv DIR] [--shared DIR] [--data DIR]
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = [("book_adam", 32), ("book_adam", 256)]


def busy_s():
    """Busy CPU seconds of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_wait, window=2.0, max_busy=0.15):
    start = time.perf_counter()
    while True:
        b0, t0 = busy_s(), time.perf_counter()
        time.sleep(window)
        busy = (busy_s() - b0) / (time.perf_counter() - t0)
        if not busy == busy or busy < max_busy:
            return busy
        if time.perf_counter() - start > max_wait:
            print(f"# machine still busy ({busy:.2f} cores) after {max_wait:.0f}s; measuring anyway",
                  flush=True)
            return busy
        print(f"# waiting for a quiet machine (others use {busy:.2f} cores)", flush=True)


def run(label, cmd, env=None):
    """Runs cmd, echoing its output; returns (stdout, cores the rest of the machine used meanwhile)."""
    print(f"\n$ {' '.join(map(str, cmd))}", flush=True)
    b0, c0, t0 = busy_s(), children_cpu(), time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    others = max(0.0, (busy_s() - b0) - (children_cpu() - c0)) / wall
    sys.stdout.write(p.stdout)
    if p.returncode != 0:
        sys.stdout.write(p.stderr)
        raise SystemExit(f"{label} failed with exit code {p.returncode}")
    print(f"# {label}: {wall:.1f}s wall, rest of the machine used {others:.2f} cores meanwhile", flush=True)
    return p.stdout, others


def build_fitd():
    env = dict(os.environ)
    out = subprocess.run(
        ["cargo", "bench", "--bench", "engine", "--no-run", "--message-format=json"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.stdout.write(out.stderr)
        raise SystemExit("building the fitd engine bench failed")
    exe = None
    for line in out.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and \
                msg.get("target", {}).get("name") == "engine":
            exe = msg["executable"]
    if exe is None:
        raise SystemExit("cargo did not report the engine bench executable")
    return exe


def parse_fitd(text):
    """{(name, bs, threads): epoch_s}, predict 1-row median us."""
    rows, predict = {}, None
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 6 and f[0] == "book_adam" and f[1].isdigit():
            rows[(f[0], int(f[1]), int(f[2]))] = float(f[5])
        m = re.match(r"\s*1 rows: median ([\d.]+) us", line)
        if m:
            predict = float(m.group(1))
    return rows, predict


def parse_reference(text):
    """Keras and PyTorch print the same table (shared/bench/common.py): {(name, bs): epoch_s}."""
    return parse_torch(text)[0]


def parse_torch(text):
    rows, predict = {}, None
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0] == "book_adam" and f[1].isdigit():
            rows[(f[0], int(f[1]))] = float(f[4])
        m = re.match(r"model\(x\) 1 row\s+([\d.]+)", line)
        if m:
            predict = float(m.group(1))
    return rows, predict


def parse_numpy(text):
    """{(bs, blas_threads): epoch_s}."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"np_book_adam (\d)thr\s+(\d+)\s+\d+\s+[\d.]+\s+([\d.]+)", line)
        if m:
            rows[(int(m.group(2)), int(m.group(1)))] = float(m.group(3))
    return rows


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", default="1,2", help="fitd TrainConfig::threads values to measure")
    ap.add_argument("--venv", default=os.path.expanduser("~/.venv-bench"))
    ap.add_argument("--shared", default=str(REPO.parent / "shared"))
    ap.add_argument("--data", default="/tmp/fitd-bench-data")
    ap.add_argument("--max-wait", type=float, default=300, help="seconds to wait for a quiet machine")
    ap.add_argument("--keras", action="store_true", help="also run the Keras reference (tensorflow in the venv)")
    args = ap.parse_args()

    py = Path(args.venv) / "bin" / "python"
    bench = Path(args.shared) / "bench"
    have_refs = py.exists() and (bench / "torch_mlp.py").exists()
    missing = None
    if not have_refs:
        missing = (f"reference venv {py} or scripts in {bench} not found: PyTorch and numpy skipped "
                   f"(set them up as {bench}/README.md says)")
        print(f"# NOTE: {missing}", flush=True)
    data = Path(args.data)
    if not (data / "synthetic-images-idx3-ubyte.gz").exists():
        if have_refs:
            run("make_idx", [py, bench / "make_idx.py", data])
        else:
            data = None
            print("# NOTE: no reference IDX data; fitd trains on its Rust port of the generator", flush=True)

    exe = build_fitd()
    env = dict(os.environ)
    if data is not None:
        env["FITD_BENCH_DATA"] = str(data)
    only = ",".join(f"{n}@{b}" for n, b in WORKLOADS)
    threads = [int(t) for t in args.threads.split(",")]
    fitd_cmd = [exe, "--epochs", str(args.epochs), "--only", only, "--threads", args.threads]
    torch_cmd = [py, bench / "torch_mlp.py", "--epochs", str(args.epochs), "--only", only]
    numpy_cmd = [py, bench / "numpy_mlp.py", "--epochs", str(min(args.epochs, 4))]
    keras_cmd = [py, bench / "keras_mlp.py", "--epochs", str(args.epochs), "--only", only]
    if args.keras and have_refs and subprocess.run([py, "-c", "import tensorflow"], capture_output=True).returncode:
        raise SystemExit(f"--keras: tensorflow is not importable by {py} (pip install tensorflow-cpu)")

    rounds = []
    for r in range(args.rounds):
        res = {"others": []}
        order = ["fitd", "torch", "numpy"] + (["keras"] if args.keras else [])
        if r % 2:
            order.reverse()
        for who in order:
            if who != "fitd" and not have_refs:
                continue
            wait_quiet(args.max_wait)
            if who == "fitd":
                out, o = run(f"round {r + 1} fitd", fitd_cmd, env)
                res["fitd"], res["fitd_pred"] = parse_fitd(out)
            elif who == "torch":
                out, o = run(f"round {r + 1} torch", torch_cmd)
                res["torch"], res["torch_pred"] = parse_torch(out)
            elif who == "keras":
                out, o = run(f"round {r + 1} keras", keras_cmd)
                res["keras"] = parse_reference(out)
            else:
                out, o = run(f"round {r + 1} numpy", numpy_cmd)
                res["numpy"] = parse_numpy(out)
            res["others"].append(o)
        rounds.append(res)

    print(f"\n== side by side: book model, median s/epoch over {args.rounds} rounds "
          f"(ratios: median of per-round ratios; < 1 means fitd is faster) ==")
    print(f"{'workload':<16}{'fitd th':>8}{'fitd s':>9}{'torch s':>9}{'numpy s':>9}{'keras s':>9}"
          f"{'fitd/torch':>12}{'fitd/numpy':>12}{'fitd/keras':>12}")
    for name, bs in WORKLOADS:
        t_s = [r.get("torch", {}).get((name, bs)) for r in rounds]
        # numpy: the faster of its 1- and 2-thread BLAS runs in that round.
        n_s = [min((v for (b, _), v in r.get("numpy", {}).items() if b == bs), default=None) for r in rounds]
        k_s = [r.get("keras", {}).get((name, bs)) for r in rounds]
        for th in threads:
            f_s = [r["fitd"].get((name, bs, th)) for r in rounds]
            rt = [f / t for f, t in zip(f_s, t_s) if f and t]
            rn = [f / n for f, n in zip(f_s, n_s) if f and n]
            rk = [f / k for f, k in zip(f_s, k_s) if f and k]
            print(f"{name + '@' + str(bs):<16}{th:>8}{med(f_s):>9.3f}{med(t_s):>9.3f}{med(n_s):>9.3f}"
                  f"{med(k_s):>9.3f}{med(rt):>12.3f}{med(rn):>12.3f}{med(rk):>12.3f}")
    fp = [r.get("fitd_pred") for r in rounds]
    tp = [r.get("torch_pred") for r in rounds]
    rp = [f / t for f, t in zip(fp, tp) if f and t]
    print(f"{'predict 1 row':<16}{'':>8}{med(fp):>8.1f}u{med(tp):>8.1f}u{'':>9}{med(rp):>12.3f}")
    others = [o for r in rounds for o in r["others"]]
    print(f"rest of the machine during the runs: median {med(others):.2f} cores, max {max(others):.2f} "
          f"(of {os.cpu_count()})")
    if missing:
        print(f"# NOTE: {missing}")
        raise SystemExit(2)


if __name__ == "__main__":
    main()
