"""The commit and machine that `taxi bench` and `taxi chaos` write into their JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from taxi_services.provenance import commit, machine, provenance


def test_commit_is_the_checkouts_head() -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    found = commit()
    assert found["commit"] == head
    assert isinstance(found["dirty"], bool)


def test_outside_a_checkout_the_commit_is_unknown(tmp_path: Path) -> None:
    assert commit(tmp_path) == {"commit": None, "dirty": None}


def test_machine_and_provenance_are_json() -> None:
    found = machine()
    assert found["cores"] >= 1
    assert found["cpu"]
    assert found["memory_gib"] > 0
    assert set(json.loads(json.dumps(provenance()))) == {"commit", "dirty", "machine"}
