"""The Confluent wire format without a registry process: framing detection, decoding
through a writer schema fetched by id, the registry client's answers to every kind
of registry behaviour (httpx's MockTransport), and the per-id cache.

The same against a real registry: tests/integration/test_confluent_format.py."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastavro import parse_schema, schemaless_writer

from consumer.adapters.codec import (
    AVRO_MAGIC,
    MAX_SCHEMA_ID,
    Codec,
    CodecError,
    UnknownWriterSchema,
    confluent_frame,
    confluent_schema_id,
    parse_writer_schema,
)
from consumer.adapters.registry import (
    ConfluentEncoder,
    RegistryClient,
    RegistryRefused,
    RegistrySchemas,
    SchemaNotFound,
)
from consumer.adapters.wire import BadInput, WireDecoder
from consumer.config import ConfigError, load_settings
from consumer.domain.events import BookingConfirmed, EventKind, UserActivity
from consumer.service.ports import Unavailable

REPO = Path(__file__).resolve().parents[2]
CODEC = Codec.load()
URL = "http://registry.test/apis/ccompat/v7"
T0 = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)

ACTIVITY = json.loads((REPO / "schemas/user_activity.avsc").read_text())
CONFIRMED = json.loads((REPO / "schemas/booking_confirmed.avsc").read_text())
CONFIRMED_V1 = json.loads((REPO / "schemas/history/booking_confirmed.v1.avsc").read_text())
# A producer a step ahead: one more optional field than the reader knows.
ACTIVITY_NEXT = {
    **ACTIVITY,
    "fields": [
        *ACTIVITY["fields"],
        {"name": "device", "type": ["null", "string"], "default": None},
    ],
}
# The same record under another namespace (how another team might declare it).
ACTIVITY_OTHER_NAMESPACE = {**ACTIVITY, "namespace": "com.example.producer"}

ACTIVITY_RECORD: dict[str, Any] = {
    "event_id": "ev-1",
    "occurred_at": T0,
    "user_id": "u-1",
    "activity_type": "login",
    "conversation_id": None,
}

CONFIRMED_RECORD: dict[str, Any] = {
    "event_id": "ev-3",
    "occurred_at": T0,
    "user_id": "u-3",
    "booking_id": "b-3",
    "event_date": T0,
    "conversation_id": None,
    "timezone": None,
}


def body(schema: Any, record: Any) -> bytes:
    out = BytesIO()
    schemaless_writer(out, parse_schema(schema, {}), record)
    return out.getvalue()


def framed(schema_id: int, schema: Any, record: Any) -> bytes:
    return confluent_frame(schema_id) + body(schema, record)


# --- a registry in memory, behind httpx's MockTransport ------------------------------


class FakeRegistry:
    """Answers like Apicurio's Confluent API; `fail` makes the next answers outages."""

    def __init__(self, schemas: dict[int, Any] | None = None) -> None:
        self.schemas: dict[int, tuple[str, str]] = {
            i: ("AVRO", json.dumps(s)) for i, s in (schemas or {}).items()
        }
        self.subjects: dict[str, int] = {}
        self.requests: list[httpx2.Request] = []
        self.fail: list[Callable[[httpx2.Request], httpx2.Response]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let concurrent requests overlap
            if self.fail:
                return self.fail.pop(0)(request)
            return self._answer(request)
        finally:
            self.in_flight -= 1

    def _answer(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path.removeprefix("/apis/ccompat/v7")
        if request.method == "GET" and path.startswith("/schemas/ids/"):
            found = self.schemas.get(int(path.rsplit("/", 1)[1]))
            if found is None:
                return httpx2.Response(404, json={"error_code": 40403, "message": "not found"})
            kind, text = found
            return httpx2.Response(200, json={"schema": text, **_type_field(kind)})
        if request.method == "POST" and path.startswith("/subjects/"):
            subject = path.split("/")[2]
            text = json.loads(request.content)["schema"]
            if subject not in self.subjects:
                self.subjects[subject] = max(self.schemas, default=0) + 1
                self.schemas[self.subjects[subject]] = ("AVRO", text)
            return httpx2.Response(200, json={"id": self.subjects[subject]})
        return httpx2.Response(404, text="<html>no such page</html>")

    def client(self, **options: Any) -> RegistryClient:
        options.setdefault("retry_delay", 0.0)
        return RegistryClient(URL, transport=httpx2.MockTransport(self.handle), **options)


def _type_field(kind: str) -> dict[str, str]:
    return {} if kind == "AVRO" else {"schemaType": kind}


def refuse_connection(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("connection refused", request=request)


def time_out(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ReadTimeout("timed out", request=request)


def server_error(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(503, json={"error_code": 50301, "message": "overloaded"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- framing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (b"", None),
        (b"\x00", None),
        (b"\x00\x00\x00\x01", None),  # a header cut short has no id
        (b"\x00\x00\x00\x00\x07", 7),
        (b"\x00\x00\x00\x01\x00" + b"body", 256),
        (b"\x00\x7f\xff\xff\xff", MAX_SCHEMA_ID),
        (b"\x00\xff\xff\xff\xff", 2**32 - 1),
        (AVRO_MAGIC + b"\x00" * 8, None),
        (b'{"event_id": "x"}', None),
        (b"\x01\x00\x00\x00\x07", None),
    ],
)
def test_the_first_byte_tells_the_confluent_format_apart(
    value: bytes | None, expected: int | None
) -> None:
    assert confluent_schema_id(value) == expected


def test_the_frame_is_a_zero_byte_and_the_id_big_endian() -> None:
    assert confluent_frame(1) == b"\x00\x00\x00\x00\x01"
    assert confluent_frame(0x01020304) == b"\x00\x01\x02\x03\x04"
    assert confluent_schema_id(confluent_frame(MAX_SCHEMA_ID)) == MAX_SCHEMA_ID


# --- decoding through writer schemas by id ------------------------------------------------


async def prepared(registry: FakeRegistry, *values: bytes) -> WireDecoder:
    decoder = WireDecoder(CODEC, RegistrySchemas(registry.client()))
    await decoder.prepare(values)
    return decoder


async def test_a_value_written_with_the_current_schema_decodes() -> None:
    value = framed(3, ACTIVITY, ACTIVITY_RECORD)
    decoder = await prepared(FakeRegistry({3: ACTIVITY}), value)
    assert decoder(EventKind.USER_ACTIVITY, value) == UserActivity("ev-1", T0, "u-1", "login", None)


@pytest.mark.parametrize("writer", [ACTIVITY_NEXT, ACTIVITY_OTHER_NAMESPACE])
async def test_a_compatible_writer_schema_is_resolved_into_the_reader(writer: Any) -> None:
    record = {**ACTIVITY_RECORD, "device": "phone"} if writer is ACTIVITY_NEXT else ACTIVITY_RECORD
    value = framed(9, writer, record)
    decoder = await prepared(FakeRegistry({9: writer}), value)
    event = decoder(EventKind.USER_ACTIVITY, value)
    assert isinstance(event, UserActivity)
    assert (event.event_id, event.occurred_at, event.activity_type) == ("ev-1", T0, "login")


async def test_an_older_writer_schema_gets_the_readers_defaults() -> None:
    record = {
        "event_id": "ev-2",
        "occurred_at": T0,
        "user_id": "u-2",
        "booking_id": "b-2",
        "event_date": T0,
    }
    value = framed(4, CONFIRMED_V1, record)
    decoder = await prepared(FakeRegistry({4: CONFIRMED_V1}), value)
    event = decoder(EventKind.BOOKING_CONFIRMED, value)
    assert isinstance(event, BookingConfirmed)
    assert (event.conversation_id, event.timezone) == ("booking_b-2", None)


async def test_identical_writer_and_reader_skip_resolution() -> None:
    writer = parse_writer_schema(json.dumps(ACTIVITY))
    # A writer that only looks the same (same canonical form, another logical type)
    # is resolved: the Parsing Canonical Form would have called them equal.
    plain_long = {
        **ACTIVITY,
        "fields": [
            {**f, "type": "long"} if f["name"] == "occurred_at" else f for f in ACTIVITY["fields"]
        ],
    }
    assert writer.identity != parse_writer_schema(json.dumps(plain_long)).identity
    assert writer.identity == parse_writer_schema(json.dumps(ACTIVITY, indent=2)).identity


@pytest.mark.parametrize(
    ("value", "error_type", "mentions"),
    [
        (framed(404, ACTIVITY, ACTIVITY_RECORD), "decode_error", "schema id 404"),
        (framed(MAX_SCHEMA_ID + 1, ACTIVITY, ACTIVITY_RECORD), "decode_error", "out of range"),
        (b"\x00\x00\x01", "decode_error", "truncated Confluent"),
        (framed(3, ACTIVITY, ACTIVITY_RECORD)[:-3], "decode_error", "invalid Avro body"),
        (framed(3, ACTIVITY, ACTIVITY_RECORD) + b"\x00", "decode_error", "trailing"),
        # Another record entirely: readable, but not as this topic's schema.
        (framed(5, CONFIRMED, CONFIRMED_RECORD), "schema_error", "schema id 5"),
        (framed(6, "string", "just text"), "schema_error", "schema id 6"),
        (framed(7, ACTIVITY, ACTIVITY_RECORD), "decode_error", "JSON schema, not Avro"),
        (framed(8, ACTIVITY, ACTIVITY_RECORD), "decode_error", "not a valid Avro schema"),
    ],
)
async def test_values_that_can_never_decode_are_bad_input_naming_why(
    value: bytes, error_type: str, mentions: str
) -> None:
    registry = FakeRegistry({3: ACTIVITY, 5: CONFIRMED, 6: "string"})
    registry.schemas[7] = ("JSON", '{"type": "object"}')
    registry.schemas[8] = ("AVRO", '{"type": "no-such-type"}')
    decoder = await prepared(registry, value)
    with pytest.raises(BadInput) as caught:
        decoder(EventKind.USER_ACTIVITY, value)
    assert caught.value.error_type == error_type
    assert mentions in caught.value.message


def test_without_a_registry_a_confluent_value_is_bad_input_saying_so() -> None:
    value = framed(3, ACTIVITY, ACTIVITY_RECORD)
    with pytest.raises(BadInput) as caught:
        WireDecoder(CODEC)(EventKind.USER_ACTIVITY, value)
    assert caught.value.error_type == "decode_error"
    assert "SCHEMA_REGISTRY_URL" in caught.value.message
    assert "schema id 3" in caught.value.message


async def test_single_object_and_json_values_keep_decoding_beside_confluent_ones() -> None:
    values = [
        framed(3, ACTIVITY, ACTIVITY_RECORD),
        CODEC.encode_avro("user_activity", ACTIVITY_RECORD),
        CODEC.encode_json("user_activity", ACTIVITY_RECORD),
    ]
    registry = FakeRegistry({3: ACTIVITY})
    decoder = await prepared(registry, *values)
    events = {decoder(EventKind.USER_ACTIVITY, v) for v in values}
    assert len(events) == 1
    # Only the Confluent value's id was asked for.
    assert [r.url.path for r in registry.requests] == ["/apis/ccompat/v7/schemas/ids/3"]


def test_decoding_an_id_that_was_not_prefetched_waits_instead_of_dead_lettering() -> None:
    decoder = WireDecoder(CODEC, RegistrySchemas(FakeRegistry({3: ACTIVITY}).client()))
    with pytest.raises(Unavailable, match="not fetched"):
        decoder(EventKind.USER_ACTIVITY, framed(3, ACTIVITY, ACTIVITY_RECORD))


def test_encode_confluent_round_trips_with_the_codec() -> None:
    record = {**ACTIVITY_RECORD}
    value = CODEC.encode_confluent("user_activity", record, 12)
    assert value[:5] == b"\x00\x00\x00\x00\x0c"
    assert value[5:] == CODEC.encode_avro("user_activity", record)[10:]


# --- the client ---------------------------------------------------------------------------


async def test_the_client_fetches_a_schema_by_id() -> None:
    registry = FakeRegistry({3: ACTIVITY})
    kind, text = await registry.client().schema(3)
    assert (kind, json.loads(text)) == ("AVRO", ACTIVITY)
    assert str(registry.requests[0].url) == f"{URL}/schemas/ids/3"


async def test_only_the_registrys_own_not_found_means_an_unknown_id() -> None:
    registry = FakeRegistry()
    with pytest.raises(SchemaNotFound, match="schema id 3"):
        await registry.client().schema(3)
    # A 404 that is not the Confluent API's (a wrong URL, a proxy's page) is no
    # verdict on the id: every value would be dead-lettered for a typo.
    registry.fail = [lambda r: httpx2.Response(404, text="<html>Not Found</html>")]
    with pytest.raises(Unavailable, match="404"):
        await registry.client().schema(3)


@pytest.mark.parametrize("failure", [refuse_connection, time_out, server_error])
async def test_an_outage_is_retried_then_unavailable(
    failure: Callable[[httpx2.Request], httpx2.Response],
) -> None:
    registry = FakeRegistry({3: ACTIVITY})
    registry.fail = [failure] * 2
    assert (await registry.client(attempts=3).schema(3))[0] == "AVRO"  # third try answers
    registry.fail = [failure] * 3
    with pytest.raises(Unavailable, match="schema registry"):
        await registry.client(attempts=3).schema(3)
    assert len(registry.requests) == 6


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_an_outage_not_an_unknown_id(status: int) -> None:
    registry = FakeRegistry({3: ACTIVITY})
    registry.fail = [lambda r: httpx2.Response(status, json={"error_code": status})]
    with pytest.raises(Unavailable, match=str(status)):
        await registry.client().schema(3)


async def test_basic_auth_and_the_timeout_are_applied() -> None:
    registry = FakeRegistry({3: ACTIVITY})
    client = registry.client(auth=("svc", "s3cret"), timeout=1.5)
    await client.schema(3)
    expected = "Basic " + base64.b64encode(b"svc:s3cret").decode()
    assert registry.requests[0].headers["Authorization"] == expected
    assert registry.requests[0].extensions["timeout"]["read"] == 1.5
    await client.aclose()


async def test_registering_returns_the_id_and_quotes_the_subject() -> None:
    registry = FakeRegistry()
    client = registry.client()
    first = await client.register("followup.due-value", CODEC.schema_text("followup_due"))
    assert first == await client.register("followup.due-value", "{}")  # idempotent here
    request = registry.requests[0]
    assert request.url.path == "/apis/ccompat/v7/subjects/followup.due-value/versions"
    assert request.headers["Content-Type"] == "application/vnd.schemaregistry.v1+json"
    assert json.loads(json.loads(request.content)["schema"]) == json.loads(
        (REPO / "schemas/followup_due.avsc").read_text()
    )


@pytest.mark.parametrize("status", [401, 409, 422])
async def test_a_registration_the_registry_refuses_is_not_retried(status: int) -> None:
    registry = FakeRegistry()
    registry.fail = [lambda r: httpx2.Response(status, json={"message": "incompatible"})]
    with pytest.raises(RegistryRefused, match=f"{status} incompatible"):
        await registry.client().register("s-value", "{}")
    assert len(registry.requests) == 1


# --- the cache ----------------------------------------------------------------------------


async def test_each_schema_is_fetched_once() -> None:
    registry = FakeRegistry({3: ACTIVITY, 4: CONFIRMED})
    schemas = RegistrySchemas(registry.client())
    await schemas.prefetch([3, 4, 3])
    await schemas.prefetch([4, 3])
    assert schemas.fetches == len(registry.requests) == 2
    assert schemas(3).name == "com.booking.followups.UserActivity"


async def test_an_unknown_id_is_remembered_for_a_while_then_asked_again() -> None:
    clock = Clock()
    registry = FakeRegistry()
    schemas = RegistrySchemas(registry.client(), unknown_ttl=60, clock=clock)
    await schemas.prefetch([3])
    await schemas.prefetch([3])
    assert len(registry.requests) == 1
    with pytest.raises(UnknownWriterSchema, match="schema id 3"):
        schemas(3)
    clock.now += 61
    registry.schemas[3] = ("AVRO", json.dumps(ACTIVITY))  # registered meanwhile
    await schemas.prefetch([3])
    assert len(registry.requests) == 2
    assert schemas(3).name.endswith("UserActivity")


async def test_ids_out_of_range_cost_no_request() -> None:
    registry = FakeRegistry()
    schemas = RegistrySchemas(registry.client())
    await schemas.prefetch([MAX_SCHEMA_ID + 1, 2**32 - 1])
    assert registry.requests == []
    with pytest.raises(UnknownWriterSchema, match="out of range"):
        schemas(2**32 - 1)


async def test_an_outage_fails_the_prefetch_and_keeps_what_arrived() -> None:
    registry = FakeRegistry({3: ACTIVITY, 4: CONFIRMED})
    schemas = RegistrySchemas(registry.client(attempts=1), concurrency=1)
    registry.fail = [lambda r: registry._answer(r), refuse_connection]
    with pytest.raises(Unavailable):
        await schemas.prefetch([3, 4])
    assert schemas(3).name.endswith("UserActivity")
    with pytest.raises(Unavailable, match="not fetched"):
        schemas(4)
    await schemas.prefetch([3, 4])  # the registry is back: only 4 is asked for
    assert [r.url.path.rsplit("/", 1)[1] for r in registry.requests] == ["3", "4", "4"]


async def test_requests_are_bounded_in_flight() -> None:
    registry = FakeRegistry()
    schemas = RegistrySchemas(registry.client(), concurrency=3)
    await schemas.prefetch(range(1, 50))
    assert len(registry.requests) == 49
    assert registry.most_in_flight == 3


async def test_endless_unknown_ids_do_not_grow_the_cache_forever() -> None:
    registry = FakeRegistry()
    schemas = RegistrySchemas(registry.client(), max_unknown=10)
    await schemas.prefetch(range(1, 21))
    with pytest.raises(UnknownWriterSchema):
        schemas(20)  # everything this batch fetched is there for its decoding
    await schemas.prefetch([21])
    assert len(schemas._unknown) == 1


# --- our schema, registered -----------------------------------------------------------------


async def test_the_encoder_registers_once_and_frames_with_the_id() -> None:
    registry = FakeRegistry({1: ACTIVITY})
    encoder = ConfluentEncoder(registry.client(), CODEC, "user_activity", "t.user.activity-value")
    with pytest.raises(RuntimeError):
        encoder.encode(ACTIVITY_RECORD)
    ids = await asyncio.gather(*(encoder.register() for _ in range(5)))
    assert ids == [2] * 5
    assert len(registry.requests) == 1
    value = encoder.encode(ACTIVITY_RECORD)
    assert confluent_schema_id(value) == 2
    schemas = RegistrySchemas(registry.client())
    await schemas.prefetch([2])
    assert CODEC.decode("user_activity", value, schemas) == {**ACTIVITY_RECORD, "locale": None}


# --- settings ---------------------------------------------------------------------------


def test_the_confluent_output_format_needs_a_registry() -> None:
    with pytest.raises(
        ConfigError, match="FOLLOWUP_DUE_FORMAT=confluent needs SCHEMA_REGISTRY_URL"
    ):
        load_settings(followup_due_format="confluent", schema_registry_url="")
    s = load_settings(followup_due_format="confluent", schema_registry_url=URL + "/")
    assert s.schema_registry_url == URL


@pytest.mark.parametrize(
    ("overrides", "mentions"),
    [
        ({"schema_registry_url": "registry:8081"}, "SCHEMA_REGISTRY_URL"),
        ({"schema_registry_url": URL, "schema_registry_username": "u"}, "go together"),
        ({"schema_registry_url": URL, "schema_registry_password": "p"}, "go together"),
        ({"schema_registry_timeout_seconds": 0}, "SCHEMA_REGISTRY_TIMEOUT_SECONDS"),
    ],
)
def test_registry_settings_are_checked(overrides: dict[str, Any], mentions: str) -> None:
    with pytest.raises(ConfigError, match=mentions):
        load_settings(**overrides)


def test_the_registry_password_is_a_secret() -> None:
    s = load_settings(
        schema_registry_url=URL, schema_registry_username="u", schema_registry_password="pw"
    )
    assert "pw" not in repr(s)


def test_a_truncated_frame_is_a_codec_error_without_a_registry_too() -> None:
    with pytest.raises(CodecError):
        CODEC.decode("user_activity", b"\x00\x00")
