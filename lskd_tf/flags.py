"""Every command-line flag of `run.py`, and the translation of flags into specs.

This is the only module that defines absl flags; the library below it is
flag-free (`lskd_tf.experiment` takes plain dataclasses). The defaults are the
quick study: `python run.py` with no flags trains two resnet14 teachers
(label smoothing 0 and 0.1) on the embedded dataset and distills a resnet8
student from each at T = 1 and T = 4 (pure KD), in about 3.5 minutes on a
2-core CPU (measured: 211 s wall from a fresh clone).
"""

from __future__ import annotations

import dataclasses

from absl import flags

from lskd_tf import data, models, pretrained
from lskd_tf.experiment import (
    MIXED_PRECISION,
    TEACHER_CHECKPOINTS,
    DataSpec,
    RunEnv,
    StudentSpec,
    StudySpec,
    TeacherSpec,
)
from lskd_tf.losses import SMOOTHING_CONVENTIONS
from lskd_tf.schedules import SCHEDULES
from lskd_tf.teacher_cache import CacheSpec
from lskd_tf.training import OPTIMIZERS, TrainConfig

MODES = ("study", "teacher", "distill", "evaluate", "export", "analyze", "results")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

FLAGS = flags.FLAGS

# ----------------------------------------------------------------------------- what to run
MODE = flags.DEFINE_enum(
    "mode", "study", MODES,
    "study: run the grid teacher smoothing x student x T x seed (skips finished runs, resumes "
    "interrupted ones); teacher: train one teacher; distill: distill one student; evaluate: "
    "top-1/top-5 of --checkpoint; export: --checkpoint as a SavedModel in --export_dir; "
    "analyze: analysis report of --run_dirs; results: results tables of --run_dirs.",
)  # fmt: skip
STUDY = flags.DEFINE_string("study", "quick", "Study name: runs go to <output_dir>/<study>/.")
OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs", "Root of all run directories.")
TENSORBOARD_DIR = flags.DEFINE_string(
    "tensorboard_dir", "tensorboard_logs", "TensorBoard root: logs go to <dir>/<study>/<run>."
)

# ----------------------------------------------------------------------------- data
DATASET = flags.DEFINE_string(
    "dataset", "embedded", f"Dataset, one of: {', '.join(data.available())}."
)
DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: ~/tensorflow_datasets).")
DOWNLOAD = flags.DEFINE_bool(
    "download", False, "Let TFDS download/prepare a missing dataset (never done otherwise)."
)
CACHE = flags.DEFINE_bool("cache", False, "Cache decoded examples in memory (CIFAR-sized data).")
TRAIN_PER_CLASS = flags.DEFINE_integer(
    "train_per_class", 50, "Embedded dataset only: training images per class."
)
TEST_PER_CLASS = flags.DEFINE_integer(
    "test_per_class", 20, "Embedded dataset only: test images per class."
)

