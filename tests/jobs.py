"""The jobs the tests run on real workers. Each body appends one line per execution to
``$JOBSYS_TEST_EFFECTS/<run id>``, so tests count executions (side effects) exactly."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from pathlib import Path

import pydantic
from celery.exceptions import SoftTimeLimitExceeded

from jobsys import JobContext, Principal, RetryPolicy, Rule, job
from jobsys.base.errors import JobTimeout
from jobsys.declare import cadence
from jobsys.declare.workflows import Step, workflow


def record_effect(ctx: JobContext, note: str = "") -> None:
    folder = os.environ.get("JOBSYS_TEST_EFFECTS")
    if folder:
        with (Path(folder) / ctx.run_id).open("a") as f:
            f.write(f"{ctx.attempt} {os.getpid()} {time.time():.6f} {note}\n")


class Seconds(pydantic.BaseModel):
    seconds: float = 0.0


class Done(pydantic.BaseModel):
    pid: int


@job("tests.effect", timeout=60)
def effect(data: Seconds, ctx: JobContext) -> Done:
    """Record one execution, sleep, record the end."""
    record_effect(ctx, "start")
    time.sleep(data.seconds)
    return Done(pid=os.getpid())


@job("tests.urgent", timeout=60, priority=8)
def urgent(data: Seconds, ctx: JobContext) -> Done:
    """``tests.effect`` with a priority of its own (8, above the default 5)."""
    record_effect(ctx, "start")
    time.sleep(data.seconds)  # (the body's work)
    return Done(pid=os.getpid())


class Gate(pydantic.BaseModel):
    path: str


@job("tests.gated", timeout=120)
def gated(data: Gate, ctx: JobContext) -> Done:
    """Keeps its worker busy until the file ``path`` exists (the test opens the gate)."""
    record_effect(ctx, "start")
    deadline = time.monotonic() + 110
    while not Path(data.path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # (the body's work: waiting for the gate)
    return Done(pid=os.getpid())


@job("tests.fail_once", timeout=60, retry=RetryPolicy(max_attempts=2, initial_backoff=0, jitter=0))
def fail_once(data: Seconds, ctx: JobContext) -> Done:
    """Fails its first attempt; retried at once (no backoff)."""
    record_effect(ctx, "start")
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return Done(pid=os.getpid())


class Noted(pydantic.BaseModel):
    earlier: list[str]
    """The log lines of the attempts before this one, as ``ctx.logs()`` read them."""


@job(
    "tests.flaky_twice",
    timeout=60,
    retry=RetryPolicy(max_attempts=3, initial_backoff=0, jitter=0),
)
def flaky_twice(data: Seconds, ctx: JobContext) -> Noted:
    """Fails its first two attempts, each with its own error; the third reads back what the
    attempts before it logged and completes."""
    record_effect(ctx, "start")
    ctx.log(f"attempt {ctx.attempt} begins")
    time.sleep(data.seconds)  # (the body's work)
    if ctx.attempt == 1:
        raise ConnectionError("upstream refused the first attempt")
    if ctx.attempt == 2:
        raise TimeoutError("upstream too slow on the second attempt")
    return Noted(earlier=[line.message for line in ctx.logs() if line.attempt < ctx.attempt])


class LongFirst(pydantic.BaseModel):
    seconds: float = 0.0
    then: float = 0.0


@job("tests.long_first", timeout=60)
def long_first(data: LongFirst, ctx: JobContext) -> Done:
    """Like ``tests.effect``, sleeping ``seconds`` on its first attempt and ``then`` after."""
    record_effect(ctx, "start")
    time.sleep(data.seconds if ctx.attempt == 1 else data.then)  # (the body's work)
    return Done(pid=os.getpid())


@job("tests.slow_timeout", timeout=1.5, retry=RetryPolicy(max_attempts=3))
def slow_timeout(data: Seconds, ctx: JobContext) -> Done:
    """Sleeps past its 1.5 s timeout (soft limit)."""
    record_effect(ctx)
    time.sleep(data.seconds)
    return Done(pid=os.getpid())


@job("tests.stubborn", timeout=1.0, retry=RetryPolicy(max_attempts=1))
def stubborn(data: Seconds, ctx: JobContext) -> Done:
    """Ignores the soft time limit, so only the hard limit stops it."""
    record_effect(ctx)
    end = time.monotonic() + data.seconds
    while time.monotonic() < end:
        with contextlib.suppress(SoftTimeLimitExceeded, JobTimeout):
            time.sleep(0.05)
    return Done(pid=os.getpid())


class KillInput(pydantic.BaseModel):
    kill_attempts: int = 1


@job("tests.kill_self", timeout=30, retry=RetryPolicy(max_attempts=3, initial_backoff=0.1))
def kill_self(data: KillInput, ctx: JobContext) -> Done:
    """SIGKILLs its own process on the first ``kill_attempts`` attempts (an OOM kill)."""
    record_effect(ctx)
    if ctx.attempt <= data.kill_attempts:
        os.kill(os.getpid(), signal.SIGKILL)
    return Done(pid=os.getpid())


class Bad(pydantic.BaseModel):
    pass


class Strict(pydantic.BaseModel):
    value: int


@job("tests.bad_output", output=Strict)
def bad_output(data: Bad) -> Strict:
    """Returns output that does not match its schema."""
    return {"value": "not a number"}  # type: ignore[return-value]


@job("tests.chatty", timeout=60)
def chatty(data: Seconds, ctx: JobContext) -> Done:
    """Logs and reports progress for ``seconds``, ignoring cancellation requests."""
    record_effect(ctx)
    steps = 10
    for i in range(steps):
        ctx.log(f"step {i + 1} of {steps}")
        ctx.progress(100 * (i + 1) / steps, total=steps, message=f"step {i + 1}")
        time.sleep(data.seconds / steps)
    return Done(pid=os.getpid())


class Until(pydantic.BaseModel):
    until: int = 3


class Count(pydantic.BaseModel):
    n: int


@job("tests.countdown", timeout=30)
def countdown(data: Until, ctx: JobContext) -> Count:
    """An ongoing job: counts its fires in the schedule's metadata; done at ``until``."""
    record_effect(ctx, f"{ctx.trigger} {ctx.fire_at.isoformat() if ctx.fire_at else ''}")
    n = int(ctx.metadata.get("n", 0)) + 1
    ctx.update_metadata(n=n, principal=ctx.principal.id)
    if n >= data.until:
        ctx.done({"n": n})
    return Count(n=n)


