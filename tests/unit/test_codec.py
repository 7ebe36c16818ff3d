"""consumer.adapters.codec: round trips, schema evolution, fingerprints and malformed input."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from consumer.adapters.codec import (
    AVRO_CONTENT_TYPE,
    AVRO_MAGIC,
    JSON_CONTENT_TYPE,
    Codec,
    CodecError,
)

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
T0 = datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=UTC)
T1 = datetime(2024, 6, 2, 18, 0, tzinfo=UTC)

# For every schema: a record with all optional fields set, and the minimal one.
FULL: dict[str, dict[str, Any]] = {
    "booking_confirmed": {
        "event_id": "e-1",
        "occurred_at": T0,
        "user_id": "u-1",
        "booking_id": "b-1",
        "event_date": T1,
        "conversation_id": "c-1",
        "timezone": "Europe/Berlin",
        "locale": "fr-CA",
    },
    "booking_cancelled": {
        "event_id": "e-2",
        "occurred_at": T0,
        "user_id": "u-1",
        "booking_id": "b-1",
        "reason": "plans changed — désolé",
    },
    "message_emotion_scored": {
        "event_id": "e-3",
        "occurred_at": T0,
        "user_id": "u-1",
        "conversation_id": "c-1",
        "message_id": "m-1",
        "score": 0.25,
        "label": "frustration",
    },
    "user_activity": {
        "event_id": "e-4",
        "occurred_at": T0,
        "user_id": "u-1",
        "activity_type": "login",
        "conversation_id": "c-1",
        "locale": "fr",
    },
    "followup_due": {
        "event_id": "f-1",
        "followup_id": "f-1",
        "user_id": "u-1",
        "conversation_id": "c-1",
        "trigger_type": "post_event",
        "template_id": "post_event_high_emotion",
        "message": "How was your event on {event_date}?",
        "scheduled_at": T1,
        "emitted_at": T1 + timedelta(seconds=3),
        "booking_id": "b-1",
        "attempt": 2,
        "locale": "fr",
        "template_version": 3,
    },
}
OPTIONAL: dict[str, tuple[str, ...]] = {
    "booking_confirmed": ("conversation_id", "timezone", "locale"),
    "booking_cancelled": ("reason",),
    "message_emotion_scored": ("label",),
    "user_activity": ("conversation_id", "locale"),
    "followup_due": ("booking_id", "locale", "template_version"),
}
TIMESTAMPS = {"occurred_at", "event_date", "scheduled_at", "emitted_at"}


def minimal(name: str) -> dict[str, Any]:
    return {k: v for k, v in FULL[name].items() if k not in OPTIONAL[name]}


def json_value(record: dict[str, Any]) -> bytes:
    """A JSON value as a producer would write it, independent of encode_json."""
    return json.dumps(
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in record.items()}
    ).encode()


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.load()


# --- Rabin CRC-64-AVRO and Parsing Canonical Form, written from the Avro spec -----

_EMPTY64 = 0xC15D213AA4D7A795


def _rabin_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _rabin_table()


def rabin64(data: bytes) -> int:
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def canonical(schema: Any, namespace: str | None = None) -> str:
    """Parsing Canonical Form for the subset our schemas use (records, unions,
    primitives, logical types), following the spec's transformation rules."""
    if isinstance(schema, str):
        return json.dumps(schema)
    if isinstance(schema, list):
        return "[" + ",".join(canonical(s, namespace) for s in schema) + "]"
    if schema["type"] == "record":
        ns = schema.get("namespace", namespace)
        full = f"{ns}.{schema['name']}" if ns else schema["name"]
        fields = ",".join(
            '{"name":' + json.dumps(f["name"]) + ',"type":' + canonical(f["type"], ns) + "}"
            for f in schema["fields"]
        )
        return '{"name":' + json.dumps(full) + ',"type":"record","fields":[' + fields + "]}"
    return canonical(schema["type"], namespace)  # logicalType etc. are stripped


