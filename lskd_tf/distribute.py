"""Distributed training: strategy choice, chief-only writing and the multi-worker epoch.

Four strategies (`get_strategy`):

* ``default``: TensorFlow's default strategy (one device).
* ``mirrored``: `tf.distribute.MirroredStrategy` over all local GPUs (or ``devices``).
* ``multi_worker``: `tf.distribute.MultiWorkerMirroredStrategy`, one process per
  machine, its cluster (``cluster``, one of `CLUSTERS`) read from the ``TF_CONFIG``
  environment variable as TensorFlow documents it (``{"cluster": {"worker":
  ["host:port", ...]}, "task": {"type": "worker", "index": i}}``) or, in a SLURM job
  step started by ``srun``, from SLURM's variables by TensorFlow's
  `tf.distribute.cluster_resolver.SlurmClusterResolver` (`slurm_cluster_resolver`).
* ``tpu``: `tf.distribute.TPUStrategy` (best effort, untested here: no TPU).

Build the models *and* call the training functions under ``strategy.scope()``;
`lskd_tf.train_teacher` / `lskd_tf.distill_student` read the strategy from
``model.distribute_strategy``.

Why a custom epoch under ``multi_worker``
-----------------------------------------
`keras.Model.fit` fails with `MultiWorkerMirroredStrategy` in Keras 3.15 /
TensorFlow 2.21 (two workers on 127.0.0.1):

1. ``Trainer._maybe_symbolic_build`` averages the first *distributed* batch with
   ``strategy.reduce("MEAN", batch, axis=None)`` to get shapes, which raises
   ``ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported
   type (<class '...PerReplica'>) to a Tensor``.
2. Past that, ``reduce_per_replica(..., "auto")`` reduces every scalar metric with
   ``strategy.reduce("MEAN", v, axis=0)`` in multi-worker mode, which raises
   ``ValueError: Invalid reduction dimension 0 for input with 0 dimensions``
   (tensorflow issue 72388, keras issue 20585).

`run_epoch` therefore keeps `fit` for ``default``/``mirrored``/``tpu`` and, for a
`MultiWorkerMirroredStrategy`, runs the same epoch itself with TensorFlow's own
machinery: the model is built by Keras's ``_symbolic_build`` from the dataset's
*element spec* (what fit does, minus the broken reduce), batches come from
``strategy.distribute_datasets_from_function``, each step is
``strategy.run(model.train_step, ...)`` (the model's `train_step` stays the one
place where a step is defined), validation is ``strategy.run(model.test_step,
...)``, and the metric results are read in cross-replica context, where Keras
metric variables (``synchronization="on_read"``, ``aggregation="sum"``) are
all-reduced over every replica of every worker. Callbacks receive the same
calls (``on_epoch_begin``, ``on_train_batch_end``, ``on_test_*``,
``on_epoch_end``) and the logs have the keys `fit`'s ``History.history`` has
(``loss``, ``top1``, ..., ``val_loss``, ``val_top1``, ...).

Input sharding
--------------
The training data of an epoch is either

* a dataset of *global* batches (what `lskd_tf.training` builds from NumPy arrays,
  or a function ``epoch -> dataset``): every worker reads it and keeps its own
  contiguous rows of each global batch, split across its local replicas
  (`shard_global_batches`). One step then sees exactly the global batch a
  single-process run sees, so the results match it to float rounding; or
* a function with an ``input_context`` parameter, ``fn(epoch, input_context=None)``
  (e.g. a wrapper around ``lskd_tf.data.make_dataset(..., input_context=...)``):
  called once per worker with its `tf.distribute.InputContext`, it must return that
  worker's shard batched per replica. Only this form avoids reading every example
  on every worker; use it for ImageNet. Called with ``input_context=None`` it must
  return global batches (used to count the steps of an epoch). The epoch is then
  exactly that many steps on every worker (the shard is repeated if it is short),
  so no worker waits for a peer that has already stopped.

The global batch (``TrainConfig.batch_size``) must be a multiple of the number of
replicas; each replica's loss is divided by the number of replicas (Keras Loss
objects do it), so gradients are those of the global-batch mean and the
learning rate needs no rescaling when the number of workers changes.

Failures
--------
A worker that dies must not leave its peers waiting forever in a collective.
TensorFlow's coordination service (enabled by `MultiWorkerMirroredStrategy`)
watches every task's heartbeat and aborts the collectives of the others; as a
second line, ``collective_timeout_s`` gives every collective a deadline. The
surviving worker raises, `lskd_tf.training` marks the run ``failed``, and the
atomic writes keep every file of the finished epochs whole, so a restart
resumes from the last finished epoch.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lskd_tf import _compat

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Where ``multi_worker`` learns its cluster: ``auto`` = TF_CONFIG when it is set, else
# the SLURM job step when ``srun`` started more than one task, else an error.
CLUSTERS = ("auto", "tf_config", "slurm")
# SlurmClusterResolver's own default: task k of a node listens on port_base + k.
SLURM_PORT_BASE = 8888
# What SlurmClusterResolver reads (SLURM_STEP_NUM_TASKS: the srun step's task count).
_SLURM_STEP_VARIABLES = (
    "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE"
)  # fmt: skip


# --------------------------------------------------------------------------- strategies


def read_tf_config(environ: dict | None = None) -> dict | None:
    """The parsed and checked ``TF_CONFIG``, or None when it is unset or empty.

    Raises a one-line ValueError saying what to fix when it is not usable.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}); {example}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not any(cluster.get(j) for j in ("worker", "chief")):
        raise ValueError(f"TF_CONFIG has no 'cluster' with 'worker' addresses; {example}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no 'task' with 'type' and 'index'; {example}")
    tasks = cluster.get(task["type"]) or []
    if not isinstance(task["index"], int) or not 0 <= task["index"] < len(tasks):
        raise ValueError(
            f"TF_CONFIG task {task['type']}:{task['index']} is not in the cluster "
            f"({len(tasks)} {task['type']} address(es)); {example}"
        )
    return config


