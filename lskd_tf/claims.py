"""Directory claims: which process works on a run (or builds a cache) right now.

A process claims a directory in two ways at once:

* a kernel lock: ``fcntl.flock`` on ``<dir>/claim.lock``, held on a file descriptor
  kept open for as long as the claim is held. The kernel drops it the moment the
  process dies (killed, crashed, or a zombie not reaped yet), so on one host a dead
  holder never blocks anyone, and a PID reused after a restart means nothing.
* ``<dir>/claim.json`` (host, pid, time), created with ``O_CREAT | O_EXCL`` (atomic on
  POSIX and NFSv3+), for humans and for other hosts: some network file systems do not
  carry ``flock`` across hosts, so another host's claim is respected while its file's
  timestamp (its heartbeat) is younger than ``stale_after_s``. A daemon thread
  refreshes that timestamp every ``heartbeat_s`` while the claim is held, whatever the
  process is doing (training, evaluating, building a teacher cache).

Where ``flock`` is not available (``ENOLCK``/``EOPNOTSUPP`` on some NFS mounts) claims
fall back to ``claim.json`` alone: taken over when its process is gone (same host) or
its heartbeat is older than ``stale_after_s``. Hostnames must be unique among the
machines sharing a directory.

Only the claim holder writes into a claimed directory, so temporary files
(`lskd_tf.atomic.TEMPORARY_PREFIX`) found there on claiming are orphans of a killed
writer and are deleted. Used by `lskd_tf.sweep` (runs) and `lskd_tf.teacher_cache`
(cache builds).

Example:

>>> if try_claim(run_dir):
...     try:
...         train(run_dir)
...     finally:
...         release(run_dir)
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lskd_tf import atomic
from lskd_tf.run_dir import RESUME_DIR

try:
    import fcntl
except ImportError:  # not POSIX: claim.json alone
    fcntl = None

CLAIM_FILE = "claim.json"
LOCK_FILE = "claim.lock"
HEARTBEAT_S = 30.0

# flock errors meaning "this file system cannot lock": fall back to claim.json alone.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}
# A claim.json that cannot be parsed is being written unless it is older than this.
_WRITE_GRACE_S = 10.0


@dataclass
class _Held:
    """A claim this process holds: its lock (None without flock) and heartbeat thread."""

    directory: Path
    lock_fd: int | None
    stop: threading.Event
    thread: threading.Thread


_held: dict[Path, _Held] = {}
_registry = threading.Lock()


def _key(directory: Path) -> Path:
    return Path(directory).resolve()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0 or -1, ...) would test whole process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_is_stale(path: Path, stale_after_s: float, *, lock_held: bool = False) -> bool:
    """Whether the claim in ``path`` (a claim.json) may be taken over.

    ``lock_held``: the caller holds the directory's ``flock``, so no live process on
    this host holds the claim, whatever PID the file names. Another host's claim is
    stale when its heartbeat is older than ``stale_after_s``.
    """
    try:
        text = path.read_text()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True  # vanished: released meanwhile
    try:
        owner = json.loads(text)
        host, pid = owner["host"], int(owner.get("pid", -1))
    except (ValueError, TypeError, KeyError):
        return age > min(stale_after_s, _WRITE_GRACE_S)  # half-written, by a dead process?
    if host == socket.gethostname():
        if lock_held or not _pid_alive(pid):
            return True
    return age > stale_after_s


def _lock(directory: Path) -> int | None:
    """Take ``directory``'s flock; its descriptor, or None where flock is unavailable.

    Raises BlockingIOError when another process holds it. A holder removes the lock
    file on release, so the file locked must still be the one at the path (else a
    process that opened the old file and one that created the new one would both win).
    """
    if fcntl is None:
        return None
    path = directory / LOCK_FILE
    for _ in range(10):
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)  # not inherited by subprocesses
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        except OSError as error:
            os.close(fd)
            if error.errno in _NO_FLOCK:
                return None
            raise
        try:
            opened, current = os.fstat(fd), os.stat(path)
            if (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder released and removed it meanwhile: lock the new one
    raise BlockingIOError(errno.EWOULDBLOCK, f"{path} keeps changing; claimed by others")


def _create_claim_file(directory: Path, stale_after_s: float, lock_held: bool) -> bool:
    """Create claim.json for this process, taking over a stale one; False if not stale."""
    path = directory / CLAIM_FILE
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not claim_is_stale(path, stale_after_s, lock_held=lock_held):
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


def _heartbeat(path: Path, stop: threading.Event, every_s: float) -> None:
    """Refresh ``path``'s timestamp every ``every_s`` seconds until ``stop`` is set."""
    while not stop.wait(every_s):
        try:
            os.utime(path)
        except OSError:
            pass  # removed (taken over after a long stall) or a passing NFS error


