"""One running instance: the ingest loop, the dispatch loop, HTTP, graceful stop.

The parts come wired from `consumer.bootstrap`; this module only starts them,
feeds the ingest loop from Kafka, and stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections import deque
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from consumer.adapters.kafka import (
    Fetched,
    OffsetsFromDatabase,
    ensure_topics,
    fetch_records,
    make_consumer,
)
from consumer.bootstrap import Clock, Wired, build, utc_now
from consumer.config import Settings
from consumer.domain import rules
from consumer.entrypoints.allocator import return_freed_memory
from consumer.entrypoints.http_api import HttpContext, create_app, make_server
from consumer.entrypoints.scheduler import build_scheduler
from consumer.entrypoints.startup import bind_http, database_ready, kafka_step
from consumer.service.batch_gate import BatchGate
from consumer.service.health import HealthReport, Probe, lag_of
from consumer.service.ingest import LaneTurns, PreparedBatch
from consumer.service.ports import BatchOutcome, Unavailable
from consumer.service.retry import Stopped, retrying

log = logging.getLogger(__name__)

DRAIN_SECONDS = 15.0
KAFKA_COMMIT_SECONDS = 5.0
# The cyclic garbage collector's thresholds once started (Python's are 700, 10,
# 10). Ingest makes and drops some hundred objects an event, nearly all freed by
# reference counting the moment they go; at 700 the collector ran every few
# events and walked what a batch holds each time: 22% of the process's time,
# sampled (py-spy --native) 3M events into a 10M replay. Garbage in cycles (rare
# here) lives a little longer; the full collections still run.
GC_THRESHOLDS = (50_000, 20, 20)

__all__ = ["Service", "run_service", "utc_now"]

# A fetch, and its batch if it could be decoded when it was read.
ReadAhead = tuple[Fetched, PreparedBatch | None]


class Service:
    """Lifecycle of one instance around the wired parts."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock = utc_now,
        wired: Wired | None = None,
        *,
        own_process: bool = False,
    ) -> None:
        self.settings = settings
        # The process is this instance's alone (`run_service`): its garbage
        # collector is tuned once started, not that of a test process around it.
        self.own_process = own_process
        self.parts = wired or build(settings, clock=clock)
        self.stop = asyncio.Event()
        self.consumer: AIOKafkaConsumer = make_consumer(settings)
        self.gate = BatchGate()
        self.scheduler = build_scheduler(self.parts.periodic, self.parts.policy)
        token = settings.admin_token
        self.http = (
            make_server(
                create_app(
                    HttpContext(
                        self.parts.operations,
                        self.parts.metrics,
                        self.health_report,
                        token.get_secret_value() if token else None,
                        live=self.liveness,
                        ready=self.readiness,
                    )
                ),
                settings.http_host,
                settings.http_port,
            )
            if settings.http_port
            else None
        )
        self.sockets: list[socket.socket] = []  # HTTP's, bound before anything else
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Next offset per partition applied by this instance (mirrored to Kafka).
        self.positions: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        """Start (StartupFailed when something it needs is not there), work until
        stopped, stop in order. Whatever was started is closed, however it ends."""
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._start()
            tasks = list(self.tasks.values())
            await self._until_stopped(tasks)
        finally:
            self.stop.set()
            if self.http is not None:
                self.http.should_exit = True
            # Let the batch in hand commit and the dispatch round finish; a batch cut
            # short would only be read again, but a clean stop need not do that.
            if tasks:
                await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
            for t in tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self._close()

    async def _start(self) -> None:
        """In an order that never disturbs a running group: the HTTP port, the database,
        Kafka, and only when all of them are there, joining the consumer group."""
        s = self.settings
        if self.http is not None:
            self.sockets = [bind_http(s.http_host, s.http_port)]
        await database_ready(self.parts.store, s)
        with kafka_step(s):
            await ensure_topics(s, [*s.input_topics, s.topic_followup_due, s.topic_dlq])
            await self._register_schemas()
            if self.parts.producer is not None:
                await self.parts.producer.start()
            listener = OffsetsFromDatabase(self.consumer, self.parts.store, self.gate)
            self.consumer.subscribe(list(s.input_topics), listener=listener)
            await self.consumer.start()
        if self.own_process:
            settle_garbage_collector()
            return_freed_memory()
        log.info(
            "consumer started",
            extra={"group": s.kafka_group_id, "dispatch": s.scheduler_enabled, "build": _build()},
        )
        self.tasks["ingest"] = asyncio.create_task(self._ingest_loop(), name="ingest")
        if s.scheduler_enabled:
            self.tasks["dispatch"] = asyncio.create_task(
                self.parts.dispatcher.run(self.stop), name="dispatch"
            )
            self.scheduler.start()
        if self.http is not None:
            self.tasks["http"] = asyncio.create_task(self.http.serve(self.sockets), name="http")
            log.info("serving HTTP", extra={"url": f"http://{s.http_host}:{s.http_port}/health"})

    async def _until_stopped(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        stopper = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait({stopper, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for t in done:
            if t is not stopper and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    async def liveness(self) -> Probe:
        """The loops are running (answering at all shows the event loop is not stuck)."""
        loops = {name: not t.done() for name, t in self.tasks.items() if name != "http"}
        return Probe(bool(loops) and all(loops.values()), {"loops": loops})

    async def readiness(self) -> Probe:
        """Able to do the work now: PostgreSQL answers and the consumer is in the group,
        ingesting. Dispatch is not asked: it catches up by itself."""
        database: str | None = None
        try:
            await asyncio.wait_for(self.parts.store.ping(), timeout=3)
        except Exception as exc:
            database = f"{type(exc).__name__}: {exc}"
        ingest = self.tasks.get("ingest")
        ingesting = ingest is not None and not ingest.done()
        return Probe(
            database is None and ingesting,
            {
                "database": {"reachable": database is None, "error": database},
                "ingesting": ingesting,
                "assigned_partitions": len(self.consumer.assignment()),
            },
        )

    async def _register_schemas(self) -> None:
        """FOLLOWUP_DUE_FORMAT=confluent: register followup.due's schema now, so that a
        refusal (an incompatible schema, bad credentials) stops the start with its
        reason. A registry that does not answer is waited for by dispatch instead."""
        encoder = self.parts.due_encoder
        if encoder is None:
            return
        try:
            await encoder.register()
        except Unavailable as exc:
            log.warning(
                "schema registry unavailable; followup.due waits for it",
                extra={"error": str(exc)},
            )

    async def health_report(self) -> HealthReport:
        """The old scheduler's figures (same names) plus consumer and database state."""
        s = self.settings
        figures: dict[str, int] | None
        database_error: str | None = None
        try:
            figures = dict(await asyncio.wait_for(self.parts.operations.figures(), timeout=3))
        except Exception as exc:
            figures, database_error = None, f"{type(exc).__name__}: {exc}"
        ingest = self.tasks.get("ingest")
        dispatch = self.tasks.get("dispatch")
        assigned = self.consumer.assignment()
        ends = {(tp.topic, tp.partition): self.consumer.highwater(tp) for tp in assigned}
        applied = {(tp.topic, tp.partition): o for tp, o in self.positions.items()}
        return HealthReport(
            group=s.kafka_group_id,
            database_error=database_error,
            kafka_error=None,
            figures=figures,
            partitions=lag_of(ends, applied, missing_is_zero=False),
            ingesting=ingest is not None and not ingest.done(),
            scheduler_enabled=s.scheduler_enabled,
            scheduler_running=(
                s.scheduler_enabled
                and dispatch is not None
                and not dispatch.done()
                and self.scheduler.running
            ),
            apscheduler_jobs=len(self.scheduler.get_jobs()) if self.scheduler.running else 0,
        )

    async def _close(self) -> None:
        if self.http is not None:
            self.http.should_exit = True
        for sock in self.sockets:
            sock.close()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        try:
            await self.consumer.stop()
        except asyncio.CancelledError:
            # aiokafka's fetcher, stopped while a fetch waits out a broker outage,
            # lets the cancellation of its own task out: not ours, unless we are
            # being cancelled, so the rest still closes and no traceback is printed.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception:  # closing: the broker may be gone
            pass
        if self.parts.producer is not None:
            with contextlib.suppress(Exception):
                await self.parts.producer.stop()
        if self.parts.registry is not None:
            with contextlib.suppress(Exception):
                await self.parts.registry.aclose()
        await self.parts.store.close()
        if self.tasks:
            log.info("consumer stopped")

    async def _ingest_loop(self) -> None:
        """Read and decode the next batch while the ones before it are applied.

        Decoding is this process's work, applying mostly PostgreSQL's: the two
        overlap, and so do two batches (`LaneTurns`: lane i of a batch starts when
        lane i of the batch before has committed). Nothing is decided ahead: each
        lane's rules run in its own transaction, after the same partitions' batch
        before it committed, on the state that commit left. A batch read ahead of a
        rebalance is still safe to apply: records below the offsets saved in the
        database are skipped under their lock.
        """
        last_kafka_commit = 0.0
        ahead: asyncio.Task[list[ReadAhead]] | None = None
        in_flight: deque[tuple[asyncio.Task[BatchOutcome], Fetched]] = deque()
        turns: LaneTurns | None = None
        stopped = False
        try:
            while not self.stop.is_set():
                parts = await (ahead or self._read_ahead())
                ahead = asyncio.create_task(self._read_ahead(), name="ingest-read-ahead")
                for fetched, prepared in parts:
                    if not len(fetched) or self.stop.is_set():
                        continue  # a part not applied is read again after a restart
                    await self.gate.enter()  # not while a rebalance is under way
                    turns = LaneTurns(self.parts.ingestor.lanes, turns)
                    batch = self._apply_in_flight(fetched, prepared, turns)
                    in_flight.append((asyncio.create_task(batch, name="ingest-batch"), fetched))
                    while len(in_flight) > 1:
                        await self._finish(*in_flight.popleft())
                if not any(len(fetched) for fetched, _ in parts):
                    while in_flight:  # nothing new: the last batch is not held back
                        await self._finish(*in_flight.popleft())
                loop_time = asyncio.get_running_loop().time()
                if loop_time - last_kafka_commit > KAFKA_COMMIT_SECONDS:
                    last_kafka_commit = loop_time
                    await self._commit_to_kafka()
            stopped = True
        except Stopped:
            stopped = True
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead
            await self._settle(in_flight, finish=stopped)

    async def _apply_in_flight(
        self, fetched: Fetched, prepared: PreparedBatch | None, turns: LaneTurns
    ) -> BatchOutcome:
        try:
            return await self._apply_through_outages(fetched, prepared, turns)
        finally:
            turns.abandon()  # lanes that did not commit: the next batch's stop waiting
            self.gate.leave()

    async def _finish(self, task: asyncio.Task[BatchOutcome], fetched: Fetched) -> None:
        self._applied(await task, fetched)

    async def _settle(
        self, in_flight: deque[tuple[asyncio.Task[BatchOutcome], Fetched]], *, finish: bool
    ) -> None:
        """The batches still in flight when the loop ends: on a stop, let them commit
        (within the drain time `run` gives); otherwise (a failure, a cancellation)
        cancel them, which rolls back what was not committed."""
        while in_flight:
            task, fetched = in_flight.popleft()
            if not finish:
                task.cancel()
            try:
                self._applied(await task, fetched)
            except (Exception, asyncio.CancelledError):
                finish = False  # the ones after it waited for it: they go too
                for later, _ in in_flight:
                    later.cancel()

    async def _read_ahead(self) -> list[ReadAhead]:
        """The next fetch, in parts of at most INGEST_BATCH_MAX_SCORES scores, each
        decoded if what decoding needs can be had now (else it is decoded by
        `_apply_through_outages`, which waits the outage out)."""
        s = self.settings
        # getmany, but a record aiokafka cannot read comes out as a dead letter.
        fetched = await fetch_records(
            self.consumer,
            timeout_ms=s.ingest_fetch_timeout_ms,
            max_records=s.ingest_batch_max_records,
        )
        out: list[ReadAhead] = []
        unavailable = False
        for part in fetched.split(s.topic_emotion_scored, s.ingest_batch_max_scores):
            prepared = None
            if len(part) and not unavailable:
                try:
                    prepared = await self._prepare(part)
                except Unavailable:
                    unavailable = True  # the other parts would wait for it again
            out.append((part, prepared))
        return out

    async def _prepare(self, fetched: Fetched) -> PreparedBatch:
        return await self.parts.ingestor.prepare(
            fetched.all_records(), unreadable=fetched.unreadable
        )

    async def _apply_through_outages(
        self,
        fetched: Fetched,
        prepared: PreparedBatch | None = None,
        turns: LaneTurns | None = None,
    ) -> BatchOutcome:
        """Nothing more is applied until this batch is.

        Decoding waits out outages too (the schema registry's): the batch is
        decoded once, when every writer schema it names could be fetched.
        """

        async def attempt() -> BatchOutcome:
            nonlocal prepared
            if prepared is None:
                prepared = await self._prepare(fetched)
            return await self.parts.ingestor.apply(prepared, turns)

        return await retrying(
            attempt,
            retry_on=Unavailable,
            what="ingest",
            stop=self.stop,
        )

    def _applied(self, outcome: BatchOutcome, fetched: Fetched) -> None:
        events = len(fetched)
        self.parts.dispatcher.notify(outcome.earliest_due)
        self.parts.metrics.batch_applied(outcome, events)
        log.info(
            "batch applied",
            extra={
                "events": events,
                "dead": sum(outcome.dead.values()),
                "seconds": round(outcome.seconds, 4),
            },
        )
        assigned = self.consumer.assignment()
        for tp, offset in fetched.next_offsets().items():
            if tp not in assigned:
                # Read ahead of a rebalance that took it away: applied safely (the
                # saved offsets decide), but its position and lag are the new owner's.
                continue
            self.positions[tp] = offset
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                self.parts.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, highwater - offset)
                )

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


def _build() -> str:
    """Which build runs: "compiled" when the rules are mypyc's extension (the
    image's wheel, hatch_build.py), "interpreted" from source (development)."""
    path = rules.__file__ or ""
    return "compiled" if path.endswith(tuple(EXTENSION_SUFFIXES)) else "interpreted"


def settle_garbage_collector() -> None:
    """Leave what startup made (modules, schemas, templates, clients) out of every
    later collection, and collect less often (`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run_service(settings: Settings) -> None:
    """`followup-consumer run`; StartupFailed when it cannot start."""
    with kafka_step(settings):  # the KAFKA_SSL_* / SASL settings make the clients
        service = Service(settings, own_process=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop.set)
    await service.run()
