"""lskd_tf command line: label smoothing x knowledge distillation studies.

    python run.py                              # the quick study on the embedded dataset
    python run.py --flagfile=flags/cifar100/resnet56_resnet20.flags
    python run.py --mode=results --run_dirs=runs/quick
    python run.py --helpfull                   # every flag (all defined in lskd_tf/flags.py)

Errors in what you asked for (unknown model, missing dataset, bad values) print
one line and exit with status 2; set LSKD_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import glob
import importlib.util
import logging as std_logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402


def _defer_package_init():
    """Put the lskd_tf package in sys.modules without running its ``__init__.py`` yet.

    ``import lskd_tf`` registers lskd_tf's Keras classes, which imports TensorFlow (~5 s
    of CPU). Parsing and checking the command line needs only `lskd_tf.flags`, which is
    TensorFlow-free, so a mistyped flag fails in well under a second; `_start_tensorflow`
    runs ``__init__.py`` once the flags parsed. Returns that step, or None when lskd_tf
    is already imported (run.py loaded by the tests).
    """
    if "lskd_tf" in sys.modules:
        return None
    spec = importlib.util.find_spec("lskd_tf")
    package = importlib.util.module_from_spec(spec)
    sys.modules["lskd_tf"] = package
    return lambda: spec.loader.exec_module(package)


_package_init = _defer_package_init()

from lskd_tf import flags as lf  # noqa: E402  (defines every flag)

# TensorFlow's CUDA probe on a machine without an NVIDIA GPU: "Could not find cuda drivers
# on your machine, GPU will not be used." and "failed call to cuInit: ... UNKNOWN ERROR".
_CUDA_PROBE = r"Could not find cuda drivers|failed call to cuInit"
# INFO lines of TensorFlow's C++ logging ("I0000 00:00:17... port.cc:153] oneDNN custom
# operations are on...") and absl's banner before them: written while TensorFlow loads,
# before TF_CPP_MIN_LOG_LEVEL (2 unless set: no INFO, no WARNING) takes effect.
_EARLY_INFO = r"^I\d{4} \d\d:\d\d:\d\d|^WARNING: All log messages before absl::InitializeLog"


def _start_tensorflow() -> None:
    """Import TensorFlow (lskd_tf's ``__init__.py``) and find its devices, without the CUDA
    probe's messages on machines that have no NVIDIA device.

    TensorFlow's C++ logging writes them to the process's stderr before any Python logging
    is set up, so stderr (file descriptor 2) is captured meanwhile and every other line
    written again. With an NVIDIA device present (``/dev/nvidia0``...) the CUDA lines stay:
    there, a failed cuInit is a real error. Early INFO lines go too unless
    TF_CPP_MIN_LOG_LEVEL=0 asks for them; warnings and errors always stay.
    """
    if _package_init is None:
        return
    hidden = [] if glob.glob("/dev/nvidia[0-9]*") else [_CUDA_PROBE]
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") != "0":
        hidden.append(_EARLY_INFO)
    hide = re.compile("|".join(hidden)) if hidden else None
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            _package_init()
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe runs here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if hide is None or not hide.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def _strategy():
    from lskd_tf.distribute import get_strategy

    if lf.STRATEGY.value == "default":
        get_strategy(cluster=lf.CLUSTER.value)  # only checks: --cluster needs multi_worker
        return None  # the default strategy: one device
    return get_strategy(
        lf.STRATEGY.value, cluster=lf.CLUSTER.value, slurm_port_base=lf.SLURM_PORT_BASE_FLAG.value
    )


def _write_flagfile(env):
    def write(spec, run_dir: Path) -> None:
        from lskd_tf.run_dir import RunDir

        RunDir(run_dir).write_flags(lf.flagfile_for(spec, env))

    return write


def _study(env) -> None:
    from lskd_tf import experiment, results, sweep, tasks
    from lskd_tf.experiment import StudentSpec

    started = time.time()
    specs = experiment.plan_study(lf.study_spec())
    run_dirs = sweep.run_study(
        specs, env, on_run_start=_write_flagfile(env), max_runs=lf.MAX_RUNS.value,
        wait_for_others=lf.WAIT_FOR_OTHERS.value,
    )  # fmt: skip
    from lskd_tf.distribute import is_chief

    if not is_chief(env.strategy):
        return  # in a multi-worker job only the chief summarizes, analyses and exports
    finished = [d for d in run_dirs if sweep.is_finished(d)]
    runs = results.collect_runs(finished)
    # Summaries and exports are done once among the processes sharing the study
    # (sweep.do_once); a process that finds one done by another says so.
    key, results_dir = sweep.summary_key(finished), env.study_dir / "results"
    metric = lf.HEADLINE_METRIC.value
    write = lambda: results.write_tables(runs, results_dir, metric)  # noqa: E731
    wrote = sweep.do_once(env, "results", f"{key}:{metric}", write)  # another metric: again
    if wrote or not _done_meanwhile(env, "results", started):
        print("\n" + results.format_tables(runs, metric) + "\n")
    else:
        print(f"results tables:    written by another process for the same runs ({results_dir})")
    if len(finished) < len(run_dirs):
        print(f"{len(run_dirs) - len(finished)} run(s) not finished yet: rerun to continue.")
        return
    tensorboard_study = Path(env.tensorboard_dir) / env.study
    if lf.ANALYZE.value:
        report = []
        analyze = lambda: report.append(experiment.analyze_runs(  # noqa: E731
            finished, env.study_dir / "analysis", tensorboard_dir=tensorboard_study,
            title=f"lskd_tf study '{env.study}'",
        ))  # fmt: skip
        if sweep.do_once(env, "analysis", key, analyze):
            print(f"analysis report:   {report[0] or 'none (this task has no analyses yet)'}")
        else:
            print(f"analysis report:   done already for these runs ({env.study_dir / 'analysis'})")
    if lf.EXPORT.value:
        students = [spec for spec in specs if isinstance(spec, StudentSpec)]
        exported = sum(sweep.export_once(env, spec, _exporter(env, spec)) for spec in students)
        print(f"SavedModels:       {env.study_dir / 'exports'}/<student run> ({exported} "
              f"exported now, {len(students) - exported} done already)")  # fmt: skip
    print(f"results tables:    {results_dir}/ (CSV, Markdown, LaTeX)")
    print(f"run directories:   {env.study_dir}/<run>/ (run.json, history.csv, *.keras)")
    print(f"TensorBoard:       tensorboard --logdir {tensorboard_study}")
    print(f"study wall time:   {time.time() - started:.0f} s")
    hint = tasks.get(lf.TASK.value).after_study_hint(lf.data_spec())
    if hint:
        print(hint)


def _exporter(env, spec):
    """``target -> export``: the student's last checkpoint for serving, into ``target``."""
    from lskd_tf import experiment
    from lskd_tf.run_dir import RunDir

    last = RunDir(env.run_dir(spec)).checkpoint("last")
    return lambda target: experiment.export_checkpoint(last, target, spec.data, task=spec.task)


def _done_meanwhile(env, job: str, since: float) -> bool:
    """Whether another process did the study's ``job`` after ``since`` (this one's start)."""
    from lskd_tf import sweep

    done = sweep.done_time(env, job)
    return done is not None and done >= since


def _single_run(env) -> None:
    from lskd_tf import experiment, sweep

    spec = lf.single_run_spec()
    if getattr(spec, "teacher_checkpoint", None):  # fail now, not after setting up the run
        experiment.load_checkpoint(spec.teacher_checkpoint, spec.data, task=spec.task)
    specs = [spec] if spec.kind == "teacher" or spec.teacher is None else [spec.teacher, spec]
    sweep.run_study(specs, env, on_run_start=_write_flagfile(env))
    print(f"run directory: {env.run_dir(spec)}")
    print(experiment.spec_to_json(spec))


def main(argv) -> int:
    if len(argv) > 1:
        print(f"error: {unexpected_arguments(argv[1:])}", file=sys.stderr)
        return 2
    if not lf.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF/Keras INFO lines drown the progress
    # The analysis traces one inference function per analysed model, by design; TF's
    # "excessive retracing" heuristic would warn about it on every study.
    std_logging.getLogger("tensorflow").addFilter(
        lambda record: "triggered tf.function retracing" not in record.getMessage()
    )
    mode = lf.MODE.value
    try:
        lf.check_applicable()
        env = lf.run_env(_strategy() if mode in ("study", "teacher", "distill") else None)
        if mode == "study":
            _study(env)
        elif mode in ("teacher", "distill"):
            _single_run(env)
        elif mode in ("evaluate", "export"):
            from lskd_tf import experiment

            if not lf.CHECKPOINT.value:
                raise ValueError(f"--mode={mode} needs --checkpoint=<a .keras file>")
            if mode == "evaluate":
                metrics = experiment.evaluate_checkpoint(
                    lf.CHECKPOINT.value, lf.data_spec(), task=lf.TASK.value
                )
                print({k: round(float(v), 4) for k, v in metrics.items()})
            else:
                if not lf.EXPORT_DIR.value:
                    raise ValueError("--mode=export needs --export_dir=<directory to write>")
                path = experiment.export_checkpoint(
                    lf.CHECKPOINT.value, lf.EXPORT_DIR.value, lf.data_spec(), task=lf.TASK.value
                )
                print(f"SavedModel and model.keras in {path}")
        elif mode in ("results", "analyze"):
            from lskd_tf import experiment, results

            paths = lf.RUN_DIRS.value or [str(env.study_dir)]
            runs = results.collect_runs(paths)
            if runs.empty:
                raise ValueError(f"no runs found under {', '.join(paths)}")
            if mode == "results":
                metric = lf.HEADLINE_METRIC.value
                written = results.write_tables(runs, env.study_dir / "results", metric)
                print(results.format_tables(runs, metric))
                print(f"\ntables written to {written['runs'].parent}")
            else:
                report = experiment.analyze_runs(
                    list(runs["run_dir"]), env.study_dir / "analysis",
                    tensorboard_dir=Path(env.tensorboard_dir) / env.study,
                )  # fmt: skip
                print(f"analysis report: {report or 'none (this task has no analyses yet)'}")
    except (ValueError, OSError) as error:
        if os.environ.get("LSKD_DEBUG"):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


def one_line(error: BaseException) -> str:
    """The first line of an error, with the path and the reason for file-system errors."""
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return f"cannot use{where}: {error.strerror} (check the path and its permissions)"
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


def unexpected_arguments(extra: list[str]) -> str:
    """What to say about words that are not --flags: the first few, not a whole file.

    absl passes every line of a flagfile that is not a --flag on as an argument, so
    ``--flagfile=/etc/passwd`` would otherwise echo the file.
    """
    shown = ", ".join(repr(word[:40] + ("..." if len(word) > 40 else "")) for word in extra[:3])
    more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
    return (
        f"{len(extra)} unexpected argument(s) {shown}{more}: every option is a --flag "
        "(a flagfile holds one --flag=value per line)"
    )


def _is_utf8(path: str) -> bool:
    try:
        Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return False
    except OSError:
        return True  # absl reports unreadable files itself
    return True


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with invalid flags as one `error:` line and exit status 2.

    Flag names and values are checked before TensorFlow is imported; model, dataset and
    KD-loss names (registries that import it) right after (`lf.registry_checks_deferred`).
    """
    try:
        with lf.registry_checks_deferred():
            rest = lf.FLAGS(argv)
            _start_tensorflow()
            lf.check_registered_names()
        return rest
    except flags.Error as error:
        message = one_line(error)
        if isinstance(error, flags.UnrecognizedFlagError):
            meant = lf.flag_for(error.flagname)  # absl's guesses go by spelling only
            if meant:
                message = f"{message.split('. Did you mean')[0]}. Did you mean: --{meant} ?"
        print(f"error: {message} (python run.py --helpfull lists every flag)", file=sys.stderr)
        sys.exit(2)
    except UnicodeDecodeError as error:  # absl reads flagfiles as UTF-8 text
        named = [a.split("=", 1)[1] for a in argv if a.startswith(("--flagfile=", "-flagfile="))]
        where = next((path for path in named if not _is_utf8(path)), "a --flagfile")
        print(f"error: {where} is not UTF-8 text ({error.reason} at byte {error.start}); "
              "pass a text file of --flag=value lines", file=sys.stderr)  # fmt: skip
        sys.exit(2)


if __name__ == "__main__":
    from lskd_tf.processes import exit_with_parent

    exit_with_parent()  # started by lskd_tf.processes.popen: no orphan if the parent dies
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)
