"""Export a trained student for serving: a TF SavedModel plus a plain-Keras `.keras` file.

The SavedModel needs only TensorFlow. Its endpoints:

- ``serve`` (also the ``serving_default`` signature): float32 images already
  normalized the way the model was trained, shape ``(batch, *input_shape)``;
- ``serve_uint8``: raw uint8 images of the same spatial size; the dataset's
  normalization ``(x / 255 - mean) / std`` runs inside the graph;
- ``metadata``: no input; ``class_names`` (K strings, index = class id), ``mean``,
  ``std`` (per channel, [0, 1] pixel units) and ``input_shape``.

``serve`` and ``serve_uint8`` return named outputs: ``logits`` (batch, K),
``probabilities`` (their softmax) and ``top5`` (the indices of the min(5, K) most
probable classes, most probable first). The same facts are files beside the graph
(``assets.extra/labels.txt``, one class name per line, and
``assets.extra/preprocessing.json``) for clients that read files, not signatures.

``model.keras`` (for Keras-side reloading: `keras.models.load_model` cannot read a
SavedModel) holds only Keras's own layers wherever lskd_tf's have an exact Keras
equivalent (`plain_keras`), so `keras.models.load_model` reads it without
``import lskd_tf``. Only the binary (ReActNet) layers have none; such a model's
``model.keras`` needs ``import lskd_tf`` first (its SavedModel does not).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

KERAS_FILE = "model.keras"
LABELS_FILE = "assets.extra/labels.txt"
PREPROCESSING_FILE = "assets.extra/preprocessing.json"
TOP_K = 5


def check_export_dir(export_dir: str | os.PathLike) -> Path:
    """Raise a one-line ValueError unless ``export_dir`` can be created and written.

    Called before any work (loading, tracing): an existing file in its place, a parent
    that is a file, or a directory without write permission.
    """
    export_dir = Path(export_dir)
    if export_dir.exists() and not export_dir.is_dir():
        raise ValueError(f"export directory {export_dir} is a file; pass a directory path")
    existing = next((p for p in (export_dir, *export_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"export directory {export_dir}: {existing} is a file, not a directory")
    if existing is not None:
        try:  # a real write: os.access says yes to root on read-only file systems
            handle, probe = tempfile.mkstemp(dir=existing, prefix=".lskd_tf_write_test")
            os.close(handle)
            os.unlink(probe)
        except OSError as error:
            raise ValueError(
                f"export directory {export_dir}: cannot write in {existing} ({error.strerror}); "
                "pass a directory you may write to"
            ) from None
    return export_dir


# ----------------------------------------------------------------------------- plain Keras


def _channel_shuffle(layer, shape) -> keras.Layer | None:
    height, width, channels = shape
    groups = layer.groups
    return keras.Sequential(
        [
            keras.layers.Reshape((height, width, groups, channels // groups)),
            keras.layers.Permute((1, 2, 4, 3)),
            keras.layers.Reshape((height, width, channels)),
        ],
        name=layer.name,
    )


def _channel_slice(layer, shape) -> keras.Layer | None:
    height, width, channels = shape
    start, stop = layer.start, layer.stop
    return keras.Sequential(
        [  # channels to the front, crop them as a 1-D sequence, then back
            keras.layers.Permute((3, 1, 2)),
            keras.layers.Reshape((channels, height * width)),
            keras.layers.Cropping1D((start, channels - stop)),
            keras.layers.Reshape((stop - start, height, width)),
            keras.layers.Permute((2, 3, 1)),
        ],
        name=layer.name,
    )


def _plain_layer(layer: keras.Layer) -> keras.Layer:
    """Keras's own layer (or stack of layers) computing exactly what ``layer`` does."""
    from lskd_tf.models.layers import ChannelShuffle, ChannelSlice, FusedBatchNormalization

    if isinstance(layer, FusedBatchNormalization):
        # The same layer on Keras's unfused ops: same config, weights and inference output.
        return keras.layers.BatchNormalization.from_config(layer.get_config())
    moves = {ChannelShuffle: _channel_shuffle, ChannelSlice: _channel_slice}
    build = moves.get(type(layer))
    shape = tuple(layer.input.shape[1:]) if build else ()
    if build and len(shape) == 3 and None not in shape:
        return build(layer, shape)
    return layer.__class__.from_config(layer.get_config())


