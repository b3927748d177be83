import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_model import quality_metrics
from taxi_stream import BUCKETS_PER_DECADE, QualityAccumulator

seconds = st.one_of(st.just(0.0), st.floats(min_value=1.0, max_value=1e6))
trips = st.lists(st.tuples(seconds, seconds), max_size=120)
# Half a bucket either way of the geometric midpoint.
BUCKET_TOLERANCE = 10 ** (1 / BUCKETS_PER_DECADE) - 1


def accumulate(pairs: list[tuple[float, float]]) -> QualityAccumulator:
    acc = QualityAccumulator()
    if pairs:
        actual, predicted = zip(*pairs, strict=True)
        acc.add(actual, predicted)
    return acc


def assert_same(a: QualityAccumulator, b: QualityAccumulator) -> None:
    assert (a.count, a.within_30, a.ape_histogram) == (b.count, b.within_30, b.ape_histogram)
    assert a.sum_squared_log_error == pytest.approx(b.sum_squared_log_error, rel=1e-12, abs=1e-9)
    assert a.sum_absolute_error == pytest.approx(b.sum_absolute_error, rel=1e-12, abs=1e-9)


@given(trips, st.data())
def test_incremental_equals_batch_in_any_order_and_split(pairs, data):
    batch = accumulate(pairs)
    shuffled = data.draw(st.permutations(pairs))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(pairs)), max_size=5)))
    pieces = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(pairs)], strict=True)]

    one_by_one = QualityAccumulator()
    for actual, predicted in shuffled:
        one_by_one.add([actual], [predicted])
    merged = QualityAccumulator()
    for piece in pieces:
        merged.merge(accumulate(piece))

    assert_same(one_by_one, batch)
    assert_same(merged, batch)


@given(trips)
def test_agrees_with_the_offline_metrics(pairs):
    acc = accumulate(pairs).metrics()
    exact = quality_metrics(*(zip(*pairs, strict=True) if pairs else ([], [])))
    assert acc.count == exact.count
    if exact.count == 0:
        assert acc == exact
        return
    assert acc.rmsle == pytest.approx(exact.rmsle, rel=1e-9, abs=1e-12)
    assert acc.mae == pytest.approx(exact.mae, rel=1e-9, abs=1e-9)
    assert acc.within_30 == exact.within_30
    if exact.median_ape is not None:
        actual, predicted = map(np.array, zip(*pairs, strict=True))
        positive = actual > 0
        ape = np.sort(np.abs(predicted - actual)[positive] / actual[positive])
        lower_median = ape[(len(ape) + 1) // 2 - 1]
        assert acc.median_ape == pytest.approx(lower_median, rel=BUCKET_TOLERANCE, abs=1e-12)


@given(trips)
def test_state_survives_json(pairs):
    acc = accumulate(pairs)
    restored = QualityAccumulator.from_json(json.loads(json.dumps(acc.to_json())))
    assert restored == acc


def test_exact_predictions_have_zero_error():
    acc = accumulate([(600.0, 600.0), (60.0, 60.0), (100.0, 300.0)])
    m = acc.metrics()
    assert m.median_ape == 0.0
    assert m.within_30 == pytest.approx(2 / 3)
