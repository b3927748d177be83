"""The secure cluster's secrets: made once, private, reused, renewed before they expire."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from taxi_kafka.cluster._secrets import (
    CERT_LIFETIME,
    PRINCIPALS,
    RENEW_BEFORE,
    ensure_secrets,
    write_private,
)

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
NODES = (1, 2, 3)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def chain(path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_everything_is_made_private_and_the_node_certificates_chain_to_the_ca(tmp_path):
    found = ensure_secrets(tmp_path / "secrets", NODES, now=NOW)
    assert mode(found.directory) == 0o700
    assert {mode(p) for p in found.directory.iterdir()} == {0o600}
    (ca,) = chain(found.ca_file)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for node in NODES:
        key_store = found.node_key_store(node)
        key = serialization.load_pem_private_key(key_store.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        leaf, issuer = chain(key_store)
        assert issuer == ca
        leaf.verify_directly_issued_by(ca)
        assert leaf.public_key() == key.public_key()
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["localhost"]
        assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.SERVER_AUTH in usages
        assert leaf.not_valid_after_utc <= NOW + CERT_LIFETIME


def test_each_principal_has_its_own_password_and_client_config(tmp_path):
    found = ensure_secrets(tmp_path, NODES, now=NOW)
    assert set(PRINCIPALS) | {"broker"} == set(found.passwords)
    assert len(set(found.passwords.values())) == len(found.passwords)
    assert all(len(password) >= 32 for password in found.passwords.values())
    lines = found.client_config("predictor").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    assert settings == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "predictor",
        "sasl.password": found.passwords["predictor"],
        "ssl.ca.location": str(found.ca_file),
    }
    # The nodes' own password is theirs alone: no client config names it.
    assert not found.client_config("broker").exists()


def test_a_second_run_reuses_everything(tmp_path):
    first = ensure_secrets(tmp_path, NODES, now=NOW)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    second = ensure_secrets(tmp_path, NODES, now=NOW + datetime.timedelta(days=100))
    assert second.passwords == first.passwords
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_certificates_about_to_expire_are_renewed_and_the_passwords_kept(tmp_path):
    first = ensure_secrets(tmp_path, NODES, now=NOW)
    old_ca = first.ca_file.read_bytes()
    later = NOW + CERT_LIFETIME - RENEW_BEFORE + datetime.timedelta(days=1)
    second = ensure_secrets(tmp_path, NODES, now=later)
    assert second.passwords == first.passwords
    assert second.ca_file.read_bytes() != old_ca
    (ca,) = chain(second.ca_file)
    for node in NODES:
        leaf, _ = chain(second.node_key_store(node))
        leaf.verify_directly_issued_by(ca)
        assert leaf.not_valid_after_utc > later + RENEW_BEFORE


def test_a_lost_node_certificate_is_made_again_under_the_same_ca(tmp_path):
    first = ensure_secrets(tmp_path, NODES, now=NOW)
    ca = first.ca_file.read_bytes()
    first.node_key_store(2).unlink()
    second = ensure_secrets(tmp_path, NODES, now=NOW)
    assert second.ca_file.read_bytes() == ca
    leaf, _ = chain(second.node_key_store(2))
    leaf.verify_directly_issued_by(chain(second.ca_file)[0])


def test_private_files_stay_private_whatever_the_umask_or_their_old_mode(tmp_path):
    path = tmp_path / "secret"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text() == "new"
    assert mode(path) == 0o600


@pytest.mark.parametrize("broken", ["not a certificate", ""])
def test_an_unreadable_ca_is_made_again(tmp_path, broken):
    first = ensure_secrets(tmp_path, NODES, now=NOW)
    first.ca_file.write_text(broken)
    second = ensure_secrets(tmp_path, NODES, now=NOW)
    (ca,) = chain(second.ca_file)
    leaf, _ = chain(second.node_key_store(1))
    leaf.verify_directly_issued_by(ca)


def alt_names(path) -> set[str]:
    extension = chain(path)[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return {str(name.value) for name in extension.value}


def test_node_hosts_go_into_the_certificates_and_one_without_them_is_made_again(tmp_path):
    local = ensure_secrets(tmp_path, NODES, now=NOW)
    for n in NODES:
        assert alt_names(local.node_key_store(n)) == {"localhost", "127.0.0.1"}
    before = {n: local.node_key_store(n).read_bytes() for n in NODES}
    hosts = {n: (f"kafka-{n}",) for n in NODES}
    compose = ensure_secrets(tmp_path, NODES, now=NOW, node_hosts=hosts)
    for n in NODES:
        assert alt_names(compose.node_key_store(n)) == {f"kafka-{n}", "localhost", "127.0.0.1"}
        assert compose.node_key_store(n).read_bytes() != before[n]
    again = {n: compose.node_key_store(n).read_bytes() for n in NODES}
    ensure_secrets(tmp_path, NODES, now=NOW, node_hosts=hosts)
    assert {n: compose.node_key_store(n).read_bytes() for n in NODES} == again


def test_client_configs_can_name_the_ca_where_a_container_mounts_it(tmp_path):
    found = ensure_secrets(tmp_path, NODES, now=NOW, ca_location=Path("/run/secrets/ca.pem"))
    text = found.client_config("predictor").read_text()
    assert "ssl.ca.location=/run/secrets/ca.pem\n" in text
    assert found.client_settings("predictor")["ssl.ca.location"] == str(found.ca_file)
