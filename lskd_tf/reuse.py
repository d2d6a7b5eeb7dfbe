"""One compiled train model, and its traced functions, reused by the runs of a process.

Tracing a Keras train function costs seconds per run (a translation student's: ~4 s
of its ~12 s outside its epochs on a 2-core CPU, benchmarks/RESULTS.md, "Per-run fixed
cost"), and `keras.Model.compile` throws the traced function away. The runs of a study
differ in a few numbers (a teacher's label smoothing, a student's temperature and its
teacher's weights) and share everything else. `CompiledModels` keeps the compiled
training model of the first run of each kind, and a later run of the same kind trains
*that* model, with its state put back to what the new run would have started from:

* every weight (teacher and student, BatchNorm statistics included) is copied from the
  models the new run built and loaded, so initial weights are the new run's own;
* every optimizer variable from the new run's freshly built optimizer (zero slots,
  ``iterations`` 0, a loss scale's initial value);
* every loss setting that differs (`lskd_tf.losses.MaskedMeanLoss.held_settings`)
  into the variables the traced graph reads them from (every training run reads them
  from variables, reused or not: `hold_loss_settings`);
* metrics are reset by `fit`, the step's RNGs by `lskd_tf.seeding.reseed`.

A run is the same computation either way, so the same bits
(`tests/test_reuse.py` compares a reused run with a fresh process's weights and
history). Two runs share a compiled model only when

1. their *key* is equal: the caller's description of everything that shapes the graph
   (`lskd_tf.experiment.runner` uses the run spec with the held settings and the
   teacher's identity neutralized, the dtype policy and the strategy);
2. their weights have the same shapes and dtypes in the same order, and their layers
   the same classes;
3. their losses have the same classes and configs apart from the held settings
   (`MaskedMeanLoss.settings_free_config`; a loss without held settings must match
   whole), and a Distiller the same objective apart from them.

Anything else is a miss: the new run compiles and traces as it always did, and becomes
the entry of its key. Multi-worker runs never share (their step is not Keras's; see
`lskd_tf.distribute`).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import keras

from lskd_tf.losses import MaskedMeanLoss


@dataclasses.dataclass
class _Entry:
    train_model: keras.Model
    saved_model: keras.Model


def loss_holders(train_model: keras.Model) -> list[tuple[str, keras.losses.Loss]]:
    """``(attribute, loss)`` of every loss object a compiled train model computes with,
    in a fixed order: ``loss`` of a model compiled with one, ``ce_loss_fn`` and
    ``kd_loss_fn`` of a `Distiller`."""
    return sorted(
        (name, value)
        for name, value in vars(train_model).items()
        if isinstance(value, keras.losses.Loss) and not name.startswith("_")  # Keras's own
    )


def _loss_config(loss: keras.losses.Loss) -> tuple[str, Any]:
    if isinstance(loss, MaskedMeanLoss):
        return type(loss).__qualname__, loss.settings_free_config()
    config = dict(loss.get_config())
    config.pop("name", None)
    return type(loss).__qualname__, config


def _objective(train_model: keras.Model) -> Any:
    """What a `Distiller`'s step reads besides its losses (its weights are Python
    constants of the graph); None for other models."""
    distill = getattr(train_model, "distill", None)
    if distill is None:
        return None
    settings = dataclasses.asdict(distill)
    for name in ("temperature", "label_smoothing"):  # held by its losses
        settings.pop(name)
    return settings


def _optimizer(train_model: keras.Model) -> tuple[str, dict]:
    optimizer = train_model.optimizer
    config = keras.saving.serialize_keras_object(optimizer)["config"]
    config.pop("name", None)
    return type(optimizer).__qualname__, config


def _structure(train_model: keras.Model) -> tuple:
    weights = tuple((tuple(w.shape), str(w.dtype)) for w in train_model.weights)
    layers = tuple(type(layer).__qualname__ for layer in _layers(train_model))
    losses = tuple((name, _loss_config(loss)) for name, loss in loss_holders(train_model))
    return weights, layers, losses, _objective(train_model), _optimizer(train_model)


def _layers(model: keras.Model) -> list:
    from lskd_tf import _compat

    return _compat.flatten_layers(model)


class CompiledModels:
    """Compiled training models by key, at most ``capacity`` of them (least recent out).

    Example (what `lskd_tf.training.run_training` does with ``reuse=(cache, key)``):

    ```python
    cache = CompiledModels()
    model.compile(optimizer=optimizer, loss=loss)     # cheap: nothing is traced
    model.optimizer.build(model.trainable_variables)
    train_model, saved_model = cache.adopt(key, model, model)
    train_model.fit(...)                              # traced on the first run only
    ```
    """

    def __init__(self, capacity: int = 4):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def adopt(
        self, key: str, train_model: keras.Model, saved_model: keras.Model
    ) -> tuple[keras.Model, keras.Model]:
        """The ``(train_model, saved_model)`` a run should train.

        ``train_model`` is the run's freshly built, compiled model with a built optimizer
        (nothing traced yet); ``saved_model`` what its checkpoints hold (itself, or a
        `Distiller`'s student). On a hit they are the entry's models, holding the state
        of the given ones; on a miss the given ones, with their losses' settings held
        in variables (`hold_loss_settings`), stored as the entry of ``key``.
        """
        entry = self._entries.get(key)
        if entry is not None and _structure(entry.train_model) == _structure(train_model):
            _take_state(entry.train_model, train_model)
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.train_model, entry.saved_model
        hold_loss_settings(train_model)  # run_training did; a direct caller may not have
        self._entries[key] = _Entry(train_model, saved_model)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        self.misses += 1
        return train_model, saved_model


def hold_loss_settings(train_model: keras.Model) -> None:
    """Hold the settings of every loss of a compiled train model in variables
    (`lskd_tf.losses.MaskedMeanLoss.hold_settings_in_variables`), before its first trace.

    `lskd_tf.training.run_training` does it for every run, reused or not: TensorFlow's
    graph optimizer (Grappler) folds settings that are constants into a step's gradient,
    which then differs from a step reading them from variables in the last bits (the
    loss's value does not). Holding them always makes a run the same bits whether it
    compiled its own model, trained a reused one, or came through the Python API.
    """
    for _, loss in loss_holders(train_model):
        if isinstance(loss, MaskedMeanLoss):
            loss.hold_settings_in_variables()


def _take_state(target: keras.Model, source: keras.Model) -> None:
    """Give ``target`` (a compiled entry) the starting state of ``source`` (same structure)."""
    for mine, theirs in zip(target.weights, source.weights, strict=True):
        mine.assign(theirs)
    ours, new = target.optimizer.variables, source.optimizer.variables
    if len(ours) != len(new):  # same weights and optimizer class: cannot differ
        raise ValueError(f"optimizer variables differ: {len(ours)} != {len(new)}")
    for mine, theirs in zip(ours, new):
        mine.assign(theirs)
    for (_, mine), (_, theirs) in zip(loss_holders(target), loss_holders(source), strict=True):
        if isinstance(mine, MaskedMeanLoss):
            mine.assign_settings_from(theirs)
    if getattr(target, "distill", None) is not None:
        target.distill = source.distill  # run records and progress read it


def copy_weights(target: keras.Model, source: keras.Model) -> None:
    """``target``'s weights := ``source``'s (same structure): a reused run hands its trained
    weights back to the model its caller built (`lskd_tf.training.RunResult.model`)."""
    for mine, theirs in zip(target.weights, source.weights, strict=True):
        mine.assign(theirs)


DEFAULT = CompiledModels()
"""The process's cache, used by `lskd_tf.experiment.run` when `RunEnv.reuse_compiled`."""
