"""``catalog.digest``: the hash of a catalog that workers report (``jobsys workers list``)."""

from __future__ import annotations

import subprocess
import sys

import pydantic

from jobsys import Registry, job
from jobsys.declare import catalog, jobs
from tests.cluster import ROOT


class In(pydantic.BaseModel):
    x: int


class Out(pydantic.BaseModel):
    y: int


class WiderIn(pydantic.BaseModel):
    x: int
    scale: float = 1.0


def spec(name: str, version: str = "1", model: type[pydantic.BaseModel] = In) -> jobs.JobSpec:
    @job(name, input=model, output=Out, version=version)
    def body(data, ctx):  # type: ignore[no-untyped-def]
        return Out(y=1)

    return body


def test_the_same_jobs_hash_alike_in_any_order_and_any_process() -> None:
    a, b = spec("t.a"), spec("t.b")
    assert catalog.digest(Registry([a, b])) == catalog.digest(Registry([b, a]))
    modules = ("workers.examples", "tests.jobs")
    here = catalog.digest(catalog.load_registry(modules))
    code = (
        "from jobsys.declare import catalog; "
        f"print(catalog.digest(catalog.load_registry({modules!r})))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert there.stdout.strip() == here and len(here) == 16


def test_a_job_added_renamed_versioned_or_reshaped_changes_the_hash() -> None:
    base = catalog.digest(Registry([spec("t.a")]))
    changed = [
        Registry([spec("t.a"), spec("t.b")]),
        Registry([spec("t.renamed")]),
        Registry([spec("t.a", version="2")]),
        Registry([spec("t.a", model=WiderIn)]),
    ]
    digests = {catalog.digest(r) for r in changed}
    assert base not in digests and len(digests) == len(changed)
