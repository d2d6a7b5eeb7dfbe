"""The experiment flagfiles in flags/: each parses, and its study is the papers' recipe.

The expected numbers below are written from the papers (see
/work/shared/reference/papers.md and the public code of Chandrasegaran et al. for CUB),
not read from the flagfiles, so a typo in a flagfile fails here. No training happens:
each file is parsed with absl, turned into a `StudySpec` and planned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path

import pytest
from absl import flags
from absl.testing import flagsaver

from lskd_tf import flags as lf  # defines every flag, once per process
from lskd_tf.experiment import StudentSpec, TeacherSpec, plan_study

FLAGS = flags.FLAGS
ROOT = Path(__file__).resolve().parents[1]
FLAG_DIR = ROOT / "flags"
FLAG_LINE = re.compile(r"^--(?:no)?([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$")


@contextlib.contextmanager
def parsed(*argv: str):
    """Parse `argv` as run.py's command line; restore every flag (and parse state) after."""
    was_parsed = FLAGS.is_parsed()
    with flagsaver.flagsaver():
        FLAGS.unparse_flags()
        FLAGS(["run.py", *argv])
        yield
    if not was_parsed:
        FLAGS.unparse_flags()


@pytest.fixture(autouse=True)
def _at_repository_root(monkeypatch):
    # Nested --flagfile paths are relative to the working directory: runs start at the root.
    monkeypatch.chdir(ROOT)


def study_of(path: str):
    with parsed(f"--flagfile={path}"):
        return lf.study_spec(), lf.STUDY.value


def experiment_files() -> list[str]:
    return sorted(
        str(p.relative_to(ROOT)) for p in FLAG_DIR.rglob("*.flags") if "common" not in p.parts
    )


def flag_lines(path: Path) -> list[tuple[str, str | None]]:
    """(name, value) of every flag line of one file (comments and blanks skipped)."""
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = FLAG_LINE.match(line)
        assert match, f"{path}: not a --flag line: {raw!r}"
        lines.append((match.group(1), match.group(2)))
    return lines


# ------------------------------------------------------------------- the papers' recipes
# (epochs, global batch, optimizer, lr, momentum, weight decay, schedule, milestones, warmup)
CIFAR = (240, 64, "sgd", 0.05, 0.9, 5e-4, "step", (150, 180, 210), 0.0)  # RepDistiller
IMAGENET_TEACHER = (90, 256, "sgd", 0.1, 0.9, 1e-4, "step", (30, 60), 0.0)
IMAGENET_STUDENT = (200, 256, "sgd", 0.1, 0.9, 1e-4, "step", (80, 160), 5.0)  # Chandrasegaran
CUB_TEACHER = (90, 256, "sgd", 0.01, 0.9, 1e-4, "step", (30, 60), 0.0)  # ICML 2022 code
CUB_STUDENT = (200, 256, "sgd", 0.01, 0.9, 1e-3, "step", (80, 160), 0.0)
# ReActNet (liuzechun/ReActNet resnet/{1_step1,2_step2}/run.sh, 256-epoch setting):
# Adam 1e-3, batch 512, linear decay per epoch, wd 1e-5 in step 1 and 0 in step 2.
REACTNET_STEP1 = (256, 512, "adam", 1e-3, 0.9, 1e-5, "linear", (), 0.0)
REACTNET_STEP2 = (256, 512, "adam", 1e-3, 0.9, 0.0, "linear", (), 0.0)
# ... and in one step at half the batch and lr.
REACTNET = (256, 256, "adam", 5e-4, 0.9, 1e-5, "linear", (), 0.0)
# Chandrasegaran's student script read as -b 256 per process on 8 GPUs, lr 0.1 unscaled
IMAGENET_STUDENT_B2048 = (200, 2048, "sgd", 0.1, 0.9, 1e-4, "step", (80, 160), 5.0)
# The binary file's teachers share the ImageNet teacher recipe except the optimizer,
# which the flags cannot set per teacher (the test pins that limitation).
IMAGENET_TEACHER_ADAM = (90, 256, "adam", 0.1, 0.9, 1e-4, "step", (30, 60), 0.0)

PURE_KD = (1.0, 0.0)  # (kd_weight, ce_weight): both papers
REPDISTILLER_KD = (0.9, 0.1)

