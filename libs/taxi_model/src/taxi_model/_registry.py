"""Models as events, without I/O: a registry record's bytes, and the deployment decisions.

A registry record (topic `model_registry`, keyed by version) is one model: a short header
(magic, then the JSON of the card and the artifact's sha256) followed by the artifact's bytes.
Loading it checks everything `load_artifact` checks, the sha256 included, on those very bytes.

The deployment decisions (topic `model_deployments`) each state the roles they leave, so the
last decision is the current state. Decisions are made here, from the history, and refused
with a DeploymentError that says what to do.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime

import attrs

from taxi_events import DeploymentAction, DeploymentDecision, Role
from taxi_model._artifact import (
    ModelCard,
    ModelLoadError,
    TripDurationModel,
    card_from_json,
    card_to_json,
    load_artifact,
)

MAGIC = b"TAXI-MODEL\x00"
_HEADER_LENGTH = struct.Struct(">I")
# A header is a card and a hash: a few KB. Anything longer is not a header.
_MAX_HEADER = 1 << 20


@attrs.frozen
class RegistryRecord:
    """One version in the registry: its card, the artifact's sha256 and the artifact."""

    card: ModelCard
    sha256: str
    artifact: bytes = attrs.field(repr=lambda artifact: f"<{len(artifact):,} bytes>")

    @property
    def version(self) -> str:
        return self.card.version

    @classmethod
    def of(cls, card: ModelCard, artifact: bytes) -> RegistryRecord:
        return cls(card, hashlib.sha256(artifact).hexdigest(), artifact)

    def encode(self) -> bytes:
        header = json.dumps(
            {"card": card_to_json(self.card), "sha256": self.sha256}, separators=(",", ":")
        ).encode()
        return MAGIC + _HEADER_LENGTH.pack(len(header)) + header + self.artifact

    @classmethod
    def decode(cls, value: bytes | None, key: str) -> RegistryRecord:
        """The record in `value` (stored under `key`), or ModelLoadError: "corrupt-record" for
        bytes that are no model record, "corrupt-card" for a card that does not read."""
        what = f"registry record {key!r}"
        start = len(MAGIC) + _HEADER_LENGTH.size
        if value is None or len(value) < start or not value.startswith(MAGIC):
            raise ModelLoadError(f"{what} is not a model record", "corrupt-record")
        (length,) = _HEADER_LENGTH.unpack_from(value, len(MAGIC))
        if length > min(_MAX_HEADER, len(value) - start):
            raise ModelLoadError(f"{what} is truncated: its header runs past it", "corrupt-record")
        try:
            header = json.loads(value[start : start + length])
            card_json, sha256 = header["card"], header["sha256"]
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelLoadError(
                f"{what} has an unreadable header ({exc})", "corrupt-record"
            ) from exc
        if not isinstance(sha256, str):
            raise ModelLoadError(f"{what} has no sha256", "corrupt-record")
        card = card_from_json(card_json, f"the card of {what}")
        if card.version != key:
            raise ModelLoadError(
                f"{what} holds the card of version {card.version}", "corrupt-record"
            )
        return cls(card, sha256, value[start + length :])

    def load(self) -> TripDurationModel:
        """The model, checked (ModelLoadError otherwise); see `load_artifact`."""
        return load_artifact(
            self.card, self.artifact, f"registry version {self.version}", sha256=self.sha256
        )


@attrs.frozen
class Roles:
    champion: str | None = None
    challenger: str | None = None


class DeploymentError(ValueError):
    """A decision that cannot be made; the message says why and what to do."""


def current_roles(history: Sequence[DeploymentDecision]) -> Roles:
    """The roles the last decision left (none before the first)."""
    return _roles_of(history[-1]) if history else Roles()


def roles_since(history: Sequence[DeploymentDecision]) -> int:
    """Where the current roles began: the position of the first of the last decisions that all
    left the same champion and challenger (0 with no history). A decision that changes no role
    (the challenger published again) does not start them over."""
    roles = current_roles(history)
    start = len(history)
    while start > 0 and _roles_of(history[start - 1]) == roles:
        start -= 1
    return start


def on_probation(history: Sequence[DeploymentDecision]) -> bool:
    """Whether the current roles are a promotion on probation, as `Decider.promote(...,
    keep_previous_as_challenger=True)` left them: the champion it replaced shadows the new one,
    so the two go on being compared on the same trips."""
    start = roles_since(history)
    if start == 0:
        return False
    decision = history[start]
    return (
        decision.action == "promote"
        and decision.challenger is not None
        and decision.challenger == history[start - 1].champion
    )


