"""One health report, whoever looks: the running service (GET /health) and the
operator from outside (`followup-consumer health`). Pure: the callers gather
the facts, this decides the status and the shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["healthy", "degraded", "unhealthy"]


@dataclass(frozen=True, slots=True)
class Probe:
    """The answer of a liveness or readiness probe: yes or no, and why."""

    ok: bool
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "failing", **self.detail}


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    end_offset: int | None
    next_offset: int | None  # the next record to apply (0 when none is stored)
    lag: int | None


def lag_of(
    end_offsets: Mapping[tuple[str, int], int | None],
    applied: Mapping[tuple[str, int], int] | None,
    *,
    missing_is_zero: bool = True,
) -> list[PartitionLag]:
    """End offset minus the next offset to apply, per partition; unknown (None)
    when the applied positions could not be read. A partition without a stored
    position counts from 0 (`missing_is_zero`) or is unknown."""
    out = []
    for (topic, partition), end in sorted(end_offsets.items()):
        if applied is None:
            out.append(PartitionLag(topic, partition, end, None, None))
            continue
        done = applied.get((topic, partition), 0 if missing_is_zero else None)
        lag = None if end is None or done is None else max(0, end - done)
        out.append(PartitionLag(topic, partition, end, done, lag))
    return out


@dataclass(frozen=True, slots=True)
class HealthReport:
    group: str
    database_error: str | None
    kafka_error: str | None
    figures: Mapping[str, int] | None
    partitions: Sequence[PartitionLag] = field(default_factory=tuple)
    # Known only inside a running instance; None when looked at from outside.
    ingesting: bool | None = None
    scheduler_enabled: bool = False
    scheduler_running: bool | None = None
    apscheduler_jobs: int | None = None
    # From outside (the CLI): the group's live members and state, as the broker says.
    members: int | None = None
    group_state: str | None = None

    @property
    def status(self) -> Status:
        if self.database_error is not None or self.kafka_error is not None:
            return "unhealthy"
        if self.ingesting is False or self.members == 0:
            return "unhealthy"  # nothing consumes: the figures are standing still
        if self.scheduler_enabled and self.scheduler_running is False:
            return "degraded"  # ingest goes on; dispatch will catch up
        return "healthy"

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    @property
    def total_lag(self) -> int | None:
        if self.kafka_error is not None or any(p.lag is None for p in self.partitions):
            return None
        return sum(p.lag or 0 for p in self.partitions)

    def as_json(self) -> dict[str, Any]:
        figures = self.figures or {}
        return {
            "status": self.status,
            "scheduler_running": self.scheduler_running,
            "pending_jobs": figures.get("pending_jobs"),
            "executed_today": figures.get("executed_today"),
            "apscheduler_jobs": self.apscheduler_jobs,
            "database": {"reachable": self.database_error is None, "error": self.database_error},
            "kafka": {"reachable": self.kafka_error is None, "error": self.kafka_error},
            "consumer": {
                "group": self.group,
                "members": self.members,
                "group_state": self.group_state,
                "ingesting": self.ingesting,
                "assigned_partitions": [f"{p.topic}[{p.partition}]" for p in self.partitions],
                "lag": {f"{p.topic}[{p.partition}]": p.lag for p in self.partitions},
                "total_lag": self.total_lag,
                "partitions": [
                    {
                        "topic": p.topic,
                        "partition": p.partition,
                        "end_offset": p.end_offset,
                        "next_offset": p.next_offset,
                        "lag": p.lag,
                    }
                    for p in self.partitions
                ],
            },
        }
