"""tools/findings_diffusion.py on a hand-made study: students paired by (teacher seed,
student seed), per-teacher-seed and hierarchical intervals, teachers' sibling measures."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "findings_diffusion", ROOT / "tools" / "findings_diffusion.py"
)
findings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(findings)

MEASURES = findings.MEASURES


def _write(study: Path, name: str, info: dict, metrics: dict) -> None:
    (study / name).mkdir(parents=True)
    (study / name / "run.json").write_text(json.dumps({"name": name, **info}))
    (study / "analysis" / name).mkdir(parents=True)
    (study / "analysis" / name / "analysis.json").write_text(json.dumps(metrics))


def _top1(a, t, ts, seed):
    # LS costs 1 point per unit of T, teacher seed 1 adds 0.5 to that cost, seeds add noise
    return 50.0 - (a > 0) * (t + 0.5 * ts) + 0.1 * seed * (1 + ts)


@pytest.fixture
def study(tmp_path):
    for ts in (0, 1):
        for a in (0.0, 0.1):
            teacher = f"teacher-r20-ls{a:g}-seed{ts}"
            _write(tmp_path, teacher,
                   {"status": "finished", "spec": {"kind": "teacher", "label_smoothing": a,
                                                   "seed": ts}},
                   {"top1_accuracy": 0.7 + ts / 100, "sibling_confusion": 0.2,
                    "sibling_chance": 0.8})  # fmt: skip
            for t in (1.0, 4.0):
                for seed in range(3):
                    name = f"student-r8-T{t:g}-seed{seed}-from-{teacher}"
                    spec = {"kind": "student", "teacher_label_smoothing": a, "temperature": t,
                            "seed": seed, "teacher_run": teacher}  # fmt: skip
                    top1 = _top1(a, t, ts, seed)
                    metrics = {m: top1 / 10 for m in MEASURES}
                    _write(tmp_path, name,
                           {"status": "finished", "spec": spec,
                            "last": {"val_top1": top1 / 100}}, metrics)  # fmt: skip
    return tmp_path


def test_pairs_by_teacher_seed_and_student_seed(study, tmp_path_factory):
    rows = findings.load_students(study)
    assert len(rows) == 24 and {r["teacher_seed"] for r in rows} == {0, 1}
    by_t = findings.ls_effect_by_temperature(rows, ["score", MEASURES[0]])
    for t in (1.0, 4.0):
        top1 = by_t[f"{t:g}"]["score"]
        differences = [-(t + 0.5 * ts) for ts in (0, 1) for _ in range(3)]
        low, high = stats.t.interval(
            0.95, 5, loc=np.mean(differences), scale=stats.sem(differences)
        )
        assert top1["paired"]["n"] == 6
        assert top1["paired"]["mean"] == pytest.approx(-(t + 0.25))
        assert (top1["paired"]["low"], top1["paired"]["high"]) == pytest.approx((low, high))
        # within a teacher seed every pair differs alike: the interval has no width
        assert top1["by_teacher_seed"]["1"]["mean"] == pytest.approx(-(t + 0.5))
        assert top1["by_teacher_seed"]["0"]["high"] == pytest.approx(-t)
        # hierarchical: two teacher-seed means, -t and -(t + 0.5): t-interval with 1 df
        hier = top1["hierarchical"]
        assert hier["n"] == 2 and hier["mean"] == pytest.approx(-(t + 0.25))
        assert hier["high"] - hier["low"] == pytest.approx(
            2 * stats.t.ppf(0.975, 1) * 0.5 / np.sqrt(2) / np.sqrt(2)
        )
        assert by_t[f"{t:g}"][MEASURES[0]]["paired"]["mean"] == pytest.approx(-(t + 0.25) / 10)
    out = tmp_path_factory.mktemp("out")
    findings.main([str(study), str(out), "--resamples=200"])
    text = (out / "findings_diffusion.md").read_text()
    assert "hierarchical" in text and "teacher-r20-ls0.1-seed1" in text
    teachers = json.loads((out / "findings_diffusion.json").read_text())["teachers"]
    assert {(t["a"], t["seed"]) for t in teachers} == {(0.0, 0), (0.1, 0), (0.0, 1), (0.1, 1)}
    assert (out / "diffusion_vs_T.png").stat().st_size > 0


def test_the_score_column_reads_validation_or_test_metrics():
    """top-1 is recorded on the validation split, a translation's BLEU on the test split
    after training; a metric the run never recorded is one line naming what it has."""
    info = {"name": "r", "last": {"val_top1": 0.5, "test_bleu_tokenized": 0.271}}
    assert findings._last(info, "top1") == 0.5
    assert findings._last(info, "bleu_tokenized") == 0.271
    with pytest.raises(SystemExit, match="recorded no 'bleu'.*val_top1, test_bleu_tokenized"):
        findings._last(info, "bleu")
