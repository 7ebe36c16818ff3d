"""The ingest benchmark's summary: every figure beside its target."""

from __future__ import annotations

import argparse
import os

from bench.lib.consume import Phase
from bench.lib.git import git_state
from bench.lib.kafka import COMPRESSION
from bench.lib.names import INPUTS
from bench.lib.outcome import Outcome
from bench.lib.service import ServiceRun
from bench.lib.stream import Stream
from harness.paths import REPO

TARGET_RATE = 20_000.0  # events/s end to end
TARGET_RATIO = 0.5  # end-to-end rate / bare consumer rate
TARGET_SECONDS_PER_MILLION = 60.0  # replay of 1,000,000 events into an empty database


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summary(
    args: argparse.Namespace,
    stream: Stream,
    produce_seconds: float,
    bare: Phase,
    decoding: Phase,
    service: ServiceRun,
    result: Outcome,
) -> str:
    n = args.events
    rows = _figures(n, produce_seconds, bare, decoding, service) + _followup_rows(result)
    width = max(len(r[0]) for r in rows) + 2
    lines = _header(args, width)
    lines += [f"{name:<{width}}{value:>14}   {note}".rstrip() for name, value, note in rows]
    if not service.complete:
        lines.append(f"!! the service did not finish: {service.phase.events:,} of {n:,} applied")

    lines.append("")
    lines += _input_lines(stream, n)
    lines += _trigger_lines(result)
    lines.append("projections: " + ", ".join(f"{k} {v:,}" for k, v in result.projections.items()))
    lines += _batch_lines(service)
    lines += _table_lines(result)
    lines += _slow_statement_lines(args, service)
    lines.append(f"dead letters logged by the service: {service.dead_lettered:,}")
    lines += _cpu_lines(service)
    lines.append(f"service log: {service.log_path}")
    if service.profile is not None:
        lines.append(f"profile: {service.profile}")
    return "\n".join(lines)


Row = tuple[str, str, str]  # metric, value, target / notes


def _figures(
    n: int, produce_seconds: float, bare: Phase, decoding: Phase, service: ServiceRun
) -> list[Row]:
    """The measured figures, each beside its target."""
    ratio = service.phase.rate / bare.rate if bare.rate else 0.0
    target_seconds = TARGET_SECONDS_PER_MILLION * n / 1_000_000
    return [
        ("events", f"{n:,}", ""),
        (
            "produce rate (events/s)",
            f"{n / produce_seconds:,.0f}",
            f"{produce_seconds:.1f} s, compression {COMPRESSION or 'none'}",
        ),
        (
            "bare consumer rate (events/s)",
            f"{bare.rate:,.0f}",
            f"{bare.seconds:.1f} s incl. {bare.first_seconds or 0:.1f} s to first record; "
            f"{bare.steady_rate:,.0f}/s after",
        ),
        (
            "  consumer + decode only (events/s)",
            f"{decoding.rate:,.0f}",
            f"codec + validation, no database; end-to-end / this: "
            f"{service.phase.rate / decoding.rate if decoding.rate else 0:.2f}",
        ),
        (
            "end-to-end rate (events/s)",
            f"{service.phase.rate:,.0f}",
            f">= {TARGET_RATE:,.0f}  "
            + _verdict(service.complete and service.phase.rate >= TARGET_RATE),
        ),
        (
            "ratio end-to-end / bare",
            f"{ratio:.2f}",
            f">= {TARGET_RATIO}  {_verdict(service.complete and ratio >= TARGET_RATIO)}",
        ),
        (
            "replay time of N events (s)",
            f"{service.phase.seconds:.1f}",
            f"< {target_seconds:.0f} s"
            + ("" if n == 1_000_000 else " (60 s per 1,000,000, scaled)")
            + f"  {_verdict(service.complete and service.phase.seconds < target_seconds)}",
        ),
        (
            "  of which start to first commit (s)",
            f"{service.phase.first_seconds or 0:.1f}",
            f"then {service.phase.steady_rate:,.0f} events/s",
        ),
        (
            "consumer peak RSS (MiB)",
            f"{service.peak_rss_mib:,.0f}",
            "VmHWM"
            + (
                f" of the largest of {service.instances} instances, "
                f"{service.peak_rss_total_mib:,.0f} MiB together"
                if service.instances > 1
                else ""
            ),
        ),
    ]


def _followup_rows(result: Outcome) -> list[Row]:
    rows: list[Row] = []
    for status in ("pending", "executed", "cancelled", "failed", "expired"):
        rows.append((f"scheduled_followups {status}", f"{result.by_status.get(status, 0):,}", ""))
    rows.append(("scheduled_followups total", f"{sum(result.by_status.values()):,}", ""))
    return rows


