"""The check-in timeline's window bands (`rules.window_lows`: integer comparisons
of window sums) are the contract's definition, score by score: the average of
the last EMOTION_HISTORY_LIMIT scores (`rules.average`, exact) below 0.4."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.model import Score
from consumer.domain.rules import LOW_EMOTION, average, window_lows

T0 = datetime(2026, 3, 2, tzinfo=UTC)
# Values on and around the band's edge, and any other (some with more than 20
# decimals, which take the slow path).
_VALUES = st.sampled_from([0.0, 0.1, 0.3, 0.39, 0.4, 0.41, 0.5, 0.7, 1.0]) | st.floats(0, 1)


@given(st.lists(_VALUES, max_size=40), st.integers(1, 8))
def test_each_window_is_low_exactly_when_its_average_is_below_the_edge(
    values: list[float], limit: int
) -> None:
    ordered = [Score(f"m{i}", T0 + timedelta(minutes=i), v) for i, v in enumerate(values)]
    expected = []
    for i in range(len(ordered)):
        avg = average(ordered[max(0, i + 1 - limit) : i + 1])
        expected.append(avg is not None and avg < LOW_EMOTION)
    assert window_lows(ordered, limit) == expected


def test_averages_on_the_edge_are_not_low() -> None:
    # 0.7 and 0.1 average to 0.4 exactly (not 0.39999999999999997): not low.
    scores = [Score("a", T0, 0.7), Score("b", T0, 0.1), Score("c", T0, 0.09)]
    assert window_lows(scores, 2) == [False, False, True]
