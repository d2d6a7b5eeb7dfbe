"""Diffusion measure vs temperature, next to accuracy, and how well the two track.

Reads a finished study: every student's ``run.json`` (``<study>/<run>/run.json``) and its
analysis (``<study>/analysis/<run>/analysis.json``, written by ``--analyze=true``), then

* plots each measure and the last-epoch top-1 against T, one line per teacher label
  smoothing (mean over seeds, seeds as dots): ``diffusion_vs_T.png``;
* the teachers: top-1, top-5 and sibling confusion (with its chance level) from their
  own analysis;
* per T, LS-teacher student minus no-LS-teacher student for top-1 and every measure,
  paired by replicate = (teacher seed, student seed) as `lskd_tf.results` pairs them
  (both teachers of one teacher seed start from the same weights and batches, both
  students of one replicate too), with a 95% t-interval; and, when there are several
  teacher seeds, the same per teacher seed and a hierarchical interval (the mean over
  student seeds per teacher seed, then a t-interval over teacher seeds), which carries
  the teacher-seed variance the paired one treats as noise shared by pairs;
* per teacher, Spearman's rho of each measure against T (does it rise with T?);
* correlations of each measure with accuracy, each with a 95% interval:
  - ``students``: over all (teacher a, T, seed) students, measure vs top-1;
  - ``vs_T1``: over students with T > 1, the change from the same teacher and seed at
    T = 1 (measure and top-1; does the measure track the drop with T?);
  - ``ls_minus_no_ls``: over (T, seed), LS-teacher student minus no-LS-teacher student
    (does the measure track the LS teacher's accuracy gap?).
  Pearson's r with a Fisher-z interval, Spearman's rho with a percentile bootstrap over
  the rows (fixed generator seed). Rows share seeds and teachers, so they are not fully
  independent: read the intervals as optimistic.

Writes ``findings_diffusion.json`` and ``findings_diffusion.md`` (tables) to the output
directory and prints the Markdown.

    python tools/findings_diffusion.py /work/studies/runs/embedded_separable docs/findings/separable
"""

from __future__ import annotations

import argparse
import json
import math
import os
import textwrap
from pathlib import Path

import numpy as np
from scipy import stats

MEASURES = (
    "same_superclass_separation",
    "same_superclass_overlap",
    "sibling_margin_dprime",
    "sibling_confusion",
    "separation_ratio",
    "semantic_mass_ratio",
)
LABELS = {
    "separation_ratio": "separation ratio (falls with diffusion and as unrelated classes part)",
    "same_superclass_overlap": "same-superclass overlap (rises with diffusion)",
    "same_superclass_separation": "same-superclass separation (falls with diffusion)",
    "sibling_margin_dprime": "sibling margin d' (falls with diffusion)",
    "sibling_confusion": "sibling confusion (rises with diffusion)",
    "semantic_mass_ratio": "semantic mass ratio (rises with diffusion, and with sharper logits)",
    "same_superclass_mass": "mass on siblings (near-synonyms for tokens)",
    "projection_separation_ratio": "projection separation ratio",
}


def _teacher_seed(info: dict) -> int:
    from lskd_tf.results import run_row

    seed = run_row(info)["teacher_seed"]
    return 0 if seed is None else int(seed)


def load_students(study_dir: Path, metric: str = "top1") -> list[dict]:
    """One dict per finished student: a, T, teacher_seed, seed, ``score`` (the run's
    last-epoch ``metric`` in %: ``top1``, or a translation's ``bleu_tokenized``) and
    every analysis number."""
    rows = []
    for run_json in sorted(study_dir.glob("*/run.json")):
        info = json.loads(run_json.read_text())
        spec = info.get("spec", info)
        if spec.get("kind") != "student" or info.get("status") != "finished":
            continue
        analysis = study_dir / "analysis" / info["name"] / "analysis.json"
        if not analysis.is_file():
            raise SystemExit(f"no analysis for {info['name']}: run the study with --analyze")
        metrics = json.loads(analysis.read_text())
        row = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        row.update(
            run=info["name"],
            a=float(spec["teacher_label_smoothing"]),
            T=float(spec["temperature"]),
            teacher_seed=_teacher_seed(info),
            seed=int(spec["seed"]),
            score=100.0 * float(_last(info, metric)),
        )
        rows.append(row)
    if not rows:
        raise SystemExit(f"no finished students under {study_dir}")
    return rows


