"""What one benchmark run calls its database, topics and consumer groups, and which
input topic carries which schema."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

# (schema name, default topic suffix, the service's environment variable), in
# the order of the mix below.
INPUTS: tuple[tuple[str, str, str], ...] = (
    ("user_activity", "user.activity", "TOPIC_USER_ACTIVITY"),
    ("message_emotion_scored", "message.emotion_scored", "TOPIC_EMOTION_SCORED"),
    ("booking_confirmed", "booking.confirmed", "TOPIC_BOOKING_CONFIRMED"),
    ("booking_cancelled", "booking.cancelled", "TOPIC_BOOKING_CANCELLED"),
)

OUTPUTS: tuple[tuple[str, str], ...] = (
    ("followup.due", "TOPIC_FOLLOWUP_DUE"),
    ("followup.dlq", "TOPIC_DLQ"),
)


@dataclass(frozen=True)
class Names:
    prefix: str
    database: str
    inputs: tuple[str, ...]  # in INPUTS order
    outputs: tuple[str, ...]  # in OUTPUTS order
    service_group: str
    bare_group: str

    @classmethod
    def fresh(cls) -> Names:
        token = secrets.token_hex(4)
        prefix = f"bench{token}"
        return cls(
            prefix=prefix,
            database=f"bench_{token}",
            inputs=tuple(f"{prefix}.{suffix}" for _, suffix, _ in INPUTS),
            outputs=tuple(f"{prefix}.{suffix}" for suffix, _ in OUTPUTS),
            service_group=f"{prefix}-service",
            bare_group=f"{prefix}-bare",
        )

    @property
    def topics(self) -> tuple[str, ...]:
        return (*self.inputs, *self.outputs)
