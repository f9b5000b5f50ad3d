"""The words of a text as keyword search sees them: runs of letters and digits, lower-cased.

One tokenizer for every search: of jobs and workflows in the registry (``jobsys.declare``)
and of runs in the store's search index (``jobsys.store.search``), so both agree."""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The words of a text as the index tokenizes it (runs of letters and digits)."""
    return _WORD.findall(text.lower())
