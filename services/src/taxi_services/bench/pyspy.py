"""Running py-spy on a measured process (`taxi bench --profile`): find it, check that it can
attach, and record while a backlog drains. profile.py reads what it writes."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RATE = 100  # samples/s, py-spy's default
MAX_RATE = 1_000
# raw: collapsed stacks, one line each (profile.parse_collapsed). --function: a function's
# samples under its first line, so that each function is one entry. --nonblocking: the
# process is not paused for each sample, which would slow the very work being measured.
ARGS = ("-f", "raw", "--function", "--nonblocking")
# py-spy prints this once attached, before its first sample.
STARTED = "Sampling process"
ATTACH_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
HOW_TO_ALLOW = (
    "py-spy reads the process's memory, which needs ptrace: run as root, or allow it with "
    "`sudo sysctl kernel.yama.ptrace_scope=0`, or in a container add the SYS_PTRACE "
    "capability (docker run --cap-add SYS_PTRACE); or run without --profile"
)


class PySpyError(RuntimeError):
    """py-spy is missing, cannot attach, or failed while recording."""


def _args(rate: int) -> list[str]:
    return [*ARGS, "-r", str(rate)]


def settings(rate: int) -> dict[str, Any]:
    """How the profile is taken, for the report."""
    return {"tool": "py-spy", "command": f"py-spy record -p PID {' '.join(_args(rate))}"}


def executable() -> Path:
    """py-spy beside this Python (the workspace's dev dependencies) or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file():
        return beside
    found = shutil.which("py-spy")
    if found is None:
        raise PySpyError(
            "--profile needs py-spy, found neither beside "
            f"{sys.executable} nor on PATH: install the workspace's dev dependencies "
            "(uv sync), or pip install py-spy; or run without --profile"
        )
    return Path(found)


def check_attach(spy: Path, pid: int) -> None:
    """Take one stack dump of `pid`, as a recording would attach; PySpyError if it cannot."""
    try:
        done = subprocess.run(
            [str(spy), "dump", "--pid", str(pid), "--nonblocking"],
            capture_output=True,
            text=True,
            timeout=ATTACH_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PySpyError(
            f"py-spy could not attach to pid {pid} within {exc.timeout:.0f} s"
        ) from exc
    if done.returncode != 0:
        said = " ".join(done.stderr.split("\n\n")[0].split())  # its first paragraph, no trace
        denied = "Permission denied" in done.stderr or "not permitted" in done.stderr
        hint = HOW_TO_ALLOW if denied else "or run without --profile"
        raise PySpyError(f"py-spy cannot attach to pid {pid}: {said}; {hint}")


class Recording:
    """py-spy recording `pid` into `output` until stopped."""

    def __init__(self, spy: Path, pid: int, output: Path, rate: int = RATE) -> None:
        self.output = output
        self._log = output.with_suffix(".log")
        with self._log.open("w") as log:
            self._process = subprocess.Popen(
                [str(spy), "record", "-p", str(pid), *_args(rate), "-o", str(output)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_sampling()
        except BaseException:
            self._process.kill()
            self._process.wait()
            raise

    def _said(self) -> str:
        return self._log.read_text(errors="replace")

    def _wait_until_sampling(self) -> None:
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while STARTED not in self._said():
            if self._process.poll() is not None:
                raise PySpyError(f"py-spy exited with {self._process.returncode}: {self._said()}")
            if time.monotonic() > deadline:
                raise PySpyError(f"py-spy did not start sampling within {ATTACH_TIMEOUT:.0f} s")
            time.sleep(0.01)

    def stop(self) -> str:
        """Stop sampling (as Ctrl+C does: py-spy then writes its output) and return what it
        wrote."""
        self._process.send_signal(signal.SIGINT)
        try:
            code = self._process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            self._process.kill()
            self._process.wait()
            raise PySpyError(f"py-spy did not stop; see {self._log}") from exc
        if code != 0 or not self.output.exists():
            raise PySpyError(f"py-spy exited with {code}: {self._said()}")
        return self.output.read_text()

    def kill(self) -> None:
        """End it, its output unwanted (the drain failed)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