TEACHER_KEYS = (
    "top1_accuracy", "top5_accuracy", "sibling_confusion", "sibling_chance",
    "superclass_accuracy", "same_superclass_separation", "sibling_margin_dprime",
)  # fmt: skip


def _last(info: dict, metric: str) -> float:
    """The last checkpoint's ``metric``: on the validation split, or measured on the test
    split after training (a translation's BLEU)."""
    last = info["last"]
    for key in (f"val_{metric}", f"test_{metric}", metric):
        if key in last:
            return last[key]
    raise SystemExit(f"{info['name']} recorded no {metric!r} (it has {', '.join(last)})")


def load_teachers(study_dir: Path) -> list[dict]:
    """One dict per analysed teacher: a, seed and its own accuracy and sibling measures."""
    rows = []
    for run_json in sorted(study_dir.glob("teacher-*/run.json")):
        info = json.loads(run_json.read_text())
        spec = info.get("spec", info)
        analysis = study_dir / "analysis" / info["name"] / "analysis.json"
        if info.get("status") != "finished" or not analysis.is_file():
            continue
        metrics = json.loads(analysis.read_text())
        row = {k: metrics[k] for k in TEACHER_KEYS if k in metrics}
        row.update(run=info["name"], a=float(spec["label_smoothing"]), seed=int(spec["seed"]))
        rows.append(row)
    return rows


def replicate(row: dict) -> str:
    """The pairing unit: "teacher seed/student seed" (as `lskd_tf.results` labels it)."""
    return f"{row['teacher_seed']}/{row['seed']}"


def pearson_fisher(x, y, confidence: float = 0.95) -> dict:
    r = float(stats.pearsonr(x, y)[0])
    n = len(x)
    z, half = math.atanh(max(min(r, 0.999999), -0.999999)), stats.norm.ppf(0.5 + confidence / 2)
    se = 1.0 / math.sqrt(n - 3)
    return {"r": r, "low": math.tanh(z - half * se), "high": math.tanh(z + half * se), "n": n}


def spearman_bootstrap(x, y, resamples: int = 10_000, seed: int = 0) -> dict:
    x, y = np.asarray(x, float), np.asarray(y, float)
    rho = float(stats.spearmanr(x, y)[0])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            draws.append(stats.spearmanr(x[i], y[i])[0])
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return {"rho": rho, "low": float(low), "high": float(high), "n": len(x)}


def correlations(rows: list[dict], measure: str, resamples: int) -> dict:
    by_key = {(r["a"], r["T"], replicate(r)): r for r in rows}
    sets = {"students": [(r[measure], r["score"]) for r in rows]}
    sets["vs_T1"] = [
        (r[measure] - by_key[(a, 1.0, s)][measure], r["score"] - by_key[(a, 1.0, s)]["score"])
        for (a, t, s), r in by_key.items()
        if t != 1.0 and (a, 1.0, s) in by_key
    ]
    smoothings = sorted({r["a"] for r in rows})
    sets["ls_minus_no_ls"] = [
        (r[measure] - by_key[(0.0, t, s)][measure], r["score"] - by_key[(0.0, t, s)]["score"])
        for (a, t, s), r in by_key.items()
        if a == max(smoothings) and a > 0 and (0.0, t, s) in by_key
    ]
    out = {}
    for name, pairs in sets.items():
        if len(pairs) < 4:
            continue
        x, y = zip(*pairs, strict=True)
        out[name] = {
            "pearson": pearson_fisher(x, y),
            "spearman": spearman_bootstrap(x, y, resamples),
        }
    return out


