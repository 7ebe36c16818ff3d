"""Fault scenarios against the real local broker and PostgreSQL.

    .venv/bin/python -m bench.faults [--events N] [--quick] [--only 1,2,3,4,5]

Every scenario runs the real service (`python -m consumer run`, subprocesses,
HTTP_PORT=0, dispatch active) on fresh topics and a fresh database, and compares
the final state with an uninterrupted reference run over the same input (fresh
topics and database too, computed after the fault run, when every follow-up of
the run window is due): the canonical snapshot of `scheduled_followups` (minus
created_at, updated_at, executed_at, lease_owner, lease_until, retry_count,
error_message, due_at) and of the projections, and the set of `followup.due`
event ids.

The input is `mixed_stream` (harness/events.py: every follow-up days
ahead or long expired) plus "soon" users: one booking each whose post-event
follow-up falls due inside the run window, on a conversation without scores
(template independent of when it fires), so publication runs during the faults.

1. SIGKILL at random moments, restart after each.
2. Kafka broker stopped (SIGTERM) ~10 s and restarted; PostgreSQL stopped
   (pg_ctl -m fast) ~10 s and restarted; the consumer must recover by itself.
3. Three instances, one leaving (SIGTERM) or joining every 10 s.
4. Bad values of many kinds interleaved with valid traffic.
5. Replay of the whole history into the existing database of scenario 1's reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumer.config import Settings, load_settings
from harness.endpoints import Endpoints, create_database, drop_database, endpoints
from harness.events import (
    CODEC,
    TIME_ZONES,
    Event,
    activity,
    cancelled,
    confirmed,
    mixed_stream,
    ms,
    scored,
)
from harness.paths import REPO
from harness.state import consumed, dsn, snapshot
from harness.topics import Raw, create_topics, headers_of, produce_raw, topic_of

SERVICES = REPO / "scripts" / "services"
VOLATILE = frozenset(
    {
        "created_at",
        "updated_at",
        "executed_at",
        "lease_owner",
        "lease_until",
        "retry_count",
        "error_message",
        "due_at",
    }
)
EVENTS_PER_USER = 17.5  # mixed_stream's average, to size the stream


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- input -------------------------------------------------------------------------


@dataclass
class Input:
    phase1: list[Raw]
    phase2: list[Raw]
    valid1: int  # valid records of phase 1 (the rest: bad values)
    horizon: datetime  # every follow-up due during the run is due by then
    soon: int
    bad: list[bool] = field(default_factory=list)  # per phase-1 record
    bad_kinds: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return len(self.phase1) + len(self.phase2)


@dataclass(frozen=True)
class Stream:
    """Events, still unbound to topics (each run gets its own topics)."""

    phase1: list[Event]
    phase2: list[Event]
    horizon: datetime
    soon: int


def make_stream(seed: int, events: int, window: tuple[float, float]) -> Stream:
    """About `events` events; soon follow-ups due `window` seconds from now."""
    now = datetime.now(UTC)
    soon_users = max(20, int(events / EVENTS_PER_USER / 4))
    users = max(10, int((events - 2 * soon_users) / EVENTS_PER_USER))
    base = now.replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    phase1, phase2 = mixed_stream(seed, users, base)
    rng = random.Random(seed + 1)
    lo, hi = window
    soon: list[Event] = []
    horizon = now
    for i in range(soon_users):
        user = f"s{seed}-soon-{i}"
        due = ms(now + timedelta(seconds=rng.uniform(lo, hi)))
        horizon = max(horizon, due)
        occurred = ms(now - timedelta(minutes=rng.randint(5, 600)))
        soon.append(
            confirmed(
                user,
                f"{user}-bk",
                due - timedelta(hours=24),
                occurred,
                conversation_id=f"{user}-quiet",
                timezone=rng.choice(TIME_ZONES),
                event_id=f"s{seed}-soon-c{i}",
                fmt=rng.choice(("json", "avro")),
            )
        )
        soon.append(
            activity(
                user,
                occurred + timedelta(minutes=1),
                event_id=f"s{seed}-soon-a{i}",
                fmt=rng.choice(("json", "avro")),
            )
        )
    merged = sorted(phase1 + soon, key=lambda e: e.record["occurred_at"])
    return Stream(merged, phase2, horizon, soon_users)


def bind(s: Settings, stream: Stream, bad: Sequence[tuple[str, str, bytes | None]] = ()) -> Input:
    """The stream as raw records on the topics of `s`, bad values spread in phase 1."""
    raw1: list[Raw] = [(topic_of(s, e.kind), e.key, e.value) for e in stream.phase1]
    raw2: list[Raw] = [(topic_of(s, e.kind), e.key, e.value) for e in stream.phase2]
    flags = [False] * len(raw1)
    kinds: Counter[str] = Counter()
    rng = random.Random(7)
    for name, kind, value in bad:
        at = rng.randrange(len(raw1) + 1)
        raw1.insert(at, (topic_of(s, kind), b"bad-key", value))
        flags.insert(at, True)
        kinds[name] += 1
    return Input(raw1, raw2, len(stream.phase1), stream.horizon, stream.soon, flags, kinds)


def bad_values(count: int) -> list[tuple[str, str, bytes | None]]:
    """`count` bad values of the kinds below, round robin: (kind name, event kind, value)."""
    now = ms(datetime.now(UTC))
    conf = confirmed("u-bad", "bk-bad", now + timedelta(days=3), now).record
    score = scored("u-bad", "conv-bad", 0.5, now, message_id="m-bad").record
    act = activity("u-bad", now).record
    canc = cancelled("u-bad", "bk-bad", now).record
    good_avro = CODEC.encode_avro("booking_confirmed", conf)
    no_booking = {k: v for k, v in conf.items() if k != "booking_id"}
    high = CODEC.encode_avro("message_emotion_scored", {**score, "score": 1.5})
    other = CODEC.encode_avro("user_activity", act)

    def js(record: dict[str, Any]) -> bytes:
        return json.dumps(
            record, default=lambda v: v.isoformat() if isinstance(v, datetime) else v
        ).encode()

    kinds: list[tuple[str, str, bytes | None]] = [
        ("garbage", "booking_confirmed", b"\xff\x00 neither json nor avro"),
        ("truncated avro", "booking_confirmed", good_avro[:-6]),
        ("unknown fingerprint", "booking_confirmed", b"\xc3\x01" + b"\x01" * 8 + good_avro[10:]),
        ("json array", "user_activity", b'[{"event_id": "x"}]'),
        ("missing field", "booking_confirmed", js(no_booking)),
        ("string score", "message_emotion_scored", js({**score, "score": "0.5"})),
        ("score above 1", "message_emotion_scored", high),
        ("negative score", "message_emotion_scored", js({**score, "score": -0.01})),
        ("naive timestamp", "user_activity", js({**act, "occurred_at": "2025-03-01T10:00:00"})),
        ("year 2500", "user_activity", js({**act, "occurred_at": "2500-01-01T00:00:00Z"})),
        ("blank user id", "booking_cancelled", js({**canc, "user_id": "   "})),
        ("unknown time zone", "booking_confirmed", js({**conf, "timezone": "Mars/Olympus_Mons"})),
        ("tombstone", "booking_cancelled", None),
        ("another topic's schema", "message_emotion_scored", other),
        ("NUL in an id", "user_activity", js({**act, "event_id": "ev\x00il"})),
        ("empty value", "user_activity", b""),
    ]  # fmt: skip
    out = []
    for i in range(count):
        name, kind, value = kinds[i % len(kinds)]
        if value is not None and value.startswith(b"{"):
            # Distinct event ids, so no two are the same record.
            value = value.replace(b'"event_id": "', f'"event_id": "bad{i}-'.encode(), 1)
        out.append((name, kind, value))
    return out


# --- runs --------------------------------------------------------------------------


@dataclass
class Run:
    """One run's topics, group and database."""

    ep: Endpoints
    settings: Settings
    database: str
    log_path: Path

    @classmethod
    async def fresh(cls, ep: Endpoints, label: str, **overrides: Any) -> Run:
        token = secrets.token_hex(4)
        prefix = f"faults{token}"
        database = f"faults_{token}"
        await create_database(ep, database)
        settings = load_settings(
            kafka_bootstrap_servers=ep.bootstrap,
            database_url=ep.database(database),
            kafka_group_id=f"{prefix}-group",
            topic_booking_confirmed=f"{prefix}.booking.confirmed",
            topic_booking_cancelled=f"{prefix}.booking.cancelled",
            topic_emotion_scored=f"{prefix}.message.emotion_scored",
            topic_user_activity=f"{prefix}.user.activity",
            topic_followup_due=f"{prefix}.followup.due",
            topic_dlq=f"{prefix}.followup.dlq",
            topic_partitions=6,
            dispatch_poll_seconds=0.5,
            http_port=0,
            scheduler_enabled=True,
            **overrides,
        )
        await create_topics(settings)
        run = cls(ep, settings, database, Path(f"/tmp/{prefix}-{label}.log"))
        log(f"{label}: database {database}, topics {prefix}.*, log {run.log_path}")
        return run

    async def drop(self) -> None:
        await drop_database(self.ep, self.database)


