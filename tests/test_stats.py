import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bclviz.readouts import format_tax
from bclviz.stats import NO_INTERVAL, compatibility_tax, mean_interval, paired_difference, tax_from_seeds, verdict


def test_mean_interval_hand_computed():
    # values 1, 2, 3: mean 2, s = 1, t_{0.975, 2} = 4.302652729749462
    mean, half = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302652729749462 / math.sqrt(3), rel=1e-12)


def test_single_value_has_no_interval():
    mean, half = mean_interval([0.7])
    assert mean == 0.7 and math.isnan(half)
    # without an interval there is no verdict (it used to say "no clear difference")
    assert verdict(mean, half) == "no interval (1 seed)"
    assert paired_difference([0.5], [0.7]) == {"mean_diff": pytest.approx(-0.2), "half_width": None,
                                               "verdict": "no interval (1 seed)"}


def test_paired_difference_verdicts():
    ref = [0.60, 0.62, 0.58]
    assert paired_difference([0.70, 0.73, 0.69], ref)["verdict"] == "better"
    assert paired_difference([0.50, 0.51, 0.49], ref)["verdict"] == "worse"
    d = paired_difference([0.61, 0.60, 0.60], ref)
    assert d["verdict"] == "no clear difference" and d["mean_diff"] == pytest.approx(1 / 300)
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([0.1], ref)


def test_errors():
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], confidence=1.5)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=-1, max_value=1), min_size=2, max_size=8))
def test_interval_matches_numpy_and_contains_mean(values):
    mean, half = mean_interval(values)
    assert mean == pytest.approx(np.mean(values), abs=1e-12)
    from scipy.stats import t

    expected = t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    assert half == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert half >= 0


def _seeds(*values, key="mAP@100"):
    return [{"self": {key: v, "R@1": v / 2}, "cross": {key: v / 3}} for v in values]


def test_compatibility_tax_paired_over_seeds():
    ind, proto = [0.80, 0.82, 0.79], [0.70, 0.73, 0.70]
    results = {"k": 100, "headline": "mAP@100", "independent": {"per_seed": _seeds(*ind)},
               "methods": {"proto": {"per_seed": _seeds(*proto)}}}
    tax = compatibility_tax(results)
    want = paired_difference(ind, proto)
    assert tax == {"metric": "mAP@100", "tax": pytest.approx(want["mean_diff"]), "half_width": pytest.approx(want["half_width"]),
                   "verdict": "above zero", "independent": pytest.approx(0.80333333), "aligned": pytest.approx(0.71),
                   "seeds": 3}
    assert tax["tax"] == pytest.approx(0.28 / 3)
    assert format_tax(tax) == f"+0.093 +- {want['half_width']:.3f} (above zero)"
    # proto above independent on every seed: a negative tax
    results["methods"]["proto"]["per_seed"] = _seeds(0.85, 0.86, 0.84)
    assert compatibility_tax(results)["verdict"] == "below zero"
    results["methods"]["proto"]["per_seed"] = _seeds(0.81, 0.80, 0.80)
    assert compatibility_tax(results)["verdict"] == "no clear difference"
    # another metric, and mAP@k when the results name no headline
    assert compatibility_tax(results, metric="R@1")["tax"] == pytest.approx((0.80 - 0.81 + 0.02 - 0.01) / 6)
    del results["headline"]
    assert compatibility_tax(results)["metric"] == "mAP@100"


def test_compatibility_tax_one_seed_and_missing_runs():
    one = {"k": 100, "headline": "mAP@100", "independent": {"per_seed": _seeds(0.8)},
           "methods": {"proto": {"per_seed": _seeds(0.75)}}}
    tax = compatibility_tax(one)
    assert tax["tax"] == pytest.approx(0.05) and tax["half_width"] is None
    assert tax["verdict"] == "no interval (1 seed)" == NO_INTERVAL
    assert format_tax(tax) == "+0.050 (no interval (1 seed))"
    missing = compatibility_tax({**one, "methods": {"ndpp": {"per_seed": _seeds(0.7)}}})
    assert (missing["tax"], missing["half_width"], missing["verdict"]) == (None, None, None)
    assert "proto not run" in missing["reason"]
    assert format_tax(missing).startswith("n/a (proto not run")
    assert "independent and proto not run" in compatibility_tax({"k": 100, "methods": {}})["reason"]
    with pytest.raises(ValueError, match="same seeds"):
        tax_from_seeds(_seeds(0.8, 0.7), _seeds(0.8), "mAP@100")
