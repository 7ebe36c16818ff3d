"""Ingest throughput: a realistic stream, a bare consumer, and the real service.

    .venv/bin/python -m bench.ingest_throughput [--events N] [--users U]
                                                [--format avro|json|mixed] [--keep]

One run, against the broker and PostgreSQL of KAFKA_BOOTSTRAP_SERVERS and
DATABASE_URL (else those `scripts/services env` names):

1. creates a fresh database `bench_<hex>` and fresh topics `bench<hex>.*`
   (6 partitions each);
2. generates N events over U users, timestamps spread over the past year up to
   now, keyed by user_id (50% user.activity, 30% message.emotion_scored, 15%
   booking.confirmed, 5% booking.cancelled of bookings confirmed earlier),
   pre-encodes them with the project's codec and produces them as fast as the
   producer allows;
3. (a) reads them all with a bare AIOKafkaConsumer that does nothing else, and
   once more running only the service's decode step (codec + validation);
4. (b) runs the service (`python -m consumer run`, SCHEDULER_ENABLED=false) in
   a subprocess until `sum(next_offset)` of its group in `consumer_offsets`
   reaches N, sampling its peak RSS and the CPU split between the processes;
5. prints a summary with the targets, the follow-ups by status, PostgreSQL's
   table counters and where the CPU went.

The database and topics are dropped at the end unless --keep.

Diagnostics: --profile FILE records the service with py-spy; --explain-ms MS
logs (auto_explain, on the bench database only) and summarises the plans of
statements slower than MS; --instances K runs K service processes in one
consumer group; --service-cwd DIR runs the service from a scratch copy of
`consumer/` and `schemas/` (to measure a change without touching the
repository); --service-env KEY=VALUE passes settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.adapters.codec import Codec
from harness.endpoints import Endpoints, create_database, drop_database, endpoints, pg_dsn
from harness.paths import REPO

TARGET_RATE = 20_000.0  # events/s end to end
TARGET_RATIO = 0.5  # end-to-end rate / bare consumer rate
TARGET_SECONDS_PER_MILLION = 60.0  # replay of 1,000,000 events into an empty database

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
ACTIVITY, EMOTION, CONFIRMED, CANCELLED = range(4)
MIX = (0.50, 0.30, 0.15, 0.05)

TIMEZONES = (
    "Europe/Berlin",
    "Europe/London",
    "Europe/Madrid",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Africa/Johannesburg",
)
ACTIVITY_TYPES = ("login", "search", "page_view", "message_sent", "profile_update", "app_open")
LABELS = ("joy", "gratitude", "neutral", "confusion", "frustration", "anger", "sadness")
CANCEL_REASONS = ("change of plans", "found another venue", "illness", "weather", "price")

FETCH_OPTIONS: dict[str, Any] = {
    # As the service's consumer (consumer/kafka_io.py make_consumer), for a fair comparison.
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _compression() -> str | None:
    try:
        import lz4  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        return None
    return "lz4"


COMPRESSION = _compression()


# --- environment ------------------------------------------------------------------


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


# --- the stream -------------------------------------------------------------------


@dataclass
class Stream:
    """Pre-encoded records in event-time order: (input index, key, value)."""

    records: list[tuple[int, bytes, bytes]]
    counts: list[int]
    formats: Counter[str]
    value_bytes: int
    seconds: float


@dataclass
class _Booking:
    booking_id: str
    user: int
    event_date_ms: int


def generate(n: int, users: int, fmt: str, seed: int, codec: Codec, now: datetime) -> Stream:
    """A year of a booking business, compressed into n events, oldest first."""
    started = time.perf_counter()
    rng = random.Random(seed)
    now_ms = (now - EPOCH) // timedelta(milliseconds=1)
    span_ms = 365 * DAY_MS
    start_ms = now_ms - span_ms

    # Some customers are far busier than others (Pareto, alpha 3: the busiest
    # are a few dozen times the median).
    cum = list(itertools.accumulate(rng.paretovariate(3.0) for _ in range(users)))
    who = rng.choices(range(users), cum_weights=cum, k=n)
    user_ids = [f"user-{u:06d}" for u in range(users)]
    keys = [u.encode() for u in user_ids]
    tz = [rng.choice(TIMEZONES) if rng.random() < 0.7 else None for _ in range(users)]
    # Each user's conversations and the mood of each (mean score).
    moods = [[rng.betavariate(2.5, 1.8) for _ in range(rng.randint(1, 3))] for _ in range(users)]

    encoders: dict[str, Callable[[str, Mapping[str, Any]], bytes]] = {
        "avro": codec.encode_avro,
        "json": codec.encode_json,
    }
    schema_names = [name for name, _, _ in INPUTS]
    thresholds = list(itertools.accumulate(MIX))
    records: list[tuple[int, bytes, bytes]] = []
    counts = [0, 0, 0, 0]
    formats: Counter[str] = Counter()
    value_bytes = 0
    open_bookings: list[_Booking] = []
    booking_seq = 0

    def conversation(u: int, k: int) -> str:
        return f"conv-{u:06d}-{k}"

    for i in range(n):
        u = who[i]
        t_ms = min(now_ms, start_ms + int((i + rng.random()) * span_ms / n))
        occurred = EPOCH + timedelta(milliseconds=t_ms)
        event_id = f"evt-{i:08d}"
        r = rng.random()
        kind = next(k for k, limit in enumerate(thresholds) if r < limit or k == 3)

        booking: _Booking | None = None
        if kind == CANCELLED:
            # A booking confirmed earlier in the stream whose event still lies ahead.
            for _ in range(8):
                if not open_bookings:
                    break
                j = rng.randrange(len(open_bookings))
                candidate = open_bookings[j]
                open_bookings[j] = open_bookings[-1]
                open_bookings.pop()
                if candidate.event_date_ms > t_ms:
                    booking = candidate
                    break
            if booking is None:
                kind = CONFIRMED  # nothing to cancel yet (start of the stream)

        record: dict[str, Any] = {"event_id": event_id, "occurred_at": occurred}
        if kind == ACTIVITY:
            k = rng.randrange(len(moods[u]))
            record.update(
                user_id=user_ids[u],
                activity_type=rng.choice(ACTIVITY_TYPES),
                conversation_id=conversation(u, k) if rng.random() < 0.5 else None,
            )
        elif kind == EMOTION:
            k = rng.randrange(len(moods[u]))
            score = min(1.0, max(0.0, rng.gauss(moods[u][k], 0.15)))
            record.update(
                user_id=user_ids[u],
                conversation_id=conversation(u, k),
                message_id=f"msg-{i:08d}",
                score=round(score, 3),
                label=rng.choice(LABELS) if rng.random() < 0.4 else None,
            )
        elif kind == CONFIRMED:
            if open_bookings and rng.random() < 0.05:
                # The same booking confirmed again with another date: it moves.
                booking = rng.choice(open_bookings)
                u = booking.user
                booking.event_date_ms = max(
                    t_ms + 2 * HOUR_MS,
                    booking.event_date_ms + rng.randint(-3, 7) * DAY_MS,
                )
            else:
                booking_seq += 1
                offset = rng.randint(2 * 4, 60 * 24 * 4) * 15 * 60_000  # 2 h .. 60 days
                booking = _Booking(f"bk-{booking_seq:07d}", u, t_ms + offset)
                open_bookings.append(booking)
            k = rng.randrange(len(moods[u]))
            record.update(
                user_id=user_ids[u],
                booking_id=booking.booking_id,
                event_date=EPOCH + timedelta(milliseconds=booking.event_date_ms),
                conversation_id=conversation(u, k) if rng.random() < 0.6 else None,
                timezone=tz[u],
            )
        else:
            assert booking is not None
            u = booking.user
            record.update(
                user_id=user_ids[u],
                booking_id=booking.booking_id,
                reason=rng.choice(CANCEL_REASONS) if rng.random() < 0.5 else None,
            )

        value_format = fmt if fmt != "mixed" else ("avro" if rng.random() < 0.5 else "json")
        value = encoders[value_format](schema_names[kind], record)
        records.append((kind, keys[u], value))
        counts[kind] += 1
        formats[value_format] += 1
        value_bytes += len(value)
    return Stream(records, counts, formats, value_bytes, time.perf_counter() - started)


# --- Kafka ------------------------------------------------------------------------


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(topics))
    finally:
        await admin.close()


async def produce(bootstrap: str, topics: Sequence[str], stream: Stream, chunk: int) -> float:
    """Send everything; returns seconds from the first send to the last acknowledgement."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
        compression_type=COMPRESSION,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        in_flight: list[asyncio.Future[Any]] = []
        records = stream.records
        for lo in range(0, len(records), chunk):
            # send() only appends to a batch; the futures resolve on the broker's ack.
            sent = [
                await producer.send(topics[kind], value=value, key=key)
                for kind, key, value in records[lo : lo + chunk]
            ]
            # Keep one chunk in flight while the next is being appended.
            await asyncio.gather(*in_flight)
            in_flight = sent
        await asyncio.gather(*in_flight)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Records per topic (sum of end offsets; nothing is ever compacted here)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in await _partitions(consumer, t)]
        ends = await consumer.end_offsets(tps)
        out = dict.fromkeys(topics, 0)
        for tp, offset in ends.items():
            out[tp.topic] += offset
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")


