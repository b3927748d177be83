"""Where a measurement was made: the commit it ran and the machine it ran on.

`taxi bench` and `taxi chaos` put this in their JSON, so that a result committed under
docs/measurements/ says what produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

# services/src/taxi_services/provenance.py -> the checkout this code runs from
_SOURCE = Path(__file__).resolve().parent


def commit(where: Path = _SOURCE) -> dict[str, Any]:
    """The git commit of the checkout at `where` and whether tracked files differ from it
    (`dirty`); both None when this is not a git checkout (an installed wheel, a container)."""
    try:
        head = _git(where, "rev-parse", "HEAD")
        changed = _git(where, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": bool(changed)}


def machine() -> dict[str, Any]:
    """The machine: OS, CPU model, cores (and those this process may use), memory."""
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
    }


def provenance() -> dict[str, Any]:
    """The commit and the machine, as one JSON-ready dict."""
    return {**commit(), "machine": machine()}


def _git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(where), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None
