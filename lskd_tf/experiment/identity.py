"""A run's identity: everything that changes its result, and what to do when it changed.

A run directory is reused (skipped when finished, resumed when interrupted) only when
the run it holds has exactly the identity of the run asked for. The identity is:

* the spec's record (task, model, dataset, label smoothing, every `DistillSpec` field,
  the seed, the teacher run or checkpoint, the teacher cache when it changes training);
* every `TrainConfig` field that changes results (`TrainConfig.identity`);
* the dataset and its options (not where it is stored: ``data_dir``, ``download``,
  ``cache`` do not change the examples), as the task reports them (`Task.data_identity`:
  ImageNet and CUB runs also record every resolved preprocessing option, since their
  preprocessing changed after runs existed), and, for data read from files, the
  content's fingerprint (``data.content``, `lskd_tf.tasks.Task.data_fingerprint`: each
  text file's SHA-256 and the learned vocabulary's for translation, the builder's name,
  version and splits for TFDS sets, a registered `lskd_tf.data.ImageFolder`'s listing,
  a `lskd_tf.data.TfDataset`'s user-given string), so other data under the same name
  and options make another run;
* the mixed-precision policy;
* for a student, its teacher's identity (a study's teacher run: retraining the teacher
  with other settings makes new students) or the SHA-256 of the teacher checkpoint file.

Its SHA-256 (`fingerprint`) is recorded in run.json beside it. A mismatch raises
`RunConflictError` naming the run, each setting that differs (old → new) and the ways
out: another study name, or ``on_conflict="overwrite"``, which moves the old run aside
to ``<study>/.replaced/`` (nothing is deleted) and trains it again.

Entries added to the identity after runs existed (`ADDED_LATER`, e.g. ``data.content``)
follow `lskd_tf.settings`' rule: a run recorded without one still matches (it resumes,
is skipped when finished and is reported), and the first re-run that computes the entry
records it in run.json; from then on a change of it is refused like any other.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from lskd_tf import distribute, tasks
from lskd_tf.checksums import file_sha256
from lskd_tf.experiment.specs import RunEnv, RunSpec, TeacherSpec
from lskd_tf.run_dir import FINISHED, RunDir

ON_CONFLICT = ("error", "overwrite")
REPLACED_DIR = ".replaced"
ADDED_LATER = (("data", "content"),)
"""Identity entries (paths of keys) that runs recorded before them lack."""


class RunConflictError(ValueError):
    """A run directory holds a run with other settings than the one asked for."""


def identity(spec: RunSpec, env: RunEnv) -> dict:
    """Everything that changes the run's result (see the module docstring)."""
    task = tasks.get(spec.task)
    data = task.data_identity(spec.data)
    content = task.data_fingerprint(spec.data)
    if content is not None:
        data["content"] = content
    found = {
        **spec.record(),
        "train": spec.train.identity(),
        "data": data,
        "mixed_precision": env.mixed_precision,
    }
    if spec.pretrained:  # the weights themselves, not only their file name
        found["pretrained_sha256"] = _existing_file_sha256(spec.pretrained, "pretrained weights")
    if isinstance(spec, TeacherSpec):
        return _canonical(found)
    found["use_teacher"] = spec.use_teacher
    if spec.teacher is not None:
        found["teacher"] = identity(spec.teacher, env)
    else:
        found["teacher"] = {
            "checkpoint_sha256": _existing_file_sha256(
                spec.teacher_checkpoint, "teacher checkpoint"
            )
        }
    return _canonical(found)


def _existing_file_sha256(path: str, what: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"{what} {path} does not exist; pass a .keras file from a run dir or a "
                         "PyTorch weights file (.safetensors/.pth)")  # fmt: skip
    return file_sha256(path)


