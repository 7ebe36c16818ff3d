"""Templates as data on the real broker and database, the services' clocks set by
the test: a template changed through one instance's admin API is used by the
next firing of another instance that kept running; a French user (locale on
booking.confirmed) gets the French text with a French date, and followup.due
and the row say which locale and version; the admin API's answers (versions,
422 naming the placeholder, 404, bad locale); the CLI."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from consumer.adapters.crypto import MessageCipher
from consumer.adapters.metrics import Metrics
from consumer.adapters.postgres.store import PostgresStore, create_engine, migrate
from consumer.config import Settings
from consumer.domain.policy import Policy
from consumer.domain.template_seeds import FRENCH
from consumer.domain.template_text import TemplateId
from consumer.entrypoints.http_api import HttpContext, create_app
from consumer.service.health import HealthReport
from consumer.service.operations import Operations
from tests.integration.conftest import REPO
from tests.integration.helpers import (
    CODEC,
    confirmed,
    free_port,
    ms,
    produce_events,
    query,
    read_to_end,
    running,
    service_env,
    wait_until,
    write_custom_followups,
)

pytestmark = pytest.mark.integration

TOKEN = "templates-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


class Clock:
    """A service's time, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def status_of(settings: Settings) -> dict[str, str]:
    rows = await query(settings, "SELECT id, status FROM scheduled_followups")
    return {r["id"]: r["status"] for r in rows}


async def published(settings: Settings) -> dict[str, dict[str, Any]]:
    records = await read_to_end(settings, settings.topic_followup_due)
    decoded = [CODEC.decode("followup_due", r.value) for r in records]
    return {str(d["followup_id"]): d for d in decoded}


async def http_ready(c: httpx.AsyncClient) -> None:
    async def probe() -> int:
        try:
            return (await c.get("/metrics")).status_code
        except httpx.TransportError:
            return 0

    await wait_until(probe, lambda code: code == 200)


async def test_a_template_changed_through_the_api_is_used_by_the_next_firing_on_another_instance(
    settings: Settings,
) -> None:
    first, second = await write_custom_followups(
        settings, [("editor-reader", T), ("editor-reader", T + timedelta(hours=1))]
    )
    # Instance A serves the admin API; its clock stands a day back, so it never
    # fires these two. Instance B fires them, and is not restarted in between.
    api = settings.model_copy(update={"http_port": free_port(), "admin_token": SecretStr(TOKEN)})
    clock_a, clock_b = Clock(T - timedelta(days=1)), Clock(T)
    async with (
        running(api, clock_a),
        running(settings, clock_b),
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api.http_port}", headers=AUTH, timeout=10
        ) as c,
    ):
        await http_ready(c)
        await wait_until(lambda: status_of(settings), lambda s: s[first] == "executed")
        r = await c.put(
            "/admin/templates/custom",
            json={"locale": "en", "body": "From the team: {custom_message}"},
        )
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["created"]) == (2, True)
        clock_b.now = T + timedelta(hours=1)
        await wait_until(lambda: status_of(settings), lambda s: s[second] == "executed")
    sent = await published(settings)
    assert (sent[first]["message"], sent[first]["template_version"]) == ("message 0", 1)
    assert (sent[second]["message"], sent[second]["template_version"]) == (
        "From the team: message 1",
        2,
    )
    rows = await query(
        settings,
        "SELECT id, locale, template_version FROM scheduled_followups ORDER BY scheduled_at",
    )
    assert [(r["id"], r["locale"], r["template_version"]) for r in rows] == [
        (first, "en", 1),
        (second, "en", 2),
    ]


async def test_a_french_user_gets_the_french_text_with_a_french_date(settings: Settings) -> None:
    # The event at 23:30 UTC on 24 November: the 25th in Paris.
    event = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)
    due = event + timedelta(hours=24)
    clock = Clock(due)
    booking = confirmed(
        "amelie",
        "bk-fr",
        event,
        ms(event - timedelta(days=7)),
        timezone="Europe/Paris",
        locale="fr",
        fmt="avro",
    )
    async with running(settings, clock):
        await produce_events(settings, [booking])

        async def executed() -> list[dict[str, Any]]:
            return list(
                await query(
                    settings,
                    "SELECT id, status, locale, template_version, message_content "
                    "FROM scheduled_followups WHERE trigger_type = 'post_event'",
                )
            )

        (row,) = await wait_until(
            executed, lambda rows: [r["status"] for r in rows] == ["executed"]
        )
    (record,) = (await published(settings)).values()
    expected = FRENCH[TemplateId.POST_EVENT_NEUTRAL].format(event_date="25 novembre 2026")
    assert record["message"] == expected
    assert (record["template_id"], record["locale"], record["template_version"]) == (
        TemplateId.POST_EVENT_NEUTRAL.value,
        "fr",
        1,
    )
    assert (row["locale"], row["template_version"], row["message_content"]) == ("fr", 1, expected)
    user = await query(settings, "SELECT locale FROM user_projection WHERE user_id = 'amelie'")
    assert [u["locale"] for u in user] == ["fr"]


