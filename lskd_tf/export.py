"""Export a trained student for serving: a TF SavedModel plus a `.keras` file.

The SavedModel has two endpoints:

- ``serve`` (also the ``serving_default`` signature): float32 images already
  normalized the way the model was trained, shape ``(batch, *input_shape)``;
- ``serve_uint8``: raw uint8 images of the same spatial size; the dataset's
  normalization ``(x / 255 - mean) / std`` runs inside the graph, so a client
  needs to know nothing about preprocessing.

Both return logits. ``model.keras`` is written inside the export directory for
Keras-side reloading (`keras.models.load_model` cannot read a SavedModel).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

KERAS_FILE = "model.keras"


def export_student(
    model: keras.Model,
    export_dir: str | os.PathLike,
    *,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
) -> Path:
    """Write ``model`` as a SavedModel (two endpoints) and a `.keras` file.

    Args:
        model: a built functional Keras model (the student, not the `Distiller`).
        export_dir: the SavedModel directory to create.
        mean, std: per-channel normalization in [0, 1] pixel units, e.g.
            ``DatasetInfo.mean`` / ``DatasetInfo.std`` of `lskd_tf.data`.

    Returns:
        The export directory.

    Example:

    ```python
    lskd_tf.export_student(student, "exports/resnet20", mean=info.mean, std=info.std)
    served = tf.saved_model.load("exports/resnet20")
    logits = served.serve_uint8(tf.constant(images_uint8))
    ```
    """
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError("export_student needs a built functional model (the student)")
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise ValueError(f"mean and std need one positive std per channel, got {mean}, {std}")
    export_dir = Path(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    input_shape = tuple(model.inputs[0].shape[1:])
    mean_t = tf.constant(mean, tf.float32)
    std_t = tf.constant(std, tf.float32)

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        return model(images, training=False)

    def serve_uint8(images):
        normalized = (tf.cast(images, tf.float32) / 255.0 - mean_t) / std_t
        return model(normalized, training=False)

    archive.add_endpoint(
        "serve", serve, input_signature=[tf.TensorSpec((None, *input_shape), tf.float32)]
    )
    archive.add_endpoint(
        "serve_uint8", serve_uint8, input_signature=[tf.TensorSpec((None, *input_shape), tf.uint8)]
    )
    archive.write_out(str(export_dir), verbose=False)
    model.save(export_dir / KERAS_FILE)
    return export_dir
