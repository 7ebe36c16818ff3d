"""The schema registry: Confluent's REST API, spoken by Confluent Schema Registry,
Apicurio Registry (under /apis/ccompat/v7), Karapace, Redpanda and others.

Three parts:

- `RegistryClient`: the HTTP calls (httpx2, async), each with a timeout and a few
  quick retries. What cannot be had now (no connection, a timeout, a 5xx, a
  refusal that is a configuration problem such as 401) raises the port error
  `Unavailable`: the caller waits and tries again, nothing is decided meanwhile.
  Only the registry's own "no such schema" (404 with error code 40403) means a
  schema id is unknown.
- `RegistrySchemas`: writer schemas by id for decoding (the codec's
  `WriterSchemas`), fetched before a batch is decoded and cached per id; an id
  the registry does not know is remembered for a while, then asked again.
- `ConfluentEncoder`: our own `followup.due` schema, registered under its
  subject once (the id cached), for writing the Confluent wire format.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote

import httpx2

from consumer.adapters.codec import (
    MAX_SCHEMA_ID,
    Codec,
    UnknownWriterSchema,
    WriterSchema,
    parse_writer_schema,
)
from consumer.service.ports import Unavailable

log = logging.getLogger(__name__)

__all__ = [
    "ConfluentEncoder",
    "RegistryClient",
    "RegistryRefused",
    "RegistrySchemas",
    "SchemaNotFound",
]

_CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
_SCHEMA_NOT_FOUND: Final = 40403  # Confluent's error code for an unknown schema id


class SchemaNotFound(Exception):
    """The registry says it has no schema with this id."""


class RegistryRefused(Exception):
    """The registry answered and refused what we asked (an incompatible schema, bad
    credentials): no retry will change that; an operator has to."""


class RegistryClient:
    """The few calls of the Confluent schema registry API this service makes."""

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        timeout: float = 5.0,
        attempts: int = 3,
        retry_delay: float = 0.2,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay
        self._http = httpx2.AsyncClient(
            base_url=self.url,
            auth=httpx2.BasicAuth(*auth) if auth else None,
            timeout=timeout,
            headers={"Accept": f"{_CONTENT_TYPE}, application/json"},
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def schema(self, schema_id: int) -> tuple[str, str]:
        """(schema type, schema text) of `schema_id`; the type is AVRO when the
        registry leaves it out (Confluent does, for Avro). Raises SchemaNotFound."""
        response = await self._request("GET", f"/schemas/ids/{schema_id}")
        if response.status_code == 404 and _error_code(response) == _SCHEMA_NOT_FOUND:
            raise SchemaNotFound(f"schema id {schema_id} is not in the schema registry")
        body = self._expect_ok(response, f"schema id {schema_id}")
        text = body.get("schema")
        if not isinstance(text, str):
            raise Unavailable(f"schema registry: no schema text for id {schema_id}: {body!r:.200}")
        return str(body.get("schemaType") or "AVRO").upper(), text

    async def register(self, subject: str, schema_text: str) -> int:
        """The id of `schema_text` under `subject`, registering it if it is new there
        (idempotent). Raises RegistryRefused when the registry will not have it."""
        response = await self._request(
            "POST",
            f"/subjects/{quote(subject, safe='')}/versions",
            json={"schema": schema_text, "schemaType": "AVRO"},
        )
        if 400 <= response.status_code < 500:
            raise RegistryRefused(
                f"schema registry refused the schema of subject {subject!r}: "
                f"{response.status_code} {_message(response)}"
            )
        body = self._expect_ok(response, f"subject {subject!r}")
        schema_id = body.get("id")
        if not isinstance(schema_id, int):
            raise Unavailable(
                f"schema registry: no id in the answer for {subject!r}: {body!r:.200}"
            )
        return schema_id

    async def _request(
        self, method: str, path: str, *, json: Mapping[str, Any] | None = None
    ) -> httpx2.Response:
        """The response, once it is not an outage; after `attempts` tries, Unavailable."""
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))
            try:
                response = await self._http.request(
                    method,
                    path,
                    json=json,
                    headers={"Content-Type": _CONTENT_TYPE} if json is not None else None,
                )
            except httpx2.HTTPError as exc:  # no connection, timeout, broken answer
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code >= 500 or response.status_code == 429:
                problem = f"{response.status_code} {_message(response)}"
                continue
            return response
        raise Unavailable(f"schema registry {self.url}: {method} {path}: {problem}")

    def _expect_ok(self, response: httpx2.Response, what: str) -> dict[str, Any]:
        """The JSON object of a 200; anything else is the registry's or our setup's
        problem (401, 403, a wrong URL), not the value's: wait for it to be fixed."""
        if response.status_code != 200:
            raise Unavailable(
                f"schema registry {self.url} answered {response.status_code} for {what}: "
                f"{_message(response)} (is SCHEMA_REGISTRY_URL the base URL of the "
                "Confluent-compatible API, and are its credentials right?)"
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise Unavailable(f"schema registry: not a JSON object for {what}")
        return body


def _error_code(response: httpx2.Response) -> object:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error_code") if isinstance(body, dict) else None


def _message(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])[:200]
    return str(body)[:200]


