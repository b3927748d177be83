"""Memory over a long run: the services' resident memory through `taxi up` at a steady rate, and
the dashboard's with browser tabs open on it.

It runs `uv run taxi up --rate R` (R trips/s per producer, so 2R in all) in a folder of its own
(its cluster, model and logs there; synthetic trips), opens --tabs headless Chromium tabs on the
dashboard, and reads each service's resident set (VmRSS in /proc) every --every seconds for
--minutes. Then Ctrl+C (SIGINT), as a user stops it. A service is flat when, after the warm-up,
its largest reading is within 10% of its smallest.

    uv run python benchmarks/memory_soak.py [--minutes 30] [--rate 100] [--out FILE]

`taxi up` listens on its fixed ports (8501, 9090, 9101-9106): nothing else may hold them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from json_report import add_out_option, emit

from taxi_dashboard.testing import chromium, open_page
from taxi_services.bench.probes import memory_mb
from taxi_services.provenance import provenance

FLAT = 1.10  # largest over smallest reading after the warm-up
STATE_WAIT_S = 600.0  # the first run trains a model before it starts the services


def wait_for_services(state: Path, up: subprocess.Popen[str]) -> dict[str, int]:
    """The pids `taxi up` notes in its state file once every service has started."""
    deadline = time.monotonic() + STATE_WAIT_S
    while not state.exists():
        if up.poll() is not None:
            raise SystemExit(f"taxi up exited with {up.returncode} before it started")
        if time.monotonic() > deadline:
            raise SystemExit(f"taxi up wrote no {state} in {STATE_WAIT_S:.0f} s")
        time.sleep(1)
    services: dict[str, int] = json.loads(state.read_text())["services"]
    return services


def summary(samples: list[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    """A service's readings (seconds since the start, MiB) before and after the warm-up."""
    steady = [mb for at, mb in samples if at >= warmup_s]
    if not steady:
        return {"samples": len(samples), "flat": None}
    spread = max(steady) / min(steady)
    return {
        "samples": len(samples),
        "after_warmup_first_mb": round(steady[0], 1),
        "after_warmup_last_mb": round(steady[-1], 1),
        "after_warmup_min_mb": round(min(steady), 1),
        "after_warmup_max_mb": round(max(steady), 1),
        "peak_mb": round(max(mb for _, mb in samples), 1),
        "max_over_min": round(spread, 3),
        "last_over_first": round(steady[-1] / steady[0], 3),
        "flat": spread <= FLAT,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to watch")
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="not judged")
    parser.add_argument("--rate", type=float, default=100.0, help="trips/s per producer")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between readings")
    parser.add_argument("--tabs", type=int, default=2, help="browser tabs on the dashboard")
    add_out_option(parser)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="taxi-soak-"))
    env = {**os.environ, "TAXI_RUNTIME_DIR": str(workdir / ".taxi"), "TAXI_LOG_LEVEL": "INFO"}
    # The venv's taxi itself, not `uv run`, so that Ctrl+C reaches it directly.
    command = [shutil.which("taxi") or "taxi", "up", "--rate", f"{args.rate:g}"]
    print(f"{' '.join(command)} in {workdir}", flush=True)
    with (workdir / "taxi-up.log").open("w") as output:
        up = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=output, stderr=output, text=True
        )
    samples: dict[str, list[tuple[float, float]]] = {}
    try:
        services = wait_for_services(workdir / ".taxi" / "up.json", up)
        with chromium() as browser:
            tabs = [open_page(browser, "http://127.0.0.1:8501") for _ in range(args.tabs)]
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < args.minutes * 60:
                for name, pid in services.items():
                    if (mb := memory_mb(pid)) is None:
                        raise SystemExit(f"{name} ended during the run; see {workdir}/.taxi/logs")
                    samples.setdefault(name, []).append((elapsed, mb))
                print(
                    f"{elapsed / 60:5.1f} min  "
                    + "  ".join(f"{n} {s[-1][1]:.0f}" for n, s in samples.items()),
                    flush=True,
                )
                time.sleep(args.every)
            for tab in tabs:
                tab.close()
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(300)
    warmup_s = args.warmup_minutes * 60
    report = {
        "environment": {
            **provenance(),
            "command": "uv run python benchmarks/memory_soak.py "
            f"--minutes {args.minutes:g} --rate {args.rate:g} --tabs {args.tabs}",
            "taxi_up": f"taxi up --rate {args.rate:g}",
            "trips_per_s": 2 * args.rate,
            "dashboard_tabs": args.tabs,
            "warmup_s": warmup_s,
            "every_s": args.every,
            "taxi_up_exit_code": up.returncode,
        },
        "flat_means": f"after the warm-up, the largest reading is at most {FLAT:g}x the smallest",
        "services": {name: summary(s, warmup_s) for name, s in samples.items()},
        "readings_mb": {name: [round(mb, 1) for _, mb in s] for name, s in samples.items()},
    }
    if up.returncode == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"taxi up exited with {up.returncode}: its files are kept in {workdir}")
    emit(report, args.out)


if __name__ == "__main__":
    main()