CIFAR_PAIRS = [
    ("resnet56", "resnet20"),
    ("resnet110", "resnet32"),
    ("resnet32x4", "resnet8x4"),
    ("wrn_40_2", "wrn_16_2"),
    ("vgg13", "vgg8"),
]


@dataclasses.dataclass(frozen=True)
class Expected:
    study: str
    dataset: str
    teachers: tuple[str, ...]
    students: tuple[str, ...]
    temperatures: tuple[float, ...]
    seeds: tuple[int, ...]
    smoothing: str
    loss: tuple[float, float]
    teacher_recipe: tuple
    student_recipe: tuple
    smoothings: tuple[float, ...] = (0.0, 0.1)
    # Weight decay on every parameter, as the papers' SGD(model.parameters(), ...);
    # ReActNet decays its conv weights only (teachers: all).
    student_wd_scope: str = "all"
    # RepDistiller's CIFAR scripts distill from the last teacher checkpoint, the ICML22
    # ImageNet/CUB student scripts from the best.
    use_teacher: str = "last"
    data_options: tuple = ()


EXPECTED: dict[str, Expected] = {}
for _t, _s in CIFAR_PAIRS:
    _study = f"cifar100_{_t}_{_s}"
    EXPECTED[f"flags/cifar100/{_t}_{_s}.flags"] = Expected(
        _study, "cifar100", (_t,), (_s,), (1.0, 2.0, 3.0, 4.0, 64.0), (0, 1, 2), "uniform",
        PURE_KD, CIFAR, CIFAR,
    )  # fmt: skip
    EXPECTED[f"flags/cifar100/repdistiller/{_t}_{_s}.flags"] = Expected(
        _study, "cifar100", (_t,), (_s,), (4.0,), (0, 1, 2), "uniform",
        REPDISTILLER_KD, CIFAR, CIFAR,
    )  # fmt: skip
EXPECTED["flags/cifar100/study.flags"] = Expected(
    "cifar100", "cifar100", tuple(t for t, _ in CIFAR_PAIRS), tuple(s for _, s in CIFAR_PAIRS),
    (1.0, 2.0, 3.0, 4.0, 64.0), (0, 1, 2), "uniform", PURE_KD, CIFAR, CIFAR,
)  # fmt: skip
EXPECTED["flags/imagenet/chandrasegaran_resnet50_resnet18.flags"] = Expected(
    "imagenet_chandrasegaran", "imagenet2012", ("resnet50",), ("resnet18",),
    (1.0, 2.0, 3.0, 64.0), (0,), "uniform", PURE_KD, IMAGENET_TEACHER, IMAGENET_STUDENT,
    use_teacher="best",
)  # fmt: skip
EXPECTED["flags/imagenet/chandrasegaran_resnet50_resnet18_b2048.flags"] = Expected(
    "imagenet_chandrasegaran_b2048", "imagenet2012", ("resnet50",), ("resnet18",),
    (1.0, 2.0, 3.0, 64.0), (0,), "uniform", PURE_KD, IMAGENET_TEACHER, IMAGENET_STUDENT_B2048,
    use_teacher="best",
)  # fmt: skip
EXPECTED["flags/imagenet/chandrasegaran_resnet50_resnet50.flags"] = Expected(
    "imagenet_chandrasegaran", "imagenet2012", ("resnet50",), ("resnet50",), (1.0, 3.0),
    (0,), "uniform", PURE_KD, IMAGENET_TEACHER, IMAGENET_STUDENT, use_teacher="best",
)  # fmt: skip
for _s in ("resnet18", "resnet50"):
    EXPECTED[f"flags/imagenet/shen_resnet50_{_s}.flags"] = Expected(
        "imagenet_shen", "imagenet2012", ("resnet50",), (_s,), (1.0,), (0, 1, 2), "others",
        PURE_KD, IMAGENET_TEACHER, IMAGENET_STUDENT, use_teacher="best",
    )  # fmt: skip
for _file, _student, _recipe in (
    ("shen_binary_resnet18", "reactnet_resnet18", REACTNET),
    ("shen_binary_resnet18_step1", "reactnet_resnet18_step1", REACTNET_STEP1),
    ("shen_binary_resnet18_step2", "reactnet_resnet18", REACTNET_STEP2),
):
    EXPECTED[f"flags/imagenet/{_file}.flags"] = Expected(
        "imagenet_shen", "imagenet2012", ("resnet50",), (_student,), (1.0,), (0, 1, 2),
        "others", PURE_KD, IMAGENET_TEACHER_ADAM, _recipe, student_wd_scope="kernels",
        use_teacher="best", data_options=(("lighting", 0.1),),
    )  # fmt: skip
