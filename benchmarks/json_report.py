"""How the benchmarks that keep their results as data hand them out: one JSON object printed,
and the same text in the file `--out` names (docs/measurements/)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_out_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="also write the JSON here")


def emit(report: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
