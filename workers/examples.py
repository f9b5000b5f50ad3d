"""Example jobs: used by the README tour, the tests, and anyone trying jobsys."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pydantic

from jobsys import Fatal, Job, JobContext, RetryPolicy, Rule, job
from jobsys.declare.workflows import Step, workflow


class AddInput(pydantic.BaseModel):
    a: int
    b: int


class Sum(pydantic.RootModel[int]):
    """A plain integer."""


@job("examples.add", tags=["example", "math"], labels={"team": "core"})
def add(data: AddInput) -> Sum:
    """Add two integers."""
    return Sum(data.a + data.b)


class SleepInput(pydantic.BaseModel):
    seconds: float = pydantic.Field(ge=0, le=3600)


class Slept(pydantic.BaseModel):
    slept: float


@job("examples.sleep", tags=["example"], timeout=1800)
def sleep(data: SleepInput, ctx: JobContext) -> Slept:
    """Sleep for a while, reporting progress ten times a second; stops early when cancelled."""
    ctx.log(f"sleeping {data.seconds:g} s")
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < data.seconds:
        ctx.check_cancelled()
        ctx.progress(
            100 * elapsed / data.seconds if data.seconds else 100,
            message=f"{elapsed:.1f} of {data.seconds:g} s",
        )
        time.sleep(min(0.1, data.seconds - elapsed))
    ctx.progress(100, message="done")
    ctx.log("done")
    return Slept(slept=round(time.monotonic() - start, 3))


class FlakyInput(pydantic.BaseModel):
    failures: int = pydantic.Field(ge=0, le=100)


class FlakyOutput(pydantic.BaseModel):
    attempts: int


@job(
    "examples.flaky",
    tags=["example"],
    retry=RetryPolicy(max_attempts=5, initial_backoff=1.0, multiplier=2.0, jitter=0.1),
)
def flaky(data: FlakyInput, ctx: JobContext) -> FlakyOutput:
    """Fail the first ``failures`` attempts, then succeed."""
    ctx.log(f"attempt {ctx.attempt}")
    if ctx.attempt <= data.failures:
        raise RuntimeError(f"planned failure on attempt {ctx.attempt} of {data.failures}")
    return FlakyOutput(attempts=ctx.attempt)


class Empty(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class FailInput(pydantic.BaseModel):
    message: str = "this job always fails"


@job("examples.fail", tags=["example"], retry=RetryPolicy(max_attempts=1))
def fail(data: FailInput) -> Empty:
    """Always raise (never retried)."""
    raise Fatal(data.message)


class HashInput(pydantic.BaseModel):
    path: str = pydantic.Field(description="a file readable by the worker")
    algorithm: str = pydantic.Field("sha256", pattern="^(sha256|sha1|md5|blake2b)$")


class HashOutput(pydantic.BaseModel):
    path: str
    algorithm: str
    size: int
    digest: str


class HashFile(Job):
    """Hash a file in chunks, reporting progress (class-style declaration)."""

    name = "examples.hash_file"
    Input = HashInput
    Output = HashOutput
    tags = ("example", "io")
    timeout = 600

    def run(self, input: HashInput, ctx: JobContext) -> HashOutput:
        path = Path(input.path)
        if not path.is_file():
            raise Fatal(f"{path} is not a readable file on worker")
        size = path.stat().st_size
        digest = hashlib.new(input.algorithm)
        done = 0
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                done += len(chunk)
                ctx.progress(100 * done / size if size else 100, total=size)
        ctx.log(f"hashed {done} bytes of {path}")
        return HashOutput(
            path=str(path), algorithm=input.algorithm, size=size, digest=digest.hexdigest()
        )


class Granted(pydantic.BaseModel):
    by: str


@job(
    "examples.admin_only",
    tags=["example", "permissions"],
    access={
        action: Rule(roles=["admin"])
        for action in ("execute", "create", "update", "delete", "read", "list")
    },
)
def admin_only(data: Empty, ctx: JobContext) -> Granted:
    """Only principals with the role ``admin`` may run it (or see its runs)."""
    return Granted(by=ctx.principal.id)


# --- the diamond workflow: A -> (B, C) -> D --------------------------------------------------


class Count(pydantic.BaseModel):
    count: int = pydantic.Field(10, ge=0, le=1000)


class Numbers(pydantic.BaseModel):
    count: int
    items: list[int]


@job("examples.numbers", tags=["example", "workflow"])
def numbers(data: Count) -> Numbers:
    """The numbers 1 to ``count``."""
    return Numbers(count=data.count, items=list(range(1, data.count + 1)))


class N(pydantic.BaseModel):
    n: int


@job("examples.square", tags=["example", "workflow"])
def square(data: N) -> N:
    """``n`` squared."""
    return N(n=data.n * data.n)


class Values(pydantic.BaseModel):
    values: list[int]
    extra: int = 0


class Total(pydantic.BaseModel):
    total: int
    parts: int


@job("examples.total", tags=["example", "workflow"])
def total(data: Values) -> Total:
    """The sum of ``values`` and ``extra``."""
    return Total(total=sum(data.values) + data.extra, parts=len(data.values))


class DiamondInput(pydantic.BaseModel):
    count: int = pydantic.Field(10, ge=0, le=1000)
    bonus: int = 0


diamond = workflow(
    "examples.diamond",
    input=DiamondInput,
    description="Numbers 1..count; square each (fan-out) and add count + bonus; total them.",
    steps=[
        Step("numbers", "examples.numbers", {"count": "$input.count"}),
        Step(
            "squares",
            "examples.square",
            {"n": "$item"},
            depends_on=["numbers"],
            for_each="$steps.numbers.output.items",
        ),
        Step(
            "offset",
            "examples.add",
            {"a": "$steps.numbers.output.count", "b": "$input.bonus"},
            depends_on=["numbers"],
            retry=RetryPolicy(max_attempts=5),
        ),
        Step(
            "total",
            "examples.total",
            {"values": "$steps.squares.outputs.n", "extra": "$steps.offset.output"},
            depends_on=["squares", "offset"],
        ),
    ],
)
