"""HTTP beside the consumer: health, Prometheus metrics, the admin API.

FastAPI (validation errors are 422 naming the field) served by uvicorn in the
consumer's own event loop. Admin endpoints need `Authorization: Bearer
<ADMIN_TOKEN>`; with no token configured they are disabled (404), never open.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AfterValidator, AwareDatetime, BaseModel

from consumer.adapters.metrics import Metrics
from consumer.domain.limits import (
    ID_MAX_CHARS,
    LIST_LIMIT_MAX,
    bounded_text_problem,
    identifier_problem,
    message_problem,
)
from consumer.domain.model import Status, TriggerType
from consumer.service.health import HealthReport
from consumer.service.operations import CancelResult, LimitReached, Operations


def _rule(problem: Callable[[str], str | None]) -> AfterValidator:
    """A pydantic validator from one of the shared input rules."""

    def check(value: str) -> str:
        reason = problem(value)
        if reason is not None:
            raise ValueError(reason)
        return value

    return AfterValidator(check)


# Module level: FastAPI resolves annotations by name (postponed evaluation).
Identifier = Annotated[str, _rule(identifier_problem)]
OptionalId = Annotated[str, _rule(lambda v: bounded_text_problem(v, ID_MAX_CHARS, required=False))]
Message = Annotated[str, _rule(message_problem)]
PathId = Annotated[Identifier, Path()]


@dataclass(frozen=True)
class HttpContext:
    operations: Operations
    metrics: Metrics
    health: Callable[[], Awaitable[HealthReport]]
    admin_token: str | None


class CustomFollowupIn(BaseModel):
    user_id: Identifier
    conversation_id: OptionalId = ""
    message: Message
    scheduled_at: AwareDatetime


def create_app(ctx: HttpContext) -> FastAPI:
    app = FastAPI(title="follow-up consumer", docs_url=None, redoc_url=None)

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if not ctx.admin_token:
            raise HTTPException(404, "admin endpoints are disabled (ADMIN_TOKEN is not set)")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.encode(), ctx.admin_token.encode()
        ):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    Admin = Depends(admin)

    @app.get("/health")
    async def health() -> JSONResponse:
        report = await ctx.health()
        return JSONResponse(report.as_json(), status_code=200 if report.healthy else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/followups", dependencies=[Admin])
    async def list_followups(
        user_id: Annotated[Identifier | None, Query()] = None,
        status: Status | None = None,
        trigger_type: TriggerType | None = None,
        limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 100,
    ) -> list[dict[str, Any]]:
        found = await ctx.operations.list_followups(
            user_id=user_id, status=status, trigger_type=trigger_type, limit=limit
        )
        return [f.as_json() for f in found]

    @app.get("/admin/followups/{followup_id}", dependencies=[Admin])
    async def get_followup(followup_id: PathId) -> dict[str, Any]:
        found = await ctx.operations.get_followup(followup_id)
        if found is None:
            raise HTTPException(404, f"no follow-up {followup_id!r}")
        return found.as_json()

    @app.post("/admin/followups/{followup_id}/cancel", dependencies=[Admin])
    async def cancel_followup(followup_id: PathId) -> dict[str, str]:
        result = await ctx.operations.cancel_followup(followup_id)
        if result is CancelResult.NOT_FOUND:
            raise HTTPException(404, f"no follow-up {followup_id!r}")
        if result is CancelResult.NOT_PENDING:
            raise HTTPException(409, f"follow-up {followup_id!r} is no longer pending")
        return {"id": followup_id, "status": "cancelled"}

    @app.post("/admin/followups", dependencies=[Admin], status_code=201)
    async def schedule_followup(body: CustomFollowupIn) -> dict[str, Any]:
        try:
            created = await ctx.operations.schedule_custom(
                user_id=body.user_id,
                conversation_id=body.conversation_id,
                message=body.message,
                at=body.scheduled_at,
            )
        except LimitReached as exc:
            raise HTTPException(409, str(exc)) from exc
        return created.as_json()

    @app.delete("/admin/users/{user_id}", dependencies=[Admin])
    async def erase_user(user_id: PathId) -> dict[str, Any]:
        return {"user_id": user_id, "deleted": await ctx.operations.erase_user(user_id)}

    return app


class _Server(uvicorn.Server):
    """uvicorn inside our loop: the service owns SIGTERM/SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off")
    return _Server(config)
