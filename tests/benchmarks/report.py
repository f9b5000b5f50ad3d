"""Medians, ratios and the issue's targets for the side-by-side benchmark, as a table or
JSON."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

Runs = dict[str, list[dict[str, float]]]
"""One system's raw figures: scenario (``drain_1``, ``roundtrip_ms``, ...) -> one dict a rep."""

SQLITE, PG, PREFORK = "jobsys-sqlite", "jobsys-pg", "celery-prefork"
BASES = (SQLITE, PG)
"""The systems whose ratio to each other system is printed."""

FIGURES: list[tuple[str, str]] = [
    # key, column title; drain and enqueue: higher is better, the rest: lower
    ("drain_per_s_1", "drain/s 1p"),
    ("drain_per_s_2", "drain/s 2p"),
    ("enqueue_per_s", "enqueue/s"),
    ("batch_enqueue_per_s", "batch/s"),
    ("roundtrip_ms_p50", "rt p50 ms"),
    ("roundtrip_ms_p99", "rt p99 ms"),
    ("cpu_s_per_1000_1", "CPU s/1k 1p"),
    ("cpu_s_per_1000_2", "CPU s/1k 2p"),
    ("rss_mib_max_1", "RSS max 1p"),
    ("rss_mib_max_2", "RSS max 2p"),
    ("rss_mib_total_2", "RSS all 2p"),
    ("pss_mib_total_2", "PSS all 2p"),
]


@dataclasses.dataclass(frozen=True)
class Target:
    """One of issue 18's targets: ``system``'s figure over ``reference``'s, against ``limit``."""

    what: str
    system: str
    reference: str
    figure: str
    limit: float
    at_least: bool
    """True: the ratio must be at least ``limit``; False: at most."""

    def check(self, ratio: float) -> bool:
        return ratio >= self.limit if self.at_least else ratio <= self.limit


PSS = "pss_mib_total_2"
"""The memory of a system's worker processes draining at 2 processes (every process of it,
the supervisor or pool's main process included), pages shared between them counted once."""

TARGETS = [
    Target("PG drain >= Celery prefork, 1 process", PG, PREFORK, "drain_per_s_1", 1.0, True),
    Target("PG drain >= Celery prefork, 2 processes", PG, PREFORK, "drain_per_s_2", 1.0, True),
    Target("PG enqueue >= Celery", PG, PREFORK, "enqueue_per_s", 1.0, True),
    Target("PG round trip p50 <= 1.2x SQLite's", PG, SQLITE, "roundtrip_ms_p50", 1.2, False),
    Target("SQLite drain >= Huey, 1 process", SQLITE, "huey", "drain_per_s_1", 1.0, True),
    Target("SQLite drain >= Huey, 2 processes", SQLITE, "huey", "drain_per_s_2", 1.0, True),
    Target("SQLite round trip p50 <= Huey's", SQLITE, "huey", "roundtrip_ms_p50", 1.0, False),
    Target("PG round trip p50 <= Huey's", PG, "huey", "roundtrip_ms_p50", 1.0, False),
    Target("SQLite workers' memory (PSS, 2p) <= 1.2x prefork's", SQLITE, PREFORK, PSS, 1.2, False),
    Target("PG workers' memory (PSS, 2p) <= 1.2x prefork's", PG, PREFORK, PSS, 1.2, False),
]


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summary(runs: Runs) -> dict[str, float | None]:
    """One system's medians under the keys of ``FIGURES``; None: not measured / no API."""
    out: dict[str, float | None] = {key: None for key, _ in FIGURES}
    enqueue: list[float] = []
    for scenario, reps in runs.items():
        if scenario.startswith("drain_"):
            processes = scenario.removeprefix("drain_")
            for figure in (
                "drain_per_s",
                "cpu_s_per_1000",
                "rss_mib_max",
                "rss_mib_total",
                "pss_mib_total",
            ):
                values = [r[figure] for r in reps if figure in r]
                if values:
                    out[f"{figure}_{processes}"] = median(values)
            enqueue += [r["enqueue_per_s"] for r in reps]
        elif scenario == "roundtrip_ms":
            for q in ("p50", "p90", "p99"):
                out[f"roundtrip_ms_{q}"] = median([r[q] for r in reps])
        elif scenario == "batch" and reps:
            out["batch_enqueue_per_s"] = median([r["enqueue_per_s"] for r in reps])
    if enqueue:
        out["enqueue_per_s"] = median(enqueue)
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def build(raw: dict[str, Runs], systems: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    summaries = {name: summary(runs) for name, runs in raw.items()}
    ratios = {
        f"{base}/{other}": {
            key: ratio(summaries[base][key], summaries[other][key]) for key, _ in FIGURES
        }
        for base in BASES
        if base in summaries
        for other in summaries
        if other != base and not (base == SQLITE and other == PG)  # PG / SQLite is kept
    }
    targets = []
    for t in TARGETS:
        value = ratio(
            summaries.get(t.system, {}).get(t.figure), summaries.get(t.reference, {}).get(t.figure)
        )
        limit = f"{'>=' if t.at_least else '<='} {t.limit}"
        met = None if value is None else t.check(value)
        targets.append({"target": t.what, "ratio": value, "limit": limit, "met": met})
    return {
        **meta,
        "systems": {
            name: {"title": systems[name].title, "setup": systems[name].setup, **summaries[name]}
            for name in summaries
        },
        "ratios": ratios,
        "targets": targets,
    }


def cell(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def print_table(result: dict[str, Any]) -> None:
    machine = " ".join(f"{k}={v}" for k, v in result["machine"].items())
    print(f"{machine} jobs={result['jobs']} reps={result['reps']} (medians)")
    print(f"round trips={result['roundtrips']}; RSS in MiB, per process (max) and whole worker")
    systems = result["systems"]
    width = max(len(s["title"]) for s in systems.values()) + 2
    header = "".join(f"{title:>12}" for _, title in FIGURES)
    print(f"\n{'system':<{width}}{header}")
    for s in systems.values():
        print(f"{s['title']:<{width}}" + "".join(f"{cell(s[k]):>12}" for k, _ in FIGURES))
    print("\nsettings:")
    for s in systems.values():
        print(f"  {s['title']}: {s['setup']}")
    if result["ratios"]:
        print("\nratios (higher is better for drain and enqueue, lower for the rest):")
        labels = {
            pair: " / ".join(systems[name]["title"] for name in pair.split("/"))
            for pair in result["ratios"]
        }
        wide = max(len(label) for label in labels.values()) + 2
        print(f"{'':<{wide}}{header}")
        for pair, values in result["ratios"].items():
            row = "".join(f"{cell(values[k]):>12}" for k, _ in FIGURES)
            print(f"{labels[pair]:<{wide}}{row}")
    print("\ntargets (issue 18):")
    for t in result["targets"]:
        state = "not measured" if t["met"] is None else "met" if t["met"] else "not met"
        print(f"  {t['target']:<44} ratio {cell(t['ratio']):>6} (needs {t['limit']}): {state}")