for _s in ("resnet18", "mobilenet_v2"):
    EXPECTED[f"flags/cub200/resnet50_{_s}.flags"] = Expected(
        "cub200_chandrasegaran", "caltech_birds2011", ("resnet50",), (_s,),
        (1.0, 2.0, 3.0, 64.0), (0,), "uniform", PURE_KD, CUB_TEACHER, CUB_STUDENT,
        use_teacher="best",
    )  # fmt: skip
EXPECTED["flags/cub200/shen_resnet50_resnet18.flags"] = Expected(
    "cub200_shen", "caltech_birds2011", ("resnet50",), ("resnet18",), (1.0,), (0, 1, 2),
    "others", PURE_KD, CUB_TEACHER, CUB_STUDENT, use_teacher="best",
)  # fmt: skip


def recipe(train) -> tuple:
    return (
        train.epochs, train.batch_size, train.optimizer, train.learning_rate, train.momentum,
        train.weight_decay, train.schedule, train.milestones, train.warmup_epochs,
    )  # fmt: skip


# ----------------------------------------------------------------------------- tests


# The translation recipe of the fork both papers point to (papers.md), teachers = students:
# (epochs, optimizer, lr, weight decay, schedule, warmup steps, warmup epochs, max updates,
# validate every, Adam beta1, beta2, epsilon); RayeRen/multilingual-kd-pytorch
# runs/train.sh and runs/train_distill.sh: --max-update 300000, --save-interval-updates
# 2000, no --max-epoch (1000 epochs: a bound), --adam-betas '(0.9, 0.98)'; fairseq's
# --adam-eps default is 1e-8.
TRANSLATION_RECIPE = (
    1000, "adam", 5e-4, 0.0, "inverse_sqrt", 4000, 0.0, 300_000, 2000, 0.9, 0.98, 1e-8,
)  # fmt: skip
TRANSLATION_PATIENCE = {"teacher": 20, "student": 100}  # the fork's --early-stop
# flagfile -> (study, dataset, source, target, vocabulary, temperatures, seeds)
TRANSLATION = {
    "flags/translation/shen_iwslt14_de_en.flags": (
        "iwslt14_shen", "iwslt14", "de", "en", 30000, (1.0,), (0, 1, 2)),
    "flags/translation/chandrasegaran_wmt14_en_de.flags": (
        "wmt14_en_de_chandrasegaran", "wmt14_translate/de-en", "en", "de", 32000,
        (1.0, 2.0, 3.0, 64.0), (0,)),
    "flags/translation/chandrasegaran_wmt14_en_ru.flags": (
        "wmt14_en_ru_chandrasegaran", "wmt14_translate/ru-en", "en", "ru", 32000,
        (1.0, 2.0, 3.0, 64.0), (0,)),
}  # fmt: skip


def test_every_experiment_file_has_its_papers_recipe_in_this_test():
    quick = {
        "flags/quick.flags", "flags/quick_translation.flags", "flags/embedded/study.flags",
        "flags/embedded/separable_study.flags", "flags/embedded/translation_study.flags",
    }  # fmt: skip
    assert set(experiment_files()) - quick == set(EXPECTED) | set(TRANSLATION)