@job("tests.self_stop", timeout=30)
def self_stop(data: Seconds, ctx: JobContext) -> Done:
    """Pauses its own schedule on its first fire."""
    record_effect(ctx)
    ctx.deactivate()
    return Done(pid=os.getpid())


class Empty(pydantic.BaseModel):
    pass


@job(
    "tests.declared",
    schedule=cadence.every(3600, start_at="2100-01-01T00:00:00+00:00", metadata={"v": 1}),
)
def declared(data: Empty) -> Empty:
    """Carries a schedule declared in code (its first fire is far away)."""
    return Empty()


OPS = Rule(roles=["ops"])
OPS_OR_READER = Rule(roles=["ops"], scopes=["runs:read"])


@job(
    "tests.ops_only",
    access={
        "execute": OPS,
        "create": OPS,
        "update": OPS,
        "delete": OPS,
        "read": OPS_OR_READER,
        "list": OPS_OR_READER,
    },
)
def ops_only(data: Seconds, ctx: JobContext) -> Done:
    """Runs only for the role ``ops``; readers with the scope ``runs:read`` may look."""
    record_effect(ctx)
    return Done(pid=os.getpid())


OPERATOR = Rule(roles=["operator"])


@job(
    "tests.operated",
    access={action: OPERATOR for action in ("execute", "create", "update", "delete")},
)
def operated(data: Seconds, ctx: JobContext) -> Done:
    """Run, scheduled and cancelled by the role ``operator`` (and admins); anyone of the tenant
    may read and list its runs (the access matrix, tests/security)."""
    record_effect(ctx)
    return Done(pid=os.getpid())


