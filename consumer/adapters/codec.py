"""Bytes <-> dict for every topic's schema: Avro single-object encoding, the
Confluent wire format, or JSON.

The schemas in `schemas/` are the only source of truth: Avro values are read with
the writer schema named by their fingerprint (single-object) or by their schema id
(Confluent: the writer schema comes from a schema registry, fetched beforehand by
the caller and handed in as a `WriterSchemas` lookup) and resolved into the current
schema; JSON values are checked field by field against the current schema. Either
way the result is a plain dict holding every field of the current schema, with
timestamps as timezone-aware UTC `datetime`s. Anything that does not fit raises
`CodecError`.

The first byte tells the formats apart: 0x00 is the Confluent wire format, 0xC3
0x01 single-object encoding, anything else is read as JSON (neither can start a
UTF-8 JSON text).

Everything schema-derived is parsed once in `Codec.load`; `decode` is on the
consumer's hot path and does no per-call schema work.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any, Final, NoReturn, Protocol, cast

from fastavro.read import SchemaResolutionError, schemaless_reader
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form
from fastavro.write import schemaless_writer

from consumer.adapters.avro_encoder import RecordEncoder

__all__ = [
    "AVRO_CONTENT_TYPE",
    "AVRO_MAGIC",
    "CONFLUENT_CONTENT_TYPE",
    "CONFLUENT_MAGIC",
    "JSON_CONTENT_TYPE",
    "MAX_SCHEMA_ID",
    "Codec",
    "CodecError",
    "UnknownWriterSchema",
    "WriterSchema",
    "WriterSchemas",
    "confluent_frame",
    "confluent_schema_id",
    "parse_writer_schema",
]

# `content-type` header values. There is no registered media type for Avro
# single-object encoding; this vendor type says "Avro binary" unambiguously.
AVRO_CONTENT_TYPE: Final = "application/vnd.apache.avro+binary"
JSON_CONTENT_TYPE: Final = "application/json"
# Confluent defines no media type for its framing (its clients look at the first byte,
# not at headers); this vendor type names it for consumers that do look.
CONFLUENT_CONTENT_TYPE: Final = "application/vnd.confluent.avro"

# Avro single-object encoding marker. It can never start a UTF-8 JSON text
# (0x01 is not a continuation byte), so the first two bytes decide the format.
AVRO_MAGIC: Final = b"\xc3\x01"
_HEADER_LEN: Final = len(AVRO_MAGIC) + 8
# Confluent wire format: this byte, the schema id (4 bytes, big-endian), the Avro body.
CONFLUENT_MAGIC: Final = b"\x00"
_CONFLUENT_HEADER_LEN: Final = len(CONFLUENT_MAGIC) + 4
# Registries hand out ids as Java ints: a larger id names no schema anywhere.
MAX_SCHEMA_ID: Final = 2**31 - 1

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_HISTORY_FILE = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>[1-9][0-9]*)\.avsc$")
_MISSING: Final = object()


class CodecError(ValueError):
    """A value (or record to encode) does not fit its schema, or is not decodable.

    `schema_violation` separates "well-formed but breaks the schema" (missing
    field, wrong type, timestamp without offset) from "cannot be read at all"
    (truncated Avro, unknown fingerprint, invalid JSON), so callers can report
    the two differently.
    """

    def __init__(self, schema_name: str, detail: str, *, schema_violation: bool = False) -> None:
        super().__init__(f"{schema_name}: {detail}")
        self.schema_name = schema_name
        self.detail = detail
        self.schema_violation = schema_violation


class _Invalid(Exception):
    """A field value is of the wrong type; the caller adds schema and field names."""


# --- the Confluent wire format ------------------------------------------------------


class UnknownWriterSchema(Exception):
    """No usable writer schema for a schema id (the registry has none, or not an Avro
    one): the value can never be decoded. The message names the id."""


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """A writer schema from a schema registry, parsed once."""

    parsed: Any  # fastavro-parsed
    name: str  # the record's full name, for messages
    identity: bytes  # digest of the exact JSON: equal to a reader's, no resolution needed


class WriterSchemas(Protocol):
    """Writer schemas by Confluent schema id, fetched before decoding (I/O happens in
    `prefetch`, never in `decode`)."""

    async def prefetch(self, schema_ids: Iterable[int]) -> None:
        """Have every id's schema (or its absence) at hand; raises `Unavailable` when
        the registry does not answer."""
        ...

    def __call__(self, schema_id: int) -> WriterSchema:
        """The schema of a prefetched id; raises UnknownWriterSchema when there is none."""
        ...


def confluent_schema_id(value: bytes | None) -> int | None:
    """The schema id of a value in the Confluent wire format; None for any other
    value (single-object, JSON, a tombstone) and for one too short to hold an id."""
    if value is None or len(value) < _CONFLUENT_HEADER_LEN or value[0] != 0:
        return None
    return int.from_bytes(value[1:_CONFLUENT_HEADER_LEN], "big")


def confluent_frame(schema_id: int) -> bytes:
    """The 5 bytes that precede the Avro body in the Confluent wire format."""
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")


def _identity(raw_schema: Any) -> bytes:
    # Not the fingerprint: the Parsing Canonical Form drops logical types and
    # defaults, which change what a reader makes of the same bytes.
    return hashlib.sha256(json.dumps(raw_schema, sort_keys=True).encode()).digest()


def parse_writer_schema(text: str) -> WriterSchema:
    """A registry's schema text as a writer schema; ValueError if it is not Avro JSON."""
    try:
        raw = json.loads(text)
        parsed = parse_schema(raw, {})
    except Exception as exc:  # fastavro raises several types for bad schemas
        raise ValueError(f"not a valid Avro schema: {type(exc).__name__}: {exc!s:.200}") from exc
    name = parsed.get("name") if isinstance(parsed, dict) else None
    return WriterSchema(parsed, str(name or raw), _identity(raw))


