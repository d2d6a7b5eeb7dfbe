"""No orphans (`lskd_tf.processes`): a worker dies when the process that started it is killed.

Each test starts a small parent process (plain Python, no TensorFlow) that starts a
worker through `lskd_tf.processes.popen` and prints the worker's PID; the test SIGKILLs
the parent (no ``finally`` runs) and waits for the worker to disappear.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lskd_tf import processes

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 120.0  # catches a hang only: the worker is gone in well under a second

# `lskd_tf.processes` under a bare `lskd_tf` package: no TensorFlow, a fast start.
_PRELUDE = f"""
import sys, types
package = types.ModuleType("lskd_tf")
package.__path__ = [{str(ROOT / "lskd_tf")!r}]
sys.modules["lskd_tf"] = package
from lskd_tf import processes
"""
PARENT = _PRELUDE + textwrap.dedent("""
    import time
    if sys.argv[1] == "portable":  # as on a system without PR_SET_PDEATHSIG
        processes._linux_prctl = lambda: None
    worker = processes.popen([sys.executable, "-c", sys.argv[2]])
    print(worker.pid, flush=True)
    time.sleep(600)
""")
SLEEPER = "import time; time.sleep(600)"
WATCHER = _PRELUDE + "import time\nassert processes.exit_with_parent(poll_s=0.05)\ntime.sleep(600)"


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False  # no /proc here (os.kill says alive), or it exited meanwhile


def _wait_until_gone(pid: int) -> float:
    started = time.monotonic()
    while not _gone(pid):
        if time.monotonic() - started > LIMIT_S:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"worker {pid} still running {LIMIT_S:.0f} s after its parent died")
        time.sleep(0.02)
    return time.monotonic() - started


def _worker_of_killed_parent(mode: str, worker_code: str) -> int:
    parent = processes.popen(
        [sys.executable, "-c", PARENT, mode, worker_code], stdout=subprocess.PIPE, text=True
    )
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the parent printed {line!r} (exit {parent.poll()})"
        worker = int(line)
        assert not _gone(worker)
    finally:
        parent.kill()  # SIGKILL: nothing of the parent's runs after this
        parent.wait()
        parent.stdout.close()
    return worker


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_is_killed_with_its_parent():
    worker = _worker_of_killed_parent("linux", SLEEPER)  # a worker that does nothing itself
    _wait_until_gone(worker)


def test_a_worker_watching_its_parent_exits_without_pdeathsig():
    worker = _worker_of_killed_parent("portable", WATCHER)
    _wait_until_gone(worker)


def test_exit_with_parent_is_off_outside_a_popen_child(monkeypatch):
    monkeypatch.delenv(processes.PARENT_ENV, raising=False)
    assert processes.exit_with_parent() is False
    result = processes.run(
        [sys.executable, "-c", "import os; print(os.environ['LSKD_TF_PARENT_PID'])"],
        capture_output=True, text=True, timeout=LIMIT_S, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == str(os.getpid())
