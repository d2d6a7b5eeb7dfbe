"""Tasks: everything that differs between problems, behind one small interface.

A task says, for its kind of problem: which datasets exist and how they become
``tf.data`` pipelines of Keras batches ``(x, y[, sample_weight])``; which models exist
and how they are built and loaded; which metrics are reported and which one picks the
best checkpoint; the teacher's loss; and, optionally, how its teachers' outputs are
cached, how its models are exported and which analyses it has. Training
(`lskd_tf.training`), the `Distiller`, the sweep (`lskd_tf.sweep`) and the results
tables (`lskd_tf.results`) never name a task; the experiment runner asks
``tasks.get(spec.task)``.

Tasks:

* ``image_classification`` (`lskd_tf.tasks.image_classification`): the papers'
  CIFAR-100 / ImageNet / CUB-200 experiments; the default of every spec.
* ``translation`` (`lskd_tf.tasks.translation`): Transformer teachers and students,
  token-level KD, BLEU (IWSLT / WMT / the embedded synthetic corpus).

Adding a task is one module that subclasses `Task` and calls `register` (a built-in
task also gets one line in `TASKS`' ``built_in`` so it is imported on first use)::

    class Tagging(lskd_tf.tasks.Task):
        name = "tagging"
        ...
    lskd_tf.tasks.register(Tagging())
    StudySpec(task="tagging", ...)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lskd_tf.registry import Registry, unknown_name_message

if TYPE_CHECKING:  # imported where used: the task registry itself is TensorFlow-free
    import keras

TASKS: Registry[Task] = Registry(
    "task",
    built_in={
        "image_classification": "lskd_tf.tasks.image_classification",
        "translation": "lskd_tf.tasks.translation.task",
    },
)
"""The tasks by name. A built-in task is its module, imported when the task is first
asked for (so listing tasks stays TensorFlow-free)."""
_BUILT_IN_DATASETS = {
    "image_classification": ("embedded", "cifar100", "imagenet2012", "caltech_birds2011"),
    "translation": ("embedded", "iwslt14", "text", "wmt14_translate/de-en",
                    "wmt14_translate/ru-en", "ted_multi_translate"),
}  # fmt: skip
"""The built-in tasks' datasets, for `datasets_help` before any task module (and so
TensorFlow) is imported; tests/test_tasks.py checks it against each task's `datasets`."""
DEFAULT_TASK = "image_classification"


