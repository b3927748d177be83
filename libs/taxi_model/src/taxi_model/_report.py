"""The PNG training report: predicted against actual, and error by hour of day."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from taxi_model._artifact import ModelCard


def write_report(holdout: pd.DataFrame, card: ModelCard, path: Path) -> Path:
    """Plot held-out trips (`trip_duration`, `predicted_duration`, `pickup_datetime`) to a PNG."""
    actual = holdout["trip_duration"].to_numpy(np.float64)
    predicted = holdout["predicted_duration"].to_numpy(np.float64)
    log_error = np.log1p(predicted) - np.log1p(actual)
    ape = np.abs(predicted - actual) / np.maximum(actual, 1.0)
    hours = pd.to_datetime(holdout["pickup_datetime"]).dt.hour.to_numpy()
    by_hour = pd.DataFrame({"hour": hours, "sq": log_error**2, "ape": ape}).groupby("hour")
    rmsle_by_hour = np.sqrt(by_hour["sq"].mean())
    mdape_by_hour = by_hour["ape"].median()

    fig, (scatter, bars) = plt.subplots(1, 2, figsize=(13, 5.5))
    scatter.hexbin(
        np.log10(np.maximum(actual, 1)),
        np.log10(np.maximum(predicted, 1)),
        gridsize=60,
        bins="log",
        cmap="viridis",
        mincnt=1,
    )
    scatter.plot([0, 6], [0, 6], color="tomato", linewidth=1, label="perfect")
    scatter.set(
        xlim=(0, 6),
        ylim=(0, 6),
        xlabel="actual duration, log10 seconds",
        ylabel="predicted duration, log10 seconds",
        title="Predicted against actual (held-out trips)",
    )
    scatter.legend(loc="upper left")

    bars.bar(rmsle_by_hour.index, rmsle_by_hour.to_numpy(), color="steelblue", label="RMSLE")
    bars.plot(
        mdape_by_hour.index,
        mdape_by_hour.to_numpy(),
        "o-",
        color="darkorange",
        label="median abs % error",
    )
    bars.set(xlabel="pickup hour", ylabel="error", title="Error by hour of day", xticks=range(24))
    bars.legend(loc="upper right")

    m = card.holdout
    fig.suptitle(
        f"model {card.version or '(unsaved)'}: RMSLE {m.rmsle:.3f}, MAE {m.mae:.0f} s, "
        f"median APE {m.median_ape:.1%}, within ±30% {m.within_30:.1%} on {m.count:,} trips"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
