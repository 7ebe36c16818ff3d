"""Liveness and readiness are separate questions: a degraded dispatcher makes GET
/health say so (503) but is no reason to restart the pod (live) nor to take it out
(ready); a database that does not answer makes it not ready, still live."""

from __future__ import annotations

import httpx
import pytest

from consumer.config import Settings
from consumer.service.ports import Unavailable
from tests.integration.helpers import free_port, running, wait_until

pytestmark = pytest.mark.integration


async def test_live_ready_and_the_full_report(settings: Settings) -> None:
    settings = settings.model_copy(update={"http_port": free_port()})
    base = f"http://127.0.0.1:{settings.http_port}"
    async with running(settings) as service, httpx.AsyncClient(base_url=base, timeout=10) as c:

        async def ready() -> int:
            try:
                return (await c.get("/health/ready")).status_code
            except httpx.TransportError:
                return 0

        await wait_until(ready, lambda code: code == 200, timeout=60)
        live = await c.get("/health/live")
        assert (live.status_code, live.json()["loops"]) == (200, {"ingest": True, "dispatch": True})
        assert (await c.get("/health")).status_code == 200

        # Dispatch degraded (its scheduler stopped): reported, but live and ready.
        service.scheduler.shutdown(wait=False)
        full = await c.get("/health")
        assert (full.status_code, full.json()["status"]) == (503, "degraded")
        assert (await c.get("/health/live")).status_code == 200
        assert (await c.get("/health/ready")).status_code == 200

        # The database away: not ready (no traffic), still live (no restart).
        async def away() -> None:
            raise Unavailable("connection refused", resource="database")

        service.parts.store.ping = away  # type: ignore[method-assign]
        not_ready = await c.get("/health/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["database"] == {
            "reachable": False,
            "error": "Unavailable: database: connection refused",
        }
        assert (await c.get("/health/live")).status_code == 200