def _header(args: argparse.Namespace, width: int) -> list[str]:
    """The title, the service's command if it is not the default one, the column heads."""
    lines = [
        "",
        f"== summary ({args.format}, {args.users:,} users, seed {args.seed}, code {git_state()})",
        f"{'metric':<{width}}{'value':>14}   target / notes",
    ]
    if args.service_cwd != REPO or args.service_env or args.instances > 1:
        lines.insert(
            2,
            f"service: python -m consumer run in {args.service_cwd}"
            + "".join(f" {kv}" for kv in args.service_env)
            + (f", {args.instances} instances" if args.instances > 1 else ""),
        )
    return lines


def _input_lines(stream: Stream, n: int) -> list[str]:
    return [
        "input mix: "
        + ", ".join(
            f"{suffix} {count:,} ({count / n:.1%})"
            for (_, suffix, _), count in zip(INPUTS, stream.counts, strict=True)
        ),
        f"values: {dict(stream.formats)}, {stream.value_bytes / n:.0f} bytes on average; "
        f"generated and encoded in {stream.seconds:.1f} s",
    ]


def _trigger_lines(result: Outcome) -> list[str]:
    """Follow-ups by trigger (rows) and status (columns); nothing if there are none."""
    triggers = sorted({t for t, _ in result.by_trigger})
    statuses = sorted({s for _, s in result.by_trigger})
    if not triggers:
        return []
    lines = ["follow-ups by trigger and status:"]
    lines.append(f"  {'':<16}" + "".join(f"{s:>12}" for s in statuses))
    for t in triggers:
        lines.append(
            f"  {t:<16}" + "".join(f"{result.by_trigger.get((t, s), 0):>12,}" for s in statuses)
        )
    return lines


def _batch_lines(service: ServiceRun) -> list[str]:
    steady = service.phase.seconds - (service.phase.first_seconds or 0)
    if not (service.batches and steady > 0):
        return []
    return [
        f"service batches: {service.batches:,}, "
        f"{service.batch_events / service.batches:,.0f} events on average; "
        f"Ingestor.process {service.batch_seconds / service.batches * 1000:.0f} ms on "
        f"average, {service.batch_seconds:.1f} s in all "
        f"({service.batch_seconds / steady:.0%} of the time after the first commit)"
    ]


TABLE_HEAD = (
    "table",
    "MiB",
    "seq_scan",
    "seq_read",
    "idx_scan",
    "ins",
    "upd",
    "hot_upd",
    "dead",
    "autovac",
    "autoanalyze",
)


def _table_lines(result: Outcome) -> list[str]:
    """The PostgreSQL counters of every table; nothing if there are none."""
    if not result.tables:
        return []
    lines = [
        f"PostgreSQL tables (database {result.database_mib:,.0f} MiB; "
        "counters since the database was created):",
        f"  {TABLE_HEAD[0]:<24}" + "".join(f"{h:>12}" for h in TABLE_HEAD[1:]),
    ]
    for tbl in result.tables:
        values = (
            tbl["bytes"] / 2**20,
            tbl["seq_scan"],
            tbl["seq_tup_read"],
            tbl["idx_scan"] or 0,
            tbl["n_tup_ins"],
            tbl["n_tup_upd"],
            tbl["n_tup_hot_upd"],
            tbl["n_dead_tup"],
            tbl["autovacuum_count"],
            tbl["autoanalyze_count"],
        )
        lines.append(
            f"  {tbl['relname']:<24}{values[0]:>12,.0f}" + "".join(f"{v:>12,}" for v in values[1:])
        )
    return lines


def _slow_statement_lines(args: argparse.Namespace, service: ServiceRun) -> list[str]:
    """The statements auto_explain caught, the most time in all first."""
    if not service.slow_statements:
        return []
    lines = [
        f"statements slower than {args.explain_ms} ms (auto_explain; plans in "
        f"{service.explain_path}):"
    ]
    for query, (count, total_ms, max_ms) in sorted(
        service.slow_statements.items(), key=lambda kv: -kv[1][1]
    ):
        lines.append(
            f"  {count:>6} x, {total_ms / 1000:>7.1f} s in all, max {max_ms:>7.0f} ms  {query}"
        )
    return lines


def _cpu_lines(service: ServiceRun) -> list[str]:
    """CPU time per process group during the service run, the busiest first."""
    wall = service.phase.seconds
    lines = [
        f"CPU during the service run ({wall:.1f} s wall, {os.cpu_count()} cores = "
        f"{wall * (os.cpu_count() or 1):.0f} CPU-s available):"
    ]
    for label, seconds in sorted(service.cpu.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.05:
            lines.append(f"  {label:<20}{seconds:>8.1f} CPU-s  {seconds / wall:>6.0%} of one core")
    return lines
