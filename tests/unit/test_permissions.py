"""``Policy.may``: what an interface may show a principal, before any input is known."""

from __future__ import annotations

from typing import Any

import pydantic

from jobsys import Rule, job
from jobsys.declare.jobs import JobSpec
from jobsys.declare.permissions import Policy, Principal

ADMIN = Principal(id="ada", roles=("admin",))
OPERATOR = Principal(id="ola", roles=("operator",))
VIEWER = Principal(id="vic", roles=("viewer",))


def _small(who: Principal, spec: object, input: Any) -> bool:
    return int(input["cents"]) < 100  # needs the input: fails when asked without one


class Empty(pydantic.BaseModel):
    pass


def _spec(**access: Rule) -> JobSpec:
    @job("perm.test", access=access)
    def body(data: Empty) -> Empty:
        return Empty()

    return body


def test_may_follows_roles_and_scopes_and_leaves_input_guards_to_the_check() -> None:
    spec = _spec(
        create=Rule(roles=["operator"], guard=_small),
        execute=Rule(roles=["operator"]),
        delete=Rule(roles=["operator"], guard=lambda who, spec, input: who.id != "ola"),
    )
    policy = Policy()
    assert policy.may(VIEWER, "create", spec) is False
    assert policy.may(VIEWER, "delete", spec) is False
    assert policy.may(OPERATOR, "create", spec) is True  # the guard waits for the input
    assert policy.may(OPERATOR, "delete", spec) is False  # no input: its guard is asked
    assert policy.may(ADMIN, "delete", spec) is True
    assert policy.may(VIEWER, "read", spec) is True  # no rule: anyone
    assert not policy.allows(OPERATOR, "create", spec, {"cents": 500})
