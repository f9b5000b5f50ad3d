"""Keyword search over runs: their errors and their log lines.

A separate full-text table (``jobsys_search``: SQLite FTS5, or a PostgreSQL ``tsvector``
column with a GIN index) holds one row per indexed text of a run: the error of a run that
ended failed or cancelled, and each batch of log lines a worker flushed. Nothing is indexed
for a run that completes without logging, so the per-job path pays nothing for search. Job
names, descriptions and tags are matched against the registry by the caller and become a
``job IN (...)`` condition (``RunFilter.text_jobs``), which the job index answers.

Keywords are matched as whole words (all of them, in any order), case-insensitively, among
the newest ``SEARCH_WINDOW`` matching entries (or 20 times the page size, if larger): a word
found in a million old errors costs what a rare one does.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from jobsys.base import keywords

TABLE = "jobsys_search"
MAX_WORDS = 16
SEARCH_WINDOW = 1000


def create(conn: sa.Connection) -> None:
    """Create the search table of a new database (revision 0003 made it in older ones)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY, "
                "run_id VARCHAR(32) NOT NULL, body TEXT NOT NULL, "
                "tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED)"
            )
        )
        conn.execute(
            sa.text(f"CREATE INDEX IF NOT EXISTS ix_{TABLE}_tsv ON {TABLE} USING GIN (tsv)")
        )
        conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS ix_{TABLE}_run ON {TABLE} (run_id)"))
    else:
        conn.execute(
            sa.text(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5("
                "run_id UNINDEXED, body, tokenize = 'unicode61')"
            )
        )


def index(conn: sa.Connection, entries: list[tuple[str, str]]) -> None:
    """Add ``(run_id, text)`` entries, in the caller's transaction."""
    if entries:
        conn.execute(
            sa.text(f"INSERT INTO {TABLE} (run_id, body) VALUES (:run_id, :body)"),
            [{"run_id": r, "body": b} for r, b in entries],
        )


def error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    return " ".join(str(error.get(k) or "") for k in ("type", "reason", "message")).strip()


def matching_runs(dialect: str, text: str, window: int) -> Any | None:
    """A subquery of the ids of runs whose indexed text holds every keyword of ``text``,
    from the newest ``window`` matching entries (so that a common word costs no more than a
    rare one); ``None`` when ``text`` has no keyword."""
    found = keywords.words(text)[:MAX_WORDS]
    if not found:
        return None
    if dialect == "postgresql":
        sql = (
            f"SELECT run_id FROM {TABLE} WHERE tsv @@ plainto_tsquery('simple', :search_q) "
            "ORDER BY id DESC LIMIT :search_window"
        )
        query = " ".join(found)
    else:
        # FTS5 walks its matches in rowid order, newest first here, and stops at the limit.
        # Each keyword is quoted: user text never becomes FTS syntax; all are required.
        sql = (
            f"SELECT run_id FROM {TABLE} WHERE {TABLE} MATCH :search_q "
            "ORDER BY rowid DESC LIMIT :search_window"
        )
        query = " ".join(f'"{w}"' for w in found)
    return sa.text(sql).bindparams(search_q=query, search_window=window)
