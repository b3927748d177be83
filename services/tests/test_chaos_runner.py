"""The chaos runner's safety nets: leftovers are found and stopped, stuck services leave their
stacks behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from taxi_services.chaos.runner import stop_leftovers
from taxi_services.supervisor import Child, stop_all

# Deaf to SIGTERM, and says so once it is.
SLEEPER = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""


def deaf(argv: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


def test_leftover_services_are_stopped_and_nothing_else(tmp_path: Path):
    marker = f"taxi-chaos-test-{uuid.uuid4().hex[:8]}-"
    # Looks like a service of the run: a taxi-* script naming the run.
    service = tmp_path / "taxi-predictor"
    service.write_text(SLEEPER)
    left = deaf([sys.executable, str(service), "--instance", f"{marker}x"])
    # Names the run but is no service of it (say, a `pgrep -f` for it): left alone.
    bystander = deaf([sys.executable, "-c", SLEEPER, marker])
    try:
        found = stop_leftovers(marker)
        assert len(found) == 1
        assert f"pid {left.pid}:" in found[0]
        assert left.wait(timeout=30) == -signal.SIGKILL  # after ignoring SIGTERM
        assert bystander.poll() is None
    finally:
        for process in (left, bystander):
            process.kill()
            process.wait()


def test_nothing_left_is_nothing_found():
    assert stop_leftovers(f"taxi-chaos-test-{uuid.uuid4().hex}-") == []


def test_a_stuck_service_leaves_its_stacks_in_its_log(tmp_path: Path):
    """What the chaos pipeline does to a service that ignores SIGTERM at the end of a run."""
    stuck = Child("stuck", ["python", "-c", SLEEPER], 0, tmp_path / "stuck.log")
    stuck.start({"PYTHONFAULTHANDLER": "1"})
    while "ready" not in stuck.log_path.read_text():  # its SIGTERM handler is in place
        time.sleep(0.1)
    codes = stop_all([stuck], timeout=1, dump_stacks=True)
    assert codes == {"stuck": -signal.SIGABRT}
    log = stuck.log_path.read_text()
    assert "Fatal Python error: Aborted" in log
    assert 'File "<string>", line 5' in log  # where it was stuck: time.sleep
