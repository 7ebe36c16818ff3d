"""Dispatch: due follow-ups out to `followup.due`, each marked once it is published.

Claim (lease) -> choose and render templates from the projections as they are
now -> publish the batch -> mark executed while still holding the lease. A
process that dies between publish and mark leaves a lease that runs out; the
follow-up is then claimed again and published again with the same `event_id`:
at-least-once, duplicates confined to that window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from consumer.domain.model import Followup
from consumer.domain.policy import Policy, RetryPolicy
from consumer.domain.sending_window import Verdict, plan_send, sends_per_day
from consumer.domain.templates import (
    FiringContext,
    StoredTemplate,
    TemplateError,
    choose_template,
    pick_template,
    render,
    seeded_book,
)
from consumer.service.ports import (
    Cipher,
    ClaimedFollowup,
    DispatchStore,
    DueMessage,
    DuePublisher,
    Executed,
    FiringFacts,
    Hold,
    NoTelemetry,
    Telemetry,
)
from consumer.service.retry import OUTAGES, Failure, Outages, Stopped, described, retrying

log = logging.getLogger(__name__)
KAFKA = Failure("kafka", "", resource=True)


class PlainText:
    """No encryption at rest."""

    def seal(self, text: str) -> str:
        return text

    def open(self, stored: str) -> str:
        return stored


def due_record(
    f: Followup, template: StoredTemplate, message: str, attempt: int, now: datetime
) -> dict[str, Any]:
    """The `followup.due` event; `event_id` is the follow-up's id, stable across resends."""
    return {
        "event_id": f.id,
        "followup_id": f.id,
        "user_id": f.user_id,
        "conversation_id": f.conversation_id,
        "trigger_type": f.trigger_type.value,
        "template_id": template.template_id,
        "message": message,
        "scheduled_at": f.scheduled_at,
        "emitted_at": now,
        "booking_id": (f.active_booking_ids or f.booking_ids or (None,))[0],
        "attempt": attempt,
        "locale": template.locale,
        "template_version": template.version,
    }


def user_zone(zone: str | None, policy: Policy) -> ZoneInfo:
    """The user's time zone (from their bookings), else SCHEDULER_TIMEZONE."""
    return ZoneInfo(zone) if zone else policy.default_timezone


def firing_context(f: Followup, facts: FiringFacts, policy: Policy) -> FiringContext:
    zone = facts.timezones.get(f.user_id)
    return FiringContext(
        # The conversation's history is newest first: its window is the head.
        scores=facts.scores.get(f.conversation_id, ())[: policy.history_limit],
        has_live_booking=f.user_id in facts.users_with_live_booking,
        last_activity_at=facts.last_activity.get(f.user_id),
        timezone=ZoneInfo(zone) if zone else policy.default_timezone,
        locale=facts.locales.get(f.user_id),
    )


def compose(
    f: Followup, ctx: FiringContext, facts: FiringFacts, policy: Policy, now: datetime
) -> tuple[StoredTemplate, str]:
    """The template version for this follow-up (its choice, in the user's locale or
    the nearest there is) and the message rendered from it."""
    template_id = choose_template(f, ctx).value
    template = pick_template(facts.templates, template_id, ctx.locale, policy.default_locale)
    try:
        return template, render(template, f, ctx, now)
    except TemplateError as exc:
        # Only a row edited by hand past the admin API's check gets here: the
        # seeded text goes out instead of nothing, and the log says which row.
        log.error(
            "stored template cannot be rendered; the seeded text is used",
            extra={
                "template_id": template.template_id,
                "locale": template.locale,
                "version": template.version,
                "error": str(exc),
            },
        )
        seeded = pick_template(seeded_book(), template_id, ctx.locale, policy.default_locale)
        return seeded, render(seeded, f, ctx, now)


@dataclass(frozen=True, slots=True)
class Round:
    """A dispatch round claimed and rendered, ready to publish: the follow-ups that
    may go out now, each with its outcome to record and its message."""

    claimed: int  # all it claimed, the expired and held ones too
    sending: Sequence[ClaimedFollowup] = ()
    rendered: Sequence[Executed] = ()
    messages: Sequence[DueMessage] = ()
    started: float = 0.0  # perf_counter when the claim came back


