"""The codec's own Avro writer against fastavro's: the same bytes for every schema,
every record the codec accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.adapters.avro_encoder import RecordEncoder, long_bytes
from consumer.adapters.codec import Codec, _check_record

CODEC = Codec.load()
SCHEMAS = sorted(CODEC.schema_names)

_KINDS: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "double": st.floats(allow_nan=False, allow_infinity=False),  # the codec refuses both
    "boolean": st.booleans(),
    # Any instant in any offset, before 1970 too: sub-millisecond digits truncate.
    "timestamp-millis": st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), ZoneInfo("Asia/Tokyo")]),
    ),
}


def _record(name: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = CODEC._schema(name).fields
    return st.fixed_dictionaries(
        {f.name: _KINDS[f.kind] | st.none() if f.nullable else _KINDS[f.kind] for f in fields}
    )


def _fastavro(name: str, record: dict[str, Any]) -> bytes:
    schema = CODEC._schema(name)
    fo = BytesIO()
    fo.write(schema.header)
    schemaless_writer(fo, schema.reader, _check_record(schema, record))
    return fo.getvalue()


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_schema_is_written_by_the_codec_itself(name: str) -> None:
    assert CODEC._schema(name).encoder is not None


@pytest.mark.parametrize("name", SCHEMAS)
@settings(max_examples=300)
@given(data=st.data())
def test_the_same_bytes_as_fastavro(name: str, data: st.DataObject) -> None:
    record = data.draw(_record(name))
    encoded = CODEC.encode_avro(name, record)
    assert encoded == _fastavro(name, record)
    # What it wrote reads back as what it writes the same way (timestamps in millis).
    assert CODEC.encode_avro(name, CODEC.decode(name, encoded)) == encoded


@given(st.integers(-(2**63), 2**63 - 1))
def test_longs_are_zigzag_varints(value: int) -> None:
    zigzag = (value << 1) ^ (value >> 63)
    decoded, shift = 0, 0
    for byte in long_bytes(value):
        decoded |= (byte & 0x7F) << shift
        shift += 7
    assert decoded == zigzag
    assert all(b & 0x80 for b in long_bytes(value)[:-1])
    assert not long_bytes(value)[-1] & 0x80


def test_a_kind_it_does_not_write_is_left_to_fastavro() -> None:
    assert RecordEncoder.of([("x", "float", False)]) is None
    assert RecordEncoder.of([("x", "double", True)]) is not None