operated_flow = workflow(
    "tests.operated_flow",
    timeout=3600,
    steps=[Step("later", "tests.operated", {"seconds": 0}, delay=3000)],
)
"""Its one step waits 50 minutes: a workflow run that stays running, with no step in flight."""

admin_flow = workflow(
    "tests.admin_flow",
    timeout=3600,
    steps=[
        Step("secret", "examples.admin_only", {}, delay=3000),
        Step("later", "tests.operated", {"seconds": 0}, delay=3000),
    ],
)
"""As ``tests.operated_flow``, with a step only admins may see."""


class Amount(pydantic.BaseModel):
    cents: int


def _small(principal: Principal, spec: object, input: dict[str, object] | None) -> bool:
    return input is None or int(str(input.get("cents", 0))) < 100


@job("tests.small_pay", access={"execute": Rule(scopes=["pay"], guard=_small)})
def small_pay(data: Amount) -> Amount:
    """Needs the scope ``pay``, and a guard: under 100 cents."""
    return data


class Credentials(pydantic.BaseModel):
    token: pydantic.SecretStr
    api_key: str = pydantic.Field("", json_schema_extra={"secret": True})
    mode: str = "ok"


class Echo(pydantic.BaseModel):
    said: str


@job("tests.uses_secret", timeout=30, retry=RetryPolicy(max_attempts=1))
def uses_secret(data: Credentials, ctx: JobContext) -> Echo:
    """Leaks its secrets every way a careless job could: logs, progress, errors, output."""
    token = data.token.get_secret_value()
    record_effect(ctx, hashlib.sha256(f"{token}|{data.api_key}".encode()).hexdigest())
    ctx.log(f"calling the API with {token} and {data.api_key}")
    ctx.progress(50, message=f"half way, token {token}")
    if data.mode == "fail":
        raise RuntimeError(f"the API refused {token}")
    return Echo(said=f"token was {token}" if data.mode == "echo" else "ok")


# --- one job per shape of secret field (tests/security/test_secret_sentinel.py) -------------


class Creds(pydantic.BaseModel):
    user: str = "deploy"
    password: pydantic.SecretStr


class NestedSecret(pydantic.BaseModel):
    creds: Creds


class OptionalNestedSecret(pydantic.BaseModel):
    creds: Creds | None = None


class ListedSecrets(pydantic.BaseModel):
    creds: list[Creds]


class KeyedSecrets(pydantic.BaseModel):
    creds: dict[str, Creds]


class OptionalSecret(pydantic.BaseModel):
    token: pydantic.SecretStr | None = None


class MarkedSecret(pydantic.BaseModel):
    token: str = pydantic.Field(json_schema_extra={"secret": True})


class ShortSecret(pydantic.BaseModel):
    pin: pydantic.SecretStr


class SecretEcho(pydantic.BaseModel):
    digest: str
    """SHA-256 of the secret values received, joined by ``|``."""
    length: int


def echo_secrets(ctx: JobContext, values: list[str]) -> SecretEcho:
    """Proves the body got the real values (their digest, in its effects file and output)
    and logs each value as a careless job would (the log must be redacted)."""
    digest = hashlib.sha256("|".join(values).encode()).hexdigest()
    record_effect(ctx, f"secrets {digest} {sum(len(v) for v in values)}")
    for value in values:
        ctx.log(f"received secret={value} (as given)")
    return SecretEcho(digest=digest, length=sum(len(v) for v in values))


def _pw(creds: Creds) -> str:
    return creds.password.get_secret_value()


@job("tests.secret_nested", timeout=30, retry=RetryPolicy(max_attempts=1))
def secret_nested(data: NestedSecret, ctx: JobContext) -> SecretEcho:
    return echo_secrets(ctx, [_pw(data.creds)])


@job("tests.secret_optional_nested", timeout=30, retry=RetryPolicy(max_attempts=1))
def secret_optional_nested(data: OptionalNestedSecret, ctx: JobContext) -> SecretEcho:
    return echo_secrets(ctx, [_pw(data.creds)] if data.creds else [])


