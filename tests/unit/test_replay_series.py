"""harness.replay_series: the long replay's figures from its time series (windowed
events/s, events/s per slice, memory at a point of the replay) and its CSV."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.replay_series import (
    Sample,
    fitting_window,
    read_csv,
    rss_at,
    slice_rates,
    time_at,
    trailing_rates,
    write_csv,
)


def steady(rate: float, seconds: int, every: float = 2.0) -> list[Sample]:
    """A replay at a constant rate, sampled every `every` seconds."""
    return [Sample(k * every, round(rate * k * every), 100.0 + k) for k in range(1, seconds + 1)]


# Samples of a replay: increasing times, events applied never going back.
series = st.lists(
    st.tuples(
        st.floats(0.1, 10.0), st.integers(0, 50_000), st.floats(0.0, 4096.0, allow_nan=False)
    ),
    min_size=1,
    max_size=60,
).map(
    lambda steps: [
        Sample(
            sum(dt for dt, _, _ in steps[: i + 1]),
            sum(da for _, da, _ in steps[: i + 1]),
            rss,
        )
        for i, (_, _, rss) in enumerate(steps)
    ]
)


def test_a_steady_replay_has_its_rate_everywhere() -> None:
    samples = steady(20_000, 100)
    rates = trailing_rates(samples, 30.0)
    assert rates
    assert all(r == pytest.approx(20_000) for _, r in rates)
    assert slice_rates(samples, samples[-1].applied) == [pytest.approx(20_000)] * 10


def test_the_first_samples_have_no_windowed_rate() -> None:
    samples = steady(1000, 30)  # every 2 s
    rated = [s.seconds for s, _ in trailing_rates(samples, 30.0)]
    assert rated[0] == 18.0  # the first at least 15 s (half the window) after 2 s
    assert rated[-1] == 60.0


@settings(max_examples=500, deadline=None)
@given(series, st.floats(1.0, 100.0))
def test_a_windowed_rate_is_a_difference_quotient_within_the_window(
    samples: list[Sample], window: float
) -> None:
    by_time = {s.seconds: s for s in samples}
    for s, rate in trailing_rates(samples, window):
        assert s.seconds in by_time
        assert rate >= 0
        # Some earlier sample, at most `window` and at least half of it before, explains it.
        assert any(
            window / 2 <= s.seconds - e.seconds <= window
            and math.isclose(rate, (s.applied - e.applied) / (s.seconds - e.seconds))
            for e in samples
        )


@settings(max_examples=200, deadline=None)
@given(series, st.integers(1, 20))
def test_the_slices_add_up_to_the_whole_replay(samples: list[Sample], slices: int) -> None:
    events = samples[-1].applied
    rates = slice_rates(samples, events, slices)
    assert len(rates) == slices
    if events == 0:
        return
    end = time_at(samples, events)
    assert end is not None
    if all(r is not None for r in rates):
        assert math.fsum(events / slices / r for r in rates if r) == pytest.approx(end)


def test_a_slice_the_replay_did_not_reach_has_no_rate() -> None:
    samples = steady(1000, 10)  # 20,000 events of 40,000
    assert slice_rates(samples, 40_000, 4) == [pytest.approx(1000), pytest.approx(1000), None, None]


def test_time_at_interpolates_between_samples() -> None:
    samples = [Sample(5.0, 0, 80.0), Sample(7.0, 1000, 90.0), Sample(9.0, 3000, 95.0)]
    assert time_at(samples, 0) == 0.0
    assert time_at(samples, 500) == 6.0  # after the start-up, not from 0 s
    assert time_at(samples, 2000) == 8.0
    assert time_at(samples, 3000) == 9.0
    assert time_at(samples, 3001) is None


def test_rss_at_is_the_first_sample_that_got_there() -> None:
    samples = [Sample(2.0, 0, 80.0), Sample(4.0, 1000, 90.0), Sample(6.0, 3000, 95.0)]
    assert rss_at(samples, 1) == 90.0
    assert rss_at(samples, 1000) == 90.0
    assert rss_at(samples, 3000) == 95.0
    assert rss_at(samples, 3001) is None


def test_a_short_replay_gets_a_shorter_window() -> None:
    assert fitting_window(steady(1000, 500), 30.0) == 30.0  # 1,000 s
    assert fitting_window(steady(1000, 25), 30.0) == pytest.approx(48 / 5)  # 2 .. 50 s
    assert fitting_window(steady(1000, 10), 30.0) == 4.0  # two sampling intervals
    assert fitting_window([Sample(1.0, 5, 1.0)], 30.0) == 30.0


@settings(max_examples=50, deadline=None)
@given(series)
def test_the_csv_keeps_the_series(
    tmp_path_factory: pytest.TempPathFactory, samples: list[Sample]
) -> None:
    path = tmp_path_factory.mktemp("csv") / "replay.csv"
    write_csv(path, samples)
    back = read_csv(path)
    assert [s.applied for s in back] == [s.applied for s in samples]
    assert all(abs(a.seconds - b.seconds) <= 0.0005 for a, b in zip(back, samples, strict=True))
    assert all(abs(a.rss_mib - b.rss_mib) <= 0.05 for a, b in zip(back, samples, strict=True))


def test_a_csv_of_other_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("t,events\n1,2\n")
    with pytest.raises(ValueError, match="seconds, applied, rss_mib"):
        read_csv(path)
