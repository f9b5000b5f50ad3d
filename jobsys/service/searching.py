"""How a search's text matches runs and jobs: ``keyword``, ``semantic`` or ``hybrid``.

- ``keyword``: whole words, all of them (``jobsys.store.search``); newest first.
- ``semantic``: by meaning: the texts whose vectors are most like the query's
  (``jobsys.store.semantic``), best first, none below ``JOBSYS_SEMANTIC_MIN_SCORE``. It needs
  an embedder (``JOBSYS_EMBEDDER``); only runs of jobs the principal may *read* are ranked by
  their text, so that a run's error never shows through a search it may not read.
- ``hybrid``: both lists fused by reciprocal rank (each result scores ``1 / (60 + rank)`` in
  each list it is in): what both find comes first, then what either finds.

The default is ``hybrid`` when an embedder is set, else ``keyword``.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobsys.base import embedders, errors

MODES = ("keyword", "semantic", "hybrid")
RRF_K = 60
"""The constant of reciprocal rank fusion (the value of its paper): a lower rank in one list
weighs less the further down it is, and no list's first place dominates."""


def resolve(mode: str | None, embedder: embedders.Embedder | None) -> str:
    """The mode to search with: ``mode``, or the default; ``InvalidFilter`` for an unknown
    one, ``SemanticSearchOff`` for semantic or hybrid without an embedder."""
    if not mode:
        return "hybrid" if embedder is not None else "keyword"
    if mode not in MODES:
        problem = {"loc": ["mode"], "type": "enum", "msg": f"must be one of {', '.join(MODES)}"}
        raise errors.InvalidFilter("search", [problem])
    if mode != "keyword" and embedder is None:
        raise errors.SemanticSearchOff(mode)
    return mode


def fuse(*rankings: Sequence[str]) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ranked lists of keys: each key with its score, best first
    (ties: in the order first seen)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking):
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
    return sorted(scores.items(), key=lambda item: -item[1])
