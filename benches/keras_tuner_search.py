"""Keras Tuner side of benches/search_compare.py: the same search as fitd's, in Keras 3 on TensorFlow.

Data: the MNIST 10k training IDX pair (8,000 digits), the last 20 % held out for validation exactly
as Keras's `validation_split=0.2` and fitd's `validation: {"split": 0.2}` do.
Model: Flatten(28x28) -> Rescaling(1/255) -> Dense(units, relu) -> Dropout(rate) -> Dense(10, softmax),
Adam(learning_rate), sparse categorical crossentropy, batch 32, shuffled every epoch.
Space: learning_rate log-uniform [1e-4, 1e-2], units int [32, 256] step 32, rate uniform [0, 0.5].
Objective: val_accuracy (max), a trial's score being its best epoch's value (Keras Tuner's default).

Methods: `random` (RandomSearch, --trials trials of --epochs epochs) or `hyperband`
(Hyperband, --max-epochs and --factor, one iteration; promoted trials resume from their
checkpoint, as Keras Tuner does).

Prints one JSON object: wall seconds (tuner built to search returned), best score, trials, epochs
trained, and per trial the time from its start to its first epoch (model build, compile, callbacks)
and its epoch times.

Usage: ~/.venv-bench/bin/python benches/keras_tuner_search.py --data DIR --method random|hyperband
       [--trials 24] [--epochs 5] [--max-epochs 9] [--factor 3] [--seed 7] [--threads 0]
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def read_idx(path):
    import numpy as np

    raw = gzip.open(path).read()
    magic = int.from_bytes(raw[0:4], "big")
    dims = magic & 0xFF
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--method", choices=["random", "hyperband"], required=True)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=9)
    ap.add_argument("--factor", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras
    import keras_tuner as kt
    from keras import layers

    x = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz")).astype(np.float32)
    y = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    keras.utils.set_random_seed(args.seed)

    def build(hp):
        model = keras.Sequential([
            keras.Input((28, 28)),
            layers.Flatten(),
            layers.Rescaling(1.0 / 255),
            layers.Dense(hp.Int("units", 32, 256, step=32), activation="relu"),
            layers.Dropout(hp.Float("rate", 0.0, 0.5)),
            layers.Dense(10, activation="softmax"),
        ])
        lr = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    trials = []

    # Keras Tuner deep-copies the callbacks of each trial: the clock holds the trial's index and
    # writes into `trials`, which a copy shares.
    class Clock(keras.callbacks.Callback):
        def __init__(self, index):
            super().__init__()
            self.index = index
            self.t = None

        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()
            record = trials[self.index]
            if record["first_epoch_at"] is None:
                record["first_epoch_at"] = self.t

        def on_epoch_end(self, epoch, logs=None):
            trials[self.index]["epoch_s"].append(time.perf_counter() - self.t)

    def timed(base):
        class Timed(base):
            def on_trial_begin(self, trial):
                trials.append({"id": trial.trial_id, "begin": time.perf_counter(),
                               "first_epoch_at": None, "epoch_s": []})
                super().on_trial_begin(trial)

            def run_trial(self, trial, *a, **kw):
                kw["callbacks"] = list(kw.get("callbacks") or []) + [Clock(len(trials) - 1)]
                return super().run_trial(trial, *a, **kw)

        return Timed

    work = tempfile.mkdtemp(prefix="kt-")
    try:
        t0 = time.perf_counter()
        common = dict(objective="val_accuracy", seed=args.seed, directory=work,
                      project_name="search", overwrite=True)
        if args.method == "random":
            tuner = timed(kt.RandomSearch)(build, max_trials=args.trials, **common)
            fit_epochs = args.epochs
        else:
            tuner = timed(kt.Hyperband)(build, max_epochs=args.max_epochs, factor=args.factor,
                                        hyperband_iterations=1, **common)
            fit_epochs = args.max_epochs  # Hyperband sets each trial's epochs itself.
        tuner.search(x, y, epochs=fit_epochs, batch_size=32, validation_split=0.2, shuffle=True,
                     verbose=0)
        wall = time.perf_counter() - t0
        best = tuner.oracle.get_best_trials(1)[0]
        out = {
            "tool": f"keras-tuner {kt.__version__}, keras {keras.__version__}, tf {tf.__version__}",
            "method": args.method,
            "wall_s": wall,
            "best": best.score,
            "best_params": {k: best.hyperparameters.values[k] for k in ("learning_rate", "units", "rate")},
            "trials": len(trials),
            "epochs": sum(len(t["epoch_s"]) for t in trials),
            "epoch_s": [e for t in trials for e in t["epoch_s"]],
            "overhead_s": [t["first_epoch_at"] - t["begin"] for t in trials if t["first_epoch_at"]],
        }
        print(json.dumps(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
