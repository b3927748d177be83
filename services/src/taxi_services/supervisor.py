"""Child processes for `taxi up`: start the services, watch them, stop them all cleanly."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from taxi_services.scrape import Samples, scrape

log = logging.getLogger("taxi.up")

BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 30.0
ABORT_TIMEOUT_S = 5.0


@dataclass
class Child:
    name: str
    args: Sequence[str]
    metrics_port: int
    log_path: Path
    # Where it runs: this machine, or a test host (its address, and what enters its network).
    host: str = "127.0.0.1"
    enter_host: Callable[[], None] | None = field(default=None, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def principal(self) -> str:
        """Its Kafka principal on the secure cluster: a service's own, its name (taxi-<name>)."""
        return Path(self.args[0]).name.removeprefix("taxi-")

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def start(self, env: Mapping[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(BIN / self.args[0]),
                    *self.args[1:],
                    "--metrics-port",
                    str(self.metrics_port),
                    # On a test host, its metrics are served on its address.
                    *(["--metrics-address", self.host] if self.enter_host else []),
                ],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group: the terminal's Ctrl+C reaches only `taxi up`, which
                # then stops each child in order.
                start_new_session=True,
                preexec_fn=self.enter_host,  # noqa: PLW1509  # setns(2) only
            )

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> int | None:
        """SIGKILL the child, a crash with no chance to clean up, and reap it. Its exit code;
        None when it was not running."""
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.kill()
        return self.process.wait()

    def metrics(self) -> Samples:
        """The child's current samples, or nothing while it is not serving."""
        return scrape(self.metrics_url) or {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it), for a child's metrics."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_all(
    children: Sequence[Child], timeout: float = STOP_TIMEOUT_S, *, dump_stacks: bool = False
) -> dict[str, int]:
    """SIGTERM every running child (each finishes its batch and commits), SIGKILL stragglers.
    With `dump_stacks`, a straggler gets SIGABRT first: a child running with
    PYTHONFAULTHANDLER=1 then writes where each of its threads is stuck to its log."""
    running = [c for c in children if c.process is not None and c.process.poll() is None]
    for child in running:
        assert child.process is not None
        child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes = {}
    for child in running:
        assert child.process is not None
        try:
            codes[child.name] = child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", child.name, timeout)
            codes[child.name] = _kill(child.process, dump_stacks)
    return codes


def _kill(process: subprocess.Popen[bytes], dump_stacks: bool) -> int:
    if dump_stacks:
        process.send_signal(signal.SIGABRT)
        try:
            return process.wait(ABORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    return process.wait()
