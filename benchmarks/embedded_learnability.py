"""Is the embedded dataset learnable but not trivial, with superclass structure?

Trains a small Keras CNN on `lskd_tf.data.load("embedded")` (default size: 10,000
train / 2,000 test images) for a fixed wall-clock budget on CPU and prints test top-1,
top-1 on superclasses, and how confusions split within vs between superclasses:

* within share: fraction of errors whose prediction lies in the true superclass
  (chance: 4 of the 99 wrong classes, 4.0%);
* pair rates: mean confusion rate P(pred = j | true = i) over ordered class pairs
  sharing a superclass vs pairs that do not, and their ratio.

    python benchmarks/embedded_learnability.py --seconds 60
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lskd_tf.data  # noqa: E402


class TimeBudget(keras.callbacks.Callback):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.start = seconds, None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def small_cnn(num_classes: int) -> keras.Model:
    def block(x, filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        return keras.layers.ReLU()(x)

    inputs = keras.Input((32, 32, 3))
    x = block(inputs, 32)
    x = keras.layers.MaxPooling2D()(block(x, 32))
    x = keras.layers.MaxPooling2D()(block(block(x, 64), 64))
    x = keras.layers.GlobalAveragePooling2D()(block(x, 128))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def confusion_summary(labels, predictions, superclass):
    num_classes = len(superclass)
    confusion = np.zeros((num_classes, num_classes))
    np.add.at(confusion, (labels, predictions), 1)
    rates = confusion / confusion.sum(axis=1, keepdims=True)
    same = superclass[:, None] == superclass[None, :]
    off_diagonal = ~np.eye(num_classes, dtype=bool)
    errors = labels != predictions
    return {
        "top1": float(np.mean(~errors)),
        "superclass_top1": float(np.mean(superclass[labels] == superclass[predictions])),
        "within_share_of_errors": float(
            np.mean(superclass[labels[errors]] == superclass[predictions[errors]])
        ),
        "within_pair_rate": float(rates[same & off_diagonal].mean()),
        "between_pair_rate": float(rates[~same].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--data_seed", type=int, default=0)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    train, eval_ds, info = lskd_tf.data.load(
        "embedded", global_batch_size=args.batch_size, data_seed=args.data_seed
    )
    print(f"data: {info.num_examples}, generated in {time.perf_counter() - start:.1f} s")
    model = small_cnn(info.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(train, epochs=1000, callbacks=[TimeBudget(args.seconds)], verbose=0)
    epochs = len(history.history["loss"])
    print(
        f"trained {epochs} epochs in {time.perf_counter() - start:.0f} s "
        f"({model.count_params():,} parameters), train acc {history.history['accuracy'][-1]:.3f}"
    )
    labels = np.concatenate([y for _, y in eval_ds.as_numpy_iterator()])
    predictions = np.argmax(model.predict(eval_ds, verbose=0), axis=1)
    summary = confusion_summary(labels, predictions, info.superclass)
    print(
        f"test top-1 {summary['top1']:.3f} (chance 0.010), superclass top-1 "
        f"{summary['superclass_top1']:.3f} (chance 0.050)\n"
        f"errors within the true superclass {summary['within_share_of_errors']:.3f} "
        f"(chance 0.040)\n"
        f"pair confusion rate within {summary['within_pair_rate']:.4f} vs between "
        f"{summary['between_pair_rate']:.5f}: ratio "
        f"{summary['within_pair_rate'] / max(summary['between_pair_rate'], 1e-9):.1f}x"
    )


if __name__ == "__main__":
    main()
