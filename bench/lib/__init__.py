"""The benchmarks' library; the commands are the modules of `bench/` itself.

- `names`, `stream`, `kafka`: a run's names, the generated stream, producing it;
- `consume`, `service`, `diagnostics`, `outcome`: measuring a bare consumer and the
  real service, py-spy and auto_explain, what the service left in PostgreSQL;
- `ingest_summary`, `ingest`: the ingest benchmark's summary and its run;
- `dispatch`, `ingest_profile`, `baseline`: the other benchmarks;
- `perf_runs`, `perf_charts`, `perf_report`: `python -m bench.report`.
"""
