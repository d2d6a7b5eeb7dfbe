"""Run a study's grid: skip finished runs, resume interrupted ones, share work safely.

Several processes (or machines on a shared file system) can run the same study
at once: before training a run, a process *claims* its directory (`lskd_tf.claims`:
a lock that dies with its process, plus a heartbeat file for other hosts). A student
waits for its teacher: if the teacher is being trained elsewhere, the student is left
for a later pass.

A SLURM array job is such a set of processes (tools/slurm/sweep_array.sbatch). Its
tasks are not told which runs are theirs (``SLURM_ARRAY_TASK_ID`` is not read): a
fixed partition would leave tasks idle behind slow runs and strand a killed task's
share, while claims balance the load and hand a dead task's run to a live one.

Under `MultiWorkerMirroredStrategy` the workers of one job run the study's
runs together, in order, without claims (one cluster = one process).

Stopping a sweep at any time loses nothing: finished runs are skipped on the
next start and interrupted ones resume from their last finished epoch.

Each run starts with one line ``run k/N: <run> (elapsed ..., ETA ...)`` (`lskd_tf.progress`).

What follows the runs is done once per study too (`do_once`, `export_once`): each
student's export, the results tables and the analysis go through the same claims, so
when several processes finish a study together one of them writes each and the others
report it done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lskd_tf import atomic, distribute, tasks
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
        tasks.get(task).check_data_prepared(data)
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
                left = [s for s in specs if not is_finished(env.run_dir(s))]
                progress.start(
                    run_dir.name, done=len(specs) - len(left), kind=_eta_kind(spec),
                    left=[_eta_kind(s) for s in left],
                )  # fmt: skip
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


def _eta_kind(spec) -> str:
    """Runs that take alike long, for the ETA: a study's teachers train for other epochs
    and models than its students."""
    return f"{spec.kind} {spec.model}"


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


# ---------------------------------------------------------------------------- once per study

DONE_DIR = ".done"
"""``<study>/.done/<task>/``: the claim and the record (``done.json``) of one study-level
job (an export, the results tables, the analysis), so several processes sharing a study
do each job once."""
DONE_FILE = "done.json"


def summary_key(run_dirs: Sequence[Path]) -> str:
    """What a study's summary (tables, analysis) depends on: its runs' run.json bytes.

    Two processes that summarize the same finished runs get the same key; a run trained
    or re-run since makes a new one (and a new summary).
    """
    digest = hashlib.sha256()
    for run_dir in sorted(Path(d) for d in run_dirs):
        digest.update(f"{run_dir.name}\n".encode())
        digest.update(RunDir(run_dir).run_json.read_bytes())
    return digest.hexdigest()


def do_once(
    env: RunEnv,
    job: str,
    key: str,
    work: Callable[[], None],
    *,
    poll_s: float = 2.0,
    stale_after_s: float = 600.0,
) -> bool:
    """Do ``work()`` for ``(job, key)`` once among the processes sharing ``env``'s study.

    ``job`` names the work (e.g. ``exports/<student run>``, ``results``); ``key`` says
    what it was done for (e.g. the student's identity fingerprint): done for another
    key, it is done again. The work runs under the job's claim (`lskd_tf.claims`, as a
    run does), and ``done.json`` records the key after it succeeded. A process that finds
    the job claimed waits until the holder finishes (or dies: then it takes the job
    over) and does not repeat it.

    Returns:
        True if this process did the work, False if another process had done it.
    """
    directory = env.study_dir / DONE_DIR / job
    while True:
        if _done_for(directory) == key:
            return False
        if try_claim(directory, stale_after_s):
            try:
                if _done_for(directory) == key:  # finished between our look and our claim
                    return False
                work()
                atomic.write_json(directory / DONE_FILE, {"key": key, "time": time.time()})
                return True
            finally:
                release(directory)
        time.sleep(poll_s)


def _done_record(directory: Path) -> dict:
    try:
        found = json.loads((directory / DONE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _done_for(directory: Path) -> str | None:
    return _done_record(directory).get("key")


def done_time(env: RunEnv, job: str) -> float | None:
    """When ``job`` (see `do_once`) was last done in ``env``'s study, or None."""
    return _done_record(env.study_dir / DONE_DIR / job).get("time")


def export_once(env: RunEnv, spec: StudentSpec, export: Callable[[Path], object]) -> bool:
    """Export a finished student to ``<study>/exports/<run>`` once among processes.

    ``export(directory)`` writes the export into a new directory; it is written beside
    the target under a temporary name and renamed into place, so a reader sees the old
    export or the new one, whole. The key is the student's identity fingerprint: a
    retrained student is exported again. True if this process exported it.
    """
    target = env.study_dir / "exports" / spec.name
    fingerprint = RunDir(env.run_dir(spec)).read().get("fingerprint", "")

    def work() -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f"{atomic.TEMPORARY_PREFIX}{os.getpid()}-{spec.name}")
        old = target.with_name(f"{atomic.TEMPORARY_PREFIX}{os.getpid()}-old-{spec.name}")
        for leftover in target.parent.glob(f"{atomic.TEMPORARY_PREFIX}*-{spec.name}"):
            shutil.rmtree(leftover, ignore_errors=True)  # a killed exporter's (we hold the claim)
        try:
            export(temporary)
            if target.exists():
                os.rename(target, old)
            os.rename(temporary, target)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    return do_once(env, f"exports/{spec.name}", fingerprint, work)
