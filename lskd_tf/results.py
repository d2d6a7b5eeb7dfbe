"""Sweep results as pandas tables in the papers' form, with paired seed statistics.

`collect_runs` reads any set of run directories (their ``run.json``) into one
flat DataFrame, one row per run. `student_table` pivots the students into the
papers' layout: rows student × T, columns teacher label smoothing, cells
mean ± std over seeds of top-1 (percent), for the last and the best epoch,
plus the LS − no-LS difference *paired by seed* with its 95% confidence interval
(`lskd_tf.statistics`: t-interval below 20 pairs, bootstrap from 20 on; ``*`` when
the interval excludes 0), the interval used (``CI``) and seeds found on one side
only (``unpaired seeds``). Published numbers differ on last vs best epoch
(RepDistiller reports the last, mdistiller the best), so both are given.

Only runs of one configuration are averaged as seeds: runs whose recorded setup
(dataset and its options, smoothing convention, kd/ce weights, student smoothing,
T² scaling, teacher model, teacher cache, training recipe...) differs are put in
separate rows, with a leading ``config`` index level naming what differs. `verdict`
turns the same runs into the recommendation the data supports (best (teacher a, T)
cell per student against the runner-up, or "not resolved" with the seeds needed).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from lskd_tf import atomic, statistics
from lskd_tf.run_dir import FINISHED, RUN_JSON, RunDir, spec_record

DEFAULT_METRICS = ("top1", "top5")
"""The metrics of runs recorded before run.json listed its task's metrics."""

# Fields of run.json that do not make a different experiment: the seeds (replicates),
# the row/column keys of the tables, where the data and checkpoints live, display and
# speed-only switches.
_NOT_CONFIG = {
    "seed", "model", "temperature", "teacher_label_smoothing", "teacher_run",
    "teacher_checkpoint", "teacher_checkpoint_used", "train.seed", "train.verbose",
    "train.jit_compile", "data.data_dir", "data.download", "data.cache",
    "teacher.label_smoothing", "teacher.seed", "teacher.train.seed",
}  # fmt: skip
_SPEC_KEYS = (
    "kind", "task", "model", "dataset", "label_smoothing", "smoothing", "seed",
    "teacher_model", "teacher_label_smoothing", "teacher_smoothing", "teacher_run",
    "teacher_checkpoint", "temperature", "kd_weight", "ce_weight", "t2_scaling", "kd_loss",
)  # fmt: skip