class Dispatcher:
    def __init__(
        self,
        store: DispatchStore,
        publisher: DuePublisher,
        policy: Policy,
        retry: RetryPolicy,
        clock: Callable[[], datetime],
        *,
        batch_size: int = 1000,
        lanes: int = 4,
        lease: timedelta = timedelta(seconds=30),
        poll: timedelta = timedelta(seconds=1),
        owner: str | None = None,
        telemetry: Telemetry | None = None,
        cipher: Cipher | None = None,
        outages: Outages = OUTAGES,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.policy = policy
        self.retry = retry
        self.clock = clock
        self.batch_size = batch_size
        self.lanes = lanes
        self.lease = lease
        self.poll = poll
        self.owner = owner or f"dispatcher-{uuid.uuid4()}"
        self.telemetry = telemetry or NoTelemetry()
        self.cipher = cipher or PlainText()
        self.outages = outages
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._next_wake: datetime | None = None

    def notify(self, earliest_due: datetime | None) -> None:
        """Ingest scheduled something: wake early if it is due before our next look."""
        if earliest_due is None:
            return
        if self._next_wake is None or earliest_due < self._next_wake:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        while not stop.is_set():
            try:
                # Any failure (an outage, or a bug around one follow-up) is waited
                # out: the follow-ups stay pending and their leases run out.
                wait = await retrying(
                    self._round,
                    retry_on=Exception,
                    what="dispatch",
                    stop=stop,
                    outages=self.outages,
                )
            except Stopped:
                return
            if wait is None:
                continue  # a backlog: keep going without sleeping
            self._wake.clear()
            stop_wait = asyncio.ensure_future(stop.wait())
            wake_wait = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait(
                    {stop_wait, wake_wait}, timeout=wait, return_when="FIRST_COMPLETED"
                )
            finally:
                for fut in (stop_wait, wake_wait):
                    fut.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fut

    async def _round(self) -> float | None:
        """Rounds while follow-ups fall due; then how long to sleep, or None to go on
        at once (a backlog, drained by the lanes, or a stop)."""
        claimed = await self._stream()
        if self._stop.is_set():
            return None
        if claimed < self.batch_size:
            return await self._seconds_until_next()
        if self.lanes > 1:
            await self.drain()
        return None

    async def _stream(self) -> int:
        """Rounds one after another while each finds some follow-ups due but not a
        full batch (a steady load). Each claims and renders while the one before it
        publishes, so a follow-up that falls due waits for a claim, not for a whole
        round; they still publish one at a time, in order. Returns what the last
        round claimed: 0 when nothing was due, a full batch for the lanes."""
        publishing: asyncio.Future[None] | None = None
        try:
            while True:
                ready = await self.claim_round()
                if publishing is not None:
                    try:
                        await publishing
                    except Exception:
                        # Claimed and rendered: this one is still published (nothing
                        # left half done), then the first failure is raised.
                        with contextlib.suppress(Exception):
                            await self.finish_round(ready)
                        raise
                    finally:
                        publishing = None
                if not 0 < ready.claimed < self.batch_size or self._stop.is_set():
                    await self.finish_round(ready)
                    return ready.claimed
                publishing = asyncio.ensure_future(self.finish_round(ready))
        except BaseException as exc:
            if publishing is not None:
                if isinstance(exc, asyncio.CancelledError):
                    publishing.cancel()
                with contextlib.suppress(BaseException):
                    await publishing  # the round before a failed claim still finishes
            raise

    async def drain(self) -> None:
        """A backlog: rounds side by side, each on its own claimed follow-ups (SKIP
        LOCKED), so that one publishes while another claims and renders; until a
        round finds less than a full batch. A failing round lets the others finish
        theirs (nothing is left half done), then its error is raised."""
        failed = asyncio.Event()

        async def lane() -> None:
            try:
                while not (failed.is_set() or self._stop.is_set()):
                    if await self.dispatch_due() < self.batch_size:
                        return
            except BaseException:
                failed.set()
                raise

        outcomes = await asyncio.gather(
            *(lane() for _ in range(self.lanes)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _seconds_until_next(self) -> float:
        now = self.clock()
        nxt = await self.store.next_due_at(now)
        poll = self.poll.total_seconds()
        if nxt is None:
            self._next_wake = now + self.poll
            return poll
        self._next_wake = min(nxt, now + self.poll)
        return max(0.0, min(poll, (nxt - now).total_seconds()))

    async def dispatch_due(self) -> int:
        """One round: claim what is due, publish it, record the outcome. Returns claimed."""
        ready = await self.claim_round()
        await self.finish_round(ready)
        return ready.claimed

    async def claim_round(self) -> Round:
        """A round up to its publishing: claim what is due, expire what is too late,
        hold what may not go out now (the sending window), render the rest."""
        now = self.clock()
        claimed = await self.store.claim_due(self.owner, now, self.lease, self.batch_size)
        if not claimed:
            return Round(0)
        started = time.perf_counter()
        # Too late on its first attempt (the service was down, say): never sent.
        # A retried one was on time once, so it keeps its chance.
        stale: list[ClaimedFollowup] = []
        fresh: list[ClaimedFollowup] = []
        for c in claimed:
            too_late = c.retry_count == 0 and self.policy.too_late(c.followup.scheduled_at, now)
            (stale if too_late else fresh).append(c)
        if stale:
            await self.store.mark_expired(self.owner, [c.followup.id for c in stale])
            for c in stale:
                self.telemetry.expired(c.followup.trigger_type)
            log.info("expired without sending", extra={"count": len(stale)})
        if fresh and self.policy.sending.active:
            fresh = await self._gate(fresh, now)
        if not fresh:
            return Round(len(claimed), started=started)
        rendered, messages = await self._render(fresh, now)
        return Round(len(claimed), fresh, rendered, messages, started)

    async def finish_round(self, ready: Round) -> None:
        """Publish a claimed round and record the outcome, while its leases hold."""
        if ready.messages:
            await self._publish(ready)
        if ready.claimed:
            log.debug(
                "dispatch round",
                extra={
                    "claimed": ready.claimed,
                    "seconds": round(time.perf_counter() - ready.started, 4),
                },
            )

    async def _gate(
        self, claimed: Sequence[ClaimedFollowup], now: datetime
    ) -> list[ClaimedFollowup]:
        """Quiet hours and the daily cap, in each user's zone, under the lock of their
        row: what may go out now; the rest is held (released with a later `due_at`,
        still pending) or, when that would pass MAX_LATENESS, expired."""
        window = self.policy.sending
        users = sorted({c.followup.user_id for c in claimed})
        ids = [c.followup.id for c in claimed]
        # A local day is at most 26 hours long and started at most that long ago.
        since = now - timedelta(hours=50) if window.daily_cap > 0 else None
        go: list[ClaimedFollowup] = []
        holds: list[tuple[ClaimedFollowup, Hold]] = []
        expire: list[tuple[ClaimedFollowup, str]] = []
        async with self.store.send_gate(self.owner, users, ids, now, since) as gate:
            sent = {u: list(gate.sends.get(u, ())) for u in users}
            for c in claimed:
                f = c.followup
                zone = user_zone(gate.zones.get(f.user_id), self.policy)
                plan = plan_send(
                    now,
                    f.scheduled_at,
                    zone,
                    window,
                    sends_per_day(sent[f.user_id], zone),
                    self.policy.max_lateness,
                    quiet_applies=not f.ignore_quiet_hours,
                )
                reason = plan.moment.reason.value if plan.moment.reason else ""
                if plan.verdict is Verdict.SEND:
                    go.append(c)
                    sent[f.user_id].append(now)
                elif plan.verdict is Verdict.HOLD:
                    holds.append((c, Hold(f.id, plan.moment.at, reason)))
                else:
                    expire.append((c, reason))
            await gate.approve([c.followup.id for c in go], now)
            await gate.hold([h for _, h in holds])
        if expire:
            await self.store.mark_expired(self.owner, [c.followup.id for c, _ in expire])
        for c, reason in expire:
            self.telemetry.held(c.followup.trigger_type, reason, expired=True)
        for c, h in holds:
            self.telemetry.held(c.followup.trigger_type, h.reason, expired=False)
            log.info(
                "follow-up held",
                extra={"followup_id": h.id, "reason": h.reason, "sends_at": h.due_at},
            )
        return go

    async def _render(
        self, claimed: Sequence[ClaimedFollowup], now: datetime
    ) -> tuple[list[Executed], list[DueMessage]]:
        facts = await self.store.firing_facts([c.followup for c in claimed])
        rendered: list[Executed] = []
        messages: list[DueMessage] = []
        for c in claimed:
            f = c.followup
            if f.custom_message is not None:
                opened = self.cipher.open(f.custom_message)
                if opened is not f.custom_message:  # sealed at rest: a copy in clear
                    f = replace(f, custom_message=opened)
            ctx = firing_context(f, facts, self.policy)
            template, text = compose(f, ctx, facts, self.policy, now)
            # Stored sealed when FOLLOWUP_ENCRYPTION_KEY is set; published in clear.
            rendered.append(
                Executed(
                    f.id,
                    template.template_id,
                    self.cipher.seal(text),
                    template.locale,
                    template.version,
                )
            )
            record = due_record(f, template, text, c.retry_count + 1, now)
            messages.append(DueMessage(f.user_id, record))
        return rendered, messages

    async def _publish(self, ready: Round) -> None:
        claimed, rendered = ready.sending, ready.rendered
        results = await self.publisher.publish(ready.messages)
        done = [r for r, err in zip(rendered, results, strict=True) if err is None]
        published_at = self.clock()
        await self.store.mark_executed(self.owner, done, published_at)
        for c, r, err in zip(claimed, rendered, results, strict=True):
            if err is None:
                lateness = (published_at - c.followup.scheduled_at).total_seconds()
                self.telemetry.executed(c.followup.trigger_type, r.template_id, max(lateness, 0.0))
        failures = [(c, err) for c, err in zip(claimed, results, strict=True) if err is not None]
        if len(failures) < len(claimed):
            self.outages.recovered(KAFKA)
        for c, err in zip(claimed, results, strict=True):
            if err is None:
                log.info(
                    "follow-up sent",
                    extra={"followup_id": c.followup.id, "user_id": c.followup.user_id},
                )
        if failures:
            await self._record_failures(failures)

    async def _record_failures(
        self, failures: Sequence[tuple[ClaimedFollowup, BaseException]]
    ) -> None:
        # A broker outage would otherwise burn every due follow-up's retries and
        # mark them all failed; only failures while the cluster answers count.
        counts = await self.publisher.broker_reachable()
        now = self.clock()
        if not counts:
            self.outages.failed(
                Failure(
                    "kafka",
                    f"cannot publish {len(failures)} due follow-up(s): {described(failures[0][1])}",
                    resource=True,
                ),
                self.retry.base.total_seconds(),
            )
        for c, err in failures:
            retry_at = (
                self.retry.next_attempt(c.retry_count, now) if counts else now + self.retry.base
            )
            self.telemetry.publish_error(c.followup.trigger_type, gave_up=retry_at is None)
            await self.store.mark_publish_failed(
                self.owner, c.followup.id, f"{type(err).__name__}: {err}", retry_at, counts=counts
            )
            # An outage is one line for all of them (the outage report); a follow-up
            # the broker refused is a line of its own.
            log.log(
                logging.WARNING if counts else logging.DEBUG,
                "publish failed" if counts else "publish failed: broker unreachable",
                extra={
                    "followup_id": c.followup.id,
                    "user_id": c.followup.user_id,
                    "error": repr(err),
                    "retry_at": retry_at,
                    "attempt": c.retry_count + 1,
                },
            )
