"""Semantic search: vectors of the indexed texts, and ranking by similarity to a query's.

The indexed texts are those of keyword search (``search.py``: a run's error, each batch of
its log lines), each job's name, description and tags, and each schedule's name and
description. Their vectors live in ``jobsys_embeddings``, written by the workers' indexer
(``jobsys.engine.indexer``), never on the per-job path. A vector is stored as float32 bytes
of unit length, on both databases: the PostgreSQL this was built on has no pgvector, and
its Python's ``sqlite3`` cannot load extensions (sqlite-vec), so the ranking is portable:
the cosine (a dot product of unit vectors) is computed here, over the newest ``WINDOW``
vectors of the runs the caller's filter keeps (its tenant, the jobs it may read), as keyword
search looks at its newest matching entries.

Many workers index at once safely: the one that holds the lease in ``jobsys_embed_progress``
takes the next entries (the others skip the pass), and a unique constraint makes writing the
same vector twice a no-op.
"""

from __future__ import annotations

import array
import hashlib
import math
import operator
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.store import database, schema, search

E = schema.embeddings
P = schema.embed_progress
WINDOW = 2000
"""Vectors compared per query at most: the newest of the runs the filter keeps."""
MAX_CHARS = 2000
"""Characters of a text the embedder is given (a long log batch: its beginning)."""
BATCH = 64
"""Jobs' or schedules' texts embedded per call."""
LEASE_SECONDS = 120.0
"""How long the indexer's claim of the work lasts unless renewed (each batch renews it)."""

Embed = Callable[[list[str]], list[list[float]]]


