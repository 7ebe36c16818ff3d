"""Generated hostile input against the codec and wire layer, and ingest's dead letters.

Whatever arrives in a Kafka value, `parse_event` returns an event that obeys the
input rules of `consumer.domain.limits`, or raises `BadInput` with one of the
three documented error types; nothing else escapes, so ingest dead-letters
every bad value and never stalls on one. Example counts are bounded (see
`EXAMPLES`) so that the whole file runs in a few seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path
from typing import Any, cast

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.adapters.codec import AVRO_MAGIC, Codec
from consumer.adapters.wire import (
    BadInput,
    WireDecoder,
    event_from_record,
    parse_event,
    validated_event,
)
from consumer.adapters.wire_fast import fast_event
from consumer.domain.events import EventKind, InputEvent
from consumer.domain.limits import identifier_problem, text_problem, timestamp_problem
from consumer.domain.model import default_conversation_id
from consumer.domain.policy import Policy
from consumer.service.ingest import Ingestor
from consumer.service.ports import DeadLetter

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
CODEC = Codec.load(SCHEMAS_DIR)
ERROR_TYPES = frozenset({"decode_error", "schema_error", "rule_violation"})
KINDS = st.sampled_from(list(EventKind))
EXAMPLES = 300
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # shared CI machines: time is not the property
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- the schemas, as strategies ----------------------------------------------------------


def _fields(kind: EventKind) -> list[tuple[str, str, bool]]:
    """(name, type, nullable) of every field of the current schema of `kind`."""
    raw = json.loads((SCHEMAS_DIR / f"{kind.value}.avsc").read_text())
    out = []
    for f in raw["fields"]:
        t, nullable = f["type"], False
        if isinstance(t, list):
            t, nullable = t[1], True
        if isinstance(t, dict):
            t = t.get("logicalType") or t["type"]
        out.append((f["name"], t, nullable))
    return out


def _fingerprint(schema: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


FIELDS = {kind: _fields(kind) for kind in EventKind}
# Every header a real Avro value can start with: current and older writer schemas.
AVRO_HEADERS = [
    *(AVRO_MAGIC + CODEC.fingerprint(k.value) for k in EventKind),
    AVRO_MAGIC
    + _fingerprint(json.loads((SCHEMAS_DIR / "history/booking_confirmed.v1.avsc").read_text())),
    AVRO_MAGIC + bytes(8),  # no such schema
]

offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60 - 59, 23 * 60 + 59)
)
# Anything Python can represent, with any offset; the edges of that range
# (year 1, year 9999) get their own share, since offsets push them over.
_any_offset = offsets | st.just(UTC)
any_instant = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=_any_offset
    ),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 2), timezones=_any_offset),
    st.datetimes(
        min_value=datetime(9999, 12, 30),
        max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
        timezones=_any_offset,
    ),
)
plausible_instant = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
)
# Text the schema accepts (no lone surrogates: those cannot even be encoded),
# including what the rules refuse: blank, NUL, too long, unknown time zones.
schema_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "\t\n", "a\x00b", "x" * 256, "Europe/Berlin", "Mars/Base", "😀"]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=250, max_size=260),
)
scores = st.floats(min_value=-0.5, max_value=1.5) | st.sampled_from([0.0, 1.0, 1e308, -0.0])


def _schema_value(kind: str, instants: st.SearchStrategy[datetime]) -> st.SearchStrategy[Any]:
    return {
        "string": schema_text,
        "timestamp-millis": instants,
        "double": scores,
        "float": scores,
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "boolean": st.booleans(),
    }[kind]


def records(
    kind: EventKind, instants: st.SearchStrategy[datetime] = plausible_instant
) -> st.SearchStrategy[dict[str, Any]]:
    """Records that fit the schema of `kind` (the rules may still refuse them)."""
    fields = {}
    for name, t, nullable in FIELDS[kind]:
        value = _schema_value(t, instants)
        fields[name] = st.none() | value if nullable else value
    return st.fixed_dictionaries(fields)


surrogates = st.characters(categories=["Cs"]).map(lambda c: f"x{c}y")
# JSON values of every shape, strings with lone surrogates and NUL among them.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    surrogates,
    any_instant.map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),  # no offset
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
# Python values of the wrong type (what a buggy codec or a replay could hand over).
python_values = st.one_of(
    json_values,
    st.binary(max_size=8),
    any_instant,
    st.datetimes(),  # naive
    st.floats(),  # nan, inf
    st.just(object()),
)


# --- what every outcome must look like -------------------------------------------------


def _outcome(decode: Callable[[], InputEvent]) -> InputEvent | BadInput:
    try:
        event = decode()
    except BadInput as exc:
        refused = exc
    else:
        return _accepted(event)
    assert refused.error_type in ERROR_TYPES, refused
    assert refused.message.strip(), refused
    return refused


def _accepted(event: InputEvent) -> InputEvent:
    # Accepted: then PostgreSQL accepts it too (the rules held).
    for name in ("event_id", "user_id", "booking_id", "conversation_id", "message_id"):
        value = getattr(event, name, None)
        if name == "conversation_id" and value == default_conversation_id(
            getattr(event, "booking_id", "")
        ):
            # Derived, not received: "booking_" + an id of up to 255 characters.
            assert text_problem(value) is None, value
        elif value is not None:
            assert identifier_problem(value) is None, (name, value)
    for name in ("occurred_at", "event_date"):
        value = getattr(event, name, None)
        if value is not None:
            assert timestamp_problem(value) is None, (name, value)
            assert value.tzinfo is UTC
    for name in ("reason", "label", "activity_type", "timezone"):
        value = getattr(event, name, None)
        if value is not None:
            assert text_problem(value) is None, (name, value)
    score = getattr(event, "score", None)
    if score is not None:
        assert math.isfinite(score)
        assert 0.0 <= score <= 1.0
    return event


def outcome(kind: EventKind, value: bytes | None) -> InputEvent | BadInput:
    return _outcome(lambda: parse_event(kind, value, CODEC))


def _as_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


# --- byte-level mutation -----------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` with a few random edits: flip, overwrite, insert, delete, truncate."""
    out = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "extend"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and out:
            out[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xC3, 0xFE, 0xFF]))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and out:
            del out[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del out[at:]
        elif op == "extend":
            out += draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


# --- properties ----------------------------------------------------------------------------


@SETTINGS
@given(
    kind=KINDS,
    value=st.one_of(
        st.none(),
        st.binary(max_size=200),
        st.tuples(st.sampled_from(AVRO_HEADERS), st.binary(max_size=120)).map(b"".join),
        st.binary(max_size=60).map(lambda b: b"{" + b),
        # Nesting deeper than Python's recursion limit, closed or not.
        st.builds(
            lambda opener, depth, closed: opener * depth + (b"]" * depth if closed else b""),
            st.sampled_from([b"[", b'{"a":', b'{"event_id":[']),
            st.integers(0, 5000),
            st.booleans(),
        ),
    ),
)
def test_arbitrary_bytes_give_an_event_or_bad_input(kind: EventKind, value: bytes | None) -> None:
    outcome(kind, value)


@SETTINGS
@given(data=st.data(), kind=KINDS)
def test_mutated_avro_gives_an_event_or_bad_input(data: st.DataObject, kind: EventKind) -> None:
    valid = CODEC.encode_avro(kind.value, data.draw(records(kind)))
    outcome(kind, data.draw(mutated(valid)))


def _raw_long_writer(kind: EventKind) -> Any:
    """The current schema of `kind` with timestamps as plain longs: the same
    fingerprint (logical types are not part of the canonical form), any long."""
    raw = json.loads((SCHEMAS_DIR / f"{kind.value}.avsc").read_text())
    for f in raw["fields"]:
        if isinstance(f["type"], dict):
            f["type"] = f["type"]["type"]
    return parse_schema(raw, {})


RAW_LONG_WRITERS = {kind: _raw_long_writer(kind) for kind in EventKind}


@SETTINGS
@given(data=st.data(), kind=KINDS)
def test_avro_with_any_timestamp_long_gives_an_event_or_bad_input(
    data: st.DataObject, kind: EventKind
) -> None:
    # Avro carries milliseconds since the epoch as a long: most longs are no
    # date Python can represent.
    record = data.draw(records(kind))
    for name, t, _ in FIELDS[kind]:
        if t == "timestamp-millis":
            record[name] = data.draw(
                st.integers(-(2**63), 2**63 - 1)
                | st.integers(-62_135_596_800_000, 253_402_300_799_999)
            )
    out = BytesIO()
    out.write(AVRO_MAGIC + CODEC.fingerprint(kind.value))
    schemaless_writer(out, RAW_LONG_WRITERS[kind], record)
    outcome(kind, out.getvalue())


@SETTINGS
@given(data=st.data(), kind=KINDS)
def test_json_with_any_representable_instant_gives_an_event_or_bad_input(
    data: st.DataObject, kind: EventKind
) -> None:
    # JSON carries ISO-8601 text with an offset: every instant and offset Python can parse.
    record = data.draw(records(kind, any_instant))
    outcome(kind, json.dumps({k: _as_json(v) for k, v in record.items()}).encode())


@SETTINGS
@given(data=st.data(), kind=KINDS)
def test_mutated_json_gives_an_event_or_bad_input(data: st.DataObject, kind: EventKind) -> None:
    obj: dict[str, Any] = {k: _as_json(v) for k, v in data.draw(records(kind, any_instant)).items()}
    # Structural edits: a field of the wrong type or shape, a field missing, one added.
    for name in data.draw(st.lists(st.sampled_from(sorted(obj)), max_size=3)):
        edit = data.draw(st.sampled_from(["replace", "drop"]))
        if edit == "replace":
            obj[name] = data.draw(json_values)
        else:
            obj.pop(name, None)
    if data.draw(st.booleans()):
        obj[data.draw(st.text(max_size=5))] = data.draw(json_values)
    top: Any = obj if data.draw(st.integers(0, 9)) else data.draw(json_values)
    value = json.dumps(top, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")
    if data.draw(st.booleans()):
        value = data.draw(mutated(value))
    outcome(kind, value)


@SETTINGS
@given(data=st.data(), kind=KINDS)
def test_wrong_typed_fields_give_an_event_or_bad_input(
    data: st.DataObject, kind: EventKind
) -> None:
    record: dict[str, Any] = data.draw(records(kind))
    for name in data.draw(st.lists(st.sampled_from(sorted(record)), min_size=1, max_size=3)):
        record[name] = data.draw(python_values)
    _outcome(lambda: event_from_record(kind, record))


def _validated(kind: EventKind, record: dict[str, Any]) -> InputEvent | BadInput:
    try:
        return validated_event(kind, record)
    except BadInput as exc:
        return exc


_PLAUSIBLE_TEXT = {
    "timezone": st.sampled_from(["Europe/Paris", "America/New_York", "UTC", "Asia/Tokyo"]),
    "locale": st.sampled_from(["fr", "fr-CA", "en", "de-DE", "pt-br"]),
}


# Just outside the range, and what is no number at all.
_EDGE_SCORES = [-1e-9, 1.0000001, 1.5, -0.5, math.nan, math.inf, -math.inf]


def plausible_records(kind: EventKind) -> st.SearchStrategy[dict[str, Any]]:
    """Records the rules accept, mostly: the base the fast path's cases start from."""
    fields = {}
    for name, t, nullable in FIELDS[kind]:
        if t == "string":
            value: st.SearchStrategy[Any] = _PLAUSIBLE_TEXT.get(
                name, st.from_regex(r"[a-z0-9-]{1,24}", fullmatch=True)
            )
        elif t == "double":
            value = st.floats(min_value=0.0, max_value=1.0)
        else:
            value = _schema_value(t, plausible_instant)
        fields[name] = st.none() | value if nullable else value
    return st.fixed_dictionaries(fields)


@SETTINGS
@given(data=st.data(), kind=KINDS)
def test_the_fast_path_gives_the_event_pydantic_gives_or_leaves_it_to_pydantic(
    data: st.DataObject, kind: EventKind
) -> None:
    record: dict[str, Any] = data.draw(plausible_records(kind))
    types = {name: t for name, t, _ in FIELDS[kind]}
    for name in data.draw(st.lists(st.sampled_from(sorted(record)), min_size=1, max_size=2)):
        # A value of the schema's type that may break a rule, or any Python value.
        hostile = _schema_value(types[name], any_instant)
        if types[name] == "double":
            hostile = hostile | st.sampled_from(_EDGE_SCORES)
        record[name] = data.draw(python_values if data.draw(st.booleans()) else hostile)
    if data.draw(st.integers(0, 9)) == 0:
        record.pop(data.draw(st.sampled_from(sorted(record))))
    fast = fast_event(kind, record)
    slow = _validated(kind, record)
    if fast is not None:
        # Taken: exactly what the model gives (repr: the same zones, not only instants).
        assert not isinstance(slow, BadInput), (record, slow)
        assert repr(fast) == repr(slow)


@SETTINGS
@given(data=st.data(), kind=KINDS)
def test_the_fast_path_takes_every_record_of_the_schemas_types_the_rules_accept(
    data: st.DataObject, kind: EventKind
) -> None:
    # Not a path that declines everything: what the codec hands over, when the
    # rules accept it, never needs pydantic.
    record: dict[str, Any] = data.draw(records(kind) | plausible_records(kind))
    if not isinstance(_validated(kind, record), BadInput):
        assert fast_event(kind, record) is not None, record


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


header_lists = st.lists(
    st.tuples(
        st.sampled_from(["content-type", "trace", "dlq.error.type", "dlq.original.topic", "x"])
        | st.text(max_size=8),
        st.none() | st.binary(max_size=16),  # null, empty, not UTF-8
    ),
    max_size=6,
)
hostile_records = st.builds(
    FakeRecord,
    topic=st.sampled_from([k.value for k in EventKind]),
    partition=st.integers(0, 11),
    offset=st.integers(0, 2**62),
    key=st.none() | st.binary(max_size=32) | st.just(b"k" * 100_000),
    value=st.none()
    | st.binary(max_size=100)
    | st.builds(lambda kind: CODEC.encode_avro(kind.value, _VALID[kind]), KINDS),
    headers=header_lists,
)

_T = datetime(2024, 5, 1, tzinfo=UTC)
_VALID: dict[EventKind, dict[str, Any]] = {
    EventKind.BOOKING_CONFIRMED: {
        "event_id": "e",
        "occurred_at": _T,
        "user_id": "u",
        "booking_id": "b",
        "event_date": _T,
    },
    EventKind.BOOKING_CANCELLED: {
        "event_id": "e",
        "occurred_at": _T,
        "user_id": "u",
        "booking_id": "b",
    },
    EventKind.EMOTION_SCORED: {
        "event_id": "e",
        "occurred_at": _T,
        "user_id": "u",
        "conversation_id": "c",
        "message_id": "m",
        "score": 0.5,
    },
    EventKind.USER_ACTIVITY: {
        "event_id": "e",
        "occurred_at": _T,
        "user_id": "u",
        "activity_type": "x",
    },
}


@SETTINGS
@given(batch=st.lists(hostile_records, max_size=8))
def test_ingest_dead_letters_every_bad_record_with_its_headers(batch: list[FakeRecord]) -> None:
    ingestor = Ingestor(
        store=cast(Any, None),  # decode touches neither the store nor the sink
        decoder=WireDecoder(CODEC),
        policy=Policy(),
        topic_kinds={k.value: k.value for k in EventKind},
        dead_letters=cast(Any, None),
        clock=lambda: _T,
    )
    good, dead = ingestor.decode(batch)
    assert len(good) + len(dead) == len(batch)
    for d in dead:
        assert d.error_type in ERROR_TYPES
        # Not through WireDecoder's safety net (that would be a bug of ours).
        assert " while decoding: " not in d.message, d.message
        headers = d.headers()
        original = [(k, v) for k, v in d.record.headers if not k.startswith("dlq.")]
        # The producer's headers, odd values and duplicates included, in order; then ours.
        assert headers[: len(original)] == original
        ours = dict(headers[len(original) :])
        assert len(ours) == len(headers) - len(original) == 5
        assert ours["dlq.error.type"] == d.error_type.encode()
        assert ours["dlq.original.offset"] == str(d.record.offset).encode()
        assert 0 < len(ours["dlq.error.message"] or b"") <= 4000
        assert_survives_the_wire(d.record.key, d.record.value, headers)


def assert_survives_the_wire(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    """The dead letter as aiokafka's producer frames it, read back as its consumer does."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=2**24,
    )
    assert builder.append(0, timestamp=None, key=key, value=value, headers=headers) is not None
    [back] = list(DefaultRecordBatch(bytes(builder.build())))
    assert (back.key, back.value, back.headers) == (key, value, headers)


@SETTINGS
@given(
    record=hostile_records,
    error=st.sampled_from(sorted(ERROR_TYPES)),
    message=st.text() | surrogates,
)
def test_dead_letter_headers_of_any_record_survive_the_wire(
    record: FakeRecord, error: str, message: str
) -> None:
    letter = DeadLetter(record, error, message)
    assert_survives_the_wire(record.key, record.value, letter.headers())
