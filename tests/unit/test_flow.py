"""Declaring flow limits (``jobsys.declare.flow``): what a declaration accepts, and a clear
error naming the job and the option for what it does not; ``BackOff``'s bounds."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from jobsys import BackOff, Job, JobDeclarationError, job
from jobsys.declare import definitions, flow, jobs


class Order(pydantic.BaseModel):
    customer_id: str
    cents: int = 0
    region: str | None = None


class Out(pydantic.BaseModel):
    ok: bool = True


def declare(**options: Any) -> jobs.JobSpec:
    @job("tests.flow_declared", **options)
    def body(order: Order) -> Out:
        return Out()

    return body


def test_a_job_declares_its_limits_and_jobs_without_have_none() -> None:
    spec = declare(max_concurrency=5, concurrency_key="customer_id", per_key=1, rate="100/m")
    assert spec.flow is not None
    assert spec.flow.describe() == {
        "max_concurrency": 5,
        "concurrency_key": "customer_id",
        "per_key": 1,
        "rate": "100/m",
    }
    assert declare().flow is None
    keyed = declare(concurrency_key="tenant")
    assert keyed.flow is not None and keyed.flow.slots() == 1  # per_key defaults to 1


def test_the_class_style_takes_the_same_options() -> None:
    class Charge(Job):
        name = "tests.flow_class"
        Input = Order
        Output = Out
        concurrency_key = "principal"
        rate = "20/s"
        rate_key = "customer_id"

        def run(self, input: Order, ctx: Any) -> Out:
            return Out()

    assert Charge.spec.flow == flow.FlowLimits(
        concurrency_key="principal", rate="20/s", rate_key="customer_id"
    )


@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        ({"max_concurrency": 0}, "max_concurrency", "positive whole number"),
        ({"max_concurrency": 2.5}, "max_concurrency", "positive whole number"),
        ({"max_concurrency": True}, "max_concurrency", "positive whole number"),
        ({"per_key": 2}, "per_key", "needs concurrency_key"),
        ({"concurrency_key": "customer", "per_key": -1}, "per_key", "positive"),
        ({"concurrency_key": "customer"}, "concurrency_key", "not a field of the input model"),
        ({"rate": "lots"}, "rate", "is not a rate"),
        ({"rate": "0/s"}, "rate", "at least 1"),
        ({"rate": 100}, "rate", "must be text"),
        ({"rate_key": "customer_id"}, "rate_key", "needs rate"),
        ({"rate": "5/s", "rate_key": "nope"}, "rate_key", "not a field"),
    ],
)
def test_a_bad_limit_is_refused_naming_the_option(
    options: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(JobDeclarationError) as caught:
        declare(**options)
    assert caught.value.field == field and says in caught.value.problem, caught.value
    assert "tests.flow_declared" in str(caught.value)


def test_a_secret_field_cannot_name_a_key() -> None:
    class Login(pydantic.BaseModel):
        user: str
        password: pydantic.SecretStr

    with pytest.raises(JobDeclarationError, match="concurrency_key: 'password' is a secret"):

        @job("tests.flow_secret", input=Login, output=Out, concurrency_key="password")
        def body(data: Login) -> Out:
            return Out()

    assert flow.declare("tests.flow_user", Login, concurrency_key="user") is not None


def test_rates_read_as_people_write_them() -> None:
    for rate, amount, seconds in (("100/m", 100, 60), ("20/s", 20, 1), ("5/2s", 5, 2)):
        item = flow.parse_rate("j", rate)
        assert (item.amount, item.get_expiry()) == (amount, seconds)
    assert flow.parse_rate("j", "3 per hour").get_expiry() == 3600


def test_keys_come_from_the_input_or_who_submitted() -> None:
    data = {"customer_id": "acme", "cents": 5}
    assert flow.key_of("customer_id", data, "ada", "t1") == "acme"
    assert flow.key_of("cents", data, "ada", "t1") == "5"
    assert flow.key_of("region", data, "ada", "t1") == flow.NO_KEY  # missing: one shared key
    assert flow.key_of("principal", data, "ada", "t1") == "ada"
    assert flow.key_of("tenant", data, "ada", "t1") == "t1"
    assert flow.key_of(None, data, "ada", "t1") is None


def test_a_runtime_definition_carries_limits_and_an_alias_keeps_its_targets() -> None:
    registry = jobs.Registry([declare(max_concurrency=3)])
    alias = definitions.parse(
        {"kind": "alias", "name": "tests.alias1", "target": "tests.flow_declared"}
    )
    assert isinstance(alias, definitions.AliasDefinition)
    assert definitions.build_alias(alias, registry).flow == flow.FlowLimits(max_concurrency=3)
    own = definitions.parse(
        {"kind": "alias", "name": "tests.alias2", "target": "tests.flow_declared", "rate": "1/s"}
    )
    assert isinstance(own, definitions.AliasDefinition)
    assert definitions.build_alias(own, registry).flow == flow.FlowLimits(rate="1/s")
    bad = definitions.parse(
        {"kind": "alias", "name": "tests.alias3", "target": "tests.flow_declared", "rate": "x"}
    )
    assert isinstance(bad, definitions.AliasDefinition)
    with pytest.raises(JobDeclarationError, match="rate"):
        definitions.build_alias(bad, registry)


@pytest.mark.parametrize("seconds", [-1, float("nan"), 400 * 86400, "5"])
def test_backoff_refuses_a_bad_wait(seconds: Any) -> None:
    with pytest.raises(ValueError, match="BackOff"):
        BackOff(seconds)


def test_backoff_keeps_its_seconds_and_reason() -> None:
    told = BackOff(30, reason="429 from the API")
    assert (told.seconds, told.reason, str(told)) == (30.0, "429 from the API", "429 from the API")
    assert str(BackOff(2)) == "backing off for 2 s"
