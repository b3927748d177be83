"""The trainer: retrains the model on the live trips, proposes what beats the champion as its
challenger, and promotes or rolls back on the live figures.

Retraining is an exactly-once stateful processor (consumer group taxi-trainer). It reads
`new_trips` and `finished_trips` and keeps the last trips of the train source with their real
durations (test-source ends are estimates, never labels), and reads `model_events` for drift on
the champion. Every N new labelled trips, or at once on a drift, it trains a candidate on the
window, split by time, and scores it and the champion on the window's newest trips. A better
candidate goes to `model_registry` with its decision (challenger) on `model_deployments`
(unless the champion is on probation: it is held back, so the probation reaches its verdict), and
every outcome to `model_events`, in the same transaction as the window's state (on
`trainer_state`) and the input offsets it was trained to: a trainer killed mid-training or
mid-publish leaves nothing half-written and, restarted, trains the same window again.

Promotion runs beside it, on a thread of its own: it reads `model_metrics` and the decisions
from their beginning, and writes what the PromotionPolicy decides (with its evidence) to
`model_deployments`, and an event to `model_events`, in one transaction. `--no-auto-promote`
leaves promotion to people (`taxi model promote`/`rollback`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence

import attrs
import click
from confluent_kafka import Message
from prometheus_client import Counter, Gauge, Histogram
from threadpoolctl import threadpool_limits

from taxi_events import (
    DeploymentDecision,
    EventDecodeError,
    ModelEvent,
    ModelEventKind,
    ModelMetrics,
    TripFinished,
    TripStarted,
    decode,
    encode,
)
from taxi_kafka import (
    DEAD_LETTERS,
    FINISHED_TRIPS,
    METRICS_PORTS,
    MODEL_EVENTS,
    MODEL_METRICS,
    NEW_TRIPS,
    TRAINER_GROUP,
    TRAINER_STATE,
    BatchPolicy,
    Failure,
    KafkaConfig,
    LogFollower,
    OutputRecord,
    TransactionalProcessor,
    TransactionalProducer,
    TransformResult,
    instance_id,
    read_table,
    stop_on_signals,
)
from taxi_kafka.cli import env_option
from taxi_model import (
    Decider,
    RegistryRecord,
    TripDurationModel,
    artifact_of,
    current_roles,
    on_probation,
)
from taxi_services.deployment import ModelFollower
from taxi_services.metrics import PrometheusObserver, serve_metrics
from taxi_services.options import prefixed, service_options, topic_prefix_option
from taxi_services.registry import (
    MODEL_PRODUCER_SETTINGS,
    ModelRegistry,
    RegistryTopics,
    max_record_bytes,
)
from taxi_stream import (
    LABEL_REJECTIONS,
    Candidate,
    NoCandidate,
    PromotionPolicy,
    Retraining,
    RetrainingSettings,
    TrainingJob,
    train_candidate,
)

log = logging.getLogger("taxi.trainer")

SERVICE = "trainer"
option = env_option(SERVICE)
STATE_KEY = b"retraining"
# Dead-letter reasons (Failure.kind).
DECODE = "decode"
TOPIC = "topic"
DRIFT_KINDS = ("concept-drift", "data-drift")
REPORT_EVERY_S = 30.0  # how often the log says how full the window is
WINDOW_TRIPS_DEFAULT = 20_000

WINDOW_TRIPS = Gauge("taxi_trainer_window_trips", "Labelled train trips in the rolling window.")
REJECTED_LABELS = Gauge(
    "taxi_trainer_rejected_labels",
    "Trip starts and ends that never became a training row, by reason, as the window's state"
    " counts them.",
    ["reason"],
)
CANDIDATES = Counter(
    "taxi_trainer_candidates",
    "Candidates trained: published as challenger, turned down (not better than the champion),"
    " held back (better, but the champion is on probation) or refused (the window could not be"
    " trained on).",
    ["outcome"],
)
CANDIDATE_OUTCOMES = ("published", "turned-down", "held-back", "refused")
TRAINING_SECONDS = Histogram(
    "taxi_trainer_training_seconds",
    "Time to train and score one candidate.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300),
)
HELD_OUT_RMSLE = Gauge(
    "taxi_trainer_held_out_rmsle",
    "The last candidate's and the champion's RMSLE on the window's newest trips.",
    ["role"],
)
AUTO_DECISIONS = Counter(
    "taxi_trainer_auto_decisions", "Decisions the promotion policy wrote.", ["action"]
)


@attrs.frozen
class TrainerTopics:
    trips: str = NEW_TRIPS
    ends: str = FINISHED_TRIPS
    events: str = MODEL_EVENTS
    metrics: str = MODEL_METRICS
    state: str = TRAINER_STATE
    dead_letters: str = DEAD_LETTERS
    registry: RegistryTopics = attrs.field(factory=RegistryTopics)

    @classmethod
    def prefixed(cls, prefix: str) -> TrainerTopics:
        trips, ends, events, metrics, state, dead_letters = prefixed(
            prefix,
            NEW_TRIPS,
            FINISHED_TRIPS,
            MODEL_EVENTS,
            MODEL_METRICS,
            TRAINER_STATE,
            DEAD_LETTERS,
        )
        return cls(
            trips, ends, events, metrics, state, dead_letters, RegistryTopics.prefixed(prefix)
        )


class RetrainTransform:
    """The trainer's stateful transform for TransactionalProcessor (see the module docstring).

    `champion` gives the model to beat (None before there is one), `history` the deployment
    decisions as they are now, `restore` the committed state (None before the first).
    """

    def __init__(
        self,
        settings: RetrainingSettings,
        topics: TrainerTopics,
        *,
        champion: Callable[[], TripDurationModel | None],
        history: Callable[[], list[DeploymentDecision]],
        restore: Callable[[], Retraining | None],
        actor: str,
        min_improvement: float = 0.0,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._champion = champion
        self._history = history
        self._restore = restore
        self._actor = actor
        self._min_improvement = min_improvement
        self.state = Retraining.create(settings)
        # The outcomes of the last result, counted once it commits.
        self._outcomes: list[str] = []
        self._last_report = 0.0

    def __call__(self, messages: Sequence[Message]) -> TransformResult:
        # Asked every batch: a trainer whose model follower (or promotion) failed stops here.
        champion = self._champion()
        failures: list[Failure] = []
        last_ms = 0
        for message in messages:
            topic = message.topic() or ""
            timestamp_ms = message.timestamp()[1]
            last_ms = max(last_ms, timestamp_ms)
            try:
                if topic == self._topics.trips:
                    self.state.add(decode(message.value(), TripStarted), timestamp_ms)
                elif topic == self._topics.ends:
                    self.state.add(decode(message.value(), TripFinished), timestamp_ms)
                elif topic == self._topics.events:
                    self._on_event(decode(message.value(), ModelEvent), champion)
                else:
                    failures.append(Failure(message, f"unexpected topic {topic}", TOPIC))
            except EventDecodeError as exc:
                failures.append(Failure(message, f"undecodable record: {exc}", DECODE))
        if last_ms:
            self.state.expire(last_ms)
        records = []
        self._outcomes = []
        job = self.state.take_window()
        if job is not None:
            records += self._train(job, champion)
        records.append(OutputRecord(self._topics.state, self.state.to_bytes(), STATE_KEY))
        return TransformResult(records, failures)

    def tick(self) -> TransformResult:
        return TransformResult()

    def committed(self) -> None:
        now = time.monotonic()
        if now - self._last_report > REPORT_EVERY_S:
            self._last_report = now
            rejected = {reason: n for reason, n in self.state.window.rejected.items() if n}
            log.info(
                "window: %d labelled trip(s), %d since the last candidate; not labels: %s",
                len(self.state.window),
                self.state.labelled_since_candidate,
                rejected or "none",
            )
        WINDOW_TRIPS.set(len(self.state.window))
        for reason, count in self.state.window.rejected.items():
            REJECTED_LABELS.labels(reason).set(count)
        for outcome in self._outcomes:
            CANDIDATES.labels(outcome).inc()
        self._outcomes = []

    def rolled_back(self) -> None:
        restored = self._restore()
        if restored is None:
            restored = Retraining.create(self._settings)
        elif restored.settings != self._settings:
            log.info(
                "the trainer's settings changed since its state was written: %s", self._settings
            )
            restored.reconfigure(self._settings)
        self.state = restored
        self._outcomes = []
        log.info(
            "state restored: %d labelled trip(s) in the window, %d candidate(s) so far",
            len(self.state.window),
            self.state.windows_taken,
        )

    def _on_event(self, event: ModelEvent, champion: TripDurationModel | None) -> None:
        """Drift on the serving champion calls for a candidate at once; drift on a model no
        longer serving, and the other events, call for nothing."""
        if event.kind not in DRIFT_KINDS or champion is None:
            return
        if event.model_version == champion.version:
            log.info("drift on the champion (%s): a candidate is due", event.detail)
            self.state.drift_detected()

    def _train(self, job: TrainingJob, champion: TripDurationModel | None) -> list[OutputRecord]:
        log.info("training a candidate (%s) on %s", job.trigger, job.window.description())
        started = time.perf_counter()
        outcome = train_candidate(job, champion, min_improvement=self._min_improvement)
        TRAINING_SECONDS.observe(time.perf_counter() - started)
        if isinstance(outcome, NoCandidate):
            log.warning("no candidate from the window: %s", outcome.reason)
            self._outcomes.append("refused")
            return [self._event("candidate-rejected", _version(champion), job, outcome.reason)]
        HELD_OUT_RMSLE.labels("candidate").set(outcome.candidate_rmsle)
        if outcome.champion_rmsle is not None:
            HELD_OUT_RMSLE.labels("champion").set(outcome.champion_rmsle)
        card, artifact = artifact_of(outcome.model.pipeline, outcome.model.card)
        evidence = held_out_evidence(outcome)
        compared = describe_outcome(outcome, card.version)
        if not outcome.better:
            log.info("turned down: %s", compared)
            self._outcomes.append("turned-down")
            return [self._event("candidate-rejected", card.version, job, compared, evidence)]
        record = RegistryRecord.of(card, artifact)
        value = record.encode()
        if len(value) > max_record_bytes(card.version):
            log.error(
                "candidate %s is %d bytes, too big for the registry", card.version, len(value)
            )
            self._outcomes.append("refused")
            return [
                self._event("candidate-rejected", card.version, job, "too big for the registry")
            ]
        history = self._history()
        if on_probation(history):
            # A new challenger would end the probation with no verdict, and no rollback.
            roles = current_roles(history)
            held = (
                f"held back: {roles.champion} is on probation against {roles.challenger}, which"
                f" a new challenger would end without a verdict; {compared}"
            )
            log.info("candidate %s %s", card.version, held)
            self._outcomes.append("held-back")
            return [self._event("candidate-rejected", card.version, job, held, evidence)]
        decision = attrs.evolve(
            Decider(self._actor).publish(history, card.version, "challenger", compared),
            evidence=evidence,
        )
        log.info("publishing candidate %s as challenger: %s", card.version, compared)
        self._outcomes.append("published")
        return [
            OutputRecord(self._topics.registry.registry, value, card.version.encode()),
            OutputRecord(
                self._topics.registry.deployments, encode(decision), card.version.encode()
            ),
            self._event("candidate", card.version, job, compared, evidence),
        ]

    def _event(
        self,
        kind: ModelEventKind,
        version: str,
        job: TrainingJob,
        detail: str,
        evidence: dict[str, float] | None = None,
    ) -> OutputRecord:
        """What became of a window, for model_events: the trips it held and the figures."""
        event = ModelEvent(
            kind=kind,
            model_version=version,
            detail=detail,
            trips=job.window.trips,
            first_trip_id=job.window.first_trip_id,
            last_trip_id=job.window.last_trip_id,
            evidence=evidence or {},
        )
        return OutputRecord(self._topics.events, encode(event), version.encode())


def _version(champion: TripDurationModel | None) -> str:
    return champion.version if champion is not None else "none"


def held_out_evidence(outcome: Candidate) -> dict[str, float]:
    """The figures a candidate is judged on: both RMSLEs on the window's newest trips."""
    evidence = {
        "candidate_rmsle": outcome.candidate_rmsle,
        "held_out_trips": float(len(outcome.holdout)),
        "window_trips": float(outcome.window.trips),
        "min_improvement": outcome.min_improvement,
    }
    if outcome.champion_rmsle is not None:
        evidence["champion_rmsle"] = outcome.champion_rmsle
    return evidence