@dataclass
class Phase:
    """One timed read of all n events."""

    events: int
    seconds: float  # from the start of the consumer to the last event
    first_seconds: float | None  # from the start to the first event (or first commit)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def steady_rate(self) -> float:
        if self.first_seconds is None or self.seconds <= self.first_seconds:
            return 0.0
        return self.events / (self.seconds - self.first_seconds)


async def bare_consume(
    bootstrap: str,
    topics: Sequence[str],
    group: str,
    n: int,
    limit_s: float,
    handle: Callable[[Sequence[Any]], object] | None = None,
) -> Phase:
    """A consumer that reads every record and does nothing with it (or only `handle`)."""
    started = time.perf_counter()
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FETCH_OPTIONS,
    )
    await consumer.start()
    seen = 0
    first: float | None = None
    try:
        while seen < n:
            if time.perf_counter() - started > limit_s:
                raise TimeoutError(f"bare consumer read {seen:,} of {n:,} in {limit_s:.0f} s")
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            got = sum(len(rs) for rs in batch.values())
            if handle is not None and got:
                handle([r for rs in batch.values() for r in rs])
            if got and first is None:
                first = time.perf_counter() - started
            seen += got
        return Phase(seen, time.perf_counter() - started, first)
    finally:
        await consumer.stop()