@pytest.mark.parametrize("path", sorted(TRANSLATION))
def test_translation_flagfile_is_the_forks_recipe(path):
    name, dataset, source, target, vocab, temperatures, seeds = TRANSLATION[path]
    study, study_name = study_of(path)
    assert (study_name, study.task, study.data.name) == (name, "translation", dataset)
    options = dict(study.data.options)
    assert (options["source_language"], options["target_language"]) == (source, target)
    assert (options["vocab_size"], options["subword_model"]) == (vocab, "bpe")
    assert (options["max_tokens"], options["beam_size"], options["length_penalty"]) == (
        4096, 4, 1.0)  # fmt: skip
    assert tuple(study.all_teacher_models) == ("transformer_2x2_256",)
    assert tuple(study.teacher_smoothings) == (0.0, 0.1)
    assert (tuple(study.temperatures), tuple(study.seeds)) == (temperatures, seeds)
    distill = study.distill
    assert (distill.kd_weight, distill.ce_weight, distill.label_smoothing) == (0.9, 0.1, 0.1)
    assert distill.t2_scaling is True and study.smoothing == "uniform"
    assert (distill.kd_loss, distill.kd_topk) == ("topk_kl", 4)  # the fork's top-4 logits
    for kind, train in (("teacher", study.teacher_train), ("student", study.student_train)):
        assert (
            train.epochs,
            train.optimizer,
            train.learning_rate,
            train.weight_decay,
            train.schedule,
            train.warmup_steps,
            train.warmup_epochs,
            train.max_updates,
            train.validate_every_updates,
            train.adam_beta1,
            train.adam_beta2,
            train.adam_epsilon,
        ) == TRANSLATION_RECIPE
        assert train.patience == TRANSLATION_PATIENCE[kind]
    runs = plan_study(study)
    assert len(runs) == 2 + 2 * len(temperatures) * len(seeds)
    with parsed(f"--flagfile={path}"):  # the tables show the papers' (fairseq's) BLEU
        assert lf.HEADLINE_METRIC.value == "bleu_tokenized"


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_flagfile_study_matches_the_paper(path):
    expected = EXPECTED[path]
    study, name = study_of(path)
    assert name == expected.study
    assert study.data.name == expected.dataset
    assert tuple(study.all_teacher_models) == expected.teachers
    assert tuple(study.teacher_smoothings) == expected.smoothings
    assert study.smoothing == expected.smoothing
    students_planned = (s for t in study.all_teacher_models for s in study.students_of(t))
    assert tuple(dict.fromkeys(students_planned)) == expected.students
    assert tuple(study.temperatures) == expected.temperatures
    assert tuple(study.seeds) == expected.seeds
    assert (study.distill.kd_weight, study.distill.ce_weight) == expected.loss
    assert study.distill.t2_scaling is True
    assert study.distill.label_smoothing == 0.0
    assert recipe(study.teacher_train) == expected.teacher_recipe
    assert recipe(study.student_train) == expected.student_recipe
    assert study.student_train.decay_rate == study.teacher_train.decay_rate == 0.1
    assert study.teacher_train.weight_decay_scope == "all"
    assert study.student_train.weight_decay_scope == expected.student_wd_scope
    assert study.use_teacher == expected.use_teacher
    assert tuple(study.data.options) == expected.data_options

    runs = plan_study(study)
    teachers = [r for r in runs if isinstance(r, TeacherSpec)]
    students = [r for r in runs if isinstance(r, StudentSpec)]
    n_teachers = len(expected.teachers) * len(expected.smoothings)
    assert len(teachers) == n_teachers
    per_teacher = len(expected.temperatures) * len(expected.seeds)
    student_models = sum(len(study.students_of(t)) for t in study.all_teacher_models)
    assert len(students) == student_models * len(expected.smoothings) * per_teacher
    assert len({r.name for r in runs}) == len(runs)  # no two runs share a directory
    for student in students:
        assert recipe(student.train) == expected.student_recipe
        assert student.train.seed == student.seed
        assert student.teacher.smoothing == expected.smoothing
        assert recipe(student.teacher.train) == expected.teacher_recipe


def test_quick_flagfile_is_the_default_study():
    with parsed():
        default, default_name = lf.study_spec(), lf.STUDY.value
    quick, quick_name = study_of("flags/quick.flags")
    assert quick == default
    assert quick_name == default_name == "quick"
    assert [r.name for r in plan_study(quick)] == [r.name for r in plan_study(default)]
    # ...and the file is not vacuous: it really sets the quick study's settings.
    assert quick.student_train.epochs == 3 and quick.teacher_train.epochs == 4
    assert tuple(quick.temperatures) == (1.0, 4.0)
    # The quick study keeps decaying kernels only (its printed table must not change).
    assert quick.student_train.weight_decay_scope == "kernels"
    assert quick.teacher_train.weight_decay_scope == "kernels"


def test_a_later_flag_overrides_the_flagfile():
    with parsed("--flagfile=flags/cifar100/resnet56_resnet20.flags", "--lr=0.01"):
        study = lf.study_spec()
    assert study.student_train.learning_rate == 0.01  # e.g. MobileNetV2 on CIFAR-100
    assert study.teacher_train.learning_rate == 0.05  # teachers keep --teacher_lr


