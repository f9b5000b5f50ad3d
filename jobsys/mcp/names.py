"""The names of the MCP tools: one style (snake_case), and names every client accepts.

Every tool name matches ``TOOL_NAME_RE``, ``^[A-Za-z0-9_-]{1,64}$``: the MCP specification
(SEP-986, ``mcp.shared.tool_name_validation``) allows 1 to 128 characters of
``[A-Za-z0-9._-]``, but several clients and model APIs accept only letters, digits, ``_``
and ``-``, at most 64 characters, and reject the whole tool list over one name.

A job's own tool (``tool_name``) is ``run__`` and the job name with each ``.`` written
``__``: ``examples.add`` -> ``run__examples__add``. That plain form is used only when it can
be read back unambiguously: the job name is segments of ``[A-Za-z0-9-]`` joined by single
``.`` or ``_`` (so a run of underscores in the tool name is one ``_`` or one ``.``, never
``___``), and the tool name fits in 64 characters. Any other job name (``a__b``, ``_private``,
``a._b``, a long name) gets ``run__``, a readable cut of its name, ``___`` and a hash of the
full name: a plain name never holds ``___``, so the two forms never meet, and two hashed
names are equal only if their hashes are. A call still finds its job by computing the names
of the visible jobs (``tools.call``), never by decoding the tool name.

Deprecated names, still answered but not listed: the hyphenated generic tools
(``DEPRECATED_TOOLS``: ``list-jobs`` -> ``list_jobs``, ...) and the per-job names of before,
``run__<job name>`` with its dots (``legacy_tool_name``: ``run__examples.add``).
"""

from __future__ import annotations

import hashlib
import re

JOB_TOOL_PREFIX = "run__"
MAX_TOOL_NAME = 64
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What every tool name matches: what the strictest clients accept."""

_PLAIN = re.compile(r"^[A-Za-z0-9-]+(?:[._][A-Za-z0-9-]+)*$")
"""Job names whose plain tool name reads back to one job name only."""
_HASH_MARK = "___"
_HASH_LENGTH = 12  # hex digits of sha256: 48 bits

DEPRECATED_TOOLS: dict[str, str] = {
    "list-jobs": "list_jobs",
    "execute-job": "execute_job",
    "get-job-status": "get_job_status",
    "register-job": "register_job",
    "remove-job": "remove_job",
}
"""The tools' former (hyphenated) names -> their names now. Still callable; not listed."""


def tool_name(job: str) -> str:
    """The name of job ``job``'s own tool (``run__examples__add`` for ``examples.add``)."""
    plain = JOB_TOOL_PREFIX + job.replace(".", "__")
    if _PLAIN.fullmatch(job) and len(plain) <= MAX_TOOL_NAME:
        return plain
    digest = hashlib.sha256(job.encode()).hexdigest()[:_HASH_LENGTH]
    room = MAX_TOOL_NAME - len(JOB_TOOL_PREFIX) - len(_HASH_MARK) - _HASH_LENGTH
    readable = re.sub(r"[^A-Za-z0-9-]+", "_", job).strip("_")[:room].rstrip("_")
    return f"{JOB_TOOL_PREFIX}{readable}{_HASH_MARK}{digest}"


_LEGACY_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def legacy_tool_name(job: str) -> str:
    """The name job ``job``'s tool had before (deprecated): ``run__<job>`` with its dots,
    shortened with a hash past 128 characters."""
    name = JOB_TOOL_PREFIX + job
    if _LEGACY_RE.fullmatch(name):
        return name
    digest = hashlib.sha256(job.encode()).hexdigest()[:10]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", job)[: 128 - len(JOB_TOOL_PREFIX) - 11]
    return f"{JOB_TOOL_PREFIX}{cleaned}_{digest}"


def deprecation(old: str, new: str) -> str:
    """What a call by a deprecated name is told (and what the server logs)."""
    return f"tool {old!r} is deprecated and will be removed: call {new!r}"
