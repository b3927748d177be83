"""Kafka errors, classified once for every client (pure)."""

from __future__ import annotations

import enum
import logging

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger(__name__)
rdkafka_log = logging.getLogger("taxi_kafka.librdkafka")


class FatalKafkaError(Exception):
    """The client is unusable (librdkafka raised a fatal error); recreate it or exit."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(error.str())
        self.error = error


class FencedError(FatalKafkaError):
    """Another process took over this instance's transactional.id or group.instance.id: this
    one is a zombie and must stop."""


class AuthorizationError(PermissionError):
    """The brokers refused this client's principal an operation (its ACLs do not allow it)."""


def topic_refused(topic: str, principal: object, operation: str) -> AuthorizationError:
    """The error for a topic the brokers would not show or let `principal` use."""
    who = f"principal {principal}" if principal else "this client's principal"
    return AuthorizationError(
        f"the brokers refused {who}: {operation} on topic {topic} (TOPIC_AUTHORIZATION_FAILED). "
        "Its ACLs must allow that (`taxi cluster up --secure` grants each service only what it "
        "needs), or connect as a principal whose ACLs do"
    )


class DeliveryError(Exception):
    """Produced records were not delivered, so their input must not be committed."""


class TxnAction(enum.Enum):
    """What to do when a transactional call fails."""

    ABORT = "abort"  # abort, rewind the consumer to its committed offsets, go on
    RECREATE = "recreate"  # the outcome is unknown or the producer broken: replace it, rewind
    FENCED = "fenced"  # a newer instance owns the transactional.id: stop


_FENCED_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.FENCED_INSTANCE_ID}
)


def error_of(exc: KafkaException) -> KafkaError:
    """The KafkaError a KafkaException carries (librdkafka always puts one first)."""
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return error
    return KafkaError(KafkaError._FAIL, str(exc))


def fatal_error(error: KafkaError) -> FatalKafkaError:
    """The exception for a fatal error: FencedError when a newer instance took over."""
    return FencedError(error) if error.code() in _FENCED_CODES else FatalKafkaError(error)


def transaction_action(error: KafkaError) -> TxnAction:
    """Abortable errors are aborted. Everything else, a timeout included, leaves the
    transaction's state uncertain: librdkafka lacks KIP-890's hardening, so the safe move is a
    new producer, whose init_transactions() finishes or aborts the old transaction for us."""
    if error.code() in _FENCED_CODES:
        return TxnAction.FENCED
    if error.txn_requires_abort() and not error.fatal():
        return TxnAction.ABORT
    return TxnAction.RECREATE


def log_client_error(error: KafkaError) -> None:
    """error_cb for every client: brokers coming and going are expected, so only WARNING.
    Fatal errors also surface as exceptions from the client's calls."""
    level = logging.ERROR if error.fatal() else logging.WARNING
    rdkafka_log.log(level, "librdkafka: %s", error.str())
