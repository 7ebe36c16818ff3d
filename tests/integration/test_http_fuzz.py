"""Schemathesis against the service's own OpenAPI schema, served by uvicorn with a
real PostgreSQL behind it: generated requests (valid and schema-violating
bodies, paths, queries, headers) to every route, with the admin token. No
answer may be a 5xx, and every answer must match the schema (status code,
content type, headers, body).

The server runs in a thread with its own event loop because Schemathesis'
pytest integration is synchronous; the example count per route is bounded
(`EXAMPLES`) so the whole file stays within a few tens of seconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from consumer.adapters.crypto import MessageCipher
from consumer.adapters.metrics import Metrics
from consumer.adapters.postgres.store import PostgresStore, create_engine, migrate
from consumer.domain.policy import Policy
from consumer.domain.template_text import TemplateId
from consumer.entrypoints.http_api import HttpContext, create_app, make_server
from consumer.service.health import HealthReport
from consumer.service.operations import Operations
from tests.integration.conftest import Services

pytestmark = pytest.mark.integration

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 60  # per route and generation mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _health() -> HealthReport:
    return HealthReport("fuzz", None, None, {"pending_jobs": 0, "executed_today": 0})


async def _serve(
    services: Services, port: int, ready: threading.Event, stop: threading.Event
) -> None:
    """A fresh database, the HTTP app on it, until `stop`; then everything dropped."""
    admin_dsn = services.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    engine = create_engine(f"{services.database_url.rpartition('/')[0]}/{name}")
    try:
        await migrate(engine)
        ops = Operations(
            PostgresStore(engine, "fuzz"), Policy(), MessageCipher(None), lambda: datetime.now(UTC)
        )
        server = make_server(
            create_app(HttpContext(ops, Metrics(), _health, TOKEN)), "127.0.0.1", port
        )
        serving = asyncio.create_task(server.serve())
        for _ in range(1000):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.02)
        ready.set()
        await asyncio.to_thread(stop.wait)
        server.should_exit = True
        await serving
    finally:
        ready.set()
        await engine.dispose()
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="module")
def base_url(services: Services) -> Iterator[str]:
    port = _free_port()
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(_serve(services, port, ready, stop)), name="fuzzed-http"
    )
    thread.start()
    try:
        assert ready.wait(30), "the HTTP server did not start"
        assert thread.is_alive(), "the HTTP server stopped at once"
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(30)


@pytest.fixture(scope="module")
def existing_ids(base_url: str) -> list[str]:
    """Pending follow-ups, so that generated requests also reach the 200 and 409
    answers of the routes that take an id (random ids only ever find 404)."""
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    ids = []
    for n in range(5):
        r = httpx.post(
            f"{base_url}/admin/followups",
            json={"user_id": f"seed-{n}", "message": "hello", "scheduled_at": at},
            headers=AUTH,
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


@pytest.fixture(scope="module")
def api_schema(base_url: str) -> Any:
    # The schema the service itself serves, not a copy.
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    schema.config.update(base_url=base_url, headers=AUTH)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
    )
    return schema


def _cases() -> list[Any]:
    """(method, path, mode) for every route the app declares, with no server or
    database needed; negative mode only where there is an input to break."""
    app = create_app(HttpContext(cast(Any, None), Metrics(), _health, TOKEN))
    out = []
    for path, item in app.openapi()["paths"].items():
        for method, spec in item.items():
            modes = [GenerationMode.POSITIVE]
            if spec.get("parameters") or spec.get("requestBody"):
                modes.append(GenerationMode.NEGATIVE)
            out += [
                pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
                for mode in modes
            ]
    return out


@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_no_5xx_and_every_answer_matches_the_schema(
    api_schema: Any, existing_ids: list[str], method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        existing=st.none() | st.sampled_from(existing_ids),
        template=st.none() | st.sampled_from([t.value for t in TemplateId]),
    )
    def one(case: Case[Any], existing: str | None, template: str | None) -> None:
        if existing and mode is GenerationMode.POSITIVE and "followup_id" in path:
            case.path_parameters = {"followup_id": existing}
        # Real template ids too, so that generated bodies reach PUT's and preview's
        # 200 and 422 (random ids only ever find 404).
        if template and mode is GenerationMode.POSITIVE and "template_id" in path:
            case.path_parameters = {"template_id": template}
        statuses[case.call_and_validate(checks=CHECKS).status_code] += 1

    one()
    print(f"{method} {path} {mode.value}: {sum(statuses.values())} requests, {dict(statuses)}")
    if mode is GenerationMode.POSITIVE:
        # The token was sent: valid requests got past the authentication.
        assert set(statuses) - {401}, statuses


# --- what Schemathesis does not generate: bytes that are not what they claim ------------
# (its JSON is always valid UTF-8 without lone surrogates, its URLs and headers tidy)

surrogate_text = st.characters(categories=["Cs"]).map(lambda c: f"a{c}b")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and Infinity: Python's JSON writes them, FastAPI's reads them
    | st.text(max_size=20)
    | surrogate_text,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | surrogate_text, inner, max_size=4)
    ),
    max_leaves=10,
)
BODY_FIELDS = ("user_id", "conversation_id", "message", "scheduled_at")


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A follow-up body with hostile fields, or not JSON at all."""
    kind = draw(st.sampled_from(["fields", "any json", "bytes", "nested"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "nested":
        return draw(st.sampled_from([b"[", b'{"a":'])) * draw(st.integers(1, 20_000))
    if kind == "any json":
        value: Any = draw(json_values)
    else:
        value = {
            "user_id": "u",
            "message": "m",
            "scheduled_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        }
        for name in draw(st.lists(st.sampled_from(BODY_FIELDS), min_size=1, max_size=4)):
            value[name] = draw(json_values)
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


# Any byte, percent-encoded: NUL, bytes that are not UTF-8, slashes, dots.
url_bytes = st.binary(min_size=0, max_size=40).map(lambda b: quote(b, safe=""))
# Every byte HTTP allows in a header value (visible ASCII, obs-text 0x80-0xFF,
# inner spaces and tabs); the server's parser answers anything else with 400 itself.
_HEADER_BYTES = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
header_bytes = st.binary(min_size=1, max_size=60).map(
    lambda b: bytes(c for c in b if c in _HEADER_BYTES).strip(b" \t") or b"x"
)


def _assert_clean(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text[:300])
    if r.is_redirect:  # "/admin/followups/" (an empty id) -> "/admin/followups"
        return
    body = r.json()  # always JSON, never a traceback page
    if r.status_code == 422:
        assert all(isinstance(e["loc"], list) and e["msg"] for e in body["detail"]), body


@settings(
    max_examples=EXAMPLES * 2,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_hostile_bytes_in_body_path_query_and_headers_get_a_4xx(
    base_url: str, data: st.DataObject
) -> None:
    where = data.draw(st.sampled_from(["body", "path", "query", "authorization"]))
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=10) as c:
        if where == "body":
            content_type = data.draw(
                st.sampled_from(
                    ["application/json", "text/plain", "application/x-www-form-urlencoded"]
                )
            )
            r = c.post(
                "/admin/followups",
                content=data.draw(bodies()),
                headers={"content-type": content_type},
            )
        elif where == "path":
            template = data.draw(
                st.sampled_from(
                    [
                        ("GET", "/admin/followups/{}"),
                        ("POST", "/admin/followups/{}/cancel"),
                        ("DELETE", "/admin/users/{}"),
                        ("GET", "/admin/templates/{}"),
                        ("PUT", "/admin/templates/{}"),
                        ("POST", "/admin/templates/{}/preview"),
                    ]
                )
            )
            r = c.request(template[0], template[1].format(data.draw(url_bytes)))
        elif where == "query":
            name = data.draw(st.sampled_from(["user_id", "status", "trigger_type", "limit", "x"]))
            r = c.get(f"/admin/followups?{name}={data.draw(url_bytes)}")
        else:
            value = data.draw(header_bytes)
            r = c.get("/admin/followups", headers=[(b"Authorization", b"Bearer " + value)])
            assert r.status_code == 401
    _assert_clean(r)