def service_env(settings: Settings) -> dict[str, str]:
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    env["LOG_LEVEL"] = "WARNING"
    env["HTTP_PORT"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """`python -m consumer <args>` in a subprocess, its output appended to a log."""

    def __init__(self, settings: Settings, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self.started = time.monotonic()
        with log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consumer", *(args or ("run",))],
                cwd=REPO,
                env=service_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)

    async def stop(self) -> int:
        # A SIGTERM before the service installed its handlers (start-up) kills it.
        await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - self.started)))
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 60)
        except subprocess.TimeoutExpired:
            await self.kill()
            return -9

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


async def safe_consumed(s: Settings) -> int | None:
    try:
        return await asyncio.wait_for(consumed(s), 5)
    except Exception:
        return None  # the database is down


async def wait_for(
    probe: Callable[[], Awaitable[bool]], limit: float, what: str, procs: Sequence[Proc] = ()
) -> None:
    deadline = time.monotonic() + limit
    while not await probe():
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"service exited while waiting for {what}:\n{p.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {limit:.0f} s")
        await asyncio.sleep(0.1)


async def wait_consumed(s: Settings, n: int, limit: float, procs: Sequence[Proc] = ()) -> None:
    async def done() -> bool:
        c = await safe_consumed(s)
        if c is not None and c > n:
            raise AssertionError(f"committed {c} records, only {n} were produced")
        return c == n

    await wait_for(done, limit, f"{n} records committed", procs)