@job("tests.secret_list", timeout=30, retry=RetryPolicy(max_attempts=1))
def secret_list(data: ListedSecrets, ctx: JobContext) -> SecretEcho:
    return echo_secrets(ctx, [_pw(c) for c in data.creds])


@job("tests.secret_dict", timeout=30, retry=RetryPolicy(max_attempts=1))
def secret_dict(data: KeyedSecrets, ctx: JobContext) -> SecretEcho:
    return echo_secrets(ctx, [_pw(c) for _, c in sorted(data.creds.items())])


@job("tests.secret_optional", timeout=30, retry=RetryPolicy(max_attempts=1))
def secret_optional(data: OptionalSecret, ctx: JobContext) -> SecretEcho:
    return echo_secrets(ctx, [data.token.get_secret_value()] if data.token else [])


@job("tests.secret_marked", timeout=30, retry=RetryPolicy(max_attempts=1))
def secret_marked(data: MarkedSecret, ctx: JobContext) -> SecretEcho:
    return echo_secrets(ctx, [data.token])


@job("tests.secret_short", timeout=30, retry=RetryPolicy(max_attempts=1))
def secret_short(data: ShortSecret, ctx: JobContext) -> SecretEcho:
    return echo_secrets(ctx, [data.pin.get_secret_value()])


class DeployInput(pydantic.BaseModel):
    creds: Creds
    """Declared secret (its ``password``)."""
    key: str
    """Plain in the model, secret because a step passes it to a secret field."""
    note: str = ""


secret_flow = workflow(
    "tests.secret_flow",
    [
        Step("login", "tests.secret_nested", {"creds": "$input.creds"}),
        Step("sign", "tests.secret_marked", {"token": "$input.key"}, depends_on=["login"]),
    ],
    input=DeployInput,
    timeout=60,
)


chain = workflow(
    "tests.chain",
    steps=[
        Step("first", "tests.effect", {"seconds": 0}),
        Step("second", "tests.effect", {"seconds": 0}, depends_on=["first"], delay=3),
        Step("third", "tests.effect", {"seconds": 0}, depends_on=["second"]),
    ],
)

fail_fast = workflow(
    "tests.fail_fast",
    steps=[
        Step("slow", "tests.effect", {"seconds": 3}),
        Step("boom", "examples.fail", {"message": "step failed"}),
        Step("after_slow", "tests.effect", {"seconds": 0}, depends_on=["slow"]),
        Step("cleanup", "tests.effect", {"seconds": 0}, depends_on=["boom"], when="failed"),
    ],
)

too_slow = workflow(
    "tests.too_slow",
    timeout=2,
    steps=[
        Step("long", "tests.effect", {"seconds": 20}),
        Step("next", "tests.effect", {"seconds": 0}, depends_on=["long"]),
    ],
)


@job("tests.fails_first", retry=RetryPolicy(max_attempts=1))
def fails_first(data: Seconds, ctx: JobContext) -> Done:
    """Fails on its first attempt; its own policy never retries."""
    record_effect(ctx)
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return Done(pid=os.getpid())


recovering = workflow(
    "tests.recovering",
    steps=[
        Step(
            "retried",
            "tests.fails_first",
            {"seconds": 0},
            retry=RetryPolicy(max_attempts=3, initial_backoff=0.1, max_backoff=0.2),
        ),
        Step("plain", "tests.fails_first", {"seconds": 0}),
    ],
    failure="continue",
)

pair = workflow(
    "tests.pair",
    steps=[
        Step("one", "tests.effect", {"seconds": 0}),
        Step("two", "tests.effect", {"seconds": 0}, depends_on=["one"]),
    ],
)


class Seen(pydantic.BaseModel):
    outputs: dict[str, object]


@job("tests.sees_dependencies", timeout=30)
def sees_dependencies(data: Seconds, ctx: JobContext) -> Seen:
    """Returns the outputs of the runs it depended on."""
    record_effect(ctx)
    return Seen(outputs=ctx.dependencies)