# --- the service --------------------------------------------------------------------


def _proc_status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(consumer_pids: set[int], database: str) -> dict[int, tuple[str, float]]:
    """CPU time (user + system) of every process, labelled by what it is.

    PostgreSQL backends serving the benchmark's database are told apart from the
    rest (background writers, other databases: tests running beside us).
    """
    tick = float(os.sysconf("SC_CLK_TCK"))
    me = os.getpid()
    out: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        pid = int(entry.name)
        if pid in consumer_pids:
            label = "consumer (python)"
        elif pid == me:
            label = "benchmark"
        elif comm == "java":
            label = "kafka (java)"
        elif comm.startswith("postgres"):
            bench_db = f" {database} " in cmdline
            label = "postgresql (bench db)" if bench_db else "postgresql (other)"
        elif comm == "py-spy":
            label = "py-spy"
        elif comm.startswith("python"):
            label = "other python"
        else:
            label = "other"
        out[pid] = (label, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_split(
    before: Mapping[int, tuple[str, float]], after: Mapping[int, tuple[str, float]]
) -> dict[str, float]:
    split: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        split[label] = split.get(label, 0.0) + seconds - before.get(pid, (label, 0.0))[1]
    return split


@dataclass
class ServiceRun:
    phase: Phase
    peak_rss_mib: float  # the largest instance
    peak_rss_total_mib: float  # all instances (each at its own peak)
    instances: int
    cpu: dict[str, float]
    log_path: Path
    profile: Path | None
    batches: int = 0
    batch_events: int = 0
    batch_seconds: float = 0.0
    dead_lettered: int = 0
    complete: bool = True
    slow_statements: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    explain_path: Path | None = None


def service_env(
    endpoints: Endpoints, names: Names, partitions: int, extra: Mapping[str, str]
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=endpoints.bootstrap,
        DATABASE_URL=endpoints.database(names.database),
        KAFKA_GROUP_ID=names.service_group,
        SCHEDULER_ENABLED="false",
        HTTP_PORT="0",  # several instances on one host
        TOPIC_PARTITIONS=str(partitions),
        LOG_LEVEL=env.get("LOG_LEVEL", "INFO"),
        PYTHONUNBUFFERED="1",
    )
    for (_, _, var), topic in zip(INPUTS, names.inputs, strict=True):
        env[var] = topic
    for (_, var), topic in zip(OUTPUTS, names.outputs, strict=True):
        env[var] = topic
    env.update(extra)
    return env


async def _applied(conn: Any, group: str) -> int:
    try:
        value = await conn.fetchval(
            "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = $1",
            group,
        )
    except asyncpg.UndefinedTableError:
        return 0  # not migrated yet
    return int(value)


async def run_service(
    endpoints: Endpoints,
    names: Names,
    n: int,
    *,
    partitions: int,
    limit_s: float,
    extra_env: Mapping[str, str],
    cwd: Path,
    profile: Path | None,
    py_spy: str | None,
    explain_ms: int | None,
    pg_log: Path,
    instances: int = 1,
) -> ServiceRun:
    log_path = Path(f"/tmp/{names.prefix}-service.log")
    env = service_env(endpoints, names, partitions, extra_env)
    pg_log_start = 0
    if explain_ms is not None:
        await _enable_auto_explain(endpoints, names.database, explain_ms)
        pg_log_start = _file_size(pg_log)
    conn = await asyncpg.connect(pg_dsn(endpoints.database(names.database)))
    backends: set[int] = set()
    spy: asyncio.subprocess.Process | None = None
    with _open_log(log_path) as log:
        cpu_before = cpu_seconds(set(), names.database)
        started = time.perf_counter()
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "consumer",
                "run",
                cwd=str(cwd),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            for _ in range(instances)
        ]
        pids = {p.pid for p in procs}
        # A reused pid starts at zero.
        cpu_before = {pid: v for pid, v in cpu_before.items() if pid not in pids}
        try:
            if profile is not None:
                spy = await _start_py_spy(py_spy, procs[0].pid, profile, log)
            phase, complete, peaks_kib, cpu_after = await _watch(
                procs, conn, names, n, started, limit_s, backends
            )
        finally:
            await conn.close()
            for proc in procs:
                await _stop(proc)
            if spy is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(spy.wait(), timeout=120)
    run = ServiceRun(
        phase=phase,
        peak_rss_mib=max(peaks_kib) / 1024,
        peak_rss_total_mib=sum(peaks_kib) / 1024,
        instances=instances,
        cpu=cpu_split(cpu_before, cpu_after),
        log_path=log_path,
        profile=profile,
        complete=complete,
    )
    _read_log(run)
    if explain_ms is not None:
        run.explain_path = Path(f"/tmp/{names.prefix}-explain.log")
        run.slow_statements = _slow_statements(pg_log, pg_log_start, backends, run.explain_path)
    return run


