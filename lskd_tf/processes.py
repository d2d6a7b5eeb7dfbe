"""Child processes that die with their parent: no orphan keeps training after a kill.

A study, a test or a tool that starts worker processes (`tools/kill_study.py`, the
multi-worker tests) must not leave them running when it is itself killed: a SIGKILL
or SIGTERM of the parent runs no ``finally`` block, and an orphan keeps its CPU,
its claims and its ports. `popen` ties a child to its parent in two ways:

* on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child before ``exec``: the
  kernel kills the child the moment the parent thread that started it dies (start
  children from a thread that lives as long as they should, e.g. the main thread);
* everywhere, ``LSKD_TF_PARENT_PID`` in the child's environment: a child that calls
  `exit_with_parent` (``run.py`` and the multi-worker test worker do) checks once a
  second that its parent is alive and exits when it is not (reparented).

Example:
    >>> worker = popen([sys.executable, "run.py", "--output_dir=/tmp/x"])
    >>> worker.wait()
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

PARENT_ENV = "LSKD_TF_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _linux_prctl():
    """libc's ``prctl``, loaded in the parent (the child only calls it), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with(parent: int, prctl):
    """The ``preexec_fn`` of a child of ``parent``: SIGKILL it when the parent dies."""

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: too late for the signal
            os._exit(1)

    return preexec


def popen(args: Sequence[str], *, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """`subprocess.Popen` of a child that dies with this process (see the module docstring).

    ``env`` defaults to this process's environment; ``kwargs`` go to ``Popen``.
    """
    env = dict(os.environ if env is None else env)
    env[PARENT_ENV] = str(os.getpid())
    prctl = _linux_prctl()
    if prctl is not None:
        kwargs["preexec_fn"] = _die_with(os.getpid(), prctl)
    return subprocess.Popen(list(args), env=env, **kwargs)


def run(
    args: Sequence[str], *, capture_output: bool = False, check: bool = False,
    timeout: float | None = None, **kwargs,
) -> subprocess.CompletedProcess:  # fmt: skip
    """`subprocess.run` through `popen`: the child dies with this process, and with the
    call (killed on a timeout or an interrupt, like ``subprocess.run``)."""
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with popen(args, **kwargs) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
    if check and process.returncode:
        raise subprocess.CalledProcessError(process.returncode, list(args), out, err)
    return subprocess.CompletedProcess(list(args), process.returncode, out, err)


def exit_with_parent(poll_s: float = 1.0) -> bool:
    """In a child started by `popen`: exit when the parent is gone; False if not a child.

    A daemon thread compares ``os.getppid()`` with ``LSKD_TF_PARENT_PID`` every
    ``poll_s`` seconds and ends the process (``os._exit(1)``) once they differ, i.e.
    once the parent died and the child was reparented. The portable half of `popen`'s
    promise, for systems without ``PR_SET_PDEATHSIG``.
    """
    parent = os.environ.pop(PARENT_ENV, "")  # not inherited by this child's own children
    if not parent.isdigit():
        return False
    if os.getppid() != int(parent):
        os._exit(1)

    def watch() -> None:
        while os.getppid() == int(parent):
            threading.Event().wait(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="lskd_tf-exit-with-parent", daemon=True).start()
    return True


__all__ = ["PARENT_ENV", "exit_with_parent", "popen", "run"]
