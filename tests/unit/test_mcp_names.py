"""The MCP tools' names: one style, names the strictest clients accept, and no two jobs sharing
a tool. Pure: no broker, no database (the calls by old names are in tests/integration)."""

from __future__ import annotations

import random
import re

from jobsys.declare import catalog, jobs
from jobsys.mcp.names import DEPRECATED_TOOLS, legacy_tool_name, tool_name
from jobsys.mcp.tools import TOOLS, generic_tools, resolve
from tests.cluster import CATALOG

STRICT = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What many MCP clients accept (the MCP specification allows dots and 128 characters)."""

ODD_NAMES = [
    "a",
    "a.b",
    "a__b",
    "a_b",
    "a_.b",
    "a._b",
    "a.b_c",
    "a_b.c",
    "a_b_c",
    "a.b.c",
    "a___b",
    "_a",
    "_a.b",
    "a._",
    "_",
    "__",
    "a-b.c-d",
    "a-.b",
    "team.add-10",
    "x" * 59,  # run__ + 59 = 64: the plain form still fits
    "x" * 60,
    "x" * 200,
    "x" * 199 + "y",
    "p." * 99 + "q",
    ("long.prefix_" * 10) + "one",
    ("long.prefix_" * 10) + "two",
    "-",
    "A.B",
]


def random_name(rng: random.Random) -> str:
    """A name ``jobs.NAME_RE`` accepts, biased to underscores, dots, dashes and length."""
    first = "ab_"
    rest = "ab_-_."
    size = rng.choice([1, 2, 3, 5, 8, 40, 70, 200])
    name = rng.choice(first)
    while len(name) < size:
        c = rng.choice(rest)
        if c == "." and name[-1] == ".":
            continue
        name += c if c != "." or len(name) < size - 1 else "a"
        if name[-1] == ".":
            name += rng.choice(first)
    return name[:200] if not name[:200].endswith(".") else name[:199]


def test_every_generic_tool_is_snake_case_and_strict() -> None:
    for tool in generic_tools():
        assert STRICT.fullmatch(tool.name), tool.name
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", tool.name), f"{tool.name} is not snake_case"


def test_the_deprecated_names_are_the_same_tools_and_not_listed() -> None:
    listed = {t.name for t in generic_tools()}
    assert set(DEPRECATED_TOOLS) == {
        "list-jobs",
        "execute-job",
        "get-job-status",
        "register-job",
        "remove-job",
    }
    for old, new in DEPRECATED_TOOLS.items():
        assert old not in listed and new in listed
        assert resolve(old) is resolve(new) is not None
    assert resolve("list_jobs") is TOOLS[0]
    assert resolve("LIST-JOBS") is None and resolve("run__examples.add") is None


def test_a_job_tool_reads_as_its_job() -> None:
    assert tool_name("examples.add") == "run__examples__add"
    assert tool_name("tests.ops_only") == "run__tests__ops_only"
    assert tool_name("team.add-10") == "run__team__add-10"
    assert tool_name("x" * 59) == "run__" + "x" * 59
    # the old (deprecated) dotted names
    assert legacy_tool_name("examples.add") == "run__examples.add"


def test_names_that_could_collide_get_a_hash() -> None:
    assert tool_name("a.b") == "run__a__b"
    for name in ("a__b", "a_.b", "a._b", "_a.b", "x" * 60):
        assert "___" in tool_name(name), name
        assert re.search(r"___[0-9a-f]{12}$", tool_name(name)), name


def test_every_job_tool_name_is_strict_and_none_is_shared() -> None:
    rng = random.Random(986)
    names = set(ODD_NAMES) | {random_name(rng) for _ in range(20_000)}
    names = {n for n in names if jobs.NAME_RE.fullmatch(n) and len(n) <= 200}
    assert len(names) > 10_000
    seen: dict[str, str] = {}
    for name in sorted(names):
        tool = tool_name(name)
        assert STRICT.fullmatch(tool), (name, tool)
        assert tool == tool_name(name)  # deterministic
        assert seen.setdefault(tool, name) == name, f"{name!r} and {seen[tool]!r} share {tool}"
    generic = {t.name for t in generic_tools()} | set(DEPRECATED_TOOLS)
    assert not generic & set(seen)


def test_the_catalog_jobs_have_strict_distinct_tools() -> None:
    registry = catalog.load_registry(CATALOG.split(","))
    tools = [tool_name(spec.name) for spec in registry]
    assert tools and all(STRICT.fullmatch(t) for t in tools), tools
    assert len(set(tools)) == len(tools)
