"""The events on the ML-taxi topics, as frozen attrs classes that validate themselves.

An invalid event cannot be constructed: every field is checked in its attrs validator and a
failure raises `InvalidFieldError` (a ValueError) or `InvalidFieldTypeError` (also a TypeError).
Construction is keyword-only, so coordinates and durations cannot be swapped by position.
"""

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn, Self, get_args

import attrs

from taxi_events.errors import (
    EventDecodeError,
    InvalidFieldError,
    InvalidFieldTypeError,
    describe,
    show,
)

SCHEMA_VERSION = "1.2"
# Readers accept any minor version of their major: minor bumps only add fields, which older
# readers ignore. A field added after 1.0 has a default and names its version (`_since`), and a
# record written before it may lack it.
SUPPORTED_MAJOR = 1
SINCE = "since"
MAX_TRIP_ID_LENGTH = 64
# Integers are signed 64-bit, as Kafka's (and Java's) longs and most JSON readers have them.
MAX_INTEGER = 2**63 - 1
# Kafka's own limit on topic names.
_MAX_TOPIC_LENGTH = 249
DEAD_LETTER_HEADER_PREFIX = "taxi."
# The key prefix of a poison record (`aborted:<trip id>`): the predictor writes them to
# ml_predictions, under --deliberate-aborts, only in transactions it then aborts. No
# read_committed reader may ever see one.
POISON_PREFIX = "aborted:"

