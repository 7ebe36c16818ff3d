"""The example payloads of the README ("Example payloads") are what the schemas say:
each decodes with the codec, and names every field of its schema."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from consumer.adapters.codec import Codec
from consumer.service.ports import DeadLetter

README = Path(__file__).resolve().parents[2] / "README.md"
CODEC = Codec.load()
# "`booking.confirmed` (`schemas/booking_confirmed.avsc`):" then a ```json block.
EXAMPLE = re.compile(
    r"^`(?P<topic>[a-z._]+)` \(`schemas/(?P<schema>[a-z_]+)\.avsc`\)"
    r".*?\n```json\n(?P<body>.*?)\n```",
    re.MULTILINE | re.DOTALL,
)
DEAD_LETTER = re.compile(r"^`followup\.dlq`:.*?\n```json\n(?P<body>.*?)\n```", re.M | re.S)


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Example payloads")
    return text[start : text.index("\n## ", start)]


def test_one_example_per_schema_each_decodes_with_every_field() -> None:
    found = {m["schema"]: m for m in EXAMPLE.finditer(section())}
    assert set(found) == set(CODEC.schema_names)
    for schema, match in found.items():
        assert match["topic"].replace(".", "_") == schema
        body = match["body"]
        decoded = CODEC.decode(schema, body.encode())  # raises CodecError if it does not fit
        assert set(json.loads(body)) == set(decoded), f"{schema}: not every field shown"


@dataclass(frozen=True)
class _Consumed:
    topic: str = "message.emotion_scored"
    partition: int = 3
    offset: int = 3
    key: bytes | None = b"user-a77167"
    value: bytes | None = b"{}"
    headers: tuple[tuple[str, bytes], ...] = ()


def test_the_dead_letter_example_has_the_headers_the_service_writes() -> None:
    match = DEAD_LETTER.search(section())
    assert match is not None
    example = json.loads(match["body"])
    letter = DeadLetter(_Consumed(), "rule_violation", "message_emotion_scored: ...")
    assert set(example["headers"]) == {name for name, _ in letter.headers()}
    origin = example["origin"]
    assert example["headers"]["dlq.original.topic"] == origin["topic"]
    assert example["headers"]["dlq.original.offset"] == str(origin["offset"])
    assert example["error"]["type"] == example["headers"]["dlq.error.type"]
