"""HTTP beside the consumer: health, Prometheus metrics, the admin API.

FastAPI (validation errors are 422 naming the field) served by uvicorn in the
consumer's own event loop. Admin endpoints need `Authorization: Bearer
<ADMIN_TOKEN>`; with no token configured they are disabled (404), never open.

Every input goes through `consumer.domain.limits`: path and query ids, body
fields, the bearer token. Whatever a client sends, the answer is a 4xx JSON
body or a success, never a 5xx or a traceback: the 422 body escapes what it
echoes (a lone surrogate could not be encoded), bodies are bounded (413), and
an unexpected error is a bare JSON 500 with the traceback in the log only.
The OpenAPI schema declares every status each route answers with;
tests/integration/test_http_fuzz.py holds the service to it (Schemathesis).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Final, Literal, TypeVar

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumer.adapters.metrics import Metrics
from consumer.domain.limits import (
    ID_MAX_CHARS,
    LIST_LIMIT_MAX,
    LOCALE_MAX_CHARS,
    MESSAGE_MAX_CHARS,
    bounded_text_problem,
    credential_problem,
    identifier_problem,
    locale_problem,
    message_problem,
    timestamp_problem,
)
from consumer.domain.model import Status, TriggerType
from consumer.domain.template_text import TEMPLATE_MAX_CHARS, body_problem
from consumer.service.health import HealthReport, Probe
from consumer.service.operations import CancelResult, LimitReached, Operations, TooLate
from consumer.service.template_operations import BadTemplate, UnknownTemplate

log = logging.getLogger(__name__)

# The largest admin request body: a message of MESSAGE_MAX_CHARS four-byte
# characters, two ids and JSON's escapes fit several times over.
BODY_MAX_BYTES: Final = 64 * 1024
# How much of an offending value a 422 answer echoes.
_ECHO_MAX_CHARS: Final = 100

_V = TypeVar("_V")


def _rule(problem: Callable[[_V], str | None]) -> AfterValidator:
    """A pydantic validator from one of the shared input rules."""

    def check(value: _V) -> _V:
        reason = problem(value)
        if reason is not None:
            raise ValueError(reason)
        return value

    return AfterValidator(check)


def _text(max_chars: int, *, min_chars: int = 1) -> Any:
    # Documents the length bounds in the OpenAPI schema; the rule itself (with
    # its own messages) is the AfterValidator.
    return Field(json_schema_extra={"minLength": min_chars, "maxLength": max_chars})


# Module level: FastAPI resolves annotations by name (postponed evaluation).
Identifier = Annotated[str, _rule(identifier_problem), _text(ID_MAX_CHARS)]
OptionalId = Annotated[
    str,
    _rule(lambda v: bounded_text_problem(v, ID_MAX_CHARS, required=False)),
    _text(ID_MAX_CHARS, min_chars=0),
]
MessageText = Annotated[str, _rule(message_problem), _text(MESSAGE_MAX_CHARS)]
Instant = Annotated[AwareDatetime, _rule(timestamp_problem)]
# `Authorization: Bearer <token>`, declared as the schema's security scheme.
Credentials = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(
        HTTPBearer(
            auto_error=False, scheme_name="adminToken", description="ADMIN_TOKEN of the service"
        )
    ),
]
PathId = Annotated[
    str,
    _rule(identifier_problem),
    Path(json_schema_extra={"minLength": 1, "maxLength": ID_MAX_CHARS}),
]
# Any text: an id that is no template's is a 404, like an unknown follow-up.
TemplatePathId = Annotated[str, Path(json_schema_extra={"minLength": 1, "maxLength": 64})]
LocaleTag = Annotated[
    str,
    _rule(locale_problem),
    Field(
        description="BCP 47 (en, fr, fr-CA)",
        json_schema_extra={
            "minLength": 2,
            "maxLength": LOCALE_MAX_CHARS,
            "pattern": r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?"
            r"(-([A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*$",
        },
    ),
]
TemplateBody = Annotated[
    str,
    _rule(body_problem),
    Field(
        description="text with {event_date}, {booking_id}, {days_inactive}, {custom_message}",
        json_schema_extra={"minLength": 1, "maxLength": TEMPLATE_MAX_CHARS},
    ),
]


async def _always_live() -> Probe:
    return Probe(True)


@dataclass(frozen=True)
class HttpContext:
    operations: Operations
    metrics: Metrics
    health: Callable[[], Awaitable[HealthReport]]
    admin_token: str | None
    # Kubernetes' probes: the loops alive (liveness), able to work now (readiness).
    live: Callable[[], Awaitable[Probe]] = _always_live
    ready: Callable[[], Awaitable[Probe]] | None = None  # None: healthy means ready


class CustomFollowupIn(BaseModel):
    user_id: Identifier
    conversation_id: OptionalId = ""
    message: MessageText
    scheduled_at: Instant
    # Send at scheduled_at even inside the user's QUIET_HOURS (the daily cap applies).
    ignore_quiet_hours: bool = False


class TemplateIn(BaseModel):
    locale: LocaleTag
    body: TemplateBody


class PreviewVariablesIn(BaseModel):
    """Variables of a preview; those left out take sample values."""

    model_config = {"extra": "forbid"}

    event_date: date | None = None
    booking_id: OptionalId | None = None
    days_inactive: Annotated[int, Field(ge=0, le=100_000)] | None = None
    custom_message: Annotated[str, _rule(message_problem), _text(MESSAGE_MAX_CHARS)] | None = None


class PreviewIn(BaseModel):
    locale: LocaleTag | None = Field(None, description="default: DEFAULT_LOCALE")
    body: TemplateBody | None = Field(None, description="try this text instead of the stored one")
    variables: PreviewVariablesIn = Field(default_factory=PreviewVariablesIn)


# --- answers, as the OpenAPI schema declares them ------------------------------------

DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class FollowupOut(BaseModel):
    id: str
    user_id: str
    conversation_id: str
    trigger_type: TriggerType
    status: Status
    scheduled_at: DateTime
    executed_at: DateTime | None
    cancelled_at: DateTime | None
    created_at: DateTime
    template_id: str | None
    message_content: str | None
    error_message: str | None
    retry_count: int
    trigger_data: dict[str, Any]
    sends_at: DateTime | None = Field(
        None, description="pending: when it will go out (later than scheduled_at when held)"
    )
    held_reason: Literal["quiet_hours", "daily_cap"] | None = Field(
        None, description="pending and held: why it waits past scheduled_at"
    )


class CancelledOut(BaseModel):
    id: str
    status: Literal["cancelled"]


class ErasedOut(BaseModel):
    user_id: str
    deleted: dict[str, int] = Field(description="rows deleted, by table")


class TemplateOut(BaseModel):
    template_id: str
    locale: str
    version: int
    body: str
    created_at: DateTime | None


class TemplateVersionsOut(BaseModel):
    template_id: str
    versions: list[TemplateOut] = Field(description="by locale, newest first")


class TemplatePutOut(TemplateOut):
    created: bool = Field(description="false: the current version had this body already")


class PreviewOut(BaseModel):
    template_id: str
    locale: str = Field(description="of the text rendered (the fallback chain's pick)")
    version: int | None = Field(description="null: the body given, not a stored version")
    body: str
    message: str


class ErrorOut(BaseModel):
    detail: str


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description, **extra}


_UNAUTHORIZED = _error(
    "No valid bearer token",
    headers={"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
)
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _UNAUTHORIZED,
    404: _error("Admin endpoints disabled (no ADMIN_TOKEN), or no such follow-up"),
}
_OBJECT = {"application/json": {"schema": {"type": "object"}}}


# --- never a traceback, never an unencodable answer ----------------------------------


def _echo(value: Any) -> Any:
    """`value` as a 422 answer may show it: short, and always encodable."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # JSON has no NaN
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        text = value
    elif isinstance(value, BaseException):
        text = str(value)  # a validator's own words
    else:
        text = repr(value)
    if len(text) > _ECHO_MAX_CHARS:
        text = text[:_ECHO_MAX_CHARS] + "…"
    # Lone surrogates (a JSON "\ud800") become the visible escape "\ud800".
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for error in exc.errors():
        item: dict[str, Any] = {
            "type": _echo(str(error.get("type", "value_error"))),
            "loc": [part if isinstance(part, int) else _echo(str(part)) for part in error["loc"]],
            "msg": _echo(str(error.get("msg", ""))),
        }
        given = error.get("input")
        # The whole body or a whole object says nothing a client does not know.
        if not isinstance(given, dict | list | tuple | bytes):
            item["input"] = _echo(given)
        ctx = error.get("ctx")
        if isinstance(ctx, dict):
            item["ctx"] = {str(k): _echo(v) for k, v in ctx.items()}
        out.append(item)
    return out


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _validation_errors(exc)}, status_code=422)


