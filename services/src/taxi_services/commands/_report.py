"""How `taxi lifecycle` and `taxi months` end: one JSON report, its provenance, an exit code."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from taxi_kafka import first_signal_interrupts
from taxi_services.chaos.runner import stop_leftovers
from taxi_services.provenance import provenance

log = logging.getLogger("taxi")

INTERRUPTED = 130

# The --report option's settings, for each command's own env_option (its variable named after it).
REPORT_OPTION: dict[str, Any] = {
    "type": click.Path(dir_okay=False, path_type=Path),
    "help": "Also write the JSON report to this file.",
}


def run_and_report(
    run: Callable[[], dict[str, Any]], *, marker: str, command: str, report: Path | None
) -> None:
    """Run, then print the report (and write it to `report`) with the commit, the machine, the
    command and the load around it; exit 1 unless it "passed". Ctrl+C stops what the run
    started (every process whose command line names `marker`) and exits 130."""
    load_before = os.getloadavg()
    with first_signal_interrupts():
        try:
            result = run()
        except KeyboardInterrupt:
            left = stop_leftovers(marker)
            log.error("interrupted; %s", f"stopped {len(left)}" if left else "nothing left running")
            raise click.exceptions.Exit(INTERRUPTED) from None
    result["environment"] = {
        **provenance(),
        "command": command,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    text = json.dumps(result, indent=2, default=str)
    click.echo(text)
    if report is not None:
        report.write_text(text + "\n")
    if not result["passed"]:
        raise click.exceptions.Exit(1)
