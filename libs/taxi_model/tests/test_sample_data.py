"""TAXI_SAMPLE_DATA: the one place the tests and the benchmarks learn where the real sample is."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxi_model import SAMPLE_DATA_DEFAULT, SAMPLE_DATA_VARIABLE, sample_data_path


def test_default_is_the_shared_folder_beside_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv(SAMPLE_DATA_VARIABLE, raising=False)
    repo = tmp_path / "main"
    repo.mkdir()
    folder = tmp_path / "shared" / "data" / "nyc-taxi"
    folder.mkdir(parents=True)
    assert SAMPLE_DATA_DEFAULT == "../shared/data/nyc-taxi/"
    found = sample_data_path(repo)
    assert found.resolve() == (folder / "train-sample0.05.csv.gz").resolve()


@pytest.mark.parametrize("relative", [False, True])
def test_the_variable_may_name_the_file(monkeypatch, tmp_path, relative):
    sample = tmp_path / "elsewhere.csv.gz"
    monkeypatch.setenv(SAMPLE_DATA_VARIABLE, "../elsewhere.csv.gz" if relative else str(sample))
    assert sample_data_path(tmp_path / "repo").resolve() == sample.resolve()


def test_a_missing_path_is_returned_as_it_is(monkeypatch, tmp_path):
    monkeypatch.setenv(SAMPLE_DATA_VARIABLE, str(tmp_path / "nonexistent"))
    assert sample_data_path(Path("/repo")) == tmp_path / "nonexistent"
