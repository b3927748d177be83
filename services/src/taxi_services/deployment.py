"""The predictor's models, followed from the registry on a thread of their own.

The follower reads `model_registry` and `model_deployments` from their beginning on. Once it has
read everything written before it started, it loads the models the last decision names (the
champion, and the challenger if any) and publishes them as one Deployment. The predictor takes
`current` at the start of each batch, so a switch happens at a batch boundary, and the loading
never runs on the predictor's thread. A model that fails a check is reported (log line and
`on_rejected`) and the running one stays. Given `prepare` (compiled trees, say), each model
goes through it once loaded, still on the follower's thread: the running models serve until
it is done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import attrs
from confluent_kafka import Message

from taxi_events import DeploymentDecision, EventDecodeError, decode
from taxi_kafka import KafkaConfig, LogFollower
from taxi_model import (
    ModelLoadError,
    RegistryRecord,
    RejectReason,
    Roles,
    TripDurationModel,
    current_roles,
)
from taxi_services.registry import RegistryTopics

log = logging.getLogger("taxi.deployment")

# How often a predictor without a champion says so.
_WAITING_LOG_S = 10.0
# Reads that big records take a few of; a registry holds a handful of versions.
_FOLLOWER_SETTINGS = {"queued.max.messages.kbytes": 65_536}


class FollowerError(RuntimeError):
    """The follower stopped following the registry."""


@attrs.frozen
class Deployment:
    """The models one batch is predicted with."""

    champion: TripDurationModel
    challenger: TripDurationModel | None = None

    def describe(self) -> str:
        challenger = self.challenger.version if self.challenger else "none"
        return f"champion {self.champion.version}, challenger {challenger}"


RejectionHandler = Callable[[str, RejectReason], None]
SwitchHandler = Callable[[Deployment], None]
# What a loaded model becomes before it predicts: the same predictions, made another way.
ModelPreparer = Callable[[TripDurationModel], TripDurationModel]


class ModelFollower:
    """Follows the registry (see the module docstring). start(), then wait_ready(); `current`
    is safe to read from any thread."""

    def __init__(
        self,
        kafka: KafkaConfig,
        topics: RegistryTopics,
        *,
        on_rejected: RejectionHandler,
        on_switch: SwitchHandler,
        prepare: ModelPreparer | None = None,
    ) -> None:
        self._kafka = kafka
        self._prepare = prepare
        self._topics = topics
        self._on_rejected = on_rejected
        self._on_switch = on_switch
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)
        self.current: Deployment | None = None
        self._error: BaseException | None = None
        # The registry as read: each version's record and the offset it was read at.
        self._records: dict[str, tuple[int, bytes]] = {}
        self._history: list[DeploymentDecision] = []
        self._models: dict[str, TripDurationModel] = {}
        # What was reported already, so each failure is counted once: (version, record offset).
        self._refused: dict[tuple[str, int], RejectReason] = {}

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def deployment(self) -> Deployment:
        """The deployment to predict the next batch with (after wait_ready returned one).
        Raises FollowerError once the follower has failed: a predictor that no longer follows
        the decisions must stop, not go on with models that may have been replaced."""
        if self._error is not None:
            raise FollowerError("the model follower failed; see the log above") from self._error
        if self.current is None:
            raise RuntimeError("no deployment yet: wait_ready() first")
        return self.current

    def wait_ready(self, stop: threading.Event) -> Deployment | None:
        """Block until there is a champion to predict with (None if `stop` is set first), or
        raise what made the follower fail."""
        while not stop.is_set():
            if self._ready.wait(0.2):
                return self.current
            if self._error is not None:
                raise self._error
        return None

    # -- the follower's thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            follower = LogFollower(
                self._kafka,
                [self._topics.registry, self._topics.deployments],
                settings=_FOLLOWER_SETTINGS,
            )
        except BaseException as exc:
            self._error = exc
            return
        last_waiting_log = 0.0
        try:
            while not self._stop.is_set():
                for message in follower.poll(100, 0.5):
                    self._read(message)
                # Before it has read to the end, the decisions are history, not the present.
                if not follower.caught_up():
                    continue
                self._follow(current_roles(self._history))
                if self.current is None and time.monotonic() - last_waiting_log > _WAITING_LOG_S:
                    last_waiting_log = time.monotonic()
                    log.warning(
                        "no champion to predict with yet: waiting for one in %s "
                        "(`uv run taxi model publish PATH --as champion` sets one)",
                        self._topics.deployments,
                    )
        except BaseException as exc:  # the predictor's thread reports it
            log.exception("the model follower failed")
            self._error = exc
        finally:
            follower.close()

    def _read(self, message: Message) -> None:
        if message.topic() == self._topics.registry:
            version = (message.key() or b"").decode("utf-8", "replace")
            value = message.value()
            if value is None:
                self._records.pop(version, None)
            else:
                self._records[version] = (message.offset() or 0, value)
            return
        try:
            self._history.append(decode(message.value(), DeploymentDecision))
        except EventDecodeError as exc:
            self._reject("?", "corrupt-record", f"deployment decision at {message.offset()}: {exc}")

    def _follow(self, roles: Roles) -> None:
        """Make the deployment the roles name, as far as their models load."""
        current = self.current
        running = Roles(*_versions(current)) if current else Roles()
        if roles == running:
            return
        champion = self._load(roles.champion) if roles.champion else None
        if champion is None:
            champion = current.champion if current else None
        challenger = None
        if roles.challenger and roles.challenger != (champion and champion.version):
            challenger = self._load(roles.challenger)
        if champion is None:
            return
        deployment = Deployment(champion, challenger)
        if current is None or _versions(deployment) != _versions(current):
            self.current = deployment  # the predictor's next batch picks it up
            # The models in use stay in memory, and the champion they replace, so that a
            # rollback switches as soon as it is read.
            kept = (champion, challenger, current.champion if current else None)
            self._models = {m.version: m for m in kept if m is not None}
            log.info("predicting with %s", deployment.describe())
            self._ready.set()
            self._on_switch(deployment)

    def _load(self, version: str) -> TripDurationModel | None:
        if version in self._models:
            return self._models[version]
        stored = self._records.get(version)
        if stored is None:
            self._reject(version, "missing", f"no version {version} in {self._topics.registry}")
            return None
        offset, value = stored
        if (version, offset) in self._refused:
            return None
        started = time.perf_counter()
        try:
            model = RegistryRecord.decode(value, version).load()
        except ModelLoadError as exc:
            self._refused[(version, offset)] = exc.reason
            self._reject(version, exc.reason, str(exc))
            return None
        log.info("loaded model %s in %.2f s", version, time.perf_counter() - started)
        if self._prepare is not None:
            model = self._prepare(model)
        self._models[version] = model
        return model

    def _reject(self, version: str, reason: RejectReason, detail: str) -> None:
        key = (version, -1)
        if reason == "missing":
            # Said once per version; it may yet arrive, and is then loaded.
            if key in self._refused:
                return
            self._refused[key] = reason
        log.error("model %s rejected (%s): %s; the running model stays", version, reason, detail)
        self._on_rejected(version, reason)


def _versions(deployment: Deployment) -> tuple[str, str | None]:
    challenger = deployment.challenger
    return (deployment.champion.version, challenger.version if challenger else None)
