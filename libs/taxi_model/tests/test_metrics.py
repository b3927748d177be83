import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import mean_absolute_error, mean_squared_log_error

from taxi_model._metrics import quality_metrics

# Trip durations: zero, or at least a millisecond, up to about 11 days.
seconds = st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1e6))
durations = st.lists(
    st.tuples(seconds, seconds),
    min_size=1,
    max_size=200,
)


@given(durations)
def test_metrics_agree_with_scikit_learn(pairs):
    actual, predicted = map(np.array, zip(*pairs, strict=True))
    m = quality_metrics(actual, predicted)
    assert m.count == len(pairs)
    assert m.rmsle == pytest.approx(math.sqrt(mean_squared_log_error(actual, predicted)), abs=1e-9)
    assert m.mae == pytest.approx(mean_absolute_error(actual, predicted), rel=1e-9, abs=1e-9)


@given(durations)
def test_shares_are_shares(pairs):
    m = quality_metrics(*map(np.array, zip(*pairs, strict=True)))
    if m.within_30 is not None:
        assert 0.0 <= m.within_30 <= 1.0
        assert m.median_ape is not None
        assert m.median_ape >= 0.0


def test_perfect_predictions_score_zero():
    y = np.array([60.0, 600.0, 3600.0])
    m = quality_metrics(y, y)
    assert (m.rmsle, m.mae, m.median_ape, m.within_30) == (0.0, 0.0, 0.0, 1.0)


def test_known_values():
    m = quality_metrics([100.0, 200.0, 400.0, 1000.0], [120.0, 100.0, 400.0, 1500.0])
    # absolute percentage errors: 0.2, 0.5, 0.0, 0.5
    assert m.median_ape == pytest.approx(0.35)
    assert m.within_30 == pytest.approx(0.5)
    assert m.mae == pytest.approx((20 + 100 + 0 + 500) / 4)


def test_empty_input_has_no_values():
    m = quality_metrics([], [])
    assert m.count == 0
    assert m.rmsle is m.mae is m.median_ape is m.within_30 is None


def test_zero_actual_durations_are_left_out_of_percentages():
    m = quality_metrics([0.0, 100.0], [10.0, 100.0])
    assert m.median_ape == 0.0
    assert m.within_30 == 1.0


@pytest.mark.parametrize(("actual", "predicted"), [([1.0], [1.0, 2.0]), ([-1.0], [1.0])])
def test_bad_input_is_refused(actual, predicted):
    with pytest.raises(ValueError, match=r"shape|negative"):
        quality_metrics(actual, predicted)
