"""Directory claims (`lskd_tf.claims`): exclusive, dead with their process, kept alive
by a thread, and cleaned of a killed writer's temporary files.

Other processes are plain Python children that import `lskd_tf.claims` without the
package's `__init__` (which imports TensorFlow), so each starts in well under a second.
"""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lskd_tf import atomic, claims, processes

ROOT = Path(__file__).resolve().parents[1]

# Import lskd_tf.claims under a bare `lskd_tf` package: no TensorFlow in the child.
_CHILD_PRELUDE = f"""
import sys, types
package = types.ModuleType("lskd_tf")
package.__path__ = [{str(ROOT / "lskd_tf")!r}]
sys.modules["lskd_tf"] = package
from lskd_tf import claims
"""

HOLDER = _CHILD_PRELUDE + textwrap.dedent("""
    import time
    from pathlib import Path
    assert claims.try_claim(Path(sys.argv[1]), heartbeat_s=0.2)
    time.sleep(600)
""")


def _write_claim(directory: Path, host: str, pid: int, age_s: float = 0.0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / claims.CLAIM_FILE
    path.write_text(json.dumps({"host": host, "pid": pid, "time": 0}))
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))
    return path


def _owner(directory: Path) -> dict:
    return json.loads((directory / claims.CLAIM_FILE).read_text())


