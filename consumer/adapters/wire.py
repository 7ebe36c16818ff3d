"""From a Kafka value to a validated domain event, or `BadInput` saying why not.

Two steps: `Codec.decode` turns bytes into a dict that fits the topic's schema,
then a strict pydantic model enforces the contract's rules (id shapes, score
range, sane dates, real time zones) before the frozen dataclass of
`consumer.domain.events` is built. Every failure of either step becomes `BadInput`, the
one error the consumer routes to the dead-letter topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from consumer.adapters.codec import CodecError, WriterSchemas, confluent_schema_id
from consumer.adapters.wire_fast import fast_event, iana_zones
from consumer.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    EmotionScored,
    EventKind,
    InputEvent,
    UserActivity,
)
from consumer.domain.limits import (
    ACTIVITY_TYPE_MAX_CHARS,
    FREE_TEXT_MAX_CHARS,
    bounded_text_problem,
    identifier_problem,
    locale_problem,
    timestamp_problem,
)
from consumer.domain.locales import canonical_locale
from consumer.domain.model import default_conversation_id
from consumer.service.ports import BadValue, Unavailable

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

    from consumer.adapters.codec import Codec

log = logging.getLogger(__name__)

__all__ = ["BadInput", "ErrorType", "WireDecoder", "event_from_record", "parse_event"]

ErrorType = Literal["decode_error", "schema_error", "rule_violation"]


class BadInput(BadValue):
    """A value the consumer cannot use; it goes to the dead-letter topic.

    `error_type` is machine-readable (a DLQ header): `decode_error` (not
    decodable: tombstone, garbage, truncated Avro, unknown writer schema),
    `schema_error` (decodable but does not fit the schema) or `rule_violation`
    (fits the schema, breaks a contract rule). `message` names the field.
    """

    def __init__(self, error_type: ErrorType, message: str) -> None:
        super().__init__(error_type, message)
        self.error_type: ErrorType = error_type


# --- field rules (consumer.domain.limits, shared with HTTP and the CLI) ------------


def _checked(problem: str | None, value: str) -> str:
    if problem is not None:
        raise ValueError(problem)
    return value


def _check_id(value: str) -> str:
    return _checked(identifier_problem(value), value)


def _check_activity_type(value: str) -> str:
    return _checked(bounded_text_problem(value, ACTIVITY_TYPE_MAX_CHARS), value)


def _check_free_text(value: str) -> str:
    return _checked(bounded_text_problem(value, FREE_TEXT_MAX_CHARS, required=False), value)


def _check_timezone(value: str) -> str:
    if value not in iana_zones():
        raise ValueError(f"{value[:64]!r} is not an IANA time zone name")
    return value


def _check_locale(value: str) -> str:
    # A bad tag is refused like a bad zone (a dead letter): the producer's bug shows.
    return canonical_locale(_checked(locale_problem(value), value))


def _check_timestamp(value: datetime) -> datetime:
    # AwareDatetime has already refused naive values; the shared rule also
    # refuses instants with no UTC equivalent (year 1 at +01:00) before converting.
    _checked(timestamp_problem(value), "")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


Id = Annotated[str, AfterValidator(_check_id)]
Timestamp = Annotated[AwareDatetime, AfterValidator(_check_timestamp)]
ActivityType = Annotated[str, AfterValidator(_check_activity_type)]
FreeText = Annotated[str, AfterValidator(_check_free_text)]
TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]
LocaleTag = Annotated[str, AfterValidator(_check_locale)]
Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


# --- wire models -------------------------------------------------------------------


class _WireEvent(BaseModel):
    # strict: the codec already produced the schema's Python types; anything
    # else (a "0.5" string for a score) is a bug upstream, not something to coerce.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    event_id: Id
    occurred_at: Timestamp
    user_id: Id


class _BookingConfirmedIn(_WireEvent):
    booking_id: Id
    event_date: Timestamp
    conversation_id: Id | None = None
    timezone: TimeZoneName | None = None
    locale: LocaleTag | None = None

    def to_event(self) -> BookingConfirmed:
        return BookingConfirmed(
            event_id=self.event_id,
            occurred_at=self.occurred_at,
            user_id=self.user_id,
            booking_id=self.booking_id,
            event_date=self.event_date,
            # The contract's default, so every booking has a conversation.
            conversation_id=self.conversation_id or default_conversation_id(self.booking_id),
            timezone=self.timezone,
            locale=self.locale,
        )


class _BookingCancelledIn(_WireEvent):
    booking_id: Id
    reason: FreeText | None = None

    def to_event(self) -> BookingCancelled:
        return BookingCancelled(
            event_id=self.event_id,
            occurred_at=self.occurred_at,
            user_id=self.user_id,
            booking_id=self.booking_id,
            reason=self.reason,
        )


class _EmotionScoredIn(_WireEvent):
    conversation_id: Id
    message_id: Id
    score: Score
    label: FreeText | None = None

    def to_event(self) -> EmotionScored:
        return EmotionScored(
            event_id=self.event_id,
            occurred_at=self.occurred_at,
            user_id=self.user_id,
            conversation_id=self.conversation_id,
            message_id=self.message_id,
            score=self.score,
            label=self.label,
        )


class _UserActivityIn(_WireEvent):
    activity_type: ActivityType
    conversation_id: Id | None = None
    locale: LocaleTag | None = None

    def to_event(self) -> UserActivity:
        return UserActivity(
            event_id=self.event_id,
            occurred_at=self.occurred_at,
            user_id=self.user_id,
            activity_type=self.activity_type,
            conversation_id=self.conversation_id,
            locale=self.locale,
        )


_WireModel = _BookingConfirmedIn | _BookingCancelledIn | _EmotionScoredIn | _UserActivityIn
_Builder = Callable[[Mapping[str, Any]], InputEvent]


def _builder(model: type[_WireModel]) -> _Builder:
    # Bind model_validate once instead of looking it up per event.
    validate = model.model_validate

    def build(record: Mapping[str, Any]) -> InputEvent:
        return validate(record).to_event()

    return build


_BUILDERS: Final[dict[EventKind, _Builder]] = {
    EventKind.BOOKING_CONFIRMED: _builder(_BookingConfirmedIn),
    EventKind.BOOKING_CANCELLED: _builder(_BookingCancelledIn),
    EventKind.EMOTION_SCORED: _builder(_EmotionScoredIn),
    EventKind.USER_ACTIVITY: _builder(_UserActivityIn),
}

# pydantic error types that mean "the dict does not fit the schema" rather than
# "a value breaks a rule"; the codec normally catches these first.
_SCHEMA_ERROR_TYPES: Final = frozenset({"missing", "model_type", "dict_type", "timezone_aware"})


def _error_type(error: ErrorDetails) -> ErrorType:
    kind = error["type"]
    if kind in _SCHEMA_ERROR_TYPES or kind.endswith(("_type", "_parsing")):
        return "schema_error"
    return "rule_violation"


def _describe(error: ErrorDetails) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "<value>"
    ctx = error.get("ctx") or {}
    # Our own validators' ValueError text, without pydantic's "Value error, ".
    detail = (
        str(ctx["error"]) if error["type"] == "value_error" and "error" in ctx else error["msg"]
    )
    if error["type"] == "missing":
        return f"field {field!r}: {detail}"
    return f"field {field!r}: {detail} (got {error['input']!r:.80})"


def _bad_input(kind: EventKind, exc: ValidationError) -> BadInput:
    errors = exc.errors(include_url=False)
    # Schema errors outrank rule violations: the producer's shape is wrong.
    types = {_error_type(e) for e in errors}
    error_type: ErrorType = "schema_error" if "schema_error" in types else "rule_violation"
    return BadInput(error_type, f"{kind.value}: " + "; ".join(_describe(e) for e in errors))


def event_from_record(kind: EventKind, record: Mapping[str, Any]) -> InputEvent:
    """Apply the contract's rules to an already-decoded record of `kind`."""
    return fast_event(kind, record) or validated_event(kind, record)


