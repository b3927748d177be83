"""DeadLetter: the Kafka headers that say why a record's original bytes were dead-lettered."""

from datetime import UTC, datetime

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_events import DeadLetter, EventDecodeError, InvalidFieldError

HEADER_NAMES = [
    "taxi.source_topic",
    "taxi.partition",
    "taxi.offset",
    "taxi.service",
    "taxi.reason",
    "taxi.failed_at",
    "taxi.schema_version",
]
DEAD_LETTER = DeadLetter(
    source_topic="new_trips",
    partition=3,
    offset=1042,
    service="predictor",
    reason="TripStarted.pickup_latitude: 123.5 is outside [-90, 90]",
    failed_at=datetime(2016, 3, 14, 22, 24, 56, 123456, tzinfo=UTC),
)

dead_letters = st.builds(
    DeadLetter,
    source_topic=st.text(min_size=1, max_size=249),
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
    service=st.text(min_size=1, max_size=30),
    reason=st.text(min_size=1),
    failed_at=st.datetimes(timezones=st.just(UTC)),
    schema_version=st.builds("{}.{}".format, st.integers(0, 1), st.integers(0, 99)),
)


def replaced(name: str, value: bytes | None) -> list[tuple[str, bytes | None]]:
    return [(key, value if key == name else raw) for key, raw in DEAD_LETTER.to_headers()]


def test_headers_are_named_and_ordered_as_documented() -> None:
    assert DEAD_LETTER.to_headers() == [
        ("taxi.source_topic", b"new_trips"),
        ("taxi.partition", b"3"),
        ("taxi.offset", b"1042"),
        ("taxi.service", b"predictor"),
        ("taxi.reason", b"TripStarted.pickup_latitude: 123.5 is outside [-90, 90]"),
        ("taxi.failed_at", b"2016-03-14T22:24:56.123456+00:00"),
        ("taxi.schema_version", b"1.2"),
    ]


def test_failed_at_defaults_to_now_in_utc() -> None:
    dead_letter = DeadLetter(source_topic="t", partition=0, offset=0, service="s", reason="r")
    assert dead_letter.failed_at.tzinfo is UTC
    assert dead_letter.schema_version == "1.2"


@given(dead_letters)
def test_headers_round_trip_exactly(dead_letter: DeadLetter) -> None:
    assert DeadLetter.from_headers(dead_letter.to_headers()) == dead_letter


@given(
    st.lists(
        st.tuples(st.sampled_from(HEADER_NAMES) | st.text(max_size=12), st.none() | st.binary()),
        max_size=10,
    )
)
def test_arbitrary_headers_give_a_dead_letter_or_event_decode_error(
    headers: list[tuple[str, bytes | None]],
) -> None:
    outcome = from_headers_or_error(DEAD_LETTER.to_headers() + headers)
    if isinstance(outcome, EventDecodeError):
        assert outcome.field in attrs.fields_dict(DeadLetter)


def from_headers_or_error(headers: list[tuple[str, bytes | None]]) -> DeadLetter | EventDecodeError:
    # Any other exception escapes and fails the test.
    try:
        return DeadLetter.from_headers(headers)
    except EventDecodeError as error:
        return error


def test_other_headers_are_ignored_and_the_last_repeat_wins() -> None:
    headers = [("traceparent", b"00-abc"), *DEAD_LETTER.to_headers(), ("taxi.reason", b"later")]
    assert DeadLetter.from_headers(headers) == attrs.evolve(DEAD_LETTER, reason="later")


def test_text_header_values_are_accepted() -> None:
    headers = [(name, raw.decode("utf-8")) for name, raw in DEAD_LETTER.to_headers()]
    assert DeadLetter.from_headers(headers) == DEAD_LETTER


@pytest.mark.parametrize("name", HEADER_NAMES)
def test_a_missing_header_is_named(name: str) -> None:
    field = name.removeprefix("taxi.")
    headers = [(key, raw) for key, raw in DEAD_LETTER.to_headers() if key != name]
    with pytest.raises(EventDecodeError) as caught:
        DeadLetter.from_headers(headers)
    assert caught.value.field == field
    assert str(caught.value) == f"DeadLetter.{field}: header {name!r} is missing"


def test_no_headers_at_all_is_an_error() -> None:
    with pytest.raises(EventDecodeError, match=r"source_topic: header 'taxi\.source_topic'"):
        DeadLetter.from_headers(None)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("taxi.partition", b"three", "header 'taxi.partition' is not an integer: 'three'"),
        ("taxi.partition", b" 3", "is not an integer"),
        ("taxi.partition", b"-1", "below the minimum 0"),
        ("taxi.offset", b"1_000", "is not an integer"),
        ("taxi.offset", None, "is missing"),
        ("taxi.failed_at", b"yesterday", "is not an ISO 8601 time"),
        ("taxi.failed_at", b"2016-03-14T22:24:56", "no UTC offset"),
        ("taxi.schema_version", b"2.0", "newer than the supported 1"),
        ("taxi.service", b"", "must not be empty"),
        ("taxi.reason", b"\xff", "is not valid UTF-8"),
        ("taxi.source_topic", b"t" * 250, "more than the maximum 249"),
    ],
)
def test_a_bad_header_is_named(name: str, value: bytes | None, words: str) -> None:
    with pytest.raises(EventDecodeError) as caught:
        DeadLetter.from_headers(replaced(name, value))
    assert caught.value.field == name.removeprefix("taxi.")
    assert words in caught.value.problem


def test_a_bad_dead_letter_cannot_be_constructed() -> None:
    with pytest.raises(InvalidFieldError, match=r"DeadLetter\.offset: -5 is below the minimum 0"):
        attrs.evolve(DEAD_LETTER, offset=-5)