def _run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run directories under the given paths (a run dir, a study dir, or a glob)."""
    found: list[Path] = []
    for path in paths:
        matches = glob.glob(str(path)) or [str(path)]
        for match in matches:
            match = Path(match)
            if RunDir(match).exists():
                found.append(match)
            else:
                found.extend(sorted(p.parent for p in match.glob(f"*/{RUN_JSON}")))
    return sorted(set(found))


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def run_config(info: Mapping) -> str:
    """The configuration of a run apart from its seed and its table row/column, as a
    canonical JSON string: two runs with the same string may be averaged as seeds.

    It is the run's identity (`lskd_tf.experiment.identity`: spec, training recipe,
    dataset options, precision, a student's teacher) when run.json records one, else its
    spec (``info["spec"]``, else its top-level spec keys) with the training recipe
    (``train.*``) and dataset options (``data.*``); minus the seeds, the table keys
    (model, T, teacher smoothing) and storage/speed-only fields.

    Example:
        >>> a = {"kind": "student", "seed": 0, "kd_weight": 1.0, "smoothing": "uniform"}
        >>> run_config(a) == run_config({**a, "seed": 3}), run_config(a) == run_config(
        ...     {**a, "smoothing": "others"})
        (True, False)
    """
    flat: dict = {}
    if isinstance(info.get("identity"), Mapping):  # lskd_tf.experiment.identity: all of it
        _flatten("", dict(info["identity"]), flat)
        spec = info["identity"]
    else:  # runs recorded before identities
        spec = {k: v for k, v in spec_record(dict(info)).items() if k in _SPEC_KEYS}
        _flatten("", dict(spec), flat)
        for part in ("train", "data"):
            if isinstance(info.get(part), Mapping):
                _flatten(part, info[part], flat)
    if spec.get("kind") == "teacher":
        flat.pop("label_smoothing", None)  # the teachers' column
    config = {key: value for key, value in flat.items() if key not in _NOT_CONFIG}
    return json.dumps(config, sort_keys=True, default=str)


def _teacher_seed(info: Mapping):
    match = re.search(r"-seed(\d+)$", str(info.get("teacher_run") or ""))
    return int(match.group(1)) if match else None


def run_row(info: Mapping, run_dir: str | os.PathLike | None = None) -> dict:
    """One row of `collect_runs` from a run.json dict (e.g. an analysis entry's config).

    Example:
        >>> info = {"kind": "teacher", "model": "resnet8", "seed": 1, "status": "finished",
        ...         "label_smoothing": 0.1, "last": {"val_top1": 0.5}}
        >>> row = run_row(info)
        >>> row["last_top1"], row["seed"], row["label_smoothing"]
        (50.0, 1, 0.1)
    """
    name = info.get("name") or (Path(run_dir).name if run_dir is not None else None)
    row = {"run": name, "run_dir": None if run_dir is None else str(run_dir)}
    row["status"] = info.get("status")
    row["headline"] = info.get("headline", "top1")
    labels = info.get("metric_labels")
    row["metric_labels"] = json.dumps(labels, sort_keys=True) if labels else None
    spec = spec_record(dict(info))  # the spec's keys, stored once (old runs: at the top)
    for key in (
        "kind", "task", "model", "dataset", "label_smoothing", "smoothing", "seed",
        "teacher_model", "teacher_label_smoothing", "teacher_run", "teacher_checkpoint",
        "temperature", "kd_weight", "ce_weight", "kd_loss",
    ):  # fmt: skip
        row[key] = spec.get(key)
    row["wall_time_s"], row["epochs_done"] = info.get("wall_time_s"), info.get("epochs_done")
    row["teacher_seed"] = _teacher_seed(spec)
    row["config"] = run_config(info)
    monitor = info.get("monitor", "val_top1")
    prefix = "val_" if monitor.startswith("val_") else ""
    for which in ("best", "last"):
        metrics = info.get(which, {})
        row[f"{which}_epoch"] = metrics.get("epoch")
        for metric in info.get("metrics", DEFAULT_METRICS):
            # metrics measured on the test split after training (test_bleu) have their own
            # prefix; older runs recorded test-split BLEU as val_bleu
            value = metrics.get(prefix + metric, metrics.get(f"test_{metric}"))
            row[f"{which}_{metric}"] = None if value is None else 100.0 * value
    return row


def collect_runs(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per run found under ``paths``, with its spec and best/last metrics.

    The metrics are those the run's task reported (run.json ``metrics``), in
    percent like the papers' tables. ``config`` identifies the
    configuration apart from seed and table keys (`run_config`), ``teacher_seed`` the
    seed of a student's teacher run.
    """
    rows = []
    for run_dir in _run_dirs(paths):
        info = RunDir(run_dir).read()
        if info.get("status") == FINISHED:
            RunDir(run_dir).read_history()  # a damaged history.csv: one line, now
        rows.append(run_row(info, run_dir))
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def _config_labels(configs: Iterable[str]) -> dict[str, str]:
    """Short labels naming only the fields in which the configurations differ."""
    configs = sorted(set(configs))
    parsed = {c: json.loads(c) for c in configs}
    keys = sorted({k for p in parsed.values() for k in p})
    differing = [k for k in keys if len({json.dumps(p.get(k)) for p in parsed.values()}) > 1]
    return {c: ", ".join(f"{k}={_short(parsed[c].get(k))}" for k in differing) for c in configs}


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _replicates(group: pd.DataFrame) -> pd.Series:
    """Pairing unit of each run: its seed; for students whose teachers' seeds differ
    within the group, "teacher seed/seed" (a student's seed alone does not identify it)."""
    teacher_seeds = group["teacher_seed"] if "teacher_seed" in group else None
    if teacher_seeds is not None and teacher_seeds.dropna().nunique() > 1:
        return group["teacher_seed"].astype("Int64").astype(str) + "/" + group["seed"].astype(str)
    return group["seed"]


def _seed_values(cell: pd.DataFrame, column: str) -> pd.Series:
    """``{replicate: value}`` of one table cell; two runs of one replicate are an error."""
    keys = cell["_replicate"]
    duplicated = keys.duplicated(keep=False)
    if duplicated.any():
        names = ", ".join(str(r) for r in cell.loc[duplicated, "run"])
        raise ValueError(
            f"runs {names} have the same configuration and seed; pass only one of them "
            "(e.g. the run directories of a single study)."
        )
    return pd.Series(cell[column].to_numpy(), index=keys.to_numpy(), dtype="float64")


def _comparison(
    runs: pd.DataFrame, row_keys: list[str], row_names: list[str], column: str, metric: str
) -> tuple[pd.DataFrame, list[dict]]:
    """Rows ``row_keys`` (+ config when it varies), columns ``column``: mean ± std per
    cell and the paired difference of every nonzero column value against 0."""
    if runs.empty:
        return pd.DataFrame(), []
    runs = runs.assign(config=runs["config"] if "config" in runs else "{}")
    labels = _config_labels(runs["config"])
    split_config = len(labels) > 1
    table, records = {}, []
    for key, group in runs.groupby(["config", *row_keys], sort=True, dropna=False):
        config, row_values = key[0], key[1:]
        group = group.assign(_replicate=_replicates(group))
        cells = dict(tuple(group.groupby(column, sort=True)))
        alphas = sorted(cells)
        row: dict = {}
        described, unpaired = [], {}
        for which in ("last", "best"):
            values = {a: _seed_values(cells[a], f"{which}_{metric}") for a in alphas}
            for alpha in alphas:
                row[f"{which} a={alpha:g}"] = _mean_std(values[alpha])
            if 0.0 not in values:
                continue
            others = [a for a in alphas if a != 0.0]
            for alpha in others:
                diff = statistics.paired_difference(values[0.0], values[alpha])
                name = "Δ(LS−noLS)" if len(others) == 1 else f"Δ(a={alpha:g}−a=0)"
                row[f"{which} {name}"] = diff.format()
                if which == "last":
                    described.append(diff.describe_method())
                records.append(
                    {
                        **({"config": labels[config]} if split_config else {}),
                        **dict(zip(row_names, row_values, strict=True)),
                        "epoch": which, "treatment": alpha, "baseline": 0.0,
                        "n_pairs": diff.n, "mean": diff.mean, "sd": diff.sd,
                        "ci_low": diff.low, "ci_high": diff.high, "ci_method": diff.method,
                        "excludes_zero": diff.excludes_zero,
                        "unpaired_seeds": " ".join(map(str, diff.unpaired)),
                    }
                )  # fmt: skip
        seed_sets = {a: set(cells[a]["_replicate"]) for a in alphas}
        common = set.intersection(*seed_sets.values())
        for alpha in alphas:
            extra = statistics._sorted(seed_sets[alpha] - common)
            if extra and len(alphas) > 1:
                unpaired[alpha] = extra
        row["n"] = int(min(len(s) for s in seed_sets.values()))
        if described:
            row["CI"] = "; ".join(dict.fromkeys(described))
        if unpaired or len(alphas) > 1:
            row["unpaired seeds"] = "; ".join(
                f"a={a:g}: {', '.join(map(str, seeds))}" for a, seeds in unpaired.items()
            )
        index = tuple(_short(v) if isinstance(v, float) else v for v in row_values)
        table[((labels[config],) if split_config else ()) + index] = row
    frame = pd.DataFrame.from_dict(table, orient="index")
    if "unpaired seeds" in frame and not frame["unpaired seeds"].astype(bool).any():
        frame = frame.drop(columns="unpaired seeds")  # the column appears only when needed
    ordered = [c for c in frame.columns if c not in ("n", "CI", "unpaired seeds")]
    frame = frame[ordered + [c for c in ("n", "CI", "unpaired seeds") if c in frame.columns]]
    names = (["config"] if split_config else []) + row_names
    if len(names) > 1:
        frame.index = pd.MultiIndex.from_tuples(frame.index, names=names)
    else:
        frame.index = [k[0] for k in frame.index]
        frame.index.name = names[0]
    return frame, records


def _finished(runs: pd.DataFrame, kind: str) -> pd.DataFrame:
    if runs.empty or "kind" not in runs:
        return pd.DataFrame()
    return runs[(runs["kind"] == kind) & (runs["status"] == FINISHED)]


def _students(runs: pd.DataFrame) -> pd.DataFrame:
    students = _finished(runs, "student")
    if students.empty:
        return students
    return students.assign(
        teacher_label_smoothing=students["teacher_label_smoothing"].astype(float).fillna(-1.0)
    )


def _recording(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The runs that recorded ``metric`` (a run recorded before its task reported a
    metric, e.g. ``bleu_tokenized``, has no value for it and is left out)."""
    columns = [f"{which}_{metric}" for which in ("last", "best") if f"{which}_{metric}" in runs]
    if runs.empty or not columns:
        return runs.iloc[0:0]
    return runs[runs[columns].notna().any(axis=1)]


def _check_metric(runs: pd.DataFrame, metric: str) -> None:
    """A one-line ValueError when no finished run recorded ``metric`` (e.g. a typo)."""
    finished = pd.concat([_finished(runs, "teacher"), _finished(runs, "student")])
    if finished.empty or not _recording(finished, metric).empty:
        return
    columns = [c for c in finished if c.startswith("last_") and c != "last_epoch"]
    recorded = sorted(c.removeprefix("last_") for c in columns if finished[c].notna().any())
    raise ValueError(
        f"no finished run recorded the metric {metric!r}; choose one they recorded: "
        f"{', '.join(recorded)}"
    )


def metric_label(runs: pd.DataFrame, metric: str) -> str:
    """What the ``metric`` columns hold, as the runs' task described it (run.json
    ``metric_labels``, e.g. "BLEU (sacreBLEU 13a on detokenized text)"), else its short
    name ("top-1", "BLEU")."""
    for labels in runs.get("metric_labels", pd.Series(dtype=object)).dropna():
        label = json.loads(labels).get(metric)
        if label:
            return label
    return _metric_name(metric)


def student_table(runs: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Students: rows (student, T), columns teacher smoothing; last and best epoch.

    Columns: ``last a=<alpha>`` / ``best a=<alpha>`` "mean ± std" over seeds (one seed:
    its value); ``last Δ(LS−noLS)`` / ``best Δ(LS−noLS)`` the paired difference LS − no-LS
    over seeds as "mean [95% CI]" with ``*`` when the CI excludes 0 (with several nonzero
    smoothings, one ``Δ(a=<alpha>−a=0)`` column each); ``n`` the fewest seeds of a cell;
    ``CI`` the interval used and the number of pairs (e.g. "t, 3 pairs"); ``unpaired
    seeds`` (only if any) the seeds a cell has that another cell of the row lacks.
    Runs of different configurations get separate rows under a leading ``config`` level.

    Example (see tests/test_statistics.py)::

        | student | T | last a=0     | last a=0.1   | last Δ(LS−noLS)      | ... | CI         |
        | resnet8 | 1 | 70.00 ± 1.00 | 72.00 ± 1.00 | +2.00 [-0.48, +4.48] | ... | t, 3 pairs |
    """
    metric = metric or headline(runs)
    students = _recording(_students(runs), metric)
    if students.empty:
        return pd.DataFrame()
    table, _ = _comparison(
        students, ["model", "temperature"], ["student", "T"], "teacher_label_smoothing", metric
    )
    return table


def teacher_table(runs: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Teachers: rows model, columns label smoothing, last and best epoch; the paired
    difference LS − no-LS over teacher seeds, ``n``, ``CI`` and ``unpaired seeds`` as in
    `student_table`."""
    metric = metric or headline(runs)
    teachers = _recording(_finished(runs, "teacher"), metric)
    if teachers.empty:
        return pd.DataFrame()
    teachers = teachers.assign(label_smoothing=teachers["label_smoothing"].astype(float))
    table, _ = _comparison(teachers, ["model"], ["teacher"], "label_smoothing", metric)
    return table


def differences(runs: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """The paired differences behind the tables as numbers, one row per table cell:
    ``table`` (teachers/students), the row keys, ``epoch`` (last/best), ``treatment`` and
    ``baseline`` smoothing, ``n_pairs``, ``mean``, ``sd``, ``ci_low``, ``ci_high``,
    ``ci_method``, ``excludes_zero``, ``unpaired_seeds``."""
    metric = metric or headline(runs)
    frames = []
    teachers = _recording(_finished(runs, "teacher"), metric)
    if not teachers.empty:
        teachers = teachers.assign(label_smoothing=teachers["label_smoothing"].astype(float))
        _, records = _comparison(teachers, ["model"], ["teacher"], "label_smoothing", metric)
        frames.append(pd.DataFrame(records).assign(table="teachers"))
    students = _recording(_students(runs), metric)
    if not students.empty:
        _, records = _comparison(
            students, ["model", "temperature"], ["student", "T"], "teacher_label_smoothing", metric
        )
        frames.append(pd.DataFrame(records).assign(table="students"))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    first = [c for c in ("table", "config", "teacher", "student", "T") if c in out.columns]
    return out[first + [c for c in out.columns if c not in first]]


def _footnote(table: pd.DataFrame) -> str:
    """What the Δ, CI and unpaired columns mean (printed under each table)."""
    notes = [f"Δ: mean paired difference LS − no-LS over seeds [95% CI]. {statistics.CI_RULE}"]
    if "unpaired seeds" in table.columns:
        notes.append(
            "unpaired seeds: seeds run for one teacher smoothing only; they are in the "
            "mean ± std of their cell but not in Δ."
        )
    if "config" in (table.index.names or []):
        notes.append(
            "config: the settings in which rows differ; runs are never pooled across them."
        )
    return "\n".join(notes)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER_TEXT = re.compile(r"[-+]?\d[\d.eE+\-±\[\], *]*")
"""Number texts of the tables (``-1.25 ± 0.40``, ``+1.23 [+0.40, +2.06] *``): digits,
signs and punctuation only, so no function call, no reference, nothing to evaluate."""


def spreadsheet_cell(value):
    """A CSV cell a spreadsheet shows instead of evaluating (OWASP "CSV injection").

    Text starting with = + - @ tab or CR is a formula to Excel/LibreOffice (e.g.
    ``=HYPERLINK(...)`` from a run.json field); it gets a leading ``'``. Numbers,
    and number texts such as ``+1.23 [+0.40, +2.06] *`` of the tables, are left as they are.
    """
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    return value if _NUMBER_TEXT.fullmatch(value) else "'" + value


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with `spreadsheet_cell` applied to every text cell, index and header."""
    safe = table.map(spreadsheet_cell)
    safe.columns = safe.columns.map(spreadsheet_cell)
    safe.index = safe.index.map(
        lambda key: tuple(map(spreadsheet_cell, key)) if isinstance(key, tuple) else
        spreadsheet_cell(key)
    )  # fmt: skip
    return safe


def write_tables(
    runs: pd.DataFrame, out_dir: str | os.PathLike, metric: str | None = None
) -> dict[str, Path]:
    """Write runs.csv, the teacher/student tables of ``metric`` (default: the runs'
    `headline`) as CSV, Markdown and LaTeX, and differences.csv (the paired differences as
    numbers, see `differences`).

    The Markdown file ends with a footnote naming the metric (`metric_label`, e.g. which
    BLEU) and explaining Δ and its interval; the LaTeX table carries it as its caption;
    the CSV files have a ``metric`` column and the ``CI`` column names the interval.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = metric or headline(runs)
    _check_metric(runs, metric)
    label = metric_label(runs, metric)
    written = {"runs": out_dir / "runs.csv"}
    atomic.write_text(written["runs"], spreadsheet_safe(runs).to_csv(index=False))
    tables = (("teachers", teacher_table(runs, metric)), ("students", student_table(runs, metric)))
    for name, table in tables:
        if table.empty:
            continue
        note = f"Cells: {label}{_percent(metric)}, mean ± std over seeds.\n" + _footnote(table)
        for suffix, text in (
            ("csv", spreadsheet_safe(table.assign(metric=label)).to_csv()),
            ("md", markdown_table(table) + "\n\n" + note + "\n"),
            ("tex", latex_table(table, caption=note.replace("\n", " "))),
        ):
            path = out_dir / f"{name}.{suffix}"
            atomic.write_text(path, text)
            written[f"{name}.{suffix}"] = path
    diffs = differences(runs, metric)
    if not diffs.empty:
        written["differences"] = out_dir / "differences.csv"
        atomic.write_text(
            written["differences"], spreadsheet_safe(diffs.assign(metric=label)).to_csv(index=False)
        )
    return written


def markdown_table(table: pd.DataFrame) -> str:
    """``table`` (index as columns) as Markdown, every cell exactly as formatted.

    tabulate's default number parsing reprinted ``1.00`` as ``1``, ``+0.50`` as ``0.5``
    and ``-0.00`` as ``-0``, dropping the decimals and signs the cells were given.
    """
    return table.reset_index().to_markdown(index=False, disable_numparse=True)


_LATEX_TEXT = str.maketrans(
    {
        "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}", "<": "$<$", ">": "$>$", "|": r"\textbar{}",
        "Δ": r"$\Delta$", "−": "$-$", "±": r"$\pm$", "≈": r"$\approx$", "≥": r"$\geq$",
        "≤": r"$\leq$", "α": r"$\alpha$", "²": "$^2$", "×": r"$\times$",
    }
)  # fmt: skip
"""Characters LaTeX reads as commands (``%`` starts a comment) or that its default
OT1 text font lacks (Unicode math signs; ``<`` would print ``¡``), as text-mode LaTeX."""


def latex_text(value) -> str:
    """``value`` as LaTeX text: specials escaped, ``Δ ± −`` as math, a minus sign before
    a number as ``$-$`` (a text hyphen is shorter than a minus)."""
    return re.sub(r"(?<![\w$])-(?=\d)", "$-$", str(value).translate(_LATEX_TEXT))


def latex_table(table: pd.DataFrame, caption: str) -> str:
    """``table`` as a LaTeX ``table`` environment (needs ``\\usepackage{booktabs}``).

    pandas's ``to_latex`` does not escape by default: a caption's ``95% CI`` commented
    out the rest of the caption, and ``Δ``/``±`` need math mode. Every header, index
    label, string cell and the caption go through `latex_text`.
    """
    escaped = table.map(lambda v: latex_text(v) if isinstance(v, str) else v)
    escaped.columns = [latex_text(c) for c in table.columns]
    escaped.index = table.index.map(
        lambda key: tuple(map(latex_text, key)) if isinstance(key, tuple) else latex_text(key)
    )
    escaped.index.names = [None if n is None else latex_text(n) for n in table.index.names]
    # multirow=False: repeated row labels instead of \multirow (one package fewer to load).
    return escaped.to_latex(escape=False, caption=latex_text(caption), multirow=False)


def headline(runs: pd.DataFrame) -> str:
    """The metric the tables show: the runs' task's headline metric (run.json ``headline``:
    ``top1`` for images, ``bleu`` for translation; ``top1`` for older runs)."""
    if "headline" in runs and runs["headline"].notna().any():
        found = sorted(set(runs["headline"].dropna()))
        if len(found) > 1:
            raise ValueError(
                f"these runs report different headline metrics ({', '.join(found)}): "
                "tabulate each task's runs separately"
            )
        return found[0]
    return "top1"


def format_tables(runs: pd.DataFrame, metric: str | None = None) -> str:
    """The tables of ``metric`` (default: the runs' `headline`) as printable Markdown, last
    and best epoch, each titled with what the metric is (`metric_label`) and followed by
    the footnote on Δ, its interval and unpaired seeds. Finished runs that did not record
    the metric (recorded before it existed) are left out, with a line saying how many."""
    metric = metric or headline(runs)
    _check_metric(runs, metric)
    parts = []
    teachers, students = teacher_table(runs, metric), student_table(runs, metric)
    unit = metric_label(runs, metric) + _percent(metric)
    if not teachers.empty:
        parts.append(
            f"Teachers ({unit}, mean ± std over seeds; Δ = LS − no-LS paired by seed)\n\n"
            + markdown_table(teachers)
            + "\n\n"
            + _footnote(teachers)
        )
    if not students.empty:
        parts.append(
            f"Students by teacher label smoothing a ({unit}, mean ± std over seeds; "
            "Δ = LS − no-LS paired by seed)\n\n"
            + markdown_table(students)
            + "\n\n"
            + _footnote(students)
        )
    finished = pd.concat([_finished(runs, "teacher"), _finished(runs, "student")])
    lacking = len(finished) - len(_recording(finished, metric))
    if lacking and parts:
        parts.append(
            f"{_plural(lacking, 'finished run')} without {unit} (recorded before it existed) "
            "left out; runs.csv has their other metrics."
        )
    return "\n\n".join(parts) if parts else "no finished runs found"


SEEDS_NEEDED_FORMULA = (
    "seeds needed = the smallest n with P(|T'| > t_{0.975, n-1}) >= 0.8, "
    "T' ~ noncentral t(n - 1, sqrt(n) |mean Δ| / SD Δ) (paired t-test, 80% power, "
    "two-sided α = 0.05, observed mean and SD of the paired differences taken as true; "
    "≈ 7.85 (SD/mean)² for large n)"
)


def _metric_name(metric: str) -> str:
    if metric.startswith("bleu"):
        return " ".join(metric.split("_")[1:] + ["BLEU"])  # bleu_tokenized: tokenized BLEU
    return metric.replace("top", "top-")


def _percent(metric: str) -> str:
    """ " %" after an accuracy; nothing after a BLEU (a score, not a percentage)."""
    return "" if metric.startswith("bleu") else " %"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _cell_name(cell) -> str:
    alpha, temperature = cell
    teacher = (
        "teacher without LS"
        if alpha == 0
        else ("teacher from a checkpoint" if alpha < 0 else f"teacher LS a={alpha:g}")
    )
    return f"{teacher}, T={_short(float(temperature))}"


def verdict(runs: pd.DataFrame, metric: str | None = None, which: str = "last") -> str:
    """The recommendation the students support, as Markdown lines (one block per student).

    For each student model (and configuration, never pooled): the (teacher a, T) cell
    with the highest mean ``<which>_<metric>`` over seeds, against the runner-up cell,
    paired by seed with the interval of `lskd_tf.statistics`. If the interval excludes 0
    the recommendation is resolved; otherwise it says "not resolved at <n> seeds" and how
    many paired seeds the observed mean difference and SD would need (`SEEDS_NEEDED_FORMULA`).
    Then, for each T, teacher LS − no LS with its interval (the papers' question).
    The last epoch is the default: picking the best epoch on the validation split biases
    it upward.

    Example (numbers of tests/test_statistics.py)::

        **resnet8**: recommended teacher LS a=0.1, T=1 (72.00 % top-1, 3 seeds), ahead of
        teacher without LS, T=1 (70.00 %) by +2.00 [+1.00, +3.00] (t, 3 pairs): resolved
    """
    metric = metric or headline(runs)
    students = _students(runs)
    column = f"{which}_{metric}"
    if students.empty or column not in students or students[column].isna().all():
        return "No finished student runs with a recorded accuracy: nothing to recommend yet."
    students = students[students[column].notna()]
    labels = _config_labels(students["config"])
    lines = []
    for (config, model), group in students.groupby(["config", "model"], sort=True, dropna=False):
        group = group.assign(_replicate=_replicates(group))
        cells = {
            (float(alpha), float(temperature)): _seed_values(cell, column)
            for (alpha, temperature), cell in group.groupby(
                ["teacher_label_smoothing", "temperature"], sort=True
            )
        }
        name = f"**{model}**" + (f" ({labels[config]})" if len(labels) > 1 else "")
        comparison = statistics.best_versus_runner_up(cells)
        best = comparison.best
        pct = _percent(metric)
        text = (
            f"{name}: best cell {_cell_name(best)} "
            f"({comparison.means[best]:.2f}{pct} {_metric_name(metric)}, "
            f"{_plural(comparison.seeds[best], 'seed')})"
        )
        diff = comparison.difference
        if diff is None:
            lines.append(f"- {text}; it is the only cell, so there is nothing to compare.")
            continue
        runner = comparison.runner_up
        runner_mean = f"{comparison.means[runner]:.2f}{pct}"
        text += f", ahead of the runner-up {_cell_name(runner)} ({runner_mean})"
        if diff.n == 0:
            text += (
                ". **Not resolved**: the two cells share no seed, so no paired comparison; "
                "run the same seeds in both."
            )
        elif comparison.resolved:
            text = (
                f"{name}: **recommended: {_cell_name(best)}** "
                f"({comparison.means[best]:.2f}{pct} {_metric_name(metric)}, "
                f"{_plural(comparison.seeds[best], 'seed')}), ahead of the runner-up "
                f"{_cell_name(runner)} ({comparison.means[runner]:.2f}{pct}) by {diff.format()} "
                f"({diff.describe_method()}): resolved, the 95% CI excludes 0."
            )
        elif diff.n == 1:
            text += (
                f" by {diff.format()} (1 pair, no CI). **Not resolved at 1 seed**: one seed "
                "gives no estimate of the seed-to-seed variance; run at least 2 more seeds."
            )
        else:
            needed = comparison.seeds_needed()
            text += (
                f" by {diff.format()} ({diff.describe_method()}). "
                f"**Not resolved at {_plural(diff.n, 'seed')}**: the 95% CI contains 0"
            )
            if math.isinf(needed):
                text += "; the observed mean difference is 0, so no number of seeds would do."
            else:
                text += (
                    f"; at the observed mean Δ {statistics.signed(diff.mean)} and SD "
                    f"{diff.sd:.2f}, "
                    f"{needed} paired seeds ({max(needed - diff.n, 0)} more) would give 80% "
                    "power at α = 0.05."
                )
        lines.append(f"- {text}")
        by_temperature = []
        for temperature in sorted({t for _, t in cells}):
            if (0.0, temperature) not in cells:
                continue
            for alpha in sorted(a for a, t in cells if t == temperature and a > 0):
                diff = statistics.paired_difference(
                    cells[(0.0, temperature)], cells[(alpha, temperature)]
                )
                if diff.n:
                    by_temperature.append(
                        f"T={_short(temperature)}, a={alpha:g}: {diff.format()} "
                        f"({diff.describe_method()})"
                    )
        if by_temperature:
            lines.append("  - teacher LS − no LS: " + "; ".join(by_temperature))
    lines += [
        "",
        f"Accuracy: {which}-epoch {metric_label(runs, metric)}{_percent(metric)}. "
        f"{statistics.CI_RULE} "
        f"{SEEDS_NEEDED_FORMULA[0].upper()}{SEEDS_NEEDED_FORMULA[1:]}.",
    ]
    return "\n".join(lines)