async def _on_unexpected_error(request: Request, exc: Exception) -> Response:
    # The last resort; the fuzz tests expect never to get here. Starlette logs the
    # traceback (server side) after this answer; the client gets no detail.
    return JSONResponse({"detail": "internal error"}, status_code=500)


class _TooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413, f"request body larger than {BODY_MAX_BYTES} bytes")


class BodyLimit:
    """Refuses request bodies over `BODY_MAX_BYTES` (413) before they are buffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > BODY_MAX_BYTES:
            exc = _TooLarge()
            await JSONResponse({"detail": exc.detail}, 413)(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > BODY_MAX_BYTES:  # chunked: no content-length to check first
                raise _TooLarge()
            return message

        await self.app(scope, bounded, send)


def create_app(ctx: HttpContext) -> FastAPI:
    app = FastAPI(title="follow-up consumer", docs_url=None, redoc_url=None)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected_error)
    app.add_middleware(BodyLimit)
    _probe_routes(app, ctx)
    admin = Depends(_admin_guard(ctx))
    _reading_routes(app, ctx, admin)
    _writing_routes(app, ctx, admin)
    _template_routes(app, ctx, admin)
    return app


def _admin_guard(ctx: HttpContext) -> Callable[[Credentials], None]:
    """The admin endpoints' dependency: 404 when disabled, 401 without the token."""

    def admin(credentials: Credentials) -> None:
        if not ctx.admin_token:
            raise HTTPException(404, "admin endpoints are disabled (ADMIN_TOKEN is not set)")
        given = credentials.credentials if credentials is not None else ""
        if credential_problem(given) is not None or not hmac.compare_digest(
            given.encode(), ctx.admin_token.encode()
        ):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    return admin


