"""A custom follow-up whose time is already past MAX_LATENESS_HOURS is refused (it
would be stored `expired` and never sent): TooLate from the operations, 422 naming
`scheduled_at` from the HTTP API."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from consumer.adapters.crypto import MessageCipher
from consumer.adapters.memory import MemoryStore
from consumer.adapters.metrics import Metrics
from consumer.domain.policy import Policy
from consumer.entrypoints.http_api import HttpContext, create_app
from consumer.service.health import HealthReport
from consumer.service.operations import Operations, TooLate
from tests.service.conftest import T0

H = timedelta(hours=1)
POLICY = Policy(max_lateness=48 * H)


def operations(store: MemoryStore) -> Operations:
    return Operations(store, POLICY, MessageCipher(None), lambda: T0)


async def test_past_the_lateness_limit_is_refused_and_nothing_is_stored(
    memory_store: MemoryStore,
) -> None:
    ops = operations(memory_store)
    too_late = T0 - 48 * H - timedelta(seconds=1)
    with pytest.raises(TooLate, match=r"is more than 48 h ago \(MAX_LATENESS_HOURS\)"):
        await ops.schedule_custom(user_id="u1", conversation_id="c1", message="hi", at=too_late)
    assert await ops.list_followups() == []
    # At the limit, or late by less, it is taken (and sent at once).
    for at in (T0 - 48 * H, T0 - H):
        made = await ops.schedule_custom(user_id="u1", conversation_id="c1", message="hi", at=at)
        assert made.status == "pending"


async def test_the_api_answers_422_naming_scheduled_at(memory_store: MemoryStore) -> None:
    async def health() -> HealthReport:
        return HealthReport("g", None, None, {})

    app = create_app(HttpContext(operations(memory_store), Metrics(), health, admin_token="t"))
    body = {
        "user_id": "u1",
        "conversation_id": "c1",
        "message": "hi",
        "scheduled_at": (T0 - 49 * H).isoformat(),
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app"
    ) as c:
        r = await c.post("/admin/followups", json=body, headers={"Authorization": "Bearer t"})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "scheduled_at"]
    assert error["type"] == "too_late"
    assert "MAX_LATENESS_HOURS" in error["msg"]
    assert (
        await memory_store.list_followups(user_id=None, status=None, trigger_type=None, limit=10)
        == []
    )
