"""JSON encoding and strict decoding of events, through one cattrs converter.

cattrs only reshapes JSON into constructor arguments (ISO strings into datetimes); all type and
range checks live in the attrs validators, so decoding enforces exactly what construction does.
"""

from datetime import datetime
from typing import Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
import orjson
from cattrs.errors import AttributeValidationNote, ClassValidationError

from taxi_events.errors import EventDecodeError, InvalidFieldError, describe, show
from taxi_events.events import SINCE, Event, parse_version, version_problem

E = TypeVar("E", bound=Event)

_EVENT_TYPES: tuple[type[Event], ...] = get_args(Event)


class _NotATimeError(ValueError):
    """A JSON value that is not an ISO 8601 time; cattrs notes which field it was."""


def _as_is(value: object, _: object) -> object:
    # cattrs would coerce ("3" -> 3, 3.5 -> 3); the validators reject wrong types instead.
    return value


def _structure_datetime(value: object, _: object) -> datetime:
    if not isinstance(value, str):
        raise _NotATimeError(f"expected an ISO 8601 time string, got {describe(value)}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _NotATimeError(f"{show(value)} is not an ISO 8601 time") from None


def _is_literal(kind: object) -> bool:
    return get_origin(kind) is Literal


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=True)
    converter.register_structure_hook(datetime, _structure_datetime)
    for plain in (str, int, float, bool):
        converter.register_structure_hook(plain, _as_is)
    converter.register_structure_hook_func(_is_literal, _as_is)
    # Evidence (named figures) is checked whole by its validator, whatever the JSON holds.
    converter.register_structure_hook_func(lambda kind: kind == dict[str, float], _as_is)
    return converter


_converter = _make_converter()


def encode(event: Event) -> bytes:
    """Encode an event as compact UTF-8 JSON with sorted keys: equal events give equal bytes.

    Datetimes are written as datetime.isoformat() writes them (UTC as "+00:00").
    """
    if not isinstance(event, _EVENT_TYPES):
        raise TypeError(f"cannot encode {type(event).__name__}: not an event")
    return orjson.dumps(_converter.unstructure(event), option=orjson.OPT_SORT_KEYS)


def loads(data: bytes | bytearray, event: str) -> object:
    """Parse a record's bytes as strict JSON, the one way events are read.

    orjson rejects NaN and Infinity, lone surrogates and nesting deeper than 1024, and reads
    integers beyond 64 bits as floats (which the integer fields then reject).
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            reason = f"not valid UTF-8: {bad.reason} at byte {bad.start}"
            raise EventDecodeError(None, reason, event) from None
        raise EventDecodeError(None, f"not valid JSON: {error}", event) from None


def decode(data: bytes | bytearray | None, event_type: type[E]) -> E:
    """Decode one record's value into a valid event of `event_type`.

    Raises EventDecodeError, and nothing else, when the bytes are not such an event: bad UTF-8
    or JSON, a missing field, a wrong type or value, or a newer major schema version.
    None (a Kafka tombstone) is rejected the same way. Unknown fields are ignored.
    """
    if event_type not in _EVENT_TYPES:
        raise TypeError(f"cannot decode into {event_type!r}: not an event type")
    name = event_type.__name__
    if not isinstance(data, bytes | bytearray):
        raise EventDecodeError(None, f"expected the record's bytes, got {describe(data)}", name)
    document = loads(data, name)
    if not isinstance(document, dict):
        raise EventDecodeError(None, f"expected a JSON object, got {describe(document)}", name)
    # Checked first: a newer major version may have renamed the other fields.
    written_in = None
    if "schema_version" in document:
        problem = version_problem(document["schema_version"])
        if problem is not None:
            raise EventDecodeError("schema_version", problem, name)
        written_in = parse_version(document["schema_version"])
    # Defaults are for building events in code; on the wire every field must be present, but
    # for those added after the version the record was written in.
    for field in attrs.fields(event_type):
        if field.name not in document and not _added_after(field, written_in):
            raise EventDecodeError(field.name, "required field is missing", name)
    try:
        return _converter.structure(document, event_type)
    except ClassValidationError as error:
        raise _first_problem(error, name) from None


def _added_after(field: "attrs.Attribute[object]", version: tuple[int, int] | None) -> bool:
    since = field.metadata.get(SINCE)
    return since is not None and version is not None and version < since


def _first_problem(error: ClassValidationError, event: str) -> EventDecodeError:
    # Errors are in field order; the first one is enough to reject the record.
    first = error.exceptions[0]
    if isinstance(first, InvalidFieldError):
        return EventDecodeError(first.field, first.problem, event)
    notes = getattr(first, "__notes__", [])
    names = [note.name for note in notes if isinstance(note, AttributeValidationNote)]
    return EventDecodeError(names[0] if names else None, str(first) or type(first).__name__, event)
