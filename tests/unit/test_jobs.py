"""Declarations and the retry policy: pure, no broker, no database."""

from __future__ import annotations

import random
import threading
import types

import pydantic
import pytest

from jobsys import Job, JobDeclarationError, Registry, RetryPolicy, job
from jobsys.base import errors
from jobsys.declare.catalog import specs_in


class In(pydantic.BaseModel):
    x: int


class Out(pydantic.BaseModel):
    y: int


def test_function_style_takes_models_from_type_hints() -> None:
    @job("t.double", tags=["a"], labels={"k": "v"}, timeout=5)
    def double(data: In) -> Out:
        """Double x."""
        return Out(y=data.x * 2)

    assert double.input_model is In and double.output_model is Out
    assert double.description == "Double x."
    assert double.wants_context is False
    assert double(In(x=2)) == Out(y=4)
    assert double.timeout == 5 and double.tags == ("a",) and double.labels["k"] == "v"


def test_defaults_match_the_documented_ones() -> None:
    @job("t.defaults", input=In, output=Out)
    def body(data, ctx):  # type: ignore[no-untyped-def]
        return Out(y=1)

    assert body.wants_context is True
    assert body.timeout == 300
    assert body.retry == RetryPolicy(
        max_attempts=3, initial_backoff=1, multiplier=2, max_backoff=60, jitter=0.1
    )
    assert body.queue == "jobs" and body.hidden is False


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"retry": RetryPolicy(max_attempts=0)}, "retry.max_attempts"),
        ({"retry": RetryPolicy(initial_backoff=-1)}, "retry.initial_backoff"),
        ({"retry": RetryPolicy(multiplier=0.5)}, "retry.multiplier"),
        ({"retry": RetryPolicy(jitter=2)}, "retry.jitter"),
        ({"priority": 12}, "priority"),
        ({"queue": "bad queue"}, "queue"),
    ],
)
def test_bad_values_name_the_job_and_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(JobDeclarationError) as info:
        job("t.bad", input=In, output=Out, **kwargs)(lambda data: Out(y=0))  # type: ignore[arg-type]
    assert info.value.job == "t.bad" and info.value.field == field
    assert "t.bad" in str(info.value) and field in str(info.value)


def test_missing_schemas_are_refused() -> None:
    with pytest.raises(JobDeclarationError, match=r"'t\.noin': input"):
        job("t.noin")(lambda data: Out(y=0))
    with pytest.raises(JobDeclarationError, match=r"'t\.noout': output"):
        job("t.noout", input=In)(lambda data: 1)
    with pytest.raises(JobDeclarationError, match=r"'t\.bad name!': name"):
        job("t.bad name!", input=In, output=Out)(lambda data: Out(y=0))


def test_class_style_and_its_errors() -> None:
    class Double(Job):
        name = "t.class_double"
        Input = In
        Output = Out
        timeout = 10

        def run(self, input: In, ctx: object) -> Out:
            return Out(y=input.x * 2)

    assert Double.spec.name == "t.class_double" and Double.spec.timeout == 10
    assert Double.spec.fn(In(x=3), None) == Out(y=6)
    with pytest.raises(JobDeclarationError, match=r"'t\.class_bad': Output"):

        class NoOutput(Job):
            name = "t.class_bad"
            Input = In

    with pytest.raises(JobDeclarationError, match=r"'t\.class_neg': timeout"):

        class Negative(Job):
            name = "t.class_neg"
            Input = In
            Output = Out
            timeout = -5


def test_duplicate_names_are_refused_naming_both_modules() -> None:
    first = job("t.dup", input=In, output=Out)(lambda data: Out(y=0))
    second = job("t.dup", input=In, output=Out)(lambda data: Out(y=1))
    registry = Registry([first])
    with pytest.raises(JobDeclarationError, match="declared twice"):
        registry.add(second)


def test_registry_lookup_suggests_close_names() -> None:
    registry = Registry([job("billing.invoice", input=In, output=Out)(lambda d: Out(y=0))])
    with pytest.raises(errors.UnknownJob) as info:
        registry.get("billing.invoce")
    assert info.value.close == ["billing.invoice"]