async def settle(s: Settings, horizon: datetime, limit: float, procs: Sequence[Proc]) -> None:
    """Until the window has passed and nothing due is left pending or claimed."""

    async def done() -> bool:
        if datetime.now(UTC) < horizon + timedelta(seconds=1):
            return False
        try:
            conn = await asyncpg.connect(dsn(s))
            try:
                left = await conn.fetchval(
                    "SELECT count(*) FROM scheduled_followups WHERE status = 'pending' "
                    "AND scheduled_at <= now()"
                )
            finally:
                await conn.close()
        except Exception:
            return False
        return int(left) == 0

    left = (horizon - datetime.now(UTC)).total_seconds()
    await wait_for(done, max(0.0, left) + limit, "every due follow-up published", procs)


async def produce_phase(s: Settings, records: Sequence[Raw]) -> None:
    for lo in range(0, len(records), 20_000):
        await produce_raw(s, records[lo : lo + 20_000])


async def due_ids(s: Settings) -> Counter[str]:
    """event_id of every record of followup.due, with multiplicity."""
    out: Counter[str] = Counter()
    for r in await read_all(s, s.topic_followup_due):
        out[str(CODEC.decode("followup_due", r.value)["event_id"])] += 1
    return out


async def read_all(s: Settings, topic: str) -> list[Any]:
    """Every record of a topic up to its end offsets now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        parts = None
        for _ in range(50):
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        pos = {tp: 0 for tp in tps}
        deadline = time.monotonic() + 120
        while any(pos[tp] < ends[tp] for tp in tps) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, rs in batch.items():
                out.extend(rs)
                if rs:
                    pos[tp] = rs[-1].offset + 1
        return out
    finally:
        await consumer.stop()


async def end_total(s: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return sum(ends.values())
    finally:
        await consumer.stop()


Canon = dict[str, dict[str, dict[str, Any]]]


async def canonical(s: Settings) -> Canon:
    snap = await snapshot(s)
    keys = {
        "scheduled_followups": "id",
        "user_projection": "user_id",
        "booking_projection": "booking_id",
        "conversation_emotions": "conversation_id",
    }
    return {
        table: {
            str(row[keys[table]]): {k: v for k, v in row.items() if k not in VOLATILE}
            for row in rows
        }
        for table, rows in snap.items()
    }


@dataclass
class Outcome:
    canon: Canon
    ids: Counter[str]

    @property
    def statuses(self) -> Counter[str]:
        return Counter(r["status"] for r in self.canon["scheduled_followups"].values())


async def outcome(s: Settings) -> Outcome:
    return Outcome(await canonical(s), await due_ids(s))


@dataclass
class Row:
    scenario: str
    events: int
    lost: int
    duplicated: int
    dead_lettered: str = "0"
    recovered: str = "-"
    notes: list[str] = field(default_factory=list)
    ok: bool = True


def compare(ref: Outcome, got: Outcome, row: Row, *, duplicates_allowed: bool) -> None:
    """Lost: reference rows missing or different, reference ids never published;
    duplicated: records whose event_id was already seen."""
    details: list[str] = []
    lost = 0
    for table, rows in ref.canon.items():
        mine = got.canon.get(table, {})
        for k, r in rows.items():
            if mine.get(k) != r:
                lost += 1
                if len(details) < 8:
                    other = mine.get(k)
                    diff = (
                        {c: (r.get(c), other.get(c)) for c in r if r.get(c) != other.get(c)}
                        if other
                        else "missing"
                    )
                    details.append(f"{table}[{k}]: {diff}")
        extra = sorted(set(mine) - set(rows))
        if extra:
            lost += len(extra)
            details.append(f"{table}: {len(extra)} rows not in the reference, e.g. {extra[:3]}")
    never = sorted(set(ref.ids) - set(got.ids))
    lost += len(never)
    if never:
        details.append(f"followup.due ids never published: {len(never)}, e.g. {never[:5]}")
    foreign = sorted(set(got.ids) - set(ref.ids))
    if foreign:
        details.append(f"followup.due ids not in the reference: {len(foreign)}, e.g. {foreign[:5]}")
        lost += len(foreign)
    dups = sum(c - 1 for c in got.ids.values() if c > 1)
    row.lost += lost
    row.duplicated += dups
    row.notes.extend(details)
    if dups:
        dup_ids = [i for i, c in got.ids.items() if c > 1]
        row.notes.append(f"{dups} duplicate publications of {len(dup_ids)} ids, e.g. {dup_ids[:3]}")
    if lost or (dups and not duplicates_allowed):
        row.ok = False
    row.notes.append(
        f"reference: {len(ref.ids)} published, statuses {dict(ref.statuses)}; "
        f"run: {len(got.ids)} distinct published"
    )


async def reference(ep: Endpoints, stream: Stream, label: str) -> tuple[Outcome, Run]:
    """The uninterrupted run: one instance, phase 1, then phase 2, then the window."""
    run = await Run.fresh(ep, f"{label}-reference")
    inp = bind(run.settings, stream)
    proc = Proc(run.settings, run.log_path)
    try:
        await produce_phase(run.settings, inp.phase1)
        await wait_consumed(run.settings, len(inp.phase1), 600, [proc])
        await produce_phase(run.settings, inp.phase2)
        await wait_consumed(run.settings, inp.total, 600, [proc])
        await settle(run.settings, inp.horizon, 120, [proc])
        code = await proc.stop()
        if code != 0:
            raise RuntimeError(f"reference exited {code}:\n{proc.tail()}")
    finally:
        await proc.kill()
    out = await outcome(run.settings)
    log(f"{label}: reference {dict(out.statuses)}, {len(out.ids)} published")
    return out, run


async def feed_phase2(s: Settings, inp: Input) -> None:
    """Phase two once phase one is committed (see mixed_stream)."""
    await wait_for(lambda: _at_least(s, len(inp.phase1)), 1800, "phase 1 committed")
    await produce_phase(s, inp.phase2)


async def _at_least(s: Settings, n: int) -> bool:
    c = await safe_consumed(s)
    return c is not None and c >= n


# --- scenario 1: SIGKILL -----------------------------------------------------------


async def scenario_kills(
    ep: Endpoints, events: int, kills: int, seed: int = 1, keep_reference: bool = False
) -> tuple[Row, Run | None, Stream]:
    window_end = 25 + kills * 9 + events / 4000
    stream = make_stream(seed, events, (10, window_end))
    run = await Run.fresh(ep, "kills", ingest_batch_max_records=1000)
    inp = bind(run.settings, stream)
    row = Row(f"1 SIGKILL x{kills}", inp.total, 0, 0)
    log(f"kills: {inp.total} events, {stream.soon} due within {window_end:.0f} s")
    await produce_phase(run.settings, inp.phase1)
    feeder = asyncio.create_task(feed_phase2(run.settings, inp))
    rng = random.Random(seed)
    proc = Proc(run.settings, run.log_path)
    at: list[str] = []
    try:
        for i in range(kills):
            if i:
                # Let the restarted process get going (rejoin the group, apply or
                # send something) first, so each kill lands at a different point.
                await _until_progress(run.settings, at[-1])
            c = await safe_consumed(run.settings)
            if c is not None and c < inp.total:
                await asyncio.sleep(rng.uniform(0.3, 2.0))  # mid-ingest
            else:
                await asyncio.sleep(rng.uniform(1.0, 2 * window_end / kills))  # mid-dispatch
            c = await safe_consumed(run.settings)
            executed = await _count(run.settings, "executed")
            await proc.kill()
            at.append(f"{c}/{executed}")
            proc = Proc(run.settings, run.log_path)
        row.notes.append(f"killed at (committed records/executed follow-ups): {', '.join(at)}")
        await feeder
        await wait_consumed(run.settings, inp.total, 900, [proc])
        await settle(run.settings, inp.horizon, 180, [proc])
        code = await proc.stop()
        if code != 0:
            row.notes.append(f"final SIGTERM exit code {code}")
    finally:
        feeder.cancel()
        await proc.kill()
    got = await outcome(run.settings)
    ref, ref_run = await reference(ep, stream, "kills")
    compare(ref, got, row, duplicates_allowed=True)
    await run.drop()
    if not keep_reference:
        await ref_run.drop()
        return row, None, stream
    return row, ref_run, stream


async def _until_progress(s: Settings, last: str, limit_s: float = 30.0) -> None:
    """Until more records are committed or more follow-ups executed than at `last`."""
    before_c, _, before_e = last.partition("/")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        c, e = await safe_consumed(s), await _count(s, "executed")
        if (c is not None and before_c != "None" and c > int(before_c)) or (
            e is not None and before_e != "None" and e > int(before_e)
        ):
            return
        await asyncio.sleep(0.2)


async def _count(s: Settings, status: str) -> int | None:
    try:
        conn = await asyncpg.connect(dsn(s))
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM scheduled_followups WHERE status = $1", status
                )
            )
        finally:
            await conn.close()
    except Exception:
        return None


# --- scenario 2: broker / database outage ------------------------------------------


def _pg_bin() -> str:
    return sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1].as_posix()


def _pg_data() -> str:
    root = (REPO / ".services" / "postgres" / "root").read_text().strip()
    return f"{root}/data"


async def stop_kafka() -> None:
    pid = int((REPO / ".services" / "kafka" / "kafka.pid").read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    for _ in range(300):
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()  # noqa: ASYNC240
            state = stat.rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                break
        except (ProcessLookupError, FileNotFoundError):
            break
        await asyncio.sleep(0.1)


async def stop_postgres() -> None:
    cmd = [f"{_pg_bin()}/pg_ctl", "-D", _pg_data(), "stop", "-m", "fast", "-w"]
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    await asyncio.to_thread(subprocess.run, cmd, check=True, capture_output=True)


async def services_up() -> None:
    await asyncio.to_thread(subprocess.run, [str(SERVICES), "up"], check=True, capture_output=True)


async def scenario_outage(ep: Endpoints, events: int, which: str, seed: int) -> Row:
    stream = make_stream(seed, events, (5, 45))
    run = await Run.fresh(ep, f"outage-{which}", ingest_batch_max_records=50)
    inp = bind(run.settings, stream)
    row = Row(f"2 {which} down ~10 s", inp.total, 0, 0)
    await produce_phase(run.settings, inp.phase1)
    proc = Proc(run.settings, run.log_path)
    pid = proc.pid
    feeder: asyncio.Task[None] | None = None
    try:
        await wait_for(
            lambda: _at_least(run.settings, len(inp.phase1) // 5), 300, "a fifth committed", [proc]
        )
        before = await safe_consumed(run.settings)
        down_at = time.monotonic()
        await (stop_kafka() if which == "kafka" else stop_postgres())
        log(f"outage: {which} stopped at {before} committed of {inp.total}")
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
        await services_up()
        back = time.monotonic()
        log(f"outage: {which} back after {back - down_at:.1f} s")
        base = await _when(lambda: safe_consumed(run.settings))
        await wait_for(
            lambda: _more_than(run.settings, min(base, len(inp.phase1) - 1)),
            300,
            "new records applied after the outage",
            [proc],
        )
        applied = time.monotonic() - back
        feeder = asyncio.create_task(feed_phase2(run.settings, inp))
        await wait_consumed(run.settings, len(inp.phase1), 600, [proc])
        caught_up = time.monotonic() - back
        await feeder
        await wait_consumed(run.settings, inp.total, 600, [proc])
        await settle(run.settings, inp.horizon, 180, [proc])
        if not (proc.alive() and proc.pid == pid):
            raise RuntimeError("the consumer did not survive the outage")
        row.recovered = f"{applied:.1f} / {caught_up:.1f}"
        row.notes.append(
            f"same pid {pid}, alive; first new batch {applied:.1f} s after {which} was back, "
            f"phase 1 caught up after {caught_up:.1f} s"
        )
        code = await proc.stop()
        if code != 0:
            row.notes.append(f"SIGTERM exit code {code}")
    except Exception as exc:
        row.ok = False
        row.notes.append(f"FAILED: {exc!r}")
        row.notes.append(proc.tail()[-1500:])
        if feeder is not None:
            feeder.cancel()
        await proc.kill()
        await run.drop()
        return row
    finally:
        await proc.kill()
    got = await outcome(run.settings)
    failed = got.statuses.get("failed", 0)
    if failed:
        row.notes.append(f"{failed} follow-ups marked failed during the outage")
    ref, ref_run = await reference(ep, stream, f"outage-{which}")
    compare(ref, got, row, duplicates_allowed=False)
    await run.drop()
    await ref_run.drop()
    return row


async def _when(probe: Callable[[], Awaitable[int | None]]) -> int:
    while True:
        v = await probe()
        if v is not None:
            return v
        await asyncio.sleep(0.1)


async def _more_than(s: Settings, n: int) -> bool:
    c = await safe_consumed(s)
    return c is not None and c > n


# --- scenario 3: rebalances --------------------------------------------------------


async def scenario_churn(ep: Endpoints, events: int, seconds: float, seed: int = 3) -> Row:
    stream = make_stream(seed, events, (5, seconds))
    run = await Run.fresh(ep, "churn", ingest_batch_max_records=500)
    inp = bind(run.settings, stream)
    row = Row(f"3 3 instances, churn {seconds:.0f} s", inp.total, 0, 0)
    procs = [Proc(run.settings, run.log_path) for _ in range(3)]
    rng = random.Random(seed)

    async def trickle() -> None:
        chunks = max(1, int(seconds * 0.6))
        size = -(-len(inp.phase1) // chunks)
        for lo in range(0, len(inp.phase1), size):
            await produce_raw(run.settings, inp.phase1[lo : lo + size])
            await asyncio.sleep(0.6 * seconds / chunks)

    producer = asyncio.create_task(trickle())
    feeder = asyncio.create_task(feed_phase2(run.settings, inp))
    moves: list[str] = []
    codes: list[int] = []
    try:
        started = time.monotonic()
        leave = True
        while time.monotonic() - started < seconds:
            await asyncio.sleep(10)
            if leave and len(procs) > 1:
                p = procs.pop(rng.randrange(len(procs)))
                codes.append(await p.stop())
                moves.append("-")
            else:
                procs.append(Proc(run.settings, run.log_path))
                moves.append("+")
            leave = not leave
            for p in procs:
                if not p.alive():
                    raise RuntimeError(f"an instance died:\n{p.tail()}")
        await producer
        await feeder
        await wait_consumed(run.settings, inp.total, 600, procs)
        await settle(run.settings, inp.horizon, 180, procs)
        for p in procs:
            codes.append(await p.stop())
    finally:
        producer.cancel()
        feeder.cancel()
        for p in procs:
            await p.kill()
    row.notes.append(f"moves {''.join(moves)}; SIGTERM exit codes {codes}")
    if any(codes):
        row.notes.append("an instance did not exit 0 on SIGTERM")
    got = await outcome(run.settings)
    ref, ref_run = await reference(ep, stream, "churn")
    compare(ref, got, row, duplicates_allowed=False)
    await run.drop()
    await ref_run.drop()
    return row


# --- scenario 4: bad values --------------------------------------------------------


async def scenario_bad(ep: Endpoints, events: int, bad: int, seed: int = 4) -> Row:
    stream = make_stream(seed, events, (5, 25 + events / 4000))
    run = await Run.fresh(ep, "bad", ingest_batch_max_records=1000)
    inp = bind(run.settings, stream, bad_values(bad))
    row = Row(f"4 {bad} bad values", inp.total, 0, 0)
    placed = await produce_raw(run.settings, inp.phase1)
    expected = {(m.topic, m.partition, m.offset) for m, b in zip(placed, inp.bad, strict=True) if b}
    proc = Proc(run.settings, run.log_path)
    stalls: list[float] = []
    try:
        last, since = -1, time.monotonic()
        worst = 0.0
        while True:
            c = await safe_consumed(run.settings)
            now = time.monotonic()
            if c is not None and c != last:
                worst = max(worst, now - since)
                last, since = c, now
            if c == len(inp.phase1):
                break
            if now - since > 60:
                raise RuntimeError(f"stalled at {c} committed for 60 s:\n{proc.tail()}")
            if not proc.alive():
                raise RuntimeError(f"service exited:\n{proc.tail()}")
            await asyncio.sleep(0.2)
        stalls.append(worst)
        await produce_phase(run.settings, inp.phase2)
        await wait_consumed(run.settings, inp.total, 600, [proc])
        await settle(run.settings, inp.horizon, 180, [proc])
        await proc.stop()
    finally:
        await proc.kill()
    dead = await read_all(run.settings, run.settings.topic_dlq)
    positions: Counter[tuple[str, int, int]] = Counter()
    complete = 0
    wanted = {
        "dlq.original.topic",
        "dlq.original.partition",
        "dlq.original.offset",
        "dlq.error.type",
        "dlq.error.message",
    }
    for r in dead:
        h = headers_of(r)
        if wanted <= h.keys():
            complete += 1
        positions[
            (
                h["dlq.original.topic"].decode(),
                int(h["dlq.original.partition"]),
                int(h["dlq.original.offset"]),
            )
        ] += 1
    found = expected & positions.keys()
    row.dead_lettered = f"{len(found)}/{len(expected)}"
    if found != expected or set(positions) - expected or complete != len(dead):
        row.ok = False
        row.notes.append(
            f"dead letters: {len(dead)} records, {complete} with all headers; "
            f"missing {len(expected - found)}, unexpected {len(set(positions) - expected)}"
        )
    twice = sum(c - 1 for c in positions.values() if c > 1)
    if twice:
        row.notes.append(f"{twice} dead letters published twice")
    row.notes.append(
        f"kinds: {len(inp.bad_kinds)} ({', '.join(sorted(inp.bad_kinds))}); "
        f"longest pause between commits {stalls[0]:.1f} s"
    )
    got = await outcome(run.settings)
    ref, ref_run = await reference(ep, stream, "bad")
    compare(ref, got, row, duplicates_allowed=False)
    await run.drop()
    await ref_run.drop()
    return row


# --- scenario 5: replay ------------------------------------------------------------


async def scenario_replay(run: Run, events: int) -> Row:
    row = Row("5 replay into existing db", events, 0, 0)
    s = run.settings
    before = await canonical(s)
    raw_before = await snapshot(s)
    due_before = await end_total(s, s.topic_followup_due)
    started = time.monotonic()
    p = Proc(s, run.log_path, "replay", "--no-progress")
    code = await asyncio.to_thread(p.proc.wait, 1800)
    took = time.monotonic() - started
    after = await canonical(s)
    raw_after = await snapshot(s)
    due_after = await end_total(s, s.topic_followup_due)
    changed = sum(
        1
        for t in before
        for k in before[t].keys() | after[t].keys()
        if before[t].get(k) != after[t].get(k)
    )
    row.lost = changed
    row.duplicated = due_after - due_before
    row.notes.append(f"replay exit {code} in {took:.1f} s; {changed} canonical rows changed")
    if raw_before != raw_after:
        row.notes.append("note: rows identical canonically but created_at/updated_at moved")
    if code != 0 or changed or due_after != due_before:
        row.ok = False
        row.notes.append(p.tail()[-1500:])
    return row


# --- main --------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    head = ("scenario", "events", "lost", "duplicated", "dead-lettered", "recovered in (s)", "ok")
    body = [
        (
            r.scenario,
            f"{r.events:,}",
            str(r.lost),
            str(r.duplicated),
            r.dead_lettered,
            r.recovered,
            "yes" if r.ok else "NO",
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in (head, *body)
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    out = "\n".join(lines)
    for r in rows:
        if r.notes:
            out += f"\n\n{r.scenario}:\n  " + "\n  ".join(r.notes)
    return out


async def main_async(args: argparse.Namespace) -> list[Row]:
    ep = endpoints()
    n = args.events or (20_000 if args.quick else 200_000)
    kills = 5 if args.quick else 20
    churn = 30.0 if args.quick else 120.0
    only = {int(x) for x in args.only.split(",")} if args.only else {1, 2, 3, 4, 5}
    rows: list[Row] = []

    async def guarded(name: str, coro: Awaitable[Row]) -> None:
        try:
            rows.append(await coro)
        except Exception as exc:  # a scenario that could not finish is a finding too
            log(f"{name} failed: {exc!r}")
            rows.append(Row(name, 0, -1, -1, ok=False, notes=[f"did not finish: {exc!r}"]))
        log(table(rows[-1:]))

    if 1 in only or 5 in only:
        try:
            row, ref_run, _ = await scenario_kills(ep, n, kills, keep_reference=True)
            rows.append(row)
            log(table(rows[-1:]))
            if 5 in only and ref_run is not None:
                await guarded("5 replay", scenario_replay(ref_run, row.events))
            if ref_run is not None:
                await ref_run.drop()
        except Exception as exc:
            log(f"scenario 1 failed: {exc!r}")
            rows.append(Row("1 SIGKILL", n, -1, -1, ok=False, notes=[repr(exc)]))
    if 2 in only:
        m = max(20_000, n // 4)
        await guarded("2 kafka", scenario_outage(ep, m, "kafka", seed=21))
        await guarded("2 postgres", scenario_outage(ep, m, "postgres", seed=22))
    if 3 in only:
        await guarded("3 churn", scenario_churn(ep, max(10_000, n // 4), churn))
    if 4 in only:
        await guarded("4 bad", scenario_bad(ep, max(10_000, n // 4), 1000))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated scenario numbers")
    args = parser.parse_args(argv)
    rows = asyncio.run(main_async(args))
    print(table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