def _file_size(path: Path) -> int:
    return path.stat().st_size


async def _enable_auto_explain(endpoints: Endpoints, database: str, min_ms: int) -> None:
    """Plans of slow statements into the server log, for this database only."""
    admin = await asyncpg.connect(endpoints.admin_dsn)
    try:
        await admin.execute(
            f"ALTER DATABASE \"{database}\" SET session_preload_libraries = 'auto_explain'"
        )
        await admin.execute(
            f'ALTER DATABASE "{database}" SET auto_explain.log_min_duration = {int(min_ms)}'
        )
    finally:
        await admin.close()


_LOG_ENTRY = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] ")
_DURATION = re.compile(r"duration: ([\d.]+) ms")


def _slow_statements(
    pg_log: Path, start: int, backends: set[int], out: Path
) -> dict[str, tuple[int, float, float]]:
    """auto_explain entries of the service's backends: query -> (count, total ms, max ms)."""
    with pg_log.open("rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    entries: list[list[str]] = []
    keep = False
    for line in text.splitlines():
        m = _LOG_ENTRY.match(line)
        if m:
            keep = int(m.group(1)) in backends and "duration:" in line and "plan:" in line
            if keep:
                entries.append([line])
        elif keep and entries:
            entries[-1].append(line)
    stats: dict[str, tuple[int, float, float]] = {}
    with out.open("w") as f:
        for entry in entries:
            f.write("\n".join(entry) + "\n")
            d = _DURATION.search(entry[0])
            ms = float(d.group(1)) if d else 0.0
            query = next(
                (ln.split("Query Text:", 1)[1].strip() for ln in entry if "Query Text:" in ln),
                "?",
            )
            key = " ".join(query.split())[:90]
            count, total, most = stats.get(key, (0, 0.0, 0.0))
            stats[key] = (count + 1, total + ms, max(most, ms))
    return stats


def _open_log(path: Path) -> TextIO:
    return path.open("w")


async def _start_py_spy(
    py_spy: str | None, pid: int, out: Path, log: TextIO
) -> asyncio.subprocess.Process:
    binary = py_spy or _find_py_spy()
    fmt = {".svg": "flamegraph", ".txt": "raw"}.get(out.suffix, "speedscope")
    await asyncio.sleep(1.0)  # let the interpreter come up before attaching
    return await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--output",
        str(out),
        "--format",
        fmt,
        "--rate",
        "100",
        "--idle",
        "--nonblocking",
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )


