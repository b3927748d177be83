"""The models' roles and their history, from the decisions on `model_deployments` (pure: no I/O).

Each DeploymentDecision states the roles it leaves (champion, challenger), so the last one read
is the current state and the log is the promotion history. The topic has one partition, so the
order the reader sees them in is the order they were decided in.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from taxi_events import DeploymentDecision

# Decisions are rare (a person or a job makes each one); this is years of them.
DEFAULT_DECISIONS = 500


@dataclass(frozen=True, slots=True)
class Roles:
    """The versions in each role; None: no model in it."""

    champion: str | None = None
    challenger: str | None = None


class DeploymentLog:
    """The latest `capacity` decisions, in the order read; the current roles are the last one's."""

    def __init__(self, capacity: int = DEFAULT_DECISIONS) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._decisions: collections.deque[DeploymentDecision] = collections.deque(maxlen=capacity)

    def add(self, decision: DeploymentDecision) -> None:
        self._decisions.append(decision)

    def roles(self) -> Roles | None:
        """The roles the last decision left; None before the first decision."""
        if not self._decisions:
            return None
        last = self._decisions[-1]
        return Roles(last.champion, last.challenger)

    def history(self) -> list[DeploymentDecision]:
        """Newest first."""
        return list(reversed(self._decisions))

    def __len__(self) -> int:
        return len(self._decisions)
