"""Prometheus for the pipeline on one machine: find the binary, build its command line, run it
on a scrape configuration from observability/, query it. `taxi up` runs it; the tests too.

Flags are Prometheus 2.x's (checked against Debian's 2.42): --config.file,
--web.listen-address, --storage.tsdb.path and --storage.tsdb.retention.time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BIN_ENV = "TAXI_PROMETHEUS_BIN"
# observability/ at the repository root: the uv workspace installs this package in place.
OBSERVABILITY_DIR = Path(__file__).resolve().parents[3] / "observability"
LOCAL_CONFIG = OBSERVABILITY_DIR / "prometheus.yml"
COMPOSE_CONFIG = OBSERVABILITY_DIR / "prometheus.compose.yml"
# A local run's history: enough to look back over a session, never a growing disk.
RETENTION = "1d"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class PrometheusError(RuntimeError):
    """Prometheus could not be started or asked; the message says why."""


def find_binary(env: Mapping[str, str] = os.environ) -> Path | None:
    """$TAXI_PROMETHEUS_BIN, else `prometheus` on the PATH; None when there is neither
    (Prometheus is optional). A TAXI_PROMETHEUS_BIN that is no executable is an error."""
    configured = env.get(BIN_ENV)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise PrometheusError(f"{BIN_ENV}={configured} is not an executable file")
        return path
    found = shutil.which("prometheus", path=env.get("PATH"))
    return Path(found) if found else None


def command(
    binary: Path,
    config: Path,
    *,
    port: int,
    data_dir: Path,
    host: str = "127.0.0.1",
    retention: str = RETENTION,
) -> list[str]:
    """The command line of a Prometheus serving on host:port, keeping `retention` of samples
    in `data_dir`."""
    return [
        str(binary),
        f"--config.file={config}",
        f"--web.listen-address={host}:{port}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={retention}",
    ]


@dataclass
class PrometheusServer:
    """One Prometheus process: start it, wait until it is ready, query it, stop it."""

    binary: Path
    config: Path
    port: int
    data_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def args(self) -> list[str]:
        return command(
            self.binary, self.config, port=self.port, data_dir=self.data_dir, host=self.host
        )

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            # Its own session: a terminal's Ctrl+C goes to whoever started it, who stops it.
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        log.info("prometheus on %s (log: %s)", self.url, self.log_path)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                status: int = response.status
                return status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until it serves queries; PrometheusError if it exits or takes longer than
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self.process.returncode}: {self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise PrometheusError(f"prometheus not ready after {timeout:.0f} s")
            time.sleep(0.2)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the current time (HTTP API /api/v1/query): its series, each
        {"metric": {label: value}, "value": [time, "value"]} ("values" for a range)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            try:  # a bad query: the JSON body says why
                body = json.load(exc)
            except ValueError:
                raise PrometheusError(f"HTTP {exc.code} from {self.url}: {exc.reason}") from exc
        except OSError as exc:
            raise PrometheusError(f"cannot query {self.url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')} in {expr}")
        data = body["data"]
        if data["resultType"] in ("vector", "matrix"):
            return list(data["result"])
        # A scalar (or string) is one [time, value] pair: one series without labels.
        return [{"metric": {}, "value": data["result"]}]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (Prometheus flushes and exits), SIGKILL after `timeout` seconds; the exit
        code, or None if it was not running."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("prometheus did not stop in %.0f s; killing it", timeout)
            self.process.kill()
            return self.process.wait()

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"