def _find_py_spy() -> str:
    for candidate in (Path(sys.executable).parent / "py-spy", Path("/tmp/pyspy/bin/py-spy")):
        if candidate.exists():
            return str(candidate)
    return "py-spy"


async def _watch(
    procs: Sequence[asyncio.subprocess.Process],
    conn: Any,
    names: Names,
    n: int,
    started: float,
    limit_s: float,
    backends: set[int],
) -> tuple[Phase, bool, list[int], dict[int, tuple[str, float]]]:
    """Until the group's saved offsets add up to n; returns peak RSS (KiB) per process."""
    pids = {p.pid for p in procs}
    peaks = [0] * len(procs)
    first: float | None = None
    done = 0
    last_report = started
    last_done = 0
    while True:
        await asyncio.sleep(0.5)
        now = time.perf_counter()
        for i, proc in enumerate(procs):
            hwm = _proc_status_kib(proc.pid, "VmHWM") or 0
            peaks[i] = max(peaks[i], hwm, _proc_status_kib(proc.pid, "VmRSS") or 0)
        done = await _applied(conn, names.service_group)
        backends.update(
            r["pid"]
            for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        if done and first is None:
            first = now - started
        if done >= n:
            cpu_after = cpu_seconds(pids, names.database)
            return Phase(done, now - started, first), True, peaks, cpu_after
        for proc in procs:
            if proc.returncode is not None:
                raise RuntimeError(
                    f"the service exited with {proc.returncode} after {done:,} events"
                )
        if now - last_report >= 5.0:
            print(
                f"  service: {done:>10,} / {n:,} events applied, "
                f"{done / (now - started):>8,.0f}/s overall, "
                f"{(done - last_done) / (now - last_report):>8,.0f}/s "
                f"last {now - last_report:.0f} s, "
                f"rss {sum(_proc_status_kib(p.pid, 'VmRSS') or 0 for p in procs) / 1024:.0f} MiB",
                flush=True,
            )
            last_report, last_done = now, done
        if now - started > limit_s:
            print(f"  service: timed out after {limit_s:.0f} s", flush=True)
            return (
                Phase(done, now - started, first),
                False,
                peaks,
                cpu_seconds(pids, names.database),
            )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _read_log(run: ServiceRun) -> None:
    """Per-batch figures from the service's own "batch applied" log lines."""
    with run.log_path.open() as f:
        for line in f:
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") == "batch applied":
                run.batches += 1
                run.batch_events += int(entry.get("events", 0))
                run.batch_seconds += float(entry.get("seconds", 0.0))
            elif entry.get("msg") == "dead-lettered":
                run.dead_lettered += 1


# --- PostgreSQL ---------------------------------------------------------------------


@dataclass
class Outcome:
    by_status: dict[str, int] = field(default_factory=dict)
    by_trigger: dict[tuple[str, str], int] = field(default_factory=dict)
    projections: dict[str, int] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)
    database_mib: float = 0.0


TABLE_STATS = (
    "SELECT relname, seq_scan, seq_tup_read, idx_scan, n_tup_ins, n_tup_upd, n_tup_hot_upd, "
    "n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count, "
    "pg_total_relation_size(relid) AS bytes FROM pg_stat_user_tables ORDER BY relname"
)


