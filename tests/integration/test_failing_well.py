"""`run` that cannot start, as an operator sees it: `python -m consumer run` in a
subprocess with one thing wrong. Each failure is one line on stderr naming what and
where, a documented exit code, no traceback, no "Unclosed AIOKafka..." noise; and a
process that fails leaves a running consumer group alone."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from consumer.adapters.postgres.store import PostgresStore
from consumer.config import Settings
from consumer.entrypoints.exit_codes import (
    EXIT_KAFKA_UNAVAILABLE,
    EXIT_PORT_IN_USE,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from tests.integration.conftest import REPO
from tests.integration.helpers import running, service_env, wait_until

pytestmark = pytest.mark.integration

CLOSED = "127.0.0.1:1"  # nothing listens on port 1


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    @property
    def line(self) -> str:
        """The one line on stderr; fails unless there is exactly one and it is clean."""
        lines = self.err.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.err}"
        assert "Traceback" not in self.err
        assert "Unclosed" not in self.err
        assert self.out == ""
        return lines[0]


async def run(settings: Settings, **env: str) -> Ran:
    """`followup-consumer run` at the default log level (INFO), with `env` on top."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "run",
        cwd=REPO,
        env=service_env(settings, **{"LOG_LEVEL": "INFO", "LOG_FORMAT": "json", **env}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


@contextmanager
def port_in_use() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def test_unreachable_kafka(settings: Settings) -> None:
    # As `scripts/run` does: the schema first (a fresh database's migration says
    # what it ran, on lines of its own), then `run`.
    store = PostgresStore.connect(settings.database_url, settings.kafka_group_id, pool_size=1)
    try:
        assert await store.migrate()
    finally:
        await store.close()
    ran = await run(settings, KAFKA_BOOTSTRAP_SERVERS=CLOSED)
    assert ran.code == EXIT_KAFKA_UNAVAILABLE
    assert ran.line == (
        f"followup-consumer: cannot reach Kafka at {CLOSED} (KAFKA_BOOTSTRAP_SERVERS): "
        "no broker answered"
    )


async def test_unreachable_postgres(settings: Settings) -> None:
    ran = await run(settings, DATABASE_URL=f"postgresql+asyncpg://postgres@{CLOSED}/followups")
    assert ran.code == EXIT_UNAVAILABLE
    assert ran.line == (
        f"followup-consumer: cannot use PostgreSQL at {CLOSED}/followups (DATABASE_URL): "
        "connection refused"
    )


async def test_database_that_does_not_exist(settings: Settings) -> None:
    base, _, _ = settings.database_url.rpartition("/")
    ran = await run(settings, DATABASE_URL=f"{base}/no_such_database")
    assert ran.code == EXIT_UNAVAILABLE
    where = base.rpartition("@")[2]
    assert ran.line == (
        f"followup-consumer: cannot use PostgreSQL at {where}/no_such_database (DATABASE_URL): "
        'database "no_such_database" does not exist'
    )


async def test_port_already_in_use(settings: Settings) -> None:
    with port_in_use() as port:
        ran = await run(settings, HTTP_PORT=str(port))
    assert ran.code == EXIT_PORT_IN_USE
    assert ran.line == (
        f"followup-consumer: cannot serve HTTP on 127.0.0.1:{port} (HTTP_HOST, HTTP_PORT): "
        "address already in use; stop what holds it, or set HTTP_PORT to a free port (0: no HTTP)"
    )


async def test_an_unknown_log_level_is_a_configuration_error(settings: Settings) -> None:
    ran = await run(settings, LOG_LEVEL="verbose")
    assert ran.code == EXIT_USAGE
    assert ran.line == (
        "followup-consumer: invalid configuration: LOG_LEVEL: must be one of DEBUG, INFO, "
        "WARNING, ERROR, CRITICAL (got 'verbose')"
    )


REBALANCE_IN_PROGRESS = 27


async def test_a_failing_start_leaves_the_running_group_alone(settings: Settings) -> None:
    """A second instance whose HTTP port is taken exits before it joins the group:
    the running member keeps its partitions, and the broker starts no rebalance."""
    async with running(settings) as service:
        everything = 4 * settings.topic_partitions
        await wait_until(lambda: _assigned(service.consumer), lambda n: n == everything, timeout=60)
        coordinator = service.consumer._coordinator
        generation, assignment = coordinator.generation, service.consumer.assignment()
        heartbeats = _heartbeat_answers(coordinator)

        with port_in_use() as port:
            ran = await run(settings, HTTP_PORT=str(port))
        assert ran.code == EXIT_PORT_IN_USE, ran.err

        # Had it joined, the broker would answer the running member's next
        # heartbeats with REBALANCE_IN_PROGRESS (and then it would rejoin).
        after_exit = len(heartbeats)
        await wait_until(lambda: _count(heartbeats), lambda n: n >= after_exit + 2, timeout=30)
        assert REBALANCE_IN_PROGRESS not in heartbeats
        assert set(heartbeats) == {0}
        assert coordinator.generation == generation
        assert service.consumer.assignment() == assignment
        assert not service.stop.is_set()


async def _assigned(consumer: Any) -> int:
    return len(consumer.assignment())


async def _count(items: list[int]) -> int:
    return len(items)


def _heartbeat_answers(coordinator: Any) -> list[int]:
    """The error code of every heartbeat answer the coordinator gets from now on."""
    from aiokafka.protocol.group import HeartbeatRequest

    answers: list[int] = []
    send = coordinator._send_req

    async def recording(request: Any) -> Any:
        response = await send(request)
        if isinstance(request, HeartbeatRequest):
            answers.append(int(response.error_code))
        return response

    coordinator._send_req = recording
    return answers


async def test_workers_stop_when_one_cannot_start(settings: Settings) -> None:
    """WORKERS=2: the worker whose port is taken says why and exits 8; the
    supervisor stops the other and exits 8 too, instead of restarting it forever."""
    with port_in_use() as port:
        ran = await run(settings, WORKERS="2", HTTP_PORT=str(port), LOG_LEVEL="WARNING")
    assert ran.code == EXIT_PORT_IN_USE, ran.err
    assert f"followup-consumer: cannot serve HTTP on 127.0.0.1:{port} " in ran.err
    assert "Traceback" not in ran.err
    assert "restarting" not in ran.err