def plain_keras(model: keras.Model) -> keras.Model:
    """A copy of ``model`` built from Keras's own layers, with the same weights.

    lskd_tf's `FusedBatchNormalization` becomes `keras.layers.BatchNormalization` (same
    config and weights; same inference output up to float rounding), ShuffleNet's
    `ChannelShuffle` and `ChannelSlice` become Reshape/Permute/Cropping1D stacks (pure
    data movement: bit-identical). Other layers are cloned as they are. Why: the copy
    loads with `keras.models.load_model` in a process that never imported lskd_tf.
    """
    copy = keras.models.clone_model(model, clone_function=_plain_layer)
    copy.set_weights(model.get_weights())
    return copy


def custom_layers(model: keras.Model) -> list[str]:
    """Class names of the layers of ``model`` (nested models included) that are not
    Keras's own: what `keras.models.load_model` would need registered first."""
    names = set()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names.update(custom_layers(layer))
        elif not type(layer).__module__.startswith("keras"):
            names.add(type(layer).__name__)
    return sorted(names)


# ----------------------------------------------------------------------------- export


def export_student(
    model: keras.Model,
    export_dir: str | os.PathLike,
    *,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write ``model`` as a SavedModel (see the module docstring) and a `.keras` file.

    Args:
        model: a built functional Keras model (the student, not the `Distiller`).
        export_dir: the SavedModel directory to create.
        mean, std: per-channel normalization in [0, 1] pixel units, e.g.
            ``DatasetInfo.mean`` / ``DatasetInfo.std`` of `lskd_tf.data`.
        class_names: the K class names, index = class id (``DatasetInfo.class_names``);
            default ``"0"`` ... ``"K-1"``.

    Returns:
        The export directory.

    Example:

    ```python
    lskd_tf.export_student(student, "exports/resnet20", mean=info.mean, std=info.std,
                           class_names=info.class_names)
    served = tf.saved_model.load("exports/resnet20")
    probabilities = served.serve_uint8(tf.constant(images_uint8))["probabilities"]
    ```
    """
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError("export_student needs a built functional model (the student)")
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise ValueError(f"mean and std need one positive std per channel, got {mean}, {std}")
    num_classes = int(model.outputs[0].shape[-1])
    class_names = [str(i) for i in range(num_classes)] if class_names is None else class_names
    if len(class_names) != num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a model with {num_classes} outputs; pass "
            "one name per class (DatasetInfo.class_names)"
        )
    export_dir = check_export_dir(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    plain = plain_keras(model)
    input_shape = tuple(plain.inputs[0].shape[1:])
    mean_t = tf.constant(mean, tf.float32)
    std_t = tf.constant(std, tf.float32)
    top_k = min(TOP_K, num_classes)

    archive = keras.export.ExportArchive()
    archive.track(plain)

    def outputs(logits):
        logits = tf.cast(logits, tf.float32)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "top5": tf.math.top_k(logits, k=top_k).indices,
        }

    def serve(images):
        return outputs(plain(images, training=False))

    def serve_uint8(images):
        normalized = (tf.cast(images, tf.float32) / 255.0 - mean_t) / std_t
        return outputs(plain(normalized, training=False))

    def metadata():
        return {
            "class_names": tf.constant(list(class_names), tf.string),
            "mean": mean_t,
            "std": std_t,
            "input_shape": tf.constant(input_shape, tf.int32),
        }

    archive.add_endpoint(
        "serve", serve, input_signature=[tf.TensorSpec((None, *input_shape), tf.float32)]
    )
    archive.add_endpoint(
        "serve_uint8", serve_uint8, input_signature=[tf.TensorSpec((None, *input_shape), tf.uint8)]
    )
    archive.add_endpoint("metadata", metadata, input_signature=[])
    archive.write_out(str(export_dir), verbose=False)
    (export_dir / LABELS_FILE).parent.mkdir(exist_ok=True)
    (export_dir / LABELS_FILE).write_text("".join(f"{name}\n" for name in class_names))
    preprocessing = {
        "input_shape": list(input_shape), "mean": list(map(float, mean)),
        "std": list(map(float, std)), "serve": "(x_uint8 / 255 - mean) / std",
    }  # fmt: skip
    (export_dir / PREPROCESSING_FILE).write_text(json.dumps(preprocessing, indent=1) + "\n")
    plain.save(export_dir / KERAS_FILE)
    return export_dir
