"""Directory claims: which process works on a run (or builds a cache) right now.

A process claims a directory by creating ``<dir>/claim.json`` with
``O_CREAT | O_EXCL`` (atomic on POSIX and NFSv3+) and refreshes the file's timestamp
while it works (a heartbeat, `touch`). A claim is taken over only when it is stale:
its process is gone (same host) or its heartbeat is older than ``stale_after_s``.
Used by `lskd_tf.sweep` (runs) and `lskd_tf.teacher_cache` (cache builds).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

CLAIM_FILE = "claim.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_is_stale(path: Path, stale_after_s: float) -> bool:
    try:
        owner = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (FileNotFoundError, json.JSONDecodeError):
        return True  # vanished or half-written by a dead process
    if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1))):
        return True
    return age > stale_after_s


def try_claim(run_dir: Path, stale_after_s: float = 600.0) -> bool:
    """Atomically claim a run for this process; False if another live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not claim_is_stale(path, stale_after_s):
                return False
            # Stale: remove it and race for it again; O_EXCL lets only one process win.
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as file:
            file.write(owner)
        return True
    return False


def release(run_dir: Path) -> None:
    try:
        (run_dir / CLAIM_FILE).unlink()
    except FileNotFoundError:
        pass


def touch(directory: Path) -> None:
    """Refresh this process's claim on `directory` (the heartbeat)."""
    try:
        os.utime(Path(directory) / CLAIM_FILE)
    except FileNotFoundError:
        pass
