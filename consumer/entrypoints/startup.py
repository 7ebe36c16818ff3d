"""What `run` and `replay` check before they do anything, and how a failed check
reads: one line naming what and where, and an exit code (exit_codes.py).

The order is the point: the HTTP port is bound first, then PostgreSQL and Kafka
are asked, and only then does `run` join the consumer group. A process that
cannot work never joins, so it never makes the running members rebalance.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator

from aiokafka.errors import KafkaConnectionError, KafkaError

from consumer.adapters.kafka import KafkaConfigError
from consumer.config import Settings
from consumer.entrypoints.exit_codes import (
    EXIT_KAFKA_UNAVAILABLE,
    EXIT_PORT_IN_USE,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from consumer.service.ports import Store, Unavailable

log = logging.getLogger(__name__)


class StartupFailed(Exception):
    """The command cannot start: the line for stderr and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def bind_http(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, before anything else starts (uvicorn serves
    on it later). Listening at once: another process cannot bind the port meanwhile,
    and a second instance finds it taken before it joins the consumer group."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _port_failed(host, port, exc) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise _port_failed(host, port, exc) from exc
    sock.set_inheritable(True)
    return sock


def _port_failed(host: str, port: int, exc: OSError) -> StartupFailed:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return StartupFailed(
        f"cannot serve HTTP on {host}:{port} (HTTP_HOST, HTTP_PORT): {reason.lower()}; "
        "stop what holds it, or set HTTP_PORT to a free port (0: no HTTP)",
        EXIT_PORT_IN_USE,
    )


async def database_ready(store: Store, settings: Settings) -> None:
    """The schema brought up to date (MIGRATE_ON_START), or at least the database
    answering; StartupFailed otherwise."""
    try:
        if not settings.migrate_on_start:
            await store.ping()
        elif not await store.migrate():
            # Run as a role without DDL rights: `followup-consumer migrate` is the
            # owner's job. Go on if the schema is there (the first query would wait).
            log.warning(
                "no privilege to migrate; assuming the owner ran `followup-consumer migrate`"
            )
    except Unavailable as exc:
        raise database_failed(settings, exc) from exc


def database_failed(settings: Settings, exc: Unavailable) -> StartupFailed:
    return StartupFailed(
        f"cannot use PostgreSQL at {settings.database_location} (DATABASE_URL): {exc.reason}",
        EXIT_UNAVAILABLE,
    )


@contextlib.contextmanager
def kafka_step(settings: Settings) -> Iterator[None]:
    """Kafka failures inside the block become one StartupFailed line. aiokafka's own
    complaints about the same failure (one per address it tried) are held back:
    the line says it all."""
    where = settings.kafka_bootstrap_servers
    chatty = logging.getLogger("aiokafka")
    level = chatty.level
    chatty.setLevel(logging.CRITICAL)
    try:
        yield
    except KafkaConfigError as exc:
        raise StartupFailed(f"invalid configuration: {exc}", EXIT_USAGE) from exc
    except KafkaConnectionError as exc:
        raise StartupFailed(
            f"cannot reach Kafka at {where} (KAFKA_BOOTSTRAP_SERVERS): no broker answered",
            EXIT_KAFKA_UNAVAILABLE,
        ) from exc
    except (KafkaError, OSError, TimeoutError) as exc:
        raise StartupFailed(
            f"cannot use Kafka at {where} (KAFKA_BOOTSTRAP_SERVERS): {_described(exc)}",
            EXIT_KAFKA_UNAVAILABLE,
        ) from exc
    finally:
        chatty.setLevel(level)


def _described(exc: BaseException) -> str:
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"
