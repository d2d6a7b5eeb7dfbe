"""Beam-search decoding of a translation Transformer (`models.get`), in the graph.

One implementation serves every caller: `translate_ids` (the best hypothesis per source)
for BLEU evaluation and sequence-level KD, `beam_search` (every finished hypothesis and
its score) and the exported SavedModel's ``translate`` signature (`serving`), which calls
`search` inside its own graph.

Beam search follows fairseq's ``SequenceGenerator``:

* a hypothesis's score is the sum of its tokens' log-probabilities (EOS included, in
  float64), normalized at the end by ``length ** length_penalty`` where length counts
  the EOS (fairseq ``--lenpen``, default 1: the mean log-probability per token);
* each step takes the ``2 * beam_size`` best extensions of the live hypotheses (ties to
  the lower (beam, token) index); an EOS among the first ``beam_size`` of them finishes
  that hypothesis, the first ``beam_size`` other extensions stay live; a source is done
  once it has ``beam_size`` finished hypotheses; at its last allowed step only EOS may
  follow;
* padding and BOS are never generated; the best finished hypothesis (normalized score,
  ties to the one finished first) is returned, without BOS/EOS.

With ``beam_size=1`` this is greedy decoding, and with a beam wide enough to keep every
prefix it is exact search (the tests compare it with an argmax loop over the full model
and with enumerating every sequence of a tiny vocabulary).

**The length rule** (`length_limits`, the only place it is written): source ``i`` may
produce at most ``min(max_length, floor(max_len_a * n_i) + max_len_b)`` tokens, EOS
included, where ``n_i`` counts its source tokens (EOS included, padding excluded):
fairseq's ``--max-len-a/--max-len-b`` per sentence (fairseq applies them to the batch's
padded width; per sentence a translation does not depend on what it is batched with).
Without ``max_len_b`` the limit is ``max_length`` alone: what BLEU evaluation uses, with
the dataset's ``max_length`` (the longest target training ever saw). A source with no
token besides EOS and padding (an empty sentence) gets limit 0: an empty translation,
not a guess.

Cost: the encoder runs once per batch; each step feeds one token per hypothesis through
the decoder with keras_hub's ``TransformerDecoder`` key/value cache (`models.decode_step`:
the decoder's self-attention keys/values of the prefix are kept, the cross-attention
keys/values of the source are computed once), so a step costs O(1) layers' work instead
of re-running the decoder over the whole prefix. The beam bookkeeping is tensor ops,
batched over sentences and beams, inside one ``tf.function`` per model architecture,
traced once per process and fed each model's weights (`_Shared`; a
``tf.while_loop`` that stops when every sentence is done); sentences already done keep
their rows until the batch ends. No XLA (not measured for decoding): the cache's and
the hypotheses' shapes depend on the batch (source width, limits), so XLA would compile
again for most batches. ``benchmarks/decoding_speed.py`` measures it against the
previous per-sentence host loop without a cache.

Example:
    >>> from lskd_tf.tasks.translation import decoding, models
    >>> model = models.get("transformer_tiny", vocab_size=100, max_length=32)
    >>> decoding.translate_ids(model, [[5, 6, 3, 0]], beam_size=4, max_length=32)
    [[17, 17, 9, ...]]
"""

from __future__ import annotations

import json
import math
import weakref

import keras
import numpy as np
import tensorflow as tf

from lskd_tf.tasks.translation.models import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Layers,
    decode_step,
    empty_cache,
    encode,
)

_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------------------- the length rule


def check_length_rule(
    max_length, max_len_a: float = 0.0, max_len_b: int | None = None, max_positions=None
) -> None:
    """One-line ValueErrors for a length rule that cannot be applied (see `length_limits`)."""
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if max_positions is not None and max_length > max_positions:
        raise ValueError(
            f"max_length {max_length} exceeds the model's {max_positions} learned "
            "positions; lower max_length"
        )
    if not (math.isfinite(max_len_a) and max_len_a >= 0):
        raise ValueError(f"max_len_a must be a finite number >= 0, got {max_len_a!r}")
    if max_len_b is not None and (
        isinstance(max_len_b, bool) or not isinstance(max_len_b, (int, np.integer))
    ):
        raise ValueError(f"max_len_b must be an integer or None, got {max_len_b!r}")


