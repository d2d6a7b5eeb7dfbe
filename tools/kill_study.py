"""Kill -9 anywhere: a tiny study SIGKILLed at random moments finishes bit-identical.

    python tools/kill_study.py --kills 10 --seed 0 --out /tmp/kills

1. Runs the tiny study (`STUDY`: one teacher, two students) once, uninterrupted (the reference).
2. Runs it again in a fresh directory, sends SIGKILL at a random moment while work
   remains, restarts it, and so on ``--kills`` times; then lets it finish. The moment
   follows the study's own progress, so the kills land while it trains on a fast
   machine as on a slow one, and when the load changes between the reference and the
   restarts: a random epoch still to do is drawn (epochs are counted in the runs'
   ``history.csv``); once the restarted study has started working (it wrote a
   ``run.json``) and finished the epochs before it (events, not times), it is killed a
   random fraction of a reference epoch later (the reference's training time / its
   epochs).
3. Compares the two: every run's ``last.keras`` and ``best.keras`` weights bit for bit,
   every run.json's best/last metrics, the results tables; and checks that nothing is
   left claimed, running or orphaned (no ``claim.json``, no ``.tmp*`` file, every run
   ``finished``).

Prints one line per kill and a summary; exits 1 when anything differs. `tests/test_kill.py`
runs it with a few kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's lskd_tf (the studies it starts use it too)

from lskd_tf import processes  # noqa: E402  (children die with this process)

LIMIT_S = 1800.0  # one study's bound: catches a hang, not a slow (loaded) machine
# One LS teacher and its students at T = 1 and 4: a teacher run, runs that load it, and
# three runs to land in (the default study's six took twice as long for no other path).
STUDY = [
    "--train_per_class=3", "--test_per_class=1", "--epochs=2", "--teacher_epochs=2",
    "--teacher_models=resnet8", "--teacher_smoothings=0.1", "--temperatures=1,4",
    "--verbose=0", "--analyze=false", "--export=false",
]  # fmt: skip


def study_command(out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), f"--output_dir={out}/runs",
            f"--tensorboard_dir={out}/tb", *STUDY]  # fmt: skip


def run_to_end(out: Path) -> None:
    try:
        processes.run(study_command(out), check=True, capture_output=True, cwd=ROOT,
                      timeout=LIMIT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise SystemExit(
            f"the restarted study in {out} did not finish in {LIMIT_S:.0f} s"
        ) from None


def timed_reference(out: Path) -> tuple[float, float]:
    """Run the study to the end; (seconds until its first run.json, total seconds)."""
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    # stderr to a file, not a pipe nobody reads while polling: a full pipe (64 KB of
    # warnings) would block the study forever
    stderr = out / "stderr.txt"
    with open(stderr, "wb") as log:
        process = processes.popen(study_command(out), stdout=subprocess.DEVNULL,
                                  stderr=log, cwd=ROOT)  # fmt: skip
    startup_s = None
    while process.poll() is None:
        if startup_s is None and any((out / "runs").rglob("run.json")):
            startup_s = time.time() - started
        if time.time() - started > LIMIT_S:
            process.kill()
            raise SystemExit(f"the reference study in {out} did not finish in {LIMIT_S:.0f} s")
        time.sleep(0.05)
    if process.returncode != 0:
        raise SystemExit(f"the reference study failed: {stderr.read_text()[-2000:]}")
    total_s = time.time() - started
    return (startup_s if startup_s is not None else total_s), total_s


def epochs_done(out: Path) -> int:
    """Epochs finished by every run of the study in ``out`` (rows of its history.csv files)."""
    from lskd_tf.run_dir import RunDir

    return sum(len(RunDir(p.parent).read_history()) for p in (out / "runs").glob("*/*/run.json"))


def killed_at(out: Path, epoch: int, delay_s: float) -> bool:
    """Start the study; once it has written a run.json and finished ``epoch`` epochs in
    all, SIGKILL it ``delay_s`` seconds later. False if it finished first."""
    started = time.time()
    process = processes.popen(study_command(out), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=ROOT)  # fmt: skip

    def working() -> bool:
        wrote = any(p.stat().st_mtime >= started for p in (out / "runs").rglob("run.json"))
        return wrote and epochs_done(out) >= epoch

    try:
        while not working():
            if process.poll() is not None:
                return False  # finished before reaching that epoch
            if time.time() - started > LIMIT_S:
                raise SystemExit(f"the study in {out} made no progress in {LIMIT_S:.0f} s")
            time.sleep(0.05)
        try:
            process.wait(timeout=delay_s)
            return False
        except subprocess.TimeoutExpired:
            return True
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()


def weights(path: Path) -> list:
    import keras

    import lskd_tf  # noqa: F401  (registers lskd_tf's layers)

    return [w.tobytes() for w in keras.models.load_model(path).get_weights()]


def compare(reference: Path, killed: Path) -> list[str]:
    """What differs between the two studies, and what was left behind."""
    problems = []
    ref_runs, runs = reference / "runs" / "quick", killed / "runs" / "quick"
    names = sorted(p.name for p in ref_runs.iterdir() if (p / "run.json").exists())
    for name in names:
        ref_info = json.loads((ref_runs / name / "run.json").read_text())
        info = json.loads((runs / name / "run.json").read_text())
        if info.get("status") != "finished":
            problems.append(f"{name}: status {info.get('status')}")
        for key in ("best", "last", "fingerprint"):
            if info.get(key) != ref_info.get(key):
                problems.append(f"{name}: run.json {key} differs")
        for checkpoint in ("last.keras", "best.keras"):
            if weights(runs / name / checkpoint) != weights(ref_runs / name / checkpoint):
                problems.append(f"{name}: {checkpoint} weights differ")
    for table in ("students.csv", "teachers.csv"):
        if (runs / "results" / table).read_text() != (ref_runs / "results" / table).read_text():
            problems.append(f"results/{table} differs")
    for leftover in list(runs.rglob("claim.json")) + list(runs.rglob(".tmp*")):
        problems.append(f"left behind: {leftover.relative_to(runs)}")
    return problems


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    started = time.time()
    startup_s, total_s = timed_reference(args.out / "reference")
    print(f"reference: {total_s:.1f} s, first run.json after {startup_s:.1f} s", flush=True)
    killed_dir = args.out / "killed"
    total_epochs = epochs_done(args.out / "reference")
    epoch_s = (total_s - startup_s) / total_epochs
    kills = 0
    for attempt in range(args.kills):
        done = epochs_done(killed_dir) if killed_dir.exists() else 0
        if done >= total_epochs:
            print(f"kill {attempt + 1}: every run had finished; no kill")
            continue
        epoch, delay_s = rng.randint(done, total_epochs - 1), rng.uniform(0.05, 0.95) * epoch_s
        if killed_at(killed_dir, epoch, delay_s):
            kills += 1
            print(f"kill {attempt + 1}: SIGKILL {delay_s:.1f} s after epoch {epoch} of "
                  f"{total_epochs}", flush=True)  # fmt: skip
        else:
            print(f"kill {attempt + 1}: the study had finished before its kill moment")
    run_to_end(killed_dir)
    problems = compare(args.out / "reference", killed_dir)
    summary = {"kills": kills, "problems": problems, "seconds": round(time.time() - started)}
    print(json.dumps(summary, indent=1))
    print("bit-identical, nothing left behind" if not problems else "DIFFERENCES")
    return summary


if __name__ == "__main__":
    sys.exit(1 if main()["problems"] else 0)