Source = Literal["train", "test"]
Scope = Literal["window", "cumulative"]
# A model's part: the champion's predictions are the pipeline's (`ml_predictions`); a challenger
# predicts the same trips in the shadow (`shadow_predictions`) to be compared with it.
Role = Literal["champion", "challenger"]
# What a DeploymentDecision did: a version was published to the registry (possibly taking a
# role), promoted to champion, the champion rolled back to the one before it, or the challenger
# withdrawn.
DeploymentAction = Literal["publish", "promote", "rollback", "withdraw"]
# What a ModelEvent reports: drift detected on a model's trips (its errors: concept; its inputs
# against its training profile: data), a retrained candidate published or turned down, and the
# automatic policy's promotions and rollbacks.
ModelEventKind = Literal[
    "concept-drift", "data-drift", "candidate", "candidate-rejected", "promotion", "rollback"
]
MODEL_EVENT_KINDS: tuple[ModelEventKind, ...] = get_args(ModelEventKind)

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]
# Bounded digit counts keep int() away from the interpreter's digit limit.
_VERSION_PATTERN = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})")
_INTEGER_PATTERN = re.compile(r"-?[0-9]{1,19}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _reject(instance: object, attribute: "attrs.Attribute[Any]", problem: str) -> NoReturn:
    raise InvalidFieldError(attribute.name, problem, type(instance).__name__)


def _wrong_type(
    instance: object, attribute: "attrs.Attribute[Any]", expected: str, value: object
) -> NoReturn:
    raise InvalidFieldTypeError(
        attribute.name, f"expected {expected}, got {describe(value)}", type(instance).__name__
    )


def _out_of_range(value: float, minimum: float, maximum: float | None) -> str | None:
    if maximum is None:
        return f"{show(value)} is below the minimum {minimum}" if value < minimum else None
    if not minimum <= value <= maximum:
        return f"{show(value)} is outside [{minimum}, {maximum}]"
    return None


def _text(max_length: int | None = None) -> _Validator:
    def check(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
        if not isinstance(value, str):
            _wrong_type(instance, attribute, "a string", value)
        if not value:
            _reject(instance, attribute, "must not be empty")
        if max_length is not None and len(value) > max_length:
            _reject(
                instance,
                attribute,
                f"{show(value)} has {len(value)} characters, more than the maximum {max_length}",
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate would make the encoder or a Kafka key fail downstream.
            _reject(instance, attribute, f"{show(value)} is not valid Unicode (lone surrogate)")

    return check


def _optional_text(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if value is not None:
        _text()(instance, attribute, value)


def _integer(minimum: int, maximum: int | None = None) -> _Validator:
    def check(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
        # bool is an int subclass in Python, but `true` is not a count.
        if isinstance(value, bool) or not isinstance(value, int):
            _wrong_type(instance, attribute, "an integer", value)
        problem = _out_of_range(value, minimum, maximum)
        if problem is None and value > MAX_INTEGER:
            problem = f"{show(value)} is above {MAX_INTEGER}, the largest 64-bit integer"
        if problem is not None:
            _reject(instance, attribute, problem)

    return check


def _number(minimum: float, maximum: float | None = None) -> _Validator:
    def check(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
        # Integers that fit were already turned into floats by `_as_float`.
        if isinstance(value, int) and not isinstance(value, bool):
            _reject(instance, attribute, f"{show(value)} is too large for a number")
        if not isinstance(value, float):
            _wrong_type(instance, attribute, "a number", value)
        if not math.isfinite(value):
            _reject(instance, attribute, f"{show(value)} is not a finite number")
        problem = _out_of_range(value, minimum, maximum)
        if problem is not None:
            _reject(instance, attribute, problem)

    return check


def _as_float(value: float) -> float:
    """Turn integers into floats, so equal events always encode to the same bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        # An integer too large for a float stays as it is, for the validator to reject.
        with contextlib.suppress(OverflowError):
            return float(value)
    return value


def _as_optional_float(value: float | None) -> float | None:
    return None if value is None else _as_float(value)


def _boolean(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if not isinstance(value, bool):
        _wrong_type(instance, attribute, "true or false", value)


def _choice(*options: str) -> _Validator:
    def check(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
        if not isinstance(value, str) or value not in options:
            _reject(instance, attribute, f"expected one of {list(options)}, got {describe(value)}")

    return check


def _local_time(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if not isinstance(value, datetime):
        _wrong_type(instance, attribute, "a datetime", value)
    if value.tzinfo is not None:
        _reject(
            instance,
            attribute,
            f"{show(value)} has a UTC offset; expected a naive New York local time",
        )


def _utc_time(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if not isinstance(value, datetime):
        _wrong_type(instance, attribute, "a datetime", value)
    offset = value.utcoffset()
    if offset is None:
        _reject(instance, attribute, f"{show(value)} has no UTC offset; expected a UTC time")
    if offset != timedelta(0):
        _reject(instance, attribute, f"{show(value)} is not UTC; expected the offset +00:00")


def version_problem(value: object) -> str | None:
    """Say what is wrong with a schema version this code cannot read, or None if it can."""
    if not isinstance(value, str):
        return f"expected a string like {SCHEMA_VERSION!r}, got {describe(value)}"
    if value == SCHEMA_VERSION:  # nearly every event: skip the parsing
        return None
    parsed = parse_version(value)
    if parsed is None:
        return f"{show(value)} is not a 'major.minor' version"
    major = parsed[0]
    if major > SUPPORTED_MAJOR:
        return (
            f"{show(value)} has major version {major}, newer than the supported {SUPPORTED_MAJOR}"
        )
    return None


def _schema_version(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if not isinstance(value, str):
        _wrong_type(instance, attribute, "a string", value)
    problem = version_problem(value)
    if problem is not None:
        _reject(instance, attribute, problem)


def _since(version: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """attrs metadata of a field added in schema `version`: older records may lack it."""
    return {SINCE: version}


def parse_version(value: str) -> tuple[int, int] | None:
    """(major, minor) of a schema version string; None if it is not 'major.minor'."""
    match = _VERSION_PATTERN.fullmatch(value)
    return None if match is None else (int(match[1]), int(match[2]))


def _window_bound(instance: Any, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if instance.scope == "cumulative":
        if value is not None:
            _reject(instance, attribute, "must be null for the cumulative scope")
        return
    if value is None:
        _reject(instance, attribute, "is required for the window scope")
    _utc_time(instance, attribute, value)


def _window_end(instance: Any, attribute: "attrs.Attribute[Any]", value: object) -> None:
    _window_bound(instance, attribute, value)
    start = instance.window_start
    if isinstance(value, datetime) and start is not None and value <= start:
        _reject(instance, attribute, f"{show(value)} is not after window_start {show(start)}")


def _metric(maximum: float | None = None) -> _Validator:
    number = _number(0, maximum)

    def check(instance: Any, attribute: "attrs.Attribute[Any]", value: object) -> None:
        # JSON has no NaN, so "no pairs yet" is null rather than a number.
        if instance.count == 0:
            if value is not None:
                _reject(instance, attribute, f"must be null when count is 0, got {describe(value)}")
            return
        if value is None:
            _reject(instance, attribute, "must be a number when count is above 0, got null")
        number(instance, attribute, value)

    return check


def _as_evidence(value: object) -> object:
    """Integers become floats (as in number fields), so equal evidence encodes alike."""
    if isinstance(value, Mapping):
        return {key: _as_float(figure) for key, figure in value.items()}
    return value


def _evidence(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    """Named figures: a JSON object of finite numbers under non-empty names."""
    if not isinstance(value, dict):
        _wrong_type(instance, attribute, "an object of named numbers", value)
    for name, figure in value.items():
        if not isinstance(name, str) or not name:
            _reject(instance, attribute, f"has the name {describe(name)}; names are text")
        if isinstance(figure, bool) or not isinstance(figure, float):
            _reject(instance, attribute, f"{name!r} is {describe(figure)}, not a number")
        if not math.isfinite(figure):
            _reject(instance, attribute, f"{name!r} is {show(figure)}, not a finite number")


def _optional_source(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if value is not None:
        _SOURCE(instance, attribute, value)


_ANY_NUMBER = _number(-math.inf)


def _optional_number(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if value is not None:
        _ANY_NUMBER(instance, attribute, value)


_TRIP_ID = _text(MAX_TRIP_ID_LENGTH)
_SOURCE = _choice("train", "test")
_ROLE = _choice("champion", "challenger")
_LATITUDE = _number(-90, 90)
_LONGITUDE = _number(-180, 180)
_DURATION = _number(0)


@attrs.frozen(kw_only=True)
class TripStarted:
    """A trip began (topic `new_trips`): the pickup half of a Kaggle row."""

    trip_id: str = attrs.field(validator=_TRIP_ID)
    vendor_id: int = attrs.field(validator=_integer(1))
    pickup_datetime: datetime = attrs.field(validator=_local_time)
    passenger_count: int = attrs.field(validator=_integer(0, 9))
    pickup_longitude: float = attrs.field(converter=_as_float, validator=_LONGITUDE)
    pickup_latitude: float = attrs.field(converter=_as_float, validator=_LATITUDE)
    dropoff_longitude: float = attrs.field(converter=_as_float, validator=_LONGITUDE)
    dropoff_latitude: float = attrs.field(converter=_as_float, validator=_LATITUDE)
    store_and_fwd_flag: bool = attrs.field(validator=_boolean)
    source: Source = attrs.field(validator=_SOURCE)
    schema_version: str = attrs.field(default=SCHEMA_VERSION, validator=_schema_version)
    produced_at: datetime = attrs.field(factory=_utc_now, validator=_utc_time)


@attrs.frozen(kw_only=True)
class TripFinished:
    """A trip ended (topic `finished_trips`); test rows carry an estimated duration."""

    trip_id: str = attrs.field(validator=_TRIP_ID)
    dropoff_datetime: datetime = attrs.field(validator=_local_time)
    trip_duration: float = attrs.field(converter=_as_float, validator=_DURATION)
    is_estimate: bool = attrs.field(validator=_boolean)
    source: Source = attrs.field(validator=_SOURCE)
    schema_version: str = attrs.field(default=SCHEMA_VERSION, validator=_schema_version)
    produced_at: datetime = attrs.field(factory=_utc_now, validator=_utc_time)


@attrs.frozen(kw_only=True)
class Prediction:
    """The model's answer to one TripStarted (topic `ml_predictions`)."""

    trip_id: str = attrs.field(validator=_TRIP_ID)
    source: Source = attrs.field(validator=_SOURCE)
    predicted_duration: float = attrs.field(converter=_as_float, validator=_DURATION)
    model_version: str = attrs.field(validator=_text())
    pickup_datetime: datetime = attrs.field(validator=_local_time)
    pickup_longitude: float = attrs.field(converter=_as_float, validator=_LONGITUDE)
    pickup_latitude: float = attrs.field(converter=_as_float, validator=_LATITUDE)
    dropoff_longitude: float = attrs.field(converter=_as_float, validator=_LONGITUDE)
    dropoff_latitude: float = attrs.field(converter=_as_float, validator=_LATITUDE)
    # The produced_at of the TripStarted answered, so end-to-end latency can be measured.
    trip_started_at: datetime = attrs.field(validator=_utc_time)
    predicted_at: datetime = attrs.field(validator=_utc_time)
    # "challenger" on `shadow_predictions`. A champion's prediction names the challenger that
    # also predicted its trip, in the same transaction, so the aggregator knows to wait for it.
    role: Role = attrs.field(default="champion", validator=_ROLE, metadata=_since((1, 1)))
    challenger_version: str | None = attrs.field(
        default=None, validator=_optional_text, metadata=_since((1, 1))
    )
    schema_version: str = attrs.field(default=SCHEMA_VERSION, validator=_schema_version)
    produced_at: datetime = attrs.field(factory=_utc_now, validator=_utc_time)


# A trip is its source and trip_id together: the train and test replays number their trips
# independently, so real Kaggle train rows beside synthetic test rows can share an id.
TripKey = tuple[Source, str]


def trip_key(event: TripStarted | TripFinished | Prediction) -> TripKey:
    return (event.source, event.trip_id)


@attrs.frozen(kw_only=True)
class ModelMetrics:
    """Prediction quality for one source, model version and role, over a time window or since
    the start (`model_metrics`).

    The metric values are null exactly when `count` (matched pairs) is 0.
    """

    source: Source = attrs.field(validator=_SOURCE)
    scope: Scope = attrs.field(validator=_choice("window", "cumulative"))
    window_start: datetime | None = attrs.field(validator=_window_bound)
    window_end: datetime | None = attrs.field(validator=_window_end)
    count: int = attrs.field(validator=_integer(0))
    rmsle: float | None = attrs.field(converter=_as_optional_float, validator=_metric())
    mae: float | None = attrs.field(converter=_as_optional_float, validator=_metric())
    median_ape: float | None = attrs.field(converter=_as_optional_float, validator=_metric())
    within_30: float | None = attrs.field(converter=_as_optional_float, validator=_metric(1))
    unmatched: int = attrs.field(validator=_integer(0))
    model_version: str = attrs.field(validator=_text())
    role: Role = attrs.field(default="champion", validator=_ROLE, metadata=_since((1, 1)))
    # Set, the figures are on exactly the trips this challenger shadowed (for both roles, so the
    # two compare on the same trips); None, on every trip the model predicted.
    challenger_version: str | None = attrs.field(
        default=None, validator=_optional_text, metadata=_since((1, 1))
    )
    schema_version: str = attrs.field(default=SCHEMA_VERSION, validator=_schema_version)
    produced_at: datetime = attrs.field(factory=_utc_now, validator=_utc_time)


@attrs.frozen(kw_only=True)
class DeploymentDecision:
    """A change of the models' roles (`model_deployments`, one ordered partition).

    Each decision states the roles it leaves, so the last one is the current state and the log
    is the history: who changed what, when and why.
    """

    action: DeploymentAction = attrs.field(
        validator=_choice("publish", "promote", "rollback", "withdraw")
    )
    version: str = attrs.field(validator=_text())  # the version acted on
    champion: str | None = attrs.field(validator=_optional_text)
    challenger: str | None = attrs.field(validator=_optional_text)
    actor: str = attrs.field(validator=_text())
    reason: str = attrs.field(validator=_text())
    decided_at: datetime = attrs.field(factory=_utc_now, validator=_utc_time)
    # The figures an automatic decision was made on (e.g. both models' RMSLE and the trips they
    # were scored on); empty for a person's.
    evidence: dict[str, float] = attrs.field(
        factory=dict,
        converter=_as_evidence,
        validator=_evidence,
        metadata=_since((1, 2)),
        hash=False,
    )
    schema_version: str = attrs.field(default=SCHEMA_VERSION, validator=_schema_version)
    produced_at: datetime = attrs.field(factory=_utc_now, validator=_utc_time)


@attrs.frozen(kw_only=True)
class ModelEvent:
    """Something that happened to a model, with its evidence (`model_events`).

    For drift: the `source` whose trips showed it, the `detector` and the `statistic` it watched,
    its `value` against the `threshold`, and the window of trips it was measured on (`trips`,
    the first and the last). For a candidate or a policy decision: the version, and its figures
    in `evidence`.
    """

    kind: ModelEventKind = attrs.field(validator=_choice(*MODEL_EVENT_KINDS))
    model_version: str = attrs.field(validator=_text())
    detail: str = attrs.field(validator=_text())  # one sentence for people
    source: Source | None = attrs.field(default=None, validator=_optional_source)
    detector: str | None = attrs.field(default=None, validator=_optional_text)
    statistic: str | None = attrs.field(default=None, validator=_optional_text)
    value: float | None = attrs.field(
        default=None, converter=_as_optional_float, validator=_optional_number
    )
    threshold: float | None = attrs.field(
        default=None, converter=_as_optional_float, validator=_optional_number
    )
    trips: int = attrs.field(default=0, validator=_integer(0))
    first_trip_id: str | None = attrs.field(default=None, validator=_optional_text)
    last_trip_id: str | None = attrs.field(default=None, validator=_optional_text)
    evidence: dict[str, float] = attrs.field(
        factory=dict, converter=_as_evidence, validator=_evidence, hash=False
    )
    occurred_at: datetime = attrs.field(factory=_utc_now, validator=_utc_time)
    schema_version: str = attrs.field(default=SCHEMA_VERSION, validator=_schema_version)
    produced_at: datetime = attrs.field(factory=_utc_now, validator=_utc_time)


@attrs.frozen(kw_only=True)
class DeadLetter:
    """Why a record went to `dead_letters`; the record's value stays the original bytes.

    It travels as Kafka headers named `taxi.<field>`, all values UTF-8 text.
    """

    source_topic: str = attrs.field(validator=_text(_MAX_TOPIC_LENGTH))
    partition: int = attrs.field(validator=_integer(0))
    offset: int = attrs.field(validator=_integer(0))
    service: str = attrs.field(validator=_text())
    reason: str = attrs.field(validator=_text())
    failed_at: datetime = attrs.field(factory=_utc_now, validator=_utc_time)
    schema_version: str = attrs.field(default=SCHEMA_VERSION, validator=_schema_version)

    def to_headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers describing this dead letter, in field order."""
        headers = []
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            text = value.isoformat() if isinstance(value, datetime) else str(value)
            headers.append((DEAD_LETTER_HEADER_PREFIX + field.name, text.encode("utf-8")))
        return headers

    @classmethod
    def from_headers(
        cls,
        headers: Iterable[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None] | None,
    ) -> Self:
        """Read a dead letter back from Kafka headers; other headers are ignored.

        Raises EventDecodeError naming the field when a header is missing or invalid.
        """
        # The last occurrence wins, like a dict: a re-published record may repeat headers.
        found = dict(headers or ())
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            name = DEAD_LETTER_HEADER_PREFIX + field.name
            text = _header_text(field.name, name, found.get(name))
            if field.type is int:
                if _INTEGER_PATTERN.fullmatch(text) is None:
                    _bad_header(field.name, f"header {name!r} is not an integer: {show(text)}")
                values[field.name] = int(text)
            elif field.type is datetime:
                try:
                    values[field.name] = datetime.fromisoformat(text)
                except ValueError:
                    _bad_header(
                        field.name, f"header {name!r} is not an ISO 8601 time: {show(text)}"
                    )
            else:
                values[field.name] = text
        try:
            return cls(**values)
        except InvalidFieldError as error:
            raise EventDecodeError(error.field, error.problem, error.event) from None


def _bad_header(field: str, problem: str) -> NoReturn:
    raise EventDecodeError(field, problem, DeadLetter.__name__)


def _header_text(field: str, name: str, raw: object) -> str:
    if raw is None:
        _bad_header(field, f"header {name!r} is missing")
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes):
        _bad_header(field, f"header {name!r} holds {describe(raw)}, expected bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        _bad_header(field, f"header {name!r} is not valid UTF-8")


# The JSON-encoded events; DeadLetter travels as headers instead.
Event = TripStarted | TripFinished | Prediction | ModelMetrics | DeploymentDecision | ModelEvent
