"""`taxi-dashboard`: its options, and a real server that stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from taxi_dashboard.cli import APP, main, streamlit_options
from taxi_services.supervisor import free_port

BIN = Path(sys.executable).parent


def test_help_lists_every_option_with_its_variable():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for text in (
        "--port",
        "TAXI_DASHBOARD_PORT",
        "--bootstrap-servers",
        "KAFKA_BOOTSTRAP_SERVERS",
        "-X KEY=VALUE",
        "--metrics-port",
        "TAXI_DASHBOARD_METRICS_PORT",
        "default: 9105",
        "--log-level",
    ):
        assert text in result.output


def test_the_page_and_the_metrics_listen_on_loopback_unless_told_otherwise():
    # Joined into one line: click wraps the help between words.
    output = " ".join(CliRunner().invoke(main, ["--help"]).output.split())
    assert "--address TEXT " in output
    assert "--metrics-address TEXT " in output
    for variable in ("TAXI_DASHBOARD_ADDRESS", "TAXI_DASHBOARD_METRICS_ADDRESS"):
        assert f"[env var: {variable}; default: 127.0.0.1]" in output


def test_a_malformed_librdkafka_setting_is_refused():
    result = CliRunner().invoke(main, ["-X", "no-equals-sign"])
    assert result.exit_code == 2
    assert "key=value" in result.output


def test_the_server_is_headless_quiet_and_does_not_watch_files():
    options = streamlit_options(port=8600, address="0.0.0.0", log_level="INFO")
    assert options["server.port"] == 8600
    assert options["server.address"] == "0.0.0.0"
    assert options["server.headless"] is True
    assert options["server.fileWatcherType"] == "none"
    assert options["browser.gatherUsageStats"] is False
    assert options["logger.level"] == "info"
    assert APP.is_file()


def wait_serving(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "taxi-dashboard exited early"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout:.0f} s")


@pytest.mark.slow
def test_it_serves_the_page_and_metrics_and_exits_cleanly_on_sigterm(tmp_path):
    port, metrics_port = free_port(), free_port()
    # No broker listens there: the dashboard must still come up (and say so on the page).
    nowhere = ",".join(f"127.0.0.1:{free_port()}" for _ in range(3))
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(BIN / "taxi-dashboard"),
                "--port",
                str(port),
                "--address",
                "127.0.0.1",
                "--metrics-port",
                str(metrics_port),
                "--bootstrap-servers",
                nowhere,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_serving(f"http://127.0.0.1:{port}/_stcore/health", process)
        # Served before any browser opened the page.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            text = response.read().decode()
        assert "process_resident_memory_bytes" in text
        assert "taxi_dashboard_buffer_items" in text
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, log.read_text()
    assert f"http://127.0.0.1:{port}" in log.read_text()
