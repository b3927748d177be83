"""The peers `taxi bench` measures the predictor against: the same job written with other Python
streaming libraries, as their users write it (benchmarks/peer_quix.py, benchmarks/peer_bytewax.py;
docs/performance.md). Neither library is a dependency of any package here: bytewax is in the
workspace's dev group, quix-streams in an environment of its own (benchmarks/peers/quix/), made
here on first use. So the peers run from a checkout of the repository only.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("taxi.bench")

# services/src/taxi_services/bench/peers.py -> the checkout (the workspace installs it editable).
CHECKOUT = Path(__file__).resolve().parents[4]
BENCHMARKS = CHECKOUT / "benchmarks"
QUIX_PROJECT = BENCHMARKS / "peers" / "quix"
# How long making the quix environment may take (downloads included).
SYNC_TIMEOUT = 900.0
# Variables that would point uv at the workspace's environment instead of the peer's own.
_WORKSPACE_ENV = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")


class PeerError(RuntimeError):
    """A peer cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class Peer:
    """How to start a peer: its python and script, and what it runs on."""

    python: str  # a path, or "python": the workspace's own
    script: Path
    library: str  # its library's version, and the confluent-kafka and librdkafka under it


def script(name: str) -> Path:
    path = BENCHMARKS / f"peer_{name}.py"
    if not path.is_file():
        raise PeerError(
            f"{path} is missing: the peers run from a checkout of the repository (leave out "
            "--only's quix and bytewax elsewhere)"
        )
    return path


def bytewax_peer() -> Peer:
    """bytewax in the workspace's environment (its dev group)."""
    try:
        version = importlib.metadata.version("bytewax")
    except importlib.metadata.PackageNotFoundError as exc:
        raise PeerError(
            "bytewax is not installed: it is in the workspace's dev dependency group, which "
            "`uv sync` installs (not with --no-dev)"
        ) from exc
    import confluent_kafka  # noqa: PLC0415  # already loaded by the bench

    return Peer(
        "python",
        script("bytewax"),
        f"bytewax {version} (confluent-kafka {confluent_kafka.__version__}, "
        f"librdkafka {confluent_kafka.libversion()[0]})",
    )


@functools.cache  # quix and quix-batched: one `uv sync` (9 s even when nothing changed) a run
def quix_peer() -> Peer:
    """quix-streams in its own environment, made or brought up to date with its lock file
    (`uv sync --locked` in benchmarks/peers/quix/) first."""
    path = script("quix")
    python = sync_environment(QUIX_PROJECT)
    versions = _run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, confluent_kafka as c; "
            "print(m.version('quixstreams'), c.__version__, c.libversion()[0])",
        ],
        "the quix peer's environment does not import quixstreams",
        timeout=120.0,
    ).split()
    return Peer(
        str(python),
        path,
        f"quixstreams {versions[0]} (confluent-kafka {versions[1]}, librdkafka {versions[2]})",
    )


def sync_environment(project: Path) -> Path:
    """`uv sync --locked` in `project`: the python of its environment."""
    if not (project / "pyproject.toml").is_file() or not (project / "uv.lock").is_file():
        raise PeerError(
            f"{project} has no pyproject.toml and uv.lock: the peers run from a checkout of "
            "the repository"
        )
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise PeerError(
            f"uv is needed to make the quix peer's environment in {project}: pip install uv"
        )
    python = project / ".venv" / "bin" / "python"
    if python.exists():
        log.info("(quix) checking its environment: uv sync --locked in %s", project)
    else:
        log.info(
            "(quix) making its environment (first use; quix-streams needs an older "
            "confluent-kafka than the workspace's): uv sync --locked in %s",
            project,
        )
    _run(
        [uv, "sync", "--locked", "--quiet", "--project", str(project)],
        f"could not make the quix peer's environment in {project} (uv sync --locked)",
        timeout=SYNC_TIMEOUT,
    )
    if not python.exists():
        raise PeerError(f"uv sync --locked in {project} made no {python}")
    return python


def _run(command: list[str], failure: str, *, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _WORKSPACE_ENV}
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerError(f"{failure}: {exc}") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[-3000:]
        raise PeerError(f"{failure}: exit status {done.returncode}\n{said}")
    return done.stdout
