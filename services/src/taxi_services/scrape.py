"""Read a service's Prometheus endpoint into plain samples, and sum them."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

# (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str, timeout: float = 1.0) -> Samples | None:
    """The endpoint's current samples, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return None
    return parse_samples(text)


def matching(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> list[float]:
    """The values of the samples called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return [v for (n, ls), v in samples.items() if n == name and wanted <= set(ls)]


def total(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
    return sum(matching(samples, name, **labels))