def pack(vector: Sequence[float]) -> bytes:
    """``vector`` at unit length (a zero vector stays zero), as little-endian float32."""
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    packed = array.array("f", (x / norm for x in vector))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack(blob: bytes) -> array.array[float]:
    out = array.array("f")
    out.frombytes(blob)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine of two unit vectors; ``-1`` when their lengths differ (another embedder's)."""
    if len(a) != len(b):
        return -1.0
    return float(sum(map(operator.mul, a, b)))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class SemanticStore:
    """The vectors of one database: the indexer's writes, the searches' reads."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._entry_id = "id" if engine.dialect.name == "postgresql" else "rowid"

    # --- the indexer ---------------------------------------------------------------------

    def index_runs(self, embed: Embed, batch: int, holder: str, stop: Any = None) -> int:
        """Embed the keyword index's entries not embedded yet, ``batch`` per call, while this
        ``holder`` holds the work; the number embedded (0: none new, or another holds it)."""
        done = 0
        try:
            while stop is None or not stop.is_set():
                taken = self._take(holder, batch)
                if taken is None:
                    return done
                entries, last = taken
                vectors = embed([body[:MAX_CHARS] for _, _, body in entries]) if entries else []
                with self.engine.begin() as conn:
                    moved = conn.execute(
                        P.update()
                        .where(P.c.name == "runs", P.c.holder == holder)
                        .values(done_to=last)
                    ).rowcount
                    if moved:  # (else the lease ran out and another holder took the work)
                        rows = [
                            {"kind": "run", "ref": run_id, "source": str(i), "vector": pack(v)}
                            for (i, run_id, _), v in zip(entries, vectors, strict=True)
                        ]
                        self._insert(conn, rows)
                done += len(entries)
                if len(entries) < batch:
                    return done
            return done
        finally:
            self._release(holder)

    def _take(self, holder: str, batch: int) -> tuple[list[tuple[int, str, str]], int] | None:
        """Claim (or renew) the work and read the next entries: those up to the newest
        entry seen by the previous pass. ``None``: another holder has it, or nothing is new.

        Why the lag of one pass: PostgreSQL hands out ids when rows are inserted, so an
        entry can commit after one with a higher id; by the next pass the short
        transactions that write entries (a run's end, a log flush) have all committed."""
        now = time.time()
        with self.engine.begin() as conn:
            self._ensure_progress(conn)
            claimed = conn.execute(
                P.update()
                .where(P.c.name == "runs", sa.or_(P.c.until < now, P.c.holder == holder))
                .values(holder=holder, until=now + LEASE_SECONDS)
            ).rowcount
            if not claimed:
                return None
            done_to, settled_to = conn.execute(
                sa.select(P.c.done_to, P.c.settled_to).where(P.c.name == "runs")
            ).one()
            entries = [
                (int(i), str(r), str(b))
                for i, r, b in conn.execute(
                    sa.text(
                        f"SELECT {self._entry_id}, run_id, body FROM {search.TABLE} "
                        f"WHERE {self._entry_id} > :after AND {self._entry_id} <= :upto "
                        f"ORDER BY {self._entry_id} LIMIT :n"
                    ),
                    {"after": done_to, "upto": settled_to, "n": batch},
                )
            ]
            if len(entries) < batch:  # caught up: what is newest now is taken next pass
                newest = conn.execute(
                    sa.text(f"SELECT max({self._entry_id}) FROM {search.TABLE}")
                ).scalar()
                conn.execute(
                    P.update()
                    .where(P.c.name == "runs")
                    .values(settled_to=max(int(newest or 0), settled_to))
                )
        if not entries:
            return None
        return entries, entries[-1][0]

    def _ensure_progress(self, conn: sa.Connection) -> None:
        conn.execute(
            database.insert(conn, P)
            .values(name="runs", done_to=0, settled_to=0, holder=None, until=0.0)
            .on_conflict_do_nothing()
        )

    def _release(self, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                P.update()
                .where(P.c.name == "runs", P.c.holder == holder)
                .values(holder=None, until=0.0)
            )

    def _insert(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(database.insert(conn, E).on_conflict_do_nothing(), rows)

    def index_jobs(self, embed: Embed, texts: Mapping[str, str]) -> int:
        """Embed each job's text (name -> text) whose vector is missing or out of date, and
        drop the vectors of texts no longer current; the number embedded."""
        return self._index_texts(embed, "job", texts)

    def schedules_seen(self) -> tuple[int, str]:
        """How many schedules there are and the newest change of one: while it stays the
        same, no schedule's text changed (the indexer skips them)."""
        S = schema.schedules
        with self.engine.connect() as conn:
            count, newest = conn.execute(
                sa.select(sa.func.count(), sa.func.max(S.c.updated_at))
            ).one()
        return int(count), str(newest)

    def index_schedules(self, embed: Embed) -> int:
        """Embed each schedule's name and description (when new or changed), and drop the
        vectors of schedules gone or changed; the number embedded."""
        S = schema.schedules
        query = sa.select(S.c.id, S.c.name, S.c.description, S.c.job)
        with self.engine.connect() as conn:
            texts = {
                str(i): " ".join(p for p in (name, description or "", job) if p)
                for i, name, description, job in conn.execute(query)
            }
        return self._index_texts(embed, "schedule", texts)

    def _index_texts(self, embed: Embed, kind: str, texts: Mapping[str, str]) -> int:
        wanted = {ref: digest(text) for ref, text in texts.items()}
        with self.engine.connect() as conn:
            have = {
                (str(r), str(s))
                for r, s in conn.execute(sa.select(E.c.ref, E.c.source).where(E.c.kind == kind))
            }
        missing = [r for r, d in wanted.items() if (r, d) not in have]
        done = 0
        for start in range(0, len(missing), BATCH):
            part = missing[start : start + BATCH]
            vectors = embed([texts[r][:MAX_CHARS] for r in part])
            with self.engine.begin() as conn:
                self._insert(
                    conn,
                    [
                        {"kind": kind, "ref": r, "source": wanted[r], "vector": pack(v)}
                        for r, v in zip(part, vectors, strict=True)
                    ],
                )
            done += len(part)
        stale = [(r, s) for r, s in have if wanted.get(r) != s]
        with self.engine.begin() as conn:
            for ref, source in stale:
                conn.execute(
                    E.delete().where(E.c.kind == kind, E.c.ref == ref, E.c.source == source)
                )
        return done

    # --- the searches --------------------------------------------------------------------

    def nearest_runs(
        self, kept: Callable[[Any], Any], vector: Sequence[float], min_score: float, limit: int
    ) -> list[tuple[str, float]]:
        """The runs ``kept`` keeps (a function adding the caller's conditions on
        ``jobsys_runs`` to a query) whose texts are most like ``vector``, best first, each
        with its best text's score, none below ``min_score``.

        A join, newest vector first: the database walks ``ix_jobsys_embeddings_kind``
        backwards and looks each run up by its key, until it has ``WINDOW`` (``IN (runs
        of the filter)`` would first list every run of the tenant)."""
        T = schema.runs
        query = kept(
            sa.select(E.c.ref, E.c.vector)
            .select_from(E.join(T, T.c.id == E.c.ref))
            .where(E.c.kind == "run")
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(E.c.id.desc()).limit(WINDOW))
            return _best(rows, vector, min_score, limit)

    def nearest_jobs(
        self, names: Sequence[str], vector: Sequence[float], min_score: float, limit: int
    ) -> list[tuple[str, float]]:
        """The jobs among ``names`` whose text is most like ``vector``, best first."""
        if not names:
            return []
        query = sa.select(E.c.ref, E.c.vector).where(E.c.kind == "job", E.c.ref.in_(names))
        with self.engine.connect() as conn:
            return _best(conn.execute(query), vector, min_score, limit)

    def nearest_schedules(
        self,
        tenant: str,
        jobs: Sequence[str] | None,
        vector: Sequence[float],
        min_score: float,
        limit: int,
    ) -> list[tuple[str, float]]:
        """The ids of ``tenant``'s schedules (not archived; of ``jobs`` unless ``None``) whose
        name and description are most like ``vector``, best first."""
        S = schema.schedules
        ids = sa.select(S.c.id).where(S.c.tenant == tenant, S.c.archived_at.is_(None))
        if jobs is not None:
            ids = ids.where(S.c.job.in_(list(jobs)))
        query = (
            sa.select(E.c.ref, E.c.vector)
            .where(E.c.kind == "schedule", E.c.ref.in_(ids))
            .order_by(E.c.id.desc())
            .limit(WINDOW)
        )
        with self.engine.connect() as conn:
            return _best(conn.execute(query), vector, min_score, limit)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(E)).scalar_one())


def _best(
    rows: Any, vector: Sequence[float], min_score: float, limit: int
) -> list[tuple[str, float]]:
    query = unpack(pack(vector))
    best: dict[str, float] = {}
    for ref, blob in rows:
        score = similarity(query, unpack(blob))
        if score >= min_score and score > best.get(ref, -2.0):
            best[ref] = score
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:limit]


def delete_runs(conn: sa.Connection, run_ids: Sequence[str]) -> None:
    """Drop the vectors of runs being deleted, in the caller's transaction."""
    if run_ids:
        conn.execute(E.delete().where(E.c.kind == "run", E.c.ref.in_(list(run_ids))))