def validated_event(kind: EventKind, record: Mapping[str, Any]) -> InputEvent:
    """The record through its pydantic model: the answer, and the error's words."""
    try:
        return _BUILDERS[kind](record)
    except ValidationError as exc:
        raise _bad_input(kind, exc) from exc


def parse_event(
    kind: EventKind, value: bytes | None, codec: Codec, writers: WriterSchemas | None = None
) -> InputEvent:
    """Decode a Kafka value of `kind`'s topic into its domain event.

    Raises BadInput for anything unusable, including a tombstone (None value).
    Values in the Confluent wire format need `writers` (the registry's schemas),
    prefetched for their ids.
    """
    if value is None:
        raise BadInput("decode_error", f"{kind.value}: value is null (tombstone)")
    try:
        record = codec.decode(kind.value, value, writers)
    except CodecError as exc:
        raise BadInput(
            "schema_error" if exc.schema_violation else "decode_error", str(exc)
        ) from exc
    return event_from_record(kind, record)


class WireDecoder:
    """`parse_event` bound to a codec: the ingest service's `EventDecoder`.

    With `writers` (a schema registry configured), `prepare` fetches the writer
    schemas of a batch's Confluent-framed values before any is decoded: the I/O
    happens there, where an outage raises `Unavailable` and the batch waits.

    Anything else `parse_event` raises would be a bug of ours; it still becomes
    a `decode_error` dead letter (logged with its traceback), because one value
    must never stop a partition. The property tests call `parse_event` itself
    and fail on any such escape. `Unavailable` is the exception: a schema that
    should have been fetched and was not is no fault of the value's.
    """

    def __init__(self, codec: Codec, writers: WriterSchemas | None = None) -> None:
        self.codec = codec
        self.writers = writers

    async def prepare(self, values: Iterable[bytes | None]) -> None:
        """Fetch the writer schemas the Confluent-framed `values` name (cached per id)."""
        if self.writers is None:
            return
        ids = {i for i in map(confluent_schema_id, values) if i is not None}
        if ids:
            await self.writers.prefetch(ids)

    def __call__(self, kind: EventKind, value: bytes | None) -> InputEvent:
        try:
            return parse_event(kind, value, self.codec, self.writers)
        except (BadInput, Unavailable):
            raise
        except Exception as exc:
            log.exception("unexpected error decoding a %s value", kind.value)
            raise BadInput(
                "decode_error",
                f"{kind.value}: unexpected {type(exc).__name__} while decoding: {exc!s:.200}",
            ) from exc
