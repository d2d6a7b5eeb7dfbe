"""The losses of a label-smoothing x distillation study, and the registry of KD losses.

All are `MaskedMeanLoss` subclasses (`keras.losses.Loss`): Keras reduces them
(``mean_with_sample_weight``: the mean over examples, or over the positions whose
sample weight is non-zero, e.g. the non-padding tokens of a sequence) and, under
`tf.distribute`, scales them by ``1 / num_replicas_in_sync``, so gradients summed
across replicas have the right size (a hand-written `ops.mean` would not be scaled
and would give gradients N times too large on N replicas). `MaskedMeanLoss` adds what
Keras lacks for masks: the mean is over the *global* batch's weighted positions, so N
replicas holding different numbers of real tokens train exactly as one device.

Logits are ``(batch, K)`` for classification or ``(batch, length, V)`` for sequences;
labels have the logits' shape without the last axis.

KD losses are chosen by name (`kd_loss`): ``"kl"`` is Hinton's temperature KL over the
whole vocabulary; ``"topk_kl"`` is the papers' fairseq fork's word-level KD on the
teacher's k largest logits (`TopKDistillationKL`). Adding one is a class and a
registration::

    @register_kd_loss("mse_logits")
    class LogitMSE(lskd_tf.losses.MaskedMeanLoss):
        def __init__(self, temperature=1.0, t2_scaling=True, **kwargs): ...
        def call(self, teacher_logits, student_logits): ...   # one value per position

A loss that reads its temperature through ``self.constant("temperature")`` and lists it
in ``held_settings`` (with `MaskedMeanLoss.graph_constants`) lets the students of a study
that differ only in T train one traced step (`lskd_tf.reuse`); without that, each T
traces its own, with the same results.

Both compute in float32 whatever the input dtype, so float16/bfloat16 logits
(mixed precision) and large temperatures (T = 64) stay finite.
"""

from __future__ import annotations

import inspect

import keras
import tensorflow as tf
from keras import ops

from lskd_tf import fast_ops
from lskd_tf.choices import (  # noqa: F401  (TEMPERATURE_RANGE: lskd_tf.losses' public bound)
    SMOOTHING_CONVENTIONS,
    TEMPERATURE_RANGE,
    validate_temperature,
)
from lskd_tf.distribute import global_mean_share
from lskd_tf.registry import Registry

REDUCTION = "mean_with_sample_weight"
"""Mean over the weighted positions: sum(w * loss) / sum(w); the plain mean without weights."""


def _check_kd_loss_class(name: str, cls: type[keras.losses.Loss]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, MaskedMeanLoss)):
        raise TypeError(
            f"KD loss {name!r} must subclass lskd_tf.losses.MaskedMeanLoss (a "
            "keras.losses.Loss whose mean counts padding correctly across replicas)"
        )


KD_LOSSES: Registry[type[keras.losses.Loss]] = Registry(
    "KD loss", replace=False, check=_check_kd_loss_class
)
"""The KD losses by name (`DistillSpec.kd_loss`); `register_kd_loss` adds one."""

TOPK_IDS = "topk_ids"
TOPK_LOGITS = "topk_logits"


def register_kd_loss(name: str):
    """Class decorator: make a KD loss selectable by ``name`` (`DistillSpec.kd_loss`).

    The class is a `MaskedMeanLoss` whose constructor takes ``temperature`` and
    ``t2_scaling`` (and Keras's ``reduction``/``name``/``dtype``), and whose ``call``
    maps ``(teacher_logits, student_logits)`` to one value per example or position. A
    loss that reads only the teacher's k largest logits also takes ``topk`` (set from
    `DistillSpec.kd_topk`) and accepts a `sparse_teacher` as ``teacher_logits``.
    """

    return KD_LOSSES.register(name)


def kd_losses() -> list[str]:
    """The names of the registered KD losses."""
    return KD_LOSSES.available()


def check_kd_loss_name(name: str) -> None:
    """Raise a one-line ValueError unless ``name`` is a KD loss spelled as registered.

    Lookups elsewhere forgive case and ``-``; a spec's ``kd_loss`` does not, because the
    name enters run names and run identities ("KL" and "kl" would be two runs)."""
    key = KD_LOSSES.resolve(name)
    if key != name:
        raise ValueError(f"write kd_loss={key!r}, not {name!r}: the name is part of a run's name")


