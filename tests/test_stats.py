import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bclviz.stats import mean_interval, paired_difference, verdict


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