async def outcome(endpoints: Endpoints, database: str) -> Outcome:
    conn = await asyncpg.connect(pg_dsn(endpoints.database(database)))
    try:
        out = Outcome()
        for row in await conn.fetch(
            "SELECT trigger_type, status, count(*) AS n FROM scheduled_followups GROUP BY 1, 2"
        ):
            out.by_trigger[(row["trigger_type"], row["status"])] = row["n"]
            out.by_status[row["status"]] = out.by_status.get(row["status"], 0) + row["n"]
        for table in ("user_projection", "booking_projection", "conversation_emotions"):
            out.projections[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        out.projections["of which bookings cancelled"] = await conn.fetchval(
            "SELECT count(*) FROM booking_projection WHERE cancelled_at IS NOT NULL"
        )
        await asyncio.sleep(0.6)  # the statistics collector flushes every 500 ms
        out.tables = [dict(r) for r in await conn.fetch(TABLE_STATS)]
        out.database_mib = (
            await conn.fetchval("SELECT pg_database_size(current_database())") / 2**20
        )
        return out
    finally:
        await conn.close()


# --- report -------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _git_state() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _decoder(names: Names) -> Callable[[Sequence[Any]], object]:
    """The service's own decode step (codec + validation), without any database work."""
    from consumer.adapters.wire import BadInput, parse_event
    from consumer.domain.events import EventKind

    codec = Codec.load()
    kinds = {
        topic: EventKind(kind) for topic, (kind, _, _) in zip(names.inputs, INPUTS, strict=True)
    }

    def decode(records: Sequence[Any]) -> object:
        bad = 0
        for r in records:
            try:
                parse_event(kinds[r.topic], r.value, codec)
            except BadInput:
                bad += 1
        return bad

    return decode


def summary(
    args: argparse.Namespace,
    stream: Stream,
    produce_seconds: float,
    bare: Phase,
    decoding: Phase,
    service: ServiceRun,
    result: Outcome,
) -> str:
    n = args.events
    ratio = service.phase.rate / bare.rate if bare.rate else 0.0
    target_seconds = TARGET_SECONDS_PER_MILLION * n / 1_000_000
    rows: list[tuple[str, str, str]] = [
        ("events", f"{n:,}", ""),
        (
            "produce rate (events/s)",
            f"{n / produce_seconds:,.0f}",
            f"{produce_seconds:.1f} s, compression {COMPRESSION or 'none'}",
        ),
        (
            "bare consumer rate (events/s)",
            f"{bare.rate:,.0f}",
            f"{bare.seconds:.1f} s incl. {bare.first_seconds or 0:.1f} s to first record; "
            f"{bare.steady_rate:,.0f}/s after",
        ),
        (
            "  consumer + decode only (events/s)",
            f"{decoding.rate:,.0f}",
            f"codec + validation, no database; end-to-end / this: "
            f"{service.phase.rate / decoding.rate if decoding.rate else 0:.2f}",
        ),
        (
            "end-to-end rate (events/s)",
            f"{service.phase.rate:,.0f}",
            f">= {TARGET_RATE:,.0f}  "
            + _verdict(service.complete and service.phase.rate >= TARGET_RATE),
        ),
        (
            "ratio end-to-end / bare",
            f"{ratio:.2f}",
            f">= {TARGET_RATIO}  {_verdict(service.complete and ratio >= TARGET_RATIO)}",
        ),
        (
            "replay time of N events (s)",
            f"{service.phase.seconds:.1f}",
            f"< {target_seconds:.0f} s"
            + ("" if n == 1_000_000 else " (60 s per 1,000,000, scaled)")
            + f"  {_verdict(service.complete and service.phase.seconds < target_seconds)}",
        ),
        (
            "  of which start to first commit (s)",
            f"{service.phase.first_seconds or 0:.1f}",
            f"then {service.phase.steady_rate:,.0f} events/s",
        ),
        (
            "consumer peak RSS (MiB)",
            f"{service.peak_rss_mib:,.0f}",
            "VmHWM"
            + (
                f" of the largest of {service.instances} instances, "
                f"{service.peak_rss_total_mib:,.0f} MiB together"
                if service.instances > 1
                else ""
            ),
        ),
    ]
    for status in ("pending", "executed", "cancelled", "failed", "expired"):
        rows.append((f"scheduled_followups {status}", f"{result.by_status.get(status, 0):,}", ""))
    rows.append(("scheduled_followups total", f"{sum(result.by_status.values()):,}", ""))

    width = max(len(r[0]) for r in rows) + 2
    lines = [
        "",
        f"== summary ({args.format}, {args.users:,} users, seed {args.seed}, code {_git_state()})",
        f"{'metric':<{width}}{'value':>14}   target / notes",
    ]
    if args.service_cwd != REPO or args.service_env or args.instances > 1:
        lines.insert(
            2,
            f"service: python -m consumer run in {args.service_cwd}"
            + "".join(f" {kv}" for kv in args.service_env)
            + (f", {args.instances} instances" if args.instances > 1 else ""),
        )
    lines += [f"{name:<{width}}{value:>14}   {note}".rstrip() for name, value, note in rows]
    if not service.complete:
        lines.append(f"!! the service did not finish: {service.phase.events:,} of {n:,} applied")

    lines.append("")
    lines.append(
        "input mix: "
        + ", ".join(
            f"{suffix} {count:,} ({count / n:.1%})"
            for (_, suffix, _), count in zip(INPUTS, stream.counts, strict=True)
        )
    )
    lines.append(
        f"values: {dict(stream.formats)}, {stream.value_bytes / n:.0f} bytes on average; "
        f"generated and encoded in {stream.seconds:.1f} s"
    )
    triggers = sorted({t for t, _ in result.by_trigger})
    statuses = sorted({s for _, s in result.by_trigger})
    if triggers:
        lines.append("follow-ups by trigger and status:")
        lines.append(f"  {'':<16}" + "".join(f"{s:>12}" for s in statuses))
        for t in triggers:
            lines.append(
                f"  {t:<16}" + "".join(f"{result.by_trigger.get((t, s), 0):>12,}" for s in statuses)
            )
    lines.append("projections: " + ", ".join(f"{k} {v:,}" for k, v in result.projections.items()))
    steady = service.phase.seconds - (service.phase.first_seconds or 0)
    if service.batches and steady > 0:
        lines.append(
            f"service batches: {service.batches:,}, "
            f"{service.batch_events / service.batches:,.0f} events on average; "
            f"Ingestor.process {service.batch_seconds / service.batches * 1000:.0f} ms on "
            f"average, {service.batch_seconds:.1f} s in all "
            f"({service.batch_seconds / steady:.0%} of the time after the first commit)"
        )
    if result.tables:
        lines.append(
            f"PostgreSQL tables (database {result.database_mib:,.0f} MiB; "
            "counters since the database was created):"
        )
        head = (
            "table",
            "MiB",
            "seq_scan",
            "seq_read",
            "idx_scan",
            "ins",
            "upd",
            "hot_upd",
            "dead",
            "autovac",
            "autoanalyze",
        )
        lines.append(f"  {head[0]:<24}" + "".join(f"{h:>12}" for h in head[1:]))
        for tbl in result.tables:
            values = (
                tbl["bytes"] / 2**20,
                tbl["seq_scan"],
                tbl["seq_tup_read"],
                tbl["idx_scan"] or 0,
                tbl["n_tup_ins"],
                tbl["n_tup_upd"],
                tbl["n_tup_hot_upd"],
                tbl["n_dead_tup"],
                tbl["autovacuum_count"],
                tbl["autoanalyze_count"],
            )
            lines.append(
                f"  {tbl['relname']:<24}{values[0]:>12,.0f}"
                + "".join(f"{v:>12,}" for v in values[1:])
            )
    if service.slow_statements:
        lines.append(
            f"statements slower than {args.explain_ms} ms (auto_explain; plans in "
            f"{service.explain_path}):"
        )
        for query, (count, total_ms, max_ms) in sorted(
            service.slow_statements.items(), key=lambda kv: -kv[1][1]
        ):
            lines.append(
                f"  {count:>6} x, {total_ms / 1000:>7.1f} s in all, max {max_ms:>7.0f} ms  {query}"
            )
    lines.append(f"dead letters logged by the service: {service.dead_lettered:,}")
    wall = service.phase.seconds
    lines.append(
        f"CPU during the service run ({wall:.1f} s wall, {os.cpu_count()} cores = "
        f"{wall * (os.cpu_count() or 1):.0f} CPU-s available):"
    )
    for label, seconds in sorted(service.cpu.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.05:
            lines.append(f"  {label:<20}{seconds:>8.1f} CPU-s  {seconds / wall:>6.0%} of one core")
    lines.append(f"service log: {service.log_path}")
    if service.profile is not None:
        lines.append(f"profile: {service.profile}")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ingest_throughput", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--events", type=int, default=1_000_000, help="events to produce")
    p.add_argument("--users", type=int, default=100_000, help="distinct user ids")
    p.add_argument("--format", choices=("avro", "json", "mixed"), default="avro")
    p.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--chunk", type=int, default=20_000, help="sends per gathered chunk")
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds per read phase (default: scaled)"
    )
    p.add_argument("--keep", action="store_true", help="keep the database and the topics")
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service (e.g. INGEST_BATCH_MAX_RECORDS=10000)",
    )
    p.add_argument(
        "--service-cwd",
        type=Path,
        default=REPO,
        help="directory `python -m consumer run` starts in (a scratch copy to try a change)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the service with py-spy into this file (.svg flamegraph, .txt raw, "
        "else speedscope JSON)",
    )
    p.add_argument("--py-spy", default=None, help="py-spy binary (default: found)")
    p.add_argument(
        "--instances",
        type=int,
        default=1,
        help="service processes in the same consumer group (horizontal scaling)",
    )
    p.add_argument(
        "--explain-ms",
        type=int,
        default=None,
        help="log plans of the service's statements slower than this (auto_explain on the "
        "bench database) and summarise them",
    )
    p.add_argument(
        "--pg-log",
        type=Path,
        default=REPO / ".services" / "postgres" / "log" / "postgres.log",
        help="the PostgreSQL server log, for --explain-ms",
    )
    args = p.parse_args(argv)
    if args.events < 1 or args.users < 1:
        p.error("--events and --users must be positive")
    return args


