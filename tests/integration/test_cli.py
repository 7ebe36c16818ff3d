"""The operator CLI as an operator runs it: `python -m consumer ...` in a subprocess,
against the real PostgreSQL and Kafka of the test."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from consumer.adapters.crypto import new_key
from consumer.adapters.kafka import ensure_topics
from consumer.adapters.postgres.store import create_engine, migrate
from consumer.config import Settings
from tests.integration.conftest import REPO
from tests.integration.helpers import input_topics, new_id, query, service_env

pytestmark = pytest.mark.integration

AT = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def cli(settings: Settings, *argv: str, **env: str) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        *argv,
        cwd=REPO,
        env=service_env(settings, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def produce_to(settings: Settings, topic: str, counts: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for partition, n in counts.items():
            for _ in range(n):
                await producer.send_and_wait(topic, b"{}", partition=partition)
    finally:
        await producer.stop()


async def migrated(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def schedule(
    settings: Settings, user: str, message: str = "See you soon!", **env: str
) -> Ran:
    return await cli(
        settings,
        "followups", "schedule", "--user", user, "--conversation", f"{user}-conv",
        "--message", message, "--at", AT.isoformat(), "--json",
        **env,
    )  # fmt: skip


def messages(err: str) -> list[str]:
    """The plain-text lines of stderr (the JSON log lines left out)."""
    return [line for line in err.splitlines() if line and not line.startswith("{")]


async def test_schedule_list_show_cancel(settings: Settings) -> None:
    await migrated(settings)
    user, other = new_id("user"), new_id("user")

    made = await schedule(settings, user, "Ready for your next trip?")
    assert made.code == 0, made.err
    created = made.json()
    fid = created["id"]
    assert created["user_id"] == user
    assert created["conversation_id"] == f"{user}-conv"
    assert created["trigger_type"] == "custom"
    assert created["status"] == "pending"
    assert datetime.fromisoformat(created["scheduled_at"]) == AT
    assert created["trigger_data"] == {"custom_message": "Ready for your next trip?"}
    assert (await schedule(settings, other)).code == 0

    listed = await cli(settings, "followups", "list")
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert header.split() == [
        "id",
        "user",
        "trigger",
        "status",
        "scheduled_at",
        "sends_at",
        "held",
        "template",
    ]
    assert len(rows) == 2
    mine = next(r for r in rows if r.startswith(fid))
    # Not held: it goes at its own time (sends_at), nothing holds it, no template yet.
    assert mine.split() == [
        fid,
        user,
        "custom",
        "pending",
        AT.isoformat(),
        AT.isoformat(),
        "-",
        "-",
    ]

    as_json = await cli(settings, "followups", "list", "--user", user, "--json")
    assert as_json.code == 0, as_json.err
    assert as_json.json() == [created]
    only_custom = await cli(
        settings, "followups", "list", "--status", "pending", "--trigger", "custom", "--limit",
        "1", "--json",
    )  # fmt: skip
    assert len(only_custom.json()) == 1
    none = await cli(settings, "followups", "list", "--status", "cancelled", "--json")
    assert none.json() == []

    shown = await cli(settings, "followups", "show", fid)
    assert shown.code == 0, shown.err
    assert f"id:                          {fid}\n" in shown.out
    assert "trigger_data.custom_message: Ready for your next trip?\n" in shown.out
    assert (await cli(settings, "followups", "show", fid, "--json")).json() == created

    unknown = await cli(settings, "followups", "show", "no-such-id")
    assert unknown.code == 1
    assert unknown.out == ""
    assert messages(unknown.err) == ["followup-consumer: no follow-up with id 'no-such-id'"]

    cancelled = await cli(settings, "followups", "cancel", fid)
    assert (cancelled.code, cancelled.out) == (0, "cancelled\n")
    [row] = await query(
        settings, "SELECT status, cancelled_at FROM scheduled_followups WHERE id=$1", fid
    )
    assert row["status"] == "cancelled"
    assert row["cancelled_at"] is not None

    again = await cli(settings, "followups", "cancel", fid)
    assert again.code == 3
    assert again.out == ""
    assert messages(again.err) == [
        f"followup-consumer: follow-up {fid!r} was not cancelled: it is cancelled, "
        "only pending follow-ups can be cancelled"
    ]
    again_json = await cli(settings, "followups", "cancel", fid, "--json")
    assert again_json.code == 3
    assert again_json.json() == {"id": fid, "result": "not_pending"}

    missing = await cli(settings, "followups", "cancel", "no-such-id")
    assert missing.code == 1
    assert "no follow-up with id 'no-such-id'" in missing.err
    missing_json = await cli(settings, "followups", "cancel", "no-such-id", "--json")
    assert (missing_json.code, missing_json.json()) == (
        1, {"id": "no-such-id", "result": "not_found"},
    )  # fmt: skip

    # The other user's follow-up was left alone.
    other_rows = await cli(settings, "followups", "list", "--user", other, "--json")
    assert [v["status"] for v in other_rows.json()] == ["pending"]


async def test_bad_arguments_are_refused_before_anything_runs(settings: Settings) -> None:
    await migrated(settings)
    naive = await cli(
        settings, "followups", "schedule", "--user", "u", "--conversation", "c", "--message",
        "hi", "--at", "2030-01-01T09:00:00",
    )  # fmt: skip
    assert naive.code == 2
    assert "needs an offset" in naive.err
    bad_status = await cli(settings, "followups", "list", "--status", "sent")
    assert bad_status.code == 2
    assert "invalid choice" in bad_status.err
    assert await query(settings, "SELECT * FROM scheduled_followups") == []


async def test_schedule_beyond_the_users_limit(settings: Settings) -> None:
    await migrated(settings)
    user = new_id("user")
    for _ in range(2):
        ok = await schedule(settings, user, MAX_PENDING_FOLLOWUPS_PER_USER="2")
        assert ok.code == 0, ok.err
    refused = await schedule(settings, user, MAX_PENDING_FOLLOWUPS_PER_USER="2")
    assert refused.code == 4
    assert refused.out == ""
    assert messages(refused.err) == [
        f"followup-consumer: not scheduled: user {user!r} already has 2 pending follow-ups"
    ]
    rows = await query(settings, "SELECT * FROM scheduled_followups WHERE user_id = $1", user)
    assert len(rows) == 2
    # Another user is not affected by this one's limit.
    assert (await schedule(settings, new_id("user"), MAX_PENDING_FOLLOWUPS_PER_USER="2")).code == 0


async def test_erase_user(settings: Settings) -> None:
    await migrated(settings)
    gone, kept = new_id("user"), new_id("user")
    for user in (gone, kept, gone):
        assert (await schedule(settings, user)).code == 0
    for user in (gone, kept):
        await query(
            settings,
            # (scheduling may have made the row already)
            "INSERT INTO user_projection (user_id, last_activity_at) VALUES ($1, now()) "
            "ON CONFLICT (user_id) DO UPDATE SET last_activity_at = now()",
            user,
        )
        await query(
            settings,
            "INSERT INTO booking_projection (booking_id, user_id) VALUES ($1, $2)",
            f"{user}-bk",
            user,
        )

    refused = await cli(settings, "erase-user", gone)
    assert refused.code == 2
    assert "--yes" in refused.err
    assert (
        len(await query(settings, "SELECT 1 FROM scheduled_followups WHERE user_id=$1", gone)) == 2
    )

    erased = await cli(settings, "erase-user", gone, "--yes", "--json")
    assert erased.code == 0, erased.err
    assert erased.json() == {
        "user_id": gone,
        "deleted": {
            "scheduled_followups": 2,
            "booking_projection": 1,
            "conversation_emotions": 0,
            "user_projection": 1,
        },
    }
    for table in ("scheduled_followups", "booking_projection", "user_projection"):
        owners = [r["user_id"] for r in await query(settings, f"SELECT user_id FROM {table}")]
        assert owners == [kept], table

    text = await cli(settings, "erase-user", kept, "--yes")
    assert text.code == 0, text.err
    assert text.out.splitlines() == [
        "table                  deleted",
        "booking_projection     1",
        "conversation_emotions  0",
        "scheduled_followups    1",
        "user_projection        1",
    ]


async def test_health(settings: Settings) -> None:
    await migrated(settings)
    await ensure_topics(settings, input_topics(settings))
    topic = settings.topic_booking_confirmed
    # Five records in partition 0 and one in partition 1 of one input topic; the
    # group has consumed 2 of partition 0 (another group's offsets do not count).
    await produce_to(settings, topic, {0: 5, 1: 1})
    await query(
        settings,
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) "
        "VALUES ($1, $2, 0, 2), ('someone-else', $2, 0, 5)",
        settings.kafka_group_id,
        topic,
    )
    assert (await schedule(settings, new_id("user"))).code == 0

    # No consumer is running in the group: the figures are right, but standing still.
    health = await cli(settings, "health", "--json")
    assert health.code == 1, health.err
    report = health.json()
    assert report["status"] == "unhealthy"
    assert (report["consumer"]["members"], report["consumer"]["group_state"]) == (0, "Dead")
    assert (report["pending_jobs"], report["executed_today"]) == (1, 0)
    assert report["database"] == {"reachable": True, "error": None}
    assert report["kafka"] == {"reachable": True, "error": None}
    consumer = report["consumer"]
    assert consumer["group"] == settings.kafka_group_id
    partitions = {(p["topic"], p["partition"]): p for p in consumer["partitions"]}
    assert set(partitions) == {
        (t, p) for t in input_topics(settings) for p in range(settings.topic_partitions)
    }
    for (t, partition), p in partitions.items():
        end = {(topic, 0): 5, (topic, 1): 1}.get((t, partition), 0)
        stored = 2 if (t, partition) == (topic, 0) else 0
        assert (p["end_offset"], p["next_offset"], p["lag"]) == (end, stored, end - stored)
        assert consumer["lag"][f"{t}[{partition}]"] == end - stored
    assert consumer["total_lag"] == 4

    text = await cli(settings, "health")
    assert text.code == 1, text.err
    assert text.out.startswith("status:         unhealthy\n")
    assert (
        f"consumers:      NONE running in group {settings.kafka_group_id} "
        "(is `followup-consumer run` up?)\n"
    ) in text.out
    assert "pending_jobs:   1\n" in text.out

    no_kafka = await cli(settings, "health", "--json", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert no_kafka.code == 1
    down = no_kafka.json()
    assert down["status"] == "unhealthy"
    assert down["kafka"]["reachable"] is False
    assert down["database"]["reachable"] is True
    assert down["pending_jobs"] == 1


async def test_custom_message_sealed_at_rest(settings: Settings) -> None:
    await migrated(settings)
    key = new_key()
    secret = "Your code is 4711, see you Tuesday"
    made = await schedule(settings, new_id("user"), secret, FOLLOWUP_ENCRYPTION_KEY=key)
    assert made.code == 0, made.err
    fid = made.json()["id"]
    assert made.json()["trigger_data"]["custom_message"] == secret

    [row] = await query(
        settings,
        "SELECT trigger_data->>'custom_message' AS m, trigger_data::text AS raw "
        "FROM scheduled_followups WHERE id = $1",
        fid,
    )
    assert row["m"].startswith("fernet:")
    assert secret not in row["raw"]
    assert "4711" not in row["raw"]

    shown = await cli(settings, "followups", "show", fid, FOLLOWUP_ENCRYPTION_KEY=key)
    assert shown.code == 0, shown.err
    assert f"trigger_data.custom_message: {secret}\n" in shown.out
    listed = await cli(settings, "followups", "list", "--json", FOLLOWUP_ENCRYPTION_KEY=key)
    assert listed.json()[0]["trigger_data"]["custom_message"] == secret

    # Without the key the message is not shown as if it were plain text.
    keyless = await cli(settings, "followups", "show", fid)
    assert keyless.code == 2
    assert keyless.out == ""
    assert "FOLLOWUP_ENCRYPTION_KEY" in keyless.err
    wrong = await cli(settings, "followups", "show", fid, FOLLOWUP_ENCRYPTION_KEY=new_key())
    assert wrong.code == 2
    assert "does not decrypt" in wrong.err
