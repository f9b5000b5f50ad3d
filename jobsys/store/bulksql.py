"""The two writes of a fire batch, each on the driver itself: beat's hot path.

A burst of due schedules (every ``* * * * *`` schedule at each minute) is written a batch at a
time (``fires.py``): the guarded ``UPDATE`` that advances each schedule, and the ``INSERT`` of
their runs. Through SQLAlchemy, an ``executemany`` of a batch spent most of its time converting
parameters row by row. Here, on PostgreSQL, the batch travels as one array per column and
``unnest`` turns the arrays back into rows: one statement whatever the batch size. SQLite, in
process, gets the driver's own ``executemany`` for the insert, and one statement a schedule for
the update (to learn which schedules advanced). Values are bound as the column types bind them
(``hotsql.converter``), in the caller's transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from jobsys.store import hotsql, schema

S = schema.schedules
R = schema.runs

GUARD = ("b_id", "b_nominal", "b_version", "b_updated")
"""What a schedule is advanced from: its id, the fire it was read at, its version and the time
of its last change."""


def advance(conn: sa.Connection, keys: Sequence[str], rows: list[dict[str, Any]]) -> set[str]:
    """Set ``keys`` on each active schedule unchanged since it was read; ``rows`` hold the
    guard (``b_id``, ``b_nominal``, ``b_version``, ``b_updated``) and the new values
    (``v_<key>``). Returns the ids of the schedules advanced."""
    dialect = conn.dialect.name
    columns = [*GUARD, *(f"v_{k}" for k in keys)]
    targets = [S.c.id, S.c.nominal_at, S.c.version, S.c.updated_at, *(S.c[k] for k in keys)]
    sql = _advance_sql(dialect, tuple(keys))
    params = _params(dialect, columns, targets, rows)
    cursor: Any = conn.connection.cursor()
    try:
        if dialect == "postgresql":
            cursor.execute(sql, params, prepare=False)  # (see _unnest)
            return {str(r[0]) for r in cursor.fetchall()}
        advanced = set()
        for row in params:  # (in process: one statement a row costs microseconds)
            cursor.execute(sql, row)
            if cursor.rowcount == 1:
                advanced.add(str(row["b_id"]))
        return advanced
    finally:
        cursor.close()


def insert_runs(conn: sa.Connection, rows: list[dict[str, Any]]) -> int:
    """Insert fires' runs (rows with the same columns), skipping each whose ``fire_key``
    already has a run. Returns how many were inserted."""
    keys = tuple(rows[0])
    if any(r.keys() != rows[0].keys() for r in rows):
        raise ValueError("run rows inserted together must have the same columns")
    targets = [R.c[k] for k in keys]  # an unknown column raises here
    dialect = conn.dialect.name
    params = _params(dialect, list(keys), targets, rows)
    cursor: Any = conn.connection.cursor()
    try:
        if dialect == "postgresql":
            cursor.execute(_insert_sql(dialect, keys), params, prepare=False)
        else:
            cursor.executemany(_insert_sql(dialect, keys), params)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _params(
    dialect: str, columns: list[str], targets: list[sa.Column[Any]], rows: list[dict[str, Any]]
) -> Any:
    """The rows' values bound as their columns bind them: on PostgreSQL one array per
    column, on SQLite one mapping per row."""
    convert = []
    for column, target in zip(columns, targets, strict=True):
        f = hotsql.converter(dialect, target)
        convert.append((column, _memo(f) if isinstance(target.type, schema.UTCDateTime) else f))
    if dialect == "postgresql":
        return [[f(r[c]) if f and r[c] is not None else r[c] for r in rows] for c, f in convert]
    return [{c: (f(r[c]) if f and r[c] is not None else r[c]) for c, f in convert} for r in rows]


def _memo(convert: Any) -> Any:
    """``convert`` remembering its results for one batch: a burst's fires share a handful of
    times (the fire, the next one, now), each converted once."""
    return functools.lru_cache(maxsize=64)(convert)


@functools.cache
def _advance_sql(dialect: str, keys: tuple[str, ...]) -> str:
    if dialect == "postgresql":
        columns = ", ".join([*GUARD, *(f"v_{k}" for k in keys)])
        types = [S.c.id, S.c.nominal_at, S.c.version, S.c.updated_at, *(S.c[k] for k in keys)]
        sets = ", ".join(f"{k} = v.v_{k}" for k in keys)
        return (
            f"UPDATE jobsys_schedules AS s SET {sets} FROM {_unnest(types)} AS v({columns}) "
            "WHERE s.id = v.b_id AND s.state = 'active' AND s.nominal_at = v.b_nominal "
            "AND s.version = v.b_version AND s.updated_at = v.b_updated RETURNING s.id"
        )
    sets = ", ".join(f"{k} = :v_{k}" for k in keys)
    return (
        f"UPDATE jobsys_schedules SET {sets} WHERE id = :b_id AND state = 'active' "
        "AND nominal_at = :b_nominal AND version = :b_version AND updated_at = :b_updated"
    )


@functools.cache
def _insert_sql(dialect: str, keys: tuple[str, ...]) -> str:
    names = ", ".join(keys)
    conflict = "ON CONFLICT (fire_key) WHERE fire_key IS NOT NULL DO NOTHING"
    if dialect == "postgresql":
        source = f"SELECT * FROM {_unnest([R.c[k] for k in keys])}"
    else:
        source = f"VALUES ({', '.join(':' + k for k in keys)})"
    return f"INSERT INTO jobsys_runs ({names}) {source} {conflict}"


def _unnest(columns: Sequence[sa.Column[Any]]) -> str:
    """``unnest`` of one array parameter per column, each cast to its column's type.

    Never prepared on the server: a prepared statement's generic plan does not know how long
    the arrays are, and for a batch of one it joined by scanning every schedule (5 ms on
    10,000 of them) instead of looking each up by id (0.07 ms)."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    # %b: the arrays travel in binary (psycopg escapes text arrays in Python, slowly).
    return "unnest({})".format(
        ", ".join(f"%b::{c.type.compile(dialect=dialect)}[]" for c in columns)
    )