def _roles_of(decision: DeploymentDecision) -> Roles:
    return Roles(decision.champion, decision.challenger)


def _challenger_beside(roles: Roles, champion: str) -> str | None:
    """The challenger that stays beside a new champion: none if it is that champion."""
    return None if roles.challenger == champion else roles.challenger


def champion_lineage(history: Sequence[DeploymentDecision]) -> list[str]:
    """The champions a rollback steps back through, oldest first, the current one last.

    Each change of champion pushes the new one; a rollback pops the current one.
    """
    lineage: list[str] = []
    for decision in history:
        if decision.action == "rollback":
            if lineage:
                lineage.pop()
        elif decision.champion is not None and (not lineage or lineage[-1] != decision.champion):
            lineage.append(decision.champion)
    return lineage


@attrs.frozen
class Decider:
    """Makes decisions for `actor` (who, e.g. user@host) at `now`."""

    actor: str
    now: datetime = attrs.field(factory=lambda: datetime.now(UTC))

    def publish(
        self,
        history: Sequence[DeploymentDecision],
        version: str,
        role: Role,
        reason: str,
    ) -> DeploymentDecision:
        """A newly published version takes `role`. A version that is champion already cannot
        become its own challenger."""
        roles = current_roles(history)
        if role == "challenger":
            if version == roles.champion:
                raise DeploymentError(
                    f"{version} is the champion already; it cannot challenge itself"
                )
            return self._decide("publish", version, roles.champion, version, reason)
        challenger = _challenger_beside(roles, version)
        return self._decide("publish", version, version, challenger, reason)

    def promote(
        self,
        history: Sequence[DeploymentDecision],
        version: str,
        known: Collection[str],
        reason: str,
        *,
        keep_previous_as_challenger: bool = False,
        evidence: Mapping[str, float] | None = None,
    ) -> DeploymentDecision:
        """`version` (one of `known`, the registry's) becomes champion; if it was the
        challenger, there is none after. With `keep_previous_as_challenger`, the champion it
        replaces becomes the challenger instead, so the two go on being compared on the same
        trips (a promotion on probation: see `on_probation`)."""
        roles = current_roles(history)
        if version not in known:
            raise DeploymentError(
                f"there is no version {version} in the registry. `taxi model list` shows the "
                "versions there; `taxi model publish PATH` adds one."
            )
        if version == roles.champion:
            raise DeploymentError(f"{version} is the champion already")
        if keep_previous_as_challenger and roles.champion is not None:
            challenger: str | None = roles.champion
        else:
            challenger = _challenger_beside(roles, version)
        return self._decide("promote", version, version, challenger, reason, evidence=evidence)

    def rollback(
        self,
        history: Sequence[DeploymentDecision],
        reason: str,
        *,
        evidence: Mapping[str, float] | None = None,
    ) -> DeploymentDecision:
        """The champion before the current one returns; the challenger stays."""
        lineage = champion_lineage(history)
        if len(lineage) < 2:
            raise DeploymentError(
                "there is no earlier champion to roll back to"
                if lineage
                else "there is no champion yet: `taxi model publish PATH --as champion` sets one"
            )
        previous = lineage[-2]
        roles = current_roles(history)
        challenger = _challenger_beside(roles, previous)
        return self._decide("rollback", previous, previous, challenger, reason, evidence=evidence)

    def withdraw(
        self,
        history: Sequence[DeploymentDecision],
        reason: str,
        *,
        evidence: Mapping[str, float] | None = None,
    ) -> DeploymentDecision:
        """The challenger stops being shadowed."""
        roles = current_roles(history)
        if roles.challenger is None:
            raise DeploymentError("there is no challenger to withdraw")
        return self._decide(
            "withdraw", roles.challenger, roles.champion, None, reason, evidence=evidence
        )

    def _decide(
        self,
        action: DeploymentAction,
        version: str,
        champion: str | None,
        challenger: str | None,
        reason: str,
        *,
        evidence: Mapping[str, float] | None = None,
    ) -> DeploymentDecision:
        return DeploymentDecision(
            action=action,
            version=version,
            champion=champion,
            challenger=challenger,
            actor=self.actor,
            reason=reason,
            decided_at=self.now,
            evidence=dict(evidence or {}),
        )