# --- per-field JSON conversion ---------------------------------------------------
# Each converter takes a non-null JSON value and returns what fastavro would have
# produced for the same field, or raises _Invalid. Built once per field at load.


def _json_string(raw: Any) -> str:
    if isinstance(raw, str):
        if raw.isascii():
            return raw
        try:
            # JSON escapes can spell lone surrogates (a string cut inside an emoji),
            # which no UTF-8 store accepts.
            raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Invalid(f"not valid Unicode text ({exc.reason})") from None
        return raw
    raise _Invalid(f"expected a string, got {_json_type(raw)}")


def _json_double(raw: Any) -> float:
    # bool is an int subclass; true/false is never a number in the schema's sense.
    if isinstance(raw, int) and not isinstance(raw, bool):
        try:
            raw = float(raw)
        except OverflowError:
            raise _Invalid("number out of range for a double") from None
    if not isinstance(raw, float):
        raise _Invalid(f"expected a number, got {_json_type(raw)}")
    # json.loads turns 1e400 into inf; JSON has no such number, so reject it.
    if not math.isfinite(raw):
        raise _Invalid(f"non-finite number {raw!r}")
    return raw


def _json_integer(bounds: tuple[int, int]) -> Callable[[Any], int]:
    low, high = bounds

    def convert(raw: Any) -> int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise _Invalid(f"expected an integer, got {_json_type(raw)}")
        if not low <= raw <= high:
            raise _Invalid(f"integer {raw} out of range [{low}, {high}]")
        return raw

    return convert


def _json_boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    raise _Invalid(f"expected true or false, got {_json_type(raw)}")


