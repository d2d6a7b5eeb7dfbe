"""Sequence-level knowledge distillation: students learn the teacher's translations.

Kim & Rush (2016): instead of the reference translations, the student is trained on the
teacher's beam-search translations of the training sources (`decoding.beam_outputs`).
With ``DistillSpec(sequence_level=True)`` the label term (``ce_weight``) fits those
translations and the KD term (``kd_weight``) adds word-level KD on them; ``ce_weight=1,
kd_weight=0`` is pure sequence-level KD.

`teacher_translations` decodes the training split once per teacher checkpoint and
decoding setting, and stores the ids beside the checkpoint:
``<teacher dir>/sequence_kd/<checkpoint stem>-<key digest>.npz``. The key holds the
checkpoint's weights' SHA-256, the dataset and its options, ``beam_size``,
``length_penalty`` and ``max_length``; a stored file is read only if its recorded key is
exactly that (anything else is a one-line error naming the file, never a silent reuse).
Writes are atomic, so a killed decode leaves nothing half-written and simply starts over;
two processes decoding the same teacher write the same file.

Example:
    >>> ids, described = teacher_translations(teacher, "runs/s/teacher-x/last.keras", spec)
    >>> train_fn = data.train_fn("embedded", max_tokens=2048, seed=0, target_ids=ids)
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import keras
import numpy as np

from lskd_tf import atomic
from lskd_tf.checksums import weights_sha256
from lskd_tf.tasks.translation import data, decoding

logger = logging.getLogger(__name__)
DIRECTORY = "sequence_kd"
DECODE_BATCH = 64


def key_of(teacher: keras.Model, spec, *, beam_size: int, length_penalty: float) -> dict:
    """Everything the teacher's translations depend on."""
    options, _ = _split(spec)
    return {
        "teacher_weights_sha256": weights_sha256(teacher),
        "dataset": spec.name,
        "options": sorted([k, v] for k, v in options.items()),
        "beam_size": int(beam_size),
        "length_penalty": float(length_penalty),
        "max_length": int(
            data.check_options(spec.name, data_dir=spec.data_dir, **options)["max_length"]
        ),
    }


def _split(spec) -> tuple[dict, dict]:
    from lskd_tf.tasks.translation.task import split_options

    return split_options(spec.options)


def stored_path(teacher_path: str | Path, key: dict) -> Path:
    """Where the translations of ``key`` live, beside the teacher checkpoint."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    teacher_path = Path(teacher_path)
    return teacher_path.parent / DIRECTORY / f"{teacher_path.stem}-{digest}.npz"


def teacher_translations(
    teacher: keras.Model, teacher_path: str | Path, spec, *, verbose: bool = False
) -> tuple[list[list[int]], dict]:
    """``(ids per training pair, description)``: decoded now or read from disk."""
    options, evaluation = _split(spec)
    key = key_of(teacher, spec, beam_size=int(evaluation["beam_size"]),
                 length_penalty=float(evaluation["length_penalty"]))  # fmt: skip
    path = stored_path(teacher_path, key)
    if path.exists():
        ids = _read(path, key)
        source = "read"
    else:
        ids = _decode(teacher, spec, options, key, verbose)
        _write(path, key, ids)
        source = "decoded"
    described = {"path": str(path), "pairs": len(ids), "source": source,
                 "tokens": int(sum(map(len, ids))), **key}  # fmt: skip
    return ids, described


def _decode(teacher, spec, options: dict, key: dict, verbose: bool) -> list[list[int]]:
    train_split = data.get_info(spec.name, data_dir=spec.data_dir, **options).train_split
    batches = data.eval_dataset(
        spec.name, train_split, batch_size=DECODE_BATCH, data_dir=spec.data_dir, **options
    )  # the training split in stored order, tokenized and truncated as training sees it
    ids: list[list[int]] = []
    for x, _, _ in batches:
        ids += decoding.beam_outputs(
            teacher, x["source"].numpy(), key["beam_size"], max_length=key["max_length"],
            length_penalty=key["length_penalty"],
        )  # fmt: skip
        if verbose:
            logger.info("sequence-level KD: decoded %d training sources", len(ids))
    return ids


def _write(path: Path, key: dict, ids: list[list[int]]) -> None:
    lengths = np.array([len(row) for row in ids], np.int64)
    values = np.concatenate([np.asarray(row, np.int32) for row in ids] or [np.zeros(0, np.int32)])
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, values=values, lengths=lengths, key=json.dumps(key, sort_keys=True))

    atomic.replace_with(path, save)


def _read(path: Path, key: dict) -> list[list[int]]:
    try:
        with np.load(path) as stored:
            recorded = json.loads(str(stored["key"]))
            values, lengths = stored["values"], stored["lengths"]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"cannot read the stored teacher translations {path} ({error}); delete the file "
            "to decode them again"
        ) from None
    if recorded != json.loads(json.dumps(key, sort_keys=True)):
        raise ValueError(
            f"{path} holds translations of another teacher or setting than this run asks "
            "for; delete it to decode them again"
        )
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return [values[starts[i] : starts[i + 1]].tolist() for i in range(len(lengths))]
