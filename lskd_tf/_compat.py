"""Every use of private Keras / TensorFlow API in lskd_tf, each with its public fallback.

Nothing else in lskd_tf imports ``keras.src`` or ``tensorflow.python`` or reads a
private attribute of a Keras or TensorFlow object. Each function says which upstream
behaviour it works around and what happens when the private API changes: the
fallback keeps lskd_tf correct (possibly slower), and `tests/test_compat.py` checks
that the private path is still the one taken with the pinned versions.
"""

from __future__ import annotations

import random

import keras
import numpy as np


def set_global_seeds(seed: int) -> bool:
    """`keras.utils.set_random_seed(seed)` without flushing TensorFlow's kernel cache.

    Works around: `tf.random.set_seed` (called by `keras.utils.set_random_seed`)
    also calls ``TFE_ContextClearCaches``, which makes every traced function
    re-instantiate at its next call: ~0.8 s per epoch for a ResNet-20 train step on a
    2-core CPU (`benchmarks/fit_path.py`, RESULTS.md). The flush only matters to
    *stateful* random kernels inside a step; Keras 3 layers draw from `SeedGenerator`
    states (stateless ops), which `lskd_tf.seeding.reseed` resets, and no lskd_tf
    model or `Distiller` step has a stateful random op. So the seeds are set exactly
    as `tf.random.set_seed` and Keras set them, minus the flush.

    Fallback: `keras.utils.set_random_seed` (same seeds, with the flush).
    Returns whether the private path was taken.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils
        from tensorflow.python.eager import context as tf_context

        context = tf_context.context()
        usable = hasattr(context, "_seed")  # _rng appears with the first seed; set below
    except ImportError:
        usable = False
    if not usable:
        keras.utils.set_random_seed(seed)
        return False
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    context._seed = seed  # what tf.random.set_seed does, minus TFE_ContextClearCaches
    context._rng = random.Random(seed)
    return True


def flatten_layers(layer, *, include_self: bool = True, recursive: bool = True) -> list:
    """Every layer inside ``layer`` (itself first when ``include_self``), in a fixed order.

    Works around: Keras has no public recursive walk over a model's layers (nested
    functional models, layers owned by other layers); ``Layer._flatten_layers`` is it.
    Fallback: the public `keras.Model.layers`, recursively (or one level).
    """
    if hasattr(layer, "_flatten_layers"):
        return list(layer._flatten_layers(include_self=include_self, recursive=recursive))
    found, stack = [], list(getattr(layer, "layers", []))  # pragma: no cover
    while stack:  # pragma: no cover - only with a Keras without _flatten_layers
        current = stack.pop(0)
        found.append(current)
        if recursive:
            stack[:0] = list(getattr(current, "layers", []))
    return ([layer] if include_self else []) + found  # pragma: no cover


def seed_generators(model: keras.Model) -> list:
    """Every `keras.random.SeedGenerator` owned by a layer of ``model``, in a fixed order.

    Works around: Keras has no public way to list a model's seed generators, and
    their states (e.g. Dropout's) are not saved with the weights, so a resumed run
    must reset them (`lskd_tf.seeding.reseed`). Uses the private
    ``Layer._flatten_layers`` and ``Layer._seed_generators``.

    Fallback: the public `keras.Model.layers`, recursively, and any attribute that
    is a `SeedGenerator` (the same generators for every lskd_tf model).
    """
    layers = flatten_layers(model)
    found = []
    for layer in layers:
        generators = getattr(layer, "_seed_generators", None)
        if generators is None:  # pragma: no cover - see the fallback above
            generators = [
                value
                for value in vars(layer).values()
                if isinstance(value, keras.random.SeedGenerator)
            ]
        found.extend(generators)
    return found


def symbolic_build(model: keras.Model, element_spec) -> None:
    """Build a model, its compiled loss/metrics and optimizer from a batch's spec.

    Works around: `keras.Model.fit` fails under `MultiWorkerMirroredStrategy`
    (tensorflow issue 72388, keras issue 20585): its ``_maybe_symbolic_build``
    averages a *distributed* batch to get shapes. The custom multi-worker loop
    (`lskd_tf.distribute`) calls Keras's ``Trainer._symbolic_build`` directly with
    the undistributed dataset's element spec, which is all it needs. The canary
    `tests/test_multiworker.py::test_canary_keras_fit_still_fails_multi_worker`
    fails once `fit` works there; then the custom loop and this function can go.

    Fallback: nothing to build when the model and its optimizer are built already
    (every lskd_tf model and `Distiller` is); otherwise a one-line error.
    """
    if hasattr(model, "_symbolic_build"):
        model._symbolic_build(data_batch=element_spec)
        return
    if not (model.built and model.optimizer is not None and model.optimizer.built):
        raise RuntimeError(  # pragma: no cover - only with a Keras without _symbolic_build
            "this Keras has no Trainer._symbolic_build; build the model and its optimizer "
            "before multi-worker training (optimizer.build(model.trainable_variables))"
        )


def num_workers(strategy) -> int:
    """How many worker processes a `MultiWorkerMirroredStrategy` spans.

    Works around: no public attribute says it; ``strategy.extended._num_workers`` does.
    Fallback: the number of ``worker`` (and ``chief``) tasks of the cluster resolver.
    """
    count = getattr(getattr(strategy, "extended", None), "_num_workers", None)
    if count is not None:
        return int(count)
    resolver = getattr(strategy, "cluster_resolver", None)  # pragma: no cover
    if resolver is None:  # pragma: no cover
        return 1
    cluster = resolver.cluster_spec().as_dict()  # pragma: no cover
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))  # pragma: no cover


def set_attention_dropout(block: keras.layers.Layer, rate: float) -> bool:
    """Drop ``rate`` of the attention probabilities in every attention layer of a *built*
    ``block`` (e.g. a keras_hub ``TransformerEncoder``), leaving its other dropouts alone.

    Works around: keras_hub's Transformer blocks pass their one ``dropout`` to their
    `keras.layers.MultiHeadAttention` layers too, so the attention probabilities are
    dropped at the residual rate; fairseq has a separate ``--attention-dropout``
    (default 0). A built attention layer applies its probability dropout through its
    `keras.layers.Dropout` sublayer, and only when its private ``_dropout`` is > 0 (it
    then also skips the fused ``ops.dot_product_attention`` path): both are set.

    Fallback: without ``_dropout``, only the Dropout sublayers' public ``rate`` is set
    (a Dropout of rate 0 returns its input unchanged), which is the same computation.
    Returns whether the private path was taken.
    """
    attentions = [
        layer
        for layer in flatten_layers(block, include_self=False)
        if isinstance(layer, keras.layers.MultiHeadAttention)
    ]
    if not attentions:
        raise ValueError(f"{block.name} has no attention layer: build it first")
    private = all(hasattr(attention, "_dropout") for attention in attentions)
    for attention in attentions:
        for layer in flatten_layers(attention, include_self=False):
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = float(rate)
        if private:
            attention._dropout = float(rate)
    return private
