"""ML-taxi event types, their JSON codec and validation."""

from taxi_events.codec import decode, encode
from taxi_events.errors import (
    EventDecodeError,
    FieldError,
    InvalidFieldError,
    InvalidFieldTypeError,
)
from taxi_events.events import (
    DEAD_LETTER_HEADER_PREFIX,
    MAX_INTEGER,
    MAX_TRIP_ID_LENGTH,
    SCHEMA_VERSION,
    SUPPORTED_MAJOR,
    DeadLetter,
    Event,
    ModelMetrics,
    Prediction,
    Scope,
    Source,
    TripFinished,
    TripKey,
    TripStarted,
    trip_key,
)

__all__ = [
    "DEAD_LETTER_HEADER_PREFIX",
    "MAX_INTEGER",
    "MAX_TRIP_ID_LENGTH",
    "SCHEMA_VERSION",
    "SUPPORTED_MAJOR",
    "DeadLetter",
    "Event",
    "EventDecodeError",
    "FieldError",
    "InvalidFieldError",
    "InvalidFieldTypeError",
    "ModelMetrics",
    "Prediction",
    "Scope",
    "Source",
    "TripFinished",
    "TripKey",
    "TripStarted",
    "decode",
    "encode",
    "trip_key",
]