@pytest.mark.parametrize(
    "argv, teacher_scope, student_scope",
    [
        ((), "kernels", "kernels"),
        (("--weight_decay_scope=all",), "all", "all"),  # the teacher follows the student
        (("--flagfile=flags/imagenet/shen_binary_resnet18.flags",), "all", "kernels"),
        (("--weight_decay_scope=all", "--teacher_weight_decay_scope=kernels"), "kernels", "all"),
    ],
)
def test_weight_decay_scope_flags_round_trip(argv, teacher_scope, student_scope, tmp_path):
    """The scopes reach TrainConfig, its to_dict (run.json) and the run's flags.txt."""
    with parsed(*argv):
        spec, env = lf.single_run_spec(), lf.run_env()
    assert (spec.teacher.train.weight_decay_scope, spec.train.weight_decay_scope) == (
        teacher_scope,
        student_scope,
    )
    assert spec.train.to_dict()["weight_decay_scope"] == student_scope
    assert dataclasses.replace(spec.train, **spec.train.to_dict()) == spec.train
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(lf.flagfile_for(spec, env))
    with parsed(f"--flagfile={flagfile}"):
        again = lf.single_run_spec()
    assert again == spec
    assert again.teacher.train == spec.teacher.train and again.train == spec.train


@pytest.mark.parametrize(
    "argv, teacher, student",
    [
        ((), (None, None, None), (None, None, None)),  # off: training as before
        (("--max_updates=50", "--validate_every_updates=10", "--patience=3"),
         (50, 10, 3), (50, 10, 3)),  # the teacher follows the student
        (("--patience=3", "--teacher_patience=0", "--teacher_max_updates=40"),
         (40, None, None), (None, None, 3)),  # 0: off for the teacher only
    ],
)  # fmt: skip
def test_update_limit_flags_round_trip(argv, teacher, student, tmp_path):
    """--max_updates / --validate_every_updates / --patience reach TrainConfig (0 = None)
    and the run's flags.txt re-creates them, a teacher's "off" included."""
    with parsed(*argv):
        spec, env = lf.single_run_spec(), lf.run_env()

    def limits(train):
        return (train.max_updates, train.validate_every_updates, train.patience)

    assert (limits(spec.teacher.train), limits(spec.train)) == (teacher, student)
    text = lf.flagfile_for(spec, env)
    if not argv:  # a run without them writes the flags.txt it always wrote
        assert "updates" not in text and "patience" not in text
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(text)
    with parsed(f"--flagfile={flagfile}"):
        again = lf.single_run_spec()
    assert again == spec and again.teacher.train == spec.teacher.train


def test_full_cifar_grid_is_the_papers_pairs():
    study, _ = study_of("flags/cifar100/study.flags")
    runs = plan_study(study)
    pairs = {(r.teacher.model, r.model) for r in runs if r.kind == "student"}
    assert pairs == set(CIFAR_PAIRS)
    assert sum(r.kind == "teacher" for r in runs) == 10  # 5 teachers x LS {0, 0.1}
    assert sum(r.kind == "student" for r in runs) == 150  # x 5 temperatures x 3 seeds


SAME_STUDY = [
    ("cifar100/resnet56_resnet20", "cifar100/repdistiller/resnet56_resnet20"),
    ("imagenet/shen_resnet50_resnet18", "imagenet/shen_binary_resnet18"),
    ("imagenet/shen_resnet50_resnet18", "imagenet/shen_binary_resnet18_step1"),
    ("imagenet/chandrasegaran_resnet50_resnet18", "imagenet/chandrasegaran_resnet50_resnet50"),
    ("cub200/resnet50_resnet18", "cub200/resnet50_mobilenet_v2"),
]


@pytest.mark.parametrize("first, second", SAME_STUDY)
def test_files_of_one_study_share_teachers_not_students(first, second):
    (a, name_a), (b, name_b) = study_of(f"flags/{first}.flags"), study_of(f"flags/{second}.flags")
    runs_a, runs_b = plan_study(a), plan_study(b)
    assert name_a == name_b
    teachers = lambda runs: {r.name for r in runs if r.kind == "teacher"}  # noqa: E731
    students = lambda runs: {r.name for r in runs if r.kind == "student"}  # noqa: E731
    assert teachers(runs_a) == teachers(runs_b)
    assert not students(runs_a) & students(runs_b)


