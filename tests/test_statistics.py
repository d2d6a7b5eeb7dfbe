"""Paired seed statistics (lskd_tf.statistics) and their use in the results tables,
the written table files and the report's verdict, checked against hand computations."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lskd_tf import results, statistics
from lskd_tf.analysis.report import verdict_section

T_975_2 = 4.302653  # t_{0.975, 2} from a printed t table


# --------------------------------------------------------------------------- intervals


def test_t_interval_matches_hand_computation():
    d = statistics.paired_difference({0: 70.0, 1: 71.0, 2: 72.0}, {0: 71.0, 1: 73.0, 2: 75.0})
    assert d.differences == (1.0, 2.0, 3.0)
    assert (d.n, d.mean, d.sd, d.method) == (3, 2.0, pytest.approx(1.0), "t")
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert d.low == pytest.approx(2 - half, abs=1e-6)
    assert d.high == pytest.approx(2 + half, abs=1e-6)
    assert not d.excludes_zero
    assert d.format() == "+2.00 [-0.48, +4.48]"
    assert d.describe_method() == "t, 3 pairs"


def test_pairing_is_by_seed_not_by_order():
    baseline = {0: 70.0, 1: 71.0, 2: 72.0, 5: 60.0}
    treatment = {0: 71.0, 1: 73.0, 2: 75.0, 9: 80.0}
    shuffled_baseline = dict(reversed(list(baseline.items())))
    shuffled_treatment = pd.Series(
        [80.0, 75.0, 71.0, 73.0], index=[9, 2, 0, 1]
    )  # another order, as a Series
    a = statistics.paired_difference(baseline, treatment)
    b = statistics.paired_difference(shuffled_baseline, shuffled_treatment)
    assert a == b
    assert a.seeds == (0, 1, 2) and a.mean == 2.0
    assert a.only_baseline == (5,) and a.only_treatment == (9,) and a.unpaired == (5, 9)
    # NaN (a run without a recorded accuracy) is not a seed
    c = statistics.paired_difference({0: 1.0, 1: float("nan")}, {0: 2.0, 1: 3.0})
    assert c.seeds == (0,) and c.only_treatment == (1,)


def test_marker_when_the_interval_excludes_zero():
    d = statistics.paired_difference({0: 70.0, 1: 71.0, 2: 72.0}, {0: 72.0, 1: 72.8, 2: 74.2})
    assert d.differences == pytest.approx((2.0, 1.8, 2.2))
    half = T_975_2 * 0.2 / math.sqrt(3)  # sd of (2, 1.8, 2.2) is 0.2
    assert (d.low, d.high) == (pytest.approx(2 - half, abs=1e-6), pytest.approx(2 + half, abs=1e-6))
    assert d.excludes_zero and d.format() == "+2.00 [+1.50, +2.50] *"
    negative = statistics.paired_difference(
        {0: 72.0, 1: 72.8, 2: 74.2}, {0: 70.0, 1: 71.0, 2: 72.0}
    )
    assert negative.excludes_zero and negative.format() == "-2.00 [-2.50, -1.50] *"


def test_one_pair_has_no_interval_and_no_marker():
    d = statistics.paired_difference({0: 70.0}, {0: 75.0})
    assert (d.n, d.mean, d.method) == (1, 5.0, "none")
    assert math.isnan(d.sd) and math.isnan(d.low)
    assert not d.excludes_zero and d.format() == "+5.00" and d.describe_method() == "no CI, 1 pair"
    assert statistics.paired_difference({0: 1.0}, {1: 2.0}).format() == ""


def test_bootstrap_from_twenty_pairs():
    assert [statistics.ci_method(n) for n in (0, 1, 2, 19, 20, 50)] == [
        "none", "none", "t", "t", "bootstrap", "bootstrap"
    ]  # fmt: skip
    rng = np.random.default_rng(1)
    diffs = rng.normal(1.0, 1.0, size=25)
    d = statistics.paired_difference(dict(enumerate(np.zeros(25))), dict(enumerate(diffs)))
    assert d.method == "bootstrap" and d.describe_method() == "bootstrap, 25 pairs"
    t_low, t_high = statistics.t_interval(diffs)
    assert d.low < diffs.mean() < d.high
    assert abs((d.high - d.low) - (t_high - t_low)) < 0.25 * (t_high - t_low)
    again = statistics.paired_difference(dict(enumerate(np.zeros(25))), dict(enumerate(diffs)))
    assert (again.low, again.high) == (d.low, d.high)  # fixed generator seed: reproducible
    assert statistics.bootstrap_interval(np.full(30, 0.5)) == (0.5, 0.5)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="several values for seed"):
        statistics.paired_difference(pd.Series([1.0, 2.0], index=[0, 0]), {0: 1.0})
    with pytest.raises(ValueError, match="must map seed -> value"):
        statistics.paired_difference([1.0, 2.0], {0: 1.0})
    with pytest.raises(ValueError, match="at least 2 finite"):
        statistics.t_interval([1.0])
    with pytest.raises(ValueError, match="sd >= 0"):
        statistics.seeds_needed(1.0, -1.0)


# --------------------------------------------------------------------------- seeds needed


def _power(n, mean, sd):
    """Independent hand formula: two-sided paired t-test power via the noncentral t."""
    crit = sps.t.ppf(0.975, n - 1)
    nc = math.sqrt(n) * abs(mean) / sd
    return 1 - sps.nct.cdf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc)


@pytest.mark.parametrize("mean, sd, expected", [(1.0, 1.0, 10), (0.5, 1.0, 34), (2.0, 1.0, 5)])
def test_seeds_needed_matches_the_power_formula(mean, sd, expected):
    # 10 and 34 are G*Power's paired-t sample sizes for d_z = 1 and 0.5 (80%, alpha .05).
    n = statistics.seeds_needed(mean, sd)
    assert n == expected
    assert _power(n, mean, sd) >= 0.8 > _power(n - 1, mean, sd)
    assert statistics.paired_t_power(n, mean, sd) == pytest.approx(_power(n, mean, sd))
    # the normal approximation ((z_.975 + z_.8) sd / mean)^2 is a slight underestimate
    approx = ((1.959964 + 0.841621) * sd / mean) ** 2
    assert approx <= n <= approx + 4


def test_seeds_needed_edge_cases():
    assert statistics.seeds_needed(0.0, 1.0) == math.inf
    assert statistics.seeds_needed(1.0, 0.0) == 2
    assert statistics.seeds_needed(-1.0, 1.0) == 10  # the sign does not matter
    assert statistics.seeds_needed(1e-4, 1.0) == math.inf  # beyond max_seeds


def test_best_versus_runner_up():
    cells = {("a", 1): {0: 70.0, 1: 71.0, 2: 72.0}, ("b", 1): {2: 75.0, 0: 71.0, 1: 73.0}}
    c = statistics.best_versus_runner_up(cells)
    assert (c.best, c.runner_up) == (("b", 1), ("a", 1))
    assert c.means == {("a", 1): 71.0, ("b", 1): 73.0}
    assert c.difference.format() == "+2.00 [-0.48, +4.48]" and not c.resolved
    assert c.seeds_needed() == statistics.seeds_needed(2.0, 1.0) == 5
    single = statistics.best_versus_runner_up({"only": {0: 1.0}})
    assert single.runner_up is None and single.difference is None and not single.resolved


# --------------------------------------------------------------------------- tables


def _student(seed, alpha, temperature, top1, *, model="resnet8", best=None, **extra):
    info = {
        "name": f"student-{model}-T{temperature:g}-seed{seed}-from-ls{alpha:g}"
        + "".join(f"-{k}{v}" for k, v in extra.items()),
        "kind": "student", "status": "finished", "model": model, "dataset": "embedded",
        "seed": seed, "teacher_label_smoothing": alpha, "teacher_smoothing": "uniform",
        "teacher_run": f"teacher-resnet14-ls{alpha:g}-seed0", "teacher_model": "resnet14",
        "temperature": temperature, "kd_weight": 1.0, "ce_weight": 0.0,
        "label_smoothing": 0.0, "smoothing": "uniform", "t2_scaling": True,
        "last": {"val_top1": top1 / 100},
        "best": {"val_top1": (top1 if best is None else best) / 100},
    }  # fmt: skip
    info.update(extra)
    return results.run_row(info)


def _teacher(seed, alpha, top1):
    return results.run_row(
        {
            "kind": "teacher",
            "status": "finished",
            "model": "resnet14",
            "seed": seed,
            "dataset": "embedded",
            "label_smoothing": alpha,
            "smoothing": "uniform",
            "last": {"val_top1": top1 / 100},
            "best": {"val_top1": top1 / 100},
        }  # fmt: skip
    )


def _unresolved_runs():
    """T=1: differences (1, 2, 3) -> +2.00 [-0.48, +4.48]; T=4 worse; seed 7 only at a=0."""
    rows = []
    for seed, (a, b) in enumerate([(70.0, 71.0), (71.0, 73.0), (72.0, 75.0)]):
        rows += [_student(seed, 0.0, 1.0, a), _student(seed, 0.1, 1.0, b)]
        rows += [_student(seed, 0.0, 4.0, a - 10), _student(seed, 0.1, 4.0, 60.0)]
    rows.append(_student(7, 0.0, 4.0, 50.0))
    rows += [_teacher(0, 0.0, 75.0), _teacher(1, 0.0, 75.5), _teacher(0, 0.1, 76.0)]
    return pd.DataFrame(rows)


def _resolved_runs():
    """T=1: differences (2, 1.8, 2.2) -> +2.00 [+1.50, +2.50] *."""
    rows = []
    for seed, (a, b) in enumerate([(70.0, 72.0), (71.0, 72.8), (72.0, 74.2)]):
        rows += [_student(seed, 0.0, 1.0, a), _student(seed, 0.1, 1.0, b)]
        rows += [_student(seed, 0.0, 4.0, a - 5), _student(seed, 0.1, 4.0, a - 6)]
    return pd.DataFrame(rows)


def test_student_table_has_paired_differences_and_unpaired_seeds():
    runs = _unresolved_runs()
    table = results.student_table(runs)
    assert list(table.index) == [("resnet8", "1"), ("resnet8", "4")]
    row = table.loc[("resnet8", "1")]
    assert row["last a=0"] == "71.00 ± 1.00" and row["last a=0.1"] == "73.00 ± 2.00"
    assert row["last Δ(LS−noLS)"] == "+2.00 [-0.48, +4.48]"
    assert row["n"] == 3 and row["CI"] == "t, 3 pairs" and row["unpaired seeds"] == ""
    row4 = table.loc[("resnet8", "4")]
    # seed 7 (a=0 only) is in its cell's mean (60, 61, 62, 50 -> 58.25) but not in Δ
    assert row4["last a=0"] == f"58.25 ± {np.std([60, 61, 62, 50], ddof=1):.2f}"
    assert row4["last Δ(LS−noLS)"] == "-1.00 [-3.48, +1.48]"  # 60 - (60, 61, 62)
    assert row4["unpaired seeds"] == "a=0: 7" and row4["n"] == 3
    shuffled = runs.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(results.student_table(shuffled), table)
    assert results.student_table(_resolved_runs()).loc[("resnet8", "1"), "last Δ(LS−noLS)"] == (
        "+2.00 [+1.50, +2.50] *"
    )


def test_one_seed_prints_single_values_without_an_interval():
    runs = pd.DataFrame([_student(0, 0.0, 1.0, 70.0), _student(0, 0.1, 1.0, 71.0)])
    row = results.student_table(runs).loc[("resnet8", "1")]
    assert row["last a=0"] == "70.00" and row["last a=0.1"] == "71.00"
    assert row["last Δ(LS−noLS)"] == "+1.00" and row["CI"] == "no CI, 1 pair"
    assert "±" not in " ".join(map(str, row.values))


def test_teacher_table_pairs_teacher_seeds():
    table = results.teacher_table(_unresolved_runs())
    row = table.loc["resnet14"]
    assert row["last a=0"] == "75.25 ± 0.35" and row["last a=0.1"] == "76.00"
    assert row["last Δ(LS−noLS)"] == "+1.00"  # only teacher seed 0 is paired
    assert row["CI"] == "no CI, 1 pair" and row["unpaired seeds"] == "a=0: 1"


def test_tables_never_pool_configurations():
    rows = [_student(s, a, 1.0, 70.0 + s + 10 * a) for s in range(2) for a in (0.0, 0.1)]
    rows += [
        _student(s, a, 1.0, 50.0 + s, smoothing="others", teacher_smoothing="others")
        for s in range(2)
        for a in (0.0, 0.1)
    ]
    rows += [_student(0, a, 1.0, 40.0, kd_weight=0.9, ce_weight=0.1) for a in (0.0, 0.1)]
    table = results.student_table(pd.DataFrame(rows))
    assert table.index.names == ["config", "student", "T"]
    labels = sorted(table.index.get_level_values("config"))
    assert labels == [
        "ce_weight=0, kd_weight=1, smoothing=others, teacher_smoothing=others",
        "ce_weight=0, kd_weight=1, smoothing=uniform, teacher_smoothing=uniform",
        "ce_weight=0.1, kd_weight=0.9, smoothing=uniform, teacher_smoothing=uniform",
    ]
    uniform = table.loc[(labels[1], "resnet8", "1")]
    assert uniform["last a=0"] == "70.50 ± 0.71" and uniform["last a=0.1"] == "71.50 ± 0.71"
    others = table.loc[(labels[0], "resnet8", "1")]
    assert (
        others["last a=0"] == "50.50 ± 0.71" and others["last Δ(LS−noLS)"] == "+0.00 [+0.00, +0.00]"
    )
    assert table.loc[(labels[2], "resnet8", "1"), "last a=0"] == "40.00"
    assert "never pooled" in results.format_tables(pd.DataFrame(rows))
    # the same configuration and seed twice (e.g. two copies of a study): refused
    with pytest.raises(ValueError, match="same configuration and seed; pass only one"):
        results.student_table(pd.DataFrame(rows[:2] + rows[:1]))


def test_written_and_printed_tables_carry_the_statistics(tmp_path):
    runs = _unresolved_runs()
    written = results.write_tables(runs, tmp_path)
    csv = pd.read_csv(written["students.csv"], keep_default_na=False)
    assert list(csv["last Δ(LS−noLS)"]) == ["+2.00 [-0.48, +4.48]", "-1.00 [-3.48, +1.48]"]
    assert list(csv["unpaired seeds"]) == ["", "a=0: 7"]
    markdown = written["students.md"].read_text()
    assert "| +2.00 [-0.48, +4.48]" in markdown and statistics.CI_RULE in markdown
    latex = written["students.tex"].read_text()
    assert "\\caption{" in latex and "t-interval for $<$ 20 paired seeds" in latex
    diffs = pd.read_csv(written["differences"])
    last = diffs[(diffs["table"] == "students") & (diffs["epoch"] == "last") & (diffs["T"] == 1)]
    assert last[["n_pairs", "mean", "sd", "ci_method"]].values.tolist() == [[3, 2.0, 1.0, "t"]]
    assert last["ci_low"].item() == pytest.approx(2 - T_975_2 / math.sqrt(3), abs=1e-6)
    printed = results.format_tables(runs)
    assert "| resnet8   | 1   | 71.00 ± 1.00 | 73.00 ± 2.00 | +2.00 [-0.48, +4.48] |" in printed
    assert "unpaired seeds: seeds run for one teacher smoothing only" in printed
    assert "Teachers (top-1 %" in printed


# --------------------------------------------------------------------------- verdict


def test_verdict_unresolved_says_so_with_the_seeds_needed():
    text = results.verdict(_unresolved_runs())
    first = text.splitlines()[0]
    assert first == (
        "- **resnet8**: best cell teacher LS a=0.1, T=1 (73.00 % top-1, 3 seeds), ahead of the "
        "runner-up teacher without LS, T=1 (71.00 %) by +2.00 [-0.48, +4.48] (t, 3 pairs). "
        "**Not resolved at 3 seeds**: the 95% CI contains 0; at the observed mean Δ +2.00 and "
        "SD 1.00, 5 paired seeds (2 more) would give 80% power at α = 0.05."
    )
    assert "T=1, a=0.1: +2.00 [-0.48, +4.48] (t, 3 pairs)" in text
    assert "T=4, a=0.1: -1.00 [-3.48, +1.48] (t, 3 pairs)" in text
    assert "noncentral t" in text


def test_verdict_resolved_recommends_the_cell():
    first = results.verdict(_resolved_runs()).splitlines()[0]
    assert first == (
        "- **resnet8**: **recommended: teacher LS a=0.1, T=1** (73.00 % top-1, 3 seeds), ahead "
        "of the runner-up teacher without LS, T=1 (71.00 %) by +2.00 [+1.50, +2.50] * "
        "(t, 3 pairs): resolved, the 95% CI excludes 0."
    )


def test_verdict_with_one_seed_and_without_students():
    runs = pd.DataFrame([_student(0, 0.0, 1.0, 70.0), _student(0, 0.1, 1.0, 71.0)])
    assert "**Not resolved at 1 seed**: one seed gives no estimate" in results.verdict(runs)
    assert results.verdict(pd.DataFrame([_teacher(0, 0.0, 70.0)])).startswith(
        "No finished student runs"
    )


def test_report_starts_with_the_verdict(tmp_path):
    """write_report's verdict comes from the entries' run.json configs."""
    entries = []
    for row_info in [
        (s, a, t, v)
        for s, (x, y) in enumerate([(70.0, 72.0), (71.0, 72.8), (72.0, 74.2)])
        for a, t, v in ((0.0, 1.0, x), (0.1, 1.0, y), (0.0, 4.0, x - 5), (0.1, 4.0, x - 6))
    ]:
        seed, alpha, temperature, top1 = row_info
        config = {
            "kind": "student", "model": "resnet8", "seed": seed, "status": "finished",
            "teacher_label_smoothing": alpha, "temperature": temperature,
            "teacher_run": f"teacher-resnet14-ls{alpha:g}-seed0",
            "last": {"val_top1": top1 / 100}, "monitor": "val_top1",
        }  # fmt: skip
        name = f"s{seed}-a{alpha}-T{temperature}"
        entries.append({"name": name, "config": config, "metrics": {"top1_accuracy": 0.0}})
    from lskd_tf.analysis import write_report

    text = write_report(entries, tmp_path / "report.md", title="study")
    assert text.startswith(
        "# study\n\n## Verdict\n\n- **resnet8**: **recommended: teacher LS a=0.1"
    )
    assert text.index("## Verdict") < text.index("## Numbers")
    assert "+2.00 [+1.50, +2.50] *" in text
    # without recorded accuracies, the analysis' top-1 on the last checkpoint is used
    recorded = verdict_section(entries)
    for entry in entries:
        entry["metrics"]["top1_accuracy"] = entry["config"].pop("last")["val_top1"]
    assert verdict_section(entries) == recorded


def test_run_config_ignores_seeds_and_storage_only():
    base = {
        "kind": "student", "seed": 0, "smoothing": "uniform", "kd_weight": 1.0,
        "teacher_run": "teacher-x-ls0-seed0", "train": {"epochs": 5, "seed": 0, "verbose": 1},
        "data": {"name": "embedded", "data_dir": "/a", "options": [["train_per_class", 4]]},
    }  # fmt: skip
    same = {**base, "seed": 3, "teacher_run": "teacher-x-ls0.1-seed0",
            "train": {"epochs": 5, "seed": 3, "verbose": 0},
            "data": {**base["data"], "data_dir": "/b"}}  # fmt: skip
    assert results.run_config(base) == results.run_config(same)
    longer = {**base, "train": {"epochs": 6, "seed": 0}}
    assert results.run_config(base) != results.run_config(longer)
    assert json.loads(results.run_config(base))["data.options"] == [["train_per_class", 4]]


def test_a_zero_difference_never_prints_minus_zero():
    assert statistics.signed(-1e-9) == "+0.00" and statistics.signed(0.0) == "+0.00"
    assert statistics.signed(-0.02) == "-0.02" and statistics.signed(1.234) == "+1.23"
    # two teachers with the same accuracy up to float noise (0.01 vs 0.01 + 1e-10)
    runs = pd.DataFrame([_teacher(0, 0.0, 1.0 + 1e-8), _teacher(0, 0.1, 1.0)])
    assert results.teacher_table(runs).loc["resnet14", "last Δ(LS−noLS)"] == "+0.00"
    # printed as formatted: tabulate's number parsing made "-0.00" "-0" and "1.00" "1"
    row = next(line for line in results.format_tables(runs).splitlines() if "resnet14" in line)
    assert [cell.strip() for cell in row.split("|")[2:5]] == ["1.00", "1.00", "+0.00"]


def _latex_problems(text: str) -> list[str]:
    """What would break or garble a pdflatex run: a parser for the subset the tables use."""
    problems = [f"non-ASCII {c!r}" for c in sorted(set(text)) if ord(c) > 127]
    depth, dollars, i = 0, 0, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # an escaped character or the first letter of a command
            continue
        if char == "%":
            problems.append(f"comment at {text[i - 20 : i + 20]!r}")
        dollars += char == "$"
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            problems.append(f"unbalanced }} at {i}")
        i += 1
    return problems + (["unbalanced {"] if depth else []) + (["odd $"] if dollars % 2 else [])


def test_latex_tables_escape_percent_and_math(tmp_path):
    import re
    import shutil
    import subprocess

    written = results.write_tables(_unresolved_runs(), tmp_path)
    for name in ("students", "teachers"):
        latex = written[f"{name}.tex"].read_text()
        assert _latex_problems(latex) == [], name
        caption = re.search(r"\\caption\{(.*)\}\n", latex).group(1)
        assert "[95\\% CI]" in caption and caption.endswith("but not in $\\Delta$.")
    latex = written["students.tex"].read_text()
    assert "last $\\Delta$(LS$-$noLS)" in latex and "71.00 $\\pm$ 1.00" in latex
    assert "$-$1.00 [$-$3.48, +1.48]" in latex and "t-interval for $<$ 20" in latex
    assert results.latex_text("a_b & 5% #1 ~{x}") == r"a\_b \& 5\% \#1 \textasciitilde{}\{x\}"
    if shutil.which("pdflatex") is None:
        return  # the parser check above is the one that always runs (CI has no TeX)
    document = tmp_path / "tables.tex"
    document.write_text(
        "\\documentclass{article}\\IfFileExists{booktabs.sty}{\\usepackage{booktabs}}"
        "{\\let\\toprule\\hline\\let\\midrule\\hline\\let\\bottomrule\\hline}"
        "\\begin{document}\n"
        + written["students.tex"].read_text()
        + written["teachers.tex"].read_text()
        + "\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 0
    assert "Missing character" not in (tmp_path / "tables.log").read_text()
