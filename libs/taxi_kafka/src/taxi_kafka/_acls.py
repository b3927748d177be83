"""Least-privilege ACLs for the secure cluster: what each service's principal may do.

`pipeline_grants` is pure: the grants follow from the topics each service reads and writes, its
consumer group and its transactional-id prefix. `ensure_grants` writes them (as `admin`, a super
user, the only principal that may manage topics, configs and ACLs). Brokers deny whatever no
ACL allows (`allow.everyone.if.no.acl.found=false`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from taxi_kafka._pipeline import (
    AGGREGATOR_CHANGELOG,
    AGGREGATOR_GROUP,
    DEAD_LETTERS,
    FINISHED_TRIPS,
    ML_PREDICTIONS,
    MODEL_DEPLOYMENTS,
    MODEL_EVENTS,
    MODEL_METRICS,
    MODEL_REGISTRY,
    NEW_TRIPS,
    PREDICTOR_GROUP,
    PRODUCER_CHECKPOINTS,
    SHADOW_PREDICTIONS,
    TRAINER_GROUP,
    TRAINER_STATE,
)

TOPIC, GROUP, TRANSACTIONAL_ID = "topic", "group", "transactional_id"
READ, WRITE, DESCRIBE = "READ", "WRITE", "DESCRIBE"


@dataclass(frozen=True)
class Grant:
    """`principal` may do `operation` on the resource named `name` (or, when `prefixed`, on
    every resource whose name starts with it)."""

    principal: str
    resource: str
    name: str
    operation: str
    prefixed: bool = False


@dataclass(frozen=True)
class Access:
    """What one service's principal needs."""

    principal: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    # Topics it only looks up (offsets, metadata) without reading their records.
    describes: tuple[str, ...] = ()
    # The consumer group it subscribes and commits with (under the topic prefix).
    group: str | None = None
    # Groups whose committed offsets it only looks at (the dashboard's lag).
    watched_groups: tuple[str, ...] = ()
    # Every transactional.id it uses starts with this (instance_id: taxi-<service>-<instance>).
    transactional_prefix: str | None = None


ACCESS: tuple[Access, ...] = (
    Access(
        "producer",
        reads=(PRODUCER_CHECKPOINTS,),
        writes=(NEW_TRIPS, FINISHED_TRIPS, PRODUCER_CHECKPOINTS),
        transactional_prefix="taxi-producer-",
    ),
    Access(
        "predictor",
        reads=(NEW_TRIPS, MODEL_REGISTRY, MODEL_DEPLOYMENTS),
        writes=(ML_PREDICTIONS, SHADOW_PREDICTIONS, DEAD_LETTERS),
        group=PREDICTOR_GROUP,
        transactional_prefix="taxi-predictor-",
    ),
    Access(
        "aggregator",
        reads=(
            *(ML_PREDICTIONS, SHADOW_PREDICTIONS, FINISHED_TRIPS, AGGREGATOR_CHANGELOG),
            MODEL_REGISTRY,  # the training profiles of the models it watches for drift
        ),
        writes=(MODEL_METRICS, MODEL_EVENTS, AGGREGATOR_CHANGELOG, DEAD_LETTERS),
        group=AGGREGATOR_GROUP,
        transactional_prefix="taxi-aggregator-",
    ),
    Access(
        "trainer",
        reads=(
            *(NEW_TRIPS, FINISHED_TRIPS, MODEL_EVENTS, MODEL_METRICS, TRAINER_STATE),
            *(MODEL_REGISTRY, MODEL_DEPLOYMENTS),
        ),
        writes=(TRAINER_STATE, MODEL_EVENTS, MODEL_REGISTRY, MODEL_DEPLOYMENTS, DEAD_LETTERS),
        group=TRAINER_GROUP,
        # taxi-trainer-<instance> and taxi-trainer-promotion-<instance>
        transactional_prefix="taxi-trainer-",
    ),
    Access(
        "dashboard",
        reads=(
            *(NEW_TRIPS, ML_PREDICTIONS, FINISHED_TRIPS, MODEL_METRICS, MODEL_EVENTS),
            *(MODEL_DEPLOYMENTS, DEAD_LETTERS),
        ),
        describes=(SHADOW_PREDICTIONS,),
        watched_groups=(PREDICTOR_GROUP, AGGREGATOR_GROUP),
    ),
)


def grants_of(access: Access, prefix: str = "") -> list[Grant]:
    """The grants one service needs, its topics and group under `prefix`."""
    who = access.principal
    grants = [Grant(who, TOPIC, prefix + t, op) for t in access.reads for op in (READ, DESCRIBE)]
    grants += [Grant(who, TOPIC, prefix + t, op) for t in access.writes for op in (WRITE, DESCRIBE)]
    grants += [Grant(who, TOPIC, prefix + t, DESCRIBE) for t in access.describes]
    if access.group:
        grants += [Grant(who, GROUP, prefix + access.group, op) for op in (READ, DESCRIBE)]
    # Its readers' throwaway groups (throwaway_group): taxi-<principal>-<kind>-<random>.
    grants += [Grant(who, GROUP, f"taxi-{who}-", op, prefixed=True) for op in (READ, DESCRIBE)]
    grants += [Grant(who, GROUP, prefix + g, DESCRIBE) for g in access.watched_groups]
    if access.transactional_prefix:
        grants += [
            Grant(who, TRANSACTIONAL_ID, access.transactional_prefix, op, prefixed=True)
            for op in (WRITE, DESCRIBE)
        ]
    return list(dict.fromkeys(grants))  # each once, in order


def pipeline_grants(prefix: str = "", access: Sequence[Access] = ACCESS) -> list[Grant]:
    """Every service principal's grants, topics and groups under `prefix`."""
    return [grant for one in access for grant in grants_of(one, prefix)]


_RESOURCE_TYPES = {
    TOPIC: ResourceType.TOPIC,
    GROUP: ResourceType.GROUP,
    TRANSACTIONAL_ID: ResourceType.TRANSACTIONAL_ID,
}


def binding(grant: Grant) -> AclBinding:
    """The grant as Kafka's ACL binding: an ALLOW from any host."""
    return AclBinding(
        _RESOURCE_TYPES[grant.resource],
        grant.name,
        ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
        f"User:{grant.principal}",
        "*",
        AclOperation[grant.operation],
        AclPermissionType.ALLOW,
    )


def ensure_grants(admin: AdminClient, grants: Iterable[Grant], timeout: float = 30.0) -> int:
    """Create the grants' ACLs (creating one that exists changes nothing). Returns how many."""
    bindings = [binding(grant) for grant in grants]
    for future in admin.create_acls(bindings, request_timeout=timeout).values():
        future.result(timeout=timeout)
    return len(bindings)
