"""Arrays computed once from a teacher checkpoint and stored beside it, under a key.

Sequence-level KD (`sequence_kd`: the teacher's translations) and the teacher-output
cache (`teacher_cache`: its logits per token) both keep what they computed from a
teacher in one ``.npz`` file ``<teacher dir>/<directory>/<checkpoint stem>-<label>-<key
digest>.npz``. The key (a JSON-able dict: the teacher's weight hash, the data, the
settings) is stored inside; a file whose recorded key differs from the one asked for is a
one-line error naming it, never a silent reuse. Writes are atomic (`lskd_tf.atomic`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from lskd_tf import atomic
from lskd_tf.checksums import weights_sha256
from lskd_tf.tasks.translation import data


def data_key(teacher: keras.Model, spec, options: dict) -> dict:
    """What every stored teacher output depends on: the teacher's weights and the data."""
    resolved = data.check_options(spec.name, data_dir=spec.data_dir, **options)
    return {
        "teacher_weights_sha256": weights_sha256(teacher),
        "dataset": spec.name,
        "options": sorted([k, v] for k, v in options.items()),
        "max_length": int(resolved["max_length"]),
    }


def path_for(teacher_path: str | Path, directory: str, label: str, key: dict) -> Path:
    """Where the arrays of ``key`` live, beside the teacher checkpoint."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    teacher_path = Path(teacher_path)
    name = "-".join(part for part in (teacher_path.stem, label, digest) if part)
    return teacher_path.parent / directory / f"{name}.npz"


def write(path: Path, key: dict, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, key=json.dumps(key, sort_keys=True), **arrays)

    atomic.replace_with(path, save)


def read(path: Path, key: dict, what: str) -> dict[str, np.ndarray]:
    """The arrays stored at ``path`` for ``key``; ``what`` names them in errors."""
    try:
        with np.load(path) as stored:
            recorded = json.loads(str(stored["key"]))
            arrays = {name: stored[name] for name in stored.files if name != "key"}
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"cannot read the {what} {path} ({error}); delete it to compute it again"
        ) from None
    if recorded != json.loads(json.dumps(key, sort_keys=True)):
        raise ValueError(
            f"the {what} {path} holds outputs of another teacher or setting than this run "
            "asks for; delete it to compute it again"
        )
    return arrays
