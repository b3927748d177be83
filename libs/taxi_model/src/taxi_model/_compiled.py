"""Compiled inference for the model's trees (issue 22), used only where it is exact.

tl2cgen turns treelite's import of the loaded HistGradientBoostingRegressor into C and builds a
shared library that sums the same trees faster than scikit-learn does (benchmarks/
bench_compiled.py). It is exact only with float64 thresholds and float64 inputs (float32 ones
differ by up to 0.175 in log space), and only once the rare inputs tl2cgen 1.0 misreads as
missing go to scikit-learn's trees instead (misread_as_missing). So before a model predicts with
it, its trees and scikit-learn's must agree within TOLERANCE on a probe that reaches every split
of every tree and tries each side of its threshold and a missing value; if they do not, or
treelite, tl2cgen or a compiler is missing, or compiling fails, the model keeps scikit-learn's
trees and a warning says why.

The library is compiled here from the loaded pipeline, never read from a model file or the
registry (loading a model runs no code from the file). It is cached on local disk under
CACHE_VARIABLE's directory, named by the model's version and a digest of its trees and of the
treelite, tl2cgen and compiler versions, so a restart loads it instead of compiling again.

Opt-in (taxi-predictor --compiled-trees): compiling takes some 15-30 s, so the caller runs
with_compiled_trees() where a batch does not wait for it, then swaps the model it returns in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import pandas as pd

from taxi_model._artifact import TripDurationModel, _sample_trips

if TYPE_CHECKING:
    import tl2cgen

log = logging.getLogger(__name__)

CACHE_VARIABLE = "TAXI_COMPILED_TREES_CACHE"
# Largest difference in log1p(seconds) allowed between the compiled and scikit-learn's trees.
TOLERANCE = 1e-6
DEFAULT_TOOLCHAIN = "gcc"
# tl2cgen runs the toolchain's name through a shell: only plain compiler names are taken.
_TOOLCHAIN_NAME = re.compile(r"(gcc|clang)(-[0-9]+)?")
# Bump when what is compiled, or how, changes: it is part of every cached library's name.
_BUILD_FORMAT = "1"
INSTALL_HINT = "install the taxi-model[compiled] extra (treelite, tl2cgen) and a C compiler"


class CompiledTreesError(RuntimeError):
    """The compiled trees cannot be used; the message says why."""


class CompiledTrees:
    """A compiled library that sums a HistGradientBoostingRegressor's trees, as its predict()
    does: log1p(seconds) for this project's model. Safe to call from several threads (one call
    at a time: tl2cgen's predictor is not reentrant); each call runs on the calling thread."""

    def __init__(self, library: Path, booster: Any) -> None:
        import tl2cgen  # noqa: PLC0415

        self.library = library
        self.booster = booster
        self.feature_names: list[str] = list(booster.feature_names_in_)
        self._predictor: tl2cgen.Predictor = tl2cgen.Predictor(str(library), nthread=1)
        # The library reads what its thresholds are: float64 for ours, anything else is wrong
        # (and the exactness check says so).
        self.input_type: str = self._predictor.threshold_type
        self._lock = threading.Lock()
        if self._predictor.num_feature != len(self.feature_names):
            raise CompiledTreesError(
                f"{library} takes {self._predictor.num_feature} features, "
                f"the model {len(self.feature_names)}"
            )

    def predict_log(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The trees' prediction for each row: what HistGradientBoostingRegressor.predict gives."""
        if isinstance(features, pd.DataFrame):
            if list(features.columns) != self.feature_names:
                raise ValueError(
                    f"features {list(features.columns)} are not the trees' {self.feature_names}"
                )
            features = features.to_numpy(dtype=np.float64)
        rows = np.ascontiguousarray(features, dtype=self.input_type)
        if len(rows) == 0:
            return np.empty(0, dtype=np.float64)
        predicted = self.predict_compiled(rows)
        if self.input_type == "float64":
            misread = misread_as_missing(rows)
            if misread.any():
                predicted[misread] = self.booster.predict(
                    pd.DataFrame(rows[misread], columns=self.feature_names)
                )
        return predicted

    def predict_compiled(self, rows: np.ndarray) -> np.ndarray:
        """The library's own answer for each row (of its input type), with no guard."""
        import tl2cgen  # noqa: PLC0415

        matrix = tl2cgen.DMatrix(rows, dtype=self.input_type)  # NaN: missing, as sklearn reads it
        with self._lock:
            predicted = self._predictor.predict(matrix)
        return np.array(predicted, dtype=np.float64).reshape(len(rows))


def misread_as_missing(rows: np.ndarray) -> np.ndarray:
    """The float64 rows that tl2cgen 1.0's code reads a value of as missing: its input is a union
    of the double and an int that is -1 for missing, so a double whose low 32 bits are all ones
    (the double just below 19.25, say) takes the missing branch. Such values are as rare in
    trips as any 32-bit pattern, but sit just below every threshold with a short binary
    fraction (x.5, x.25), so the boundary probe meets them: those rows take scikit-learn's trees."""
    low_half = np.ascontiguousarray(rows, dtype=np.float64).view(np.uint64) & np.uint64(0xFFFFFFFF)
    misread: np.ndarray = (low_half == np.uint64(0xFFFFFFFF)).any(axis=1)
    return misread


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """CACHE_VARIABLE's directory, else ml-taxi/compiled-trees in the user's cache directory."""
    if environ.get(CACHE_VARIABLE):
        return Path(environ[CACHE_VARIABLE])
    base = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ml-taxi" / "compiled-trees"


def with_compiled_trees(
    model: TripDurationModel,
    *,
    rows: pd.DataFrame | None = None,
    cache_dir: Path | None = None,
    toolchain: str = DEFAULT_TOOLCHAIN,
) -> TripDurationModel:
    """The model predicting with compiled trees, once they are checked to agree with its own
    within TOLERANCE on the boundary probe and on `rows` (trips, as predict() takes them); else
    the model unchanged, with a warning saying why. Compiles (some 20-40 s for 200 rounds of 63
    leaves) unless the cache has the library; a cached library that fails the check is deleted."""
    try:
        trees, cached = _compiled_for(model, cache_dir or default_cache_dir(), toolchain)
    except ImportError as exc:
        log.warning(
            "model %s keeps scikit-learn's trees: %s (%s)", model.version, exc, INSTALL_HINT
        )
        return model
    except Exception as exc:  # compiling can fail in many ways; the model works without it
        log.warning(
            "model %s keeps scikit-learn's trees: no compiled trees (%s)", model.version, exc
        )
        return model
    try:
        difference = max_difference(trees, model, rows)
    except Exception as exc:  # a library that cannot even run this is as wrong as an inexact one
        difference, failure = float("inf"), f"the check failed ({exc!r})"
    else:
        failure = f"they differ from its own by up to {difference:.3g} in log space"
    if difference <= TOLERANCE:
        log.info(
            "model %s predicts with compiled trees (%s%s; max difference %.2g in log space)",
            model.version,
            trees.library,
            ", cached" if cached else "",
            difference,
        )
        return attrs.evolve(model, trees=trees)
    log.warning(
        "model %s keeps scikit-learn's trees: the compiled ones (%s) are not exact: %s "
        "(tolerance %g); deleted, so the next load compiles afresh",
        model.version,
        trees.library,
        failure,
        TOLERANCE,
    )
    trees.library.unlink(missing_ok=True)
    return model


def max_difference(
    trees: CompiledTrees, model: TripDurationModel, rows: pd.DataFrame | None = None
) -> float:
    """Largest |compiled - scikit-learn| in log space over the boundary probe, the sample trips
    every model predicts at load, and `rows` (trips); inf where either is not finite."""
    booster = _booster(model)
    features = model.pipeline.named_steps["features"]
    names = trees.feature_names
    frames = [
        pd.DataFrame(boundary_probe(booster), columns=names),
        features.transform(_sample_trips()),
    ]
    if rows is not None and len(rows):
        frames.append(features.transform(rows))
    worst = 0.0
    for frame in frames:
        expected = booster.predict(frame[names])
        got = trees.predict_log(frame[names])
        difference = np.abs(got - expected)
        if got.shape != expected.shape or not np.isfinite(difference).all():
            return float("inf")
        worst = max(worst, float(difference.max(initial=0.0)))
    return worst


def boundary_probe(booster: Any) -> np.ndarray:
    """Rows that exercise every split of every tree of a fitted HistGradientBoostingRegressor:
    for each split, a row that reaches it (each feature inside the bounds the path to it sets)
    with its feature at the threshold t, at the doubles either side of t, and missing (NaN)."""
    n_features = int(booster.n_features_in_)
    probes: list[np.ndarray] = []
    for iteration in booster._predictors:  # sklearn's fitted trees, one list per round
        for tree in iteration:
            nodes = tree.nodes
            # (node, lower bounds (exclusive), upper bounds (inclusive)) still to visit
            stack = [(0, np.full(n_features, -np.inf), np.full(n_features, np.inf))]
            while stack:
                index, low, high = stack.pop()
                node = nodes[index]
                if node["is_leaf"]:
                    continue
                if node["is_categorical"]:
                    raise CompiledTreesError("the trees have categorical splits, not probed here")
                feature, threshold = int(node["feature_idx"]), float(node["num_threshold"])
                # Inside (low, high]: the upper bound itself where there is one.
                base = np.where(
                    np.isfinite(high),
                    high,
                    np.where(np.isfinite(low), np.nextafter(low, np.inf), 0.0),
                )
                for value in (
                    threshold,
                    np.nextafter(threshold, -np.inf),
                    np.nextafter(threshold, np.inf),
                    np.nan,
                ):
                    row = base.copy()
                    row[feature] = value
                    probes.append(row)
                left_high, right_low = high.copy(), low.copy()
                left_high[feature] = min(high[feature], threshold)
                right_low[feature] = max(low[feature], threshold)
                stack.append((int(node["left"]), low, left_high))
                stack.append((int(node["right"]), right_low, high))
    return np.array(probes, dtype=np.float64).reshape(-1, n_features)


def library_key(model: TripDurationModel, toolchain: str = DEFAULT_TOOLCHAIN) -> str:
    """The cached library's file name: the model's version, then a digest of what the library
    depends on (the trees themselves, and the treelite, tl2cgen and compiler that build it)."""
    import tl2cgen  # noqa: PLC0415
    import treelite  # noqa: PLC0415

    booster = _booster(model)
    digest = hashlib.sha256()
    for part in (
        _BUILD_FORMAT,
        treelite.__version__,
        tl2cgen.__version__,
        toolchain,
        _compiler_version(toolchain),
        platform.machine(),
        repr(list(booster.feature_names_in_)),
    ):
        digest.update(part.encode() + b"\0")
    digest.update(np.asarray(booster._baseline_prediction, dtype=np.float64).tobytes())
    for iteration in booster._predictors:
        for tree in iteration:
            digest.update(tree.nodes.tobytes())
    return f"{model.version or 'unsaved'}-{digest.hexdigest()[:16]}.so"


def compile_library(booster: Any, library: Path, toolchain: str = DEFAULT_TOOLCHAIN) -> None:
    """Compile a fitted HistGradientBoostingRegressor's trees (float64 thresholds, as treelite
    imports them) into the shared library `library`, written atomically."""
    import tl2cgen  # noqa: PLC0415
    import treelite  # noqa: PLC0415

    if not _TOOLCHAIN_NAME.fullmatch(toolchain):
        raise CompiledTreesError(f"toolchain {toolchain!r} is not gcc or clang")
    imported = treelite.sklearn.import_model(booster)
    library.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = library.with_name(f".{library.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        tl2cgen.export_lib(imported, toolchain=toolchain, libpath=partial, nthread=1)
        partial.replace(library)
    finally:
        partial.unlink(missing_ok=True)


def _compiled_for(
    model: TripDurationModel, cache_dir: Path, toolchain: str
) -> tuple[CompiledTrees, bool]:
    """The model's compiled trees, and whether they came from the cache."""
    booster = _booster(model)
    library = cache_dir / library_key(model, toolchain)
    cached = library.is_file()
    if not cached:
        compile_library(booster, library, toolchain)
    return CompiledTrees(library, booster), cached


def _booster(model: TripDurationModel) -> Any:
    """The model's fitted HistGradientBoostingRegressor, after its features step."""
    from taxi_model._estimator import LogDurationRegressor  # noqa: PLC0415

    steps = [name for name, _ in model.pipeline.steps]
    regressor = model.pipeline.steps[-1][1]
    if steps != ["features", "regressor"] or not isinstance(regressor, LogDurationRegressor):
        raise CompiledTreesError(f"the pipeline's steps are {steps}, not features and regressor")
    return regressor.booster_


def _compiler_version(toolchain: str) -> str:
    try:
        found = subprocess.run(
            [toolchain, "-dumpfullversion"], capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompiledTreesError(f"no compiler {toolchain} ({exc})") from exc
    return found.stdout.strip()
