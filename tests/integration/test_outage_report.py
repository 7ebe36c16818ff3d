"""A database outage while the service runs, as the operator reads it: one warning
when it starts (the reason and the next try), not a line per failed try; one line
when it ends, with how long it lasted. PostgreSQL is reached through a proxy in
this test, which is "unplugged" and plugged back (the shared server stays up)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumer.config import Settings
from consumer.service.retry import OUTAGES
from tests.integration.helpers import (
    confirmed,
    consumed_to_end,
    create_topics,
    new_id,
    produce_events,
    running,
    wait_until,
)

pytestmark = pytest.mark.integration


class Proxy:
    """TCP from 127.0.0.1:<port> to a target; `unplug` refuses new connections and
    cuts the open ones, `plug` listens again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.open: set[asyncio.StreamWriter] = set()

    async def plug(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def unplug(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.open):
            writer.transport.abort()
        self.open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.open |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


def through(proxy: Proxy, settings: Settings) -> Settings:
    user_and_host, _, database = settings.database_url.rpartition("/")
    user = user_and_host.rpartition("@")[0]
    return settings.model_copy(update={"database_url": f"{user}@127.0.0.1:{proxy.port}/{database}"})


def target_of(settings: Settings) -> tuple[str, int]:
    host_port = settings.database_location.partition("/")[0]
    host, _, port = host_port.rpartition(":")
    return host, int(port)


async def test_an_outage_is_one_line_down_and_one_line_up(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "consumer.service.retry")
    OUTAGES._down.clear()  # what earlier tests of this process left behind
    OUTAGES._back.clear()
    await create_topics(settings)
    proxy = Proxy(*target_of(settings))
    await proxy.plug()
    now = datetime.now(UTC)
    event = confirmed(new_id("user"), new_id("bk"), now + timedelta(days=3), now)
    async with running(through(proxy, settings)) as service:
        await produce_events(settings, [event])
        await consumed_to_end(settings, service=service)  # read directly, not via the proxy

        failures: list[BaseException] = []
        apply = service.parts.ingestor.apply

        async def counted(batch: Any, *rest: Any) -> Any:
            try:
                return await apply(batch, *rest)
            except Exception as exc:
                failures.append(exc)
                raise

        service.parts.ingestor.apply = counted  # type: ignore[method-assign, assignment]
        await proxy.unplug()
        later = datetime.now(UTC)
        await produce_events(
            settings, [confirmed(new_id("user"), new_id("bk"), later + timedelta(days=3), later)]
        )

        async def tries() -> int:
            return len(failures)

        # Several failed tries of the batch (0.5 + 1 + 2 s of backoff), and dispatch's
        # every 0.2 s beside them.
        await wait_until(tries, lambda n: n >= 4, timeout=60)
        await proxy.plug()
        await consumed_to_end(settings, service=service, timeout=60)
        assert not service.stop.is_set()
    await proxy.unplug()
    assert proxy.server is not None
    await proxy.server.wait_closed()

    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.endswith("retry")]
    warnings = [text for level, text in lines if level == "WARNING"]
    infos = [text for level, text in lines if level == "INFO"]
    assert warnings, lines
    assert warnings[0].startswith("database unavailable: ")
    assert "; retrying in " in warnings[0]
    # One story for all those tries (a second line only if the reason changed).
    assert len(warnings) <= 2, lines
    assert len(infos) == 1, lines
    assert infos[0].startswith("database available again after ")
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("consumer")]