def reads_topk(name: str) -> bool:
    """Whether the KD loss ``name`` reads only the teacher's k largest logits per position
    (its constructor takes ``topk``; `DistillSpec.kd_topk` sets it)."""
    return "topk" in inspect.signature(KD_LOSSES.get(name)).parameters


def validate_kd_loss(name: str, *, topk: int = 0) -> None:
    """Raise a one-line ValueError unless ``name`` is a registered KD loss and ``topk``
    (0: not set) is set exactly when that loss reads the teacher's top k."""
    check_kd_loss_name(name)
    wants_topk = reads_topk(name)
    if int(topk) != topk or topk < 0:
        raise ValueError(f"kd_topk must be an integer >= 0, got {topk!r}")
    if wants_topk and not topk:
        raise ValueError(
            f"kd_loss={name!r} reads the teacher's k largest logits per position: set "
            "kd_topk >= 1 (the papers' fairseq fork keeps 4)"
        )
    if topk and not wants_topk:
        raise ValueError(
            f"kd_topk={topk} applies only to KD losses that read the teacher's top k ("
            + ", ".join(n for n in kd_losses() if reads_topk(n))
            + f"); set kd_topk=0 for kd_loss={name!r}"
        )


def get_kd_loss(
    name: str, *, temperature: float, t2_scaling: bool = True, topk: int = 0
) -> keras.losses.Loss:
    """A new instance of the KD loss registered as ``name``.

    ``topk``: the k of a loss that reads the teacher's top k (``"topk_kl"``); 0 for the
    others (see `validate_kd_loss`).

    Example:

    >>> kd = get_kd_loss("topk_kl", temperature=64.0, topk=4)
    >>> kd(teacher_logits, student_logits, sample_weight=padding_mask)
    """
    validate_kd_loss(name, topk=topk)
    options = {"topk": int(topk)} if topk else {}
    return KD_LOSSES.get(name)(
        temperature=temperature, t2_scaling=t2_scaling, reduction=REDUCTION, **options
    )


def sparse_teacher(ids, logits) -> dict:
    """A teacher's k largest logits per position, as top-k KD losses read them.

    ``ids`` (..., k) integer token/class ids and ``logits`` (..., k) their logits, largest
    first (as `keras.ops.top_k` orders them). A KD loss that reads the teacher's top k
    accepts this in place of dense teacher logits (..., V): a cache of top-k teacher
    outputs (`lskd_tf.tasks.translation.teacher_cache`) never expands them to V logits.
    """
    return {TOPK_IDS: ids, TOPK_LOGITS: logits}


def is_sparse_teacher(teacher) -> bool:
    """Whether ``teacher`` is a `sparse_teacher` structure (not dense logits)."""
    return isinstance(teacher, dict) and TOPK_IDS in teacher


def teacher_topk(teacher, k: int):
    """``(ids int32, logits float32)`` of the teacher's k largest logits, largest first.

    ``teacher`` is dense logits (..., V) (their top k are taken here) or a
    `sparse_teacher` holding exactly k entries per position.
    """
    if is_sparse_teacher(teacher):
        ids, logits = teacher[TOPK_IDS], teacher[TOPK_LOGITS]
        if ids.shape[-1] is not None and ids.shape[-1] != k:
            raise ValueError(
                f"the sparse teacher holds its top {ids.shape[-1]} logits per position but "
                f"the loss reads the top {k}: build the teacher cache with kd_topk={k}"
            )
        return ops.cast(ids, "int32"), ops.cast(logits, "float32")
    logits, ids = fast_ops.top_k(ops.cast(teacher, "float32"), k)  # = tf.math.top_k's
    return ids, logits


def teacher_top1(teacher):
    """The teacher's most likely id per position, from dense or `sparse_teacher` logits."""
    if is_sparse_teacher(teacher):
        return ops.cast(teacher[TOPK_IDS][..., 0], "int32")
    return fast_ops.argmax(teacher)  # = keras.ops.argmax's ids


