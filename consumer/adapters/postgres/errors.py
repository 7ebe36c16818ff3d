"""The one reader of PostgreSQL error codes: database failures become the
service's port errors (Unavailable, Conflict, ValueRefused)."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from consumer.service.ports import Conflict, Unavailable, ValueRefused

P = ParamSpec("P")
T = TypeVar("T")

INSUFFICIENT_PRIVILEGE = "42501"
UNDEFINED_TABLE = "42P01"
INVALID_CATALOG_NAME = "3D000"  # the database named in DATABASE_URL does not exist
# Deadlock and serialization failures: the transaction is simply run again.
_CONFLICTS = frozenset({"40P01", "40001"})
# Data exceptions (22) and integrity violations (23): a value, not the database, is at fault.
_VALUE_CLASSES = ("22", "23")
# Connection exceptions (08), operator intervention such as a shutdown (57),
# insufficient resources (53), a login refused (28: fixed by an operator, not by
# the input), no such database (3D).
_OUTAGE_CLASSES = ("08", "57", "53", "28", "3D")


def sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


def translate(exc: BaseException) -> BaseException:
    """The port error for a database failure, or `exc` itself (a bug, say)."""
    if isinstance(exc, DBAPIError):
        code = sqlstate(exc)
        if code in _CONFLICTS:
            return Conflict(f"{code}: {exc.orig}")
        if code.startswith(_VALUE_CLASSES):
            return ValueRefused(str(exc.orig))
        if (
            code == UNDEFINED_TABLE  # waits for `followup-consumer migrate`
            or exc.connection_invalidated
            or isinstance(exc, OperationalError | InterfaceError)
            or code.startswith(_OUTAGE_CLASSES)
        ):
            return Unavailable(describe(exc), resource="database")
        return exc
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return Unavailable(describe(exc), resource="database")
    return exc


def describe(exc: BaseException) -> str:
    """One line naming what went wrong, for an operator."""
    code = sqlstate(exc)
    if code == UNDEFINED_TABLE:
        return "the schema is missing; run `followup-consumer migrate` first"
    orig = getattr(exc, "orig", None) if isinstance(exc, SQLAlchemyError) else None
    if code.startswith(("28", "3D")) and orig is not None:
        return str(orig)  # 'database "x" does not exist', 'password authentication failed...'
    cause = orig.__cause__ if orig is not None and orig.__cause__ is not None else orig
    return _plain(cause if isinstance(cause, OSError | TimeoutError) else orig or exc)


def _plain(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    name, text = type(exc).__name__, str(exc)
    return name if not text else (text if text.startswith(name) else f"{name}: {text}")


@contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        port_error = translate(exc)
        if port_error is exc:
            raise
        raise port_error from exc


def translating(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate a coroutine so that it raises port errors."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with translated():
            return await method(*args, **kwargs)

    return wrapper
