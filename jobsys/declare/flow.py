"""A job's flow limits, as declared: how many of its runs may run at once (in all, and per
key), and how many may start in a window of time (``rate``, in all or per key). Checked when
the job is declared, each problem naming the option; enforced by the worker
(``jobsys.worker.gates``) against the run store (``jobsys.store.limits``) and, for rates, the
broker's Redis (the ``limits`` package).

A key is computed from a field of the run's input (``concurrency_key="customer_id"``), or
from who submitted it (``"principal"``: the principal's id, ``"tenant"``: its tenant). A run
whose input leaves the field out (or null) shares the key ``""`` with every such run.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import pydantic

from jobsys.base import errors, sealing

WHO = ("principal", "tenant")
"""Keys taken from who submitted the run, not from its input."""
NO_KEY = ""
"""The key of a run whose input has no value for the key field."""


@dataclasses.dataclass(frozen=True)
class FlowLimits:
    """A job's limits; ``None`` where it declares none."""

    max_concurrency: int | None = None
    """Runs of the job running at once, cluster-wide."""
    concurrency_key: str | None = None
    """An input field (or ``principal``/``tenant``) whose value names a group of runs..."""
    per_key: int | None = None
    """...of which at most this many run at once (1 when a key is given without it)."""
    rate: str | None = None
    """Starts allowed per window, as ``limits.parse`` reads it: ``"100/m"``, ``"20/second"``."""
    rate_key: str | None = None
    """An input field (or ``principal``/``tenant``): the rate applies to each value apart."""

    @property
    def concurrency(self) -> bool:
        """Whether the job's runs take a slot at the claim."""
        return self.max_concurrency is not None or self.concurrency_key is not None

    def slots(self) -> int | None:
        """Runs of one key at once (``None``: no key)."""
        if self.concurrency_key is None:
            return None
        return self.per_key or 1

    def describe(self) -> dict[str, Any]:
        """What ``jobs show``, the HTTP API, MCP and the dashboard show."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def declare(
    job: str,
    input_model: type[pydantic.BaseModel] | None,
    max_concurrency: Any = None,
    concurrency_key: Any = None,
    per_key: Any = None,
    rate: Any = None,
    rate_key: Any = None,
) -> FlowLimits | None:
    """The limits a declaration gives, or ``None`` when it gives none; raises
    ``JobDeclarationError`` naming the job and the option."""
    given = (max_concurrency, concurrency_key, per_key, rate, rate_key)
    if all(v is None for v in given):
        return None
    for name, value in (("max_concurrency", max_concurrency), ("per_key", per_key)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise errors.JobDeclarationError(
                job, name, f"must be a positive whole number, got {value!r}"
            )
    if per_key is not None and concurrency_key is None:
        raise errors.JobDeclarationError(
            job, "per_key", "needs concurrency_key (the input field whose values it limits)"
        )
    _check_key(job, "concurrency_key", concurrency_key, input_model)
    _check_key(job, "rate_key", rate_key, input_model)
    if rate_key is not None and rate is None:
        raise errors.JobDeclarationError(job, "rate_key", "needs rate (e.g. rate='100/m')")
    if rate is not None:
        parse_rate(job, rate)
    return FlowLimits(max_concurrency, concurrency_key, per_key, rate, rate_key)


@functools.lru_cache(maxsize=512)
def parse_rate(job: str, rate: Any) -> Any:
    """``rate`` as a ``limits.RateLimitItem``; ``JobDeclarationError`` naming ``rate``."""
    import limits  # (loaded only by jobs that declare a rate)

    if not isinstance(rate, str):
        raise errors.JobDeclarationError(job, "rate", f"must be text like '100/m', got {rate!r}")
    try:
        item = limits.parse(_long_units(rate))
    except ValueError as exc:
        raise errors.JobDeclarationError(
            job, "rate", f"{rate!r} is not a rate ({exc}); write it like '100/m' or '20/second'"
        ) from None
    if item.amount < 1:
        raise errors.JobDeclarationError(job, "rate", f"must allow at least 1, got {rate!r}")
    return item


_SHORT = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


def _long_units(rate: str) -> str:
    """``"100/m"`` (and ``/s``, ``/h``, ``/d``, ``/5m``) in the words ``limits.parse`` reads:
    ``"100/1 minute"``; any other text as it is."""
    found = _SHORT.match(rate)
    if found is None:
        return rate
    amount, count, unit = found.groups()
    return f"{amount}/{count or 1} {_UNITS[unit]}"


def _check_key(
    job: str, option: str, key: Any, input_model: type[pydantic.BaseModel] | None
) -> None:
    if key is None:
        return
    if not isinstance(key, str) or not key:
        raise errors.JobDeclarationError(job, option, f"must be a field name, got {key!r}")
    if key in WHO or input_model is None:
        return
    if key not in input_model.model_fields:
        fields = ", ".join(sorted(input_model.model_fields)) or "none"
        raise errors.JobDeclarationError(
            job,
            option,
            f"{key!r} is not a field of the input model {input_model.__name__} (its fields: "
            f"{fields}); or use 'principal' or 'tenant'",
        )
    if (key,) in {tuple(p) for p in sealing.secret_paths(input_model)}:
        raise errors.JobDeclarationError(
            job,
            option,
            f"{key!r} is a secret field: its value is never kept in the clear, so it cannot "
            "name a key; use another field",
        )


def key_of(field: str | None, input: Any, principal_id: str, tenant: str) -> str | None:
    """A run's key for ``field`` (``None``: no key): the principal's id, the tenant, or the
    value of the input field as text (``NO_KEY`` when the input has none)."""
    if field is None:
        return None
    if field == "principal":
        return principal_id
    if field == "tenant":
        return tenant
    value = input.get(field) if isinstance(input, dict) else getattr(input, field, None)
    if value is None:
        return NO_KEY
    return (value if isinstance(value, str) else str(value))[:200]