def in_slurm_step(environ: dict | None = None) -> bool:
    """Whether this process is one of several tasks of a SLURM job step (``srun -n N``, N > 1).

    An ``sbatch`` array task alone (``SLURM_ARRAY_TASK_ID`` set, one task) is not: it
    is an ordinary sweep process of the study (see `lskd_tf.sweep`).
    """
    environ = os.environ if environ is None else environ
    if not all(environ.get(name) for name in _SLURM_STEP_VARIABLES):
        return False
    try:
        return int(environ["SLURM_STEP_NUM_TASKS"]) > 1
    except ValueError:
        return False


def slurm_cluster_resolver(
    port_base: int = SLURM_PORT_BASE,
) -> tf.distribute.cluster_resolver.SlurmClusterResolver:
    """TensorFlow's `SlurmClusterResolver` for this ``srun`` task, working on CPU nodes too.

    The resolver (tensorflow/python/distribute/cluster_resolver/slurm_cluster_resolver.py,
    TF 2.21) reads ``SLURM_PROCID`` (this task's rank = its worker index; rank 0 is the
    chief), ``SLURM_STEP_NUM_TASKS``, ``SLURM_STEP_NODELIST`` (expanded in Python, e.g.
    ``n[1-2]`` -> n1, n2: no ``scontrol`` call in this version) and
    ``SLURM_STEP_TASKS_PER_NODE`` (e.g. ``2(x2)``), sorts the hosts and gives task k of a
    node the address ``host:port_base + k``. Every task must therefore see the same
    ``port_base`` and the ports must be free on every node.

    GPUs: it counts them from ``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi`` and gives each
    task its share through ``CUDA_VISIBLE_DEVICES``. On a node without either it fails
    (``nvidia-smi`` missing; or 0 GPUs per task makes its ``range`` step 0), so with no
    GPU in sight the resolver is told one pretend GPU per task and not to set
    ``CUDA_VISIBLE_DEVICES``: the cluster addresses are the same, the devices the CPU.
    """
    environ = os.environ  # what the resolver itself reads
    missing = [name for name in _SLURM_STEP_VARIABLES if not environ.get(name)]
    if missing:
        raise ValueError(
            f"cluster 'slurm' needs a SLURM job step started by srun ({', '.join(missing)} "
            "not set); run each worker as a task of `srun --ntasks=N python run.py ...` "
            "(see tools/slurm/multi_worker.sbatch)"
        )
    resolver_cls = tf.distribute.cluster_resolver.SlurmClusterResolver
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        has_gpus = shutil.which("nvidia-smi") is not None
    else:  # "" or "-1" hide every GPU
        has_gpus = any(d.strip() and not d.strip().startswith("-") for d in visible.split(","))
    try:
        if has_gpus:
            return resolver_cls(port_base=port_base)
        tasks = int(environ["SLURM_STEP_NUM_TASKS"])
        return resolver_cls(
            port_base=port_base, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False
        )
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"cluster 'slurm': SlurmClusterResolver could not read this job step ({error}); "
            "check srun's --ntasks-per-node against the node's GPUs"
        ) from None