# ----------------------------------------------------------------------------- models, KD
TEACHER_MODELS = flags.DEFINE_list(
    "teacher_models", ["resnet14"], "Teacher architecture(s); see lskd_tf.models.available()."
)
TEACHER_SMOOTHINGS = flags.DEFINE_list(
    "teacher_smoothings", ["0", "0.1"], "Teacher label smoothing strength(s), each in [0, 1)."
)
SMOOTHING = flags.DEFINE_enum(
    "smoothing", "uniform", SMOOTHING_CONVENTIONS,
    "Label smoothing convention: uniform = (1-a)*y + a/K (Muller, Chandrasegaran, PyTorch); "
    "others = 1-a on the true class, a/(K-1) elsewhere (Shen Eq. 1).",
)  # fmt: skip
TEACHER_SEED = flags.DEFINE_integer("teacher_seed", 0, "Seed of the teacher runs.")
STUDENT_MODELS = flags.DEFINE_list("student_models", ["resnet8"], "Student architecture(s).")
PAIRS = flags.DEFINE_list(
    "pairs", [],
    "teacher:student model pairs (e.g. resnet56:resnet20,vgg13:vgg8); when set, only these "
    "pairs are distilled instead of every teacher x every student (--teacher_models and "
    "--student_models are then ignored).",
)  # fmt: skip
TEMPERATURES = flags.DEFINE_list("temperatures", ["1", "4"], "Distillation temperature(s) T > 0.")
SEEDS = flags.DEFINE_list("seeds", ["0"], "Student seeds; tables report mean ± std over them.")
KD_WEIGHT = flags.DEFINE_float("kd_weight", 1.0, "Weight of the T^2-scaled KL term.")
CE_WEIGHT = flags.DEFINE_float(
    "ce_weight", 0.0, "Weight of the student's label cross-entropy (0: pure KD, as both papers)."
)
STUDENT_SMOOTHING = flags.DEFINE_float(
    "student_smoothing", 0.0, "Label smoothing of the student's own CE term, in [0, 1)."
)
T2_SCALING = flags.DEFINE_bool("t2_scaling", True, "Multiply the KD term by T^2 (Hinton).")
USE_TEACHER = flags.DEFINE_enum(
    "use_teacher", "last", TEACHER_CHECKPOINTS, "Which teacher checkpoint students distill from."
)
TEACHER_CHECKPOINT = flags.DEFINE_string(
    "teacher_checkpoint", None,
    "distill mode: a teacher .keras file to distill from instead of a teacher run of the "
    "study, or PyTorch weights (.safetensors/.pth of a torchvision/RepDistiller model, e.g. "
    "torchvision's ResNet-50: the papers' no-LS ImageNet teacher).",
)  # fmt: skip
PRETRAINED = flags.DEFINE_list(
    "pretrained", [],
    "Students' initial weights (fine-tuning): FILE for every student, or MODEL=FILE entries, "
    "e.g. resnet18=weights/resnet18-f37072fd.safetensors. PyTorch .safetensors/.pth "
    "(torchvision/RepDistiller names) or .keras; a new classifier when the class counts differ.",
)  # fmt: skip
TEACHER_PRETRAINED = flags.DEFINE_list(
    "teacher_pretrained", [],
    "Teachers' initial weights: FILE for every teacher, or ALPHA=FILE entries per teacher "
    "label smoothing, e.g. 0=weights/resnet50-0676ba61.safetensors,0.1=ls_teacher.keras.",
)  # fmt: skip

# ----------------------------------------------------------------------------- optimization
EPOCHS = flags.DEFINE_integer("epochs", 3, "Student epochs.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Global batch size (all replicas).")
OPTIMIZER = flags.DEFINE_enum("optimizer", "sgd", OPTIMIZERS, "Optimizer.")
LR = flags.DEFINE_float("lr", 0.1, "Learning rate (after warmup) for the global batch.")
MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
NESTEROV = flags.DEFINE_bool("nesterov", False, "Nesterov momentum.")
WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", 5e-4, "L2 weight decay on conv/dense kernels (PyTorch SGD convention)."
)
SCHEDULE = flags.DEFINE_enum("schedule", "cosine", SCHEDULES, "Learning-rate decay.")
MILESTONES = flags.DEFINE_list(
    "milestones", [], "Step schedule: epochs at which the LR is multiplied by --decay_rate."
)
DECAY_RATE = flags.DEFINE_float("decay_rate", 0.1, "Step schedule factor.")
WARMUP_EPOCHS = flags.DEFINE_float("warmup_epochs", 0.0, "Linear warmup epochs.")
STEPS_PER_EPOCH = flags.DEFINE_integer(
    "steps_per_epoch", None, "Cap the steps of an epoch (default: one pass over the data)."
)
TEACHER_EPOCHS = flags.DEFINE_integer("teacher_epochs", 4, "Teacher epochs.")
TEACHER_LR = flags.DEFINE_float("teacher_lr", None, "Teacher learning rate (default: --lr).")
TEACHER_MILESTONES = flags.DEFINE_list(
    "teacher_milestones", None, "Teacher step-schedule epochs (default: --milestones)."
)
TEACHER_WARMUP_EPOCHS = flags.DEFINE_float(
    "teacher_warmup_epochs", None, "Teacher warmup epochs (default: --warmup_epochs)."
)
TEACHER_WEIGHT_DECAY = flags.DEFINE_float(
    "teacher_weight_decay", None, "Teacher weight decay (default: --weight_decay)."
)
TEACHER_SCHEDULE = flags.DEFINE_enum(
    "teacher_schedule", None, SCHEDULES, "Teacher LR decay (default: --schedule)."
)
TEACHER_BATCH_SIZE = flags.DEFINE_integer(
    "teacher_batch_size", None, "Teacher global batch size (default: --batch_size)."
)