def length_limits(
    source, max_length: int, max_len_a: float = 0.0, max_len_b: int | None = None
) -> tf.Tensor:
    """int32 (B,): the most tokens (EOS included) each source's translation may have.

    ``min(max_length, floor(max_len_a * n) + max_len_b)`` (only ``max_length`` when
    ``max_len_b`` is None), ``n`` = the source's tokens incl. EOS, padding excluded; 0
    for a source without any token besides EOS and padding. See the module docstring.
    """
    source = tf.convert_to_tensor(source, tf.int32)
    real = tf.not_equal(source, PAD_ID)
    count = tf.reduce_sum(tf.cast(real, tf.int32), axis=1)
    limits = tf.fill(tf.shape(count), tf.constant(int(max_length), tf.int32))
    if max_len_b is not None:
        relative = tf.floor(float(max_len_a) * tf.cast(count, tf.float64)) + int(max_len_b)
        limits = tf.minimum(limits, tf.cast(tf.maximum(relative, 0.0), tf.int32))
    empty = tf.logical_not(tf.reduce_any(real & tf.not_equal(source, EOS_ID), axis=1))
    return tf.where(empty, 0, limits)


def learned_positions(layers: Layers) -> int | None:
    """The decoder's learned position count (the longest output), None for sinusoids."""
    position = layers["decoder_embed_position"]
    return position.max_length if position.positions == "learned" else None


# ----------------------------------------------------------------------------- the search


