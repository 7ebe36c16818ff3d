"""The schema registry of `scripts/services` is a real Confluent-compatible one.

confluent-kafka's own SchemaRegistryClient and Avro serde (the ecosystem's clients,
not ours) register the service's `followup.due` schema, read it back by id, and
round-trip a value through the Confluent wire format (0x00, 4-byte schema id, Avro).

The registry's URL and confluent-kafka's client come from `ecosystem_registry`.
"""

from __future__ import annotations

import contextlib
import json
import struct
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.integration.conftest import REPO
from tests.integration.ecosystem_registry import (
    deserializer,
    registry_client,
    serializer,
)

pytestmark = pytest.mark.integration

FOLLOWUP_DUE = (REPO / "schemas" / "followup_due.avsc").read_text()


@pytest.fixture
def subject(client: SchemaRegistryClient) -> Iterator[str]:
    """A subject of this test alone, deleted afterwards (the dev registry allows it)."""
    name = f"followup.due.test-{uuid.uuid4().hex[:12]}-value"
    yield name
    with contextlib.suppress(Exception):
        client.delete_subject(name)
        client.delete_subject(name, permanent=True)


def test_registers_an_avro_schema_and_reads_it_back_by_id(
    registry_url: str, client: SchemaRegistryClient, subject: str
) -> None:
    schema_id = client.register_schema(subject, Schema(FOLLOWUP_DUE, "AVRO"))
    assert schema_id > 0

    # A second client has nothing cached: everything below is asked of the registry.
    with registry_client(registry_url) as fresh:
        fetched = fresh.get_schema(schema_id)
        assert fetched.schema_type in ("AVRO", None)  # Confluent omits the type for Avro
        assert fetched.schema_str is not None
        assert json.loads(fetched.schema_str) == json.loads(FOLLOWUP_DUE)

        latest = fresh.get_latest_version(subject)
        assert latest.schema_id == schema_id
        assert latest.version == 1
        assert subject in fresh.get_subjects()
        # Registering the same schema again is idempotent: same id, no new version.
        assert fresh.register_schema(subject, Schema(FOLLOWUP_DUE, "AVRO")) == schema_id
        assert fresh.get_versions(subject) == [1]


def test_confluent_wire_format_round_trip(
    registry_url: str, client: SchemaRegistryClient, subject: str
) -> None:
    serialize = serializer(client, FOLLOWUP_DUE, **{"subject.name.strategy": lambda *_: subject})
    # A separate client: the reader finds the writer schema by the id in the bytes.
    reader = registry_client(registry_url)
    deserialize = deserializer(reader)
    value = {
        "event_id": "f-1",
        "followup_id": "f-1",
        "user_id": "u-1",
        "conversation_id": "c-1",
        "trigger_type": "custom",
        "template_id": "custom",
        "message": "Hello again",
        "scheduled_at": datetime(2026, 3, 5, 9, 0, tzinfo=UTC),
        "emitted_at": datetime(2026, 3, 5, 9, 0, 1, tzinfo=UTC),
        "booking_id": None,
        "attempt": 1,
        "locale": "fr",
        "template_version": 2,
    }
    ctx = SerializationContext("followup.due", MessageField.VALUE)

    with reader:
        data = serialize(value, ctx)
        assert data is not None

        magic, schema_id = struct.unpack(">bI", data[:5])
        assert magic == 0
        assert schema_id == client.get_latest_version(subject).schema_id
        assert deserialize(data, ctx) == value
