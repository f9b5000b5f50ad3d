"""Jobs with retention options of their own, for tests/integration/test_retention.py."""

from __future__ import annotations

import pydantic

from jobsys import job


class Nothing(pydantic.BaseModel):
    pass


@job("retention.kept_long", keep_completed="30d")
def kept_long(data: Nothing) -> Nothing:
    return Nothing()


@job("retention.short", keep_completed="1m", keep_last=1)
def short(data: Nothing) -> Nothing:
    return Nothing()