def describe_outcome(outcome: Candidate, version: str) -> str:
    held_out = f"the window's newest {len(outcome.holdout):,} trips"
    if outcome.champion_rmsle is None:
        return f"{version} scored RMSLE {outcome.candidate_rmsle:.4f} on {held_out}; no champion"
    return (
        f"{version} scored RMSLE {outcome.candidate_rmsle:.4f} against the champion "
        f"{outcome.champion_version}'s {outcome.champion_rmsle:.4f} on {held_out} "
        f"({outcome.trigger})"
    )


class AutoPromoter:
    """The promotion policy on a thread of its own (see the module docstring): start(), close().

    It reads `model_metrics` and `model_deployments` from their beginning, so a restarted one
    knows every trial's figures again, and decides only once it has read to the end. A decision
    is written only if no other was written since the history it was made on: a person's wins.
    """

    def __init__(
        self, kafka: KafkaConfig, topics: TrainerTopics, policy: PromotionPolicy, instance: str
    ) -> None:
        self._kafka = kafka
        self._topics = topics
        self._policy = policy
        self._registry = ModelRegistry(kafka, topics.registry)
        self._actor = f"auto-promotion@{socket.gethostname()}"
        self._transactional_id = instance_id(f"{SERVICE}-promotion", instance)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auto-promoter", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # the trainer's main thread reports it
            log.exception("automatic promotion failed")
            self.error = exc

    def _follow(self) -> None:
        deployments = self._topics.registry.deployments
        follower = LogFollower(self._kafka, [self._topics.metrics, deployments])
        producer = TransactionalProducer(
            self._kafka, self._transactional_id, name="promotion producer"
        )
        history: list[DeploymentDecision] = []
        try:
            while not self._stop.is_set():
                for message in follower.poll(1000, 0.5):
                    try:
                        if message.topic() == deployments:
                            history.append(decode(message.value(), DeploymentDecision))
                        else:
                            self._policy.observe(decode(message.value(), ModelMetrics))
                    except EventDecodeError as exc:
                        log.warning("skipping an unreadable record of %s: %s", message.topic(), exc)
                if follower.caught_up():
                    self._decide(history, producer)
        finally:
            follower.close()
            producer.close()

    def _decide(self, history: list[DeploymentDecision], producer: TransactionalProducer) -> None:
        decision = self._policy.decide(history, Decider(self._actor))
        if decision is None:
            return
        if len(self._registry.history()) != len(history):
            log.info("not deciding: a newer decision is being read")
            return
        records = [
            OutputRecord(
                self._topics.registry.deployments, encode(decision), decision.version.encode()
            )
        ]
        if decision.action in ("promote", "rollback"):
            event = ModelEvent(
                kind="promotion" if decision.action == "promote" else "rollback",
                model_version=decision.version,
                detail=decision.reason,
                trips=int(decision.evidence.get("trips", 0)),
                evidence=decision.evidence,
            )
            records.append(
                OutputRecord(self._topics.events, encode(event), decision.version.encode())
            )
        if producer.commit(records):
            log.info("%s", decision.reason)
            AUTO_DECISIONS.labels(decision.action).inc()


