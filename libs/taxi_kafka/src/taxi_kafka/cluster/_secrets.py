"""The secure cluster's secrets: a CA, a certificate per node, and a SCRAM password per principal.

Made on first use in one directory (mode 0700, every file 0600) and reused after that, so that
clients keep trusting the CA and keep their passwords across restarts. Certificates are renewed,
CA included, once they are within `RENEW_BEFORE` of expiring. Built with `cryptography` (the
Python Cryptographic Authority's, rather than keytool: no JKS passwords to manage): keys are EC
P-256, written as PEM (PKCS#8), which the brokers read as PEM key stores and librdkafka
reads as `ssl.ca.location`.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

SCRAM_MECHANISM = "SCRAM-SHA-512"
# The nodes' own principal: inter-broker (SCRAM) and controller (PLAIN) traffic, a super user.
BROKER_PRINCIPAL = "broker"
ADMIN_PRINCIPAL = "admin"
# One principal per service, and `admin`, the only one that may manage topics and ACLs.
SERVICE_PRINCIPALS: tuple[str, ...] = (
    "producer",
    "predictor",
    "aggregator",
    "trainer",
    "dashboard",
)
PRINCIPALS: tuple[str, ...] = (*SERVICE_PRINCIPALS, ADMIN_PRINCIPAL)

CERT_LIFETIME = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)
CA_FILE = "ca.pem"
_CA_KEY_FILE = "ca-key.pem"
_NODE_FILE = "node-{}.pem"
_PASSWORD_FILE = "{}.password"
_CLIENT_FILE = "{}.properties"
# Where the certificates are valid: the cluster listens on loopback only.
SUBJECT_ALT_NAMES = ("localhost", "127.0.0.1")


class SecretsError(RuntimeError):
    """The secrets directory cannot be used as it is; the message says why and what to do."""


def write_private(path: Path, data: bytes | str) -> None:
    """Write `path` readable by its owner only: created 0600, never widened by the umask."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, raw)
    finally:
        os.close(fd)


def client_properties(
    principal: str, password: str, ca_file: Path, bootstrap_servers: str | None = None
) -> dict[str, str]:
    """librdkafka settings for `principal` on the secure cluster."""
    settings = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": principal,
        "sasl.password": password,
        "ssl.ca.location": str(ca_file),
    }
    if bootstrap_servers:
        settings = {"bootstrap.servers": bootstrap_servers, **settings}
    return settings


def render_client_properties(settings: Mapping[str, str], comment: str) -> str:
    """A librdkafka-style properties file (key=value lines), as `--kafka-config` reads."""
    return "\n".join([f"# {comment}", *(f"{k}={v}" for k, v in settings.items())]) + "\n"


@dataclass(frozen=True)
class ClusterSecrets:
    """The files of one secrets directory, and the principals' passwords."""

    directory: Path
    passwords: Mapping[str, str]

    @property
    def ca_file(self) -> Path:
        return self.directory / CA_FILE

    def node_key_store(self, node_id: int) -> Path:
        """The node's private key and certificate chain, one PEM file."""
        return self.directory / _NODE_FILE.format(node_id)

    def client_config(self, principal: str) -> Path:
        """The principal's librdkafka properties: what `--kafka-config` names."""
        return self.directory / _CLIENT_FILE.format(principal)

    def client_settings(self, principal: str) -> dict[str, str]:
        return client_properties(principal, self.passwords[principal], self.ca_file)


def ensure_secrets(
    directory: Path,
    node_ids: Sequence[int],
    principals: Iterable[str] = PRINCIPALS,
    now: datetime.datetime | None = None,
    *,
    node_hosts: Mapping[int, Sequence[str]] | None = None,
    ca_location: Path | None = None,
    cluster: str = "the local secure cluster",
) -> ClusterSecrets:
    """The secrets in `directory`: reused, with whatever is missing or about to expire made.

    `node_hosts` adds host names to a node's certificate, besides SUBJECT_ALT_NAMES (docker
    compose's clients reach node N as kafka-N); a certificate without them is made again.
    `ca_location` is the CA's path that the client configs name (where a container mounts it)
    instead of the directory's ca.pem; `cluster` is what their comment says they are for."""
    now = now or datetime.datetime.now(datetime.UTC)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    renewed = _ensure_ca(directory, now)
    for node_id in node_ids:
        hosts = (*(node_hosts or {}).get(node_id, ()), *SUBJECT_ALT_NAMES)
        _ensure_node_certificate(directory, node_id, now, renewed, hosts)
    passwords = {
        name: _ensure_password(directory, name) for name in (BROKER_PRINCIPAL, *principals)
    }
    found = ClusterSecrets(directory, passwords)
    for name in principals:
        settings = client_properties(name, passwords[name], ca_location or found.ca_file)
        write_private(
            found.client_config(name),
            render_client_properties(
                settings, f"ML-taxi: the {name} principal on {cluster}. Keep it private."
            ),
        )
    return found


def _ensure_password(directory: Path, principal: str) -> str:
    path = directory / _PASSWORD_FILE.format(principal)
    if path.exists():
        return path.read_text().strip()
    # URL-safe: no character the JAAS or --add-scram syntax would need escaped.
    password = secrets.token_urlsafe(24)
    write_private(path, password + "\n")
    return password


def _ensure_ca(directory: Path, now: datetime.datetime) -> bool:
    """Make the CA if it is missing or expiring; True when it was (re)made."""

    cert_path, key_path = directory / CA_FILE, directory / _CA_KEY_FILE
    if cert_path.exists() and key_path.exists():
        if _still_valid(cert_path.read_bytes(), now):
            return False
        log.info("the CA in %s expires soon: making a new one", directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ML-taxi local CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CERT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _pem_key(key))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return True


def _alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """Each host as a SAN entry: an IP address where it is one, else a DNS name."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _has_alt_names(pem: bytes, wanted: Sequence[x509.GeneralName]) -> bool:
    try:
        extension = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except (ValueError, x509.ExtensionNotFound):
        return False
    return set(extension.value) == set(wanted)


def _ensure_node_certificate(
    directory: Path,
    node_id: int,
    now: datetime.datetime,
    ca_renewed: bool,
    hosts: Sequence[str] = SUBJECT_ALT_NAMES,
) -> None:

    path = directory / _NODE_FILE.format(node_id)
    alt_names = _alt_names(hosts)
    if (
        path.exists()
        and not ca_renewed
        and _still_valid(path.read_bytes(), now)
        and _has_alt_names(path.read_bytes(), alt_names)
    ):
        return
    ca_cert = x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes())
    ca_key = serialization.load_pem_private_key(
        (directory / _CA_KEY_FILE).read_bytes(), password=None
    )
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise SecretsError(f"{directory / _CA_KEY_FILE} is not the CA key this project makes")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ML-taxi node {node_id}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + CERT_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Kafka's PEM key store: the private key, then the certificate chain.
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    write_private(path, _pem_key(key) + chain)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _still_valid(pem: bytes, now: datetime.datetime) -> bool:

    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return False
    return cert.not_valid_after_utc - RENEW_BEFORE > now
