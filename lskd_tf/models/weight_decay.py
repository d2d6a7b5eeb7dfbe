"""Weight decay as L2 regularizers: which parameters are decayed (the scope), in one place.

PyTorch's `SGD(params, weight_decay=wd)` adds `wd * w` to the gradient of every parameter
it is given, before momentum ("coupled" decay). In Keras the same update comes from a
`keras.regularizers.L2(wd / 2)` on the variable (d/dw [wd/2 * ||w||^2] = wd * w) whose
value the training loop adds to the loss (`sum(model.losses)`). Two scopes:

- ``"all"``: every trainable variable (conv/dense kernels, biases, BatchNorm gamma and
  beta, PReLU alphas, `LearnableBias` shifts, ...). This is what the papers' code does:
  RepDistiller `optim.SGD(trainable_list.parameters(), ..., weight_decay=wd)`,
  Chandrasegaran et al. `SGD(model.parameters(), ...)`.
- ``"kernels"``: only conv/dense kernels (variables named ``"kernel"``: `Conv2D`,
  `DepthwiseConv2D`, `Dense`, `BinaryConv2D`); no decay on BatchNorm or biases, the
  common modern choice (and ReActNet's, which decays its conv weights only).

The regularizer is set on the variable (what `Layer.losses` reads) *and* on the layer's
``<name>_regularizer`` attribute (what `get_config` writes), so a model saved to `.keras`
and reloaded carries the same decay.
"""

from __future__ import annotations

import keras

from lskd_tf import _compat
from lskd_tf.choices import WEIGHT_DECAY_SCOPES

# Keras names the variable "kernel" but the config key "depthwise_regularizer".
_DEPTHWISE_ATTRIBUTE = "depthwise_regularizer"
# keras.optimizers.AdamW excludes a variable when this pattern matches its name: every
# variable whose name is not "kernel", i.e. the complement of the "kernels" scope. On the
# TensorFlow backend AdamW sees the tf.Variable names: "model/layer/kernel:0", and under
# MirroredStrategy also "model/layer/kernel/replica_1:0".
_NOT_A_KERNEL = r"^(?!(?:.*/)?kernel(?:/replica_\d+)?(?::\d+)?$)"


def validate_weight_decay_scope(scope: str) -> str:
    """Return `scope` if it is one of `WEIGHT_DECAY_SCOPES`, else a one-line ValueError."""
    if scope not in WEIGHT_DECAY_SCOPES:
        raise ValueError(
            f"unknown weight_decay_scope {scope!r}; choose one of: {', '.join(WEIGHT_DECAY_SCOPES)}"
            " (all = every parameter, as the papers' PyTorch SGD; kernels = conv/dense kernels)"
        )
    return scope


def is_decayed(variable: keras.Variable, scope: str) -> bool:
    """Whether `scope` decays this (trainable) variable: all of them, or kernels only."""
    return scope == "all" or variable.name == "kernel"


def _own_trainable_variables(layer: keras.layers.Layer) -> list[keras.Variable]:
    """The trainable variables a layer creates itself (not those of its sublayers)."""
    inner = {
        id(v) for sub in _compat.flatten_layers(layer, include_self=False) for v in sub.weights
    }
    return [v for v in layer.trainable_weights if id(v) not in inner]


def _attribute(layer: keras.layers.Layer, variable: keras.Variable) -> str | None:
    """The layer attribute `get_config` serializes this variable's regularizer from."""
    if variable.name == "kernel" and hasattr(layer, _DEPTHWISE_ATTRIBUTE):
        return _DEPTHWISE_ATTRIBUTE
    name = f"{variable.name}_regularizer"
    return name if hasattr(layer, name) else None


def apply_weight_decay(model: keras.Model, weight_decay: float, scope: str = "kernels") -> int:
    """Attach L2(weight_decay / 2) to every trainable variable in `scope`, none elsewhere.

    Works on any built Keras model (it walks the layers, so no builder has to know about
    weight decay). Variables outside the scope get no regularizer; `weight_decay=0`
    removes them all. Variables of frozen (non-trainable) layers are left alone.

    Args:
        model: a built Keras model (e.g. from `lskd_tf.models.get`).
        weight_decay: PyTorch's `weight_decay`; the gradient gains `weight_decay * w`.
        scope: "kernels" or "all" (see the module docstring).

    Returns:
        The number of variables that now carry a regularizer.

    Raises:
        ValueError: unknown scope, negative weight_decay, unbuilt model.
    """
    validate_weight_decay_scope(scope)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if not model.built:
        raise ValueError("build the model (call it on an input) before applying weight decay")
    decayed = 0
    for layer in _compat.flatten_layers(model, include_self=False):
        for variable in _own_trainable_variables(layer):
            on = weight_decay > 0 and is_decayed(variable, scope)
            regularizer = keras.regularizers.L2(weight_decay / 2.0) if on else None
            variable.regularizer = regularizer
            attribute = _attribute(layer, variable)
            if attribute:
                setattr(layer, attribute, regularizer)
            decayed += on
    return decayed


def adamw_exclusion_pattern(scope: str) -> list[str]:
    """`var_names` for `keras.optimizers.AdamW.exclude_from_weight_decay` matching `scope`.

    AdamW decays every variable by default (= "all", the empty list); "kernels" excludes
    every variable whose name is not "kernel" (see `_NOT_A_KERNEL`).
    """
    return [] if validate_weight_decay_scope(scope) == "all" else [_NOT_A_KERNEL]
