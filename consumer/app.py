"""Composition root: builds every adapter from the settings and runs the loops.

Each collaborator is a parameter somewhere below this module, so tests can run
the same ingest and dispatch code with their own clock, store or publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from consumer.admin import Operations
from consumer.codec import Codec
from consumer.config import Settings
from consumer.crypto import MessageCipher
from consumer.dispatch import Dispatcher, RetryPolicy
from consumer.http_api import HttpContext, create_app, make_server
from consumer.ingest import BatchOutcome, Ingestor
from consumer.kafka_io import (
    InRecord,
    KafkaDeadLetters,
    KafkaDuePublisher,
    OffsetsFromDatabase,
    ensure_topics,
    make_consumer,
    make_producer,
)
from consumer.metrics import Metrics
from consumer.periodic import PeriodicJobs, build_scheduler
from consumer.rules import Policy
from consumer.store import PeriodicQueries, Store, create_engine, migrate

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
DRAIN_SECONDS = 15.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def _transient(exc: BaseException) -> bool:
    """Failures of the infrastructure, worth waiting out, not bugs."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        # Connection exceptions (08), operator intervention such as a shutdown (57),
        # insufficient resources (53).
        code = str(getattr(exc.orig, "sqlstate", "") or "")
        return code[:2] in {"08", "57", "53"}
    return isinstance(exc, OSError | TimeoutError | KafkaError | ConnectionError)


