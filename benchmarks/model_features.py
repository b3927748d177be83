"""Candidate trip features against today's: held-out RMSLE and cost per trip (issue 22).

The features that public Kaggle solutions found useful and that are known at pickup, each added
to today's feature set (`trip_features`) and trained in today's model shape (the estimator's
defaults, early stopping deciding the rounds) on the time split `taxi train` uses:

- `pca`: the pickup and dropoff coordinates rotated by a PCA fitted on the training fold's
  coordinates (pickups and dropoffs inside the NYC box), and the rotated displacement.
- `clusters_k<k>`: MiniBatchKMeans cluster ids of pickup and dropoff (fitted on the training
  fold's points, in km on the street grid) and per-(pickup cluster, dropoff cluster) priors from
  the training fold's trips: the mean log speed and the mean log duration, each shrunk toward
  its global mean with SHRINK_TRIPS pseudo-trips, (sum + m * global) / (n + m), and the pair's
  trip count. The training rows get priors computed out of fold (OOF_FOLDS folds), so the
  trees do not learn from priors that contain the row's own duration; held-out trips get the
  priors of the whole training fold.
- `recent_<cells>`: trips started in the pickup's cell in the previous 10, 30 and 60 minutes
  and in the whole city in the previous 60, counted from the trips that started strictly before
  (the stream knows no other), in time order over both folds. Cells are 1 km squares of the
  street grid (`grid`) or the pickup's KMeans cluster (`clusters`).
- combinations of these.

Each model is timed like benchmarks/model_frontier.py: the trees on a 10,000-trip batch on the
predictor's one model thread, and apart from them the added features' own cost on that batch.

    uv run python benchmarks/model_features.py [--data PATH] [--out FILE] [--rows N]

Prints a progress log on stderr, then one JSON object (also written to --out): a row per
variant, the best against the baseline, and whether issue 22's goal is met (held-out RMSLE at
least GOAL_GAIN better, at no more µs a trip than today's model).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from json_report import add_out_option, emit
from sample_data import add_data_option, sample_trips
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits
from timing import per_trip_us

from taxi_model import (
    INPUT_COLUMNS,
    LogDurationRegressor,
    quality_metrics,
    time_split,
    trip_features,
)
from taxi_services.predictor import MODEL_THREADS
from taxi_services.provenance import provenance

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

BATCH = 10_000
SAMPLE_ROWS = 73_177  # the real sample's rows: the synthetic stand-in has as many
SEED = 2016  # train_model's random_state (the split seed), so the baseline is `taxi train`'s
SEED_SPREAD = (1, 2)  # more early-stopping seeds for the baseline and the best variant
KS = (20, 50, 100)
SHRINK_TRIPS = 20.0  # pseudo-trips of the global mean in each cluster pair's prior
OOF_FOLDS = 5
WINDOWS_MIN = (10, 30, 60)
CITY_WINDOW_MIN = 60
CELL_KM = 1.0
GOAL_GAIN = 0.005  # issue 22: at least this much better held-out RMSLE
# Trips that say something about the speed of their route: no cancelled trips, no meters left
# running, no trips that hardly moved (their speed is noise).
MIN_S, MAX_S, MIN_KM = 60, 6 * 3600, 0.2

_began = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _began:7.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Rows:
    """Trips as the added features see them: today's features, pickup time in seconds, and for
    training rows the out-of-fold fold of each (None: use priors from the whole training fold)."""

    base: pd.DataFrame
    pickup_s: IntArray
    fold: IntArray | None = None

    @classmethod
    def of(cls, trips: pd.DataFrame, fold: IntArray | None = None) -> Rows:
        pickup = trips["pickup_datetime"].to_numpy(dtype="datetime64[s]").astype(np.int64)
        return cls(trip_features(trips), pickup, fold)

    def take(self, idx: IntArray, fold: IntArray | None = None) -> Rows:
        return Rows(self.base.iloc[idx], self.pickup_s[idx], fold)


Columns = dict[str, FloatArray]
Cache = dict[str, IntArray]


def points(base: pd.DataFrame, end: str) -> FloatArray:
    """(x, y) on the street grid in km, for k-means (Euclidean distance means km)."""
    return base[[f"{end}_grid_x", f"{end}_grid_y"]].to_numpy(np.float64)


def inside_nyc(trips: pd.DataFrame, end: str) -> npt.NDArray[np.bool_]:
    flagged: npt.NDArray[np.bool_] = trips[f"flag_{end}_outside_nyc"].to_numpy(bool)
    return ~flagged


class Block:
    """A group of added features: fitted on the training fold, then a pure function of Rows."""

    name = ""

    def transform(self, rows: Rows, cache: Cache) -> Columns:
        raise NotImplementedError


class PcaBlock(Block):
    name = "pca"

    def __init__(self, train: pd.DataFrame, rows: Rows) -> None:
        lat_lon = [
            rows.base[[f"{end}_latitude", f"{end}_longitude"]].to_numpy()[inside_nyc(train, end)]
            for end in ("pickup", "dropoff")
        ]
        self.pca = PCA(n_components=2).fit(np.vstack(lat_lon))

    def transform(self, rows: Rows, cache: Cache) -> Columns:
        p = self.pca.transform(rows.base[["pickup_latitude", "pickup_longitude"]].to_numpy())
        d = self.pca.transform(rows.base[["dropoff_latitude", "dropoff_longitude"]].to_numpy())
        dx, dy = d[:, 0] - p[:, 0], d[:, 1] - p[:, 1]
        return {
            "pickup_pca0": p[:, 0],
            "pickup_pca1": p[:, 1],
            "dropoff_pca0": d[:, 0],
            "dropoff_pca1": d[:, 1],
            "pca_d0": dx,
            "pca_d1": dy,
            "pca_manhattan": np.abs(dx) + np.abs(dy),
        }


def shrunk_means(
    pair: IntArray, values: FloatArray, pairs: int, prior: float
) -> tuple[FloatArray, FloatArray]:
    """Per pair: (sum + m * prior) / (n + m) with m = SHRINK_TRIPS, and n."""
    n = np.bincount(pair, minlength=pairs).astype(np.float64)
    sums = np.bincount(pair, weights=values, minlength=pairs)
    return (sums + SHRINK_TRIPS * prior) / (n + SHRINK_TRIPS), n


@dataclass
class PriorTables:
    log_speed: FloatArray
    log_duration: FloatArray
    trips: FloatArray


class ClusterBlock(Block):
    def __init__(
        self, k: int, train: pd.DataFrame, rows: Rows, duration_s: FloatArray, folds: IntArray
    ) -> None:
        self.k = k
        self.name = f"clusters_k{k}"
        fit_points = np.vstack(
            [points(rows.base, end)[inside_nyc(train, end)] for end in ("pickup", "dropoff")]
        )
        self.kmeans = MiniBatchKMeans(
            n_clusters=k, batch_size=10_000, n_init=3, random_state=0
        ).fit(fit_points)
        pair = self.pairs(rows, {})
        km = rows.base["haversine_km"].to_numpy(np.float64)
        timed = (duration_s >= MIN_S) & (duration_s <= MAX_S)
        moving = timed & (km >= MIN_KM)
        log_speed = np.log(np.where(moving, km, 1.0) / (duration_s / 3600.0))
        log_duration = np.log1p(duration_s)
        self.global_log_speed = float(log_speed[moving].mean())
        self.global_log_duration = float(log_duration[timed].mean())

        def tables(use: npt.NDArray[np.bool_]) -> PriorTables:
            speed, _ = shrunk_means(
                pair[use & moving], log_speed[use & moving], k * k, self.global_log_speed
            )
            duration, _ = shrunk_means(
                pair[use & timed], log_duration[use & timed], k * k, self.global_log_duration
            )
            trips = np.bincount(pair, minlength=k * k).astype(np.float64)  # labels not needed
            return PriorTables(speed, duration, trips)

        self.full = tables(np.ones(len(pair), bool))
        self.out_of_fold = [tables(folds != f) for f in range(OOF_FOLDS)]

    def pickups(self, rows: Rows, cache: Cache) -> IntArray:
        """The pickups' clusters, kept in `cache` for the recent-trip counts."""
        key = f"pickup_cluster_k{self.k}"
        if key not in cache:
            cache[key] = self.kmeans.predict(points(rows.base, "pickup")).astype(np.int64)
        return cache[key]

    def pairs(self, rows: Rows, cache: Cache) -> IntArray:
        # sklearn is untyped: its labels are Any until named
        dropoff: IntArray = self.kmeans.predict(points(rows.base, "dropoff")).astype(np.int64)
        return self.pickups(rows, cache) * self.k + dropoff

    def transform(self, rows: Rows, cache: Cache) -> Columns:
        pair = self.pairs(rows, cache)
        if rows.fold is None:
            speed = self.full.log_speed[pair]
            duration = self.full.log_duration[pair]
        else:
            speed, duration = np.empty(len(pair)), np.empty(len(pair))
            for f, table in enumerate(self.out_of_fold):
                mine = rows.fold == f
                speed[mine] = table.log_speed[pair[mine]]
                duration[mine] = table.log_duration[pair[mine]]
        km = rows.base["haversine_km"].to_numpy(np.float64)
        return {
            "pickup_cluster": (pair // self.k).astype(np.float64),
            "dropoff_cluster": (pair % self.k).astype(np.float64),
            "pair_log_speed": speed,
            "pair_log_duration": duration,
            "pair_trips": np.log1p(self.full.trips[pair]),
            # the duration the pair's speed prior gives this trip's distance
            "pair_speed_log_duration": np.log1p(km / np.exp(speed) * 3600.0),
        }


def grid_cells(base: pd.DataFrame) -> IntArray:
    """1 km squares of the street grid, numbered; points beyond 200 km share the edge cells."""
    x = np.clip(np.floor(base["pickup_grid_x"].to_numpy() / CELL_KM), -200, 200).astype(np.int64)
    y = np.clip(np.floor(base["pickup_grid_y"].to_numpy() / CELL_KM), -200, 200).astype(np.int64)
    return (x + 200) * 401 + (y + 200)


CELL_STRIDE = np.int64(2**34)  # > any pickup time in seconds since 1970 until 2514


def earlier_in_window(
    history: IntArray, cells: IntArray, times: IntArray, window_s: int
) -> FloatArray:
    """For each (cell, time): how many keys of the sorted `history` (cell * CELL_STRIDE +
    pickup second) are in the same cell and in [time - window_s, time): trips started strictly
    before, within the window."""
    at = cells * CELL_STRIDE + times
    counts = np.searchsorted(history, at, "left") - np.searchsorted(history, at - window_s, "left")
    return counts.astype(np.float64)


class RecentBlock(Block):
    def __init__(self, cells: str, history: Rows, clusters: ClusterBlock | None) -> None:
        self.name = f"recent_{cells}"
        self.clusters = clusters
        self.cell_history = np.sort(self.cells(history, {}) * CELL_STRIDE + history.pickup_s)
        self.city_history = np.sort(history.pickup_s)

    def cells(self, rows: Rows, cache: Cache) -> IntArray:
        if self.clusters is None:
            return grid_cells(rows.base)
        # predicted once only when the clusters' own features are in the variant too
        return self.clusters.pickups(rows, cache)

    def transform(self, rows: Rows, cache: Cache) -> Columns:
        cells = self.cells(rows, cache)
        columns = {
            f"recent_cell_{m}min": earlier_in_window(
                self.cell_history, cells, rows.pickup_s, m * 60
            )
            for m in WINDOWS_MIN
        }
        city = np.zeros(len(cells), np.int64)
        columns[f"recent_city_{CITY_WINDOW_MIN}min"] = earlier_in_window(
            self.city_history, city, rows.pickup_s, CITY_WINDOW_MIN * 60
        )
        return columns


def with_blocks(blocks: Sequence[Block], rows: Rows) -> pd.DataFrame:
    """Today's features and the blocks' added ones, in a fixed column order."""
    cache: Cache = {}
    added: Columns = {}
    for block in blocks:
        added |= block.transform(rows, cache)
    return pd.concat([rows.base, pd.DataFrame(added, index=rows.base.index)], axis=1)


def added_only(blocks: Sequence[Block], rows: Rows) -> None:
    cache: Cache = {}
    for block in blocks:
        block.transform(rows, cache)


@dataclass
class Experiment:
    trips: pd.DataFrame  # labelled trips, index 0..n-1
    rows: Rows
    duration_s: FloatArray
    train_idx: IntArray
    holdout_idx: IntArray
    folds: IntArray  # out-of-fold fold of each training row
    batch: Rows
    shape: dict[str, Any]
    train_threads: int
    results: list[dict[str, Any]] = field(default_factory=list)
    # The baseline's trees on the batch, timed again beside each variant: on a shared machine
    # the speed drifts over a run, and the ratio of two timings taken together drifts less.
    baseline_trees: Callable[[], object] | None = None

    def run(
        self, name: str, blocks: Sequence[Block], seed: int = SEED, **shape: Any
    ) -> dict[str, Any]:
        params = {**self.shape, **shape}
        train = self.rows.take(self.train_idx, self.folds)
        holdout = self.rows.take(self.holdout_idx)
        x_train, x_holdout = with_blocks(blocks, train), with_blocks(blocks, holdout)
        started = time.perf_counter()
        with threadpool_limits(self.train_threads):
            regressor = LogDurationRegressor(**{**params, "random_state": seed}).fit(
                x_train, self.duration_s[self.train_idx]
            )
        training_s = time.perf_counter() - started
        predicted = regressor.predict(x_holdout)
        rmsle = quality_metrics(self.duration_s[self.holdout_idx], predicted).rmsle or 0.0
        with threadpool_limits(MODEL_THREADS):
            engineered = with_blocks(blocks, self.batch)
            trees_us = per_trip_us(lambda: regressor.predict(engineered), BATCH)
            features_us = per_trip_us(lambda: added_only(blocks, self.batch), BATCH)
            if self.baseline_trees is None and not blocks and not shape and seed == SEED:
                self.baseline_trees = lambda: regressor.predict(engineered)
            alongside = per_trip_us(self.baseline_trees, BATCH) if self.baseline_trees else None
        row = {
            "variant": name,
            "blocks": [b.name for b in blocks],
            "learning_rate": params["learning_rate"],
            "max_leaf_nodes": params["max_leaf_nodes"],
            "seed": seed,
            "features": x_train.shape[1],
            "rounds": int(regressor.booster_.n_iter_),
            "holdout_rmsle": round(rmsle, 4),
            "trees_us_per_trip": round(trees_us, 2),
            "added_features_us_per_trip": round(features_us, 2) if blocks else 0.0,
            "training_s": round(training_s, 1),
        }
        row["total_us_per_trip"] = round(
            row["trees_us_per_trip"] + row["added_features_us_per_trip"], 2
        )
        if alongside:
            row["baseline_trees_us_alongside"] = round(alongside, 2)
            row["total_over_baseline_alongside"] = round(
                (trees_us + (features_us if blocks else 0.0)) / alongside, 3
            )
        log(
            f"{name} (seed {seed}, {params['max_leaf_nodes']} leaves): RMSLE {rmsle:.4f}, "
            f"{row['rounds']} rounds, trees {trees_us:.2f} µs + features {features_us:.2f} µs "
            f"a trip, trained in {training_s:.1f} s"
        )
        self.results.append(row)
        return row


def prepare(trips: pd.DataFrame, train_threads: int) -> Experiment:
    labelled = trips[trips["trip_duration"] > 0].reset_index(drop=True)
    train_idx, holdout_idx, cutoff = time_split(labelled["pickup_datetime"])
    log(f"{len(train_idx):,} training trips before {cutoff}, {len(holdout_idx):,} held out")
    folds = np.random.default_rng(SEED).integers(0, OOF_FOLDS, len(train_idx))
    batch_trips = pd.concat([labelled] * (BATCH // len(labelled) + 1)).head(BATCH)
    shape = LogDurationRegressor().get_params()
    shape.pop("random_state")
    return Experiment(
        trips=labelled,
        rows=Rows.of(labelled),
        duration_s=labelled["trip_duration"].to_numpy(np.float64),
        train_idx=train_idx,
        holdout_idx=holdout_idx,
        folds=folds,
        batch=Rows.of(batch_trips[list(INPUT_COLUMNS)]),
        shape=shape,
        train_threads=train_threads,
    )


def best_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return min(rows, key=lambda r: (r["holdout_rmsle"], r["total_us_per_trip"]))


def versus(row: dict[str, Any], base: dict[str, Any], alongside: bool = True) -> dict[str, Any]:
    """`row` against `base`; `alongside`: `base` is the baseline that was timed beside each row."""
    return {
        "variant": row["variant"],
        "rmsle_gain": round(base["holdout_rmsle"] - row["holdout_rmsle"], 4),
        "rounds_ratio": round(row["rounds"] / base["rounds"], 3),
        "trees_cost_ratio": round(row["trees_us_per_trip"] / base["trees_us_per_trip"], 3),
        "total_cost_ratio": round(row["total_us_per_trip"] / base["trees_us_per_trip"], 3),
        # the same, against the baseline's trees timed beside this row's
        "total_cost_ratio_alongside": (
            row.get("total_over_baseline_alongside") if alongside else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    add_out_option(parser)
    parser.add_argument(
        "--rows", type=int, help="only the first N trips of the file (a quick trial run)"
    )
    parser.add_argument(
        "--ks", type=int, nargs="+", default=list(KS), help=f"k-means sizes (default {KS})"
    )
    parser.add_argument(
        "--train-threads",
        type=int,
        default=1,
        help="threads for each training (default 1: one core, leaving the other to the machine)",
    )
    parser.add_argument(
        "--no-seed-spread", action="store_true", help="skip the runs with other seeds"
    )
    args = parser.parse_args()

    trips, description = sample_trips(args.data, SAMPLE_ROWS)
    if args.rows:
        trips = trips.head(args.rows)
        description += f" (first {args.rows:,} rows)"
    log(f"{len(trips):,} trips from {description}")
    exp = prepare(trips, args.train_threads)
    train_trips = exp.trips.iloc[exp.train_idx]
    train_rows = exp.rows.take(exp.train_idx)
    with threadpool_limits(args.train_threads):
        log("fitting the PCA and the k-means on the training fold")
        pca = PcaBlock(train_trips, train_rows)
        clusters = {
            k: ClusterBlock(k, train_trips, train_rows, exp.duration_s[exp.train_idx], exp.folds)
            for k in args.ks
        }
    grid_recent = RecentBlock("grid", exp.rows, None)

    base = exp.run("baseline", [])
    exp.run("pca", [pca])
    by_k = {k: exp.run(block.name, [block]) for k, block in clusters.items()}
    k = min(by_k, key=lambda k: by_k[k]["holdout_rmsle"])
    best_clusters = clusters[k]
    cluster_recent = RecentBlock("clusters", exp.rows, best_clusters)
    exp.run("recent_grid", [grid_recent])
    exp.run(f"recent_clusters_k{k}", [cluster_recent])
    for blocks in (
        [pca, best_clusters],
        [pca, grid_recent],
        [best_clusters, grid_recent],
        [best_clusters, cluster_recent],
        [pca, best_clusters, grid_recent],
        [pca, best_clusters, cluster_recent],
    ):
        exp.run("+".join(b.name for b in blocks), blocks)

    candidates = [r for r in exp.results if r["variant"] != "baseline"]
    best = best_of(candidates)
    best_blocks = [
        b
        for b in (pca, *clusters.values(), grid_recent, cluster_recent)
        if b.name in best["blocks"]
    ]
    affordable = [
        r
        for r in candidates
        if r.get(
            "total_over_baseline_alongside", r["total_us_per_trip"] / base["trees_us_per_trip"]
        )
        <= 1.0
    ]

    # The same two at the other leaf count of the frontier's choice (31 or 63 leaves).
    other_leaves = 31 if exp.shape["max_leaf_nodes"] != 31 else 63
    other_shape = [
        exp.run("baseline", [], max_leaf_nodes=other_leaves),
        exp.run(best["variant"], best_blocks, max_leaf_nodes=other_leaves),
    ]
    spread = []
    if not args.no_seed_spread:
        for seed in SEED_SPREAD:
            b, c = exp.run("baseline", [], seed), exp.run(best["variant"], best_blocks, seed)
            spread.append({"seed": seed, **versus(c, b)})
    base_again = exp.run("baseline", [])  # the timing's drift over the run

    gain = versus(best, base)
    report = {
        "environment": {
            **provenance(),
            "command": "uv run python benchmarks/model_features.py",
            "model_threads": MODEL_THREADS,
            "training_threads": args.train_threads,
            "duration_s": round(time.perf_counter() - _began, 1),
        },
        "data": description,
        "split": "time",
        "trips": {"train": len(exp.train_idx), "holdout": len(exp.holdout_idx)},
        "batch": BATCH,
        "shape": {k: v for k, v in exp.shape.items() if k != "max_rounds"},
        "method": {
            "pca": "PCA(2) on the training fold's pickup and dropoff lat/lon inside the NYC box",
            "kmeans": "MiniBatchKMeans(batch_size=10000, n_init=3, random_state=0) on the "
            "training fold's pickup and dropoff points inside the NYC box, in km on the grid",
            "priors": f"per (pickup cluster, dropoff cluster): mean log speed (km/h, trips of "
            f"{MIN_S} s to {MAX_S} s and >= {MIN_KM} km) and mean log1p duration (trips of "
            f"{MIN_S} s to {MAX_S} s), shrunk as (sum + m * global mean) / (n + m), "
            f"m = {SHRINK_TRIPS:g}; training rows out of fold ({OOF_FOLDS} random folds), "
            "held-out and batch rows from the whole training fold",
            "recent": f"trips started in the pickup's cell in [t - w, t) for w in "
            f"{list(WINDOWS_MIN)} min, and in the city for {CITY_WINDOW_MIN} min, over both folds "
            f"in time order; cells: {CELL_KM:g} km grid squares or the pickup's k-means cluster",
            "cost": "trees: regressor.predict on the batch's features; added features: the "
            "blocks' transform of the batch (today's features apart: the same for all); "
            "median of 7, on the predictor's one model thread",
        },
        "best_k": k,
        "rows": exp.results,
        "baseline": base,
        "baseline_timed_again_at_end": base_again["trees_us_per_trip"],
        "best": best,
        "best_vs_baseline": gain,
        "best_within_baseline_cost": (versus(best_of(affordable), base) if affordable else None),
        "other_shape": {
            "max_leaf_nodes": other_leaves,
            "vs_baseline": versus(other_shape[1], other_shape[0], alongside=False),
        },
        "seed_spread": spread,
        "goal": {
            "rmsle_gain_at_least": GOAL_GAIN,
            "cost_at_most_baseline_trees_us": base["trees_us_per_trip"],
            "baseline_trees_us_alongside_median": statistics.median(
                r["baseline_trees_us_alongside"]
                for r in exp.results
                if "baseline_trees_us_alongside" in r
            ),
            "cost_measure": "best's trees + added features over the baseline's trees, timed "
            "together (total_cost_ratio_alongside)",
            "met": gain["rmsle_gain"] >= GOAL_GAIN
            and (gain["total_cost_ratio_alongside"] or gain["total_cost_ratio"]) <= 1.0,
        },
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
