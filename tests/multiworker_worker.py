"""One process of the multi-worker tests (launched by tests/test_multiworker.py).

Trains a tiny teacher, then distills a tiny student from it, with
`lskd_tf.train_teacher` / `lskd_tf.distill_student`, under
``multi_worker`` when ``TF_CONFIG`` is set and the default strategy otherwise,
and saves the final weights and histories to ``<out>/result_<name>.npz``. Instead of
``TF_CONFIG``, SLURM's ``srun`` variables (SLURM_PROCID, SLURM_STEP_NUM_TASKS, ...) can
give the cluster (`lskd_tf.distribute.in_slurm_step`); ``--port_base`` is then the first
port of `SlurmClusterResolver`.

    python tests/multiworker_worker.py OUT_DIR NAME [--epochs E] [--timeout S] [--keras_fit]
        [--port_base P]

With ``--keras_fit`` it only tries plain `keras.Model.fit` under the strategy and writes
``<out>/fit_<name>.json`` saying whether it worked (the canary of
`tests/test_multiworker.py::test_canary_keras_fit_still_fails_multi_worker`).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

GLOBAL_BATCH = 16
RNG = np.random.default_rng(7)
X_TRAIN = RNG.random((64, 8, 8, 3)).astype("float32")
Y_TRAIN = RNG.integers(0, 10, 64).astype("int32")
# 36 = 2 global batches + 4: the last eval batch gives each replica 2 rows.
X_EVAL = RNG.random((36, 8, 8, 3)).astype("float32")
Y_EVAL = RNG.integers(0, 10, 36).astype("int32")


def tiny_cnn(name, seed):
    """A conv net with synchronized BatchNorm and no dropout: exact across replicas."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(synchronized=True)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, name="classifier", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("name")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--keras_fit", action="store_true")
    parser.add_argument("--port_base", type=int, default=8888)
    args = parser.parse_args()

    import lskd_tf
    from lskd_tf import distribute

    multi = bool(os.environ.get("TF_CONFIG")) or distribute.in_slurm_step()
    strategy = distribute.get_strategy(
        "multi_worker" if multi else "default", collective_timeout_s=args.timeout,
        slurm_port_base=args.port_base,
    )  # fmt: skip
    if multi:  # which resolver made the cluster (the SLURM test checks it)
        print(f"cluster resolver: {type(strategy.cluster_resolver).__name__}", flush=True)
    if args.keras_fit:
        try_keras_fit(strategy, os.path.join(args.out, f"fit_{args.name}.json"))
        return
    config = lskd_tf.TrainConfig(
        epochs=args.epochs, batch_size=GLOBAL_BATCH, learning_rate=0.1, milestones=(1,),
        seed=5, verbose=0,
    )  # fmt: skip
    train, evaluation = (X_TRAIN, Y_TRAIN), (X_EVAL, Y_EVAL)
    with strategy.scope():
        teacher = tiny_cnn("teacher", seed=1)
        teacher_run = lskd_tf.train_teacher(
            teacher, train, evaluation, run_dir=os.path.join(args.out, "teacher"),
            config=config, label_smoothing=0.1,
        )  # fmt: skip
        student = tiny_cnn("student", seed=2)
        student_run = lskd_tf.distill_student(
            teacher, student, train, evaluation, run_dir=os.path.join(args.out, "student"),
            config=config,
            distill=lskd_tf.DistillSpec(temperature=4.0, ce_weight=0.5, kd_weight=0.5),
        )  # fmt: skip
    arrays = {f"teacher_{i}": w.numpy() for i, w in enumerate(teacher_run.model.weights)}
    arrays.update({f"student_{i}": w.numpy() for i, w in enumerate(student_run.model.weights)})
    histories = {"teacher": teacher_run.history, "student": student_run.history}
    arrays["histories"] = np.array(json.dumps(histories))
    arrays["chief"] = np.array(distribute.is_chief(strategy))
    np.savez(os.path.join(args.out, f"result_{args.name}.npz"), **arrays)
    print(f"worker {args.name} done", flush=True)


def try_keras_fit(strategy, result_path):
    """One epoch of plain `fit` under the strategy; record whether and how it failed."""
    import keras
    import tensorflow as tf

    with strategy.scope():
        model = tiny_cnn("plain", seed=1)
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    data = tf.data.Dataset.from_tensor_slices((X_TRAIN, Y_TRAIN)).batch(GLOBAL_BATCH)
    try:
        model.fit(data, epochs=1, verbose=0)
        outcome = {"works": True}
    except Exception as error:  # noqa: BLE001 - the canary records any failure
        outcome = {"works": False, "error": f"{type(error).__name__}: {error}"[:500]}
    with open(result_path, "w") as file:
        json.dump(outcome, file)


if __name__ == "__main__":
    from lskd_tf.processes import exit_with_parent

    exit_with_parent()  # the test process died (killed pytest): do not train on as an orphan
    main()