# ----------------------------------------------------------------------------- teacher cache
TEACHER_CACHE = flags.DEFINE_enum(
    "teacher_cache", "none", ("none", "exact", "sampled"),
    "Compute each teacher's logits once and reuse them for all its students "
    "(lskd_tf.teacher_cache; stored beside the teacher's checkpoint, built on first use). "
    "none: run the teacher every step; exact: every view of a discrete augmentation "
    "(CIFAR pad-crop-flip: 162 views/image), students see exactly the online views; "
    "sampled: --cache_views fixed views per image, any augmentation (FKD).",
)  # fmt: skip
CACHE_VIEWS = flags.DEFINE_integer(
    "cache_views", 10, "teacher_cache=sampled: views stored per image."
)
CACHE_TOPK = flags.DEFINE_integer(
    "cache_topk", 0, "Teacher cache: keep the k largest logits per view (0: all; exact at T=1)."
)
CACHE_DTYPE = flags.DEFINE_enum(
    "cache_dtype", "float16", ("float16", "float32"), "Teacher cache storage precision."
)

# ----------------------------------------------------------------------------- execution
STRATEGY = flags.DEFINE_enum(
    "strategy", "default", STRATEGIES,
    "default: one device; mirrored: all local GPUs; multi_worker: MultiWorkerMirroredStrategy "
    "configured by TF_CONFIG; tpu: TPUStrategy (untested here).",
)  # fmt: skip
MIXED_PRECISION_FLAG = flags.DEFINE_enum(
    "mixed_precision", "float32", MIXED_PRECISION,
    "Keras dtype policy; mixed_float16 uses loss scaling (GPUs), mixed_bfloat16 (TPUs). On "
    "CPUs keep float32: both were slower here (benchmarks/precision_xla.py).",
)  # fmt: skip
JIT_COMPILE = flags.DEFINE_bool(
    "jit_compile", False, "XLA-compile the train step (try it on GPU; slower on this CPU)."
)
PROFILE_BATCHES = flags.DEFINE_list(
    "profile_batches", None, "Two batch numbers 'start,stop' to profile in TensorBoard."
)
MAX_RUNS = flags.DEFINE_integer(
    "max_runs", None, "study mode: stop after training this many runs (others stay for later)."
)
WAIT_FOR_OTHERS = flags.DEFINE_bool(
    "wait_for_others", True,
    "study mode: when other processes hold runs of the study, wait for them before the summary.",
)  # fmt: skip
VERBOSE = flags.DEFINE_integer("verbose", 1, "0: one line per run; 1: progress bars.")
ANALYZE = flags.DEFINE_bool(
    "analyze", True, "study mode: write the analysis report of all runs at the end."
)
EXPORT = flags.DEFINE_bool(
    "export", True, "study mode: export every student as a SavedModel at the end."
)

# ----------------------------------------------------------------------------- other modes
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "evaluate/export: a .keras checkpoint.")
EXPORT_DIR = flags.DEFINE_string("export_dir", None, "export: the SavedModel directory to write.")
RUN_DIRS = flags.DEFINE_list(
    "run_dirs", None, "analyze/results: run or study directories, globs allowed "
    "(default: <output_dir>/<study>).",
)  # fmt: skip