def search(
    layers: Layers, source, limits, *, beam_size: int | tf.Tensor, length_penalty
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Batched beam search in TensorFlow ops (call it inside a ``tf.function``).

    Args:
        layers: the model's `models.Layers`.
        source: int32 (B, S) source ids, padded with 0.
        limits: int32 (B,) most output tokens per source (`length_limits`).
        beam_size: hypotheses kept per source (int or int32 scalar tensor).
        length_penalty: fairseq's ``lenpen`` (float or float64 scalar tensor).

    Returns:
        ``(scores, tokens, lengths)``: per source, up to ``beam_size`` finished
        hypotheses in the order they finished: float64 (B, k) normalized scores (-inf
        in unused slots), int32 (B, k, L) ids without BOS/EOS (0 after ``lengths``) and
        int32 (B, k) lengths.
    """
    k = tf.convert_to_tensor(beam_size, tf.int32)
    vocab = int(layers.embedding("target").input_dim)
    width = tf.minimum(2 * k, k * vocab)
    source = tf.convert_to_tensor(source, tf.int32)
    limits = tf.convert_to_tensor(limits, tf.int32)
    batch = tf.shape(source)[0]
    steps = tf.reduce_max(tf.concat([limits, [0]], 0))
    length = tf.maximum(steps, 1)  # cache and hypothesis width
    memory, source_mask = encode(layers, source, training=False)
    memory = tf.repeat(memory, k, axis=0)  # row b * k + j: beam j of source b
    source_mask = tf.repeat(source_mask, k, axis=0)
    never = tf.reduce_any(tf.one_hot([PAD_ID, BOS_ID], vocab, on_value=True,
                                     off_value=False), axis=0)  # fmt: skip
    only_eos = tf.logical_not(tf.one_hot(EOS_ID, vocab, on_value=True, off_value=False))
    rank = tf.range(width)[None, :]
    penalty = tf.cast(length_penalty, tf.float64)
    minus_inf = tf.constant(-float("inf"), tf.float64)
    row_base = (tf.range(batch) * k)[:, None]

    def log_probs_of(tokens, index, cache):
        logits, cache = decode_step(layers, memory, source_mask, tokens, index, cache)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        return tf.cast(log_probs, tf.float64), cache

    # Step 0 (BOS) outside the loop: it fills the cross-attention caches once.
    cache = empty_cache(layers, batch * k, length)
    first, cache = log_probs_of(tf.fill([batch * k], BOS_ID), 0, cache)
    cross = [pair[1] for pair in cache]
    self_cache = [pair[0] for pair in cache]

    def step(t, log_probs, self_cache, tokens, scores, fin_scores, fin_tokens, fin_len,
             fin_count, active):  # fmt: skip
        last = tf.equal(t, limits - 1)[:, None, None]  # (B, 1, 1): only EOS may follow
        banned = tf.logical_or(never, tf.logical_and(last, only_eos))  # (B, 1, V)
        log_probs = tf.where(banned, minus_inf, tf.reshape(log_probs, [batch, k, vocab]))
        candidates = tf.reshape(scores[:, :, None] + log_probs, [batch, k * vocab])
        values, flat = tf.math.top_k(candidates, width)  # ties: the lower index first
        beam, token = flat // vocab, flat % vocab
        is_eos = tf.equal(token, EOS_ID)
        # An EOS among the first k finishes its hypothesis while the source has fewer
        # than k finished ones, in rank order.
        eligible = is_eos & (rank < k) & tf.math.is_finite(values) & active[:, None]
        slot = fin_count[:, None] + tf.cumsum(tf.cast(eligible, tf.int32), axis=1) - 1
        accept = eligible & (slot < k)
        where = tf.where(accept)
        into = tf.stack([where[:, 0], tf.cast(tf.gather_nd(slot, where), tf.int64)], -1)
        normalized = values / tf.pow(tf.cast(t + 1, tf.float64), penalty)
        hypotheses = tf.gather(tokens, beam, batch_dims=1)  # (B, width, L)
        fin_scores = tf.tensor_scatter_nd_update(fin_scores, into, tf.gather_nd(normalized, where))
        fin_tokens = tf.tensor_scatter_nd_update(fin_tokens, into, tf.gather_nd(hypotheses, where))
        fin_len = tf.tensor_scatter_nd_update(fin_len, into, tf.fill(tf.shape(where)[:1], t))
        fin_count = fin_count + tf.reduce_sum(tf.cast(accept, tf.int32), axis=1)
        # The first k other extensions stay live, in rank order.
        order = tf.argsort(tf.where(is_eos, width + rank, rank), axis=1, stable=True)[:, :k]
        kept_beam = tf.gather(beam, order, batch_dims=1)
        kept_token = tf.gather(token, order, batch_dims=1)
        kept_score = tf.gather(values, order, batch_dims=1)
        grown = tf.gather(tokens, kept_beam, batch_dims=1)
        column = tf.one_hot(t, length, dtype=tf.int32)
        grown = grown + kept_token[:, :, None] * column[None, None, :]
        tokens = tf.where(active[:, None, None], grown, tokens)
        scores = tf.where(active[:, None], kept_score, scores)
        active = active & (fin_count < k) & (t + 1 < limits)
        # The kept hypotheses' caches, then the next token's log-probabilities (computed
        # once more than needed at the last step: simpler than a second loop exit).
        rows = tf.reshape(row_base + kept_beam, [-1])
        reordered = [tf.gather(c, rows) for c in self_cache]
        log_probs, cache = log_probs_of(
            tf.reshape(kept_token, [-1]), t + 1, list(zip(reordered, cross))
        )
        return (t + 1, log_probs, [pair[0] for pair in cache], tokens, scores, fin_scores,
                fin_tokens, fin_len, fin_count, active)  # fmt: skip

    def body(*state):
        # A constant beam size gives static shapes (B, k, ...) that gathers lose; a loop
        # variable must keep its shape.
        new = step(*state)
        for after, before in zip(tf.nest.flatten(new), tf.nest.flatten(state)):
            after.set_shape(before.shape)
        return new

    state = (
        tf.constant(0),
        first,
        self_cache,
        tf.zeros([batch, k, length], tf.int32),
        tf.tile(tf.concat([[0.0], tf.fill([k - 1], minus_inf)], 0)[None, :], [batch, 1]),
        tf.fill([batch, k], minus_inf),
        tf.zeros([batch, k, length], tf.int32),
        tf.zeros([batch, k], tf.int32),
        tf.zeros([batch], tf.int32),
        limits > 0,
    )
    *_, fin_scores, fin_tokens, fin_len, _, _ = tf.while_loop(
        lambda t, *rest: tf.logical_and(t < steps, tf.reduce_any(rest[-1])), body, state
    )
    return fin_scores, fin_tokens, fin_len


def best_of(scores, tokens, lengths) -> tuple[tf.Tensor, tf.Tensor]:
    """``(ids (B, L), lengths (B,))`` of each source's best finished hypothesis (ties: the
    first finished; a source without any, e.g. an empty one: length 0)."""
    best = tf.math.top_k(scores, 1).indices[:, 0]
    return tf.gather(tokens, best, batch_dims=1), tf.gather(lengths, best, batch_dims=1)


# ----------------------------------------------------------------------------- Python API


class _Compiled:
    """The compiled `search` of one model: traced once, for every batch and beam size."""

    def __init__(self, model: keras.Model):
        layers = Layers.of(model)
        self.max_positions = learned_positions(layers)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([], tf.float64),
                tf.TensorSpec([], tf.int32),
            ]
        )
        def run(source, limits, length_penalty, beam_size):
            return search(
                layers, source, limits, beam_size=beam_size, length_penalty=length_penalty
            )

        self.run = run


class _Shared:
    """The compiled search of a model *architecture*, run with any model's weights.

    A study decodes many models of one architecture (best and last checkpoint of every
    teacher and student), and tracing `search` is the costly part of decoding a few
    batches. A clone of the first model of each architecture (same config, same
    variable shapes) keeps the one traced function; every call first copies the
    caller's weights into it (a memory copy, not a trace), so outputs are those of the
    caller's model: the same graph on the same weights.
    """

    def __init__(self, model: keras.Model):
        self.shell = keras.models.clone_model(model)
        self.compiled = _Compiled(self.shell)

    def matches(self, model: keras.Model) -> bool:
        return len(self.shell.weights) == len(model.weights) and all(
            a.shape == b.shape and a.dtype == b.dtype
            for a, b in zip(self.shell.weights, model.weights)
        )

    def bind(self, model: keras.Model) -> _Compiled:
        for mine, theirs in zip(self.shell.weights, model.weights):
            mine.assign(theirs)
        return self.compiled


_SHARED: dict[str, _Shared] = {}
_SHARED_LIMIT = 4  # architectures kept per process (each holds one copy of the weights)


def _architecture(model: keras.Model) -> str | None:
    """A key equal for models that trace the same search (None: not cloneable)."""
    try:
        config = json.dumps(
            {"class": type(model).__qualname__, "config": model.get_config()},
            sort_keys=True, default=repr,
        )  # fmt: skip
    except (NotImplementedError, TypeError, ValueError):
        return None
    return config + repr([(tuple(w.shape), str(w.dtype)) for w in model.weights])


def _shared_or_own(model: keras.Model) -> _Shared | _Compiled:
    """The shared search of ``model``'s architecture, else one traced for it alone."""
    key = _architecture(model)
    if key is None:
        return _Compiled(model)
    shared = _SHARED.get(key)
    if shared is None:
        try:
            shared = _Shared(model)
        except (NotImplementedError, TypeError, ValueError):
            return _Compiled(model)
        if not shared.matches(model):
            return _Compiled(model)
        if len(_SHARED) >= _SHARED_LIMIT:
            _SHARED.pop(next(iter(_SHARED)))
        _SHARED[key] = shared
    return shared


