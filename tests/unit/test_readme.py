"""The README says what the code does: checked where a sentence names code's choices."""

from __future__ import annotations

import pathlib
import re

import click

from jobsys.cli import roles as cli
from jobsys.mcp.names import DEPRECATED_TOOLS, tool_name
from jobsys.mcp.tools import TOOLS

README = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_workers_section_names_every_pool_the_worker_command_accepts() -> None:
    section = README.split("### Workers", 1)[1].split("\n## ", 1)[0]
    (pool,) = [p for p in cli.worker.params if p.name == "pool"]
    assert isinstance(pool.type, click.Choice)
    assert "default **inline** mode" in section and pool.default == "inline"
    for choice in pool.type.choices:
        if choice != pool.default:
            assert f"`--pool {choice}`" in section, f"--pool {choice} is accepted: say so"
    assert "Other pools" in section and "are refused" in section


def test_the_readme_never_writes_a_token_to_a_file() -> None:
    """A token in a file of the working folder ends up in a repository or a backup."""
    writes = re.findall(r"^.*tokens create.*>.*$", README, re.MULTILINE)
    assert writes == []


def test_the_mcp_section_names_every_tool_and_every_deprecated_name() -> None:
    section = README.split("**Deprecated names.**", 1)[1].split("\n#", 1)[0]
    for old, new in DEPRECATED_TOOLS.items():
        assert f"`{old}`" in section and f"`{new}`" in section, old
    assert f"`{tool_name('examples.add')}`" in section and "`run__examples.add`" in section
    for tool in TOOLS:
        assert f"`{tool.name}`" in README, f"the README does not name the MCP tool {tool.name}"
