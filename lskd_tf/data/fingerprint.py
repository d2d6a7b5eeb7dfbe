"""Content fingerprints of datasets read from user files: what a run's identity records.

A run's identity (`lskd_tf.experiment.identity`) names its dataset and options; for
data read from files it must also say *which bytes* were read, or a re-run on other
sentences (another ``data_dir``, a file edited in place) would reuse the old run. Each
kind of data has its own fingerprint, a small JSON-able dict:

* text files (`files_sha256`): the SHA-256 of each file's bytes, streamed (a WMT-sized
  corpus costs one read) and cached beside the data in ``.lskd_tf-sha256.json``, keyed
  by each file's name, size and modification time, so an unchanged corpus is not read
  again on the next start. A directory that cannot be written only loses the cache.
* image folders (`image_folder`): the SHA-256 of the sorted list of files with their
  sizes and modification times (or, with ``content=True``, every file's SHA-256).
* TFDS sets (`tfds`): the builder's name, version and the splits read.

Example:
    >>> files_sha256(["data/train.de", "data/train.en"]).joint   # one read, then cached
    '5f1c...'
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from lskd_tf import atomic

logger = logging.getLogger(__name__)

CACHE_FILE = ".lskd_tf-sha256.json"
_CACHE_ENTRIES = 32  # file sets remembered per directory (the newest are kept)
_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Digests:
    """SHA-256 of each of several files (in order) and of their concatenated bytes."""

    files: tuple[str, ...]
    joint: str


def _stamp(path: Path) -> list:
    found = path.stat()
    return [path.name, found.st_size, found.st_mtime_ns]


def _hash_files(paths: Sequence[Path]) -> Digests:
    """One streaming pass over ``paths``: each file's digest and the joint digest."""
    joint, each = hashlib.sha256(), []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(_BLOCK), b""):
                digest.update(block)
                joint.update(block)
        each.append(digest.hexdigest())
    return Digests(tuple(each), joint.hexdigest())


def _read_cache(path: Path) -> list[dict]:
    try:
        entries = json.loads(path.read_text()).get("entries", [])
    except (OSError, ValueError, AttributeError):
        return []  # missing, unreadable or not ours: computed again
    return [e for e in entries if isinstance(e, dict)]


def files_sha256(paths: Sequence[str | os.PathLike]) -> Digests:
    """The `Digests` of files in one directory, read at most once per change.

    The cache (``CACHE_FILE`` in their directory) is keyed by every file's name, size
    and modification time in nanoseconds: an edited or replaced file is hashed again.
    """
    paths = [Path(p) for p in paths]
    directories = {p.parent for p in paths}
    if len(directories) != 1:
        raise ValueError(f"files_sha256 takes files of one directory, got {sorted(directories)}")
    cache = paths[0].parent / CACHE_FILE
    key = [_stamp(p) for p in paths]
    entries = _read_cache(cache)
    for entry in entries:
        if entry.get("files") == key and len(entry.get("sha256", ())) == len(paths):
            return Digests(tuple(entry["sha256"]), entry["joint"])
    found = _hash_files(paths)
    if [_stamp(p) for p in paths] != key:  # written while we read: do not cache a mix
        return found
    entry = {"files": key, "sha256": list(found.files), "joint": found.joint}
    kept = [e for e in entries if e.get("files") != key][-(_CACHE_ENTRIES - 1) :]
    try:
        atomic.write_json(cache, {"entries": [*kept, entry]}, indent=1)
    except OSError as error:  # a read-only data directory: hash again next time
        logger.info("cannot cache data fingerprints in %s: %s", cache, error)
    return found


def image_folder(path: str | os.PathLike, *, content: bool = False) -> dict:
    """The fingerprint of a folder of images: its files, their sizes and mtimes.

    Every file under ``path`` (sorted relative paths; hidden files such as the
    fingerprint cache are left out) contributes ``path, size, mtime``; with
    ``content=True`` it is ``path, size, SHA-256 of its bytes`` instead (one read of the
    whole folder on every call, never cached): a copy whose modification times are not
    kept keeps its fingerprint, and a file rewritten with its old size and mtime is seen.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {os.fspath(path)!r} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    digest = hashlib.sha256()
    for file in files:
        found = file.stat()
        line = f"{file.relative_to(root).as_posix()}\t{found.st_size}\t"
        line += _hash_files([file]).joint if content else str(found.st_mtime_ns)
        digest.update(line.encode() + b"\n")
    return {"files": len(files), "listing_sha256": digest.hexdigest(), "content": bool(content)}


def tfds(name: str, data_dir: str | None, splits: Sequence[str]) -> dict:
    """The fingerprint of a TFDS set: builder name, version and the splits read.

    TFDS examples are fixed by the builder's version, so no bytes are read.
    """
    return {"tfds": name, "version": _tfds_version(name, data_dir), "splits": list(splits)}


@functools.lru_cache(maxsize=32)
def _tfds_version(name: str, data_dir: str | None) -> str:
    import tensorflow_datasets

    return str(tensorflow_datasets.builder(name, data_dir=data_dir).version)


__all__ = ["CACHE_FILE", "Digests", "files_sha256", "image_folder", "tfds"]
