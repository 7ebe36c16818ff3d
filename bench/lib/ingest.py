"""The ingest benchmark's run: fresh database and topics, the stream, a bare consumer,
the decode step, the service, the summary; everything dropped at the end unless kept."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import UTC, datetime

from bench.lib.consume import bare_consume, decoder
from bench.lib.ingest_summary import summary
from bench.lib.kafka import create_topics, delete_topics, end_offsets, produce
from bench.lib.names import Names
from bench.lib.outcome import outcome
from bench.lib.service import run_service
from bench.lib.stream import generate
from consumer.adapters.codec import Codec
from harness.endpoints import Endpoints, create_database, drop_database, endpoints


async def run_benchmark(args: argparse.Namespace) -> None:
    ep = endpoints()
    names = Names.fresh()
    n = args.events
    limit_s = args.timeout or max(120.0, n / 1000.0)
    extra_env = dict(kv.split("=", 1) for kv in args.service_env)
    print(
        f"bench {names.prefix}: {n:,} events, {args.users:,} users, format {args.format}, "
        f"database {names.database}, kafka {ep.bootstrap}",
        flush=True,
    )
    await create_database(ep, names.database)
    try:
        await create_topics(ep.bootstrap, names.topics, args.partitions)
        try:
            await _run(args, ep, names, n, limit_s, extra_env)
        finally:
            if not args.keep:
                await delete_topics(ep.bootstrap, names.topics)
    finally:
        if args.keep:
            print(f"kept database {names.database} and topics {names.prefix}.*")
        else:
            await drop_database(ep, names.database)


async def _run(
    args: argparse.Namespace,
    ep: Endpoints,
    names: Names,
    n: int,
    limit_s: float,
    extra_env: Mapping[str, str],
) -> None:
    codec = Codec.load()
    stream = generate(n, args.users, args.format, args.seed, codec, datetime.now(UTC))
    print(
        f"generated {n:,} events in {stream.seconds:.1f} s "
        f"({n / stream.seconds:,.0f}/s, {stream.value_bytes / 2**20:.0f} MiB of values)",
        flush=True,
    )

    produce_seconds = await produce(ep.bootstrap, names.inputs, stream, args.chunk)
    del stream.records[:]  # the values are in Kafka now; free the memory
    written = await end_offsets(ep.bootstrap, names.inputs)
    if sum(written.values()) != n:
        raise RuntimeError(f"expected {n:,} records in the input topics, found {written}")
    print(f"produced {n:,} in {produce_seconds:.1f} s: {n / produce_seconds:,.0f} events/s")

    bare = await bare_consume(ep.bootstrap, names.inputs, names.bare_group, n, limit_s)
    print(
        f"bare consumer read {bare.events:,} in {bare.seconds:.1f} s: {bare.rate:,.0f} events/s",
        flush=True,
    )
    decoding = await bare_consume(
        ep.bootstrap, names.inputs, f"{names.bare_group}-decode", n, limit_s, decoder(names)
    )
    print(
        f"consumer + decode (Ingestor.decode only) read {decoding.events:,} in "
        f"{decoding.seconds:.1f} s: {decoding.rate:,.0f} events/s",
        flush=True,
    )

    print("service (ingest only) replaying into the empty database ...", flush=True)
    service = await run_service(
        ep,
        names,
        n,
        partitions=args.partitions,
        limit_s=limit_s,
        extra_env=extra_env,
        cwd=args.service_cwd,
        profile=args.profile,
        py_spy=args.py_spy,
        explain_ms=args.explain_ms,
        pg_log=args.pg_log,
        instances=args.instances,
    )
    print(
        f"service applied {service.phase.events:,} in {service.phase.seconds:.1f} s: "
        f"{service.phase.rate:,.0f} events/s",
        flush=True,
    )
    result = await outcome(ep, names.database)
    print(summary(args, stream, produce_seconds, bare, decoding, service, result), flush=True)