def _floats(values, name: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        raise flags.ValidationError(f"--{name} must be a comma-separated list of numbers") from None


def _ints(values, name: str) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        message = f"--{name} must be a comma-separated list of integers"
        raise flags.ValidationError(message) from None


def _validate_models(values, name):
    known = set(models.available())
    for value in values or []:
        try:
            models.describe(value)
        except ValueError:
            raise flags.ValidationError(
                f"--{name}: unknown model {value!r}; choose one of: {', '.join(sorted(known))}"
            ) from None
    return True


@flags.validator("dataset")
def _check_dataset(value):
    if value not in data.available():
        raise flags.ValidationError(
            f"unknown dataset {value!r}; choose one of: {', '.join(data.available())}"
        )
    return True


flags.register_validator("teacher_models", lambda v: _validate_models(v, "teacher_models"))
flags.register_validator("student_models", lambda v: _validate_models(v, "student_models"))


@flags.validator("pairs")
def _check_pairs(values):
    for value in values:
        parts = value.split(":")
        if len(parts) != 2:
            raise flags.ValidationError(f"--pairs entries are teacher:student, got {value!r}")
        _validate_models([parts[0]], "pairs")
        _validate_models([parts[1]], "pairs")
    return True


def _pretrained_entries(values, key=models.describe) -> tuple[tuple[str, str], ...]:
    """FILE or KEY=FILE entries -> ((key, file), ...); key "" = everyone.

    KEY is a model name (`key` accepts it) or, for teachers, a label smoothing; an
    entry whose text before the first "=" is no valid key is one file name (file names
    like Chandrasegaran's "teacher=resnet50-0.0-best.pth.tar" contain "=").
    """
    entries = []
    for value in values:
        k, sep, path = value.partition("=")
        try:
            entries.append((_key_text(key(k)), path) if sep else ("", value))
        except ValueError:
            entries.append(("", value))
    return tuple(entries)


def _key_text(key) -> str:
    return key.name if hasattr(key, "name") else str(key)


def _alpha(value: str) -> str:
    return f"{float(value):g}"


@flags.validator("temperatures")
def _check_temperatures(values):
    for value in _floats(values, "temperatures"):
        if not value > 0:
            raise flags.ValidationError(f"temperatures must be > 0, got {value:g}")
    return True


@flags.validator("teacher_smoothings")
def _check_smoothings(values):
    for value in _floats(values, "teacher_smoothings"):
        if not 0 <= value < 1:
            raise flags.ValidationError(f"teacher smoothing must be in [0, 1), got {value:g}")
    return True


@flags.validator("student_smoothing")
def _check_student_smoothing(value):
    if not 0 <= value < 1:
        raise flags.ValidationError(f"student smoothing must be in [0, 1), got {value:g}")
    return True


for _name in ("epochs", "teacher_epochs", "batch_size", "teacher_batch_size"):
    flags.register_validator(
        _name, lambda v: v is None or v >= 1, message=f"--{_name} must be >= 1"
    )
for _name in ("lr", "teacher_lr"):
    flags.register_validator(_name, lambda v: v is None or v > 0, message=f"--{_name} must be > 0")
flags.register_validator("kd_weight", lambda v: v >= 0, message="--kd_weight must be >= 0")
flags.register_validator("ce_weight", lambda v: v >= 0, message="--ce_weight must be >= 0")
flags.register_validator("cache_views", lambda v: v >= 1, message="--cache_views must be >= 1")
flags.register_validator(
    "cache_topk", lambda v: v >= 0, message="--cache_topk must be >= 0 (0 keeps all logits)"
)
flags.register_validator("seeds", lambda v: bool(_ints(v, "seeds")), message="--seeds is empty")
flags.register_validator(
    "milestones", lambda v: _ints(v, "milestones") is not None, message="bad --milestones"
)
flags.register_validator(
    "profile_batches",
    lambda v: v is None or len(_ints(v, "profile_batches")) == 2,
    message="--profile_batches takes two batch numbers, e.g. 10,20",
)


# ----------------------------------------------------------------------------- flags -> specs


def data_spec() -> DataSpec:
    options = ()
    if DATASET.value == "embedded":
        options = (("train_per_class", TRAIN_PER_CLASS.value),
                   ("test_per_class", TEST_PER_CLASS.value))  # fmt: skip
    return DataSpec(DATASET.value, DATA_DIR.value, DOWNLOAD.value, CACHE.value, options)


def _or(value, default):
    return default if value is None else value


def student_train_config() -> TrainConfig:
    return TrainConfig(
        epochs=EPOCHS.value, batch_size=BATCH_SIZE.value, optimizer=OPTIMIZER.value,
        learning_rate=LR.value, momentum=MOMENTUM.value, nesterov=NESTEROV.value,
        weight_decay=WEIGHT_DECAY.value, schedule=SCHEDULE.value,
        milestones=tuple(_ints(MILESTONES.value, "milestones")), decay_rate=DECAY_RATE.value,
        warmup_epochs=WARMUP_EPOCHS.value, steps_per_epoch=STEPS_PER_EPOCH.value,
        jit_compile=JIT_COMPILE.value, verbose=VERBOSE.value,
    )  # fmt: skip


def teacher_train_config() -> TrainConfig:
    student = student_train_config()
    milestones = TEACHER_MILESTONES.value
    return dataclasses.replace(
        student,
        epochs=TEACHER_EPOCHS.value,
        batch_size=_or(TEACHER_BATCH_SIZE.value, student.batch_size),
        learning_rate=_or(TEACHER_LR.value, student.learning_rate),
        weight_decay=_or(TEACHER_WEIGHT_DECAY.value, student.weight_decay),
        schedule=_or(TEACHER_SCHEDULE.value, student.schedule),
        warmup_epochs=_or(TEACHER_WARMUP_EPOCHS.value, student.warmup_epochs),
        milestones=student.milestones if milestones is None else tuple(_ints(milestones, "x")),
    )


def cache_spec() -> CacheSpec | None:
    if TEACHER_CACHE.value == "none":
        return None
    return CacheSpec(
        TEACHER_CACHE.value, views=CACHE_VIEWS.value, topk=CACHE_TOPK.value,
        dtype=CACHE_DTYPE.value,
    )  # fmt: skip


def study_spec() -> StudySpec:
    return StudySpec(
        teacher_models=tuple(TEACHER_MODELS.value),
        teacher_smoothings=tuple(_floats(TEACHER_SMOOTHINGS.value, "teacher_smoothings")),
        smoothing=SMOOTHING.value, teacher_seed=TEACHER_SEED.value,
        student_models=tuple(STUDENT_MODELS.value),
        temperatures=tuple(_floats(TEMPERATURES.value, "temperatures")),
        seeds=tuple(_ints(SEEDS.value, "seeds")), kd_weight=KD_WEIGHT.value,
        ce_weight=CE_WEIGHT.value, student_label_smoothing=STUDENT_SMOOTHING.value,
        t2_scaling=T2_SCALING.value, use_teacher=USE_TEACHER.value,
        teacher_train=teacher_train_config(), student_train=student_train_config(),
        data=data_spec(), pairs=tuple(tuple(p.split(":")) for p in PAIRS.value),
        teacher_cache=cache_spec(),
        pretrained=_pretrained_entries(PRETRAINED.value),
        teacher_pretrained=_pretrained_entries(TEACHER_PRETRAINED.value, _alpha),
    )  # fmt: skip


def run_env(strategy=None) -> RunEnv:
    profile = PROFILE_BATCHES.value
    return RunEnv(
        output_dir=OUTPUT_DIR.value, study=STUDY.value, tensorboard_dir=TENSORBOARD_DIR.value,
        strategy=strategy, mixed_precision=MIXED_PRECISION_FLAG.value,
        profile_batches=tuple(_ints(profile, "profile_batches")) if profile else None,
    )  # fmt: skip


def single_run_spec() -> TeacherSpec | StudentSpec:
    """The one run that `--mode=teacher` or `--mode=distill` describes.

    The first value of each list flag (or the first of --pairs) is used: a
    single run has one teacher, one smoothing, one temperature, one seed.
    """
    study = study_spec()
    teacher_model = study.all_teacher_models[0]
    teacher = TeacherSpec(
        teacher_model, study.teacher_smoothings[0], study.smoothing,
        study.teacher_seed, dataclasses.replace(study.teacher_train, seed=study.teacher_seed),
        study.data,
        pretrained.for_key(study.teacher_pretrained, f"{study.teacher_smoothings[0]:g}"),
    )  # fmt: skip
    if MODE.value == "teacher":
        return teacher
    seed = study.seeds[0]
    return StudentSpec(
        study.students_of(teacher_model)[0], None if TEACHER_CHECKPOINT.value else teacher,
        TEACHER_CHECKPOINT.value, study.temperatures[0], study.kd_weight, study.ce_weight,
        study.student_label_smoothing, study.smoothing, study.t2_scaling, seed,
        dataclasses.replace(study.student_train, seed=seed), study.data, study.use_teacher,
        study.teacher_cache,
        pretrained.for_key(study.pretrained, study.students_of(teacher_model)[0]),
    )  # fmt: skip


def flagfile_for(spec: TeacherSpec | StudentSpec, env: RunEnv) -> str:
    """A flagfile that re-runs exactly this one run (`python run.py --flagfile=...`)."""
    train = spec.train
    lines = [
        f"--mode={spec.kind if spec.kind == 'teacher' else 'distill'}",
        f"--study={env.study}", f"--output_dir={env.output_dir}",
        f"--tensorboard_dir={env.tensorboard_dir}",
        f"--dataset={spec.data.name}", f"--download={spec.data.download}",
        f"--cache={spec.data.cache}", f"--mixed_precision={env.mixed_precision}",
        f"--smoothing={spec.smoothing}",
    ]  # fmt: skip
    if spec.data.data_dir:
        lines.append(f"--data_dir={spec.data.data_dir}")
    lines += [f"--{key}={value}" for key, value in spec.data.options]
    teacher = spec if isinstance(spec, TeacherSpec) else spec.teacher
    if teacher is not None:
        t = teacher.train
        lines += [
            f"--teacher_models={teacher.model}",
            f"--teacher_smoothings={teacher.label_smoothing!r}",
            f"--teacher_seed={teacher.seed}", f"--teacher_epochs={t.epochs}",
            f"--teacher_batch_size={t.batch_size}", f"--teacher_lr={t.learning_rate!r}",
            f"--teacher_weight_decay={t.weight_decay!r}", f"--teacher_schedule={t.schedule}",
            f"--teacher_milestones={','.join(map(str, t.milestones))}",
            f"--teacher_warmup_epochs={t.warmup_epochs!r}",
        ]  # fmt: skip
        if teacher.pretrained:
            lines.append(f"--teacher_pretrained={teacher.pretrained}")
    if isinstance(spec, StudentSpec):
        lines += [
            f"--student_models={spec.model}", f"--temperatures={spec.temperature!r}",
            f"--seeds={spec.seed}", f"--kd_weight={spec.kd_weight!r}",
            f"--ce_weight={spec.ce_weight!r}",
            f"--student_smoothing={spec.label_smoothing!r}",
            f"--t2_scaling={spec.t2_scaling}", f"--use_teacher={spec.use_teacher}",
        ]  # fmt: skip
        if spec.teacher_checkpoint:
            lines.append(f"--teacher_checkpoint={spec.teacher_checkpoint}")
        if spec.pretrained:
            lines.append(f"--pretrained={spec.pretrained}")
        cache = spec.teacher_cache
        lines.append(f"--teacher_cache={cache.mode if cache else 'none'}")
        if cache:
            lines += [f"--cache_views={cache.views}", f"--cache_topk={cache.topk}",
                      f"--cache_dtype={cache.dtype}"]  # fmt: skip
    # The run's own optimizer settings (the shared flags: a teacher's equal its teacher_*).
    if isinstance(spec, StudentSpec):
        lines.append(f"--epochs={train.epochs}")
    lines += [
        f"--batch_size={train.batch_size}", f"--optimizer={train.optimizer}",
        f"--lr={train.learning_rate!r}", f"--momentum={train.momentum!r}",
        f"--nesterov={train.nesterov}", f"--weight_decay={train.weight_decay!r}",
        f"--schedule={train.schedule}", f"--milestones={','.join(map(str, train.milestones))}",
        f"--decay_rate={train.decay_rate!r}", f"--warmup_epochs={train.warmup_epochs!r}",
        f"--jit_compile={train.jit_compile}",
    ]  # fmt: skip
    if train.steps_per_epoch:
        lines.append(f"--steps_per_epoch={train.steps_per_epoch}")
    return "\n".join(lines) + "\n"
