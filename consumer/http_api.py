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
from pydantic import AwareDatetime, BaseModel, Field, field_validator

from consumer.admin import MESSAGE_MAX_CHARS, CancelResult, LimitReached, Operations
from consumer.metrics import Metrics
from consumer.model import Status, TriggerType

ID_MAX_CHARS = 255
# Module level: FastAPI resolves annotations by name (postponed evaluation).
PathId = Annotated[str, Path(min_length=1, max_length=ID_MAX_CHARS)]


@dataclass(frozen=True)
class HttpContext:
    operations: Operations
    metrics: Metrics
    health: Callable[[], Awaitable[dict[str, Any]]]
    admin_token: str | None


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class CustomFollowupIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=ID_MAX_CHARS)
    conversation_id: str = Field(default="", max_length=300)
    message: str = Field(min_length=1, max_length=MESSAGE_MAX_CHARS)
    scheduled_at: AwareDatetime

    @field_validator("user_id", "conversation_id", "message")
    @classmethod
    def _text(cls, value: str) -> str:
        return _no_nul(value)


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
        return JSONResponse(report, status_code=200 if report["status"] == "healthy" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/followups", dependencies=[Admin])
    async def list_followups(
        user_id: Annotated[str | None, Query(max_length=ID_MAX_CHARS)] = None,
        status: Status | None = None,
        trigger_type: TriggerType | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
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
