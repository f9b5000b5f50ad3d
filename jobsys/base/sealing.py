"""Secret input fields: sealed at rest and in transit, redacted everywhere they could show.

A field is secret when its type is ``pydantic.SecretStr`` (or ``SecretBytes``, ``Secret[T]``)
or when it is declared with ``Field(json_schema_extra={"secret": True})``, at any depth: in a
sub-model, under ``Optional``/``Union``, in a ``list[...]``/``tuple[...]`` or the values of a
``dict[str, ...]``. When a run is submitted, its input is split: the run record's ``input``
holds ``"**********"`` in place of each secret, and ``sealed`` holds the secret values
encrypted (Fernet: AES-128-CBC with HMAC-SHA256) with the installation's key. Messages carry
only the run id, so secrets never pass through Redis. The worker opens the seal and gives the
body the real values; the log lines, errors, tracebacks and output the run produces are
redacted before they are stored or sent (``Redactor`` says how short values are treated).

The key is ``JOBSYS_SECRET_KEY`` (``jobsys secret-key`` prints a new one); without it, jobsys
keeps one in ``$JOBSYS_HOME/secret.key`` (mode 0600), which suits one machine. Every process
of a cluster must use the same key.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
from pydantic_core import to_jsonable_python

from jobsys.base import errors, private

REDACTED = "**********"
ANY = "*"
"""In a path: every item of a list, or every value of a dict."""
Path_ = tuple[str, ...]
"""A secret's place: field names and dict keys, ``ANY`` for every item of a list or dict."""
Place = tuple[str | int, ...]
"""A secret's concrete place in one input: keys, and list indexes."""

_SECRET_TYPES: tuple[type, ...] = (pydantic.SecretStr, pydantic.SecretBytes)
if hasattr(pydantic, "Secret"):
    _SECRET_TYPES = (*_SECRET_TYPES, pydantic.Secret)
_SEQUENCES = (list, tuple, set, frozenset, Sequence)
_MAPPINGS = (dict, Mapping)


@functools.cache
def secret_paths(model: type[pydantic.BaseModel]) -> list[Path_]:
    """The paths of the secret fields of ``model``, at any depth (``ANY`` for the items of
    a list or the values of a dict)."""
    return _dedupe(_model_paths(model, ()))


NESTED_SELF = 3
"""A model that contains itself (a tree) is searched this many levels deep."""


def _model_paths(model: type[pydantic.BaseModel], seen: tuple[type, ...]) -> Iterator[Path_]:
    if seen.count(model) >= NESTED_SELF:
        return
    seen = (*seen, model)
    for name, field in model.model_fields.items():
        if _marked(field):
            yield (name,)
        else:
            yield from ((name, *sub) for sub in _type_paths(field.annotation, seen))


def _marked(info: Any) -> bool:
    extra = getattr(info, "json_schema_extra", None)
    return isinstance(extra, dict) and extra.get("secret") is True


