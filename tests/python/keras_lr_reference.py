"""Reference values from real Keras 3 for fitd's learning-rate schedules and callbacks.

Writes tests/data/keras/lr_reference.json, which tests/engine.rs compares fitd against:

- "schedules": each schedule, given as a fitd job request writes it, built as the matching
  keras.optimizers.schedules class and evaluated at steps 0..STEPS (float32, as Keras computes).
- "data" / "weights": a small 3-class problem and the initial weights of a 4-8-3 MLP (relu,
  softmax), and a small regression problem with a linear model's weights.
- "runs": that MLP trained by Keras's `fit` (shuffle=False, no dropout, so the runs are
  deterministic) with each schedule and with ReduceLROnPlateau, LearningRateScheduler and
  TerminateOnNaN; per epoch the loss and the learning rate as Keras records it (the callbacks' own
  `learning_rate` log, or for schedules the value Keras's TensorBoard callback logs:
  schedule(optimizer.iterations) at the end of the epoch).

Run with the reference venv of /work/shared/bench/README.md (tensorflow-cpu, Keras 3):
    ~/.venv-bench/bin/python tests/python/keras_lr_reference.py
"""

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)

OUT = pathlib.Path(__file__).resolve().parents[1] / "data" / "keras" / "lr_reference.json"
STEPS = 60
EPOCHS = 8
BATCH = 16

SCHEDULES = {
    "exponential": {"type": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 10,
                    "decay_rate": 0.5},
    "exponential_staircase": {"type": "exponential_decay", "initial_learning_rate": 0.1,
                              "decay_steps": 10, "decay_rate": 0.5, "staircase": True},
    "inverse_time": {"type": "inverse_time_decay", "initial_learning_rate": 0.1, "decay_steps": 6,
                     "decay_rate": 0.8},
    "inverse_time_staircase": {"type": "inverse_time_decay", "initial_learning_rate": 0.1,
                               "decay_steps": 6, "decay_rate": 0.8, "staircase": True},
    "piecewise": {"type": "piecewise_constant_decay", "boundaries": [12, 30],
                  "values": [0.1, 0.05, 0.01]},
    "cosine": {"type": "cosine_decay", "initial_learning_rate": 0.1, "decay_steps": 40, "alpha": 0.1},
    "cosine_warmup": {"type": "cosine_decay", "initial_learning_rate": 0.0, "decay_steps": 30,
                      "alpha": 0.1, "warmup_target": 0.02, "warmup_steps": 10},
    "polynomial": {"type": "polynomial_decay", "initial_learning_rate": 0.1, "decay_steps": 20,
                   "end_learning_rate": 0.01, "power": 2.0},
    "polynomial_cycle": {"type": "polynomial_decay", "initial_learning_rate": 0.1, "decay_steps": 20,
                         "end_learning_rate": 0.01, "power": 0.5, "cycle": True},
}


def keras_schedule(spec):
    s = keras.optimizers.schedules
    kind = spec["type"]
    if kind == "exponential_decay":
        return s.ExponentialDecay(spec["initial_learning_rate"], spec["decay_steps"], spec["decay_rate"],
                                  staircase=spec.get("staircase", False))
    if kind == "inverse_time_decay":
        return s.InverseTimeDecay(spec["initial_learning_rate"], spec["decay_steps"], spec["decay_rate"],
                                  staircase=spec.get("staircase", False))
    if kind == "piecewise_constant_decay":
        return s.PiecewiseConstantDecay(spec["boundaries"], spec["values"])
    if kind == "cosine_decay":
        return s.CosineDecay(float(spec["initial_learning_rate"]), spec["decay_steps"],
                             alpha=spec.get("alpha", 0.0), warmup_target=spec.get("warmup_target"),
                             warmup_steps=spec.get("warmup_steps", 0))
    if kind == "polynomial_decay":
        return s.PolynomialDecay(spec["initial_learning_rate"], spec["decay_steps"],
                                 end_learning_rate=spec.get("end_learning_rate", 0.0001),
                                 power=spec.get("power", 1.0), cycle=spec.get("cycle", False))
    raise ValueError(kind)


def keras_optimizer(spec):
    lr = spec.get("learning_rate", 0.01 if spec["type"] == "sgd" else 0.001)
    if isinstance(lr, dict):
        lr = keras_schedule(lr)
    if spec["type"] == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=spec.get("momentum", 0.0))
    if spec["type"] == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    raise ValueError(spec["type"])


def keras_callback(spec):
    kind = spec["type"]
    if kind == "reduce_lr_on_plateau":
        return keras.callbacks.ReduceLROnPlateau(
            monitor=spec.get("monitor", "val_loss"), factor=spec.get("factor", 0.1),
            patience=spec.get("patience", 10), min_delta=spec.get("min_delta", 1e-4),
            cooldown=spec.get("cooldown", 0), min_lr=spec.get("min_lr", 0.0), mode=spec.get("mode", "auto"))
    if kind == "learning_rate_scheduler":
        table = {row["epoch"]: row["learning_rate"] for row in spec["schedule"]}
        return keras.callbacks.LearningRateScheduler(lambda epoch, lr: table.get(epoch, lr))
    if kind == "terminate_on_nan":
        return keras.callbacks.TerminateOnNaN()
    raise ValueError(kind)


class LogLearningRate(keras.callbacks.Callback):
    """Logs the optimizer's learning rate at the end of each epoch, as Keras's TensorBoard does."""

    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = opt._learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr(opt.iterations)))
        else:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(opt.learning_rate))


def blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0.0, 0.7, size=(n, 4)).astype(np.float32)
    x[np.arange(n), y] += 1.5
    return x, y.astype(np.int64)


def glorot(rng, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)


