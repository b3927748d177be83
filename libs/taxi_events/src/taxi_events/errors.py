"""Typed errors for invalid events and undecodable records."""

from __future__ import annotations

import datetime as dt

# Long values are cut in messages: the message ends up in logs and dead-letter headers.
_MAX_SHOWN_CHARS = 40


class FieldError(ValueError):
    """A problem with one field of an event, or with the record as a whole (`field` is None)."""

    def __init__(self, field: str | None, problem: str, event: str | None = None) -> None:
        # All three go to `args` so the error survives pickling (e.g. across processes).
        super().__init__(field, problem, event)
        self.field = field
        self.problem = problem
        self.event = event

    def __str__(self) -> str:
        if self.field is None:
            return self.problem
        where = self.field if self.event is None else f"{self.event}.{self.field}"
        return f"{where}: {self.problem}"


class EventDecodeError(FieldError):
    """Bytes (or Kafka headers) that are not a valid event; decoding bad data raises only this."""


class InvalidFieldError(FieldError):
    """Raised when an event is constructed with an invalid field value."""


class InvalidFieldTypeError(InvalidFieldError, TypeError):
    """Raised when an event is constructed with a field value of the wrong type."""


def show(value: object) -> str:
    """Render a value for an error message, short and without recursing into containers."""
    if isinstance(value, str):
        if len(value) > _MAX_SHOWN_CHARS:
            return repr(value[:_MAX_SHOWN_CHARS]) + "..."
        return repr(value)
    if isinstance(value, bool) or value is None:
        return describe(value)
    if isinstance(value, int):
        # str() of a huge int is slow and may hit the interpreter's digit limit.
        return str(value) if value.bit_length() <= 128 else f"a {value.bit_length()}-bit integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return repr(value.isoformat())
    return describe(value)


def describe(value: object) -> str:
    """Name the kind of a value, with the value itself when it is a short scalar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"an integer ({show(value)})"
    if isinstance(value, float):
        return f"a number ({show(value)})"
    if isinstance(value, str):
        return f"a string ({show(value)})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"