def _type_paths(kind: Any, seen: tuple[type, ...]) -> Iterator[Path_]:
    """The secret paths under a value of type ``kind`` (``()``: the value itself)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated:
        marked = any(_marked(m) for m in args[1:])
        yield from [()] if marked else _type_paths(args[0], seen)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _type_paths(arg, seen)
    elif _is(origin or kind, _SECRET_TYPES):
        yield ()
    elif _is(origin, (*_MAPPINGS, *_SEQUENCES)) and args:
        # A dict's values; a list's, a set's or a tuple's items (any item may be any type).
        items = args[-1:] if _is(origin, _MAPPINGS) else [a for a in args if a is not Ellipsis]
        for arg in items:
            yield from ((ANY, *sub) for sub in _type_paths(arg, seen))
    elif _is(kind, (pydantic.BaseModel,)):
        yield from _model_paths(kind, seen)


def _is(kind: Any, bases: tuple[type, ...]) -> bool:
    return isinstance(kind, type) and issubclass(kind, bases)


def _dedupe(paths: Iterable[Path_]) -> list[Path_]:
    return [p for p in dict.fromkeys(paths) if p]


def places(data: Any, path: Sequence[str | int]) -> Iterator[tuple[Place, Any]]:
    """Each concrete place of ``path`` in ``data`` (a model's python dump, or JSON) with the
    value found there; places holding ``None`` or nothing are left out. An ``int`` in the
    path is one index of a list."""
    if not path:
        if data is not None:
            yield (), data
        return
    head, rest = path[0], path[1:]
    if head == ANY:
        if isinstance(data, Mapping):
            items: Iterable[tuple[str | int, Any]] = data.items()
        elif isinstance(data, list | tuple):
            items = enumerate(data)
        else:
            items = ()
        for key, value in items:
            yield from (((key, *sub), found) for sub, found in places(value, rest))
    elif _holds(data, head):
        yield from (((head, *sub), found) for sub, found in places(data[head], rest))


def _holds(data: Any, key: str | int) -> bool:
    if isinstance(data, list | tuple):
        return isinstance(key, int) and -1 < key < len(data)
    return isinstance(data, Mapping) and key in data


def split(
    model: pydantic.BaseModel, paths: Iterable[Sequence[str | int]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model as JSON with each secret redacted, and the secrets by place."""
    paths = list(paths)
    if not paths:  # most models: one dump, as before secrets existed
        return model.model_dump(mode="json"), {}
    return split_json(model.model_dump(mode="json"), paths, model.model_dump())


def split_json(
    data: dict[str, Any], paths: Iterable[Sequence[str | int]], raw: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """JSON ``data`` with each secret at ``paths`` redacted, and the secrets by place (read
    from ``raw``, the same value before it was made JSON, when given: a ``SecretStr`` is
    already masked in JSON)."""
    out = json.loads(json.dumps(data))
    hidden: dict[str, Any] = {}
    for path in paths:
        for place, value in places(data if raw is None else raw, path):
            place = tuple(k if isinstance(k, int) else str(k) for k in place)
            hidden[place_key(place)] = _revealed(value)
            _put(out, place, REDACTED)
    return out, hidden


def _revealed(value: Any) -> Any:
    """A secret's value as JSON, with any secret inside it revealed too (a whole sub-model
    marked secret holds ``SecretStr`` fields of its own)."""
    if isinstance(value, _SECRET_TYPES):
        value = typing.cast(Any, value).get_secret_value()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, Mapping):
        return {str(k): _revealed(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_revealed(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return to_jsonable_python(value, fallback=str)


def place_key(place: Place) -> str:
    """A place as a key of the sealed values (JSON: keys may hold dots)."""
    return json.dumps(list(place), separators=(",", ":"))


def prefixed(prefix: str, hidden: dict[str, Any]) -> dict[str, Any]:
    """Sealed values placed under ``prefix`` (to seal the parts of one record together)."""
    return {place_key((prefix, *_place(key))): value for key, value in hidden.items()}


def _place(key: str) -> Place:
    if key.startswith("["):
        return tuple(json.loads(key))
    return tuple(key.split("."))  # sealed before places were JSON: a dotted path of names


def merge(data: dict[str, Any], hidden: dict[str, Any], under: Place = ()) -> dict[str, Any]:
    """The input with its secrets back in place (on the worker, for the body). ``under``:
    only the secrets whose place starts there (that part removed)."""
    out = json.loads(json.dumps(data))
    for key, value in hidden.items():
        place = _place(key)
        if place[: len(under)] == under and len(place) > len(under):
            _put(out, place[len(under) :], value)
    return out


def _put(data: Any, place: Place, value: Any) -> None:
    for part in place[:-1]:
        data = data[int(part)] if isinstance(data, list) else data.setdefault(str(part), {})
    last = place[-1]
    if isinstance(data, list):
        data[int(last)] = value
    else:
        data[str(last)] = value


def texts(values: Iterable[Any]) -> Iterator[str]:
    """The text of each secret value (the items of a secret list or dict too)."""
    for value in values:
        if isinstance(value, Mapping):
            yield from texts(value.values())
        elif isinstance(value, list | tuple):
            yield from texts(value)
        elif value is not None and not isinstance(value, bool):
            yield str(value)


class Sealer:
    """Encrypts and decrypts the secrets of runs with the installation's key. The key (and
    the cryptography package) is loaded on first use: most runs have no secret."""

    def __init__(self, key: str | bytes | None = None, home: Path | None = None) -> None:
        self._key, self._home = key, home
        self._fernet: Any = None

    @classmethod
    def for_home(cls, key: str | None, home: Path) -> Sealer:
        """The configured key, or the one kept in ``home`` (created on first use)."""
        return cls(key or None, home)

    def _cipher(self) -> Any:
        if self._fernet is None:
            from cryptography.fernet import Fernet

            key = self._key or self._home_key(Fernet)
            try:
                self._fernet = Fernet(key)
            except (ValueError, TypeError):
                raise errors.ConfigError(
                    "JOBSYS_SECRET_KEY is not a valid key; make one with `jobsys secret-key`"
                ) from None
        return self._fernet

    def _home_key(self, fernet: Any) -> bytes:
        assert self._home is not None, "a Sealer needs a key or a home folder"
        path = self._home / "secret.key"
        if not path.exists():
            private.make_dir(self._home)
            with contextlib.suppress(FileExistsError):  # another process made it first
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(fernet.generate_key())
        return path.read_bytes().strip()

    def seal(self, hidden: dict[str, Any]) -> str | None:
        if not hidden:
            return None
        return str(self._cipher().encrypt(json.dumps(hidden).encode()).decode())

    def open(self, sealed: str | None) -> dict[str, Any]:
        if not sealed:
            return {}
        from cryptography.fernet import InvalidToken

        try:
            return dict(json.loads(self._cipher().decrypt(sealed.encode())))
        except InvalidToken:
            raise errors.ConfigError(
                "this run's secrets were sealed with another key: give every process the "
                "same JOBSYS_SECRET_KEY"
            ) from None


class Redactor:
    """Replaces secret values in text and JSON with ``**********``.

    A value of ``WHOLE_BELOW`` characters or more is replaced wherever it occurs, inside other
    text too. A shorter one (``"ab"``) would match inside unrelated words, so it is replaced
    only where it stands whole: a JSON string equal to it, or in text a run of it not touching
    a letter, digit or ``_`` on either side (``"key=ab,"`` is redacted, ``"about"`` is not).
    """

    WHOLE_BELOW = 4

    def __init__(self, values: Iterable[Any]) -> None:
        # Longest first, so that a secret containing another is replaced whole.
        found = sorted({t for t in texts(values) if t}, key=len, reverse=True)
        self._exact = frozenset(found)
        parts = [
            re.escape(t) if len(t) >= self.WHOLE_BELOW else rf"(?<!\w){re.escape(t)}(?!\w)"
            for t in found
        ]
        self._pattern = re.compile("|".join(parts)) if parts else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def json(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return REDACTED if value in self._exact else self.text(value)
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.json(v) for k, v in value.items()}
        return value


NOTHING = Redactor(())