class Service:
    """One running instance: ingest loop, dispatch loop, graceful stop."""

    def __init__(self, settings: Settings, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.clock = clock
        self.stop = asyncio.Event()
        self.engine = create_engine(settings.database_url)
        self.store = Store(self.engine, settings.kafka_group_id)
        self.codec = Codec.load()
        self.policy = Policy.from_settings(settings)
        self.producer = make_producer(settings)
        self.consumer: AIOKafkaConsumer = make_consumer(settings)
        self.batch_lock = asyncio.Lock()
        self.metrics = Metrics()
        key = settings.followup_encryption_key
        self.cipher = MessageCipher(key.get_secret_value() if key else None)
        self.ingestor = Ingestor(
            self.store,
            self.codec,
            self.policy,
            settings.input_topics,
            KafkaDeadLetters(self.producer, settings.topic_dlq),
            clock,
        )
        self.dispatcher = Dispatcher(
            self.store,
            KafkaDuePublisher(
                self.producer, settings.topic_followup_due, self.codec, settings.followup_due_format
            ),
            self.policy,
            RetryPolicy(
                max_retries=settings.max_retries,
                base=timedelta(seconds=settings.retry_backoff_seconds),
                cap=timedelta(seconds=settings.retry_backoff_max_seconds),
            ),
            clock,
            batch_size=settings.dispatch_batch_size,
            lease=timedelta(seconds=settings.dispatch_lease_seconds),
            poll=timedelta(seconds=settings.dispatch_poll_seconds),
            metrics=self.metrics,
            cipher=self.cipher,
        )
        self.periodic = PeriodicJobs(
            self.store,
            PeriodicQueries(self.engine, settings.kafka_group_id),
            self.policy,
            timedelta(days=settings.retention_days),
            clock,
        )
        self.scheduler = build_scheduler(self.periodic, self.policy)
        self.operations = Operations(self.store, self.policy, self.cipher, clock)
        token = settings.admin_token
        self.http = (
            make_server(
                create_app(
                    HttpContext(
                        self.operations,
                        self.metrics,
                        self.health_report,
                        token.get_secret_value() if token else None,
                    )
                ),
                settings.http_host,
                settings.http_port,
            )
            if settings.http_port
            else None
        )
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Next offset per partition applied by this instance (mirrored to Kafka).
        self.positions: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        s = self.settings
        await self._migrate()
        await ensure_topics(s, [*s.input_topics, s.topic_followup_due, s.topic_dlq])
        await self.producer.start()
        listener = OffsetsFromDatabase(self.consumer, self.store, self.batch_lock)
        self.consumer.subscribe(list(s.input_topics), listener=listener)
        await self.consumer.start()
        log.info(
            "consumer started",
            extra={"group": s.kafka_group_id, "dispatch": s.scheduler_enabled},
        )
        self.tasks["ingest"] = asyncio.create_task(self._ingest_loop(), name="ingest")
        if s.scheduler_enabled:
            self.tasks["dispatch"] = asyncio.create_task(
                self.dispatcher.run(self.stop), name="dispatch"
            )
            self.scheduler.start()
        if self.http is not None:
            self.tasks["http"] = asyncio.create_task(self.http.serve(), name="http")
        tasks = list(self.tasks.values())
        try:
            await self._until_stopped(tasks)
        finally:
            self.stop.set()
            if self.http is not None:
                self.http.should_exit = True
            # Let the batch in hand commit and the dispatch round finish; a batch cut
            # short would only be read again, but a clean stop need not do that.
            await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
            for t in tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self._close()

    async def _until_stopped(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        stopper = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait({stopper, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for t in done:
            if t is not stopper and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    async def _migrate(self) -> None:
        """Bring the schema up to date, unless this role may not (least privilege)."""
        if not self.settings.migrate_on_start:
            return
        try:
            await migrate(self.engine)
        except DBAPIError as exc:
            if str(getattr(exc.orig, "sqlstate", "")) != "42501":
                raise
            # Run as a role without DDL rights: `followup-consumer migrate` is the
            # owner's job. Go on if the schema is there (the first query would fail).
            log.warning(
                "no privilege to migrate; assuming the owner ran `followup-consumer migrate`",
                extra={"error": str(exc.orig)},
            )

    async def health_report(self) -> dict[str, Any]:
        """The old scheduler's figures (same names) plus consumer and database state."""
        s = self.settings
        figures: dict[str, int | None]
        try:
            figures = dict(await asyncio.wait_for(self.operations.figures(), timeout=3))
            database_ok = True
        except Exception:
            figures, database_ok = {"pending_jobs": None, "executed_today": None}, False
        ingest = self.tasks.get("ingest")
        ingesting = ingest is not None and not ingest.done()
        dispatch = self.tasks.get("dispatch")
        scheduler_running = (
            s.scheduler_enabled
            and dispatch is not None
            and not dispatch.done()
            and self.scheduler.running
        )
        assigned = sorted(self.consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        lag = {}
        for tp in assigned:
            highwater = self.consumer.highwater(tp)
            position = self.positions.get(tp)
            if highwater is not None and position is not None:
                lag[f"{tp.topic}[{tp.partition}]"] = max(0, highwater - position)
        if not database_ok or not ingesting:
            status = "unhealthy"
        elif s.scheduler_enabled and not scheduler_running:
            status = "degraded"
        else:
            status = "healthy"
        return {
            "status": status,
            "scheduler_running": scheduler_running,
            **figures,
            "apscheduler_jobs": len(self.scheduler.get_jobs()) if self.scheduler.running else 0,
            "consumer": {
                "group": s.kafka_group_id,
                "ingesting": ingesting,
                "assigned_partitions": [f"{tp.topic}[{tp.partition}]" for tp in assigned],
                "lag": lag,
            },
            "database": {"reachable": database_ok},
        }

    async def _close(self) -> None:
        if self.http is not None:
            self.http.should_exit = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        await self.engine.dispose()
        log.info("consumer stopped")

    async def _ingest_loop(self) -> None:
        s = self.settings
        last_kafka_commit = 0.0
        while not self.stop.is_set():
            batch = await self.consumer.getmany(
                timeout_ms=s.ingest_fetch_timeout_ms, max_records=s.ingest_batch_max_records
            )
            records = [r for rs in batch.values() for r in rs]
            if not records:
                continue
            async with self.batch_lock:
                outcome = await self._process_until_done(records)
            if outcome is None:
                return  # stopping
            self.dispatcher.notify(outcome.earliest_due)
            self.metrics.record_batch(outcome, len(records))
            log.info(
                "batch applied",
                extra={
                    "events": len(records),
                    "dead": sum(outcome.dead.values()),
                    "seconds": round(outcome.seconds, 4),
                },
            )
            for tp, rs in batch.items():
                if rs:
                    self.positions[tp] = rs[-1].offset + 1
                    highwater = self.consumer.highwater(tp)
                    if highwater is not None:
                        self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                            max(0, highwater - self.positions[tp])
                        )
            loop_time = asyncio.get_running_loop().time()
            if loop_time - last_kafka_commit > 5:
                last_kafka_commit = loop_time
                await self._commit_to_kafka()

    async def _process_until_done(self, records: Sequence[InRecord]) -> BatchOutcome | None:
        """Retry a batch through outages: nothing is fetched until it is applied."""
        delay = 0.5
        batch = self.ingestor.prepare(records)
        while True:
            try:
                return await self.ingestor.apply(batch)
            except Exception as exc:
                if not _transient(exc):
                    raise
                log.warning(
                    "infrastructure unavailable; retrying batch",
                    extra={"error": repr(exc), "retry_in": delay},
                )
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=delay)
                return None
            except TimeoutError:
                delay = min(delay * 2, 30.0)

    async def _commit_to_kafka(self) -> None:
        """Mirror positions into Kafka for lag tooling; PostgreSQL stays authoritative."""
        assigned = self.consumer.assignment()
        offsets = {
            tp: OffsetAndMetadata(offset, "")
            for tp, offset in self.positions.items()
            if tp in assigned
        }
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # a rebalance in progress, for one
            log.debug("kafka commit skipped", extra={"error": repr(exc)})


async def run_service(settings: Settings) -> None:
    service = Service(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop.set)
    await service.run()


async def run_migrations(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