class RegistrySchemas:
    """Writer schemas by Confluent schema id, for the codec (`WriterSchemas`).

    `prefetch` asks the registry for every id not at hand, a few at a time, and
    keeps each answer: a schema forever (an id never changes its schema), an
    unknown id or a schema that is not Avro for `unknown_ttl` seconds (a registry
    restored later may know it). Stale verdicts are dropped only at the start of a
    prefetch, so everything a prefetch gathered is there when the batch decodes.
    `__call__` only reads what was gathered: no I/O.
    """

    def __init__(
        self,
        client: RegistryClient,
        *,
        concurrency: int = 8,
        unknown_ttl: float = 60.0,
        max_unknown: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.concurrency = concurrency
        self.unknown_ttl = unknown_ttl
        self.max_unknown = max_unknown
        self.clock = clock
        self._known: dict[int, WriterSchema] = {}
        self._unknown: dict[int, tuple[float, str]] = {}  # id -> (when, why)
        self.fetches = 0  # requests made (for tests and logs)

    def __call__(self, schema_id: int) -> WriterSchema:
        known = self._known.get(schema_id)
        if known is not None:
            return known
        unknown = self._unknown.get(schema_id)
        if unknown is not None:
            raise UnknownWriterSchema(unknown[1])
        # Only a bug gets here (decoding without prefetching): wait, never dead-letter.
        raise Unavailable(f"schema id {schema_id} was not fetched before decoding")

    async def prefetch(self, schema_ids: Iterable[int]) -> None:
        self._forget_stale()
        wanted = [i for i in dict.fromkeys(schema_ids) if not self._at_hand(i)]
        if not wanted:
            return
        gate = asyncio.Semaphore(self.concurrency)
        results = await asyncio.gather(
            *(self._fetch(i, gate) for i in wanted), return_exceptions=True
        )
        # What did arrive is kept; any failure (an outage) fails the prefetch.
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _at_hand(self, schema_id: int) -> bool:
        return schema_id in self._known or schema_id in self._unknown

    def _forget_stale(self) -> None:
        cutoff = self.clock() - self.unknown_ttl
        self._unknown = {i: v for i, v in self._unknown.items() if v[0] > cutoff}
        if len(self._unknown) > self.max_unknown:
            self._unknown.clear()  # hostile input naming endless ids: start over

    async def _fetch(self, schema_id: int, gate: asyncio.Semaphore) -> None:
        if not 0 <= schema_id <= MAX_SCHEMA_ID:
            self._remember_unknown(schema_id, f"schema id {schema_id} is out of range")
            return
        async with gate:
            self.fetches += 1
            try:
                kind, text = await self.client.schema(schema_id)
            except SchemaNotFound as exc:
                self._remember_unknown(schema_id, str(exc))
                return
        if kind != "AVRO":
            self._remember_unknown(schema_id, f"schema id {schema_id} is a {kind} schema, not Avro")
            return
        try:
            self._known[schema_id] = parse_writer_schema(text)
        except ValueError as exc:
            self._remember_unknown(schema_id, f"schema id {schema_id}: {exc}")
            return
        log.info(
            "writer schema fetched",
            extra={"schema_id": schema_id, "schema": self._known[schema_id].name},
        )

    def _remember_unknown(self, schema_id: int, why: str) -> None:
        self._unknown[schema_id] = (self.clock(), why)
        log.warning("unusable schema id", extra={"schema_id": schema_id, "error": why})


class ConfluentEncoder:
    """One of our schemas in the Confluent wire format: registered under `subject`
    on first use (then the id is kept), every value framed with that id."""

    def __init__(self, client: RegistryClient, codec: Codec, schema_name: str, subject: str):
        self.client = client
        self.codec = codec
        self.schema_name = schema_name
        self.subject = subject
        self.schema_id: int | None = None
        self._lock = asyncio.Lock()

    async def register(self) -> int:
        """The schema's id, registering it once; Unavailable or RegistryRefused."""
        async with self._lock:
            if self.schema_id is None:
                self.schema_id = await self.client.register(
                    self.subject, self.codec.schema_text(self.schema_name)
                )
                log.info(
                    "schema registered",
                    extra={"subject": self.subject, "schema_id": self.schema_id},
                )
            return self.schema_id

    def encode(self, record: Mapping[str, Any]) -> bytes:
        if self.schema_id is None:
            raise RuntimeError("ConfluentEncoder.encode before register()")
        return self.codec.encode_confluent(self.schema_name, record, self.schema_id)