class MaskedMeanLoss(keras.losses.Loss):
    """A Keras loss whose weighted mean is over the global batch, on any number of replicas.

    On one device it is exactly Keras's ``mean_with_sample_weight`` (the same ops, so the
    same bits). On N replicas with sample weights (padding masks), Keras would average
    N per-replica means, which weighs a token on a replica with few real tokens more
    than one on a replica with many; this multiplies each replica's value by its share
    of the global weight (`lskd_tf.distribute.global_mean_share`), so the summed
    gradients are the one-device gradients of the same global batch. Subclasses
    implement ``call`` (one value per example or position) as for any Keras loss.
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        value = super().__call__(y_true, y_pred, sample_weight)
        share = None if self.reduction != REDUCTION else global_mean_share(sample_weight)
        return value if share is None else value * ops.cast(share, value.dtype)

    # -- settings a traced step may read from variables (`lskd_tf.reuse`) ---------------

    held_settings: tuple[str, ...] = ()
    """The constructor arguments (floats) that `hold_settings_in_variables` moves into
    variables, so one traced train function serves runs that differ only in them."""
    _held: dict[str, tf.Variable] | None = None  # set by hold_settings_in_variables

    def graph_constants(self) -> dict[str, float]:
        """The float32 numbers ``call`` reads, computed from ``held_settings`` in Python
        (float64, as a constant of the graph would be). Subclasses with held settings
        override this."""
        return {}

    def hold_settings_in_variables(self) -> None:
        """Read `graph_constants` from variables from now on instead of baking them into
        the graph as constants; `assign_settings_from` then changes them in place.

        Call it eagerly, before the first trace (it creates variables). The numbers are
        the same float32 values either way, and so is the loss's value; its gradient can
        differ in the last bits, because TensorFlow's graph optimizer folds constants
        into it (`lskd_tf.reuse.hold_loss_settings`: every training run holds them).
        """
        if self._held is None:
            self._held = {
                name: tf.Variable(value, dtype="float32", trainable=False, name=name)
                for name, value in self.graph_constants().items()
            }

    def assign_settings_from(self, other: MaskedMeanLoss) -> None:
        """Take ``other``'s held settings (a loss of the same class and otherwise the same
        config, `settings_free_config`) into this loss's variables."""
        for name in self.held_settings:
            setattr(self, name, getattr(other, name))
        for name, value in self.graph_constants().items():
            self._held[name].assign(value)

    def settings_free_config(self) -> dict:
        """``get_config()`` without the name and the held settings: equal for two losses
        that one traced step computes alike once their settings are assigned."""
        config = self.get_config()
        for name in ("name", *self.held_settings):
            config.pop(name, None)
        return config

    def constant(self, name: str):
        """The graph constant ``name`` (`graph_constants`): its variable once held."""
        return self.graph_constants()[name] if self._held is None else self._held[name]


def validate_smoothing(alpha: float, convention: str, *, name: str = "alpha") -> None:
    """Raise a one-line ValueError unless 0 <= alpha < 1 and the convention is known."""
    if not 0.0 <= float(alpha) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {alpha}")
    if convention not in SMOOTHING_CONVENTIONS:
        raise ValueError(
            f"unknown smoothing convention {convention!r}; choose one of: "
            + ", ".join(SMOOTHING_CONVENTIONS)
        )


def smooth_targets(targets, alpha: float, convention: str = "uniform"):
    """Smooth one-hot (or soft) targets of shape (batch, K).

    - ``"uniform"`` (Szegedy 2016, Müller 2019, PyTorch ``label_smoothing``,
      Chandrasegaran 2022): ``(1 - a) * y + a / K``; the true class also gets a/K.
    - ``"others"`` (Shen 2021, Eq. 1): the true class gets ``1 - a``, every other
      class ``a / (K - 1)``; for soft targets ``(1 - a) * y + a * (1 - y) / (K - 1)``.

    Example:

    >>> smooth_targets(keras.ops.one_hot([0], 4), 0.1, "uniform")  # [[0.925, 0.025, ...]]
    >>> smooth_targets(keras.ops.one_hot([0], 4), 0.1, "others")   # [[0.9, 0.0333, ...]]
    """
    validate_smoothing(alpha, convention)
    targets = ops.cast(targets, "float32")
    if alpha == 0.0:
        return targets
    return _smooth(targets, 1.0 - alpha, alpha, convention)


def _smooth(targets, keep, alpha, convention: str):
    """`smooth_targets` with ``keep`` = 1 - alpha given (Python floats or float32 variables:
    the same ops on the same float32 numbers either way). At alpha = 0 it returns the
    targets' exact values (1 * y + 0 = y)."""
    num_classes = ops.shape(targets)[-1]
    if convention == "uniform":
        return keep * targets + alpha / ops.cast(num_classes, "float32")
    return keep * targets + alpha * (1.0 - targets) / ops.cast(num_classes - 1, "float32")