def _canonical(value: dict) -> dict:
    """As it reads back from run.json (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(value, default=str))


def fingerprint(found: dict) -> str:
    """The identity's SHA-256 (of its canonical JSON)."""
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differences(old: dict | None, new: dict) -> list[str]:
    """``setting: old → new`` for each setting that differs (all of them when old is None)."""
    if old is None:
        return ["(the run was recorded without its identity by an older lskd_tf)"]
    before, after = _flat(old), _flat(new)
    return [
        f"{key}: {before.get(key, '(unset)')} → {after.get(key, '(unset)')}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def _lacks(recorded: dict, path: tuple[str, ...]) -> bool:
    for key in path[:-1]:
        recorded = recorded.get(key)
        if not isinstance(recorded, dict):
            return False
    return path[-1] not in recorded


def _without(found: dict, path: tuple[str, ...]) -> dict:
    if len(path) == 1:
        return {key: value for key, value in found.items() if key != path[0]}
    head, *rest = path
    if not isinstance(found.get(head), dict):
        return found
    return {**found, head: _without(found[head], tuple(rest))}


def as_recorded(wanted: dict, recorded: dict | None) -> dict:
    """``wanted`` without the `ADDED_LATER` entries that ``recorded`` lacks (a student's
    teacher identity included): what a run recorded before those entries must equal."""
    if not isinstance(recorded, dict):
        return wanted
    for path in ADDED_LATER:
        if _lacks(recorded, path):
            wanted = _without(wanted, path)
    if isinstance(wanted.get("teacher"), dict) and isinstance(recorded.get("teacher"), dict):
        wanted = {**wanted, "teacher": as_recorded(wanted["teacher"], recorded["teacher"])}
    return wanted


def _record_added_entries(run: RunDir, recorded: dict, wanted: dict, env: RunEnv) -> None:
    """Write the identity's new entries into a finished run recorded without them.

    Only a finished run (an unfinished one records its identity when it resumes, and
    the process holding it may be writing its run.json right now), and only by the
    chief of a multi-worker job (the only worker that writes).
    """
    if recorded.get("status") != FINISHED or not distribute.is_chief(env.strategy):
        return
    run.write(with_identity(recorded, wanted))
    print(f"recorded the data fingerprint of {run.name} (run.json had none yet)", flush=True)


def check(spec: RunSpec, env: RunEnv, *, on_conflict: str = "error") -> dict:
    """The run's identity, after making sure its directory holds this run or nothing.

    Raises `RunConflictError` when the directory holds a run with another identity
    (``on_conflict="error"``), or moves that run to ``<study>/.replaced/<run>-<time>``
    (``"overwrite"``) so it is trained again.
    """
    if on_conflict not in ON_CONFLICT:
        choices = ", ".join(ON_CONFLICT)
        raise ValueError(f"on_conflict must be one of {choices}, got {on_conflict!r}")
    wanted = identity(spec, env)
    run = RunDir(env.run_dir(spec))
    recorded = run.read()
    if recorded is None or recorded.get("identity") == wanted:
        return wanted
    if recorded.get("identity") == as_recorded(wanted, recorded.get("identity")):
        _record_added_entries(run, recorded, wanted, env)
        return wanted
    if on_conflict == "overwrite":
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = env.study_dir / REPLACED_DIR / f"{run.name}-{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run.path), str(target))
        print(f"moved the old run {run.name} (other settings) to {target}", flush=True)
        return wanted
    changed = differences(recorded.get("identity"), wanted)
    shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
    raise RunConflictError(
        f"run {run.name} in {run.path.parent} was trained with other settings ({shown}); "
        "to keep it, run under another name (--study=NEW); to retrain it, pass "
        f"--on_conflict=overwrite (the old run moves to {env.study_dir / REPLACED_DIR})"
    )


def with_identity(run_info: dict, found: dict) -> dict:
    """``run_info`` plus the identity and its fingerprint, as run.json records them."""
    return {**run_info, "identity": found, "fingerprint": fingerprint(found)}


__all__ = [
    "ADDED_LATER",
    "ON_CONFLICT",
    "RunConflictError",
    "as_recorded",
    "check",
    "differences",
    "fingerprint",
    "identity",
    "with_identity",
]