def _remove_temporaries(directory: Path) -> None:
    """Delete orphaned temporary files (of a killed writer) in ``directory`` and resume/."""
    for folder in (directory, directory / RESUME_DIR):
        try:
            entries = list(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.name.startswith(atomic.TEMPORARY_PREFIX) and not entry.is_dir():
                try:
                    entry.unlink()
                except FileNotFoundError:
                    pass


def try_claim(
    run_dir: str | os.PathLike,
    stale_after_s: float = 600.0,
    heartbeat_s: float = HEARTBEAT_S,
) -> bool:
    """Claim a directory for this process; False if another live process holds it.

    On success a heartbeat thread keeps the claim fresh until `release`, and orphaned
    temporary files are deleted. A directory this process already holds is not claimed
    again (False): each claim has one holder, who releases it once.

    Args:
        run_dir: the directory (created if missing).
        stale_after_s: another host's claim whose heartbeat is older than this is taken
            over (and, without flock, any claim whose process is not known alive).
        heartbeat_s: seconds between heartbeats (at most a quarter of ``stale_after_s``,
            so a live claim never looks stale to processes using the same threshold).
    """
    if heartbeat_s <= 0 or stale_after_s <= 0:
        raise ValueError(
            f"heartbeat_s and stale_after_s must be > 0, got {heartbeat_s} and {stale_after_s}"
        )
    directory = Path(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    key = _key(directory)
    with _registry:
        if key in _held:
            return False
        try:
            lock_fd = _lock(directory)
        except BlockingIOError:
            return False
        try:
            claimed = _create_claim_file(directory, stale_after_s, lock_fd is not None)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        if not claimed:
            if lock_fd is not None:
                os.close(lock_fd)  # another host's fresh claim: flock may not span hosts
            return False
        stop = threading.Event()
        every_s = min(heartbeat_s, stale_after_s / 4)
        thread = threading.Thread(
            target=_heartbeat,
            args=(directory / CLAIM_FILE, stop, every_s),
            name=f"lskd_tf-claim-heartbeat:{key}",
            daemon=True,
        )
        _held[key] = _Held(directory, lock_fd, stop, thread)
        thread.start()
    _remove_temporaries(directory)
    return True


def _names_this_process(path: Path) -> bool:
    """Whether claim.json at ``path`` is this process's (not one that took it over)."""
    try:
        owner = json.loads(path.read_text())
        return (owner["host"], int(owner["pid"])) == (socket.gethostname(), os.getpid())
    except (OSError, ValueError, TypeError, KeyError):
        return False


def release(run_dir: str | os.PathLike) -> None:
    """Give up this process's claim: stop its heartbeat, remove claim.json, drop the lock.

    Does nothing for a directory this process does not hold, and leaves a claim.json
    that another process wrote after taking the claim over (after a long stall).
    """
    with _registry:
        held = _held.pop(_key(Path(run_dir)), None)
    if held is None:
        return
    held.stop.set()
    held.thread.join(timeout=10)
    names = [CLAIM_FILE] if _names_this_process(held.directory / CLAIM_FILE) else []
    if held.lock_fd is not None:
        names.append(LOCK_FILE)
    for name in names:
        try:
            (held.directory / name).unlink()
        except FileNotFoundError:
            pass
    if held.lock_fd is not None:
        os.close(held.lock_fd)  # last: the lock guards the removals above


def is_held(run_dir: str | os.PathLike) -> bool:
    """Whether this process holds the claim on ``run_dir``."""
    with _registry:
        return _key(Path(run_dir)) in _held


def touch(directory: str | os.PathLike) -> None:
    """Refresh the claim on ``directory`` now (the heartbeat thread does it regularly)."""
    try:
        os.utime(Path(directory) / CLAIM_FILE)
    except FileNotFoundError:
        pass


def _forget_in_child() -> None:
    """A forked child does not hold its parent's claims (its copies of the locks close)."""
    global _registry
    _registry = threading.Lock()  # another thread may have held it at the fork
    for held in _held.values():
        if held.lock_fd is not None:
            os.close(held.lock_fd)  # closes the child's copy only: the parent keeps its lock
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