def run(model_fn, weights, x, y, loss, optimizer, callbacks, epochs):
    keras.utils.set_random_seed(0)
    model = model_fn()
    model.compile(optimizer=keras_optimizer(optimizer), loss=loss)
    model.set_weights([np.array(w, dtype=np.float32) for w in weights])
    # The logger goes first, so it reads the rate before ReduceLROnPlateau changes it (that is
    # also what ReduceLROnPlateau itself logs).
    cbs = [LogLearningRate()] + [keras_callback(c) for c in callbacks]
    h = model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=cbs)
    # JSON has no NaN or infinity: a non-finite loss (TerminateOnNaN's last epoch) is written as null.
    return {"loss": [float(v) if np.isfinite(v) else None for v in h.history["loss"]],
            "learning_rate": [float(v) for v in h.history["learning_rate"]]}


def main():
    schedules = []
    for name, spec in SCHEDULES.items():
        s = keras_schedule(spec)
        values = [float(keras.ops.convert_to_numpy(s(step))) for step in range(STEPS + 1)]
        schedules.append({"name": name, "schedule": spec, "learning_rates": values})

    x, y = blobs(96, 1)
    rng = np.random.default_rng(2)
    mlp_weights = [glorot(rng, 4, 8), np.zeros(8, np.float32), glorot(rng, 8, 3), np.zeros(3, np.float32)]

    def mlp():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                 keras.layers.Dense(3, activation="softmax")])

    xr = rng.normal(0.0, 3.0, size=(64, 4)).astype(np.float32)
    yr = (xr @ np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32) + 100.0).astype(np.float32)
    linear_weights = [glorot(rng, 4, 1), np.zeros(1, np.float32)]

    def linear():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])

    runs = []
    for name in ["exponential", "exponential_staircase", "inverse_time_staircase", "piecewise",
                 "cosine", "polynomial", "polynomial_cycle"]:
        opt = {"type": "sgd", "learning_rate": SCHEDULES[name]}
        runs.append({"name": name, "problem": "mlp", "optimizer": opt, "callbacks": [], "epochs": EPOCHS})
    runs.append({"name": "piecewise_momentum", "problem": "mlp",
                 "optimizer": {"type": "sgd", "momentum": 0.9, "learning_rate": SCHEDULES["piecewise"]},
                 "callbacks": [], "epochs": EPOCHS})
    runs.append({"name": "adam_cosine_warmup", "problem": "mlp",
                 "optimizer": {"type": "adam", "learning_rate": SCHEDULES["cosine_warmup"]},
                 "callbacks": [], "epochs": EPOCHS})
    runs.append({"name": "reduce_lr_on_plateau", "problem": "mlp",
                 "optimizer": {"type": "sgd", "learning_rate": 0.1},
                 "callbacks": [{"type": "reduce_lr_on_plateau", "monitor": "loss", "factor": 0.5,
                                "patience": 1, "min_delta": 10.0, "cooldown": 2, "min_lr": 0.02}],
                 "epochs": 10})
    runs.append({"name": "reduce_lr_on_plateau_natural", "problem": "mlp",
                 "optimizer": {"type": "sgd", "learning_rate": 0.5},
                 "callbacks": [{"type": "reduce_lr_on_plateau", "monitor": "loss", "factor": 0.3,
                                "patience": 1, "min_delta": 0.02}],
                 "epochs": 12})
    runs.append({"name": "learning_rate_scheduler", "problem": "mlp",
                 "optimizer": {"type": "sgd", "learning_rate": 0.1},
                 "callbacks": [{"type": "learning_rate_scheduler",
                                "schedule": [{"epoch": 0, "learning_rate": 0.2},
                                             {"epoch": 3, "learning_rate": 0.05},
                                             {"epoch": 6, "learning_rate": 0.01}]}],
                 "epochs": EPOCHS})
    runs.append({"name": "scheduler_and_plateau", "problem": "mlp",
                 "optimizer": {"type": "sgd", "learning_rate": 0.1},
                 "callbacks": [{"type": "learning_rate_scheduler",
                                "schedule": [{"epoch": 1, "learning_rate": 0.08},
                                             {"epoch": 5, "learning_rate": 0.3}]},
                               {"type": "reduce_lr_on_plateau", "monitor": "loss", "factor": 0.5,
                                "patience": 1, "min_delta": 10.0, "cooldown": 2, "min_lr": 0.02}],
                 "epochs": EPOCHS})
    runs.append({"name": "terminate_on_nan", "problem": "linear",
                 "optimizer": {"type": "sgd", "learning_rate": 0.5},
                 "callbacks": [{"type": "terminate_on_nan"}], "epochs": 30})

    for r in runs:
        if r["problem"] == "mlp":
            out = run(mlp, mlp_weights, x, y, "sparse_categorical_crossentropy", r["optimizer"],
                      r["callbacks"], r["epochs"])
        else:
            out = run(linear, linear_weights, xr, yr, "mean_squared_error", r["optimizer"], r["callbacks"],
                      r["epochs"])
        r.update(out)
        print(f"{r['name']}: {len(r['loss'])} epochs, loss {r['loss']}, lr {r['learning_rate']}")

    doc = {
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "batch_size": BATCH,
        "schedules": schedules,
        "data": {
            "mlp": {"x": x.tolist(), "y": y.tolist()},
            "linear": {"x": xr.tolist(), "y": yr[:, 0].tolist()},
        },
        "weights": {
            "mlp": {"dense.kernel": mlp_weights[0].tolist(), "dense.bias": mlp_weights[1].tolist(),
                    "dense_1.kernel": mlp_weights[2].tolist(), "dense_1.bias": mlp_weights[3].tolist()},
            "linear": {"dense.kernel": linear_weights[0].tolist(), "dense.bias": linear_weights[1].tolist()},
        },
        "runs": runs,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