async def test_the_admin_api_of_templates(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    await migrate(engine)
    now = [T]
    ops = Operations(PostgresStore(engine, "g"), Policy(), MessageCipher(None), lambda: now[0])

    async def health() -> HealthReport:
        return HealthReport("g", None, None, {"pending_jobs": 0, "executed_today": 0})

    app = create_app(HttpContext(ops, Metrics(), health, TOKEN))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://app", headers=AUTH
        ) as c:
            assert (
                await c.get("/admin/templates", headers={"Authorization": ""})
            ).status_code == 401
            listed = (await c.get("/admin/templates")).json()
            assert {(t["template_id"], t["locale"], t["version"]) for t in listed} == {
                (t.value, loc, 1) for t in TemplateId for loc in ("en", "fr")
            }

            r = await c.put(
                "/admin/templates/reengagement_general",
                json={"locale": "fr", "body": "Bonjour {first_name}, {days_inactive} jours !"},
            )
            assert r.status_code == 422
            [error] = r.json()["detail"]
            assert error["loc"] == ["body", "body"]
            assert "unknown placeholder {first_name}" in error["msg"]
            r = await c.put(
                "/admin/templates/reengagement_general",
                json={"locale": "fr", "body": "Bonjour {days_inactive jours"},
            )
            assert r.status_code == 422
            assert "broken braces" in r.json()["detail"][0]["msg"]
            r = await c.put(
                "/admin/templates/reengagement_general", json={"locale": "fr_FR", "body": "x"}
            )
            assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["body", "locale"])
            for method, path in (
                ("GET", "/admin/templates/welcome"),
                ("PUT", "/admin/templates/welcome"),
                ("POST", "/admin/templates/welcome/preview"),
            ):
                body = {"locale": "en", "body": "Hi"} if method == "PUT" else {}
                r = await c.request(method, path, json=body)
                assert r.status_code == 404, (method, r.text)
                assert "no template 'welcome'" in r.json()["detail"]

            text = "Bonjour ! Cela fait {days_inactive} jours : on vous attend."
            r = await c.put(
                "/admin/templates/reengagement_general", json={"locale": "FR", "body": text}
            )
            assert r.status_code == 200
            assert {k: r.json()[k] for k in ("locale", "version", "created")} == {
                "locale": "fr",
                "version": 2,
                "created": True,
            }
            again = await c.put(
                "/admin/templates/reengagement_general", json={"locale": "fr", "body": text}
            )
            assert (again.json()["version"], again.json()["created"]) == (2, False)
            versions = (await c.get("/admin/templates/reengagement_general")).json()
            assert [(v["locale"], v["version"]) for v in versions["versions"]] == [
                ("en", 1),
                ("fr", 2),
                ("fr", 1),
            ]
            assert versions["versions"][1]["body"] == text
            assert versions["versions"][1]["created_at"] == T.isoformat()

            preview = await c.post(
                "/admin/templates/reengagement_general/preview",
                json={"locale": "fr-CA", "variables": {"days_inactive": 45}},
            )
            assert preview.status_code == 200
            assert preview.json() == {
                "template_id": "reengagement_general",
                "locale": "fr",
                "version": 2,
                "body": text,
                "message": "Bonjour ! Cela fait 45 jours : on vous attend.",
            }
            tried = await c.post(
                "/admin/templates/post_event_high_emotion/preview",
                json={
                    "locale": "fr",
                    "body": "Le {event_date}, réservation {booking_id}.",
                    "variables": {"event_date": "2026-12-31", "booking_id": "bk-9"},
                },
            )
            assert tried.json()["message"] == "Le 31 décembre 2026, réservation bk-9."
            assert tried.json()["version"] is None
            bad = await c.post("/admin/templates/custom/preview", json={"variables": {"name": "x"}})
            assert bad.status_code == 422
    finally:
        await engine.dispose()


async def cli(settings: Settings, *argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        *argv,
        cwd=REPO,
        env=service_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_templates_commands(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    code, out, err = await cli(settings, "templates", "list")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split() == ["template", "locale", "version", "created_at", "text"]
    assert len(out.splitlines()) == 1 + 2 * len(TemplateId)

    code, out, err = await cli(
        settings, "templates", "set", "custom", "--locale", "fr", "--body", "Hi {name}"
    )
    assert code == 2
    assert "unknown placeholder {name}" in err
    code, out, err = await cli(
        settings, "templates", "set", "welcome", "--locale", "fr", "--body", "Hi"
    )
    assert (code, out) == (1, "")
    assert err.startswith("followup-consumer: no template 'welcome'")
    code, out, err = await cli(
        settings, "templates", "set", "custom", "--locale", "fr-ca", "--body",
        "Message : {custom_message}",
    )  # fmt: skip
    assert (code, out, err) == (0, "custom fr-CA: version 1 is current\n", "")

    code, out, _ = await cli(settings, "templates", "show", "custom", "--json")
    assert code == 0
    assert [(v["locale"], v["version"]) for v in json.loads(out)] == [
        ("en", 1),
        ("fr", 1),
        ("fr-CA", 1),
    ]
    code, out, _ = await cli(
        settings, "templates", "preview", "custom", "--locale", "fr-CA",
        "--custom-message", "À samedi", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["message"] == "Message : À samedi"
    code, out, _ = await cli(settings, "templates", "show", "nope")
    assert code == 1
