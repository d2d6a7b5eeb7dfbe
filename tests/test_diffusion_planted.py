"""The diffusion measures on planted diffusion: which ones see it, and only it.

Two sibling classes (A, B: one superclass) move toward their midpoint by a known fraction
t while an unrelated class C stays put: Chandrasegaran et al.'s systematic diffusion,
built by hand. Two changes that are not diffusion must leave a diffusion measure flat:
every feature scaled alike (a sharper or softer model) and C moved away. Logits are the
features times fixed templates (the classes' original centroids), as a classifier
trained before the diffusion would give. Numbers quoted in `lskd_tf.analysis.diffusion`
come from this setup.
"""

from __future__ import annotations

import numpy as np
import pytest

from lskd_tf import analysis
from lskd_tf.tasks.translation.analysis import token_measures

DIM, PER_CLASS = 16, 200
SUPERCLASS = np.array([0, 0, 1])  # A and B are siblings, C is not
PLANTED = (0.0, 0.2, 0.4, 0.6)


def planted(t: float = 0.0, scale: float = 1.0, c_away: float = 0.0):
    """Features (N, 16), labels, logits of A, B, C after diffusion t (0 = none)."""
    centroids = 3.0 * np.eye(DIM)[:3]
    midpoint = centroids[:2].mean(axis=0)
    moved = centroids.copy()
    moved[:2] = (1 - t) * centroids[:2] + t * midpoint
    moved[2] *= 1 + c_away
    noise = np.random.default_rng(0).normal(size=(3, PER_CLASS, DIM))
    features = scale * (moved[:, None, :] + noise).reshape(-1, DIM)
    labels = np.repeat(np.arange(3), PER_CLASS)
    return features, labels, features @ centroids.T


def measures(features, labels, logits) -> dict:
    found = analysis.diffusion_measures(
        analysis.softmax(logits), features, labels, SUPERCLASS, logits=logits
    )
    return {**found, **analysis.sibling_confusion(logits, labels, SUPERCLASS)}


def _strictly(values, direction: int) -> bool:
    return all(direction * (b - a) > 0 for a, b in zip(values, values[1:]))


RISE, FALL = 1, -1
HEADLINE = {  # measure -> its direction under diffusion
    "same_superclass_separation": FALL,
    "same_superclass_overlap": RISE,
    "sibling_margin_dprime": FALL,
    "sibling_confusion": RISE,
}


def test_headline_measures_follow_the_planted_amount_and_nothing_else():
    series = [measures(*planted(t)) for t in PLANTED]
    for name, direction in HEADLINE.items():
        assert _strictly([m[name] for m in series], direction), name
    base = series[0]
    for change in (dict(scale=0.5), dict(scale=2.0), dict(c_away=1.0)):
        other = measures(*planted(**change))
        for name in HEADLINE:
            assert other[name] == pytest.approx(base[name], rel=1e-9), (name, change)
    # the paper's direction: siblings approach while the unrelated class stays apart
    last = series[-1]
    assert last["same_superclass_overlap"] > 4 * base["same_superclass_overlap"]
    assert last["other_separation"] > 0.85 * base["other_separation"]
    assert last["same_superclass_separation"] == pytest.approx(1.807, abs=0.01)


def test_the_confounded_measures_fail_where_their_docstring_says():
    """separation_ratio also falls when C moves away; semantic_mass_ratio also rises with
    sharper logits. Both still follow the planted amount."""
    series = [measures(*planted(t)) for t in PLANTED]
    assert _strictly([m["separation_ratio"] for m in series], FALL)
    assert _strictly([m["semantic_mass_ratio"] for m in series], RISE)
    base = series[0]
    assert measures(*planted(c_away=1.0))["separation_ratio"] < 0.7 * base["separation_ratio"]
    by_scale = [measures(*planted(0.4, scale=s))["semantic_mass_ratio"] for s in (0.5, 1, 2)]
    assert _strictly(by_scale, RISE) and by_scale[-1] - by_scale[0] > 0.05
    assert measures(*planted(c_away=1.0))["semantic_mass_ratio"] == pytest.approx(
        base["semantic_mass_ratio"], rel=1e-9
    )


def test_translation_near_synonym_measures_on_planted_tokens():
    """Tokens 0 and 1 are near-synonyms (one family), token 2 is unrelated; the other
    vocabulary entries are in no family. The token analysis sees the planted diffusion."""
    vocab = 8
    families = np.array([0, 0, -1, -1, -1, -1, -1, -1])

    def tokens(t, scale=1.0, c_away=0.0):
        _, labels, logits = planted(t, scale, c_away)
        padded = np.concatenate([logits, np.full((logits.shape[0], vocab - 3), -5.0)], axis=1)
        return {"logits": padded.astype(np.float32), "labels": labels}

    series = [token_measures(tokens(t), token_families=families) for t in PLANTED]
    assert _strictly([m["sibling_margin_dprime"] for m in series], FALL)
    assert _strictly([m["semantic_mass_ratio"] for m in series], RISE)
    base = series[0]["sibling_margin_dprime"]
    for change in (dict(scale=2.0), dict(c_away=1.0)):
        moved = token_measures(tokens(0.0, **change), token_families=families)
        assert moved["sibling_margin_dprime"] == pytest.approx(base, rel=1e-5)


def test_sibling_confusion_by_hand():
    # classes 0, 1, 2 form one superclass, 3 is alone
    logits = np.array([
        [5.0, 1, 0, 0],  # y=0 -> 0: right, inside
        [1.0, 5, 0, 0],  # y=0 -> 1: a sibling
        [0.0, 0, 5, 0],  # y=1 -> 2: a sibling
        [0.0, 0, 0, 5],  # y=2 -> 3: outside the superclass, not counted
        [0.0, 0, 0, 5],  # y=3: no siblings, not counted
    ])  # fmt: skip
    found = analysis.sibling_confusion(logits, np.array([0, 0, 1, 2, 3]), np.array([0, 0, 0, 1]))
    assert found["sibling_confusion"] == pytest.approx(2 / 3)
    assert found["sibling_chance"] == pytest.approx(2 / 3)  # 2 of 3 classes are siblings
    assert found["superclass_accuracy"] == pytest.approx(4 / 5)