def integer_labels(y_true, logits):
    """``y_true`` as int32 class ids shaped like ``logits`` without its last axis, or None
    when ``y_true`` already holds one-hot or soft targets (the logits' shape)."""
    if len(y_true.shape) == len(logits.shape) and y_true.shape[-1] != 1:
        return None
    return ops.reshape(ops.cast(y_true, "int32"), ops.shape(logits)[:-1])


@keras.saving.register_keras_serializable(package="lskd_tf")
class SmoothedCrossEntropy(MaskedMeanLoss):
    """Cross-entropy between (smoothed) labels and logits: H(y_ls, softmax(z)).

    Args:
        alpha: smoothing strength in [0, 1). 0 is plain cross-entropy.
        convention: ``"uniform"`` or ``"others"``; see `smooth_targets`.
        reduction, name, dtype: as for any `keras.losses.Loss`.

    ``y_true`` may be integer class ids of shape (batch,) or (batch, 1), or
    one-hot / soft targets of shape (batch, K). ``y_pred`` are logits (batch, K);
    for sequences, ids (batch, length) with logits (batch, length, V).

    Example:

    >>> loss = SmoothedCrossEntropy(alpha=0.1, convention="others")
    >>> loss([2, 0], [[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]])
    """

    def __init__(
        self,
        alpha: float = 0.0,
        convention: str = "uniform",
        reduction: str = REDUCTION,
        name: str = "smoothed_cross_entropy",
        dtype=None,
    ):
        validate_smoothing(alpha, convention)
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.alpha = float(alpha)
        self.convention = convention

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        labels = integer_labels(y_true, logits)
        if labels is None:
            targets = ops.cast(y_true, "float32")  # one-hot or soft targets
        else:
            targets = ops.one_hot(labels, ops.shape(logits)[-1], dtype="float32")
        if self._held is not None:  # any alpha, 0 included
            targets = _smooth(
                targets, self.constant("keep"), self.constant("alpha"), self.convention
            )
        else:
            targets = smooth_targets(targets, self.alpha, self.convention)
        return -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)

    held_settings = ("alpha",)

    def graph_constants(self) -> dict[str, float]:
        return {"keep": 1.0 - self.alpha, "alpha": self.alpha}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(alpha=self.alpha, convention=self.convention)
        return config


@keras.saving.register_keras_serializable(package="lskd_tf")
class ReportedCrossEntropy(SmoothedCrossEntropy):
    """`SmoothedCrossEntropy`'s value for reporting only: no gradient, fewer passes.

    A pure-KD `Distiller` (``ce_weight=0``) reports the cross-entropy on the labels it
    never trains on. With targets ``t`` summing to 1, ``H(t, softmax(z)) = logsumexp(z)
    − Σ t·z``, and for integer labels ``Σ t·z`` needs only the label's logit and the
    sum of all logits: ``keep·z[y] + alpha·mean(z)`` (``"uniform"``) or ``keep·z[y] +
    alpha·(Σz − z[y]) / (K − 1)`` (``"others"``). So the (…, K) logits are read by one
    logsumexp and one sum, never turned into one-hot targets and a log-softmax (timings:
    RESULTS.md, "The KD step's reads of the vocabulary"). The value equals
    `SmoothedCrossEntropy`'s to float32 rounding (tested: relative 1e-6), not bit for
    bit. Soft or one-hot ``y_true`` take `SmoothedCrossEntropy`'s formula.

    Its gradient is zero (``stop_gradient``): the gather this formula reads the label's
    logit with has a far slower backward on CPU than the one-hot product (RESULTS.md,
    "Translation distillation step"), so a trained cross-entropy stays
    `SmoothedCrossEntropy`.

    Example:

    >>> ReportedCrossEntropy(0.1)([2, 0], [[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]])
    """

    def __init__(self, *args, name: str = "reported_cross_entropy", **kwargs):
        super().__init__(*args, name=name, **kwargs)

    def call(self, y_true, y_pred):
        logits = ops.stop_gradient(ops.cast(y_pred, "float32"))
        labels = integer_labels(y_true, logits)
        if labels is None:
            return super().call(y_true, logits)  # soft or one-hot targets
        at_label = tf.gather(logits, labels, batch_dims=len(labels.shape))
        keep, alpha = self.constant("keep"), self.constant("alpha")
        num_classes = ops.cast(ops.shape(logits)[-1], "float32")
        if self.convention == "uniform":
            others = ops.sum(logits, axis=-1) / num_classes
        else:
            others = (ops.sum(logits, axis=-1) - at_label) / (num_classes - 1.0)
        return ops.logsumexp(logits, axis=-1) - (keep * at_label + alpha * others)


