"""How ``jobsys bench`` prints its report (without ``--json``)."""

from __future__ import annotations

import pytest

from jobsys.cli import bench as cli_bench


def test_figures_with_percentiles_print_as_p50_slash_p99(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_bench._print_bench(
        {
            "machine": {"cores": 2},
            "queries_ms": {"SQLite 3.40.1": {"show_by_id": {"p50": 0.1, "p99": 0.42}}},
            "schedule_lag": {"schedules": 10000.0},
        }
    )
    printed = capsys.readouterr().out
    assert "queries_ms (p50 / p99)" in printed and "0.1 / 0.42" in printed
    assert "{" not in printed and "10000.0" in printed
