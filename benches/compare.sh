#!/usr/bin/env bash
# Side-by-side speed comparison of fitd's engine with the PyTorch and numpy references (see
# benches/compare.py for the flags). Exits 2 with a note when the reference venv is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 benches/compare.py "$@"
