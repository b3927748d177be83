"""The note `taxi up` leaves while it runs (.taxi/up.json), so `taxi status` can say what it
started, when, and where the logs are."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taxi_kafka.cluster import LocalCluster, pid_alive

STATE_FILE = "up.json"


def state_path(cluster: LocalCluster) -> Path:
    return cluster.runtime_dir.parent / STATE_FILE


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), **state}, indent=2))


def read_state(path: Path) -> dict[str, Any] | None:
    """The state of a `taxi up` that still runs; None if there is none (or it died)."""
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if pid_alive(int(state.get("pid", 0))) else None