def _compiled(model: keras.Model) -> _Compiled:
    """The compiled search for ``model``, with its current weights. Which one (`_Shared`
    by architecture, or its own) is decided once per model, not per batch."""
    try:
        found = _FUNCTIONS.get(model)
        if found is None:
            found = _FUNCTIONS[model] = _shared_or_own(model)
    except TypeError:  # not weak-referenceable: decide again on every call
        found = _shared_or_own(model)
    return found.bind(model) if isinstance(found, _Shared) else found


def _check_source(source_ids) -> np.ndarray:
    source = np.asarray(source_ids)
    if source.ndim != 2 or source.shape[0] == 0 or source.shape[1] == 0:
        raise ValueError(
            f"source_ids must be a non-empty 2-D (batch, length) array of token ids, "
            f"got shape {source.shape}"
        )
    if not np.issubdtype(source.dtype, np.integer):
        raise ValueError(f"source_ids must be integer token ids, got dtype {source.dtype}")
    # Drop columns that are padding in every row (sentence batches are padded to a max).
    used = np.nonzero((source != PAD_ID).any(axis=0))[0]
    width = int(used[-1]) + 1 if used.size else 1
    return source[:, :width].astype(np.int32)


def check_beam(beam_size, length_penalty) -> None:
    """One-line ValueErrors for a beam size < 1 or a non-finite length penalty."""
    if isinstance(beam_size, bool) or not isinstance(beam_size, (int, np.integer)):
        raise ValueError(f"beam_size must be a positive integer, got {beam_size!r}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not np.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be finite, got {length_penalty}")


