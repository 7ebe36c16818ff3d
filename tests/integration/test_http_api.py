"""The HTTP side against the real service, database and broker: health, metrics,
the admin API (auth, each endpoint's success and error cases), erasure,
hostile input, encryption at rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from consumer.adapters.crypto import MessageCipher, new_key
from consumer.adapters.metrics import Metrics
from consumer.adapters.postgres.store import PostgresStore, create_engine, migrate
from consumer.config import Settings
from consumer.domain.policy import Policy
from consumer.entrypoints.http_api import HttpContext, create_app
from consumer.service.health import HealthReport
from consumer.service.operations import Operations
from tests.integration.helpers import (
    activity,
    confirmed,
    create_topics,
    free_port,
    new_id,
    produce_events,
    query,
    running,
    scored,
    wait_consumed,
    wait_until,
)

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def with_http(settings: Settings, **extra: Any) -> Settings:
    return settings.model_copy(
        update={"http_port": free_port(), "admin_token": SecretStr(TOKEN), **extra}
    )


def client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10)


async def http_ready(c: httpx.AsyncClient) -> None:
    async def probe() -> int:
        try:
            return (await c.get("/metrics")).status_code
        except httpx.TransportError:
            return 0

    await wait_until(probe, lambda code: code == 200)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


async def test_admin_endpoints_are_disabled_without_a_token(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    await migrate(engine)
    ops = Operations(
        PostgresStore(engine, "g"), Policy(), MessageCipher(None), lambda: datetime.now(UTC)
    )

    async def health() -> HealthReport:
        return HealthReport("g", None, None, {"pending_jobs": 0, "executed_today": 0})

    app = create_app(HttpContext(ops, Metrics(), health, admin_token=None))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://app"
        ) as c:
            for headers in ({}, AUTH, {"Authorization": "Bearer "}):
                r = await c.get("/admin/followups", headers=headers)
                assert r.status_code == 404
                assert "disabled" in r.json()["detail"]
            assert (await c.get("/health")).status_code == 200
    finally:
        await engine.dispose()


async def test_admin_api_auth_and_every_endpoint(settings: Settings) -> None:
    settings = with_http(settings, max_pending_followups_per_user=2)
    at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    user = new_id("user")
    async with running(settings), client(settings) as c:
        await http_ready(c)
        # Refused without a token, with a wrong one, with another scheme.
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            r = await c.get("/admin/followups", headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"] == "Bearer"
        body = {"user_id": user, "conversation_id": "conv-1", "message": "Hi!", "scheduled_at": at}
        assert (await c.post("/admin/followups", json=body)).status_code == 401

        created = await c.post("/admin/followups", json=body, headers=AUTH)
        assert created.status_code == 201, created.text
        one = created.json()
        assert (one["user_id"], one["trigger_type"], one["status"]) == (user, "custom", "pending")
        assert one["trigger_data"]["custom_message"] == "Hi!"
        second = await c.post("/admin/followups", json=body, headers=AUTH)
        assert second.status_code == 201
        over = await c.post("/admin/followups", json=body, headers=AUTH)
        assert over.status_code == 409
        assert "pending" in over.json()["detail"]

        # 422 naming the field.
        for bad, field in (
            ({**body, "scheduled_at": "2030-01-01T09:00:00"}, "scheduled_at"),
            ({**body, "message": ""}, "message"),
            ({**body, "user_id": "u" * 256}, "user_id"),
            ({**body, "message": "a\x00b"}, "message"),
            ({k: v for k, v in body.items() if k != "user_id"}, "user_id"),
        ):
            r = await c.post("/admin/followups", json=bad, headers=AUTH)
            assert r.status_code == 422, bad
            assert field in [e["loc"][-1] for e in r.json()["detail"]], r.json()
        r = await c.get("/admin/followups", params={"limit": 0}, headers=AUTH)
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"][-1] == "limit"
        r = await c.get("/admin/followups", params={"status": "bogus"}, headers=AUTH)
        assert r.status_code == 422

        listed = await c.get(
            "/admin/followups", params={"user_id": user, "status": "pending"}, headers=AUTH
        )
        assert listed.status_code == 200
        assert sorted(f["id"] for f in listed.json()) == sorted([one["id"], second.json()["id"]])
        only_one = await c.get(
            "/admin/followups", params={"user_id": user, "limit": 1}, headers=AUTH
        )
        assert len(only_one.json()) == 1
        shown = await c.get(f"/admin/followups/{one['id']}", headers=AUTH)
        assert shown.status_code == 200
        assert shown.json()["id"] == one["id"]
        assert (await c.get("/admin/followups/nope", headers=AUTH)).status_code == 404

        cancel = await c.post(f"/admin/followups/{one['id']}/cancel", headers=AUTH)
        assert cancel.status_code == 200
        assert cancel.json() == {"id": one["id"], "status": "cancelled"}
        again = await c.post(f"/admin/followups/{one['id']}/cancel", headers=AUTH)
        assert again.status_code == 409
        assert (await c.post("/admin/followups/nope/cancel", headers=AUTH)).status_code == 404
        # Room again under the limit after the cancel.
        assert (await c.post("/admin/followups", json=body, headers=AUTH)).status_code == 201


async def test_erase_removes_every_row_of_the_user_and_nothing_else(settings: Settings) -> None:
    settings = with_http(settings)
    now = datetime.now(UTC)
    gone, kept = new_id("gone"), new_id("kept")
    events = []
    for user in (gone, kept):
        conv = new_id("conv")
        events += [
            confirmed(user, new_id("bk"), now + timedelta(days=3), now, conversation_id=conv),
            scored(user, conv, 0.2, now),
            activity(user, now),
        ]
    await create_topics(settings)
    await produce_events(settings, events)
    tables = (
        "scheduled_followups",
        "user_projection",
        "booking_projection",
        "conversation_emotions",
    )

    async def rows_of(user: str) -> dict[str, int]:
        return {
            t: (await query(settings, f"SELECT count(*) AS n FROM {t} WHERE user_id = $1", user))[
                0
            ]["n"]
            for t in tables
        }

    async with running(settings) as service, client(settings) as c:
        await wait_consumed(settings, len(events), service=service)
        await http_ready(c)
        before_gone, before_kept = await rows_of(gone), await rows_of(kept)
        assert all(before_gone.values()), before_gone
        assert all(before_kept.values()), before_kept
        r = await c.delete(f"/admin/users/{gone}", headers=AUTH)
        assert r.status_code == 200
        assert r.json() == {"user_id": gone, "deleted": before_gone}
    assert set((await rows_of(gone)).values()) == {0}
    assert await rows_of(kept) == before_kept


async def test_hostile_strings_are_stored_verbatim_never_executed(settings: Settings) -> None:
    settings = with_http(settings)
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    hostile = [
        ("x'; DROP TABLE scheduled_followups; --", "Robert'); DELETE FROM user_projection;--"),
        ('quote " and \\ backslash', "{user_id} {0} %s $1 {{braces}}"),
        ("emoji 😀 ünïcödé", "<script>alert(1)</script>"),
        ("u" * 255, "m" * 4000),
    ]
    async with running(settings), client(settings) as c:
        await http_ready(c)
        for user, message in hostile:
            body = {"user_id": user, "message": message, "scheduled_at": at}
            r = await c.post("/admin/followups", json=body, headers=AUTH)
            assert r.status_code == 201, (user[:20], r.text)
            got = await c.get(f"/admin/followups/{r.json()['id']}", headers=AUTH)
            assert got.json()["user_id"] == user
            assert got.json()["trigger_data"]["custom_message"] == message
            listed = await c.get("/admin/followups", params={"user_id": user}, headers=AUTH)
            assert [f["user_id"] for f in listed.json()] == [user]
        # Bytes that are not UTF-8 are refused by the JSON layer, cleanly (400:
        # the body is not JSON at all, so no field can be named).
        raw = b'{"user_id": "\xff\xfe", "message": "m", "scheduled_at": "' + at.encode() + b'"}'
        r = await c.post(
            "/admin/followups",
            content=raw,
            headers={**AUTH, "content-type": "application/json"},
        )
        assert r.status_code == 400
    count = await query(settings, "SELECT count(*) AS n FROM scheduled_followups")
    assert count[0]["n"] == len(hostile)


async def test_health_metrics_and_encryption_while_events_flow(settings: Settings) -> None:
    key = new_key()
    settings = with_http(settings, followup_encryption_key=SecretStr(key))
    now = datetime.now(UTC)
    user, booking = new_id("user"), new_id("bk")
    # Due in about two seconds: event_date + 24 h.
    event = confirmed(user, booking, now - timedelta(hours=24) + timedelta(seconds=2), now)
    await create_topics(settings)
    async with running(settings) as service, client(settings) as c:
        await http_ready(c)
        health = await wait_until(
            lambda: c.get("/health"),
            lambda r: r.status_code == 200 and r.json()["consumer"]["assigned_partitions"],
        )
        h = health.json()
        assert h["status"] == "healthy"
        assert h["scheduler_running"] is True
        assert h["apscheduler_jobs"] == 2
        assert h["database"] == {"reachable": True, "error": None}
        assert h["kafka"]["reachable"] is True
        assert {"pending_jobs", "executed_today"} <= h.keys()
        topic = settings.topic_booking_confirmed
        before = (await c.get("/metrics")).text
        assert metric(before, "followup_events_consumed_total", topic=topic) == 0

        await produce_events(settings, [event])
        await wait_consumed(settings, 1, service=service)
        await wait_until(
            lambda: query(settings, "SELECT 1 FROM scheduled_followups WHERE status='executed'"),
            lambda rows: len(rows) == 1,
        )
        executed = {"trigger_type": "post_event", "template": "post_event_neutral_emotion"}
        after = (
            await wait_until(
                lambda: c.get("/metrics"),
                lambda r: metric(r.text, "followups_executed_total", **executed) == 1,
            )
        ).text
        health_after = (await c.get("/health")).json()
    assert metric(after, "followup_events_consumed_total", topic=topic) == 1
    assert metric(after, "followups_scheduled_total", trigger_type="post_event") == 1
    assert metric(after, "followups_scheduled_total", trigger_type="re_engagement") == 1
    assert (
        metric(
            after,
            "followups_executed_total",
            trigger_type="post_event",
            template="post_event_neutral_emotion",
        )
        == 1
    )
    assert metric(after, "followup_firing_latency_seconds_count") == 1
    assert metric(after, "followup_ingest_batch_seconds_count") >= 1
    assert health_after["executed_today"] == 1
    # Stored sealed, readable through the API's operations.
    [row] = await query(
        settings, "SELECT id, message_content FROM scheduled_followups WHERE status='executed'"
    )
    assert row["message_content"].startswith("fernet:")
    assert "event on" not in row["message_content"]
    assert MessageCipher(key).open(row["message_content"]).startswith("Hello!")


async def test_hostile_input_gets_a_clear_4xx_on_every_admin_route(settings: Settings) -> None:
    """The cases the generated tests (test_http_fuzz.py) found, kept as examples."""
    engine = create_engine(settings.database_url)
    await migrate(engine)
    ops = Operations(
        PostgresStore(engine, "g"), Policy(), MessageCipher(None), lambda: datetime.now(UTC)
    )

    async def health() -> HealthReport:
        return HealthReport("g", None, None, {"pending_jobs": 0, "executed_today": 0})

    app = create_app(HttpContext(ops, Metrics(), health, admin_token=TOKEN))
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    json_type = {**AUTH, "content-type": "application/json"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://app"
        ) as c:
            # NUL in a path or query id reaches no query: 422 naming the parameter.
            for method, url, name in (
                ("GET", "/admin/followups/a%00b", "followup_id"),
                ("POST", "/admin/followups/a%00b/cancel", "followup_id"),
                ("DELETE", "/admin/users/a%00b", "user_id"),
                ("GET", "/admin/followups?user_id=a%00b", "user_id"),
            ):
                r = await c.request(method, url, headers=AUTH)
                assert r.status_code == 422, (url, r.text)
                assert r.json()["detail"][0]["loc"][-1] == name
            # A lone surrogate, as a JSON escape or as raw (CESU) bytes: 422 that
            # shows it escaped (the answer used to be a 500: it could not be encoded).
            for raw in (b'"u\\ud800"', b'"u\xed\xa0\x80"'):
                body = b'{"user_id": %s, "message": "m", "scheduled_at": "%s"}' % (
                    raw,
                    at.encode(),
                )
                r = await c.post("/admin/followups", content=body, headers=json_type)
                assert r.status_code == 422, r.text
                [error] = r.json()["detail"]
                assert error["loc"] == ["body", "user_id"]
                assert "surrogate" in error["msg"]
                assert error["input"] == "u\\ud800"
            # NaN/Infinity (Python's JSON reads them), bytes that are not text, a
            # body of the wrong type: 422; JSON that is not UTF-8 at all: 400.
            for content, headers in (
                (
                    b'{"user_id": Infinity, "message": "m", "scheduled_at": "%s"}' % at.encode(),
                    json_type,
                ),
                (
                    b'{"user_id": "u", "message": NaN, "scheduled_at": "%s"}' % at.encode(),
                    json_type,
                ),
                (b"\x80", {**AUTH, "content-type": "text/plain"}),
                (b"[1, 2]", json_type),
                (b"{", json_type),
            ):
                r = await c.post("/admin/followups", content=content, headers=headers)
                assert r.status_code == 422, (content, r.text)
            r = await c.post("/admin/followups", content=b'{"user_id": "\xff"}', headers=json_type)
            assert r.status_code == 400
            # Instants outside 2000..2100, or with no UTC equivalent at all.
            for when in ("9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+01:00"):
                body_json = {"user_id": "u", "message": "m", "scheduled_at": when}
                r = await c.post("/admin/followups", json=body_json, headers=AUTH)
                assert r.status_code == 422, r.text
                assert r.json()["detail"][0]["loc"] == ["body", "scheduled_at"]
            # Bodies are bounded, with or without a content-length.
            r = await c.post("/admin/followups", content=b"x" * 70_000, headers=json_type)
            assert r.status_code == 413

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(70):
                    yield b"x" * 1000

            r = await c.post("/admin/followups", content=chunks(), headers=json_type)
            assert r.status_code == 413
            # Any bytes in the Authorization header: 401, not 500.
            for value in (b"Bearer \xff\xfe", b"Bearer " + TOKEN.encode() + b"\xc3", b"\xff"):
                r = await c.get("/admin/followups", headers=[(b"Authorization", value)])
                assert r.status_code == 401, value
    finally:
        await engine.dispose()
