#!/usr/bin/env bash
# Serving benchmark: trains the book model (Flatten 28x28 -> Dense 100 relu -> Dropout 0.3 -> Dense 10
# softmax) on the bundled MNIST 10k training images through the jobs API, then measures against the
# release binary:
#   1. single-instance predict latency (p50/p99) with 1 connection,
#   2. requests/s of single-instance predicts with 32 connections,
#   3. server time (Server-Timing) and wall time of a 1,000-row batch predict,
#   4. KServe v2 infer of one instance with 32 connections.
# Needs curl, wrk (apt-get install wrk) and python3 (standard library only).
#
# Usage: benches/serving.sh [DURATION_SECONDS]   (env: PORT, default 18931; INLINE=0 forces every
# predict onto the blocking pool, to compare with the default inline path for small batches)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
PORT="${PORT:-18931}"
WORK="$(mktemp -d)"
trap 'kill "$SERVER_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
SERVER_PID=

echo "--- building the release binary"
BIN=$(cargo build --release --message-format=json 2>/dev/null \
  | python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "fitd" and m.get("executable"):
        print(m["executable"])' | tail -n1)
# Run a private copy, so a rebuild during the measurement cannot swap the binary.
cp "$BIN" "$WORK/fitd"

echo "--- starting fitd on 127.0.0.1:$PORT"
FITD_PREDICT_INLINE_VALUES="${INLINE:-65536}" FITD_LOG_FORMAT=text RUST_LOG=warn \
  "$WORK/fitd" serve --addr "127.0.0.1:$PORT" --db "$WORK/fitd.db" --workers 1 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -fs "$BASE/readyz" >/dev/null && break; sleep 0.1; done

echo "--- training the book model (2 epochs on MNIST 10k)"
DATA=tests/data/mnist-10k
DS=$(curl -fs -F name=mnist10k -F images=@$DATA/train-images-idx3-ubyte.gz -F labels=@$DATA/train-labels-idx1-ubyte.gz \
  "$BASE/v1/datasets" | python3 -c 'import sys, json; print(json.load(sys.stdin)["id"])')
MODEL=$(curl -fs -H 'content-type: application/json' "$BASE/v1/models" -d '{"name": "fashion-mlp",
  "input_shape": [28, 28], "layers": [{"type": "flatten"}, {"type": "dense", "units": 100, "activation": "relu"},
  {"type": "dropout", "rate": 0.3}, {"type": "dense", "units": 10, "activation": "softmax"}]}' \
  | python3 -c 'import sys, json; print(json.load(sys.stdin)["id"])')
JOB=$(curl -fs -H 'content-type: application/json' "$BASE/v1/jobs" -d "{\"model_id\": \"$MODEL\",
  \"dataset_id\": \"$DS\", \"validation\": {\"split\": 0.2}, \"compile\": {\"optimizer\": \"adam\",
  \"loss\": \"sparse_categorical_crossentropy\", \"metrics\": [\"accuracy\"]},
  \"fit\": {\"epochs\": 2, \"batch_size\": 32, \"seed\": 1}}" \
  | python3 -c 'import sys, json; print(json.load(sys.stdin)["id"])')
SAVED=
for _ in $(seq 600); do
  read -r STATUS SAVED < <(curl -fs "$BASE/v1/jobs/$JOB" \
    | python3 -c 'import sys, json; j = json.load(sys.stdin); print(j["status"], j.get("saved_model_id") or "-")')
  case "$STATUS" in succeeded) break ;; failed|cancelled) echo "job $STATUS"; exit 1 ;; esac
  sleep 0.5
done
echo "saved model $SAVED"

echo "--- request bodies from the MNIST 10k test images"
python3 - "$DATA/t10k-images-idx3-ubyte.gz" "$WORK" <<'PY'
import gzip, json, sys
raw = gzip.open(sys.argv[1]).read()[16:]
img = lambda i: [list(raw[i * 784 + r * 28: i * 784 + r * 28 + 28]) for r in range(28)]
out = sys.argv[2]
json.dump({"instances": [img(0)]}, open(f"{out}/one.json", "w"))
json.dump({"instances": [img(i) for i in range(1000)]}, open(f"{out}/batch.json", "w"))
flat = [v for row in img(0) for v in row]
json.dump({"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "FP32", "data": flat}]},
          open(f"{out}/infer.json", "w"))
PY
cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY"), "r")
wrk.body = f:read("*a")
f:close()
LUA
curl -fs -H 'content-type: application/json' --data-binary @"$WORK/one.json" "$BASE/v1/saved-models/$SAVED/predict" \
  | head -c 300; echo

echo "--- 1. single-instance predict latency, 1 connection, ${DURATION}s"
BODY="$WORK/one.json" wrk -t1 -c1 -d"${DURATION}s" --latency -s "$WORK/post.lua" "$BASE/v1/saved-models/$SAVED/predict" \
  | grep -E "Latency|50%|75%|90%|99%|Requests/sec|Non-2xx"

echo "--- 2. single-instance predict throughput, 32 connections, ${DURATION}s"
BODY="$WORK/one.json" wrk -t2 -c32 -d"${DURATION}s" --latency -s "$WORK/post.lua" "$BASE/v1/saved-models/$SAVED/predict" \
  | grep -E "Latency|50%|99%|Requests/sec|Non-2xx"

echo "--- 3. 1,000-row batch predict (20 requests; Server-Timing in ms, wall in s)"
for _ in $(seq 20); do
  curl -s -o /dev/null -D - -w 'wall=%{time_total}\n' -H 'content-type: application/json' \
    --data-binary @"$WORK/batch.json" "$BASE/v1/saved-models/$SAVED/predict" | grep -iE "server-timing|wall"
done | python3 -c '
import re, statistics, sys
rows = {}
for line in sys.stdin:
    for name, dur in re.findall(r"(\w+);dur=([0-9.]+)", line):
        rows.setdefault(name, []).append(float(dur))
    if line.startswith("wall="):
        rows.setdefault("wall_ms", []).append(float(line[5:]) * 1e3)
for name, v in rows.items():
    print(f"{name:>8}: median {statistics.median(v):7.3f} ms   min {min(v):7.3f} ms")'

echo "--- 4. KServe v2 infer, one instance, 32 connections, ${DURATION}s"
BODY="$WORK/infer.json" wrk -t2 -c32 -d"${DURATION}s" --latency -s "$WORK/post.lua" "$BASE/v2/models/$SAVED/infer" \
  | grep -E "Latency|50%|99%|Requests/sec|Non-2xx"
