"""bench.compare's ingest table: medians per variant and instance count, the ratio
to the first variant, and the CPU each event cost the service and PostgreSQL."""

from __future__ import annotations

from harness.compare_table import IngestFigure, ingest_table

OLD, NEW = "main@544c0d6", "new"


def _rows(table: str) -> dict[tuple[int, str], list[str]]:
    out = {}
    for line in table.splitlines()[1:]:
        cells = line.split()
        out[(int(cells[0]), cells[1])] = cells[2:]
    return out


def test_medians_ratios_and_cpu_per_event() -> None:
    figures = [
        # 1 instance: old 4,000 and 6,000/s (median 5,000), new 10,000 and 20,000 (15,000)
        IngestFigure(OLD, 1, 100_000, 25.0, 200.0, 10.0, 5.0),
        IngestFigure(NEW, 1, 100_000, 10.0, 150.0, 8.0, 3.0),
        IngestFigure(OLD, 1, 100_000, 100_000 / 6_000, 210.0, 12.0, 7.0),
        IngestFigure(NEW, 1, 100_000, 5.0, 160.0, 6.0, 1.0),
        IngestFigure(OLD, 2, 100_000, 10.0, 190.0, 20.0, 6.0),
        IngestFigure(NEW, 2, 100_000, 8.0, 140.0, 10.0, 4.0),
    ]
    rows = _rows(ingest_table(figures, [OLD, NEW]))
    assert rows[(1, OLD)] == ["5,000", "1.00", "210", "MiB", "110", "60"]
    assert rows[(1, NEW)] == ["15,000", "3.00", "160", "MiB", "70", "20"]
    assert rows[(2, OLD)] == ["10,000", "1.00", "190", "MiB", "200", "60"]
    assert rows[(2, NEW)] == ["12,500", "1.25", "140", "MiB", "100", "40"]