def get_strategy(
    name: str = "default",
    *,
    devices: Sequence[str] | None = None,
    collective_timeout_s: float | None = None,
    tpu: str = "",
    cluster: str = "auto",
    slurm_port_base: int = SLURM_PORT_BASE,
) -> tf.distribute.Strategy:
    """A `tf.distribute.Strategy` by name: ``default``, ``mirrored``, ``multi_worker``, ``tpu``.

    Args:
        name: one of `STRATEGIES`.
        devices: for ``default``, the one device to use; for ``mirrored``, the
            devices to mirror over (default: all local GPUs, else the CPU).
        collective_timeout_s: ``multi_worker`` only: a deadline for each
            collective (all-reduce) op, so a peer that stops answering makes this
            worker raise instead of wait; None = TensorFlow's default (no deadline,
            rely on the coordination service's heartbeats).
        tpu: ``tpu`` only: the TPU's name or address (empty: the local/Colab TPU).
        cluster: ``multi_worker`` only, one of `CLUSTERS`: ``tf_config`` reads
            ``TF_CONFIG``; ``slurm`` asks `slurm_cluster_resolver` (one worker per
            ``srun`` task); ``auto`` takes ``TF_CONFIG`` when set, else SLURM when
            `in_slurm_step`.
        slurm_port_base: ``multi_worker`` on SLURM only: task k of a node listens on
            ``slurm_port_base + k`` (the same value in every task).

    ``multi_worker`` must be created at program start, before any other
    TensorFlow op, in every worker process, each with its own ``TF_CONFIG`` (or
    started together by one ``srun``).

    Example:

    ```python
    strategy = lskd_tf.distribute.get_strategy("multi_worker")
    with strategy.scope():
        teacher = lskd_tf.models.get("resnet56", num_classes=100)
        lskd_tf.train_teacher(teacher, train_fn, eval_ds, run_dir="runs/t")
    ```
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    if cluster not in CLUSTERS:
        raise ValueError(f"unknown cluster {cluster!r}; choose one of: {', '.join(CLUSTERS)}")
    if cluster != "auto" and name != "multi_worker":
        raise ValueError(
            f"cluster {cluster!r} is for strategy 'multi_worker', not {name!r}: choose "
            "strategy 'multi_worker' or leave cluster at 'auto'"
        )
    if collective_timeout_s is not None and not collective_timeout_s > 0:
        raise ValueError(f"collective_timeout_s must be > 0 or None, got {collective_timeout_s}")
    if name == "default":
        if devices:
            return tf.distribute.OneDeviceStrategy(list(devices)[0])
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(list(devices) if devices else None)
    if name == "multi_worker":
        use_slurm = cluster == "slurm" or (
            cluster == "auto" and read_tf_config() is None and in_slurm_step()
        )
        resolver = slurm_cluster_resolver(slurm_port_base) if use_slurm else None
        if resolver is None and read_tf_config() is None:
            raise ValueError(
                "strategy 'multi_worker' needs the TF_CONFIG environment variable in every "
                'worker process, e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", '
                '"host2:12345"]}, "task": {"type": "worker", "index": 0}}\', or to run as '
                "one of several tasks of a SLURM `srun` (cluster 'slurm'; see the README, "
                "section Multi-GPU and multi-worker training)"
            )
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout_s
        )
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options
        )
    try:  # tpu: best effort, documented as untested here
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"strategy 'tpu': no usable TPU ({message}); pass tpu='name-or-grpc-address' "
            "or choose one of: default, mirrored, multi_worker"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` is a `MultiWorkerMirroredStrategy` (then `fit` is bypassed)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _task(strategy: tf.distribute.Strategy | None) -> tuple[str | None, int, dict]:
    """(task type, task index, cluster dict) of this process, from the strategy or TF_CONFIG."""
    if strategy is not None and not is_multi_worker(strategy):
        return None, 0, {}  # one process: whatever TF_CONFIG says, it writes
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is not None and resolver.task_type is not None:
        return resolver.task_type, int(resolver.task_id or 0), resolver.cluster_spec().as_dict()
    config = read_tf_config()
    if config is None:
        return None, 0, {}
    return config["task"]["type"], int(config["task"]["index"]), config["cluster"]


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run's files: the ``chief`` task, else ``worker`` 0.

    True without a cluster (single process), as TensorFlow's multi-worker guide does.
    Without ``strategy`` only ``TF_CONFIG`` is read: a SLURM cluster is known from its
    strategy's resolver.
    """
    task_type, index, cluster = _task(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in cluster


def write_dir(run_dir: str | os.PathLike, strategy: tf.distribute.Strategy | None) -> Path:
    """Where this process writes: ``run_dir`` on the chief, a fresh temporary dir elsewhere.

    Every worker must still execute the same saves (saving reads distributed
    variables, which can involve collectives); the non-chief ones write into a
    temporary directory, as TensorFlow's multi-worker guide recommends
    (``_get_temp_dir``), which `discard_write_dir` deletes afterwards.
    """
    run_dir = Path(run_dir)
    if is_chief(strategy):
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    task_type, index, _ = _task(strategy)
    return Path(tempfile.mkdtemp(prefix=f"lskd_{task_type}{index}_{run_dir.name}_"))


def discard_write_dir(directory: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """Delete a non-chief's temporary write dir (never ``run_dir`` itself)."""
    if Path(directory).resolve() != Path(run_dir).resolve():
        shutil.rmtree(directory, ignore_errors=True)


def check_same_on_all_workers(strategy: tf.distribute.Strategy, value: int, what: str) -> None:
    """Raise the same ValueError on every worker unless all of them hold the same ``value``.

    All workers must start at the same epoch (e.g. resuming needs ``run_dir`` on
    a filesystem every worker sees); a mismatch would otherwise deadlock.
    Equal values <=> mean(v^2) == mean(v)^2 over the replicas, and every worker
    computes the same two means, so every worker decides the same way.
    """
    if not is_multi_worker(strategy) or _compat.num_workers(strategy) < 2:
        return
    moments = tf.constant([float(value), float(value) ** 2], tf.float64)

    @tf.function
    def mean_over_replicas():
        return strategy.reduce("MEAN", strategy.run(lambda: tf.identity(moments)), axis=None)

    mean, mean_square = mean_over_replicas().numpy()
    if not np.isclose(mean_square, mean**2, rtol=0, atol=1e-9):
        raise ValueError(
            f"the workers disagree on {what} (this worker: {value}, mean over workers: "
            f"{mean:g}); put run_dir on a filesystem every worker can read"
        )


def barrier(strategy: tf.distribute.Strategy, what: str) -> None:
    """Every worker waits here until all of them arrive (an all-reduce); one process: no-op.

    Placed after the chief's last write of a run, so that no worker reads that run's
    files (e.g. a teacher checkpoint) before they are complete.
    """
    check_same_on_all_workers(strategy, 0, what)


class WorkerFailureError(RuntimeError):
    """A multi-worker run stopped because a peer died or stopped answering."""


_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


def raise_if_peer_failure(
    strategy: tf.distribute.Strategy, error: BaseException, run_dir: str | os.PathLike
) -> None:
    """Re-raise a collective's failure under multi-worker as a `WorkerFailureError` that says why.

    TensorFlow reports a dead peer as an ``UnavailableError`` (heartbeats stopped,
    connection refused) or, with a collective timeout, ``DeadlineExceededError``,
    from deep inside whatever op was running; this names the cause and the fix.
    """
    if not is_multi_worker(strategy) or not isinstance(error, _PEER_ERRORS):
        return
    detail = " ".join(str(error).split())[:300]
    raise WorkerFailureError(
        "multi-worker training stopped: another worker died or stopped answering "
        f"({type(error).__name__}: {detail}). The files of the finished epochs in "
        f"{run_dir} are complete; restart every worker (same TF_CONFIG or srun step) to resume."
    ) from error


# --------------------------------------------------------------------------- input


def _rows(element, index, parts):
    """Rows ``[index * n // parts, (index + 1) * n // parts)`` of every tensor of a batch."""
    size = tf.shape(tf.nest.flatten(element)[0])[0]
    index = tf.cast(index, tf.int32)
    start, stop = index * size // parts, (index + 1) * size // parts
    return tf.nest.map_structure(lambda t: t[start:stop], element)


def _pack(args):
    return args[0] if len(args) == 1 else args


def shard_global_batches(
    dataset: tf.data.Dataset,
    input_context: tf.distribute.InputContext,
    *,
    training: bool = True,
) -> tf.data.Dataset:
    """One worker's part of a dataset of global batches, as per-replica batches.

    Worker ``w`` of ``W`` keeps rows ``[w n/W, (w+1) n/W)`` of every global batch of
    ``n`` rows and splits them into one batch per local replica, in order. Every
    worker yields the same number of per-replica batches (a short last batch just
    gives smaller, possibly empty, pieces), so no worker ever waits for another.
    With ``training=True`` a static global batch size must be a multiple of the
    number of replicas (equal pieces: the step is the global batch's mean).
    """
    workers = input_context.num_input_pipelines
    worker = input_context.input_pipeline_id
    local_replicas = max(1, input_context.num_replicas_in_sync // workers)
    batch = dataset.element_spec
    size = tf.nest.flatten(batch)[0].shape[0]
    replicas = input_context.num_replicas_in_sync
    if training and size is not None and size % replicas:
        raise ValueError(
            f"the global batch size {size} is not a multiple of the {replicas} replicas; "
            "choose a batch_size divisible by the number of replicas"
        )
    mine = dataset.map(lambda *b: _rows(_pack(b), worker, workers))
    return mine.flat_map(
        lambda *b: tf.data.Dataset.range(local_replicas).map(
            lambda i: _rows(_pack(b), i, local_replicas)
        )
    )


def without_autotune(dataset):
    """``dataset`` with tf.data autotuning off, for iterators that live one epoch.

    With autotuning on, every iterator runs an optimization thread that sleeps for
    doubling periods (10 ms, 20 ms, ..., 10.24 s, ...), and in TensorFlow 2.21
    deleting the iterator often (about every other epoch here) waits for that sleep
    to end instead of cancelling it. `fit` deletes its iterator at the end of every
    call, so a 12 s epoch then stalls for the ~8 s left until the thread's next
    wake-up (2-core CPU, `embedded` data at batch 64). Without autotuning,
    ``AUTOTUNE`` parallelism stays at its initial value, min(16, CPU cores), and
    ``prefetch(AUTOTUNE)`` keeps its own buffer-size tuning; the CIFAR pipeline
    measured faster, not slower. Element order is unaffected.
    """
    if not isinstance(dataset, tf.data.Dataset):
        return dataset  # None, or data `fit` adapts itself
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def takes_input_context(epoch_fn: Callable) -> bool:
    """Whether an epoch function reads its own shard: it has an ``input_context`` parameter."""
    try:
        return "input_context" in inspect.signature(epoch_fn).parameters
    except (TypeError, ValueError):
        return False


def distribute_epoch(
    strategy: tf.distribute.Strategy, epoch_fn: Callable, epoch: int, steps: int
) -> tf.distribute.DistributedDataset:
    """The training batches of one epoch, distributed over the workers (see the module doc)."""
    per_worker = takes_input_context(epoch_fn)

    def dataset_fn(input_context):
        local_replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        batches = steps * max(1, local_replicas)  # per-replica batches of this worker
        if per_worker:
            dataset = epoch_fn(epoch, input_context=input_context).repeat().take(batches)
        else:
            dataset = shard_global_batches(epoch_fn(epoch), input_context).take(batches)
        return without_autotune(dataset)

    return strategy.distribute_datasets_from_function(dataset_fn)


def distribute_eval(
    strategy: tf.distribute.Strategy, dataset: tf.data.Dataset
) -> tf.distribute.DistributedDataset:
    """An evaluation dataset of global batches, split over every replica of every worker."""
    return strategy.distribute_datasets_from_function(
        lambda input_context: without_autotune(
            shard_global_batches(dataset, input_context, training=False)
        )
    )


# --------------------------------------------------------------------------- the epoch


def run_epoch(
    model: keras.Model,
    epoch_fn: Callable,
    epoch: int,
    *,
    validation_data: tf.data.Dataset | None = None,
    steps_per_epoch: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    loop: str = "auto",
) -> dict[str, list[float]]:
    """Train ``model`` for epoch ``epoch`` and return `fit`'s ``History.history`` for it.

    Args:
        model: a compiled model (or `Distiller`) created under its strategy's scope.
        epoch_fn: ``epoch -> dataset of global batches``, or
            ``fn(epoch, input_context=None)`` (see the module docstring).
        epoch: the 0-based epoch (callbacks see it; the LR schedule uses the
            optimizer's ``iterations``, as in `fit`).
        validation_data: a dataset of global batches, evaluated after the epoch.
        steps_per_epoch: batches per epoch; None = one pass over the data.
        callbacks: Keras callbacks, called as `fit` calls them.
        loop: ``"auto"`` (custom loop for `MultiWorkerMirroredStrategy`, `fit`
            otherwise), ``"fit"`` or ``"custom"``.

    Returns:
        ``{"loss": [x], "top1": [x], ..., "val_loss": [x], "val_top1": [x], ...}``.
    """
    if loop not in ("auto", "fit", "custom"):
        raise ValueError(f"unknown loop {loop!r}; choose one of: auto, fit, custom")
    strategy = model.distribute_strategy
    if loop == "fit" or (loop == "auto" and not is_multi_worker(strategy)):
        dataset = without_autotune(epoch_fn(epoch))
        return model.fit(
            dataset,
            validation_data=without_autotune(validation_data),
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=steps_per_epoch,
            callbacks=list(callbacks),
            shuffle=False,  # the epoch's dataset is already shuffled, seeded
            verbose=0,
        ).history
    return _CustomLoop.of(model).run_epoch(
        epoch_fn, epoch, validation_data, steps_per_epoch, callbacks
    )


def _to_floats(logs: dict) -> dict[str, float]:
    return {key: float(keras.ops.convert_to_numpy(value)) for key, value in logs.items()}


class _CustomLoop:
    """`fit` for one epoch, written with `strategy.run` (see the module docstring)."""

    _loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model: keras.Model) -> _CustomLoop:
        """One loop per model, so its `tf.function`s are traced once per run, not per epoch."""
        if model not in cls._loops or cls._loops[model].optimizer is not model.optimizer:
            cls._loops[model] = cls(model)
        return cls._loops[model]

    def __init__(self, model: keras.Model):
        self.model_ref = weakref.ref(model)
        self.optimizer = model.optimizer
        self.strategy = model.distribute_strategy

        def metric_results():
            # Cross-replica context: reading a metric variable (on_read, sum)
            # all-reduces it over every replica of every worker.
            return self.model_ref().get_metrics_result()

        def train_function(batch):
            self.strategy.run(self.model_ref().train_step, args=(batch,))
            return metric_results()

        def test_function(batch):
            self.strategy.run(self.model_ref().test_step, args=(batch,))
            return metric_results()

        self.train_function = tf.function(train_function, reduce_retracing=True)
        self.test_function = tf.function(test_function, reduce_retracing=True)
        self.metric_function = tf.function(metric_results)

    @property
    def model(self) -> keras.Model:
        return self.model_ref()

    def build(self, element_spec) -> None:
        """Build model, compiled loss/metrics and optimizer like `fit` does.

        `fit`'s ``_maybe_symbolic_build`` first averages a distributed batch (the
        multi-worker bug); its ``_symbolic_build`` only needs shapes and dtypes,
        which the element spec of the (undistributed) dataset has.
        """
        with self.strategy.scope():
            _compat.symbolic_build(self.model, element_spec)

    def run_epoch(self, epoch_fn, epoch, validation_data, steps_per_epoch, callbacks):
        model = self.model
        global_dataset = epoch_fn(epoch)
        steps = steps_per_epoch or batches_per_epoch(global_dataset)
        self.build(global_dataset.element_spec)
        callback_list = keras.callbacks.CallbackList(
            list(callbacks), model=model, epochs=epoch + 1, steps=steps, verbose=0
        )
        model.stop_training = False
        callback_list.on_train_begin()
        callback_list.on_epoch_begin(epoch)
        model.reset_metrics()
        logs: dict[str, float] = {}
        for step, batch in enumerate(distribute_epoch(self.strategy, epoch_fn, epoch, steps)):
            if step >= steps:
                break
            callback_list.on_train_batch_begin(step)
            logs = _to_floats(self.train_function(batch))
            callback_list.on_train_batch_end(step, logs)
        # fit's History lists the train metrics, then the val_ ones, each sorted by name.
        epoch_logs = dict(sorted(logs.items()))
        if validation_data is not None:
            val_logs = self.evaluate(validation_data, callback_list)
            epoch_logs.update({f"val_{key}": val_logs[key] for key in sorted(val_logs)})
        callback_list.on_epoch_end(epoch, epoch_logs)
        callback_list.on_train_end(epoch_logs)
        return {key: [value] for key, value in epoch_logs.items()}

    def evaluate(self, dataset: tf.data.Dataset, callback_list) -> dict[str, float]:
        """`evaluate` on the whole dataset: the metric results over all workers."""
        model = self.model
        self.build(dataset.element_spec)
        callback_list.on_test_begin()
        model.reset_metrics()
        for step, batch in enumerate(distribute_eval(self.strategy, dataset)):
            callback_list.on_test_batch_begin(step)
            logs = _to_floats(self.test_function(batch))
            callback_list.on_test_batch_end(step, logs)
        logs = _to_floats(self.metric_function())
        callback_list.on_test_end(logs)
        return logs


def global_weight_sum(sample_weight):
    """``sum(sample_weight)`` over every replica of the step (this replica's sum alone
    outside a multi-replica step): the global batch's number of weighted positions."""
    local = tf.reduce_sum(tf.cast(sample_weight, tf.float32))
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return local
    return context.all_reduce(tf.distribute.ReduceOp.SUM, local)


def global_mean_share(sample_weight):
    """``N * (this replica's weight sum) / (all replicas' weight sum)``, or None on one
    replica or without weights.

    Keras's ``mean_with_sample_weight`` divides each replica's weighted loss sum by that
    replica's own weight sum, then by N. With padding masks the replicas hold different
    numbers of real tokens, so the summed gradients would not be one device's on the
    same global batch. Multiplying by this share turns each replica's value into its
    part of the global weighted mean: ``sum_r(w * loss) / sum_all(w)``.
    """
    context = tf.distribute.get_replica_context()
    if sample_weight is None or context is None or context.num_replicas_in_sync == 1:
        return None
    local = tf.reduce_sum(tf.cast(sample_weight, tf.float32))
    total = global_weight_sum(sample_weight)
    return tf.math.divide_no_nan(local * float(context.num_replicas_in_sync), total)


def batches_per_epoch(dataset) -> int:
    """The batches of one epoch of a finite training dataset, with a one-line ValueError
    for an empty one (a batch larger than the dataset: training drops the remainder) and
    for one of unknown size."""
    steps = int(dataset.cardinality())
    if steps == 0:
        raise ValueError(
            "the training data has no complete batch: the batch size is larger than the "
            "dataset (incomplete batches are dropped in training); lower --batch_size "
            "(TrainConfig.batch_size) or use more data"
        )
    if steps < 0:
        raise ValueError(
            "cannot tell how many batches one epoch has (infinite or unknown dataset); "
            "set TrainConfig.steps_per_epoch"
        )
    return steps
