"""The fault scenarios: each runs the real service on fresh topics and a fresh database
and compares the end state with an uninterrupted reference run over the same input."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg

from consumer.config import Settings
from harness.endpoints import Endpoints
from harness.faults.outages import services_up, stop_kafka, stop_postgres
from harness.faults.outcome import (
    Outcome,
    Row,
    canonical,
    compare,
    end_total,
    outcome,
    read_all,
    table,
)
from harness.faults.runs import (
    Proc,
    Run,
    log,
    produce_phase,
    safe_consumed,
    settle,
    wait_consumed,
    wait_for,
)
from harness.faults.stream import Input, Stream, bad_values, bind, make_stream
from harness.state import dsn, snapshot
from harness.topics import headers_of, produce_raw


async def reference(ep: Endpoints, stream: Stream, label: str) -> tuple[Outcome, Run]:
    """The uninterrupted run: one instance, phase 1, then phase 2, then the window."""
    run = await Run.fresh(ep, f"{label}-reference")
    inp = bind(run.settings, stream)
    proc = Proc(run.settings, run.log_path)
    try:
        await produce_phase(run.settings, inp.phase1)
        await wait_consumed(run.settings, len(inp.phase1), 600, [proc])
        await produce_phase(run.settings, inp.phase2)
        await wait_consumed(run.settings, inp.total, 600, [proc])
        await settle(run.settings, inp.horizon, 120, [proc])
        code = await proc.stop()
        if code != 0:
            raise RuntimeError(f"reference exited {code}:\n{proc.tail()}")
    finally:
        await proc.kill()
    out = await outcome(run.settings)
    log(f"{label}: reference {dict(out.statuses)}, {len(out.ids)} published")
    return out, run


async def feed_phase2(s: Settings, inp: Input) -> None:
    """Phase two once phase one is committed (see mixed_stream)."""
    await wait_for(lambda: _at_least(s, len(inp.phase1)), 1800, "phase 1 committed")
    await produce_phase(s, inp.phase2)


async def _at_least(s: Settings, n: int) -> bool:
    c = await safe_consumed(s)
    return c is not None and c >= n


# --- scenario 1: SIGKILL -----------------------------------------------------------


async def scenario_kills(
    ep: Endpoints, events: int, kills: int, seed: int = 1, keep_reference: bool = False
) -> tuple[Row, Run | None, Stream]:
    window_end = 25 + kills * 9 + events / 4000
    stream = make_stream(seed, events, (10, window_end))
    run = await Run.fresh(ep, "kills", ingest_batch_max_records=1000)
    inp = bind(run.settings, stream)
    row = Row(f"1 SIGKILL x{kills}", inp.total, 0, 0)
    log(f"kills: {inp.total} events, {stream.soon} due within {window_end:.0f} s")
    await produce_phase(run.settings, inp.phase1)
    feeder = asyncio.create_task(feed_phase2(run.settings, inp))
    rng = random.Random(seed)
    proc = Proc(run.settings, run.log_path)
    at: list[str] = []
    try:
        for i in range(kills):
            if i:
                # Let the restarted process get going (rejoin the group, apply or
                # send something) first, so each kill lands at a different point.
                await _until_progress(run.settings, at[-1])
            c = await safe_consumed(run.settings)
            if c is not None and c < inp.total:
                await asyncio.sleep(rng.uniform(0.3, 2.0))  # mid-ingest
            else:
                await asyncio.sleep(rng.uniform(1.0, 2 * window_end / kills))  # mid-dispatch
            c = await safe_consumed(run.settings)
            executed = await _count(run.settings, "executed")
            await proc.kill()
            at.append(f"{c}/{executed}")
            proc = Proc(run.settings, run.log_path)
        row.notes.append(f"killed at (committed records/executed follow-ups): {', '.join(at)}")
        await feeder
        await wait_consumed(run.settings, inp.total, 900, [proc])
        await settle(run.settings, inp.horizon, 180, [proc])
        code = await proc.stop()
        if code != 0:
            row.notes.append(f"final SIGTERM exit code {code}")
    finally:
        feeder.cancel()
        await proc.kill()
    got = await outcome(run.settings)
    ref, ref_run = await reference(ep, stream, "kills")
    compare(ref, got, row, duplicates_allowed=True)
    await run.drop()
    if not keep_reference:
        await ref_run.drop()
        return row, None, stream
    return row, ref_run, stream


async def _until_progress(s: Settings, last: str, limit_s: float = 30.0) -> None:
    """Until more records are committed or more follow-ups executed than at `last`."""
    before_c, _, before_e = last.partition("/")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        c, e = await safe_consumed(s), await _count(s, "executed")
        if (c is not None and before_c != "None" and c > int(before_c)) or (
            e is not None and before_e != "None" and e > int(before_e)
        ):
            return
        await asyncio.sleep(0.2)


async def _count(s: Settings, status: str) -> int | None:
    try:
        conn = await asyncpg.connect(dsn(s))
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM scheduled_followups WHERE status = $1", status
                )
            )
        finally:
            await conn.close()
    except Exception:
        return None


# --- scenario 2: broker / database outage ------------------------------------------


async def scenario_outage(ep: Endpoints, events: int, which: str, seed: int) -> Row:
    stream = make_stream(seed, events, (5, 45))
    run = await Run.fresh(ep, f"outage-{which}", ingest_batch_max_records=50)
    inp = bind(run.settings, stream)
    row = Row(f"2 {which} down ~10 s", inp.total, 0, 0)
    await produce_phase(run.settings, inp.phase1)
    proc = Proc(run.settings, run.log_path)
    pid = proc.pid
    feeder: asyncio.Task[None] | None = None
    try:
        await wait_for(
            lambda: _at_least(run.settings, len(inp.phase1) // 5), 300, "a fifth committed", [proc]
        )
        before = await safe_consumed(run.settings)
        down_at = time.monotonic()
        await (stop_kafka() if which == "kafka" else stop_postgres())
        log(f"outage: {which} stopped at {before} committed of {inp.total}")
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
        await services_up()
        back = time.monotonic()
        log(f"outage: {which} back after {back - down_at:.1f} s")
        base = await _when(lambda: safe_consumed(run.settings))
        await wait_for(
            lambda: _more_than(run.settings, min(base, len(inp.phase1) - 1)),
            300,
            "new records applied after the outage",
            [proc],
        )
        applied = time.monotonic() - back
        feeder = asyncio.create_task(feed_phase2(run.settings, inp))
        await wait_consumed(run.settings, len(inp.phase1), 600, [proc])
        caught_up = time.monotonic() - back
        await feeder
        await wait_consumed(run.settings, inp.total, 600, [proc])
        await settle(run.settings, inp.horizon, 180, [proc])
        if not (proc.alive() and proc.pid == pid):
            raise RuntimeError("the consumer did not survive the outage")
        row.recovered = f"{applied:.1f} / {caught_up:.1f}"
        row.notes.append(
            f"same pid {pid}, alive; first new batch {applied:.1f} s after {which} was back, "
            f"phase 1 caught up after {caught_up:.1f} s"
        )
        code = await proc.stop()
        if code != 0:
            row.notes.append(f"SIGTERM exit code {code}")
    except Exception as exc:
        row.ok = False
        row.notes.append(f"FAILED: {exc!r}")
        row.notes.append(proc.tail()[-1500:])
        if feeder is not None:
            feeder.cancel()
        await proc.kill()
        await run.drop()
        return row
    finally:
        await proc.kill()
    got = await outcome(run.settings)
    failed = got.statuses.get("failed", 0)
    if failed:
        row.notes.append(f"{failed} follow-ups marked failed during the outage")
    ref, ref_run = await reference(ep, stream, f"outage-{which}")
    compare(ref, got, row, duplicates_allowed=False)
    await run.drop()
    await ref_run.drop()
    return row


async def _when(probe: Callable[[], Awaitable[int | None]]) -> int:
    while True:
        v = await probe()
        if v is not None:
            return v
        await asyncio.sleep(0.1)


async def _more_than(s: Settings, n: int) -> bool:
    c = await safe_consumed(s)
    return c is not None and c > n


# --- scenario 3: rebalances --------------------------------------------------------


async def scenario_churn(ep: Endpoints, events: int, seconds: float, seed: int = 3) -> Row:
    stream = make_stream(seed, events, (5, seconds))
    run = await Run.fresh(ep, "churn", ingest_batch_max_records=500)
    inp = bind(run.settings, stream)
    row = Row(f"3 3 instances, churn {seconds:.0f} s", inp.total, 0, 0)
    procs = [Proc(run.settings, run.log_path) for _ in range(3)]
    rng = random.Random(seed)

    async def trickle() -> None:
        chunks = max(1, int(seconds * 0.6))
        size = -(-len(inp.phase1) // chunks)
        for lo in range(0, len(inp.phase1), size):
            await produce_raw(run.settings, inp.phase1[lo : lo + size])
            await asyncio.sleep(0.6 * seconds / chunks)

    producer = asyncio.create_task(trickle())
    feeder = asyncio.create_task(feed_phase2(run.settings, inp))
    moves: list[str] = []
    codes: list[int] = []
    try:
        started = time.monotonic()
        leave = True
        while time.monotonic() - started < seconds:
            await asyncio.sleep(10)
            if leave and len(procs) > 1:
                p = procs.pop(rng.randrange(len(procs)))
                codes.append(await p.stop())
                moves.append("-")
            else:
                procs.append(Proc(run.settings, run.log_path))
                moves.append("+")
            leave = not leave
            for p in procs:
                if not p.alive():
                    raise RuntimeError(f"an instance died:\n{p.tail()}")
        await producer
        await feeder
        await wait_consumed(run.settings, inp.total, 600, procs)
        await settle(run.settings, inp.horizon, 180, procs)
        for p in procs:
            codes.append(await p.stop())
    finally:
        producer.cancel()
        feeder.cancel()
        for p in procs:
            await p.kill()
    row.notes.append(f"moves {''.join(moves)}; SIGTERM exit codes {codes}")
    if any(codes):
        row.notes.append("an instance did not exit 0 on SIGTERM")
    got = await outcome(run.settings)
    ref, ref_run = await reference(ep, stream, "churn")
    compare(ref, got, row, duplicates_allowed=False)
    await run.drop()
    await ref_run.drop()
    return row


# --- scenario 4: bad values --------------------------------------------------------


async def scenario_bad(ep: Endpoints, events: int, bad: int, seed: int = 4) -> Row:
    stream = make_stream(seed, events, (5, 25 + events / 4000))
    run = await Run.fresh(ep, "bad", ingest_batch_max_records=1000)
    inp = bind(run.settings, stream, bad_values(bad))
    row = Row(f"4 {bad} bad values", inp.total, 0, 0)
    placed = await produce_raw(run.settings, inp.phase1)
    expected = {(m.topic, m.partition, m.offset) for m, b in zip(placed, inp.bad, strict=True) if b}
    proc = Proc(run.settings, run.log_path)
    stalls: list[float] = []
    try:
        last, since = -1, time.monotonic()
        worst = 0.0
        while True:
            c = await safe_consumed(run.settings)
            now = time.monotonic()
            if c is not None and c != last:
                worst = max(worst, now - since)
                last, since = c, now
            if c == len(inp.phase1):
                break
            if now - since > 60:
                raise RuntimeError(f"stalled at {c} committed for 60 s:\n{proc.tail()}")
            if not proc.alive():
                raise RuntimeError(f"service exited:\n{proc.tail()}")
            await asyncio.sleep(0.2)
        stalls.append(worst)
        await produce_phase(run.settings, inp.phase2)
        await wait_consumed(run.settings, inp.total, 600, [proc])
        await settle(run.settings, inp.horizon, 180, [proc])
        await proc.stop()
    finally:
        await proc.kill()
    dead = await read_all(run.settings, run.settings.topic_dlq)
    positions: Counter[tuple[str, int, int]] = Counter()
    complete = 0
    wanted = {
        "dlq.original.topic",
        "dlq.original.partition",
        "dlq.original.offset",
        "dlq.error.type",
        "dlq.error.message",
    }
    for r in dead:
        h = headers_of(r)
        if wanted <= h.keys():
            complete += 1
        positions[
            (
                h["dlq.original.topic"].decode(),
                int(h["dlq.original.partition"]),
                int(h["dlq.original.offset"]),
            )
        ] += 1
    found = expected & positions.keys()
    row.dead_lettered = f"{len(found)}/{len(expected)}"
    if found != expected or set(positions) - expected or complete != len(dead):
        row.ok = False
        row.notes.append(
            f"dead letters: {len(dead)} records, {complete} with all headers; "
            f"missing {len(expected - found)}, unexpected {len(set(positions) - expected)}"
        )
    twice = sum(c - 1 for c in positions.values() if c > 1)
    if twice:
        row.notes.append(f"{twice} dead letters published twice")
    row.notes.append(
        f"kinds: {len(inp.bad_kinds)} ({', '.join(sorted(inp.bad_kinds))}); "
        f"longest pause between commits {stalls[0]:.1f} s"
    )
    got = await outcome(run.settings)
    ref, ref_run = await reference(ep, stream, "bad")
    compare(ref, got, row, duplicates_allowed=False)
    await run.drop()
    await ref_run.drop()
    return row


# --- scenario 5: replay ------------------------------------------------------------


async def scenario_replay(run: Run, events: int) -> Row:
    row = Row("5 replay into existing db", events, 0, 0)
    s = run.settings
    before = await canonical(s)
    raw_before = await snapshot(s)
    due_before = await end_total(s, s.topic_followup_due)
    started = time.monotonic()
    p = Proc(s, run.log_path, "replay", "--no-progress")
    code = await asyncio.to_thread(p.proc.wait, 1800)
    took = time.monotonic() - started
    after = await canonical(s)
    raw_after = await snapshot(s)
    due_after = await end_total(s, s.topic_followup_due)
    changed = sum(
        1
        for t in before
        for k in before[t].keys() | after[t].keys()
        if before[t].get(k) != after[t].get(k)
    )
    row.lost = changed
    row.duplicated = due_after - due_before
    row.notes.append(f"replay exit {code} in {took:.1f} s; {changed} canonical rows changed")
    if raw_before != raw_after:
        row.notes.append("note: rows identical canonically but created_at/updated_at moved")
    if code != 0 or changed or due_after != due_before:
        row.ok = False
        row.notes.append(p.tail()[-1500:])
    return row


# --- all of them -------------------------------------------------------------------


async def run_scenarios(
    ep: Endpoints, n: int, kills: int, churn: float, only: set[int]
) -> list[Row]:
    """The scenarios numbered in `only`, in order; one row each (a failure is a row too)."""
    rows: list[Row] = []

    async def guarded(name: str, coro: Awaitable[Row]) -> None:
        try:
            rows.append(await coro)
        except Exception as exc:  # a scenario that could not finish is a finding too
            log(f"{name} failed: {exc!r}")
            rows.append(Row(name, 0, -1, -1, ok=False, notes=[f"did not finish: {exc!r}"]))
        log(table(rows[-1:]))

    if 1 in only or 5 in only:
        try:
            row, ref_run, _ = await scenario_kills(ep, n, kills, keep_reference=True)
            rows.append(row)
            log(table(rows[-1:]))
            if 5 in only and ref_run is not None:
                await guarded("5 replay", scenario_replay(ref_run, row.events))
            if ref_run is not None:
                await ref_run.drop()
        except Exception as exc:
            log(f"scenario 1 failed: {exc!r}")
            rows.append(Row("1 SIGKILL", n, -1, -1, ok=False, notes=[repr(exc)]))
    if 2 in only:
        m = max(20_000, n // 4)
        await guarded("2 kafka", scenario_outage(ep, m, "kafka", seed=21))
        await guarded("2 postgres", scenario_outage(ep, m, "postgres", seed=22))
    if 3 in only:
        await guarded("3 churn", scenario_churn(ep, max(10_000, n // 4), churn))
    if 4 in only:
        await guarded("4 bad", scenario_bad(ep, max(10_000, n // 4), 1000))
    return rows
