"""Kafka client security: what `client_options` hands to every aiokafka client."""

from __future__ import annotations

import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consumer.adapters.kafka import client_options
from consumer.config import load_settings

SECRET = "s3cr3t-Pa55word-never-shown"


@pytest.fixture(autouse=True)
def _no_kafka_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes counts, not the KAFKA_* of the shell running pytest."""
    for name in list(os.environ):
        if name.upper().startswith("KAFKA_"):
            monkeypatch.delenv(name)


def _self_signed(tmp_path: Path, common_name: str) -> tuple[Path, Path, x509.Certificate]:
    """A throwaway self-signed CA certificate and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / f"{common_name}.pem"
    key_path = tmp_path / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert


def test_plaintext_is_bootstrap_and_protocol_only() -> None:
    options = client_options(load_settings(kafka_bootstrap_servers="k1:9092,k2:9092"))
    assert options == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}


def test_plaintext_ignores_credentials_it_does_not_use() -> None:
    settings = load_settings(kafka_sasl_username="app", kafka_sasl_password=SECRET)
    assert set(client_options(settings)) == {"bootstrap_servers", "security_protocol"}


def test_sasl_plaintext_with_scram_passes_mechanism_and_credentials() -> None:
    settings = load_settings(
        kafka_bootstrap_servers="broker:9094",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="followups",
        kafka_sasl_password=SECRET,
    )
    assert client_options(settings) == {
        "bootstrap_servers": "broker:9094",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "followups",
        "sasl_plain_password": SECRET,
    }


def test_sasl_mechanism_defaults_to_plain() -> None:
    settings = load_settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="followups",
        kafka_sasl_password=SECRET,
    )
    assert client_options(settings)["sasl_mechanism"] == "PLAIN"


@pytest.mark.parametrize("check_hostname", [True, False])
def test_ssl_builds_a_context_that_trusts_the_given_ca(
    tmp_path: Path, check_hostname: bool
) -> None:
    ca, _, cert = _self_signed(tmp_path, "followups-test-ca")
    settings = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(ca),
        kafka_ssl_check_hostname=check_hostname,
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SSL"
    assert not any(k.startswith("sasl") for k in options)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    loaded = context.get_ca_certs(binary_form=True)
    assert cert.public_bytes(serialization.Encoding.DER) in loaded


def test_ssl_loads_the_client_certificate_and_key(tmp_path: Path) -> None:
    ca, key, _ = _self_signed(tmp_path, "followups-client")
    settings = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(ca),
        kafka_ssl_certfile=str(ca),
        kafka_ssl_keyfile=str(key),
    )
    assert isinstance(client_options(settings)["ssl_context"], ssl.SSLContext)

    # A key that does not belong to the certificate is refused at once.
    _, other_key, _ = _self_signed(tmp_path, "someone-else")
    wrong = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=str(ca),
        kafka_ssl_keyfile=str(other_key),
    )
    with pytest.raises(ssl.SSLError):
        client_options(wrong)


def test_ssl_key_without_certificate_is_refused(tmp_path: Path) -> None:
    _, key, _ = _self_signed(tmp_path, "x")
    settings = load_settings(kafka_security_protocol="SSL", kafka_ssl_keyfile=str(key))
    with pytest.raises(ValueError, match="KAFKA_SSL_CERTFILE"):
        client_options(settings)


def test_sasl_ssl_has_both_context_and_credentials(tmp_path: Path) -> None:
    ca, _, _ = _self_signed(tmp_path, "followups-test-ca")
    settings = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="followups",
        kafka_sasl_password=SECRET,
        kafka_ssl_cafile=str(ca),
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname is True
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_password"] == SECRET


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        ({}, "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_username": "followups"}, "KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_password": SECRET}, "KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_username": "followups", "kafka_sasl_password": ""}, "KAFKA_SASL_PASSWORD"),
    ],
)
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_without_credentials_names_the_variables(
    protocol: str, overrides: dict[str, str], missing: str
) -> None:
    settings = load_settings(
        kafka_security_protocol=protocol, kafka_sasl_mechanism="SCRAM-SHA-512", **overrides
    )
    with pytest.raises(ValueError, match=missing) as caught:
        client_options(settings)
    assert SECRET not in str(caught.value)


def test_password_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "followups")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SECRET)
    settings = load_settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == SECRET
    for shown in (repr(settings), str(settings), repr(settings.model_dump())):
        assert SECRET not in shown


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
async def test_every_client_accepts_the_options(protocol: str) -> None:
    """aiokafka checks the combination when a client is built (names, mechanism,
    credentials, an SSLContext); nothing connects here."""
    options = client_options(
        load_settings(
            kafka_security_protocol=protocol,
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="followups",
            kafka_sasl_password=SECRET,
        )
    )
    producer = AIOKafkaProducer(**options)
    consumer = AIOKafkaConsumer(**options)
    admin = AIOKafkaAdminClient(**options)
    await producer.stop()
    await consumer.stop()
    await admin.close()
