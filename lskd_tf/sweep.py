"""Run a study's grid: skip finished runs, resume interrupted ones, share work safely.

Several processes (or machines on a shared file system) can run the same study
at once: before training a run, a process *claims* its directory (`lskd_tf.claims`:
a lock that dies with its process, plus a heartbeat file for other hosts). A student
waits for its teacher: if the teacher is being trained elsewhere, the student is left
for a later pass.

Under `MultiWorkerMirroredStrategy` the workers of one job run the study's
runs together, in order, without claims (one cluster = one process).

Stopping a sweep at any time loses nothing: finished runs are skipped on the
next start and interrupted ones resume from their last finished epoch.

Each run starts with one line ``run k/N: <run> (elapsed ..., ETA ...)`` (`lskd_tf.progress`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lskd_tf import distribute, tasks
from lskd_tf.claims import release, try_claim
from lskd_tf.experiment import RunEnv, RunSpec, StudentSpec, identity, run, write_hparams_config
from lskd_tf.progress import Progress, print_line
from lskd_tf.run_dir import RunDir


def is_finished(run_dir: Path) -> bool:
    return RunDir(run_dir).is_finished()


def check_files(specs: Sequence[RunSpec]) -> None:
    """Check every weights file these runs will read (initial weights, teacher
    checkpoints) before the first run starts: a bad file is one line now, not after
    the runs before it trained (`lskd_tf.tasks.Task.check_model_file`)."""
    checked = set()
    for spec in specs:
        files = [(spec.pretrained, "pretrained weights")]
        files.append((getattr(spec, "teacher_checkpoint", None), "teacher checkpoint"))
        for path, what in files:
            if path and (spec.task, path) not in checked:
                tasks.get(spec.task).check_model_file(path, what=what)
                checked.add((spec.task, path))


def run_study(
    specs: Sequence[RunSpec],
    env: RunEnv,
    *,
    on_run_start: Callable[[RunSpec, Path], None] | None = None,
    on_run_end: Callable[[RunSpec, Path], None] | None = None,
    max_runs: int | None = None,
    wait_for_others: bool = True,
    poll_s: float = 10.0,
    stale_after_s: float = 600.0,
) -> list[Path]:
    """Run every spec not finished yet; return the run directories of all specs.

    Args:
        specs: runs in order (teachers before their students, as `plan_study` gives).
        env: where and how to run.
        on_run_start: called with (spec, run_dir) after claiming, before training
            (`run.py` writes the run's flagfile there).
        on_run_end: called after a run finished.
        max_runs: stop after training this many runs (None: all).
        wait_for_others: when runs are held by other processes, poll until they finish
            so the caller can summarize the complete study.
        poll_s, stale_after_s: polling period and claim staleness threshold.
    """
    cluster = env.strategy is not None and distribute.is_multi_worker(env.strategy)
    if cluster and env.on_conflict != "error":
        raise ValueError(
            "on_conflict=overwrite is not supported in a multi-worker job (the workers would "
            "race to move runs); resolve conflicts with a one-process run first"
        )
    for spec in specs:  # before any training: a changed setting never reuses an old run
        identity.check(spec, env, on_conflict=env.on_conflict)
    # Before any file is written: missing data is one line (with how to get it), not a
    # half-started run directory.
    unfinished = [s for s in specs if not is_finished(env.run_dir(s))]
    for task, data in dict.fromkeys((s.task, s.data) for s in unfinished):
        tasks.get(task).dataset_info(data)
    for task, data, batch in dict.fromkeys(
        (s.task, s.data, s.train.batch_size) for s in unfinished
    ):
        tasks.get(task).check_batch_size(data, batch)
    check_files(unfinished)
    if distribute.is_chief(env.strategy):
        write_hparams_config(env, specs)
    if cluster:
        return _run_in_cluster(specs, env, on_run_start, on_run_end)
    progress = Progress("run", len(specs), done=len(specs) - len(unfinished))
    done_here = 0
    while True:
        pending = [s for s in specs if not is_finished(env.run_dir(s))]
        if not pending:
            break
        progressed = False
        for spec in pending:
            if max_runs is not None and done_here >= max_runs:
                return [env.run_dir(s) for s in specs]
            if isinstance(spec, StudentSpec) and spec.teacher is not None:
                if not is_finished(env.run_dir(spec.teacher)):
                    continue  # its teacher is not ready (being trained elsewhere)
            run_dir = env.run_dir(spec)
            if is_finished(run_dir) or not try_claim(run_dir, stale_after_s):
                continue
            try:
                # runs finished so far, here or by other processes sharing the study
                progress.start(run_dir.name, done=sum(map(is_finished, map(env.run_dir, specs))))
                if on_run_start:
                    on_run_start(spec, run_dir)
                run(spec, env)  # the claim's own thread keeps its heartbeat
                progress.finish()
                if on_run_end:
                    on_run_end(spec, run_dir)
            finally:
                release(run_dir)
            done_here += 1
            progressed = True
        if not progressed:
            if not wait_for_others:
                break
            time.sleep(poll_s)
    return [env.run_dir(s) for s in specs]


def _run_in_cluster(specs, env, on_run_start, on_run_end) -> list[Path]:
    """Multi-worker: every worker runs every spec, in order, together.

    Claims would split one job's workers across different runs (and deadlock
    their collectives), so the cluster acts as one process: all workers take the
    same runs in the same order, and only the chief writes (see `lskd_tf.training`).
    Two *clusters* must not share a study directory.
    """
    chief = distribute.is_chief(env.strategy)
    progress = Progress("run", len(specs), write=print_line if chief else lambda line: None)
    for spec in specs:
        run_dir = env.run_dir(spec)
        progress.start(run_dir.name)
        if on_run_start and chief:
            on_run_start(spec, run_dir)
        run(spec, env)
        progress.finish()
        if on_run_end and chief:
            on_run_end(spec, run_dir)
    return [env.run_dir(s) for s in specs]
