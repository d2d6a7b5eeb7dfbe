"""Kill -9 anywhere: a tiny study SIGKILLed at random moments finishes bit-identical.

    python tools/kill_study.py --kills 10 --seed 0 --out /tmp/kills

1. Runs the tiny study once, uninterrupted (the reference).
2. Runs it again in a fresh directory, sends SIGKILL at a random moment while work
   remains, restarts it, and so on ``--kills`` times; then lets it finish. The moment
   is drawn from what the reference measured on this machine, so the kills land while
   the study trains on a fast machine as on a slow one: once the restarted study has
   started working (an event: it writes a ``run.json``), after a uniform fraction of the
   training time still left (the reference's training time x the share of runs not yet
   finished), scaled by how much slower or faster this start-up was than the
   reference's (the machine's load may change between them).
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
STUDY = [
    "--train_per_class=3", "--test_per_class=1", "--epochs=2", "--teacher_epochs=2",
    "--teacher_models=resnet8", "--verbose=0", "--analyze=false", "--export=false",
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


def runs_left(reference: Path, killed: Path) -> float:
    """Share of the reference's runs not yet finished in ``killed``."""
    from lskd_tf.run_dir import RunDir

    names = [p.parent.name for p in (reference / "runs" / "quick").glob("*/run.json")]
    done = sum(RunDir(killed / "runs" / "quick" / name).is_finished() for name in names)
    return 1 - done / len(names)


def killed_at(out: Path, fraction: float, reference: tuple[float, float]) -> float | None:
    """Start the study and SIGKILL it ``fraction`` of the reference's training time after
    it started working, scaled by this start-up's speed; the seconds after start-up at
    which it was killed, or None if it finished first."""
    reference_startup_s, reference_total_s = reference
    started = time.time()
    process = processes.popen(study_command(out), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=ROOT)  # fmt: skip
    try:
        while not any(p.stat().st_mtime >= started for p in (out / "runs").rglob("run.json")):
            if process.poll() is not None:
                return None  # finished (nothing left) before writing a run.json
            if time.time() - started > LIMIT_S:
                raise SystemExit(f"the study in {out} wrote no run.json in {LIMIT_S:.0f} s")
            time.sleep(0.05)
        speed = (time.time() - started) / max(reference_startup_s, 1e-3)
        after_s = fraction * (reference_total_s - reference_startup_s) * speed
        try:
            process.wait(timeout=after_s)
            return None
        except subprocess.TimeoutExpired:
            return after_s
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
    kills = 0
    for attempt in range(args.kills):
        left = runs_left(args.out / "reference", killed_dir)
        if left == 0:
            print(f"kill {attempt + 1}: every run had finished; no kill")
            continue
        after_s = killed_at(killed_dir, rng.uniform(0.05, 0.95) * left, (startup_s, total_s))
        if after_s is not None:
            kills += 1
            print(f"kill {attempt + 1}: SIGKILL {after_s:.1f} s after start-up", flush=True)
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