def _owner_pid(directory: Path) -> int | None:
    try:
        return _owner(directory)["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _wait_for(condition, timeout_s: float = 120.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; the limit only catches a hang (generous under load)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def _dead_unreaped(pid: int) -> bool:
    """Whether every thread of ``pid`` has exited but the process is not reaped (a zombie).

    The main thread turns zombie (state Z) before the process's other threads have
    finished exiting (and closed its files), so those must be gone from /proc too.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    return state == "Z" and threads == [str(pid)]


@pytest.fixture
def holder(tmp_path):
    """A live other process holding the claim on tmp_path/run (killed at the end)."""
    directory = tmp_path / "run"
    process = processes.popen([sys.executable, "-c", HOLDER, str(directory)], cwd=tmp_path)
    try:
        _wait_for(lambda: (directory / claims.CLAIM_FILE).exists() or process.poll() is not None,
                  what="the child's claim")  # fmt: skip
        assert process.poll() is None, "the claiming child exited"
        _wait_for(lambda: _owner_pid(directory) == process.pid, what="claim.json written")
        yield directory, process
    finally:
        process.kill()
        process.wait()
        claims.release(directory)


def test_claims_module_does_not_import_tensorflow():
    code = _CHILD_PRELUDE + "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_a_claim_held_by_a_live_other_process_cannot_be_taken(holder):
    directory, process = holder
    assert not claims.try_claim(directory)
    # Not even when its claim.json looks abandoned: the kernel lock is what counts here.
    old = time.time() - 3600
    os.utime(directory / claims.CLAIM_FILE, (old, old))
    assert not claims.try_claim(directory, stale_after_s=600)
    assert not claims.is_held(directory)
    assert _owner(directory)["pid"] == process.pid


def test_a_killed_unreaped_holder_loses_its_claim_at_once(holder):
    directory, process = holder
    assert not claims.try_claim(directory)
    os.kill(process.pid, signal.SIGKILL)  # no wait(): the child stays a zombie
    if Path("/proc").is_dir():  # dead but not reaped: its PID still exists
        _wait_for(lambda: _dead_unreaped(process.pid), what="the child to die")
    else:
        time.sleep(0.5)
    assert _owner(directory)["pid"] == process.pid  # its claim.json is still there
    started = time.monotonic()
    assert claims.try_claim(directory, stale_after_s=600)
    assert time.monotonic() - started < 60  # at once, not after the 600 s staleness limit
    assert _owner(directory)["pid"] == os.getpid()
    claims.release(directory)


def test_same_process_cannot_claim_twice_and_release_frees_the_claim(tmp_path):
    directory = tmp_path / "run"
    assert claims.try_claim(directory)
    assert claims.is_held(directory)
    assert not claims.try_claim(directory)  # held by this live process
    assert not claims.try_claim(str(directory / ".." / "run"))  # the same directory
    owner = _owner(directory)
    assert (owner["host"], owner["pid"]) == (socket.gethostname(), os.getpid())
    claims.release(directory)
    assert not claims.is_held(directory)
    assert not (directory / claims.CLAIM_FILE).exists()
    assert claims.try_claim(directory)
    claims.release(directory)
    claims.release(directory)  # releasing twice (or what is not held) does nothing


def test_a_dead_or_reused_pid_on_this_host_without_the_lock_is_taken_over(tmp_path):
    directory = tmp_path / "run"
    _write_claim(directory, socket.gethostname(), pid=2**22 + 12345)  # no such process
    assert claims.try_claim(directory, stale_after_s=600)
    claims.release(directory)
    # A live PID (reused after a restart) without the lock: its holder is gone too.
    _write_claim(directory, socket.gethostname(), pid=os.getppid())
    assert claims.try_claim(directory, stale_after_s=600)
    assert _owner(directory)["pid"] == os.getpid()
    claims.release(directory)


def test_another_hosts_claim_is_respected_until_its_heartbeat_is_stale(tmp_path):
    directory = tmp_path / "run"
    path = _write_claim(directory, "elsewhere", pid=1)
    assert not claims.try_claim(directory, stale_after_s=600)  # fresh heartbeat
    assert not claims.is_held(directory)
    assert _owner(directory)["host"] == "elsewhere"  # left as it was
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))
    assert claims.try_claim(directory, stale_after_s=600)  # heartbeat too old
    assert _owner(directory)["host"] == socket.gethostname()
    claims.release(directory)


def test_heartbeat_thread_refreshes_the_claim_until_release(tmp_path):
    directory = tmp_path / "run"
    path = directory / claims.CLAIM_FILE
    assert claims.try_claim(directory, heartbeat_s=0.2)
    old = time.time() - 3600
    os.utime(path, (old, old))
    _wait_for(lambda: path.stat().st_mtime > old + 3000, what="a heartbeat")
    name = f"lskd_tf-claim-heartbeat:{directory.resolve()}"
    threads = [t for t in threading.enumerate() if t.name == name]
    assert len(threads) == 1 and threads[0].daemon
    claims.release(directory)
    assert not threads[0].is_alive()
    assert not path.exists() and not (directory / claims.LOCK_FILE).exists()
    time.sleep(0.5)
    assert not path.exists()  # no heartbeat brings it back


def test_the_heartbeat_is_at_most_a_quarter_of_the_staleness_limit(tmp_path):
    directory = tmp_path / "run"
    path = directory / claims.CLAIM_FILE
    assert claims.try_claim(directory, stale_after_s=0.8, heartbeat_s=600)
    old = time.time() - 3600
    os.utime(path, (old, old))
    _wait_for(lambda: path.stat().st_mtime > old + 3000, what="a heartbeat")
    claims.release(directory)


def test_orphaned_temporary_files_are_removed_on_claim(tmp_path):
    directory = tmp_path / "run"
    resume = directory / "resume"
    resume.mkdir(parents=True)
    prefix = atomic.TEMPORARY_PREFIX
    orphans = [directory / f"{prefix}4242-last.keras", resume / f"{prefix}42-epoch0003.weights.h5"]
    kept = [directory / "last.keras", directory / "run.json", resume / "state.json",
            directory / "notes.tmp", directory / "tensorboard" / f"{prefix}4242-x"]  # fmt: skip
    for path in orphans + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.name)
    assert claims.try_claim(directory)
    assert not any(path.exists() for path in orphans)
    assert all(path.read_text() == path.name for path in kept)
    claims.release(directory)


def test_without_flock_claims_fall_back_to_pid_and_staleness(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(claims.fcntl, "flock", no_flock)
    directory = tmp_path / "run"
    assert claims.try_claim(directory)
    assert not claims.try_claim(directory)
    claims.release(directory)
    assert not (directory / claims.CLAIM_FILE).exists()
    _write_claim(directory, socket.gethostname(), pid=os.getppid())  # alive, fresh
    assert not claims.try_claim(directory, stale_after_s=600)
    _write_claim(directory, socket.gethostname(), pid=2**22 + 12345)  # dead
    assert claims.try_claim(directory, stale_after_s=600)
    claims.release(directory)
    _write_claim(directory, socket.gethostname(), pid=os.getppid(), age_s=3600)  # old
    assert claims.try_claim(directory, stale_after_s=600)
    claims.release(directory)
