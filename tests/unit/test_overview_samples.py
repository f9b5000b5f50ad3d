"""The overview's windows and the server's ring of samples (``jobsys.http.overview``): bucket
alignment, one sample per period, the highest sample per bucket, the queues summed per caller,
and the failure rate."""

from __future__ import annotations

import datetime as dt

from jobsys.http import overview
from jobsys.store import run_series

NOW = dt.datetime(2026, 12, 3, 7, 38, 25, tzinfo=dt.UTC)


def test_a_window_ends_with_the_bucket_that_holds_now() -> None:
    hour = run_series.Window.ending(NOW, 3600, 60)
    assert hour.count == 60 and hour.start == dt.datetime(2026, 12, 3, 6, 39, tzinfo=dt.UTC)
    assert hour.end == dt.datetime(2026, 12, 3, 7, 39, tzinfo=dt.UTC)
    assert hour.index(NOW) == 59 and hour.index(hour.start) == 0
    assert hour.index(hour.end) is None and hour.index(hour.start - dt.timedelta(seconds=1)) is None
    day = run_series.Window.ending(NOW, 86400, 900)
    assert day.count == 96 and day.starts()[-1] == dt.datetime(2026, 12, 3, 7, 30, tzinfo=dt.UTC)


def test_samples_are_taken_once_a_period_and_the_highest_counts_per_bucket() -> None:
    samples = overview.Samples(every=15, keep=dt.timedelta(minutes=1))
    taken: list[dt.datetime] = []

    def measure(queued: int) -> overview.Sample:
        return overview.Sample(at=taken[-1], depths={"jobs": queued}, workers=queued % 3)

    for seconds, queued in ((0, 4), (5, 99), (15, 7), (31, 2), (46, 1), (61, 3)):
        taken.append(NOW + dt.timedelta(seconds=seconds))
        samples.take(taken[-1], lambda _now, q=queued: measure(q))
    kept = samples.since(NOW - dt.timedelta(hours=1))
    assert [s.queued({"jobs"}) for s in kept] == [4, 7, 2, 1, 3]  # 99 came too soon
    window = run_series.Window.ending(NOW + dt.timedelta(seconds=61), 300, 60)
    per = overview._per_bucket(window, kept, {"jobs"})
    assert per["queued"] == [None, None, None, 7, 3]  # 07:38: 4, 7 and 2; 07:39: 1 and 3
    assert per["workers"] == [None, None, None, 2, 1]
    assert overview._failure_rate(
        {"failed": [0, 1, 2], "completed": [0, 3, 0], "cancelled": [0, 0, 2]}
    ) == [None, 0.25, 0.5]
    taken.append(NOW + dt.timedelta(seconds=76))
    samples.take(taken[-1], lambda _now: measure(5))  # a minute kept: the oldest goes
    kept = samples.since(NOW - dt.timedelta(hours=1))
    assert [s.queued({"jobs"}) for s in kept] == [7, 2, 1, 3, 5]


def test_a_bucket_sums_only_the_callers_queues() -> None:
    window = run_series.Window.ending(NOW, 120, 60)
    points = [
        overview.Sample(at=NOW - dt.timedelta(seconds=60), depths={"jobs": 2, "a": 40}, workers=1),
        overview.Sample(at=NOW, depths={"b": 3, "a": 50}, workers=2),
        overview.Sample(at=NOW, depths=None, workers=2),  # the broker did not answer
    ]
    assert overview._per_bucket(window, points, {"jobs", "b"}) == {
        "queued": [2, 3],
        "workers": [1, 2],
    }
    assert overview._per_bucket(window, points, {"jobs", "a"})["queued"] == [42, 50]
    assert overview._per_bucket(window, points[2:], {"jobs"})["queued"] == [None, None]