def beam_search(
    model: keras.Model,
    source_ids,
    *,
    max_length: int,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    max_len_a: float = 0.0,
    max_len_b: int | None = None,
) -> list[list[tuple[float, list[int]]]]:
    """Every finished hypothesis per source, best first: ``[(score, ids), ...]``.

    Args:
        model: a model built by `models.get` (or loaded from its ``.keras`` file).
        source_ids: int (B, S) source ids, padded with 0 (as in the data's batches).
        max_length: most output tokens per hypothesis, EOS included (the dataset's
            ``max_length``; at most the model's learned positions).
        beam_size: live hypotheses per source (1: greedy).
        length_penalty: fairseq's ``lenpen``: scores are ``sum log p / length ** lp``.
        max_len_a, max_len_b: the per-source bound ``floor(a * n) + b`` (`length_limits`;
            none when ``max_len_b`` is None).

    Returns:
        For each source, up to ``beam_size`` ``(normalized score, ids)`` pairs sorted by
        score, ties in the order they finished (ids without BOS/EOS/padding; an empty
        source has none).
    """
    check_beam(beam_size, length_penalty)
    compiled = _compiled(model)
    check_length_rule(max_length, max_len_a, max_len_b, compiled.max_positions)
    source = _check_source(source_ids)
    limits = length_limits(source, max_length, max_len_a, max_len_b)
    scores, tokens, lengths = compiled.run(
        tf.constant(source), limits, tf.constant(float(length_penalty), tf.float64),
        tf.constant(int(beam_size), tf.int32),
    )  # fmt: skip
    scores, tokens, lengths = scores.numpy(), tokens.numpy(), lengths.numpy()
    found = []
    for row_scores, row_tokens, row_lengths in zip(scores, tokens, lengths):
        pairs = [
            (float(score), row_tokens[j, :length].tolist())
            for j, (score, length) in enumerate(zip(row_scores, row_lengths))
            if np.isfinite(score)
        ]
        found.append(sorted(pairs, key=lambda pair: -pair[0]))  # stable: first finished first
    return found


def translate_ids(
    model: keras.Model,
    source_ids,
    *,
    max_length: int,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    max_len_a: float = 0.0,
    max_len_b: int | None = None,
) -> list[list[int]]:
    """The best hypothesis per source as a list of ids (no BOS, EOS or padding).

    Beam search as fairseq (see the module docstring); arguments as `beam_search`.

    Example:
        >>> translate_ids(model, x["source"].numpy(), beam_size=4, max_length=64)
    """
    return [
        found[0][1] if found else []
        for found in beam_search(
            model,
            source_ids,
            max_length=max_length,
            beam_size=beam_size,
            length_penalty=length_penalty,
            max_len_a=max_len_a,
            max_len_b=max_len_b,
        )
    ]
