"""Sequence-level knowledge distillation: students learn the teacher's translations.

Kim & Rush (2016): instead of the reference translations, the student is trained on the
teacher's beam-search translations of the training sources (`decoding.translate_ids`).
With ``DistillSpec(sequence_level=True)`` the label term (``ce_weight``) fits those
translations and the KD term (``kd_weight``) adds word-level KD on them; ``ce_weight=1,
kd_weight=0`` is pure sequence-level KD.

`teacher_translations` decodes the training split once per teacher checkpoint and
decoding setting, and stores the ids beside the checkpoint (`stored`:
``<teacher dir>/sequence_kd/<checkpoint stem>-<key digest>.npz``, keyed by the teacher's
weights, the dataset and its options, ``max_length``, ``beam_size`` and
``length_penalty``; another key is refused). A killed decode leaves nothing half-written
and simply starts over; two processes decoding the same teacher write the same file.

Example:
    >>> ids, described = teacher_translations(teacher, "runs/s/teacher-x/last.keras", spec)
    >>> train_fn = data.train_fn("embedded", max_tokens=2048, seed=0, target_ids=ids)
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np

from lskd_tf.tasks.translation import data, decoding, stored

logger = logging.getLogger(__name__)
DIRECTORY = "sequence_kd"
DECODE_BATCH = 64


def key_of(teacher: keras.Model, spec, *, beam_size: int, length_penalty: float) -> dict:
    """Everything the teacher's translations depend on."""
    options, _ = data.split_options(spec.options)
    return {**stored.data_key(teacher, spec, options), "beam_size": int(beam_size),
            "length_penalty": float(length_penalty)}  # fmt: skip


def stored_path(teacher_path: str | Path, key: dict) -> Path:
    """Where the translations of ``key`` live, beside the teacher checkpoint."""
    return stored.path_for(teacher_path, DIRECTORY, "", key)


def teacher_translations(
    teacher: keras.Model, teacher_path: str | Path, spec, *, verbose: bool = False
) -> tuple[list[list[int]], dict]:
    """``(ids per training pair, description)``: decoded now or read from disk."""
    options, evaluation = data.split_options(spec.options)
    key = key_of(teacher, spec, beam_size=int(evaluation["beam_size"]),
                 length_penalty=float(evaluation["length_penalty"]))  # fmt: skip
    path = stored_path(teacher_path, key)
    if path.exists():
        arrays, source = stored.read(path, key, "stored teacher translations"), "read"
    else:
        arrays, source = _decode(teacher, spec, options, key, verbose), "decoded"
        stored.write(path, key, arrays)
    starts = np.concatenate([[0], np.cumsum(arrays["lengths"])])
    ids = [arrays["values"][a:b].tolist() for a, b in zip(starts[:-1], starts[1:])]
    described = {"path": str(path), "pairs": len(ids), "source": source,
                 "tokens": int(sum(map(len, ids))), **key}  # fmt: skip
    return ids, described


def _decode(teacher, spec, options: dict, key: dict, verbose: bool) -> dict[str, np.ndarray]:
    batches = data.train_split_in_order(
        spec.name, batch_size=DECODE_BATCH, data_dir=spec.data_dir, **options
    )
    ids: list[list[int]] = []
    for x, _, _ in batches:
        ids += decoding.translate_ids(
            teacher, x["source"].numpy(), beam_size=key["beam_size"],
            max_length=key["max_length"], length_penalty=key["length_penalty"],
        )  # fmt: skip
        if verbose:
            logger.info("sequence-level KD: decoded %d training sources", len(ids))
    values = [np.asarray(row, np.int32) for row in ids]
    return {"values": np.concatenate(values or [np.zeros(0, np.int32)]),
            "lengths": np.array([len(row) for row in ids], np.int64)}  # fmt: skip