def serving_champion(follower: ModelFollower, promoter: AutoPromoter | None) -> TripDurationModel:
    """The champion to beat; raises once the follower or the promoter failed."""
    if promoter is not None and promoter.error is not None:
        raise RuntimeError("automatic promotion failed; see the log above") from promoter.error
    return follower.deployment().champion


def state_restorer(kafka: KafkaConfig, topic: str) -> Callable[[], Retraining | None]:
    def restore() -> Retraining | None:
        value = read_table(kafka, topic).get(STATE_KEY)
        if value is None:
            return None
        try:
            return Retraining.from_bytes(value)
        except ValueError as exc:
            raise RuntimeError(
                f"the trainer's state in {topic} does not read ({exc}): written by another "
                f"version? Delete the topic to start the trainer's window afresh."
            ) from exc

    return restore


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@service_options(SERVICE, metrics_port=METRICS_PORTS["trainer"])
@option(
    "--window",
    type=click.IntRange(100),
    # Every batch writes the window whole (trainer_state): at 20,000 trips that is about a
    # tenth of a core at the batch wait below.
    default=WINDOW_TRIPS_DEFAULT,
    show_default=True,
    help="Most labelled train trips the rolling window keeps (memory stays flat).",
)
@option(
    "--min-trips",
    type=click.IntRange(100),
    default=RetrainingSettings().min_trips,
    show_default=True,
    help="Fewest labelled trips a candidate is trained on.",
)
@option(
    "--every",
    type=click.IntRange(1),
    default=RetrainingSettings().every_trips,
    show_default=True,
    help="Train a candidate every this many new labelled trips (and at once on a drift).",
)
@option(
    "--min-improvement",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="How much lower than the champion's a candidate's held-out RMSLE must be for it to be"
    " published as challenger.",
)
@click.option(
    "--auto-promote/--no-auto-promote",
    default=True,
    show_default=True,
    envvar="TAXI_TRAINER_AUTO_PROMOTE",
    show_envvar=True,
    help="Promote a challenger that beats the champion on the live trips, and roll back a"
    " promotion that does worse, automatically.",
)
@option(
    "--delta",
    type=click.FloatRange(0, min_open=True),
    default=PromotionPolicy().delta,
    show_default=True,
    help="RMSLE margin for an automatic promotion or rollback.",
)
@option(
    "--min-live-trips",
    type=click.IntRange(1),
    default=PromotionPolicy().min_trips,
    show_default=True,
    help="Live train trips both models must be scored on before the policy decides.",
)
@topic_prefix_option()
def main(
    *,
    kafka: KafkaConfig,
    metrics_port: int,
    metrics_address: str,
    instance: str,
    window: int,
    min_trips: int,
    every: int,
    min_improvement: float,
    auto_promote: bool,
    delta: float,
    min_live_trips: int,
    topic_prefix: str,
) -> None:
    """Retrain on the live trips, propose the better model as challenger, and promote it.

    Keeps the last --window labelled train trips (starts from new_trips joined with their real
    ends from finished_trips; test-source ends are estimates and never labels). Every --every
    new trips, or at once when model_events reports drift on the champion, it trains a candidate
    on the window's older trips and scores it and the champion on the newest. A better candidate
    is published to model_registry as the challenger, in one transaction with the window's state
    (trainer_state) and the input offsets: a restart resumes exactly. With --auto-promote, a
    challenger that beats the champion by --delta RMSLE on --min-live-trips live trips becomes
    champion, and a promotion that does as much worse is rolled back; every decision goes to
    model_deployments with its evidence.
    """
    # One core trains; the other stays with the pipeline (and the booster's threads do not
    # spin against each other on a busy machine).
    threadpool_limits(1)
    if min_trips > window:
        raise click.BadParameter(
            f"{min_trips} is more than --window {window}", param_hint="--min-trips"
        )
    for reason in LABEL_REJECTIONS:
        REJECTED_LABELS.labels(reason)
    for outcome in CANDIDATE_OUTCOMES:
        CANDIDATES.labels(outcome)
    serve_metrics(metrics_port, metrics_address)
    topics = TrainerTopics.prefixed(topic_prefix)
    group = prefixed(topic_prefix, TRAINER_GROUP)[0]
    settings = RetrainingSettings(max_trips=window, min_trips=min_trips, every_trips=every)
    follower = ModelFollower(
        kafka,
        topics.registry,
        on_rejected=lambda version, reason: log.error("champion %s refused: %s", version, reason),
        on_switch=lambda deployment: log.info(
            "the champion to beat: %s", deployment.champion.version
        ),
    )
    promoter = (
        AutoPromoter(kafka, topics, PromotionPolicy(delta, min_live_trips), instance)
        if auto_promote
        else None
    )
    registry = ModelRegistry(kafka, topics.registry)
    inputs = [topics.trips, topics.ends, topics.events]
    stop = threading.Event()
    with stop_on_signals(stop):
        follower.start()
        if promoter is not None:
            promoter.start()
        try:
            if follower.wait_ready(stop) is None:
                return
            processor = TransactionalProcessor(
                kafka,
                service=SERVICE,
                instance=instance,
                group_id=group,
                input_topics=inputs,
                transform=RetrainTransform(
                    settings,
                    topics,
                    champion=lambda: serving_champion(follower, promoter),
                    history=registry.history,
                    restore=state_restorer(kafka, topics.state),
                    actor=f"trainer@{socket.gethostname()}",
                    min_improvement=min_improvement,
                ),
                dead_letter_topic=topics.dead_letters,
                # Trips are trained on in thousands: big, calm batches, each writing the window;
                # the wait also bounds how long a SIGTERM waits for the batch to end.
                batch=BatchPolicy(max_messages=50_000, max_wait=2.0),
                producer_settings=MODEL_PRODUCER_SETTINGS,
                observer=PrometheusObserver(
                    SERVICE,
                    group=group,
                    inputs=inputs,
                    outputs=[
                        topics.state,
                        topics.events,
                        topics.registry.registry,
                        topics.dead_letters,
                    ],
                    dead_letter_reasons=[DECODE, TOPIC],
                ),
            )
            processor.run(stop)
        finally:
            follower.close()
            if promoter is not None:
                promoter.close()
    log.info("stopped")
