"""The models' roles and history from the deployment decisions, in the order read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taxi_dashboard.deployments import DeploymentLog, Roles
from taxi_events import DeploymentDecision

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def decision(
    action: str, version: str, champion: str | None, challenger: str | None, **fields: Any
):
    values: dict[str, Any] = {
        "actor": "ana@host",
        "reason": f"{action} {version}",
        "decided_at": T0,
        **fields,
    }
    return DeploymentDecision(
        action=action, version=version, champion=champion, challenger=challenger, **values
    )


def test_before_any_decision_there_are_no_roles_and_no_history():
    log = DeploymentLog()
    assert log.roles() is None
    assert log.history() == []
    assert len(log) == 0


def test_the_roles_are_the_last_decisions_and_the_history_is_newest_first():
    log = DeploymentLog()
    steps = [
        decision("publish", "v1", "v1", None),
        decision("publish", "v2", "v1", "v2"),
        decision("promote", "v2", "v2", None),
        decision("rollback", "v2", "v1", None),
        decision("publish", "v3", "v1", "v3"),
    ]
    seen = []
    for step in steps:
        log.add(step)
        seen.append(log.roles())
    assert seen == [
        Roles("v1", None),
        Roles("v1", "v2"),
        Roles("v2", None),
        Roles("v1", None),
        Roles("v1", "v3"),
    ]
    assert log.history() == steps[::-1]


def test_the_order_read_wins_over_the_clocks_of_whoever_decided():
    # One partition: the log's order is the order of the decisions, whatever their clocks say.
    log = DeploymentLog()
    log.add(decision("publish", "v2", "v1", "v2", decided_at=T0 + timedelta(hours=1)))
    log.add(decision("withdraw", "v2", "v1", None, decided_at=T0))
    assert log.roles() == Roles("v1", None)


def test_the_history_is_bounded_but_the_roles_stay_the_last_ones():
    log = DeploymentLog(capacity=3)
    for i in range(10):
        log.add(decision("publish", f"v{i}", "v0", f"v{i}"))
    assert [d.version for d in log.history()] == ["v9", "v8", "v7"]
    assert log.roles() == Roles("v0", "v9")
    with pytest.raises(ValueError, match="at least 1"):
        DeploymentLog(capacity=0)