def _json_timestamp(raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise _Invalid(f"expected an ISO-8601 timestamp string, got {_json_type(raw)}")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise _Invalid(f"not an ISO-8601 timestamp: {raw[:64]!r}") from None
    if value.tzinfo is None:
        # The contract: a timestamp without an offset is ambiguous, hence bad input.
        raise _Invalid(f"timestamp {raw[:64]!r} has no UTC offset (add 'Z' or '+hh:mm')")
    if value.tzinfo is not UTC:
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00+01:00 is a valid ISO string with no UTC instant in
            # Python's range (years 1..9999).
            raise _Invalid(f"timestamp {raw[:64]!r} is out of range in UTC") from None
    # timestamp-millis: drop sub-millisecond digits so JSON and Avro agree exactly.
    if value.microsecond % 1000:
        value = value.replace(microsecond=value.microsecond - value.microsecond % 1000)
    return value


def _json_type(raw: Any) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "boolean"
    if isinstance(raw, int | float):
        return "number"
    if isinstance(raw, str):
        return "string"
    if isinstance(raw, list):
        return "array"
    if isinstance(raw, dict):
        return "object"
    return type(raw).__name__


_JSON_CONVERTERS: Final[dict[str, Callable[[Any], Any]]] = {
    "string": _json_string,
    "double": _json_double,
    "float": _json_double,
    "int": _json_integer(_INT32),
    "long": _json_integer(_INT64),
    "boolean": _json_boolean,
    "timestamp-millis": _json_timestamp,
}


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: str  # key of _JSON_CONVERTERS
    nullable: bool
    has_default: bool
    default: Any
    from_json: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Schema:
    """One logical schema: its current version plus every writer it can read."""

    name: str
    raw: Any  # the current schema as read from its file
    reader: Any  # fastavro-parsed current schema
    identity: bytes  # see _identity
    fingerprint: bytes
    header: bytes  # AVRO_MAGIC + fingerprint, prepended on encode
    # fingerprint -> (parsed writer schema, reader to resolve into or None when
    # the writer *is* the current schema, which skips resolution entirely)
    writers: Mapping[bytes, tuple[Any, Any]]
    fields: tuple[_Field, ...]
    field_names: frozenset[str]
    # (name, _FINAL_* kind, nullable) of each field: see `_final_form`.
    final_form: tuple[tuple[str, int, bool], ...]
    # The current schema's own writer; None: fastavro's writes it.
    encoder: RecordEncoder | None


def _fingerprint(raw_schema: Any) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, as the 8 bytes that go on the wire.

    fastavro returns the little-endian byte order the Java implementation (and
    the single-object encoding) uses, as hex; tests cross-check it against the
    Avro spec's test vectors and an independent Rabin implementation.
    """
    return bytes.fromhex(
        _fastavro_fingerprint(to_parsing_canonical_form(raw_schema), "CRC-64-AVRO")
    )


def _field_spec(schema_name: str, field: Mapping[str, Any]) -> _Field:
    name = field["name"]
    avro_type = field["type"]
    nullable = False
    # Optional fields are ["null", T] per the contract; nothing else is supported
    # in JSON, so reject other shapes at load rather than mis-decode later.
    if isinstance(avro_type, list):
        if len(avro_type) != 2 or avro_type[0] != "null":
            raise CodecError(schema_name, f"field {name!r}: only ['null', T] unions are supported")
        nullable = True
        avro_type = avro_type[1]
    if isinstance(avro_type, dict):
        kind = avro_type.get("logicalType") or avro_type.get("type")
    else:
        kind = avro_type
    if kind not in _JSON_CONVERTERS:
        raise CodecError(schema_name, f"field {name!r}: type {kind!r} is not supported")
    return _Field(
        name=name,
        kind=kind,
        nullable=nullable,
        has_default="default" in field,
        default=field.get("default"),
        from_json=_JSON_CONVERTERS[kind],
    )


def _read_schema_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CodecError(path.stem, f"cannot read schema file {path}: {exc}") from exc


def default_schemas_dir() -> Path:
    """`schemas/` beside the package in a checkout; `consumer/_schemas` in a wheel."""
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent / "schemas"
    return checkout if checkout.is_dir() else package / "_schemas"


class Codec:
    """Encodes and decodes values of every schema in a schemas directory.

    Immutable after construction, so one instance can be shared freely.
    """

    __slots__ = ("_by_fingerprint", "_schemas")

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise FileNotFoundError(f"schemas directory not found: {directory}")
        raw_current = {p.stem: _read_schema_file(p) for p in sorted(directory.glob("*.avsc"))}
        if not raw_current:
            raise FileNotFoundError(f"no .avsc schemas in {directory}")
        history: dict[str, list[Any]] = {name: [] for name in raw_current}
        history_dir = directory / "history"
        if history_dir.is_dir():
            for path in sorted(history_dir.glob("*.avsc")):
                match = _HISTORY_FILE.match(path.name)
                if match is None or match["name"] not in raw_current:
                    raise CodecError(
                        path.stem,
                        f"history schema {path.name} must be named <current name>.v<N>.avsc",
                    )
                history[match["name"]].append(_read_schema_file(path))

        self._schemas: dict[str, _Schema] = {}
        # Every known fingerprint -> schema name, to explain a value sent to the
        # wrong topic instead of just calling its fingerprint unknown.
        self._by_fingerprint: dict[bytes, str] = {}
        for name, raw in raw_current.items():
            self._schemas[name] = self._build(name, raw, history[name])

    def _build(self, name: str, raw: Any, older: list[Any]) -> _Schema:
        if not isinstance(raw, dict) or raw.get("type") != "record":
            raise CodecError(name, "schema must be an Avro record")
        try:
            # A fresh named_schemas per parse: versions share a full name.
            reader = parse_schema(raw, {})
            parsed_older = [(parse_schema(o, {}), _fingerprint(o)) for o in older]
        except Exception as exc:  # fastavro raises several types for bad schemas
            raise CodecError(name, f"invalid Avro schema: {exc}") from exc
        current_fp = _fingerprint(raw)
        writers: dict[bytes, tuple[Any, Any]] = {}
        for parsed, fp in parsed_older:
            writers[fp] = (parsed, reader)
        # Set last: an older version identical in canonical form (only docs
        # changed) then needs no resolution.
        writers[current_fp] = (reader, None)
        for fp in writers:
            owner = self._by_fingerprint.setdefault(fp, name)
            if owner != name:
                raise CodecError(name, f"fingerprint {fp.hex()} is also used by {owner}")
        fields = tuple(_field_spec(name, f) for f in raw["fields"])
        return _Schema(
            name=name,
            raw=raw,
            reader=reader,
            identity=_identity(raw),
            fingerprint=current_fp,
            header=AVRO_MAGIC + current_fp,
            writers=writers,
            fields=fields,
            field_names=frozenset(f.name for f in fields),
            final_form=tuple((f.name, _FINAL_KINDS.get(f.kind, 0), f.nullable) for f in fields),
            encoder=RecordEncoder.of([(f.name, f.kind, f.nullable) for f in fields]),
        )

    @classmethod
    def load(cls, path: Path | None = None) -> Codec:
        """Load every schema from `path` (default: `default_schemas_dir()`)."""
        return cls(default_schemas_dir() if path is None else path)

    @property
    def schema_names(self) -> frozenset[str]:
        return frozenset(self._schemas)

    def fingerprint(self, schema_name: str) -> bytes:
        """The 8-byte CRC-64-AVRO fingerprint of the current version, wire order."""
        return self._schema(schema_name).fingerprint

    def schema_text(self, schema_name: str) -> str:
        """The current version as JSON text (what a schema registry is given)."""
        return json.dumps(self._schema(schema_name).raw, separators=(",", ":"))

    def _schema(self, schema_name: str) -> _Schema:
        try:
            return self._schemas[schema_name]
        except KeyError:
            # A programming error, not bad input: do not disguise it as CodecError.
            raise KeyError(f"unknown schema {schema_name!r}") from None

    # --- decoding -----------------------------------------------------------------

    def decode(
        self, schema_name: str, value: bytes, writers: WriterSchemas | None = None
    ) -> dict[str, Any]:
        """Decode a single-object, Confluent or JSON value into a dict of the current
        schema. Confluent values need `writers`, holding their schema id already."""
        schema = self._schema(schema_name)
        if value.startswith(AVRO_MAGIC):
            return self._decode_avro(schema, value)
        if value.startswith(CONFLUENT_MAGIC):
            return self._decode_confluent(schema, value, writers)
        if not value:
            raise CodecError(schema_name, "empty value")
        return self._decode_json(schema, value)

    def _decode_avro(self, schema: _Schema, value: bytes) -> dict[str, Any]:
        if len(value) < _HEADER_LEN:
            raise CodecError(schema.name, "truncated Avro single-object header")
        fp = value[2:_HEADER_LEN]
        writer = schema.writers.get(fp)
        if writer is None:
            owner = self._by_fingerprint.get(fp)
            if owner is not None:
                raise CodecError(
                    schema.name,
                    f"value was written with schema {owner!r} (fingerprint {fp.hex()})",
                    schema_violation=True,
                )
            raise CodecError(schema.name, f"unknown writer schema fingerprint {fp.hex()}")
        return _read_avro(schema, value, _HEADER_LEN, writer[0], writer[1])

    def _decode_confluent(
        self, schema: _Schema, value: bytes, writers: WriterSchemas | None
    ) -> dict[str, Any]:
        schema_id = confluent_schema_id(value)
        if schema_id is None:
            raise CodecError(
                schema.name, "truncated Confluent wire format header (0x00 and a 4-byte schema id)"
            )
        if writers is None:
            raise CodecError(
                schema.name,
                f"Confluent wire format (schema id {schema_id}), but no schema registry is "
                "configured (SCHEMA_REGISTRY_URL)",
            )
        try:
            writer = writers(schema_id)
        except UnknownWriterSchema as exc:
            raise CodecError(schema.name, str(exc)) from exc
        # The writer *is* the current schema (the usual case): no resolution needed.
        reader = None if writer.identity == schema.identity else schema.reader
        return _read_avro(
            schema,
            value,
            _CONFLUENT_HEADER_LEN,
            writer.parsed,
            reader,
            written=f"schema id {schema_id} ({writer.name})",
        )

    def _decode_json(self, schema: _Schema, value: bytes) -> dict[str, Any]:
        try:
            # Decode explicitly: json.loads(bytes) would also accept UTF-16/32.
            obj = json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CodecError(schema.name, f"neither Avro nor valid UTF-8 JSON: {exc}") from exc
        except RecursionError:
            # A few thousand "[" nest deeper than Python's parser may recurse.
            raise CodecError(schema.name, "JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise CodecError(schema.name, f"JSON value must be an object, got {_json_type(obj)}")
        out: dict[str, Any] = {}
        # Unknown keys are ignored on purpose: producers may add fields before
        # the schema here catches up, as Avro resolution would allow too.
        for field in schema.fields:
            raw = obj.get(field.name, _MISSING)
            if raw is None:
                if not field.nullable:
                    _schema_error(schema.name, field.name, "must not be null")
                out[field.name] = None
            elif raw is _MISSING:
                if not field.has_default:
                    _schema_error(schema.name, field.name, "required field is missing")
                out[field.name] = field.default
            else:
                try:
                    out[field.name] = field.from_json(raw)
                except _Invalid as exc:
                    _schema_error(schema.name, field.name, str(exc))
        return out

    # --- encoding -----------------------------------------------------------------

    def encode_avro(self, schema_name: str, record: Mapping[str, Any]) -> bytes:
        """Avro single-object encoding of `record` with the current schema."""
        return self._encode_avro(schema_name, record, self._schema(schema_name).header)

    def encode_confluent(
        self, schema_name: str, record: Mapping[str, Any], schema_id: int
    ) -> bytes:
        """The Confluent wire format of `record`: `schema_id` must be the registry's id
        of the current schema (`schema_text`)."""
        return self._encode_avro(schema_name, record, confluent_frame(schema_id))

    def _encode_avro(self, schema_name: str, record: Mapping[str, Any], header: bytes) -> bytes:
        schema = self._schema(schema_name)
        checked = _check_record(schema, record)
        try:
            if schema.encoder is not None:
                return schema.encoder.encode(header, checked)
            fo = BytesIO()
            fo.write(header)
            schemaless_writer(fo, schema.reader, checked)
        except Exception as exc:  # _check_record should have caught it already
            raise CodecError(schema_name, f"cannot encode: {exc}", schema_violation=True) from exc
        return fo.getvalue()

    def encode_json(self, schema_name: str, record: Mapping[str, Any]) -> bytes:
        """UTF-8 JSON object of `record`; timestamps as ISO-8601 UTC with a `Z` offset."""
        schema = self._schema(schema_name)
        checked = _check_record(schema, record)
        for field in schema.fields:
            if field.kind == "timestamp-millis" and checked[field.name] is not None:
                checked[field.name] = _iso_utc(checked[field.name])
        return json.dumps(checked, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _read_avro(
    schema: _Schema,
    value: bytes,
    start: int,
    writer: Any,
    reader: Any,
    *,
    written: str = "an older version of the schema",
) -> dict[str, Any]:
    """The Avro body of `value` from `start`, written with `writer`, resolved into
    `reader` (None: read as written)."""
    fo = BytesIO(value)
    fo.seek(start)
    try:
        record = schemaless_reader(fo, writer, reader)
    except SchemaResolutionError as exc:
        # Readable, but not as this topic's schema (another record, an incompatible
        # change): the producer's shape is wrong.
        raise CodecError(
            schema.name,
            f"value written with {written} cannot be read as {schema.name}: {exc!s:.300}",
            schema_violation=True,
        ) from exc
    except Exception as exc:
        # Untrusted bytes make fastavro raise EOFError, IndexError,
        # OverflowError, UnicodeDecodeError, ...: all mean "not decodable".
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CodecError(
            schema.name, f"invalid Avro body (truncated or corrupt): {detail}"
        ) from exc
    if fo.tell() != len(value):
        raise CodecError(
            schema.name, f"{len(value) - fo.tell()} trailing bytes after the Avro record"
        )
    return cast("dict[str, Any]", record)


def _reject_constant(name: str) -> NoReturn:
    # NaN/Infinity are not JSON; Python's json accepts them unless told otherwise.
    raise ValueError(f"{name} is not valid JSON")


def _schema_error(schema_name: str, field_name: str, detail: str) -> NoReturn:
    raise CodecError(schema_name, f"field {field_name!r}: {detail}", schema_violation=True)


def _iso_utc(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_FINAL_TEXT, _FINAL_INT, _FINAL_LONG, _FINAL_UTC = 1, 2, 3, 4
_FINAL_KINDS: Final = {
    "string": _FINAL_TEXT,
    "int": _FINAL_INT,
    "long": _FINAL_LONG,
    "timestamp-millis": _FINAL_UTC,
}


def _final_form(schema: _Schema, record: Mapping[str, Any]) -> dict[str, Any] | None:
    """`record` as `_check_record` returns it, when every field is there with a value
    already in its final form (None where allowed, ASCII text, an integer in range,
    a datetime in UTC); else None. The records dispatch builds are: this spares
    them a conversion call per field (half the check's time)."""
    if len(record) != len(schema.final_form):
        return None
    out: dict[str, Any] = {}
    for name, kind, nullable in schema.final_form:
        value = record.get(name, _MISSING)
        if value is None:
            if not nullable:
                return None
        elif kind == _FINAL_TEXT:
            if type(value) is not str or not value.isascii():
                return None
        elif kind == _FINAL_UTC:
            if type(value) is not datetime or value.tzinfo is not UTC:
                return None
        elif kind in (_FINAL_INT, _FINAL_LONG):
            low, high = _INT32 if kind == _FINAL_INT else _INT64
            if type(value) is not int or not low <= value <= high:
                return None
        else:
            return None
        out[name] = value
    return out


def _check_record(schema: _Schema, record: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a record to encode; returns a copy with defaults filled in.

    Stricter than fastavro on purpose: fastavro silently encodes a naive
    datetime as *local* time and drops misspelled keys.
    """
    final = _final_form(schema, record)
    if final is not None:
        return final
    return _checked_field_by_field(schema, record)


def _checked_field_by_field(schema: _Schema, record: Mapping[str, Any]) -> dict[str, Any]:
    unknown = record.keys() - schema.field_names
    if unknown:
        raise CodecError(schema.name, f"unknown fields {sorted(unknown)!r}", schema_violation=True)
    out: dict[str, Any] = {}
    for field in schema.fields:
        value = record.get(field.name, _MISSING)
        if value is _MISSING:
            if not field.has_default:
                _schema_error(schema.name, field.name, "required field is missing")
            value = field.default
        elif value is None:
            if not field.nullable:
                _schema_error(schema.name, field.name, "must not be None")
        elif field.kind == "timestamp-millis":
            if not isinstance(value, datetime):
                _schema_error(schema.name, field.name, f"expected a datetime, got {value!r:.64}")
            if value.tzinfo is None or value.utcoffset() is None:
                _schema_error(schema.name, field.name, "naive datetime; attach a time zone")
            try:
                value = value.astimezone(UTC)
            except OverflowError:
                _schema_error(schema.name, field.name, f"{value!r:.64} is out of range in UTC")
        else:
            # Same type rules as decoding JSON, so whatever is encoded decodes.
            try:
                value = field.from_json(value)
            except _Invalid as exc:
                _schema_error(schema.name, field.name, str(exc))
        out[field.name] = value
    return out