class _HeldTemperature:
    """The temperature and T² of a KD loss, as `MaskedMeanLoss.hold_settings_in_variables`
    holds them (T² computed in Python, as the constant it replaces)."""

    held_settings = ("temperature",)

    def graph_constants(self) -> dict[str, float]:
        return {"temperature": self.temperature, "t_squared": self.temperature**2}


@register_kd_loss("kl")
@keras.saving.register_keras_serializable(package="lskd_tf")
class DistillationKL(_HeldTemperature, MaskedMeanLoss):
    """Hinton's distillation loss: T² · KL(softmax(t/T) ‖ softmax(s/T)).

    Args:
        temperature: T > 0; softens both distributions.
        t2_scaling: multiply by T² (Hinton 2015) so gradient magnitudes stay
            comparable across temperatures. Chandrasegaran's code does this;
            at T = 1 (Shen) it is moot.

    ``y_true`` are teacher logits, ``y_pred`` student logits, both (batch, K) or
    (batch, length, V).
    The KL uses log-softmax on both sides, which is exact and stable even at
    T = 64 and for float16 inputs (computed in float32).

    Example:

    >>> kd = DistillationKL(temperature=4.0)
    >>> kd(teacher_logits, student_logits)
    """

    def __init__(
        self,
        temperature: float = 4.0,
        t2_scaling: bool = True,
        reduction: str = REDUCTION,
        name: str = "distillation_kl",
        dtype=None,
    ):
        validate_temperature(temperature)
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.temperature = float(temperature)
        self.t2_scaling = bool(t2_scaling)

    def call(self, y_true, y_pred):
        temperature = self.constant("temperature")
        t = ops.cast(y_true, "float32") / temperature
        s = ops.cast(y_pred, "float32") / temperature
        log_p_teacher = ops.log_softmax(t, axis=-1)
        log_p_student = ops.log_softmax(s, axis=-1)
        kl = ops.sum(ops.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
        if self.t2_scaling:
            kl = kl * self.constant("t_squared")
        return kl

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(temperature=self.temperature, t2_scaling=self.t2_scaling)
        return config


@tf.custom_gradient
def _topk_kl(scaled, ids, log_p_teacher):
    """Per position ``Σ_k p_k (log p_k − log_softmax(scaled)[ids_k])``, ``p = exp(log_p)``,
    with the gradient written out: ``softmax(scaled) − p`` scattered at ``ids``.

    ``log_softmax(z)[i] = z[i] − logsumexp(z)`` and ``Σ_k p_k = 1``, so the value is
    ``Σ_k p_k (log p_k − z[ids_k]) + logsumexp(z)``: the vocabulary-sized ``scaled`` is
    only reduced and read at k ids, never normalised as a whole (`tf.gather` with
    ``batch_dims``: ``keras.ops.take_along_axis`` is far slower on TensorFlow). Autodiff
    of that expression back-propagates through the logsumexp and through the gather
    (an index scatter); the written-out gradient is one exponential over the vocabulary
    and k subtractions per position, about two thirds of autodiff's time (RESULTS.md,
    "The KD step's reads of the vocabulary"). It is the fork's gradient; autodiff's
    differs from it by float32 rounding only (tested). The teacher (``ids``,
    ``log_p_teacher``) is a constant.
    """
    lse = tf.reduce_logsumexp(scaled, axis=-1)
    at_teacher_ids = tf.gather(scaled, ids, batch_dims=len(ids.shape) - 1)
    p_teacher = tf.exp(log_p_teacher)
    kl = tf.reduce_sum(p_teacher * (log_p_teacher - at_teacher_ids), axis=-1) + lse

    def gradient(upstream):
        num_classes = tf.shape(scaled)[-1]
        upstream = upstream[..., None]
        grad = tf.reshape(upstream * tf.exp(scaled - lse[..., None]), [-1, num_classes])
        flat_ids = tf.reshape(ids, [-1, ids.shape[-1]])
        rows = tf.broadcast_to(tf.range(tf.shape(flat_ids)[0])[:, None], tf.shape(flat_ids))
        at = tf.stack([tf.reshape(rows, [-1]), tf.reshape(flat_ids, [-1])], axis=1)
        grad = tf.tensor_scatter_nd_sub(grad, at, tf.reshape(upstream * p_teacher, [-1]))
        return tf.reshape(grad, tf.shape(scaled)), None, None

    return kl, gradient


@register_kd_loss("topk_kl")
@keras.saving.register_keras_serializable(package="lskd_tf")
class TopKDistillationKL(_HeldTemperature, MaskedMeanLoss):
    """Word-level KD on the teacher's k largest logits, as the papers' fairseq fork does it.

    Per position, with the teacher's top-k logits ``t_k`` at ids ``idx_k`` and student
    logits ``s``::

        p = softmax(t_k / T)                      # renormalised over the top k only
        loss = T² · Σ_k p_k · (log p_k − log_softmax(s / T)[idx_k])

    The student's log-softmax is over the full vocabulary and read at the k ids; every
    other id gets no target mass. This is the fork's criterion
    (RayeRen/multilingual-kd-pytorch, ``fairseq/criterions/
    distill_label_smoothed_cross_entropy_loss.py``: ``topk_prob = F.softmax(topk_prob /
    self.t)``, ``distill_loss = -(lprobs_t.gather(-1, topk_idx) * topk_prob).sum(-1)``,
    times ``self.t * self.t``) on the teacher outputs its ``fairseq/fed_utils.py:
    output2topk`` stores (the top-k *logits* and their ids). The fork's value is the
    cross-entropy ``−T² Σ_k p_k log q[idx_k]``; this reports it minus the constant
    ``−T² Σ_k p_k log p_k`` (the top-k teacher's entropy), a KL-like value that is >= 0
    and 0 when the student's probabilities at the k ids equal the teacher's. The
    teacher is a constant of the step, so the gradient is exactly the fork's:
    ``∂/∂s = T · (softmax(s/T) − p scattered at idx)`` per position.

    The fork weighs this by 0.9 and label-smoothed cross-entropy (eps 0.1, eps/V, i.e.
    ``smoothing="uniform"``) by 0.1, sums over non-padding tokens and divides by their
    number: `DistillSpec(kd_loss="topk_kl", kd_topk=4, kd_weight=0.9, ce_weight=0.1,
    label_smoothing=0.1)` with the padding mask as ``sample_weight``.

    Args:
        temperature: T > 0; softens both distributions.
        topk: k >= 1, how many of the teacher's largest logits are read (the fork: 4).
        t2_scaling: multiply by T² (the fork does).
        reduction, name: as for any `keras.losses.Loss`.

    ``y_true`` is the teacher: dense logits (..., V), whose top k are taken here (online
    distillation), or `sparse_teacher(ids, logits)` with exactly k entries per position
    (a top-k teacher cache; never expanded to V logits). ``y_pred`` are student logits
    (..., V). Computed in float32 whatever the input dtype (finite for float16 logits at
    T = 64).

    Example:

    >>> kd = TopKDistillationKL(temperature=1.0, topk=4)
    >>> kd(teacher_logits, student_logits, sample_weight=padding_mask)
    >>> kd(sparse_teacher(ids, top_logits), student_logits, sample_weight=padding_mask)
    """

    def __init__(
        self,
        temperature: float = 4.0,
        topk: int = 4,
        t2_scaling: bool = True,
        reduction: str = REDUCTION,
        name: str = "topk_distillation_kl",
        dtype=None,
    ):
        validate_temperature(temperature)
        if int(topk) != topk or topk < 1:
            raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        # Keras converts every y_true tensor, the sparse teacher's ids too, to the loss's
        # dtype: float32 holds ids below 2**24 exactly, float16 would not.
        if self.dtype not in ("float32", "float64"):
            raise ValueError(
                f"{type(self).__name__} computes in float32; leave dtype unset (got {self.dtype})"
            )
        self.temperature = float(temperature)
        self.topk = int(topk)
        self.t2_scaling = bool(t2_scaling)

    def call(self, y_true, y_pred):
        temperature = self.constant("temperature")
        ids, teacher_logits = teacher_topk(y_true, self.topk)
        log_p_teacher = ops.log_softmax(teacher_logits / temperature, axis=-1)
        scaled = ops.cast(y_pred, "float32") / temperature
        kl = _topk_kl(scaled, ids, log_p_teacher)
        if self.t2_scaling:
            kl = kl * self.constant("t_squared")
        return kl

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(temperature=self.temperature, topk=self.topk, t2_scaling=self.t2_scaling)
        return config