def _probe_routes(app: FastAPI, ctx: HttpContext) -> None:
    @app.get(
        "/health",
        responses={
            200: {"description": "Healthy", "content": _OBJECT},
            503: {"description": "Unhealthy (the body says why)", "content": _OBJECT},
        },
    )
    async def health() -> JSONResponse:
        report = await ctx.health()
        return JSONResponse(report.as_json(), status_code=200 if report.healthy else 503)

    probe_answers: dict[int | str, dict[str, Any]] = {
        200: {"description": "Yes", "content": _OBJECT},
        503: {"description": "No (the body says why)", "content": _OBJECT},
    }

    @app.get("/health/live", responses=probe_answers)
    async def live() -> JSONResponse:
        """Liveness: the ingest and dispatch loops are running (restart when not)."""
        return _probe(await ctx.live())

    @app.get("/health/ready", responses=probe_answers)
    async def ready() -> JSONResponse:
        """Readiness: the database answers and the consumer ingests (a degraded
        dispatcher is not a reason to take the pod out, nor to restart it)."""
        if ctx.ready is not None:
            return _probe(await ctx.ready())
        report = await ctx.health()
        return _probe(Probe(report.healthy, {"health": report.status}))

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _probe(probe: Probe) -> JSONResponse:
    return JSONResponse(probe.as_json(), status_code=200 if probe.ok else 503)


def _reading_routes(app: FastAPI, ctx: HttpContext, Admin: Any) -> None:
    @app.get("/admin/followups", dependencies=[Admin], responses=_ADMIN_ERRORS)
    async def list_followups(
        user_id: Annotated[Identifier | None, Query()] = None,
        status: Status | None = None,
        trigger_type: TriggerType | None = None,
        limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 100,
    ) -> list[FollowupOut]:
        found = await ctx.operations.list_followups(
            user_id=user_id, status=status, trigger_type=trigger_type, limit=limit
        )
        return [FollowupOut.model_validate(f.as_json()) for f in found]

    @app.get("/admin/followups/{followup_id}", dependencies=[Admin], responses=_ADMIN_ERRORS)
    async def get_followup(followup_id: PathId) -> FollowupOut:
        found = await ctx.operations.get_followup(followup_id)
        if found is None:
            raise HTTPException(404, f"no follow-up {followup_id!r}")
        return FollowupOut.model_validate(found.as_json())