def test_shen_and_chandrasegaran_teachers_differ_by_convention():
    shen, _ = study_of("flags/imagenet/shen_resnet50_resnet18.flags")
    chandra, _ = study_of("flags/imagenet/chandrasegaran_resnet50_resnet18.flags")
    shen_names = {r.name for r in plan_study(shen) if r.kind == "teacher"}
    chandra_names = {r.name for r in plan_study(chandra) if r.kind == "teacher"}
    assert "teacher-resnet50-ls0.1-others-seed0" in shen_names
    assert "teacher-resnet50-ls0.1-seed0" in chandra_names


@pytest.mark.parametrize(
    "path", sorted(FLAG_DIR.rglob("*.flags")), ids=lambda p: str(p.relative_to(FLAG_DIR))
)
def test_includes_exist_and_no_flag_is_set_twice(path):
    # Several --flagfile lines are fine (includes); any other flag twice is a mistake.
    names = [name for name, _ in flag_lines(path) if name != "flagfile"]
    assert len(names) == len(set(names)), f"{path} sets a flag twice"
    for name, value in flag_lines(path):
        if name == "flagfile":
            assert (ROOT / value).is_file(), f"{path} includes missing {value}"
        else:
            assert name in FLAGS, f"{path}: unknown flag --{name}"


def test_readme_lists_every_experiment_file():
    readme = (FLAG_DIR / "README.md").read_text()
    for path in experiment_files():
        assert f"`{path}`" in readme, f"{path} missing from flags/README.md"


def test_reactnet_step2_students_start_from_their_own_step1_runs():
    step1, _ = study_of("flags/imagenet/shen_binary_resnet18_step1.flags")
    step2, _ = study_of("flags/imagenet/shen_binary_resnet18_step2.flags")
    step1_runs = {r.name: r for r in plan_study(step1) if r.kind == "student"}
    step2_runs = [r for r in plan_study(step2) if r.kind == "student"]
    assert len(step2_runs) == len(step1_runs) == 6  # 2 teachers x 3 seeds
    for run in step2_runs:
        source = Path(run.pretrained)
        assert source.parts[:2] == ("runs", "imagenet_shen") and source.name == "last.keras"
        origin = step1_runs[source.parent.name]
        assert (origin.seed, origin.teacher) == (run.seed, run.teacher)
        assert origin.model == "reactnet_resnet18_step1" and run.model == "reactnet_resnet18"


def test_separable_study_is_the_issue_21_grid():
    """2 smoothings x 2 teacher seeds, each teacher's students at T 1, 2, 4, 8 x 5 seeds,
    on the separable-siblings embedded set (the default set's runs keep their identity:
    it is a data option, recorded only when given)."""
    study, name = study_of("flags/embedded/separable_study.flags")
    runs = plan_study(study)
    teachers = [r for r in runs if isinstance(r, TeacherSpec)]
    students = [r for r in runs if isinstance(r, StudentSpec)]
    assert name == "embedded_separable" and len(teachers) == 4 and len(students) == 80
    assert {(t.label_smoothing, t.seed) for t in teachers} == {
        (a, s) for a in (0.0, 0.1) for s in (0, 1)
    }
    assert ("siblings", "separable") in study.data.options
    assert {s.distill.temperature for s in students} == {1.0, 2.0, 4.0, 8.0}
    assert {s.seed for s in students} == set(range(5))
    assert all(s.distill.ce_weight == 0 and s.distill.kd_weight == 1 for s in students)
    default, _ = study_of("flags/embedded/study.flags")
    assert not any(key == "siblings" for key, _ in default.data.options)


def test_translation_study_is_the_icml22_nmt_table_shape():
    """Teachers LS 0 / 0.1, students at the table's T = 1, 2, 3, 64 x 3 seeds, the fork's
    top-4 word-level KD (0.9 KD + 0.1 smoothed CE) from an exact top-4 cache."""
    study, name = study_of("flags/embedded/translation_study.flags")
    runs = plan_study(study)
    students = [r for r in runs if isinstance(r, StudentSpec)]
    assert name == "embedded_translation" and study.task == "translation"
    assert len(runs) == 2 + 24 and study.teacher_smoothings == (0.0, 0.1)
    assert {s.distill.temperature for s in students} == {1.0, 2.0, 3.0, 64.0}
    assert {s.seed for s in students} == {0, 1, 2}
    distill = students[0].distill
    assert (distill.kd_loss, distill.kd_topk, distill.kd_weight, distill.ce_weight) == (
        "topk_kl", 4, 0.9, 0.1)  # fmt: skip
    assert distill.label_smoothing == 0.1 and students[0].teacher_cache.mode == "exact"