def test_specs_in_finds_both_styles_declared_in_the_module() -> None:
    module = types.ModuleType("fake_jobs")
    spec = job("t.in_module", input=In, output=Out)(lambda d: Out(y=0))
    object.__setattr__(spec, "module", "fake_jobs")
    module.spec = spec  # type: ignore[attr-defined]
    module.foreign = job("t.foreign", input=In, output=Out)(lambda d: Out(y=0))  # type: ignore[attr-defined]
    assert [s.name for s in specs_in(module)] == ["t.in_module"]


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff=1, multiplier=2, max_backoff=60, jitter=0)
    assert [policy.next_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.next_delay(10_000) == 60  # no overflow


def test_jitter_only_shortens_the_delay_within_its_fraction() -> None:
    policy = RetryPolicy(initial_backoff=10, multiplier=1, max_backoff=60, jitter=0.25)
    rng = random.Random(7)
    delays = [policy.next_delay(1, rng) for _ in range(1000)]
    assert all(7.5 <= d <= 10 for d in delays)
    assert max(delays) - min(delays) > 2  # it really varies


def test_which_errors_retry() -> None:
    class Permanent(Exception):
        pass

    policy = RetryPolicy(max_attempts=3, never_retry=(Permanent,), retry_on=(OSError, ValueError))
    assert policy.should_retry(OSError(), 1)
    assert policy.should_retry(ValueError(), 2)
    assert not policy.should_retry(ValueError(), 3)  # out of attempts
    assert not policy.should_retry(KeyError(), 1)  # not in retry_on
    assert not policy.should_retry(Permanent(), 1)
    assert not policy.should_retry(errors.Fatal("no"), 1)
    assert policy.should_retry(errors.Retry("again"), 1)
    assert not policy.should_retry(errors.JobTimeout("slow"), 1)
    assert RetryPolicy(retry_on_timeout=True).should_retry(errors.JobTimeout("slow"), 1)


def test_a_jobs_retention_is_checked_when_declared_naming_the_option() -> None:
    from jobsys.declare import retention

    kept = retention.declare("r.ok", keep_completed="7d", keep_failed="never", keep_last=5)
    assert kept is not None and kept.to_json() == {
        "keep_completed": "7d",
        "keep_failed": "never",
        "keep_last": 5,
    }
    assert retention.declare("r.none") is None
    for option, value, message in (
        ("keep_failed", "a month", "keep_failed: 'a month' is not a number of seconds"),
        ("keep_completed", 0, "keep_completed: must be a positive duration"),
        ("keep_last", -1, "keep_last: must be a whole number of runs"),
        ("keep_last", "10", "keep_last: must be a whole number of runs"),
    ):
        with pytest.raises(JobDeclarationError, match=message):
            retention.declare("r.bad", **{option: value})  # type: ignore[arg-type]


class SlowSource:
    """A definition source whose first rebuild blocks until released, and which has one job
    ``t.new`` from revision 2 on."""

    def __init__(self, spec: object) -> None:
        self.spec = spec
        self.rev = 1
        self.in_build = threading.Event()
        self.release = threading.Event()
        self.builds = 0

    def same_store(self, other: object) -> bool:
        return other is self

    def revision(self) -> tuple[int, int]:
        return (self.rev, 0)

    def by_tenant(self) -> dict[str, list[object]]:
        self.builds += 1
        if self.builds == 2:  # the rebuild another thread started
            self.in_build.set()
            self.release.wait(10)
        return {"acme": ["t.new"] if self.rev >= 2 else []}

    def build(self, records: list[object], registry: Registry) -> tuple[dict[str, object], list]:
        return ({"t.new": self.spec} if records else {}), []

    def build_workflow(self, definition: object, registry: Registry) -> object:
        raise AssertionError("no workflows here")


def test_a_lookup_during_another_threads_rebuild_waits_for_it() -> None:
    """A name registered elsewhere is found by a lookup made while another thread is
    re-reading the definitions (it waits for that rebuild, then looks again)."""

    @job("t.new", input=In, output=Out)
    def new(data: In) -> Out:
        return Out(y=data.x)

    source = SlowSource(new)
    registry = Registry()
    registry.attach(source)  # type: ignore[arg-type]
    view = registry.scoped("acme")
    source.rev = 2
    other = threading.Thread(target=registry.refresh, kwargs={"force": True})
    other.start()
    assert source.in_build.wait(10)
    threading.Timer(0.3, source.release.set).start()
    assert view.get("t.new") is new
    other.join(10)