# --- jobs for the dashboard's browser test (tests/e2e/test_dashboard.py) ---------------------


class UiOptions(pydantic.BaseModel):
    verbose: bool = False


class UiProgressInput(pydantic.BaseModel):
    label: str = pydantic.Field(min_length=1, description="shown in the logs")
    seconds: float = pydantic.Field(2.0, ge=0, le=60)
    steps: int = pydantic.Field(10, ge=1, le=100)
    mode: str = pydantic.Field(
        "even", pattern="^(even|steady)$", json_schema_extra={"enum": ["even", "steady"]}
    )
    shout: bool = False
    words: list[str] = []
    options: UiOptions | None = None


class UiProgressOutput(pydantic.BaseModel):
    label: str
    steps: int
    words: list[str]


@job("ui.progress", tags=["ui"], timeout=120, retry=RetryPolicy(max_attempts=1))
def ui_progress(data: UiProgressInput, ctx: JobContext) -> UiProgressOutput:
    """Reports progress from 0 to 100 % over ``seconds`` (every field type, for the form)."""
    record_effect(ctx)
    label = data.label.upper() if data.shout else data.label
    ctx.log(f"{label}: starting {data.steps} {data.mode} steps")
    ctx.progress(0, total=data.steps, message="starting")
    for i in range(data.steps):
        time.sleep(data.seconds / data.steps)
        ctx.progress(100 * (i + 1) / data.steps, total=data.steps, message=f"step {i + 1}")
        ctx.log(f"{label}: step {i + 1} of {data.steps}")
    return UiProgressOutput(label=label, steps=data.steps, words=data.words)


class UiLongInput(pydantic.BaseModel):
    seconds: float = pydantic.Field(120.0, ge=0, le=600)


@job("ui.long", tags=["ui"], timeout=700, retry=RetryPolicy(max_attempts=1))
def ui_long(data: UiLongInput, ctx: JobContext) -> Done:
    """Runs for ``seconds``, checking for cancellation ten times a second."""
    record_effect(ctx)
    ctx.log("long run started")
    end = time.monotonic() + data.seconds
    while time.monotonic() < end:
        ctx.check_cancelled()
        time.sleep(0.1)
    return Done(pid=os.getpid())


class UiFailInput(pydantic.BaseModel):
    reason: str = "planned failure"


@job("ui.fail", tags=["ui"], retry=RetryPolicy(max_attempts=1))
def ui_fail(data: UiFailInput, ctx: JobContext) -> Done:
    """Always fails (never retried by its policy; retry it by hand)."""
    record_effect(ctx)
    ctx.log(f"failing: {data.reason}")
    raise RuntimeError(data.reason)


# --- tenancy and hardening (tests/security/test_tenancy.py) --------------------------------


class Note(pydantic.BaseModel):
    text: str


ADMIN_ONLY = Rule(roles=["admin"])


@job(
    "tests.admin_echo",
    retry=RetryPolicy(max_attempts=1),
    access={a: ADMIN_ONLY for a in ("execute", "create", "update", "delete", "read", "list")},
)
def admin_echo(data: Note) -> Note:
    """Echo the note; only admins may run it or see its runs (their input and output)."""
    return Note(text=f"echo {data.text}")


class NulWhere(pydantic.BaseModel):
    where: str


@job("tests.nul", timeout=30, retry=RetryPolicy(max_attempts=1))
def nul(data: NulWhere, ctx: JobContext) -> Note:
    """Put a NUL character where asked: the output, a log line and progress, or the error
    (or, for ``surrogate``, an output the database itself refuses)."""
    if data.where == "output":
        return Note(text="before\x00after")
    if data.where == "error":
        raise ValueError("bad\x00value")
    if data.where == "surrogate":  # a lone surrogate: PostgreSQL's jsonb refuses it too
        return Note(text="before\ud800after")
    ctx.log("line\x00end")
    ctx.progress(50, message="half\x00way")
    return Note(text="logged")
