"""Train, compare with the model already in place, and save: what `taxi train` and `taxi up` do."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import attrs
import pandas as pd

from taxi_model._artifact import ModelCard, ModelLoadError, file_sha256, load_model, save_model
from taxi_model._data import read_trips
from taxi_model._synth import synthetic_train_test
from taxi_model._training import Split, holdout_rmsle, train_model

log = logging.getLogger(__name__)

SYNTHETIC_TRAINING_ROWS = 50_000


class BetterModelExistsError(RuntimeError):
    """The model in place beats the new one on the new one's held-out trips."""


@attrs.frozen
class SavedModel:
    card: ModelCard
    model_path: Path
    report_path: Path
    replaced_rmsle: float | None  # the old model's RMSLE on the same held-out trips


def train_and_save(
    trips: pd.DataFrame,
    data_description: str,
    model_path: Path,
    *,
    data_sha256: str | None = None,
    force: bool = False,
    on_rounds: Callable[[int], None] | None = None,
    split: Split = "time",
) -> SavedModel:
    """Train on `trips` and write the model, its card and its PNG report beside each other.

    Refuses (BetterModelExistsError) to replace a model that scores a lower RMSLE on the new model's
    held-out trips, unless `force`. A model that cannot be loaded any more is always replaced.
    """
    result = train_model(trips, data_description, data_sha256, on_rounds=on_rounds, split=split)
    new_rmsle = result.card.holdout.rmsle
    old_rmsle = None
    if model_path.exists():
        try:
            old = load_model(model_path)
        except ModelLoadError as exc:
            log.warning("replacing the unusable model in place: %s", exc)
        else:
            if held_out_alike(old.card, result.card):
                old_rmsle = holdout_rmsle(old, result)
            else:
                # The old model may have learnt from the trips the new one holds out: scoring it
                # there would flatter it.
                log.warning(
                    "replacing the model at %s without comparing the two: it held out other "
                    "trips (%s split%s)",
                    model_path,
                    old.card.data.split,
                    f" from {old.card.data.cutoff}" if old.card.data.cutoff else "",
                )
        if old_rmsle is not None and new_rmsle is not None and old_rmsle < new_rmsle and not force:
            raise BetterModelExistsError(
                f"the model at {model_path} is better on the same held-out trips "
                f"(RMSLE {old_rmsle:.4f} against the new {new_rmsle:.4f}); "
                "keeping it. Pass --force to replace it anyway."
            )
    card = save_model(result.pipeline, result.card, model_path)
    # matplotlib loads only here: importing taxi_model (as every service does) stays light.
    from taxi_model._report import write_report  # noqa: PLC0415

    report_path = write_report(result.holdout, card, model_path.with_suffix(".png"))
    return SavedModel(card, model_path, report_path, old_rmsle)


def held_out_alike(old: ModelCard, new: ModelCard) -> bool:
    """Whether two models held out the same trips of the same data, so that one's held-out
    trips are unseen by the other too."""
    fields = ("sha256", "rows", "split", "cutoff")
    return all(getattr(old.data, f) == getattr(new.data, f) for f in fields)


def ensure_model(model_path: Path, data_dir: Path, say: Callable[[str], None] = log.info) -> str:
    """The version of the model at `model_path`, trained first if there is none: on
    `data_dir`/train.csv when present, else on synthetic trips. A model file that exists but
    cannot be loaded is an error (ModelLoadError), never silently replaced."""
    try:
        return load_model(model_path).version
    except ModelLoadError:
        if model_path.exists():
            raise
    train_csv = data_dir / "train.csv"
    if train_csv.is_file():
        say(f"no model yet: training on {train_csv}")
        trips, description = read_trips(train_csv).frame, str(train_csv)
        data_sha256: str | None = file_sha256(train_csv)
    else:
        say(f"no model and no {train_csv}: training on {SYNTHETIC_TRAINING_ROWS:,} synthetic trips")
        trips, _ = synthetic_train_test(SYNTHETIC_TRAINING_ROWS, seed=1, test_rows=0)
        description = f"synthetic rows={SYNTHETIC_TRAINING_ROWS} seed=1"
        data_sha256 = None
    # The hash tells a replay of the same file which of its trips the model learnt from.
    saved = train_and_save(trips, description, model_path, data_sha256=data_sha256)
    say(f"model {saved.card.version}: held-out RMSLE {saved.card.holdout.rmsle:.3f}")
    return saved.card.version
