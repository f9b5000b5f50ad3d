"""Declaring an external job (``@job(..., external=True, lease=...)``): bad options are refused
at import, naming the job and the field."""

from __future__ import annotations

import pydantic
import pytest

from jobsys import job
from jobsys.base import errors


class In(pydantic.BaseModel):
    x: int


class Out(pydantic.BaseModel):
    y: int


def stub(i: In) -> Out:
    """Done by an outside actor."""
    raise NotImplementedError


def test_an_external_job_keeps_its_lease_and_its_models() -> None:
    spec = job("t.external", external=True, lease=30)(stub)
    assert spec.external and spec.lease == 30 and spec.output_model is Out


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"lease": 30}, "lease"),  # a lease without external
        ({"external": True, "lease": 0}, "lease"),
        ({"external": True, "lease": float("inf")}, "lease"),
        ({"external": True, "max_concurrency": 2}, "external"),
    ],
)
def test_bad_external_options_are_refused_naming_the_field(
    options: dict[str, object], field: str
) -> None:
    with pytest.raises(errors.JobDeclarationError) as caught:
        job("t.bad", **options)(stub)  # type: ignore[arg-type]
    assert f"{field}" in str(caught.value) and "t.bad" in str(caught.value)