def trend_with_temperature(rows, measure: str, resamples: int) -> dict:
    """Per teacher a: Spearman's rho of the measure against T over its students."""
    out = {}
    for a in sorted({r["a"] for r in rows}):
        mine = [r for r in rows if r["a"] == a]
        out[f"{a:g}"] = spearman_bootstrap(
            [r["T"] for r in mine], [r[measure] for r in mine], resamples
        )
    return out


def ls_effect_by_temperature(rows, keys) -> dict:
    """Per T and key: LS-teacher student minus no-LS-teacher student.

    ``paired``: paired by replicate (teacher seed, student seed), a t-interval over the
    pairs (the headline; what `--mode=results` reports). With several teacher seeds also
    ``by_teacher_seed`` (the same within each teacher seed) and ``hierarchical``: the
    mean difference over student seeds within each teacher seed, then a t-interval over
    teacher seeds (wide with 2 teacher seeds: t_{0.975, 1} = 12.7).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # lskd_tf imports TensorFlow
    from lskd_tf import statistics

    a_ls = max(r["a"] for r in rows)
    teacher_seeds = sorted({r["teacher_seed"] for r in rows})

    def summary(diff) -> dict:
        return {"mean": diff.mean, "low": diff.low, "high": diff.high, "n": diff.n,
                "text": diff.format()}  # fmt: skip

    out = {}
    for t in sorted({r["T"] for r in rows}):
        out[f"{t:g}"] = {}
        for key in keys:
            cell = [r for r in rows if r["T"] == t]
            base = {replicate(r): r[key] for r in cell if r["a"] == 0.0}
            treated = {replicate(r): r[key] for r in cell if r["a"] == a_ls}
            found = {"paired": summary(statistics.paired_difference(base, treated))}
            if len(teacher_seeds) > 1:
                per_seed, means_base, means_treated = {}, {}, {}
                for ts in teacher_seeds:
                    prefix = f"{ts}/"
                    b = {k: v for k, v in base.items() if k.startswith(prefix)}
                    tr = {k: v for k, v in treated.items() if k.startswith(prefix)}
                    common = sorted(set(b) & set(tr))
                    if not common:
                        continue
                    per_seed[ts] = summary(statistics.paired_difference(b, tr))
                    means_base[ts] = float(np.mean([b[k] for k in common]))
                    means_treated[ts] = float(np.mean([tr[k] for k in common]))
                found["by_teacher_seed"] = {f"{ts}": d for ts, d in per_seed.items()}
                found["hierarchical"] = summary(
                    statistics.paired_difference(means_base, means_treated)
                )
            found["text"] = found["paired"]["text"]
            out[f"{t:g}"][key] = found
    return out


def cell_means(rows, keys) -> dict:
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["a"], r["T"]), []).append(r)
    return {
        f"a={a:g},T={t:g}": {k: float(np.mean([r[k] for r in rs])) for k in keys}
        for (a, t), rs in sorted(cells.items())
    }


def plot(rows, measures, path: Path, score_label: str = "top-1 % (last epoch)") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["score", *measures]
    columns = min(len(panels), 4)
    grid_rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(
        grid_rows, columns, figsize=(3.4 * columns, 3.0 * grid_rows), dpi=90, squeeze=False
    )
    axes = axes.ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    temperatures = sorted({r["T"] for r in rows})
    colours = {0.0: "tab:blue"}
    for ax, key in zip(axes, panels, strict=False):
        for a in sorted({r["a"] for r in rows}):
            colour = colours.get(a, "tab:red")
            mine = [r for r in rows if r["a"] == a]
            ax.scatter([r["T"] for r in mine], [r[key] for r in mine], s=10, alpha=0.4, c=colour)
            means = [np.mean([r[key] for r in mine if r["T"] == t]) for t in temperatures]
            ax.plot(temperatures, means, "o-", c=colour, label=f"teacher LS a={a:g}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(temperatures, [f"{t:g}" for t in temperatures])
        ax.set_xlabel("T")
        title = LABELS.get(key, key if key != "score" else score_label)
        ax.set_title(textwrap.fill(title, 38), fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ci(d: dict, key: str) -> str:
    return f"{d[key]:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def markdown(result: dict) -> str:
    lines = [
        "| measure | set | n | Pearson r [Fisher-z 95% CI] | Spearman rho [bootstrap 95% CI] |",
        "|---|---|---|---|---|",
    ]
    for measure, sets in result["correlations"].items():
        for name, c in sets.items():
            lines.append(
                f"| {measure} | {name} | {c['pearson']['n']} | {_ci(c['pearson'], 'r')} | "
                f"{_ci(c['spearman'], 'rho')} |"
            )
    lines += ["", "| measure | teacher a | Spearman rho vs T [bootstrap 95% CI] |", "|---|---|---|"]
    for measure, per_a in result["trend_with_T"].items():
        for a, c in per_a.items():
            lines.append(f"| {measure} | {a} | {_ci(c, 'rho')} (n = {c['n']}) |")
    keys = ["score", *result["measures"]]
    lines += ["", "| T | LS − no-LS (paired by teacher seed/student seed, 95% t-CI): "
              + " | ".join(keys) + " |"]  # fmt: skip
    lines.append("|---|" + "---|" * len(keys))
    for t, values in result["ls_minus_no_ls_by_T"].items():
        lines.append(f"| {t} | " + " | ".join(values[k]["text"] for k in keys) + " |")
    by_T = result["ls_minus_no_ls_by_T"]
    if any("hierarchical" in v for values in by_T.values() for v in values.values()):
        lines += ["", "| T | measure | per teacher seed (paired by student seed) | "
                  "hierarchical (t over teacher-seed means) |", "|---|---|---|---|"]  # fmt: skip
        for t, values in by_T.items():
            for k in keys:
                seeds = "; ".join(
                    f"{ts}: {d['text']}" for ts, d in values[k]["by_teacher_seed"].items()
                )
                lines.append(f"| {t} | {k} | {seeds} | {values[k]['hierarchical']['text']} |")
    if result.get("teachers"):
        lines += ["", "| teacher | " + " | ".join(TEACHER_KEYS) + " |",
                  "|---|" + "---|" * len(TEACHER_KEYS)]  # fmt: skip
        for teacher in result["teachers"]:
            values = [f"{teacher[k]:.4g}" if k in teacher else "" for k in TEACHER_KEYS]
            lines.append(f"| {teacher['run']} | " + " | ".join(values) + " |")
    lines += ["", "| cell (mean over seeds) | " + " | ".join(keys) + " |"]
    lines.append("|---|" + "---|" * len(keys))
    for cell, values in result["cell_means"].items():
        lines.append(f"| {cell} | " + " | ".join(f"{values[k]:.4g}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path, help="<output_dir>/<study> of a finished study")
    parser.add_argument("out_dir", type=Path, help="where the PNG, JSON and Markdown go")
    parser.add_argument("--measures", default=",".join(MEASURES), help="analysis.json keys")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument(
        "--metric", default="top1", help="the accuracy column: top1, or bleu_tokenized / bleu"
    )
    args = parser.parse_args(argv)

    rows = load_students(args.study_dir, args.metric)
    measures = [m for m in args.measures.split(",") if m]
    missing = [m for m in measures if m not in rows[0]]
    if missing:
        raise SystemExit(f"not in analysis.json: {', '.join(missing)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, measures, args.out_dir / "diffusion_vs_T.png", f"{args.metric} (last epoch)")
    result = {
        "study_dir": str(args.study_dir),
        "num_students": len(rows),
        "metric": args.metric,
        "measures": measures,
        "correlations": {m: correlations(rows, m, args.resamples) for m in measures},
        "trend_with_T": {m: trend_with_temperature(rows, m, args.resamples) for m in measures},
        "ls_minus_no_ls_by_T": ls_effect_by_temperature(rows, ["score", *measures]),
        "cell_means": cell_means(rows, ["score", *measures]),
        "teachers": load_teachers(args.study_dir),
    }
    (args.out_dir / "findings_diffusion.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (args.out_dir / "findings_diffusion.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
