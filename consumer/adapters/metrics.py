"""Prometheus metrics of one service instance (its own registry, so several
instances in one test process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from consumer.domain.model import TriggerType
from consumer.service.ports import BatchOutcome

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._executed: dict[tuple[TriggerType, str], Counter] = {}
        self.consumed = Counter(
            "followup_events_consumed", "Input events applied, by topic", ["topic"], registry=r
        )
        self.dead_lettered = Counter(
            "followup_events_dead_lettered",
            "Input values sent to the dead-letter topic, by topic and error type",
            ["topic", "error_type"],
            registry=r,
        )
        self.scheduled = Counter(
            "followups_scheduled",
            "Follow-ups scheduled (new pending)",
            ["trigger_type"],
            registry=r,
        )
        self.cancelled = Counter(
            "followups_cancelled", "Follow-ups cancelled", ["trigger_type"], registry=r
        )
        self.expired_total = Counter(
            "followups_expired",
            "Follow-ups expired without being sent",
            ["trigger_type"],
            registry=r,
        )
        self.executed_total = Counter(
            "followups_executed",
            "Follow-ups published and marked executed",
            ["trigger_type", "template"],
            registry=r,
        )
        self.failed = Counter(
            "followups_failed",
            "Follow-ups given up after MAX_RETRIES",
            ["trigger_type"],
            registry=r,
        )
        self.publish_errors = Counter(
            "followup_publish_errors", "Failed publish attempts", ["trigger_type"], registry=r
        )
        self.refused = Counter(
            "followups_refused",
            "Follow-ups refused by MAX_PENDING_FOLLOWUPS_PER_USER",
            ["trigger_type"],
            registry=r,
        )
        self.held_total = Counter(
            "followups_held",
            "Follow-ups held past their time, by reason (quiet_hours, daily_cap)",
            ["trigger_type", "reason"],
            registry=r,
        )
        self.held_expired = Counter(
            "followups_held_expired",
            "Follow-ups expired because a hold would pass MAX_LATENESS, by reason",
            ["trigger_type", "reason"],
            registry=r,
        )
        self.firing_latency = Histogram(
            "followup_firing_latency_seconds",
            "Publish time minus scheduled_at",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "followup_consumer_lag",
            "Records not yet applied, by input partition",
            ["topic", "partition"],
            registry=r,
        )
        self.batch_duration = Histogram(
            "followup_ingest_batch_seconds", "Time to apply one ingest batch", registry=r
        )
        self.batch_size = Histogram(
            "followup_ingest_batch_events",
            "Events per ingest batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000),
            registry=r,
        )

    # service.ports.Telemetry

    def expired(self, trigger: TriggerType) -> None:
        self.expired_total.labels(trigger.value).inc()

    def executed(self, trigger: TriggerType, template_id: str, lateness: float) -> None:
        # Once per follow-up sent: the labelled child is kept, not looked up each time.
        key = (trigger, template_id)
        child = self._executed.get(key)
        if child is None:
            child = self._executed[key] = self.executed_total.labels(trigger.value, template_id)
        child.inc()
        self.firing_latency.observe(lateness)

    def publish_error(self, trigger: TriggerType, *, gave_up: bool) -> None:
        self.publish_errors.labels(trigger.value).inc()
        if gave_up:
            self.failed.labels(trigger.value).inc()

    def held(self, trigger: TriggerType, reason: str, *, expired: bool) -> None:
        if expired:
            self.held_expired.labels(trigger.value, reason).inc()
            self.expired_total.labels(trigger.value).inc()
        else:
            self.held_total.labels(trigger.value, reason).inc()

    def batch_applied(self, outcome: BatchOutcome, events: int) -> None:
        for topic, n in outcome.applied.items():
            self.consumed.labels(topic).inc(n)
        for (topic, error_type), n in outcome.dead.items():
            self.dead_lettered.labels(topic, error_type).inc(n)
        for counter, counts in (
            (self.scheduled, outcome.scheduled),
            (self.cancelled, outcome.cancelled),
            (self.expired_total, outcome.expired),
            (self.refused, outcome.refused),
        ):
            for trigger, n in counts.items():
                counter.labels(trigger.value).inc(n)
        self.batch_duration.observe(outcome.seconds)
        self.batch_size.observe(events)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
