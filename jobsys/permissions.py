"""Principals: who asks for work. Every run records the principal that submitted it."""

from __future__ import annotations

import pydantic


class Principal(pydantic.BaseModel):
    """Who submitted a run: an id, roles, scopes and a tenant."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    id: str = pydantic.Field(min_length=1, max_length=200)
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    tenant: str = "default"


LOCAL = Principal(id="local", roles=("admin",), tenant="default")
"""The principal of the local CLI and of Python code that names none."""