def single_object(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Avro single-object encoding built without the codec."""
    out = BytesIO()
    out.write(AVRO_MAGIC)
    out.write(rabin64(canonical(schema).encode()).to_bytes(8, "little"))
    schemaless_writer(out, parse_schema(schema, {}), record)
    return out.getvalue()


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        # Test vectors from the Avro project (share/test/data/schema-tests.txt).
        ('"null"', 7195948357588979594),
        ('"boolean"', -6970731678124411036),
        ('"int"', 8247732601305521295),
        ('"string"', -8142146995180207161),
        ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
        (
            '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
            7843277075252814651,
        ),
    ],
)
def test_rabin_matches_avro_spec_vectors(schema: str, expected: int) -> None:
    assert rabin64(schema.encode()) == expected & 0xFFFFFFFFFFFFFFFF


def test_fingerprints_match_independent_rabin_of_canonical_form(codec: Codec) -> None:
    for path in sorted(SCHEMAS_DIR.glob("*.avsc")):
        raw = json.loads(path.read_text())
        expected = rabin64(canonical(raw).encode()).to_bytes(8, "little")
        assert codec.fingerprint(path.stem) == expected, path.stem


def test_avro_value_is_magic_fingerprint_body(codec: Codec) -> None:
    value = codec.encode_avro("user_activity", FULL["user_activity"])
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == codec.fingerprint("user_activity")
    assert value == single_object(
        json.loads((SCHEMAS_DIR / "user_activity.avsc").read_text()), FULL["user_activity"]
    )


def test_content_types() -> None:
    assert AVRO_CONTENT_TYPE == "application/vnd.apache.avro+binary"
    assert JSON_CONTENT_TYPE == "application/json"


# --- schemas --------------------------------------------------------------------------


def test_every_schema_has_sample_records(codec: Codec) -> None:
    assert codec.schema_names == set(FULL)
    assert {p.stem for p in SCHEMAS_DIR.glob("*.avsc")} == set(FULL)


@pytest.mark.parametrize(
    "path", sorted([*SCHEMAS_DIR.glob("*.avsc"), *SCHEMAS_DIR.glob("history/*.avsc")]), ids=str
)
def test_schema_files_are_namespaced_and_documented(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert raw["namespace"] == "com.booking.followups"
    assert raw["doc"].strip()
    for field in raw["fields"]:
        assert field.get("doc", "").strip(), field["name"]
        if isinstance(field["type"], list):
            assert field["type"][0] == "null", field["name"]
            assert "default" in field, field["name"]
            assert field["default"] is None, field["name"]
        if field["name"] in TIMESTAMPS:
            assert field["type"] == {"type": "long", "logicalType": "timestamp-millis"}


def test_optional_fields_are_exactly_the_contracts() -> None:
    for name, optional in OPTIONAL.items():
        raw = json.loads((SCHEMAS_DIR / f"{name}.avsc").read_text())
        assert {f["name"] for f in raw["fields"] if isinstance(f["type"], list)} == set(optional)


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["avro", "json"])
@pytest.mark.parametrize("variant", ["full", "minimal"])
@pytest.mark.parametrize("name", sorted(FULL))
def test_round_trip(codec: Codec, name: str, variant: str, fmt: str) -> None:
    record = FULL[name] if variant == "full" else minimal(name)
    encode = codec.encode_avro if fmt == "avro" else codec.encode_json
    decoded = codec.decode(name, encode(name, record))
    expected = {**dict.fromkeys(OPTIONAL[name]), **record}
    assert decoded == expected
    for key in TIMESTAMPS & decoded.keys():
        assert decoded[key].tzinfo is UTC


@pytest.mark.parametrize("name", sorted(FULL))
def test_json_from_a_producer_decodes_like_avro(codec: Codec, name: str) -> None:
    assert codec.decode(name, json_value(FULL[name])) == codec.decode(
        name, codec.encode_avro(name, FULL[name])
    )


def test_encode_json_writes_iso_timestamps_with_offset(codec: Codec) -> None:
    doc = json.loads(codec.encode_json("followup_due", FULL["followup_due"]))
    assert doc["scheduled_at"] == "2024-06-02T18:00:00.000Z"
    assert doc["booking_id"] == "b-1"
    assert doc["attempt"] == 2


def test_json_offset_is_converted_to_utc(codec: Codec) -> None:
    record = dict(minimal("user_activity"), occurred_at="2024-05-01T14:30:15.123+02:00")
    decoded = codec.decode("user_activity", json.dumps(record).encode())
    assert decoded["occurred_at"] == T0
    assert decoded["occurred_at"].tzinfo is UTC


def test_json_timestamps_are_truncated_to_millis_like_avro(codec: Codec) -> None:
    fine = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    record = dict(minimal("user_activity"), occurred_at=fine)
    from_json = codec.decode("user_activity", json_value(record))
    from_avro = codec.decode("user_activity", codec.encode_avro("user_activity", record))
    assert from_json["occurred_at"] == from_avro["occurred_at"] == fine.replace(microsecond=123000)


def test_encode_converts_other_offsets_to_utc(codec: Codec) -> None:
    plus2 = timezone(timedelta(hours=2))
    record = dict(minimal("user_activity"), occurred_at=T0.astimezone(plus2))
    for value in (
        codec.encode_avro("user_activity", record),
        codec.encode_json("user_activity", record),
    ):
        assert codec.decode("user_activity", value)["occurred_at"] == T0


def test_json_ignores_unknown_fields(codec: Codec) -> None:
    record = dict(minimal("user_activity"), new_field=[1, 2])
    assert codec.decode("user_activity", json_value(record)) == {
        **minimal("user_activity"),
        "conversation_id": None,
        "locale": None,
    }


def test_json_integer_accepted_for_double(codec: Codec) -> None:
    record = dict(minimal("message_emotion_scored"), score=1)
    decoded = codec.decode("message_emotion_scored", json_value(record))
    assert decoded["score"] == 1.0
    assert isinstance(decoded["score"], float)


# --- schema evolution --------------------------------------------------------------------


def test_v1_booking_confirmed_decodes_with_defaults(codec: Codec) -> None:
    v1 = json.loads((SCHEMAS_DIR / "history" / "booking_confirmed.v1.avsc").read_text())
    assert {f["name"] for f in v1["fields"]}.isdisjoint({"conversation_id", "timezone"})
    record = minimal("booking_confirmed")
    value = single_object(v1, record)
    assert value[2:10] != codec.fingerprint("booking_confirmed")
    assert codec.decode("booking_confirmed", value) == {
        **record,
        "conversation_id": None,
        "timezone": None,
        "locale": None,
    }


@pytest.mark.parametrize(
    ("name", "older", "added"),
    [
        ("booking_confirmed", "booking_confirmed.v2.avsc", {"locale"}),
        ("user_activity", "user_activity.v1.avsc", {"locale"}),
        ("followup_due", "followup_due.v1.avsc", {"locale", "template_version"}),
    ],
)
def test_the_previous_writer_schema_still_decodes(
    codec: Codec, name: str, older: str, added: set[str]
) -> None:
    """Values a producer wrote before `locale` (and followup.due before its new
    fields) decode with the new fields null."""
    previous = json.loads((SCHEMAS_DIR / "history" / older).read_text())
    current = json.loads((SCHEMAS_DIR / f"{name}.avsc").read_text())
    assert [f["name"] for f in current["fields"]] == [
        *(f["name"] for f in previous["fields"]),
        *sorted(added, key=lambda n: [f["name"] for f in current["fields"]].index(n)),
    ]
    record = {k: v for k, v in FULL[name].items() if k not in added}
    value = single_object(previous, record)
    assert value[2:10] != codec.fingerprint(name)
    assert codec.decode(name, value) == {**record, **dict.fromkeys(added)}


def test_an_old_reader_of_followup_due_reads_what_this_release_writes(codec: Codec) -> None:
    """Backward compatible for the messaging service: a reader still on v1 resolves
    a v2 record (Avro schema resolution skips the fields it does not know)."""
    v1 = parse_schema(
        json.loads((SCHEMAS_DIR / "history" / "followup_due.v1.avsc").read_text()), {}
    )
    v2 = parse_schema(json.loads(codec.schema_text("followup_due")), {})
    body = codec.encode_avro("followup_due", FULL["followup_due"])[10:]
    old = schemaless_reader(BytesIO(body), v2, v1)
    assert isinstance(old, dict)
    assert old == {
        k: v for k, v in FULL["followup_due"].items() if k not in {"locale", "template_version"}
    }


def test_history_identical_to_current_is_harmless(tmp_path: Path) -> None:
    shutil.copytree(SCHEMAS_DIR, tmp_path, dirs_exist_ok=True)
    raw = json.loads((SCHEMAS_DIR / "user_activity.avsc").read_text())
    raw["doc"] = "only the documentation changed"
    (tmp_path / "history" / "user_activity.v9.avsc").write_text(json.dumps(raw))
    codec = Codec.load(tmp_path)
    value = codec.encode_avro("user_activity", FULL["user_activity"])
    assert codec.decode("user_activity", value) == FULL["user_activity"]


# --- loading -----------------------------------------------------------------------------


def test_load_explicit_directory(tmp_path: Path) -> None:
    shutil.copytree(SCHEMAS_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / "booking_cancelled.avsc").unlink()
    assert Codec.load(tmp_path).schema_names == set(FULL) - {"booking_cancelled"}


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Codec.load(tmp_path / "nope")


def test_load_rejects_misnamed_history(tmp_path: Path) -> None:
    shutil.copytree(SCHEMAS_DIR, tmp_path, dirs_exist_ok=True)
    shutil.copy(
        SCHEMAS_DIR / "history" / "booking_confirmed.v1.avsc",
        tmp_path / "history" / "booking_confirmed_old.avsc",
    )
    with pytest.raises(CodecError, match=r"<current name>\.v<N>\.avsc"):
        Codec.load(tmp_path)


def test_unknown_schema_name_is_a_programming_error(codec: Codec) -> None:
    with pytest.raises(KeyError, match="no_such_schema"):
        codec.decode("no_such_schema", b"{}")


# --- malformed input ---------------------------------------------------------------------


def decode_error(codec: Codec, name: str, value: bytes) -> CodecError:
    with pytest.raises(CodecError) as info:
        codec.decode(name, value)
    assert str(info.value).startswith(f"{name}: ")
    return info.value


def test_empty_bytes(codec: Codec) -> None:
    err = decode_error(codec, "user_activity", b"")
    assert "empty" in err.detail
    assert not err.schema_violation


@pytest.mark.parametrize("cut", [2, 6, 10, 12, -1])
def test_truncated_avro(codec: Codec, cut: int) -> None:
    value = codec.encode_avro("booking_confirmed", FULL["booking_confirmed"])
    err = decode_error(codec, "booking_confirmed", value[:cut])
    assert not err.schema_violation


def test_trailing_bytes_after_avro_record(codec: Codec) -> None:
    value = codec.encode_avro("user_activity", FULL["user_activity"])
    err = decode_error(codec, "user_activity", value + b"\x00")
    assert "trailing" in err.detail


def test_corrupt_avro_string(codec: Codec) -> None:
    value = bytearray(codec.encode_avro("user_activity", FULL["user_activity"]))
    value[11] = 0xFF  # first byte of event_id: invalid UTF-8
    decode_error(codec, "user_activity", bytes(value))


def test_unknown_fingerprint(codec: Codec) -> None:
    value = codec.encode_avro("user_activity", FULL["user_activity"])
    forged = AVRO_MAGIC + bytes.fromhex("0123456789abcdef") + value[10:]
    err = decode_error(codec, "user_activity", forged)
    assert "0123456789abcdef" in err.detail
    assert not err.schema_violation


def test_value_of_another_schema(codec: Codec) -> None:
    value = codec.encode_avro("booking_cancelled", FULL["booking_cancelled"])
    err = decode_error(codec, "booking_confirmed", value)
    assert "booking_cancelled" in err.detail
    assert err.schema_violation


@pytest.mark.parametrize(
    "value",
    [b"{not json", b'{"event_id": "e"', b"\xff\xfe{}", b"\x00", b"NaN", b"  "],
    ids=["syntax", "unterminated", "not-utf8", "nul", "nan", "blank"],
)
def test_invalid_json(codec: Codec, value: bytes) -> None:
    assert not decode_error(codec, "user_activity", value).schema_violation


@pytest.mark.parametrize("value", [b"[]", b"42", b'"text"', b"null", b"true"])
def test_json_that_is_not_an_object(codec: Codec, value: bytes) -> None:
    assert "object" in decode_error(codec, "user_activity", value).detail


@pytest.mark.parametrize(
    ("field", "raw", "fragment"),
    [
        ("occurred_at", "2024-05-01T12:30:15", "no UTC offset"),
        ("occurred_at", "2024-05-01", "no UTC offset"),
        ("occurred_at", "yesterday", "not an ISO-8601"),
        ("occurred_at", 1714566615123, "expected an ISO-8601"),
        ("user_id", 123, "expected a string"),
        ("user_id", None, "must not be null"),
        ("conversation_id", 5, "expected a string"),
        ("event_id", ["e"], "expected a string"),
    ],
)
def test_json_field_of_wrong_type(codec: Codec, field: str, raw: Any, fragment: str) -> None:
    record = {**json.loads(json_value(FULL["user_activity"])), field: raw}
    err = decode_error(codec, "user_activity", json.dumps(record).encode())
    assert err.schema_violation
    assert repr(field) in err.detail
    assert fragment in err.detail


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [("0.5", "expected a number"), (True, "expected a number"), (None, "must not be null")],
)
def test_json_score_of_wrong_type(codec: Codec, raw: Any, fragment: str) -> None:
    record = {**json.loads(json_value(FULL["message_emotion_scored"])), "score": raw}
    err = decode_error(codec, "message_emotion_scored", json.dumps(record).encode())
    assert err.schema_violation
    assert fragment in err.detail


@pytest.mark.parametrize(
    ("raw", "schema_violation"),
    # NaN/Infinity are not JSON at all; 1e400 is JSON but overflows a double.
    [(b"1e400", True), (b"-1e400", True), (b"Infinity", False), (b"NaN", False)],
)
def test_json_non_finite_score(codec: Codec, raw: bytes, schema_violation: bool) -> None:
    doc = json.loads(json_value(FULL["message_emotion_scored"]))
    doc["score"] = "@"
    value = json.dumps(doc).encode().replace(b'"@"', raw)
    err = decode_error(codec, "message_emotion_scored", value)
    assert err.schema_violation is schema_violation


def test_other_primitive_types_in_json(tmp_path: Path) -> None:
    # Types no current schema uses yet, so that a new field of them works.
    schema = {
        "type": "record",
        "name": "Probe",
        "namespace": "com.booking.followups",
        "doc": "test only",
        "fields": [
            {"name": "flag", "type": "boolean", "doc": "b"},
            {"name": "ratio", "type": "float", "doc": "f"},
            {"name": "count", "type": ["null", "long"], "default": None, "doc": "l"},
        ],
    }
    (tmp_path / "probe.avsc").write_text(json.dumps(schema))
    codec = Codec.load(tmp_path)
    record = {"flag": True, "ratio": 0.5, "count": 2**40}
    for value in (codec.encode_avro("probe", record), codec.encode_json("probe", record)):
        assert codec.decode("probe", value) == record
    for wrong in ({"flag": 1}, {"flag": "true"}, {"ratio": False}, {"count": 2**63}):
        with pytest.raises(CodecError):
            codec.decode("probe", json.dumps({**record, **wrong}).encode())


def test_unsupported_schema_types_fail_at_load(tmp_path: Path) -> None:
    schema = {
        "type": "record",
        "name": "Probe",
        "fields": [{"name": "tags", "type": {"type": "array", "items": "string"}}],
    }
    (tmp_path / "probe.avsc").write_text(json.dumps(schema))
    with pytest.raises(CodecError, match="'tags'"):
        Codec.load(tmp_path)


@pytest.mark.parametrize(("raw", "fragment"), [(1.5, "integer"), (2**31, "out of range")])
def test_json_int_field(codec: Codec, raw: Any, fragment: str) -> None:
    record = {**json.loads(json_value(FULL["followup_due"])), "attempt": raw}
    err = decode_error(codec, "followup_due", json.dumps(record).encode())
    assert fragment in err.detail


@pytest.mark.parametrize("field", ["event_id", "occurred_at", "user_id", "activity_type"])
def test_json_missing_required_field(codec: Codec, field: str) -> None:
    record = json.loads(json_value(FULL["user_activity"]))
    del record[field]
    err = decode_error(codec, "user_activity", json.dumps(record).encode())
    assert err.schema_violation
    assert f"{field!r}: required field is missing" in err.detail


# --- encoding refuses what would not round-trip ------------------------------------------


def encode_error(codec: Codec, name: str, record: dict[str, Any], fmt: str) -> CodecError:
    encode = codec.encode_avro if fmt == "avro" else codec.encode_json
    with pytest.raises(CodecError) as info:
        encode(name, record)
    assert info.value.schema_violation
    return info.value


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_encode_rejects_naive_datetime(codec: Codec, fmt: str) -> None:
    record = dict(FULL["followup_due"], emitted_at=datetime(2024, 1, 1))
    assert "naive" in encode_error(codec, "followup_due", record, fmt).detail


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_encode_rejects_unknown_field(codec: Codec, fmt: str) -> None:
    record = dict(FULL["followup_due"], bookingid="b-1")
    assert "bookingid" in encode_error(codec, "followup_due", record, fmt).detail


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_encode_rejects_missing_required(codec: Codec, fmt: str) -> None:
    record = dict(FULL["followup_due"])
    del record["message"]
    assert "'message'" in encode_error(codec, "followup_due", record, fmt).detail


@pytest.mark.parametrize("fmt", ["avro", "json"])
@pytest.mark.parametrize(
    ("field", "raw"),
    [("attempt", "2"), ("scheduled_at", "2024-01-01T00:00:00Z"), ("message", None)],
)
def test_encode_rejects_wrong_type(codec: Codec, fmt: str, field: str, raw: Any) -> None:
    record = dict(FULL["followup_due"], **{field: raw})
    assert repr(field) in encode_error(codec, "followup_due", record, fmt).detail


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_encode_rejects_non_finite_double(codec: Codec, fmt: str) -> None:
    record = dict(FULL["message_emotion_scored"], score=float("nan"))
    encode_error(codec, "message_emotion_scored", record, fmt)


# --- found by the property tests (tests/unit/test_input_properties.py) ------------------


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:00-01:00"])
def test_json_timestamp_with_no_utc_instant_is_a_schema_error(codec: Codec, raw: str) -> None:
    # Valid ISO-8601, but converting to UTC leaves Python's years 1..9999:
    # this used to raise OverflowError, which no caller expected.
    record = dict(minimal("user_activity"), occurred_at=raw)
    err = decode_error(codec, "user_activity", json.dumps(record).encode())
    assert err.schema_violation
    assert "'occurred_at'" in err.detail
    assert "out of range" in err.detail


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_json_nested_deeper_than_the_parser_recurses(codec: Codec, opener: bytes) -> None:
    # Used to raise RecursionError out of json.loads.
    value = opener * 100_000
    assert "nested too deeply" in decode_error(codec, "user_activity", value).detail


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_encode_rejects_datetime_with_no_utc_instant(codec: Codec, fmt: str) -> None:
    when = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    record = dict(FULL["followup_due"], emitted_at=when)
    assert "out of range" in encode_error(codec, "followup_due", record, fmt).detail