def _writing_routes(app: FastAPI, ctx: HttpContext, Admin: Any) -> None:
    @app.post(
        "/admin/followups/{followup_id}/cancel",
        dependencies=[Admin],
        responses={**_ADMIN_ERRORS, 409: _error("No longer pending")},
    )
    async def cancel_followup(followup_id: PathId) -> CancelledOut:
        result = await ctx.operations.cancel_followup(followup_id)
        if result is CancelResult.NOT_FOUND:
            raise HTTPException(404, f"no follow-up {followup_id!r}")
        if result is CancelResult.NOT_PENDING:
            raise HTTPException(409, f"follow-up {followup_id!r} is no longer pending")
        return CancelledOut(id=followup_id, status="cancelled")

    @app.post(
        "/admin/followups",
        dependencies=[Admin],
        status_code=201,
        responses={
            **_ADMIN_ERRORS,
            400: _error("The body is not text at all (not UTF-8)"),
            409: _error("The user's limit of pending follow-ups is reached"),
            413: _error(f"The body is larger than {BODY_MAX_BYTES} bytes"),
        },
    )
    async def schedule_followup(body: CustomFollowupIn) -> FollowupOut:
        try:
            created = await ctx.operations.schedule_custom(
                user_id=body.user_id,
                conversation_id=body.conversation_id,
                message=body.message,
                at=body.scheduled_at,
                ignore_quiet_hours=body.ignore_quiet_hours,
            )
        except LimitReached as exc:
            raise HTTPException(409, str(exc)) from exc
        except TooLate as exc:
            # Shaped like every other 422: the field, the rule, the value.
            raise RequestValidationError(
                [
                    {
                        "type": "too_late",
                        "loc": ("body", "scheduled_at"),
                        "msg": str(exc),
                        "input": body.scheduled_at,
                    }
                ]
            ) from exc
        return FollowupOut.model_validate(created.as_json())

    @app.delete("/admin/users/{user_id}", dependencies=[Admin], responses=_ADMIN_ERRORS)
    async def erase_user(user_id: PathId) -> ErasedOut:
        return ErasedOut(user_id=user_id, deleted=await ctx.operations.erase_user(user_id))


_TEMPLATE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _UNAUTHORIZED,
    404: _error("Admin endpoints disabled (no ADMIN_TOKEN), or no such template"),
}
_TEMPLATE_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_TEMPLATE_ERRORS,
    400: _error("The body is not text at all (not UTF-8)"),
    413: _error(f"The body is larger than {BODY_MAX_BYTES} bytes"),
}


def _refused(exc: BadTemplate) -> RequestValidationError:
    """The operations' own check, shaped like every other 422."""
    loc = ("body", exc.field)
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": exc.problem}])


def _template_routes(app: FastAPI, ctx: HttpContext, Admin: Any) -> None:
    @app.get("/admin/templates", dependencies=[Admin], responses=_TEMPLATE_ERRORS)
    async def list_templates() -> list[TemplateOut]:
        """The current version of every template in every locale it has."""
        current = await ctx.operations.templates.current()
        return [TemplateOut.model_validate(t.as_json()) for t in current]

    @app.get("/admin/templates/{template_id}", dependencies=[Admin], responses=_TEMPLATE_ERRORS)
    async def get_template(template_id: TemplatePathId) -> TemplateVersionsOut:
        """Every version of one template, by locale, newest (current) first."""
        try:
            versions = await ctx.operations.templates.versions(template_id)
        except UnknownTemplate as exc:
            raise HTTPException(404, str(exc)) from exc
        return TemplateVersionsOut(
            template_id=template_id,
            versions=[TemplateOut.model_validate(t.as_json()) for t in versions],
        )

    @app.put(
        "/admin/templates/{template_id}", dependencies=[Admin], responses=_TEMPLATE_WRITE_ERRORS
    )
    async def put_template(template_id: TemplatePathId, body: TemplateIn) -> TemplatePutOut:
        """A new version in the locale, current at once for every instance; the
        previous versions stay on record."""
        try:
            added, created = await ctx.operations.templates.put(template_id, body.locale, body.body)
        except UnknownTemplate as exc:
            raise HTTPException(404, str(exc)) from exc
        except BadTemplate as exc:
            raise _refused(exc) from exc
        log.info(
            "template version added" if created else "template unchanged",
            extra={
                "template_id": added.template_id,
                "locale": added.locale,
                "version": added.version,
            },
        )
        return TemplatePutOut.model_validate({**added.as_json(), "created": created})

    @app.post(
        "/admin/templates/{template_id}/preview",
        dependencies=[Admin],
        responses=_TEMPLATE_WRITE_ERRORS,
    )
    async def preview_template(template_id: TemplatePathId, body: PreviewIn) -> PreviewOut:
        """The message a user in `locale` would get from the current version (or from
        `body`), with the variables given and sample values for the others."""
        v = body.variables
        try:
            shown = await ctx.operations.templates.preview(
                template_id,
                locale=body.locale,
                body=body.body,
                event_date=v.event_date,
                booking_id=v.booking_id,
                days_inactive=v.days_inactive,
                custom_message=v.custom_message,
            )
        except UnknownTemplate as exc:
            raise HTTPException(404, str(exc)) from exc
        except BadTemplate as exc:
            raise _refused(exc) from exc
        return PreviewOut(
            template_id=shown.template_id,
            locale=shown.locale,
            version=shown.version,
            body=shown.body,
            message=shown.message,
        )


class _Server(uvicorn.Server):
    """uvicorn inside our loop: the service owns SIGTERM/SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off")
    return _Server(config)
