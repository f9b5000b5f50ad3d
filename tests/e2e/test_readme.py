"""README.md, run as a newcomer would: every shell and Python block, in document order,
against a real ``jobsys up`` started in a private home, so that an example that stops working
fails CI.

What the test does with each fenced block (```sh, ```bash, ```console, ```python), steered
by visible markers on the line(s) just above the block, ``<!-- readme-test: ... -->``:

- no marker: the block is run. A shell block runs in ``bash -e -o pipefail`` (a console
  block: its ``$ `` lines), a Python block as a script of its own, both in the folder the
  system was started from, with the test's virtual environment first on ``PATH`` (``jobsys``
  and ``.venv/bin/jobsys`` both work) and the environment of the ``up`` block. A shell
  command whose comment starts with ``# exit N`` must exit with N. ``curl`` fails on an HTTP
  error status. The README's ``localhost:8000`` / ``127.0.0.1:8000`` are the test server's
  own port.
- ``skip (reason: ...)``: not run; the reason is required and printed.
- ``file NAME``: written to NAME in that folder before anything starts (a ``.py`` file is a
  module the ``up`` block may put in its catalog); counted as used, not run.
- ``up``: the block that starts the system. The test runs it in the background (it holds
  ``jobsys up``), waits for the worker to be ready, and gives its ``export``\\ed variables to
  every other block. Exactly one block is ``up``.

The counts of blocks run, written as files and opted out are printed, and the run count must
reach a floor, so the test cannot silently run nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import ROOT, Database, with_db
from tests.servers import free_port
from tests.waiting import NotYet, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.interface]

README = ROOT / "README.md"
SHELL = {"sh", "bash", "shell", "console"}
RUN_FLOOR = 20
"""At least this many blocks must run (the README has 22); a parser or marker gone wrong
shows here instead of passing on nothing."""

MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<body>.*?)\s*-->\s*$")
SKIP = re.compile(r"^skip\s*\(\s*reason:\s*(?P<reason>.*?)\s*\)$")
EXIT = re.compile(r"^(?P<cmd>\S.*?)\s+#\s*exit (?P<code>\d+)\b")
PORT = re.compile(r"\b(localhost|127\.0\.0\.1):8000\b")


@dataclasses.dataclass
class Block:
    line: int
    lang: str
    code: str
    markers: list[str]

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with the readme-test markers just above each."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(```+)\s*([\w+-]*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, ticks, lang = i, fence.group(1), fence.group(2).lower()
        i += 1
        body = []
        while i < len(lines) and lines[i].rstrip() != ticks:
            body.append(lines[i])
            i += 1
        i += 1
        markers: list[str] = []
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        while j >= 0 and (m := MARKER.match(lines[j].strip())):
            markers.insert(0, m.group("body"))
            j -= 1
        found.append(Block(start + 1, lang, "\n".join(body) + "\n", markers))
    return found


def shell_script(block: Block, port: int) -> str:
    """The block as a bash script: console prompts stripped, ``# exit N`` checked, the
    README's port made the test server's."""
    lines = block.code.splitlines()
    if block.lang == "console":
        lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
    joined: list[str] = []  # a command continued over lines (a trailing backslash) is one
    for ln in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1].rstrip() + " " + ln.strip()
        else:
            joined.append(ln)
    out = ['curl() { command curl --fail-with-body "$@"; }']
    for ln in joined:
        ln = PORT.sub(lambda m: f"{m.group(1)}:{port}", ln)
        m = EXIT.match(ln)
        if m:
            code = m.group("code")
            out.append(
                f"rc=0; {m.group('cmd')} || rc=$?; "
                f'[ "$rc" -eq {code} ] || {{ echo "expected exit {code}, got $rc: "'
                f"{shlex.quote(m.group('cmd'))} >&2; exit 1; }}"
            )
        else:
            out.append(ln)
    return "\n".join(out) + "\n"


@dataclasses.dataclass
class Plan:
    run: list[Block]
    files: list[tuple[Block, str]]
    skipped: list[tuple[Block, str]]
    up: Block


def classify(b: Block) -> tuple[str, str]:
    """What to do with a block: ("run"|"file"|"skip"|"up"|"ignore", detail), or
    ("problem", why)."""
    if b.lang not in SHELL | {"python"}:
        return (
            ("problem", "readme-test marker on a block that is never run")
            if b.markers
            else (
                "ignore",
                "",
            )
        )
    if len(b.markers) > 1:
        return "problem", f"more than one readme-test marker: {b.markers}"
    marker = b.markers[0] if b.markers else ""
    if not marker:
        return "run", ""
    if marker.startswith("skip"):
        m = SKIP.match(marker)
        if not m or not m.group("reason"):
            return "problem", "a skip needs its reason: <!-- readme-test: skip (reason: ...) -->"
        return "skip", m.group("reason")
    if marker.startswith("file "):
        return "file", marker.removeprefix("file ").strip()
    if marker == "up" and b.lang in SHELL:
        return "up", ""
    return "problem", f"unknown readme-test marker {marker!r}"


def plan(all_blocks: list[Block]) -> Plan:
    found: dict[str, list[tuple[Block, str]]] = {
        k: [] for k in ("run", "file", "skip", "up", "ignore", "problem")
    }
    for b in all_blocks:
        what, detail = classify(b)
        found[what].append((b, detail))
    problems = [f"{b.where}: {why}" for b, why in found["problem"]]
    if len(found["up"]) != 1:
        problems.append(f"exactly one block must be marked `up`, found {len(found['up'])}")
    assert not problems, "\n".join(problems)
    return Plan([b for b, _ in found["run"]], found["file"], found["skip"], found["up"][0][0])


@pytest.mark.backend_independent
def test_markers_are_parsed_and_a_skip_needs_a_reason() -> None:
    doc = (
        "<!-- readme-test: up -->\n```sh\njobsys up\n```\n\n"
        "```python\nprint(1)\n```\n"
        "<!-- readme-test: skip (reason: needs Docker) -->\n\n```sh\ndocker compose up\n```\n"
        "<!-- readme-test: file m.py -->\n```python\nX = 1\n```\n"
        '```json\n{"not": "run"}\n```\n'
    )
    p = plan(blocks(doc))
    assert [b.code for b in p.run] == ["print(1)\n"]
    assert [(b.code, reason) for b, reason in p.skipped] == [
        ("docker compose up\n", "needs Docker")
    ]
    assert [name for _, name in p.files] == ["m.py"]
    assert p.up.code == "jobsys up\n"
    for bad in ("skip", "skip (reason: )", "skip because"):
        doc_bad = (
            "<!-- readme-test: up -->\n```sh\njobsys up\n```\n"
            f"<!-- readme-test: {bad} -->\n```sh\nls\n```\n"
        )
        with pytest.raises(AssertionError, match="needs its reason"):
            plan(blocks(doc_bad))
    with pytest.raises(AssertionError, match="unknown readme-test marker"):
        plan(blocks("<!-- readme-test: sometimes -->\n```sh\nls\n```\n"))


@pytest.mark.backend_independent
def test_exit_comments_are_checked() -> None:
    script = shell_script(Block(1, "sh", "false   # exit 1: it fails\ntrue\n", []), 1234)
    assert subprocess.run(["bash", "-e", "-c", script]).returncode == 0
    script = shell_script(Block(1, "sh", "true   # exit 2: it should fail\n", []), 1234)
    assert subprocess.run(["bash", "-e", "-c", script], capture_output=True).returncode == 1
    assert "localhost:1234/x" in shell_script(Block(1, "sh", "curl localhost:8000/x\n", []), 1234)
    continued = Block(1, "sh", "printf '%s' \\\n    ok   # exit 0\n", [])
    assert "printf '%s' ok" in shell_script(continued, 1)


class System:
    """The README's own ``up`` block, running in the background in a fresh folder."""

    def __init__(self, folder: Path, env: dict[str, str], up: Block, port: int) -> None:
        self.folder, self.env, self.port = folder, env, port
        self.log = folder / "up.log"
        self.proc = subprocess.Popen(
            ["bash", "-e", "-c", shell_script(up, port)],
            env=env,
            cwd=folder,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        exports = "\n".join(ln for ln in up.code.splitlines() if ln.strip().startswith("export "))
        dumped = subprocess.run(
            ["bash", "-e", "-c", exports + "\nenv -0"],
            env=env,
            cwd=folder,
            capture_output=True,
            check=True,
        ).stdout
        self.block_env = dict(
            item.split("=", 1) for item in dumped.decode().split("\0") if "=" in item
        )

    def wait_ready(self, timeout: float = 90) -> None:
        worker_log = Path(self.env["JOBSYS_HOME"]) / "logs" / "worker1.log"

        def ready() -> bool | NotYet:
            if worker_log.exists() and "ready." in worker_log.read_text(errors="replace"):
                return True
            assert self.proc.poll() is None, self.log.read_text()
            return NotYet("\n" + self.log.read_text())

        eventually(ready, timeout, 0.2, what="jobsys up's worker to be ready")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(60)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        if block.lang == "python":
            script = self.folder / f"readme_block_{block.line}.py"
            script.write_text(block.code)
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-e", "-o", "pipefail", "-c", shell_script(block, self.port)]
        return subprocess.run(
            argv,
            env=self.block_env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=240,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture(scope="module")
def readme_plan() -> Plan:
    return plan(blocks(README.read_text()))


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, database_url: str | None, readme_plan: Plan
) -> Iterator[System]:
    folder = tmp_path_factory.mktemp("readme")
    for block, name in readme_plan.files:
        (folder / name).write_text(block.code)
    venv = Path(sys.prefix)
    (folder / ".venv").symlink_to(venv, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYS_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["JOBSYS_HOME"] = str(folder / ".jobsys")
    port = free_port()
    env["JOBSYS_HTTP_PORT"] = str(port)
    db = Database(folder, database_url) if database_url else None
    if db is not None:
        env["JOBSYS_DATABASE_URL"] = db.url
    if os.environ.get("JOBSYS_TEST_BROKER_URL"):
        env["JOBSYS_BROKER_URL"] = with_db(os.environ["JOBSYS_TEST_BROKER_URL"], 12)
        env["JOBSYS_RESULT_URL"] = with_db(os.environ["JOBSYS_TEST_BROKER_URL"], 13)
    runner = System(folder, env, readme_plan.up, port)
    try:
        runner.wait_ready()
        yield runner
    finally:
        runner.stop()
        if db is not None:
            db.drop()


@pytest.mark.timeout(1500)
def test_every_block_of_the_readme_runs(
    system: System, readme_plan: Plan, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = []
    took: list[tuple[float, str]] = []
    for block in readme_plan.run:
        started = time.monotonic()
        result = system.run(block)
        took.append((time.monotonic() - started, block.where))
        if result.returncode != 0:
            failures.append(
                f"--- {block.where} exited {result.returncode}\n{block.code}"
                f"--- stdout\n{result.stdout[-3000:]}--- stderr\n{result.stderr[-3000:]}"
            )
    with capsys.disabled():
        print(
            f"\nREADME.md: {len(readme_plan.run)} blocks run, {len(readme_plan.files)} written "
            f"as files, 1 started the system, {len(readme_plan.skipped)} opted out:"
        )
        for block, reason in readme_plan.skipped:
            print(f"  skipped {block.where}: {reason}")
        print("  slowest blocks: " + ", ".join(f"{w} {s:.1f}s" for s, w in sorted(took)[-5:]))
    assert not failures, "\n".join(failures) + f"\n--- jobsys up\n{system.log.read_text()[-3000:]}"
    assert len(readme_plan.run) >= RUN_FLOOR
