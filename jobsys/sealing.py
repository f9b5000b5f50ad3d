"""Secret input fields: sealed at rest and in transit, redacted everywhere they could show.

A field is secret when its type is ``pydantic.SecretStr`` (or ``SecretBytes``) or when it is
declared with ``Field(json_schema_extra={"secret": True})``. When a run is submitted, its
input is split: the run record's ``input`` holds ``"**********"`` in place of each secret, and
``sealed`` holds the secret values encrypted (Fernet: AES-128-CBC with HMAC-SHA256) with the
installation's key. Messages carry only the run id, so secrets never pass through Redis. The
worker opens the seal and gives the body the real values; the log lines, errors, tracebacks
and output the run produces are redacted before they are stored or sent.

The key is ``JOBSYS_SECRET_KEY`` (``jobsys secret-key`` prints a new one); without it, jobsys
keeps one in ``$JOBSYS_HOME/secret.key`` (mode 0600), which suits one machine. Every process
of a cluster must use the same key.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydantic

from jobsys import errors, private

REDACTED = "**********"
Path_ = tuple[str, ...]


@functools.cache
def secret_paths(model: type[pydantic.BaseModel]) -> list[Path_]:
    """The dotted paths of the secret fields of ``model`` (nested models included)."""
    found: list[Path_] = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if kind in (pydantic.SecretStr, pydantic.SecretBytes) or extra.get("secret") is True:
            found.append((name,))
        elif isinstance(kind, type) and issubclass(kind, pydantic.BaseModel):
            found.extend((name, *sub) for sub in secret_paths(kind))
    return found


def split(model: pydantic.BaseModel, paths: list[Path_]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model as JSON with each secret redacted, and the secrets by dotted path."""
    data = model.model_dump(mode="json")
    hidden: dict[str, Any] = {}
    for path in paths:
        value: Any = model
        for part in path:
            value = getattr(value, part, None)
        if value is None:
            continue
        if isinstance(value, pydantic.SecretStr | pydantic.SecretBytes):
            value = value.get_secret_value()
        if isinstance(value, bytes):
            value = value.decode()
        hidden[".".join(path)] = value
        _put(data, path, REDACTED)
    return data, hidden


def merge(data: dict[str, Any], hidden: dict[str, Any]) -> dict[str, Any]:
    """The input with its secrets back in place (on the worker, for the body)."""
    out = json.loads(json.dumps(data))
    for dotted, value in hidden.items():
        _put(out, tuple(dotted.split(".")), value)
    return out


def _put(data: dict[str, Any], path: Path_, value: Any) -> None:
    for part in path[:-1]:
        data = data.setdefault(part, {})
    data[path[-1]] = value


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
    """Replaces secret values in text and JSON with ``**********``."""

    def __init__(self, values: Iterable[Any]) -> None:
        # Longest first, so that a secret containing another is replaced whole.
        texts = {str(v) for v in values if v is not None and len(str(v)) >= 4}
        self._values = sorted(texts, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._values)

    def text(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        return text

    def json(self, value: Any) -> Any:
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.json(v) for k, v in value.items()}
        return value


NOTHING = Redactor(())
