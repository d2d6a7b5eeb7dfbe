"""Atomic file writes: readers see the old file or the new one, never half of one.

Every file lskd_tf writes that another process (or a restart) may read goes through
here: a temporary file in the same directory, then `os.replace`, which is atomic on
POSIX file systems. Temporary names start with ``.tmp`` and carry the writer's PID,
so two processes never write the same temporary file.

Example:

>>> write_json(Path("runs/x/run.json"), {"status": "running"})
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMPORARY_PREFIX = ".tmp"


def temporary_path(path: str | os.PathLike) -> Path:
    """The temporary file a write of ``path`` goes through (same directory, same suffix)."""
    path = Path(path)
    return path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{path.name}")


def replace_with(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temporary)`` and move the result onto ``path`` in one step."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():  # the write failed half way: leave no orphan behind
            temporary.unlink()
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return replace_with(path, lambda temporary: temporary.write_text(text))


def write_json(path: str | os.PathLike, content: Any, **dump_options: Any) -> Path:
    """Write ``content`` as JSON (indent 2 unless told otherwise) atomically."""
    dump_options.setdefault("indent", 2)
    return write_text(path, json.dumps(content, **dump_options))


def save_model(model, path: str | os.PathLike) -> Path:
    """``model.save(path)`` atomically (a `.keras` file is a zip: half of one is unreadable)."""
    return replace_with(path, model.save)


def copy_file(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """A copy of ``source`` at ``path``, atomically (``source`` itself is only read)."""
    return replace_with(path, lambda temporary: shutil.copyfile(source, temporary))


def save_weights(model, path: str | os.PathLike) -> Path:
    """``model.save_weights(path)`` atomically."""
    return replace_with(path, model.save_weights)
