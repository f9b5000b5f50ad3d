"""Embedders: what turns texts into vectors for semantic search (``JOBSYS_EMBEDDER``).

Two kinds, chosen by the setting's prefix:

- ``openai:URL``: an OpenAI-compatible embeddings endpoint (OpenAI, Azure OpenAI, vLLM,
  Ollama, LiteLLM, text-embeddings-inference...). One ``POST URL`` per batch with
  ``{"model": JOBSYS_EMBEDDER_MODEL, "input": [texts]}`` and, when JOBSYS_EMBEDDER_KEY is set,
  ``Authorization: Bearer KEY``; the answer's ``data[i].embedding`` (ordered by ``index``).
- ``python:module:callable``: any local callable taking a list of texts and returning one
  list of floats per text (a model already in the process, a test's embedder).

Nothing is downloaded: jobsys calls what the setting names, and that only off the per-job
path (the workers' indexer, ``jobsys.engine.indexer``) and for a query (one text).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from jobsys.base import errors

TIMEOUT = 30.0
"""Seconds an ``openai:`` embedder waits for the endpoint's answer."""


class Embedder(Protocol):
    name: str
    """What the setting named (``openai:URL``, ``python:module:callable``)."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order; ``EmbedderUnavailable`` if it cannot."""


def from_setting(setting: str | None, model: str, key: str | None) -> Embedder | None:
    """The embedder ``JOBSYS_EMBEDDER`` names, or ``None`` when it is unset (semantic search
    off); ``ConfigError`` naming the setting when it names nothing usable."""
    if not setting:
        return None
    kind, _, target = setting.partition(":")
    if kind == "openai" and target.startswith(("http://", "https://")):
        return OpenAIEmbedder(setting, target, model, key)
    if kind == "python" and target.count(":") == 1:
        module, _, attr = target.partition(":")
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise errors.ConfigError(
                f"JOBSYS_EMBEDDER={setting!r}: cannot import {attr!r} from {module!r} ({exc}); "
                "check the module is on PYTHONPATH"
            ) from exc
        if not callable(found):
            raise errors.ConfigError(f"JOBSYS_EMBEDDER={setting!r}: {attr!r} is not callable")
        return CallableEmbedder(setting, found)
    raise errors.ConfigError(
        f"JOBSYS_EMBEDDER={setting!r} is neither `openai:https://host/v1/embeddings` nor "
        "`python:module:callable`"
    )


class OpenAIEmbedder:
    """An OpenAI-compatible ``/embeddings`` endpoint, over HTTP(S)."""

    def __init__(self, name: str, url: str, model: str, key: str | None) -> None:
        self.name, self.url, self.model = name, url, model
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        import httpx  # only a process that embeds pays for it (a worker without an embedder)

        try:
            resp = httpx.post(
                self.url,
                json={"model": self.model, "input": list(texts)},
                headers=self._headers,
                timeout=TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise errors.EmbedderUnavailable(f"embedder {self.url}: {exc}") from exc
        if resp.status_code != 200:
            raise errors.EmbedderUnavailable(
                f"embedder {self.url} answered {resp.status_code}: {resp.text[:300]}"
            )
        try:
            data = sorted(resp.json()["data"], key=lambda d: d.get("index", 0))
            vectors = [d["embedding"] for d in data]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise errors.EmbedderUnavailable(
                f"embedder {self.url} answered no `data[].embedding`: {resp.text[:300]}"
            ) from exc
        return checked(self.name, texts, vectors)


class CallableEmbedder:
    """A local callable: ``f(texts) -> [[float, ...], ...]``."""

    def __init__(self, name: str, function: Callable[[list[str]], Any]) -> None:
        self.name, self._function = name, function

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        try:
            vectors = self._function(list(texts))
        except Exception as exc:
            raise errors.EmbedderUnavailable(f"embedder {self.name} raised {exc!r}") from exc
        return checked(self.name, texts, vectors)


def checked(name: str, texts: Sequence[str], vectors: Any) -> list[list[float]]:
    """``vectors`` as lists of floats, one per text, all of one length."""
    try:
        out = [[float(x) for x in v] for v in vectors]
    except (TypeError, ValueError) as exc:
        raise errors.EmbedderUnavailable(f"embedder {name} answered non-numbers: {exc}") from exc
    if len(out) != len(texts) or len({len(v) for v in out}) > 1 or not out[0]:
        raise errors.EmbedderUnavailable(
            f"embedder {name} answered {len(out)} vectors of lengths "
            f"{sorted({len(v) for v in out})} for {len(texts)} texts"
        )
    if not all(math.isfinite(x) for v in out for x in v):
        raise errors.EmbedderUnavailable(f"embedder {name} answered a vector with NaN or inf")
    return out