async def main_async(args: argparse.Namespace) -> None:
    ep = endpoints()
    names = Names.fresh()
    n = args.events
    limit_s = args.timeout or max(120.0, n / 1000.0)
    extra_env = dict(kv.split("=", 1) for kv in args.service_env)
    print(
        f"bench {names.prefix}: {n:,} events, {args.users:,} users, format {args.format}, "
        f"database {names.database}, kafka {ep.bootstrap}",
        flush=True,
    )
    await create_database(ep, names.database)
    try:
        await create_topics(ep.bootstrap, names.topics, args.partitions)
        try:
            await _run(args, ep, names, n, limit_s, extra_env)
        finally:
            if not args.keep:
                await delete_topics(ep.bootstrap, names.topics)
    finally:
        if args.keep:
            print(f"kept database {names.database} and topics {names.prefix}.*")
        else:
            await drop_database(ep, names.database)


async def _run(
    args: argparse.Namespace,
    ep: Endpoints,
    names: Names,
    n: int,
    limit_s: float,
    extra_env: Mapping[str, str],
) -> None:
    codec = Codec.load()
    stream = generate(n, args.users, args.format, args.seed, codec, datetime.now(UTC))
    print(
        f"generated {n:,} events in {stream.seconds:.1f} s "
        f"({n / stream.seconds:,.0f}/s, {stream.value_bytes / 2**20:.0f} MiB of values)",
        flush=True,
    )

    produce_seconds = await produce(ep.bootstrap, names.inputs, stream, args.chunk)
    del stream.records[:]  # the values are in Kafka now; free the memory
    written = await end_offsets(ep.bootstrap, names.inputs)
    if sum(written.values()) != n:
        raise RuntimeError(f"expected {n:,} records in the input topics, found {written}")
    print(f"produced {n:,} in {produce_seconds:.1f} s: {n / produce_seconds:,.0f} events/s")

    bare = await bare_consume(ep.bootstrap, names.inputs, names.bare_group, n, limit_s)
    print(
        f"bare consumer read {bare.events:,} in {bare.seconds:.1f} s: {bare.rate:,.0f} events/s",
        flush=True,
    )
    decoding = await bare_consume(
        ep.bootstrap, names.inputs, f"{names.bare_group}-decode", n, limit_s, _decoder(names)
    )
    print(
        f"consumer + decode (Ingestor.decode only) read {decoding.events:,} in "
        f"{decoding.seconds:.1f} s: {decoding.rate:,.0f} events/s",
        flush=True,
    )

    print("service (ingest only) replaying into the empty database ...", flush=True)
    service = await run_service(
        ep,
        names,
        n,
        partitions=args.partitions,
        limit_s=limit_s,
        extra_env=extra_env,
        cwd=args.service_cwd,
        profile=args.profile,
        py_spy=args.py_spy,
        explain_ms=args.explain_ms,
        pg_log=args.pg_log,
        instances=args.instances,
    )
    print(
        f"service applied {service.phase.events:,} in {service.phase.seconds:.1f} s: "
        f"{service.phase.rate:,.0f} events/s",
        flush=True,
    )
    result = await outcome(ep, names.database)
    print(summary(args, stream, produce_seconds, bare, decoding, service, result), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
