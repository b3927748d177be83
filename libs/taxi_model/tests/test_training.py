import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_model._data import read_trips
from taxi_model._metrics import quality_metrics
from taxi_model._training import holdout_split, train_model


@given(st.integers(min_value=5, max_value=5000), st.integers(min_value=0, max_value=2**32 - 1))
def test_holdout_split_is_a_fixed_partition(rows, seed):
    train, holdout = holdout_split(rows, seed)
    assert len(holdout) == round(rows * 0.2)
    assert sorted(np.concatenate([train, holdout]).tolist()) == list(range(rows))
    again_train, again_holdout = holdout_split(rows, seed)
    assert (train == again_train).all()
    assert (holdout == again_holdout).all()


def test_unlabelled_trips_cannot_train(synthetic_trips):
    with pytest.raises(ValueError, match="labelled"):
        train_model(synthetic_trips.drop(columns=["trip_duration"]), "no labels")


@pytest.mark.slow
def test_quality_bar_on_real_kaggle_rows(real_sample_path):
    """Fixed 80/20 split of the real sample: RMSLE <= 0.42 (the constant median scores 0.795)."""
    trips = read_trips(real_sample_path).frame
    result = train_model(trips, str(real_sample_path))
    holdout = result.holdout
    assert result.card.holdout.count == len(holdout) == round(len(trips) * 0.2)
    assert result.card.holdout.rmsle <= 0.42

    typical = holdout[holdout["trip_duration"].between(60, 3 * 3600)]
    typical_quality = quality_metrics(typical["trip_duration"], typical["predicted_duration"])
    assert typical_quality.median_ape <= 0.25

    constant = pd.Series(holdout["trip_duration"].median(), index=holdout.index)
    assert quality_metrics(holdout["trip_duration"], constant).rmsle > 0.75
