"""The secure cluster's grants, without a cluster: least privilege, per service."""

from __future__ import annotations

from collections import defaultdict

from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from taxi_kafka import PROJECT_TOPICS
from taxi_kafka._acls import ACCESS, GROUP, TOPIC, TRANSACTIONAL_ID, binding, pipeline_grants
from taxi_kafka.cluster import SERVICE_PRINCIPALS

TOPICS = {spec.name for spec in PROJECT_TOPICS}


def by_principal(prefix: str = "") -> dict[str, set[tuple[str, str, str, bool]]]:
    found: dict[str, set[tuple[str, str, str, bool]]] = defaultdict(set)
    for grant in pipeline_grants(prefix):
        found[grant.principal].add((grant.resource, grant.name, grant.operation, grant.prefixed))
    return found


def topics_with(principal: str, operation: str, prefix: str = "") -> set[str]:
    return {
        name
        for resource, name, op, _ in by_principal(prefix)[principal]
        if resource == TOPIC and op == operation
    }


def test_every_service_principal_has_grants_and_no_one_else():
    assert set(by_principal()) == set(SERVICE_PRINCIPALS)
    assert {access.principal for access in ACCESS} == set(SERVICE_PRINCIPALS)


def test_grants_name_only_the_projects_topics():
    for grants in by_principal().values():
        assert {name for resource, name, _, _ in grants if resource == TOPIC} <= TOPICS


def test_the_dashboard_only_reads():
    operations = {op for _, _, op, _ in by_principal()["dashboard"]}
    assert operations == {"READ", "DESCRIBE"}
    assert not any(resource == TRANSACTIONAL_ID for resource, *_ in by_principal()["dashboard"])


def test_each_service_writes_only_its_own_outputs():
    assert topics_with("producer", "WRITE") == {
        "new_trips",
        "finished_trips",
        "producer_checkpoints",
    }
    assert topics_with("predictor", "WRITE") == {
        "ml_predictions",
        "shadow_predictions",
        "dead_letters",
    }
    assert "ml_predictions" not in topics_with("producer", "READ")
    assert "new_trips" not in topics_with("aggregator", "WRITE")
    assert topics_with("predictor", "READ") == {"new_trips", "model_registry", "model_deployments"}


def test_no_two_principals_share_a_group_or_a_transactional_id_prefix():
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for principal, grants in by_principal().items():
        for resource, name, operation, _ in grants:
            if resource == TRANSACTIONAL_ID or (resource == GROUP and operation == "READ"):
                owners[(resource, name)].add(principal)
    assert all(len(principals) == 1 for principals in owners.values()), owners
    for principal, grants in by_principal().items():
        prefixes = {name for resource, name, _, prefixed in grants if prefixed}
        assert all(name.startswith(f"taxi-{principal}-") for name in prefixes), principal


def test_a_topic_prefix_moves_the_topics_and_groups_not_the_transactional_ids():
    plain, prefixed = by_principal(), by_principal("blue.")
    assert topics_with("predictor", "READ", "blue.") == {
        f"blue.{name}" for name in topics_with("predictor", "READ")
    }
    assert ("group", "blue.taxi-predictor", "READ", False) in prefixed["predictor"]
    transactional = {g for g in plain["predictor"] if g[0] == TRANSACTIONAL_ID}
    assert transactional <= prefixed["predictor"]


def test_a_grant_becomes_an_allow_binding_from_any_host():
    grant = next(g for g in pipeline_grants() if g.resource == TRANSACTIONAL_ID)
    acl = binding(grant)
    assert acl.restype == ResourceType.TRANSACTIONAL_ID
    assert acl.resource_pattern_type == ResourcePatternType.PREFIXED
    assert acl.principal == f"User:{grant.principal}"
    assert acl.host == "*"
    assert acl.operation == AclOperation[grant.operation]
