#!/usr/bin/env bash
# Hyperparameter search side by side: fitd's random and hyperband searches against Keras Tuner's
# RandomSearch and Hyperband on the same data, model and space (see benches/search_compare.py for
# the flags). Exits 2 with a note when the reference venv (tensorflow-cpu, keras-tuner) is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 benches/search_compare.py "$@"
