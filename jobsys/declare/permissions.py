"""Principals and the rules that say what each may do to each job.

Every entry point acts as a ``Principal`` (an id, roles, scopes, a tenant). Each job may set a
``Rule`` per action; ``Policy.check`` decides in one place, used by the client (the service
layer every interface goes through) and again by the worker before a job body runs.

Actions, by what they do to a job's runs and schedules:

* ``execute``: submit a run (also retry one, trigger a schedule; checked again on the worker);
* ``create``, ``update``, ``delete``: create, change (pause, resume) and delete schedules, and
  ``update`` also cancels runs;
* ``read``: show a run (record, logs, result) or a schedule;
* ``list``: see the job's runs and schedules in lists;
* ``pause``: pause and resume the job (``jobsys jobs pause``); admins only unless the job or
  the policy sets a rule for it (pausing a queue, or everything, takes an admin role).

A rule allows a principal that has any of its roles or any of its scopes (a rule with neither
allows everyone) and for which its guard, if any, returns true. An action a job sets no rule
for falls back to the policy's default for that action. A principal with one of the policy's
admin roles may do everything in its tenant.

Administration (API tokens, the audit log) stays within the admin's tenant too. Acting on every
tenant takes one of the policy's superadmin roles (``JOBSYS_SUPERADMIN_ROLES``), or being the
local admin (``LOCAL``: the CLI and Python code with no token).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pydantic

from jobsys.base import errors

if TYPE_CHECKING:
    from jobsys.declare.jobs import JobSpec

ACTIONS = ("create", "read", "update", "delete", "execute", "list", "pause")
INPUT_ACTIONS = ("create", "execute")
"""The actions whose guard sees the input."""


class Principal(pydantic.BaseModel):
    """Who asks: an id, roles, scopes and a tenant."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    id: str = pydantic.Field(min_length=1, max_length=200)
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    tenant: str = pydantic.Field("default", min_length=1, max_length=200)


LOCAL = Principal(id="local", roles=("admin",), tenant="default")
"""The principal of the local CLI and of Python code that names none (see ``JOBSYS_TOKEN``)."""


def is_local(who: Principal) -> bool:
    """``who`` is the local admin itself: this very object, which only code running with
    access to the store holds. A token's principal is always a new object, so a token naming
    the same id, roles and tenant is an admin of the default tenant, not the local admin."""
    return who is LOCAL


Guard = Callable[[Principal, "JobSpec", Any], bool]
"""A custom check: ``guard(principal, job, input)``, the input as JSON (a dict) when the
action has one (execute, create), else ``None``."""


@dataclasses.dataclass(frozen=True)
class Rule:
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    guard: Guard | None = None

    def __init__(
        self, roles: Iterable[str] = (), scopes: Iterable[str] = (), guard: Guard | None = None
    ) -> None:
        object.__setattr__(self, "roles", tuple(roles))
        object.__setattr__(self, "scopes", tuple(scopes))
        object.__setattr__(self, "guard", guard)

    def allows(self, who: Principal, spec: JobSpec, input: Any = None) -> bool:
        if (self.roles or self.scopes) and not (
            set(self.roles) & set(who.roles) or set(self.scopes) & set(who.scopes)
        ):
            return False
        return self.guard is None or bool(self.guard(who, spec, input))


ANYONE = Rule()
ADMINS_ONLY = Rule(guard=lambda who, spec, input: False)
"""The rule of an action nobody but an admin may take unless a rule says otherwise."""
ADMIN_ACTIONS = frozenset({"pause"})
"""The actions whose rule, where neither the job nor the policy sets one, is ``ADMINS_ONLY``."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """Project-wide defaults (``JOBSYS_ADMIN_ROLES``, ``JOBSYS_SUPERADMIN_ROLES``)."""

    admin_roles: tuple[str, ...] = ("admin",)
    superadmin_roles: tuple[str, ...] = ("superadmin",)
    """Roles that administer every tenant (and are admins of their own)."""
    defaults: Mapping[str, Rule] = dataclasses.field(default_factory=dict)
    """The rule of an action a job does not set; absent: anyone in the tenant."""

    def is_admin(self, who: Principal) -> bool:
        """May do everything in its own tenant."""
        return bool(set(self.admin_roles + self.superadmin_roles) & set(who.roles))

    def is_superadmin(self, who: Principal) -> bool:
        """May administer every tenant: the local admin, or a superadmin role."""
        return is_local(who) or bool(set(self.superadmin_roles) & set(who.roles))

    def grant_problem(self, who: Principal, grantee: Principal) -> str | None:
        """Why ``who`` (an admin) may not make a token acting as ``grantee``, or ``None``.

        A superadmin may grant anything. Another admin stays in its own tenant, and may grant
        any role but an admin or superadmin role it does not hold itself (the other roles and
        scopes give nothing an admin does not already have in its tenant)."""
        if self.is_superadmin(who):
            return None
        if grantee.tenant != who.tenant:
            return (
                f"an admin acts within its own tenant ({who.tenant!r}), not {grantee.tenant!r}; "
                "administering every tenant needs a role of JOBSYS_SUPERADMIN_ROLES "
                f"({', '.join(self.superadmin_roles) or 'none set'})"
            )
        privileged = set(self.admin_roles + self.superadmin_roles)
        lacking = sorted((set(grantee.roles) & privileged) - set(who.roles))
        if lacking:
            return (
                f"it may not grant the role(s) {', '.join(lacking)}, which it does not hold "
                "(ask an admin who holds them)"
            )
        return None

    def allows(self, who: Principal, action: str, spec: JobSpec, input: Any = None) -> bool:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        if self.is_admin(who):
            return True
        return self._rule(action, spec).allows(who, spec, input)

    def _rule(self, action: str, spec: JobSpec) -> Rule:
        fallback = ADMINS_ONLY if action in ADMIN_ACTIONS else ANYONE
        return spec.access.get(action) or self.defaults.get(action) or fallback

    def may(self, who: Principal, action: str, spec: JobSpec) -> bool:
        """Whether ``who`` may ``action`` the job as far as can be told without an input: a
        hint for interfaces, which hide what is refused anyway (``check`` still decides). For
        the actions that take an input (``execute``, ``create``) the rule's guard is not asked,
        so a rule with a guard counts as allowing here."""
        if action in INPUT_ACTIONS and not self.is_admin(who):
            rule = self._rule(action, spec)
            return Rule(rule.roles, rule.scopes).allows(who, spec)
        return self.allows(who, action, spec)

    def check(self, who: Principal, action: str, spec: JobSpec, input: Any = None) -> None:
        """Raise ``PermissionDenied`` unless ``who`` may ``action`` the job ``spec``."""
        if not self.allows(who, action, spec, input):
            raise errors.PermissionDenied(who.id, action, spec.name)


def check_access(access: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of a job's ``access`` declaration, as (field, problem)."""
    found = []
    for action, rule in access.items():
        if action not in ACTIONS:
            found.append(("access", f"{action!r} is not an action; use {', '.join(ACTIONS)}"))
        elif not isinstance(rule, Rule):
            found.append((f"access.{action}", "must be a jobsys.Rule(roles=..., scopes=...)"))
    return found