class Task:
    """What a problem (a task) brings to a label smoothing x distillation study.

    Subclasses set `name` and implement the methods that raise `NotImplementedError`;
    the others have defaults that suit any classification-like problem (logits over
    classes or tokens, integer labels). ``data`` arguments are
    `lskd_tf.experiment.DataSpec` objects (a dataset name, ``data_dir``, ``download``,
    ``cache`` and ``options``).
    """

    name: str = ""
    monitor: str = "top1"
    """The metric whose validation value picks ``best.keras``."""
    headline: str = "top1"
    """The metric the results tables and the verdict report (e.g. ``bleu``)."""
    metric_labels: dict[str, str] = {}
    """What a metric measures, for the results tables' titles (recorded in run.json), e.g.
    ``{"bleu": "BLEU (sacreBLEU 13a, detokenized)"}``; metrics not named show their name."""

    # ------------------------------------------------------------------ data

    def datasets(self) -> list[str]:
        """The dataset names this task can load."""
        raise NotImplementedError

    def check_dataset(self, data) -> None:
        """Raise a one-line ValueError when ``data`` does not name a dataset of this task."""
        self._check_dataset_name(data.name)

    def _check_dataset_name(self, name: str) -> None:
        if name not in self.datasets():
            raise ValueError(unknown_name_message("dataset", name, self.datasets()))

    def data_options(self, name: str) -> list[str]:
        """The option keys dataset ``name`` accepts in ``DataSpec.options`` (sorted), read
        without loading data; a one-line ValueError for an unknown dataset.

        The command line asks this, not a table of its own, which dataset a per-option
        flag (``--train_per_class``, ``--max_length``, ...) applies to
        (`lskd_tf.flags.DATA_OPTION_FLAGS`). The default: no options.
        """
        self._check_dataset_name(name)
        return []

    def after_study_hint(self, data) -> str | None:
        """A line ``run.py`` prints after a study on ``data``, or None (the default): e.g.
        which flagfile runs the real study after the quick one on embedded data."""
        return None

    def dataset_info(self, data) -> Any:
        """A description of the dataset (anything with ``to_dict()``, e.g. `DatasetInfo`)."""
        raise NotImplementedError

    def check_data_prepared(self, data) -> None:
        """Raise a one-line error saying how to get ``data`` when it is not there.

        `lskd_tf.sweep.run_study` calls it before writing anything (no run directory,
        flagfile or TensorBoard file for a study that cannot start). It must not
        download nor read the examples. The default does nothing (a task whose
        `dataset_info` or `data_fingerprint` already reads its files finds out there).
        """

    def data_identity(self, data) -> dict:
        """What of ``data`` enters a run's identity (`lskd_tf.experiment.identity`).

        The dataset and the options set, not where it is stored (``data_dir``,
        ``download``, ``cache`` do not change the examples). A task adds settings that
        changed after runs were recorded (image classification: `Source.preprocessing`).
        """
        return {"name": data.name, "options": [list(o) for o in data.options]}

    def data_fingerprint(self, data) -> dict | None:
        """What identifies the content of ``data``'s examples, or None (the default).

        A run's identity (`lskd_tf.experiment.identity`) records it, so that a re-run on
        other data (another ``data_dir``, files edited in place, another TFDS version) is
        refused instead of silently reusing the old run. A dataset read from user files
        returns their fingerprint (`lskd_tf.data.fingerprint`); one generated from its
        options (already in the identity) returns None. Computing it must be cheap on
        an unchanged dataset: it runs on every start, for finished runs too.
        """
        return None

    def train_fn(self, data, *, batch_size: int, seed: int) -> Callable:
        """``(epoch, input_context=None) -> tf.data.Dataset`` of global training batches.

        The same (seed, epoch) must give the same batches (exact resume); under
        multi-worker training ``input_context`` asks for one worker's shard batched per
        replica (`lskd_tf.distribute`).
        """
        raise NotImplementedError

    def eval_dataset(self, data, *, batch_size: int):
        """The evaluation split as a batched `tf.data.Dataset` in a fixed order."""
        raise NotImplementedError

    # ------------------------------------------------------------------ models

    def models(self) -> list[str]:
        """The model names this task can build."""
        raise NotImplementedError

    def check_model(self, name: str) -> None:
        """Raise a one-line ValueError when ``name`` is not a model of this task."""
        if name not in self.models():
            raise ValueError(unknown_name_message("model", name, self.models()))

    def build_model(self, name: str, info: Any, *, train, synchronized_bn: bool) -> keras.Model:
        """A new, built model ``name`` for the dataset ``info``, trained with ``train``."""
        raise NotImplementedError

    def load_model(self, path: str | os.PathLike, info: Any) -> keras.Model:
        """A saved model (a `.keras` file), checked against the dataset ``info``."""
        from lskd_tf.model_files import load_keras_file

        return load_keras_file(path)

    def check_model_file(self, path: str | os.PathLike, *, what: str = "checkpoint") -> None:
        """Raise a one-line ValueError unless ``path`` is a file `load_model` and
        `initialize` can read, checked cheaply (a study checks every file it will read
        before its first run). Default: a `.keras` archive (`lskd_tf.model_files`)."""
        from lskd_tf.model_files import check_keras_file

        check_keras_file(path, what=what)

    def initialize(self, model: keras.Model, path: str | os.PathLike) -> dict:
        """Load initial weights from ``path`` into ``model`` (fine-tuning); what was loaded.

        Default: the weights of a saved `.keras` model of the same architecture.
        """
        source = self.load_model(path, None)
        model.set_weights(source.get_weights())
        return {"path": str(path), "keys": len(model.weights)}

    # ------------------------------------------------------------------ training

    def metrics(self) -> list[keras.metrics.Metric]:
        """New instances of the metrics every run reports (``y``, logits, sample weight)."""
        from lskd_tf.distiller import default_metrics

        return default_metrics()

    def teacher_loss(self, label_smoothing: float, smoothing: str) -> keras.losses.Loss:
        """The loss a teacher trains on: cross-entropy on (smoothed) labels."""
        from lskd_tf.losses import SmoothedCrossEntropy

        return SmoothedCrossEntropy(label_smoothing, smoothing)

    def check_teacher_cache(self, cache, data) -> None:
        """Raise a one-line ValueError when teachers' outputs cannot be cached this way."""
        raise ValueError(f"task {self.name!r} has no teacher-output cache; leave it off")

    def cached_train_fn(
        self, teacher: keras.Model, teacher_path: Path, cache, data, *, batch_size: int,
        seed: int, verbose: bool, kd_topk: int = 0,
    ) -> tuple[Callable, dict]:  # fmt: skip
        """``(train_fn, description)``: training batches whose ``x`` carries the teacher's
        cached logits (`lskd_tf.distiller.with_teacher_logits`), built on first use.

        ``kd_topk`` > 0: the student's KD loss reads only the teacher's ``kd_topk``
        largest logits per position (`lskd_tf.DistillSpec.kd_topk`); a task may then store
        and pass just those (`lskd_tf.losses.sparse_teacher`), or dense logits, whose top
        k the loss takes itself."""
        self.check_teacher_cache(cache, data)
        raise NotImplementedError

    def check_batch_size(self, data, batch_size: int) -> None:
        """Raise a one-line ValueError when training on ``data`` with ``batch_size``
        could not make one batch (checked before the first run). Default: no check."""

    def check_sequence_level(self, data) -> None:
        """Raise a one-line ValueError unless students can learn the teacher's outputs."""
        raise ValueError(f"task {self.name!r} has no sequence-level KD; leave it off")

    def sequence_level_train_fn(
        self, teacher: keras.Model, teacher_path: Path, data, *, batch_size: int, seed: int,
        verbose: bool,
    ) -> tuple[Callable, dict]:  # fmt: skip
        """``(train_fn, description)``: training batches whose targets are the teacher's
        outputs (sequence-level KD, `lskd_tf.DistillSpec.sequence_level`)."""
        self.check_sequence_level(data)
        raise NotImplementedError

    # ------------------------------------------------------------------ after training

    def final_metrics(self, run, data, info: Any) -> dict | None:
        """Metrics measured on a finished run's checkpoints before it is marked finished.

        ``run`` is the `lskd_tf.run_dir.RunDir` being written. Returns
        ``{"best": {"val_<name>": value, ...}, "last": {...}}`` (added to run.json's
        best/last and to its ``metrics``), or None (the default: nothing beyond what
        training measured). Translation decodes the evaluation split for BLEU here.
        """
        return None

    def export(
        self, model: keras.Model, export_dir: str | os.PathLike, info: Any, data: Any = None
    ) -> Path:
        """Write ``model`` for serving; default: a SavedModel (``serve``) plus ``model.keras``.

        ``data`` is the run's `lskd_tf.experiment.DataSpec` when known (translation
        exports with its evaluation settings: beam size, length penalty)."""
        export_dir = Path(export_dir)
        export_dir.parent.mkdir(parents=True, exist_ok=True)
        model.export(str(export_dir), format="tf_saved_model", verbose=False)
        model.save(export_dir / "model.keras")
        return export_dir

    def analyze(
        self, run_dirs: list[Path], out_dir: Path, *, tensorboard_dir: Path | None, title: str
    ) -> Path | None:
        """Write the task's analysis report of finished runs; None when it has none."""
        return None


def register(task: Task) -> Task:
    """Make ``task`` selectable by its name (`StudySpec.task`, ``--task``)."""
    return TASKS.register(task.name, task)


def available() -> list[str]:
    """The names of every task, built-in or registered."""
    return TASKS.available()


def datasets_help() -> str:
    """Every task's datasets as ``"task: a, b; task: c"`` (``--dataset``'s help), without
    importing a task that is not imported yet: TensorFlow-free at flag-definition time."""
    names = {**_BUILT_IN_DATASETS, **{n: t.datasets() for n, t in TASKS.loaded().items()}}
    return "; ".join(f"{task}: {', '.join(names.get(task, ()))}" for task in available())


def get(name: str = DEFAULT_TASK) -> Task:
    """The task registered as ``name`` (built-in tasks are imported on first use)."""
    return TASKS.get(name)
