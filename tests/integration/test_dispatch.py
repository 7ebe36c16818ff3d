"""Dispatch on the real broker and database: once, from several instances, after
a crash, through publish failures; the periodic jobs; replay of old history."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consumer.adapters.postgres.store import (
    PostgresStore,
    create_engine,
    migrate,
)
from consumer.bootstrap import policy_from_settings
from consumer.config import Settings
from consumer.domain.model import reengagement_id
from consumer.entrypoints.replay import replay
from consumer.entrypoints.scheduler import build_scheduler
from consumer.service.periodic import PeriodicJobs
from tests.integration.helpers import (
    CODEC,
    DispatchRounds,
    consumed_to_end,
    nothing_due,
    produce,
    query,
    read_to_end,
    running,
    service_env,
    wait_until,
    write_custom_followups,
)

pytestmark = pytest.mark.integration


def start_instance(settings: Settings, **extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "consumer", "run"],
        env=service_env(settings, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def status_counts(rows: list[object]) -> dict[str, int]:
    return {r["status"]: r["n"] for r in rows}  # type: ignore[index]


async def test_three_instances_publish_each_due_followup_exactly_once(settings: Settings) -> None:
    due_at = datetime.now(UTC) + timedelta(seconds=8)
    ids = await write_custom_followups(settings, [(f"user-{i}", due_at) for i in range(1000)])
    procs = [start_instance(settings) for _ in range(3)]
    try:
        await wait_until(
            lambda: query(
                settings, "SELECT count(*) AS n FROM scheduled_followups WHERE status = 'executed'"
            ),
            lambda rows: rows[0]["n"] == 1000,
            timeout=90,
        )
    finally:
        stop_all(procs)
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
    # Every instance has exited: what the topic holds now is all it will ever hold.
    out = await read_to_end(settings, settings.topic_followup_due)
    event_ids = [CODEC.decode("followup_due", r.value)["event_id"] for r in out]
    assert len(event_ids) == 1000, "a follow-up was published twice or not at all"
    assert set(event_ids) == set(ids)
    owners = await query(
        settings,
        "SELECT count(*) AS n FROM scheduled_followups WHERE lease_owner IS NOT NULL",
    )
    assert owners[0]["n"] == 0


async def test_claim_abandoned_by_a_dead_instance_is_published_after_the_lease(
    settings: Settings,
) -> None:
    now = datetime.now(UTC)
    lease = timedelta(seconds=8)
    [fid] = await write_custom_followups(settings, [("user-0", now - timedelta(seconds=1))])
    engine = create_engine(settings.database_url)
    try:
        # What a process leaves behind when it dies between claim and publish.
        claimed = await PostgresStore(engine, "x").claim_due("dead-instance", now, lease, 10)
    finally:
        await engine.dispose()
    assert [c.followup.id for c in claimed] == [fid]
    async with running(settings) as service:
        rounds = DispatchRounds(service)
        # A whole dispatch round, begun and ended while the lease runs, leaves it alone.
        await rounds.after_now()
        rows = await query(settings, "SELECT status, lease_owner FROM scheduled_followups")
        assert datetime.now(UTC) < now + lease, "setup too slow: the lease ran out first"
        assert (rows[0]["status"], rows[0]["lease_owner"]) == ("pending", "dead-instance")
        executed = await wait_until(
            lambda: query(settings, "SELECT * FROM scheduled_followups WHERE status='executed'"),
            lambda rows: len(rows) == 1,
            timeout=30,
        )
        # Published before it was marked executed, and nothing else is due.
        out = await read_to_end(settings, settings.topic_followup_due)
    assert executed[0]["executed_at"] >= now + lease
    assert [CODEC.decode("followup_due", r.value)["event_id"] for r in out] == [fid]


async def test_publish_failures_are_retried_then_marked_failed(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"max_retries": 2, "retry_backoff_seconds": 0.3, "publish_timeout_ms": 1500}
    )
    async with running(settings):
        # The broker answers, but the topic refuses every record we write: it
        # now takes no record larger than 100 bytes.
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            await wait_until(
                lambda: admin.list_topics(), lambda t: settings.topic_followup_due in t
            )
            await admin.alter_configs(
                [
                    ConfigResource(
                        ConfigResourceType.TOPIC,
                        settings.topic_followup_due,
                        configs={"max.message.bytes": "100"},
                    )
                ]
            )
        finally:
            await admin.close()
        [fid] = await write_custom_followups(settings, [("user-0", datetime.now(UTC))])
        rows = await wait_until(
            lambda: query(settings, "SELECT * FROM scheduled_followups"),
            lambda rows: rows[0]["status"] == "failed",
            timeout=60,
        )
    row = rows[0]
    assert row["id"] == fid
    assert row["retry_count"] == 2  # MAX_RETRIES=2 retries (after the first attempt)
    assert "TooLarge" in row["error_message"]
    assert row["executed_at"] is None


async def test_daily_sweep_and_retention_under_a_controlled_clock(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    await migrate(engine)
    store = PostgresStore(engine, settings.kafka_group_id)
    policy = policy_from_settings(settings)
    # 08:59 UTC on a day two months after the users' last activity.
    clock_now = datetime(2026, 5, 4, 8, 59, tzinfo=UTC)
    jobs = PeriodicJobs(
        store,
        policy,
        timedelta(days=settings.retention_days),
        lambda: clock_now,
    )
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO user_projection (user_id, last_activity_at) VALUES "
                "('idle', '2026-03-01T12:00:00Z'), ('active', '2026-05-01T12:00:00Z')"
            )
            old_exec = datetime(2026, 1, 1, tzinfo=UTC)
            for i, (status, executed_at) in enumerate(
                [
                    ("executed", old_exec),
                    ("executed", clock_now - timedelta(days=10)),
                    ("pending", None),
                ]
            ):
                await conn.exec_driver_sql(
                    "INSERT INTO scheduled_followups (id, user_id, trigger_type, scheduled_at, "
                    "due_at, status, executed_at) VALUES ($1, 'other', 'custom', $2, $2, $3, $4)",
                    (f"r{i}", old_exec, status, executed_at),
                )
        assert await jobs.reengagement_sweep() == 1
        rows = await query(
            settings, "SELECT * FROM scheduled_followups WHERE trigger_type = 're_engagement'"
        )
        assert [(r["id"], r["status"]) for r in rows] == [(reengagement_id("idle", 0), "pending")]
        # Idle since March: the rule's time is long past, so the next 9:00 is used.
        assert rows[0]["scheduled_at"] == datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
        assert await jobs.reengagement_sweep() == 0  # it has one now

        assert await jobs.retention_cleanup() == 1
        left = await query(settings, "SELECT id FROM scheduled_followups WHERE user_id='other'")
        assert sorted(r["id"] for r in left) == ["r1", "r2"]
    finally:
        await engine.dispose()

    scheduler = build_scheduler(jobs, policy)
    triggers = {job.id: str(job.trigger) for job in scheduler.get_jobs()}
    assert "hour='9'" in triggers["reengagement_sweep"]
    assert "minute='0'" in triggers["reengagement_sweep"]
    assert set(triggers) == {"reengagement_sweep", "retention"}


async def test_replay_of_year_old_bookings_expires_them_and_sends_nothing(
    settings: Settings,
) -> None:
    year_ago = datetime.now(UTC) - timedelta(days=365)
    values = [
        CODEC.encode_json(
            "booking_confirmed",
            {
                "event_id": f"evt-{i}",
                "occurred_at": year_ago + timedelta(days=i),
                "user_id": f"user-{i % 3}",
                "booking_id": f"bk-{i}",
                "event_date": year_ago + timedelta(days=i + 7),
                "conversation_id": None,
                "timezone": None,
            },
        )
        for i in range(20)
    ]
    async with running(settings.model_copy(update={"scheduler_enabled": False})):
        pass  # creates the topics
    await produce(settings, settings.topic_booking_confirmed, [(None, v) for v in values])
    report = await replay(settings, lambda: datetime.now(UTC), progress=False)
    assert report.events == 20
    snapshot = await query(
        settings,
        "SELECT id, trigger_type, status, scheduled_at FROM scheduled_followups ORDER BY id",
    )
    assert {r["status"] for r in snapshot} == {"expired"}
    assert sum(r["trigger_type"] == "post_event" for r in snapshot) == 20

    # Replaying again changes nothing; running with dispatch sends nothing: once the
    # service has consumed the topics to their end (its group has no saved offsets:
    # from the beginning), nothing is due, and a dispatch round has run since.
    await replay(settings, lambda: datetime.now(UTC), progress=False)
    async with running(settings) as service:
        rounds = DispatchRounds(service)
        await consumed_to_end(settings, service=service)
        await nothing_due(settings)
        await rounds.after_now()
    again = await query(
        settings,
        "SELECT id, trigger_type, status, scheduled_at FROM scheduled_followups ORDER BY id",
    )
    assert again == snapshot
    assert await read_to_end(settings, settings.topic_followup_due) == []
