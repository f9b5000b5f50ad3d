"""Reading one setting's value from the text of its environment variable, by the type of its
``Settings`` field (``jobsys.base.config``), with the bounds its metadata gives."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

from jobsys.base import errors, timeparse


def _optional(kind: Any) -> Any:
    """``X`` for ``X | None``, else ``kind`` itself."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return kind


def is_list(kind: Any) -> bool:
    return typing.get_origin(_optional(kind)) in (tuple, list)


TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def parse(f: dataclasses.Field[Any], kind: Any, raw: str) -> Any:
    """The value of ``raw``, the text of ``f``'s variable, by the field's type."""
    name, m = f.metadata["env"], f.metadata
    kind = _optional(kind)
    if m.get("duration"):
        return _duration(name, raw)
    if kind is bool:
        text = raw.strip().lower()
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise errors.ConfigError(f"{name}={raw!r} is not a boolean (1 or 0, true or false)")
    if kind is int or kind is float:
        return _number(f, kind, raw)
    if kind is Path:
        return Path(raw).resolve()
    if kind is str:
        return raw.strip()
    if is_list(kind):
        items = [i.strip() for i in raw.split(",") if i.strip()]
        if m["lower"]:
            items = [i.lower() for i in items]
        return typing.get_origin(kind)(items)
    raise TypeError(f"Settings.{f.name}: no parser for {kind!r}")  # a new type: add it here


def _duration(name: str, raw: str) -> float | None:
    """A duration (``7d``, ``12h``, ``3600``), or ``None`` for ``never``."""
    if raw.strip().lower() in ("never", "none", "off"):
        return None
    try:
        seconds = timeparse.parse_seconds(raw)
    except ValueError as exc:
        raise errors.ConfigError(f"{name}={raw!r}: {exc}, or never") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise errors.ConfigError(f"{name}={raw!r} must be a positive duration, or never")
    return seconds


def _number(f: dataclasses.Field[Any], kind: type[float], raw: str) -> float:
    name, m = f.metadata["env"], f.metadata
    try:
        value = kind(raw.strip())
    except ValueError:
        whole = "a whole number" if kind is int else "a number"
        raise errors.ConfigError(f"{name}={raw!r} is not {whole}") from None
    if not math.isfinite(value):
        raise errors.ConfigError(f"{name}={raw!r} is not a finite number")
    if value < 0:
        raise errors.ConfigError(f"{name}={raw!r} must not be negative")
    if m["maximum"] is not None and value > m["maximum"]:
        raise errors.ConfigError(f"{name}={raw!r} must be at most {m['maximum']:g}")
    if m["floor"] is not None:
        value = max(kind(m["floor"]), value)
    return value
