"""Every command-line flag of `run.py`, and the translation of flags into specs.

This is the only module that defines absl flags; the library below it is
flag-free (`lskd_tf.experiment` takes plain dataclasses). The defaults are the
quick study: `python run.py` with no flags trains two resnet14 teachers
(label smoothing 0 and 0.1) on the embedded dataset and distills a resnet8
student from each at T = 1 and T = 4 (pure KD), in about 3.5 minutes on a
2-core CPU (measured: 211 s wall from a fresh clone).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import math
import os
import re
from typing import TYPE_CHECKING

from absl import flags

# Only TensorFlow-free modules at import time: run.py parses and validates the command
# line before TensorFlow is imported (~5 s), so a mistyped flag fails in well under a
# second. The specs (which import Keras) are imported where flags become specs.
from lskd_tf import tasks
from lskd_tf.choices import (
    MIXED_PRECISION,
    OPTIMIZERS,
    SCHEDULES,
    SMOOTHING_CONVENTIONS,
    TEMPERATURE_RANGE,
    WEIGHT_DECAY_SCOPES,
    validate_temperature,
)
from lskd_tf.run_dir import CHECKPOINTS as TEACHER_CHECKPOINTS

if TYPE_CHECKING:
    from lskd_tf.distiller import DistillSpec
    from lskd_tf.experiment import DataSpec, RunEnv, StudentSpec, StudySpec, TeacherSpec
    from lskd_tf.teacher_cache import CacheSpec
    from lskd_tf.training import TrainConfig

MODES = ("study", "teacher", "distill", "evaluate", "export", "analyze", "results")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# lskd_tf.distribute's CLUSTERS and SLURM_PORT_BASE, repeated here so that parsing flags
# does not import TensorFlow (tests/test_multiworker.py checks they agree).
CLUSTERS = ("auto", "tf_config", "slurm")
SLURM_PORT_BASE = 8888

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

# ----------------------------------------------------------------------------- task, data
TASK = flags.DEFINE_string(
    "task", tasks.DEFAULT_TASK, f"The problem, one of: {', '.join(tasks.available())}."
)
DATASET = flags.DEFINE_string(
    "dataset", "embedded", f"Dataset of the task ({tasks.datasets_help()}).",
)  # fmt: skip
DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: ~/tensorflow_datasets).")
DOWNLOAD = flags.DEFINE_bool(
    "download", False, "Let TFDS download/prepare a missing dataset (never done otherwise)."
)
CACHE = flags.DEFINE_bool("cache", False, "Cache decoded examples in memory (CIFAR-sized data).")
TRAIN_PER_CLASS = flags.DEFINE_integer(
    "train_per_class",
    50,
    "The embedded image dataset's training images per class (alias "
    "of --data_option=train_per_class=N, as every per-option flag; see DATA_OPTION_FLAGS).",
)
TEST_PER_CLASS = flags.DEFINE_integer(
    "test_per_class", 20, "The embedded image dataset's test images per class."
)
DATA_OPTION = flags.DEFINE_multi_string(
    "data_option", [],
    "A dataset option as key=value, repeatable, e.g. --data_option=lighting=0.1 "
    "(imagenet2012's PCA lighting noise). The dataset refuses a key it does not know and "
    "lists its own. Values are Python literals (0.1, (0.2, 1.0), true) or plain strings; "
    "they win over the per-option flags (--train_per_class, ...).",
)  # fmt: skip
TRAIN_SIZE = flags.DEFINE_integer(
    "train_size", None, "translation, embedded corpus: training sentence pairs (default 20000)."
)
MAX_TOKENS = flags.DEFINE_integer(
    "max_tokens", None,
    "translation: batches of at most this many tokens, bucketed by length, counted as "
    "fairseq's --max-tokens (sentences x the longer side of the batch's longest pair); "
    "unset: batches of --batch_size sentences.",
)  # fmt: skip
SOURCE_LANGUAGE = flags.DEFINE_string(
    "source_language", None, "translation: the source language's file suffix / TFDS key, e.g. "
    "en for En->De from wmt14_translate/de-en (default: the dataset's, e.g. de for iwslt14).",
)  # fmt: skip
TARGET_LANGUAGE = flags.DEFINE_string(
    "target_language", None, "translation: the target language (default: the dataset's)."
)
VOCAB_SIZE = flags.DEFINE_integer(
    "vocab_size", None, "translation: pieces of the joint SentencePiece vocabulary, learned "
    "once on the training split (default 512 embedded, 10000 otherwise).",
)  # fmt: skip
SUBWORD_MODEL = flags.DEFINE_enum(
    "subword_model", None, ("unigram", "bpe"),
    "translation: SentencePiece model type of the vocabulary (default unigram).",
)  # fmt: skip
MAX_LENGTH = flags.DEFINE_integer(
    "max_length", None, "translation: tokens per side incl. EOS/BOS; longer sentences are "
    "truncated once, with a logged count (default 64 embedded, 256 otherwise).",
)  # fmt: skip
BAD_LINES = flags.DEFINE_enum(
    "bad_lines", None, ("error", "skip"),
    "translation, text files: what to do with empty or non-UTF-8 lines of parallel data: "
    "error (default; the error names them) or skip (drop those pairs, with one warning).",
)  # fmt: skip
BEAM_SIZE = flags.DEFINE_integer(
    "beam_size", 4,
    "translation: beam size of BLEU decoding, sequence-level KD and the export (1 = greedy).",
)  # fmt: skip
LENGTH_PENALTY = flags.DEFINE_float(
    "length_penalty", 1.0,
    "translation: beam scores are divided by length**length_penalty (BLEU, sequence-level "
    "KD, export).",
)  # fmt: skip
BLEU_SENTENCES = flags.DEFINE_integer(
    "bleu_sentences", None, "translation: score BLEU on the first N test sentences (default all)."
)
BLEU_TEXT = flags.DEFINE_enum(
    "bleu_text", None, ("raw", "moses"),
    "translation: how the dataset stores its text, for BLEU. moses = Moses tokenizer.perl "
    "output (escapes like &apos;): detokenized for test_bleu, scored as is for "
    "test_bleu_tokenized; raw = untokenized: scored as is for test_bleu, Moses-tokenized "
    "(-a) for test_bleu_tokenized (default: moses for iwslt14, raw otherwise).",
)  # fmt: skip

# ----------------------------------------------------------------------------- models, KD
TEACHER_MODELS = flags.DEFINE_list(
    "teacher_models", ["resnet14"], "Teacher architecture(s) of the task; see the README's "
    "model zoo (lskd_tf.models.available()).",
)  # fmt: skip
TEACHER_SMOOTHINGS = flags.DEFINE_list(
    "teacher_smoothings", ["0", "0.1"], "Teacher label smoothing strength(s), each in [0, 1)."
)
SMOOTHING = flags.DEFINE_enum(
    "smoothing", "uniform", SMOOTHING_CONVENTIONS,
    "Label smoothing convention: uniform = (1-a)*y + a/K (Muller, Chandrasegaran, PyTorch); "
    "others = 1-a on the true class, a/(K-1) elsewhere (Shen Eq. 1).",
)  # fmt: skip
TEACHER_SEEDS = flags.DEFINE_list(
    "teacher_seeds", ["0"],
    "Teacher seed(s): one teacher per model x smoothing x seed, each with its own students. "
    "Several give intervals that include teacher-seed variance (students are then paired "
    "by teacher seed and student seed). --teacher_seed is the same flag.",
)  # fmt: skip
flags.DEFINE_alias("teacher_seed", "teacher_seeds")
STUDENT_MODELS = flags.DEFINE_list("student_models", ["resnet8"], "Student architecture(s).")
PAIRS = flags.DEFINE_list(
    "pairs", [],
    "teacher:student model pairs (e.g. resnet56:resnet20,vgg13:vgg8); when set, only these "
    "pairs are distilled instead of every teacher x every student (--teacher_models and "
    "--student_models are then ignored).",
)  # fmt: skip
TEMPERATURES = flags.DEFINE_list(
    "temperatures", ["1", "4"], "Distillation temperature(s) T, each in "
    f"[{TEMPERATURE_RANGE[0]:g}, {TEMPERATURE_RANGE[1]:g}] (lskd_tf.losses.TEMPERATURE_RANGE).",
)  # fmt: skip
SEEDS = flags.DEFINE_list("seeds", ["0"], "Student seeds; tables report mean ± std over them.")
KD_WEIGHT = flags.DEFINE_float("kd_weight", 1.0, "Weight of the T^2-scaled KL term.")
CE_WEIGHT = flags.DEFINE_float(
    "ce_weight", 0.0, "Weight of the student's label cross-entropy (0: pure KD, as both papers)."
)
STUDENT_SMOOTHING = flags.DEFINE_float(
    "student_smoothing", 0.0, "Label smoothing of the student's own CE term, in [0, 1)."
)
T2_SCALING = flags.DEFINE_bool("t2_scaling", True, "Multiply the KD term by T^2 (Hinton).")
SEQUENCE_LEVEL_KD = flags.DEFINE_bool(
    "sequence_level_kd", False, "translation: students learn the teacher's beam-search "
    "translations of the training sources instead of the references (Kim & Rush 2016); "
    "--ce_weight fits them, --kd_weight adds word-level KD on them. Decoded once per "
    "teacher checkpoint (--beam_size, --length_penalty) and stored beside it.",
)  # fmt: skip
KD_LOSS = flags.DEFINE_string(
    "kd_loss", "kl", "The KD loss by name: kl = T^2 KL(softmax(t/T) || softmax(s/T)) over all "
    "classes; topk_kl = the papers' fairseq fork's word-level KD: the teacher's --kd_topk "
    "largest logits renormalised at T, the student's log-softmax read at their ids; or one "
    "added with lskd_tf.losses.register_kd_loss (lskd_tf.losses.kd_losses() lists them).",
)  # fmt: skip
KD_TOPK = flags.DEFINE_integer(
    "kd_topk", 0, "--kd_loss=topk_kl: how many of the teacher's largest logits per token it "
    "reads (the fork: 4); a --teacher_cache then stores exactly those ids and logits. 0 "
    "for the other KD losses.",
)  # fmt: skip
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
    "(torchvision/RepDistiller names) or .keras; a new classifier when the class counts differ. "
    "{seed} and {teacher} in a path are each student's seed and teacher run name (a student "
    "starts from its own earlier run, e.g. ReActNet's step 2 from its step 1).",
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
ADAM_BETA1 = flags.DEFINE_float("adam_beta1", 0.9, "adam/adamw: first-moment decay rate.")
ADAM_BETA2 = flags.DEFINE_float(
    "adam_beta2", 0.999, "adam/adamw: second-moment decay rate (Keras's default 0.999; "
    "fairseq's translation recipes pass --adam-betas '(0.9, 0.98)').",
)  # fmt: skip
ADAM_EPSILON = flags.DEFINE_float(
    "adam_epsilon", 1e-7, "adam/adamw: epsilon (Keras's default 1e-7; fairseq's 1e-8)."
)
WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", 5e-4, "Weight decay (PyTorch SGD convention: gradient + wd * w)."
)
WEIGHT_DECAY_SCOPE = flags.DEFINE_enum(
    "weight_decay_scope", "kernels", WEIGHT_DECAY_SCOPES,
    "Parameters --weight_decay applies to: kernels = conv/dense kernels only (no BN, biases); "
    "all = every parameter, as the papers' PyTorch SGD (the paper flagfiles set it).",
)  # fmt: skip
SCHEDULE = flags.DEFINE_enum("schedule", "cosine", SCHEDULES, "Learning-rate decay.")
MILESTONES = flags.DEFINE_list(
    "milestones", [], "Step schedule: epochs at which the LR is multiplied by --decay_rate."
)
DECAY_RATE = flags.DEFINE_float("decay_rate", 0.1, "Step schedule factor.")
WARMUP_EPOCHS = flags.DEFINE_float("warmup_epochs", 0.0, "Linear warmup epochs.")
WARMUP_STEPS = flags.DEFINE_integer(
    "warmup_steps", 0, "Linear warmup in optimizer steps instead of epochs (fairseq's "
    "--warmup-updates; --schedule=inverse_sqrt decays from its end). At most one of "
    "--warmup_epochs / --warmup_steps is non-zero.",
)  # fmt: skip
STEPS_PER_EPOCH = flags.DEFINE_integer(
    "steps_per_epoch", None, "Cap the steps of an epoch (default: one pass over the data)."
)
MAX_UPDATES = flags.DEFINE_integer(
    "max_updates", None, "Stop after this many updates (training steps of one global batch), "
    "mid-epoch if need be (fairseq's --max-update); --epochs stays a limit too, whichever "
    "comes first. --schedule=cosine then decays over the shorter of the two. 0/unset: none.",
)  # fmt: skip
VALIDATE_EVERY_UPDATES = flags.DEFINE_integer(
    "validate_every_updates", None, "Validate every this many updates instead of after every "
    "epoch (fairseq's --save-interval-updates): a history row, last/best checkpoints and a "
    "resume point each time; a killed run resumes there exactly, mid-epoch too. 0/unset: "
    "every epoch.",
)  # fmt: skip
PATIENCE = flags.DEFINE_integer(
    "patience", None, "Stop after this many validations in a row without improvement of the "
    "monitored metric (top-1 / token accuracy on the validation data; the fork's "
    "--early-stop). 0/unset: never.",
)  # fmt: skip
TEACHER_EPOCHS = flags.DEFINE_integer("teacher_epochs", 4, "Teacher epochs.")
TEACHER_LR = flags.DEFINE_float("teacher_lr", None, "Teacher learning rate (default: --lr).")
TEACHER_MILESTONES = flags.DEFINE_list(
    "teacher_milestones", None, "Teacher step-schedule epochs (default: --milestones)."
)
TEACHER_WARMUP_EPOCHS = flags.DEFINE_float(
    "teacher_warmup_epochs", None, "Teacher warmup epochs (default: --warmup_epochs)."
)
TEACHER_WARMUP_STEPS = flags.DEFINE_integer(
    "teacher_warmup_steps", None, "Teacher warmup steps (default: --warmup_steps)."
)
TEACHER_MAX_UPDATES = flags.DEFINE_integer(
    "teacher_max_updates", None, "Teacher --max_updates (default: --max_updates; 0: none)."
)
TEACHER_VALIDATE_EVERY_UPDATES = flags.DEFINE_integer(
    "teacher_validate_every_updates", None,
    "Teacher --validate_every_updates (default: --validate_every_updates; 0: every epoch).",
)  # fmt: skip
TEACHER_PATIENCE = flags.DEFINE_integer(
    "teacher_patience", None, "Teacher --patience (default: --patience; 0: never)."
)
TEACHER_WEIGHT_DECAY = flags.DEFINE_float(
    "teacher_weight_decay", None, "Teacher weight decay (default: --weight_decay)."
)
TEACHER_WEIGHT_DECAY_SCOPE = flags.DEFINE_enum(
    "teacher_weight_decay_scope", None, WEIGHT_DECAY_SCOPES,
    "Teacher weight decay scope (default: --weight_decay_scope).",
)  # fmt: skip
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
    "sampled: --cache_views fixed views per image, any augmentation (FKD). Translation: "
    "exact only, the teacher's logits at every target token of the training split.",
)  # fmt: skip
CACHE_VIEWS = flags.DEFINE_integer(
    "cache_views", 10, "teacher_cache=sampled: views stored per image."
)
CACHE_TOPK = flags.DEFINE_integer(
    "cache_topk",
    0,
    "Teacher cache: keep the k largest logits per view or target token "
    "(0: all; the rest keep their mass at T=1) for --kd_loss=kl. Leave it at 0 with "
    "--kd_loss=topk_kl: the cache then keeps exactly the --kd_topk logits and ids.",
)
CACHE_DTYPE = flags.DEFINE_enum(
    "cache_dtype", "float16", ("float16", "float32"), "Teacher cache storage precision."
)

# ----------------------------------------------------------------------------- execution
STRATEGY = flags.DEFINE_enum(
    "strategy", "default", STRATEGIES,
    "default: one device; mirrored: all local GPUs; multi_worker: MultiWorkerMirroredStrategy "
    "configured by TF_CONFIG or SLURM (--cluster); tpu: TPUStrategy (untested here).",
)  # fmt: skip
CLUSTER = flags.DEFINE_enum(
    "cluster", "auto", CLUSTERS,
    "--strategy=multi_worker: where the cluster comes from. tf_config: the TF_CONFIG "
    "variable; slurm: the srun job step (SLURM_PROCID, SLURM_STEP_NODELIST, ...) through "
    "SlurmClusterResolver, one worker per task; auto: TF_CONFIG if set, else SLURM if srun "
    "started several tasks. (A sweep spread over an sbatch array needs no flag: the array "
    "tasks share the study through its run claims; tools/slurm/.)",
)  # fmt: skip
SLURM_PORT_BASE_FLAG = flags.DEFINE_integer(
    "slurm_port_base", SLURM_PORT_BASE,
    "--cluster=slurm: task k of a node listens on this port + k (free on every node).",
)  # fmt: skip
MIXED_PRECISION_FLAG = flags.DEFINE_enum(
    "mixed_precision", "float32", MIXED_PRECISION,
    "Keras dtype policy; mixed_float16 uses loss scaling (GPUs), mixed_bfloat16 (TPUs). On "
    "CPUs keep float32: both were slower here (benchmarks/precision_xla.py).",
)  # fmt: skip
JIT_COMPILE = flags.DEFINE_bool(
    "jit_compile", False, "XLA-compile the train step (try it on GPU; slower on this CPU)."
)
REUSE_COMPILED = flags.DEFINE_bool(
    "reuse_compiled", True,
    "Runs of one process that differ only in label smoothing, temperature or the teacher's "
    "weights train one compiled model, traced once (lskd_tf.reuse; the same numbers). "
    "false: compile and trace every run anew.",
)  # fmt: skip
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
ON_CONFLICT = flags.DEFINE_enum(
    "on_conflict", "error", ("error", "overwrite"),
    "A run directory that holds a run with other settings (a changed flag): error = stop "
    "before any training and say what differs; overwrite = move the old run to "
    "<output_dir>/<study>/.replaced/ and train it again. Finished runs with the same "
    "settings are always reused.",
)  # fmt: skip
VERBOSE = flags.DEFINE_integer(
    "verbose", 1, "0: a line when a run starts and one when it ends; 1: also each epoch, as "
    "a progress bar on a terminal, as one plain line when the output is a file or pipe.",
)  # fmt: skip
ANALYZE = flags.DEFINE_bool(
    "analyze", True, "study mode: write the analysis report of all runs at the end."
)
EXPORT = flags.DEFINE_bool(
    "export", True, "study mode: export every student as a SavedModel at the end."
)

# ----------------------------------------------------------------------------- other modes
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "evaluate/export: a .keras checkpoint.")
EXPORT_DIR = flags.DEFINE_string("export_dir", None, "export: the SavedModel directory to write.")
HEADLINE_METRIC = flags.DEFINE_string(
    "headline_metric", None,
    "study/results: the metric the results tables show (default: the task's headline, "
    "top1 for images, bleu = sacreBLEU 13a on detokenized text for translation; "
    "bleu_tokenized = fairseq's tokenized BLEU, the papers' number).",
)  # fmt: skip
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


def _task(name: str) -> tasks.Task:
    try:
        return tasks.get(name)
    except ValueError as error:
        raise flags.ValidationError(f"--task: {error}") from None


def _validate_models(task: str, values, name: str) -> None:
    for value in values or []:
        try:
            _task(task).check_model(value)
        except ValueError as error:
            raise flags.ValidationError(f"--{name}: {error}") from None


_deferred: list | None = None
"""Registry checks postponed by `registry_checks_deferred` (None: checked while parsing)."""


@contextlib.contextmanager
def registry_checks_deferred():
    """Within: model, dataset and KD-loss names are checked by `check_registered_names`,
    not while parsing.

    Those checks read the task, model and loss registries, which import TensorFlow
    (~5 s). run.py parses first, so that a mistyped flag or a bad number fails before
    that, then calls `check_registered_names`. Outside this block (tests, notebooks)
    every name is checked while parsing, as absl validators; leaving it drops the checks
    of a parse that failed.
    """
    global _deferred
    _deferred = []
    try:
        yield
    finally:
        _deferred = None


def check_registered_names() -> None:
    """Run the checks `registry_checks_deferred` postponed; IllegalFlagValueError if one fails."""
    global _deferred
    postponed, _deferred = _deferred or [], None
    for check, values in postponed:
        try:
            check(values)
        except flags.ValidationError as error:
            raise flags.IllegalFlagValueError(str(error)) from None


def _registry_validator(flag_names: list[str]):
    """An absl validator of ``flag_names`` that `registry_checks_deferred` can postpone."""

    def register(check):
        def validate(values):
            if _deferred is not None:
                _deferred.append((check, dict(values)))
                return True
            return check(values)

        flags.register_multi_flags_validator(flag_names, validate)
        return check

    return register


@_registry_validator(["task", "dataset"])
def _check_dataset(values):
    # The name only: a dataset's options (e.g. text's data_dir and languages) come from
    # other flags, and the DataSpec that `data_spec` builds from all of them is checked
    # when the specs are made.
    from lskd_tf.experiment import DataSpec

    task = _task(values["task"])
    if values["dataset"] not in task.datasets():
        try:
            task.check_dataset(DataSpec(name=values["dataset"]))
        except ValueError as error:
            raise flags.ValidationError(str(error)) from None
    return True


@_registry_validator(["task", "teacher_models", "student_models", "pairs"])
def _check_models(values):
    task = values["task"]
    for name in ("teacher_models", "student_models"):
        if not values["pairs"] and not values[name]:
            raise flags.ValidationError(f"--{name} is empty: name at least one model")
    _validate_models(task, values["teacher_models"], "teacher_models")
    _validate_models(task, values["student_models"], "student_models")
    for value in values["pairs"]:
        parts = value.split(":")
        if len(parts) != 2:
            raise flags.ValidationError(f"--pairs entries are teacher:student, got {value!r}")
        _validate_models(task, parts, "pairs")
    return True


def _pretrained_entries(values, key, flag: str) -> tuple[tuple[str, str], ...]:
    """FILE or KEY=FILE entries -> ((key, file), ...); key "" = everyone.

    KEY is a model name or, for teachers, a label smoothing (``key`` normalizes it and
    raises ValueError otherwise); an entry whose text before the first "=" is no valid
    key is one file name (Chandrasegaran's "teacher=resnet50-0.0-best.pth.tar" has "=").
    """
    entries = []
    for value in values:
        name, sep, path = value.partition("=")
        try:
            entries.append((key(name), path) if sep else ("", value))
        except ValueError as error:
            if not os.path.exists(value):
                raise ValueError(  # a KEY=FILE entry with a wrong KEY, not a file name
                    f"--{flag}={value}: {name!r} is not a valid key ({error}) and no such "
                    "file exists; write KEY=FILE with a valid KEY, or FILE alone"
                ) from None
            entries.append(("", value))
    return tuple(entries)


def _model_key(name: str) -> str:
    tasks.get(TASK.value).check_model(name)
    return name


def _alpha_key(value: str) -> str:
    return f"{float(value):g}"


@_registry_validator(["kd_loss"])
def _check_kd_loss(values):
    from lskd_tf.losses import check_kd_loss_name

    try:
        check_kd_loss_name(values["kd_loss"])
    except ValueError as error:
        raise flags.ValidationError(str(error)) from None
    return True


@flags.validator("temperatures")
def _check_temperatures(values):
    if not values:
        raise flags.ValidationError("--temperatures is empty: name at least one T > 0")
    for value in _floats(values, "temperatures"):
        try:
            validate_temperature(value)
        except ValueError as error:
            says = f"--{error}".replace("temperature", "temperatures", 1)
            raise flags.ValidationError(says) from None
    return True


@flags.validator("teacher_smoothings")
def _check_smoothings(values):
    if not values:
        raise flags.ValidationError("--teacher_smoothings is empty: name at least one, e.g. 0,0.1")
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


def _in_range(low: float, high: float = math.inf, *, low_open: bool = False):
    """A validator: None, or a finite number in [low, high) ((low, high) if low_open)."""

    def check(value) -> bool:
        if value is None:
            return True
        above = value > low if low_open else value >= low
        return math.isfinite(value) and above and value < high

    return check


for _name, _check, _says in (
    ("lr", _in_range(0.0, low_open=True), "finite and > 0"),
    ("teacher_lr", _in_range(0.0, low_open=True), "finite and > 0"),
    ("momentum", _in_range(0.0, 1.0), "in [0, 1)"),
    ("adam_beta1", _in_range(0.0, 1.0), "in [0, 1)"),
    ("adam_beta2", _in_range(0.0, 1.0), "in [0, 1)"),
    ("adam_epsilon", _in_range(0.0, low_open=True), "finite and > 0"),
    ("decay_rate", _in_range(0.0, low_open=True), "finite and > 0"),
    ("weight_decay", _in_range(0.0), "finite and >= 0"),
    ("teacher_weight_decay", _in_range(0.0), "finite and >= 0"),
    ("warmup_epochs", _in_range(0.0), "finite and >= 0"),
    ("teacher_warmup_epochs", _in_range(0.0), "finite and >= 0"),
    ("warmup_steps", _in_range(0), ">= 0"),
    ("teacher_warmup_steps", _in_range(0), ">= 0"),
    *(
        (_name, _in_range(0), ">= 0 (0: off)")
        for _name in (
            "max_updates",
            "validate_every_updates",
            "patience",
            "teacher_max_updates",
            "teacher_validate_every_updates",
            "teacher_patience",
        )
    ),
    ("kd_weight", _in_range(0.0), "finite and >= 0"),
    ("ce_weight", _in_range(0.0), "finite and >= 0"),
    ("max_runs", _in_range(1), ">= 1"),
    ("train_per_class", _in_range(1, 100_001), "in [1, 100000]"),
    ("test_per_class", _in_range(1, 100_001), "in [1, 100000]"),
    ("train_size", _in_range(1, 10_000_001), "in [1, 10000000]"),
    ("max_tokens", _in_range(8), ">= 8"),
    ("vocab_size", _in_range(8, 1_000_001), "in [8, 1000000]"),
    ("max_length", _in_range(4, 100_001), "in [4, 100000]"),
    ("beam_size", _in_range(1, 1001), "in [1, 1000]"),
    ("length_penalty", _in_range(0.0, 10.0), "finite and in [0, 10)"),
    ("bleu_sentences", _in_range(1), ">= 1"),
):
    flags.register_validator(_name, _check, message=f"--{_name} must be {_says}")


def _non_negative_ints(values, name: str) -> bool:
    if any(value < 0 for value in _ints(values or [], name)):
        raise flags.ValidationError(f"--{name} must be integers >= 0, got {','.join(values)}")
    return True


@flags.validator("study")
def _check_study(value):
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", value or ""):
        raise flags.ValidationError(
            f"--study must be a plain name (letters, digits, _ . -; at most 100; not a "
            f"path), got {value!r}: runs go to <output_dir>/<study>/"
        )
    return True


flags.register_validator("cache_views", lambda v: v >= 1, message="--cache_views must be >= 1")
flags.register_validator(
    "cache_topk", lambda v: v >= 0, message="--cache_topk must be >= 0 (0 keeps all logits)"
)
flags.register_validator(
    "kd_topk", lambda v: v >= 0, message="--kd_topk must be >= 0 (0 unless --kd_loss=topk_kl)"
)
for _name in ("seeds", "teacher_seeds"):
    flags.register_validator(
        _name, lambda v, name=_name: bool(_ints(v, name)), message=f"--{_name} is empty"
    )
for _name in ("seeds", "teacher_seeds", "milestones", "teacher_milestones"):
    flags.register_validator(_name, lambda v, name=_name: _non_negative_ints(v, name))
flags.register_validator(
    "profile_batches",
    lambda v: v is None or len(_ints(v, "profile_batches")) == 2,
    message="--profile_batches takes two batch numbers, e.g. 10,20",
)


flags.register_validator(
    "verbose", _in_range(0, 2), "--verbose must be 0 (one line per run) or 1 (progress bars)"
)


# ----------------------------------------------------------------------------- flags that apply

MODE_ONLY_FLAGS = {
    "checkpoint": ("evaluate", "export"), "export_dir": ("export",),
    "run_dirs": ("results", "analyze"), "teacher_checkpoint": ("distill",),
}  # fmt: skip
"""Flags read by some modes only: flag -> the modes that read it."""
TASK_ONLY_FLAGS = {"translation": ("sequence_level_kd",)}
"""Flags read by one task only (not data options): task -> its flags."""
DATA_OPTION_FLAGS = (
    "source_language", "target_language", "vocab_size", "subword_model", "max_length",
    "max_tokens", "bad_lines", "beam_size", "length_penalty", "bleu_sentences", "bleu_text",
    "train_size", "train_per_class", "test_per_class",
)  # fmt: skip
"""Flags that are aliases of a dataset option of the same name (``--train_per_class=5`` is
``--data_option=train_per_class=5``). No table here says which dataset reads which: the
task says which options a dataset has (`lskd_tf.tasks.Task.data_options`), `data_spec`
forwards an alias's value (when not None) to every dataset that has that option, and
`check_applicable` refuses an alias given for a dataset that has not. In this order in
`DataSpec.options` (the order runs were recorded with: it is part of their identity)."""


def check_applicable() -> None:
    """Raise a one-line ValueError naming a flag given on the command line (or in a
    flagfile) that the chosen --mode, --task or --dataset never reads: it would be
    silently ignored (e.g. --teacher_checkpoint in a study, --max_tokens on images)."""
    mode, task, dataset = MODE.value, TASK.value, DATASET.value

    def given(name: str) -> bool:
        return FLAGS[name].present > 0

    for name, modes in MODE_ONLY_FLAGS.items():
        if given(name) and mode not in modes:
            raise ValueError(
                f"--{name} is read only by --mode={' or --mode='.join(modes)}, not by "
                f"--mode={mode}; remove it (or choose that mode)"
            )
    for owner, names in TASK_ONLY_FLAGS.items():
        for name in names:
            if given(name) and task != owner:
                raise ValueError(
                    f"--{name} is a {owner} flag; --task={task} does not read it: remove it"
                )
    known = tasks.get(task).data_options(dataset)
    for name in DATA_OPTION_FLAGS:
        if given(name) and name not in known:
            raise ValueError(
                f"--{name} is not an option of --dataset={dataset} (--task={task}); its "
                f"options: {', '.join(known) or 'none'}: remove it"
            )


# ----------------------------------------------------------------------------- flags -> specs

TRAIN_FLAGS = {
    "epochs": "epochs", "batch_size": "batch_size", "optimizer": "optimizer",
    "learning_rate": "lr", "momentum": "momentum", "nesterov": "nesterov",
    "adam_beta1": "adam_beta1", "adam_beta2": "adam_beta2", "adam_epsilon": "adam_epsilon",
    "weight_decay": "weight_decay", "weight_decay_scope": "weight_decay_scope",
    "schedule": "schedule", "milestones": "milestones",
    "decay_rate": "decay_rate", "warmup_epochs": "warmup_epochs",
    "warmup_steps": "warmup_steps", "steps_per_epoch": "steps_per_epoch",
    "max_updates": "max_updates", "validate_every_updates": "validate_every_updates",
    "patience": "patience", "jit_compile": "jit_compile", "verbose": "verbose",
}  # fmt: skip
"""`TrainConfig` field -> flag (students, and teachers where no teacher_* flag is set).
``seed`` comes from --seeds / --teacher_seeds."""
TEACHER_TRAIN_FLAGS = {
    "epochs": "teacher_epochs", "batch_size": "teacher_batch_size",
    "learning_rate": "teacher_lr", "weight_decay": "teacher_weight_decay",
    "weight_decay_scope": "teacher_weight_decay_scope",
    "schedule": "teacher_schedule", "milestones": "teacher_milestones",
    "warmup_epochs": "teacher_warmup_epochs", "warmup_steps": "teacher_warmup_steps",
    "max_updates": "teacher_max_updates",
    "validate_every_updates": "teacher_validate_every_updates",
    "patience": "teacher_patience",
}  # fmt: skip
"""Teacher overrides: `TrainConfig` field -> flag (unset: the student's value)."""
OFF_AS_ZERO = ("max_updates", "validate_every_updates", "patience")
"""`TrainConfig` fields whose None (off) is the flag value 0: an unset teacher_* flag
means "the student's value", so a teacher without the student's limit says 0."""
DISTILL_FLAGS = {
    "temperature": "temperatures", "kd_weight": "kd_weight", "ce_weight": "ce_weight",
    "label_smoothing": "student_smoothing", "smoothing": "smoothing",
    "t2_scaling": "t2_scaling", "kd_loss": "kd_loss", "sequence_level": "sequence_level_kd",
    "kd_topk": "kd_topk",
}  # fmt: skip
"""`DistillSpec` field -> flag (a study's --temperatures are a list)."""
NOT_IN_FLAGFILES = ("verbose",)
"""Fields a run's flags.txt leaves out (display only)."""


def flag_for(name: str) -> str | None:
    """The flag that sets what ``name`` names under another name, or None.

    A field of `TrainConfig` / `DistillSpec` whose flag is named differently (e.g.
    ``--learning_rate`` -> ``--lr``, ``--teacher_learning_rate`` -> ``--teacher_lr``,
    ``--temperature`` -> ``--temperatures``), for run.py's "did you mean".
    """
    field = name.removeprefix("teacher_")
    if field != name and TEACHER_TRAIN_FLAGS.get(field, name) != name:
        return TEACHER_TRAIN_FLAGS[field]
    for table in (TRAIN_FLAGS, DISTILL_FLAGS):
        if table.get(name, name) != name:
            return table[name]
    return None


def _flag_value(field: str, flag: str):
    value = FLAGS[flag].value
    if field == "milestones" and value is not None:
        return tuple(_ints(value, flag))
    return value


def _off_as_none(values: dict) -> dict:
    return {k: None if k in OFF_AS_ZERO and v == 0 else v for k, v in values.items()}


def _as_flag(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def data_spec() -> DataSpec:
    from lskd_tf.experiment import DataSpec

    known = tasks.get(TASK.value).data_options(DATASET.value)
    aliases = {name: FLAGS[name].value for name in DATA_OPTION_FLAGS if name in known}
    options = {name: value for name, value in aliases.items() if value is not None}
    options = tuple({**options, **data_options(DATA_OPTION.value)}.items())
    return DataSpec(
        name=DATASET.value, data_dir=DATA_DIR.value, download=DOWNLOAD.value,
        cache=CACHE.value, options=options,
    )  # fmt: skip


def data_options(items: list[str]) -> dict:
    """``["lighting=0.1", ...]`` (--data_option) as ``{"lighting": 0.1}``: each value a
    Python literal, true/false, or else the plain string."""
    parsed = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"--data_option={item}: expected key=value, e.g. --data_option=lighting=0.1"
            )
        text = text.strip()
        try:
            value = {"true": True, "false": False}.get(text.lower(), None)
            value = ast.literal_eval(text) if value is None else value
        except (ValueError, SyntaxError):
            value = text
        parsed[key.strip()] = value
    return parsed


def _data_option_line(key: str, value) -> str:
    """A dataset option as flags.txt writes it: its own flag if it has one."""
    if key in flags.FLAGS:
        return f"--{key}={value}"
    return f"--data_option={key}={value if isinstance(value, str) else repr(value)}"


def student_train_config() -> TrainConfig:
    from lskd_tf.training import TrainConfig

    values = {field: _flag_value(field, flag) for field, flag in TRAIN_FLAGS.items()}
    return TrainConfig(**_off_as_none(values))


def teacher_train_config() -> TrainConfig:
    overrides = {field: _flag_value(field, flag) for field, flag in TEACHER_TRAIN_FLAGS.items()}
    overrides = {k: v for k, v in overrides.items() if v is not None}  # unset: the student's
    return dataclasses.replace(student_train_config(), **_off_as_none(overrides))


def distill_spec() -> DistillSpec:
    """The students' objective; its temperature is the first of --temperatures."""
    from lskd_tf.distiller import DistillSpec

    values = {field: _flag_value(field, flag) for field, flag in DISTILL_FLAGS.items()}
    values["temperature"] = _floats(values["temperature"], "temperatures")[0]
    return DistillSpec(**values)


def cache_spec() -> CacheSpec | None:
    if TEACHER_CACHE.value == "none":
        return None
    from lskd_tf.teacher_cache import CacheSpec

    return CacheSpec(
        TEACHER_CACHE.value, views=CACHE_VIEWS.value, topk=CACHE_TOPK.value,
        dtype=CACHE_DTYPE.value,
    )  # fmt: skip


def study_spec() -> StudySpec:
    from lskd_tf.experiment import StudySpec

    return StudySpec(
        task=TASK.value,
        teacher_models=tuple(TEACHER_MODELS.value),
        teacher_smoothings=tuple(_floats(TEACHER_SMOOTHINGS.value, "teacher_smoothings")),
        smoothing=SMOOTHING.value,
        teacher_seeds=tuple(_ints(TEACHER_SEEDS.value, "teacher_seeds")),
        student_models=tuple(STUDENT_MODELS.value),
        temperatures=tuple(_floats(TEMPERATURES.value, "temperatures")),
        seeds=tuple(_ints(SEEDS.value, "seeds")), distill=distill_spec(),
        use_teacher=USE_TEACHER.value,
        teacher_train=teacher_train_config(), student_train=student_train_config(),
        data=data_spec(), pairs=tuple(tuple(p.split(":")) for p in PAIRS.value),
        teacher_cache=cache_spec(),
        pretrained=_pretrained_entries(PRETRAINED.value, _model_key, "pretrained"),
        teacher_pretrained=_pretrained_entries(
            TEACHER_PRETRAINED.value, _alpha_key, "teacher_pretrained"
        ),
    )  # fmt: skip


def run_env(strategy=None) -> RunEnv:
    from lskd_tf.experiment import RunEnv

    profile = PROFILE_BATCHES.value
    return RunEnv(
        output_dir=OUTPUT_DIR.value, study=STUDY.value, tensorboard_dir=TENSORBOARD_DIR.value,
        strategy=strategy, mixed_precision=MIXED_PRECISION_FLAG.value,
        on_conflict=ON_CONFLICT.value, reuse_compiled=REUSE_COMPILED.value,
        profile_batches=tuple(_ints(profile, "profile_batches")) if profile else None,
    )  # fmt: skip


def single_run_spec() -> TeacherSpec | StudentSpec:
    """The one run that `--mode=teacher` or `--mode=distill` describes.

    The first value of each list flag (or the first of --pairs) is used: a
    single run has one teacher, one smoothing, one temperature, one seed.
    """
    from lskd_tf.experiment import plan_study

    study = study_spec()
    teacher_model = study.all_teacher_models[0]
    alpha, student_models = study.teacher_smoothings[:1], study.students_of(teacher_model)[:1]
    study = dataclasses.replace(
        study, teacher_models=(teacher_model,), pairs=(),
        teacher_smoothings=alpha, student_models=tuple(student_models),
        temperatures=study.temperatures[:1], seeds=study.seeds[:1],
        teacher_seeds=study.teacher_seeds[:1],
        # entries for runs of the whole grid that this one run is not
        teacher_pretrained=tuple(e for e in study.teacher_pretrained
                                 if e[0] in ("", f"{float(alpha[0]):g}")),
        pretrained=tuple(e for e in study.pretrained if e[0] in ("", *student_models)),
    )  # fmt: skip
    teacher, student = plan_study(study)[:2]
    if MODE.value == "teacher":
        return teacher
    if TEACHER_CHECKPOINT.value:
        student = dataclasses.replace(
            student, teacher=None, teacher_checkpoint=TEACHER_CHECKPOINT.value
        )
    return student


def flagfile_for(spec: TeacherSpec | StudentSpec, env: RunEnv) -> str:
    """A flagfile that re-runs exactly this one run (`python run.py --flagfile=...`).

    Generated from the spec's dataclasses through `TRAIN_FLAGS`, `TEACHER_TRAIN_FLAGS`
    and `DISTILL_FLAGS`: a new field needs one entry there, not another line here.
    """
    from lskd_tf.experiment import TeacherSpec

    lines = [
        f"--mode={spec.kind if spec.kind == 'teacher' else 'distill'}",
        f"--study={env.study}", f"--output_dir={env.output_dir}",
        f"--tensorboard_dir={env.tensorboard_dir}", f"--task={spec.task}",
        f"--dataset={spec.data.name}", f"--download={spec.data.download}",
        f"--cache={spec.data.cache}", f"--mixed_precision={env.mixed_precision}",
    ]  # fmt: skip
    if spec.data.data_dir:
        lines.append(f"--data_dir={spec.data.data_dir}")
    lines += [_data_option_line(key, value) for key, value in spec.data.options]
    teacher = spec if isinstance(spec, TeacherSpec) else spec.teacher
    if teacher is not None:
        lines += [
            f"--teacher_models={teacher.model}",
            f"--teacher_smoothings={teacher.label_smoothing!r}",
            f"--teacher_seeds={teacher.seed}",
        ]
        for field, flag in TEACHER_TRAIN_FLAGS.items():
            value = getattr(teacher.train, field)
            if value is None and field in OFF_AS_ZERO:
                if getattr(spec.train, field) is None:
                    continue  # off for both: the flag's default
                value = 0  # off for the teacher only
            lines.append(f"--{flag}={_as_flag(value)}")
        if teacher.pretrained:
            lines.append(f"--teacher_pretrained={teacher.pretrained}")
    if isinstance(spec, TeacherSpec):
        lines.append(f"--smoothing={spec.smoothing}")
    else:
        lines += [
            f"--{DISTILL_FLAGS[field]}={_as_flag(value)}"
            for field, value in spec.distill.to_dict().items()
        ]
        lines += [
            f"--student_models={spec.model}", f"--seeds={spec.seed}",
            f"--use_teacher={spec.use_teacher}",
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
    for field, flag in TRAIN_FLAGS.items():
        value = getattr(spec.train, field)
        if field in NOT_IN_FLAGFILES or value is None:
            continue
        if field == "epochs" and isinstance(spec, TeacherSpec):
            continue  # --epochs is the students'; the teacher's are --teacher_epochs
        lines.append(f"--{flag}={_as_flag(value)}")
    return "\n".join(lines) + "\n"
