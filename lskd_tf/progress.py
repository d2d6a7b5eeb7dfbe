"""Where a long job is: ``run 3/8``, time elapsed and an ETA, one plain line per step.

A study trains runs one after another for hours, and its analysis goes over every run
again; `Progress` prints one line when each step starts, so a person reading a log (or
``tail -f`` of ``nohup`` output) knows how far it got and how long is left. The ETA is
the mean time of the steps this process finished, times the steps left: an estimate,
labelled with how many steps it is based on. Steps of different kinds take different
times (a teacher of a study can take 5x its students), so a caller that names each
step's kind and the kinds still to come gets an ETA per kind: each step left counts the
mean time of finished steps of its kind (of all finished steps while its kind has none).
Free of TensorFlow, and of any clock but the one it is given, for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def print_line(line: str) -> None:
    """Print ``line`` and flush (a log file shows it at once)."""
    print(line, flush=True)


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: as precise as a person needs."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Counts the steps of a job (the runs of a study, the runs an analysis reads).

    Args:
        what: the job's word in each line (``run``, ``analysis``).
        total: steps of the whole job, including those done before (finished runs that
            a restarted study skips).
        done: steps already done when this process starts (they have no time here, so
            they count toward ``k`` but not toward the ETA).
        clock: seconds, monotonic (a fake one in tests).
        write: where a line goes (print, flushed).
    """

    def __init__(
        self,
        what: str,
        total: int,
        *,
        done: int = 0,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] = print_line,
    ):
        self.what = what
        self.total = total
        self.done = done
        self.clock = clock
        self.write = write
        self.started = clock()
        self.timed: list[float] = []  # durations of the steps finished here
        self.timed_by_kind: dict[str, list[float]] = {}
        self._step_started: float | None = None
        self._step_kind: str | None = None

    def start(
        self,
        name: str,
        *,
        done: int | None = None,
        kind: str | None = None,
        left: Sequence[str] | None = None,
    ) -> str:
        """Print and return ``<what> k/N: <name> (elapsed ..., ETA ...)`` for the next step.

        ``done`` updates the count of finished steps first (another process may have
        finished some of a shared study's runs meanwhile). ``kind`` names this step's
        kind and ``left`` the kinds of the steps still to do, this one included: the ETA
        is then summed per kind (module docstring).
        """
        if done is not None:
            self.done = done
        now = self.clock()
        self._step_started, self._step_kind = now, kind
        line = (
            f"{self.what} {min(self.done + 1, self.total)}/{self.total}: {name} "
            f"(elapsed {format_duration(now - self.started)}, {self.eta(left)})"
        )
        self.write(line)
        return line

    def finish(self) -> None:
        """The step started last is done; its time joins the ETA."""
        if self._step_started is not None:
            duration = self.clock() - self._step_started
            self.timed.append(duration)
            if self._step_kind is not None:
                self.timed_by_kind.setdefault(self._step_kind, []).append(duration)
            self._step_started = None
        self.done += 1

    def eta(self, left: Sequence[str] | None = None) -> str:
        """``ETA 4 min 10 s (mean of 2 finished)``: for this step and the ones after.

        With ``left`` (the kinds of the steps still to do): ``ETA 52 min (per kind: 1
        teacher, 4 student finished)``, each step left at its kind's mean time.
        """
        if not self.timed:
            return "ETA after the first one finishes"
        mean = sum(self.timed) / len(self.timed)
        if left is None:
            remaining = max(self.total - self.done, 0)
            return f"ETA {format_duration(mean * remaining)} (mean of {len(self.timed)} finished)"
        means = {kind: sum(t) / len(t) for kind, t in self.timed_by_kind.items()}
        seconds = sum(means.get(kind, mean) for kind in left)
        counts = ", ".join(f"{len(t)} {kind}" for kind, t in self.timed_by_kind.items())
        return f"ETA {format_duration(seconds)} (per kind: {counts or 'none'} finished)"
