"""The store's migrations (Alembic revisions in jobsys/store/migrations/versions): a database
made at the first released schema and upgraded has the schema of a new database, on SQLite and
on PostgreSQL; a database made by jobsys before Alembic (tests/fixtures/legacy_v12.db, a
`jobsys up` home's store made by tests/fixtures/make_legacy_store.sh) upgrades in place and
every command works on it; processes starting together on one database migrate it once; the
released revisions never change."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from jobsys.base import errors
from jobsys.cli import main as cli_main
from jobsys.store import database, migrations, runs, schema
from jobsys.store.migrations import runner, steps
from tests.cluster import ROOT, Database, cluster
from tests.integration.test_store import run_row

pytestmark = pytest.mark.integration

FIXTURE = ROOT / "tests" / "fixtures" / "legacy_v12.db"
VERSIONS = ROOT / "jobsys" / "store" / "migrations" / "versions"

RELEASED = {
    "0001": "8338736724ea908152a8c9516d42b63b532993cc790d0c152af87406dda0bc71",
    "0002": "24d0ba79b4109c4b75f798c4ef0be1b4d51a59765f52343b60c100b812fd1bf8",
    "0003": "f5b7ff979d50a26a4570d43f57dc3c8be9e8b81de44c238f00abbf16b8a8e5b8",
    "0004": "dddcdb6542ea5b12118b50dcc3523f7b338ee764e0f856c28816c68514b17b4f",
    "0005": "e9665112a10066fe84994100490d7340634467385aea455d4f19527b92243a7d",
    "0006": "d61918a014e945ea2e3150b50450c14fb077ade678564f4f6df6bba96b2b6409",
    "0007": "b53bc70365d9ea0b7a6947e9c714b2c7a6140159d871201eaca4caa36bbee511",
    "0008": "a15bec876f8433509cd1f76dcefb29241469c1bba7a33d487ad1ff68a80fce15",
    "0009": "9317c6488ec8db18559d166cdffd5367415817b1d51eeda3504bfe281705c2bd",
    "0010": "ccea02171b324d71a2201b24bab9930d7ca72e420554af189cc8979d5beea1b0",
    "0011": "e21858dc5d8144407c4ec9c99c80f135ba07c92a98141f3d86885e4b7ef625a5",
    "0012": "dba547dfaeb9d93f7d8ea150eabee2bcee32a4678cb59fb7c7aee5a9f7a1d062",
    "0013": "8f77c84809069b38b3758f2f759b1bf41361b55cd36dc66c987239d5303045bc",
    "0014": "948cf90db55744234b63aa594d0868733a05727f283133f665d4bb86e94d5728",
}
"""The SHA-256 of each released revision file. A released revision never changes (a database
that ran it would not run it again): change the schema with a new revision, and add its hash
here when it is released. (``ruff format`` leaves these files alone: pyproject.toml.)"""


def describe(engine: sa.Engine) -> dict[str, Any]:
    """The schema as the database reports it: tables, their columns (type as the dialect
    names it, nullability, default), primary keys and unique constraints by their columns,
    indexes by name (columns, uniqueness, partial condition)."""
    inspector = sa.inspect(engine)
    tables: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        columns = {
            c["name"]: (
                _type(c["type"], engine.dialect),
                c["nullable"],
                str(c.get("default")),
                str(c.get("computed")),
            )
            for c in inspector.get_columns(table)
        }
        indexes = {
            i["name"]: (
                tuple(i["column_names"]),
                bool(i["unique"]),
                sorted(
                    (k, " ".join(str(getattr(v, "text", v)).split()))
                    for k, v in i.get("dialect_options", {}).items()
                ),
            )
            for i in inspector.get_indexes(table)
        }
        tables[table] = {
            "columns": columns,
            # The name of a primary key is left out: the table that revision 0009 rebuilds
            # keeps its constraint's name on PostgreSQL (``..._v9_pkey``), as it did before.
            "primary key": tuple(inspector.get_pk_constraint(table)["constrained_columns"]),
            "unique": sorted(
                tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
            ),
            "foreign keys": sorted(
                str(f["constrained_columns"]) for f in inspector.get_foreign_keys(table)
            ),
            "indexes": indexes,
        }
    tables["(triggers)"] = _triggers(engine)
    tables["(autoincrement)"] = _autoincrement(engine)
    return tables


def _autoincrement(engine: sa.Engine) -> list[str]:
    """The tables whose ids SQLite never gives twice (``AUTOINCREMENT``, which the inspector
    does not report); none on PostgreSQL, whose sequences never reuse an id."""
    if engine.dialect.name != "sqlite":
        return []
    sql = "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
    with engine.connect() as conn:
        return [str(n) for n, text in conn.exec_driver_sql(sql) if "AUTOINCREMENT" in str(text)]


def _triggers(engine: sa.Engine) -> list[str]:
    """The names of the triggers on the database's tables (the run events' writers)."""
    if engine.dialect.name == "postgresql":
        sql = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    with engine.connect() as conn:
        return [str(name) for name in conn.exec_driver_sql(sql).scalars()]


NewDatabase = Callable[[], sa.Engine]


def _type(kind: Any, dialect: sa.Dialect) -> str:
    """A column type as the dialect names it (``repr`` for an untyped column, as FTS5's)."""
    try:
        return str(kind.compile(dialect=dialect))
    except sa.exc.CompileError:
        return repr(kind)


@pytest.fixture
def new_database(tmp_path: Path, database_url: str | None) -> Iterator[NewDatabase]:
    """Makes a new, empty database of the backend under test (on PostgreSQL, a database of
    its own under a random name) and gives its engine."""
    made: list[tuple[Database, sa.Engine]] = []

    def make() -> sa.Engine:
        db = Database(tmp_path / f"db{len(made)}", database_url)
        made.append((db, database.make_engine(db.url)))
        return made[-1][1]

    yield make
    for db, engine in made:
        engine.dispose()
        db.drop()


def test_the_first_revision_upgraded_has_the_schema_of_a_new_database(
    new_database: NewDatabase,
) -> None:
    old, new = new_database(), new_database()
    assert runner.upgrade(old, to="0001") == 0
    assert migrations.current_revision(old) == "0001"
    assert "jobsys_schedules" not in sa.inspect(old).get_table_names()
    assert migrations.migrate(old) == 1
    assert migrations.migrate(new) == 0  # made in one step from schema.py
    assert migrations.current_revision(old) == migrations.current_revision(new) == schema.REVISION
    assert describe(old) == describe(new)
    # The tables the queries use are the tables there.
    tables = set(sa.inspect(new).get_table_names())
    assert {t.name for t in schema.metadata.sorted_tables} <= tables
    assert {schema.VERSION_TABLE, "jobsys_search"} <= tables


def test_each_revision_in_turn_gives_the_same_schema(new_database: NewDatabase) -> None:
    """Upgraded one revision at a time, each in its own transaction, as a cluster that
    upgrades jobsys once per release would."""
    stepped, new = new_database(), new_database()
    for revision in revisions():
        runner.upgrade(stepped, to=revision)
        assert migrations.current_revision(stepped) == revision
        with stepped.connect() as conn:
            recorded = conn.execute(sa.select(schema.schema_version.c.version)).scalar()
        assert recorded == int(revision)  # what a jobsys from before Alembic reads
    migrations.migrate(new)
    assert describe(stepped) == describe(new)


def test_revision_0022_keeps_the_events_and_never_gives_an_id_twice(
    new_database: NewDatabase,
) -> None:
    """Upgraded from 0021 with a history: the events keep their ids, the triggers still write
    them, and a new event's id is past every id given before, even the newest events' once
    deleted with their run, and (SQLite) past the notifier's cursor."""
    engine = new_database()
    runner.upgrade(engine, to="0021")
    store = runs.RunStore(engine)
    kept, newest = run_row(), run_row()
    assert store.create(kept) is not None and store.create(newest) is not None
    E = schema.run_events
    with engine.connect() as conn:
        before = conn.execute(sa.select(E.c.id, E.c.run_id).order_by(E.c.id)).all()
    seen = max(i for i, _ in before)
    if engine.dialect.name == "sqlite":  # the notifier passed ids since deleted (the bug)
        seen += 5
        with engine.begin() as conn:
            conn.execute(schema.notify_cursor.insert().values(name="webhooks", event_id=seen))
    migrations.migrate(engine)
    assert migrations.current_revision(engine) == schema.REVISION
    with engine.connect() as conn:
        assert conn.execute(sa.select(E.c.id, E.c.run_id).order_by(E.c.id)).all() == before
    with engine.begin() as conn:
        conn.execute(schema.runs.delete().where(schema.runs.c.id == newest["id"]))
    made = run_row()
    assert store.create(made) is not None
    with engine.connect() as conn:
        (new_id,) = conn.execute(sa.select(E.c.id).where(E.c.run_id == made["id"])).one()
    assert new_id > seen


def test_a_database_newer_than_this_jobsys_is_refused(new_database: NewDatabase) -> None:
    engine = new_database()
    migrations.migrate(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(errors.SchemaTooNew, match="revision 9999"):
        migrations.migrate(engine)


def test_processes_starting_together_on_a_new_database_migrate_it_once(
    new_database: NewDatabase,
) -> None:
    engine = new_database()
    code = (
        "import sys; from jobsys.store import database, migrations; "
        "print(migrations.migrate(database.make_engine(sys.argv[1])))"
    )
    url = engine.url.render_as_string(hide_password=False)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    assert sorted(outs) == ["0"] + [str(schema.LATEST)] * 3  # one made it, three found it
    assert migrations.current_revision(engine) == schema.REVISION


def test_a_legacy_database_is_stamped_at_its_version_and_upgraded(
    new_database: NewDatabase,
) -> None:
    """A database as jobsys before Alembic left it at version 11: Alembic's table absent, the
    version in ``jobsys_schema``; revision 0012 is applied to it, and only that."""
    engine = new_database()
    runner.upgrade(engine, to="0011")
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {schema.VERSION_TABLE}"))
    assert migrations.current_revision(engine) is None
    assert migrations.migrate(engine) == 11
    assert migrations.current_revision(engine) == schema.REVISION
    assert "waiting" in {c["name"] for c in sa.inspect(engine).get_columns("jobsys_runs")}


def revisions() -> list[str]:
    """The revisions in order, from the first."""
    return [s.revision for s in reversed(list(steps.scripts().walk_revisions()))]


@pytest.mark.backend_independent
def test_revisions_are_numbered_in_one_line_and_frozen() -> None:
    found = revisions()
    assert found == [f"{n:04d}" for n in range(1, len(found) + 1)]
    assert found[-1] == schema.REVISION
    files = sorted(p for p in VERSIONS.glob("v*.py"))
    assert [p.name[1:5] for p in files] == found
    for path in files:
        text = path.read_text()
        # Frozen: a revision writes its tables out; the live ones change with the code.
        assert "jobsys" not in "".join(
            line for line in text.splitlines() if line.startswith(("import", "from"))
        ), path.name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        revision = path.name[1:5]
        if revision in RELEASED:
            assert digest == RELEASED[revision], (
                f"{path.name} was released and must not change: "
                "make the change in a new revision (docs/internals.md, 'Migrations')"
            )
    assert set(RELEASED) <= set(found)


@pytest.mark.backend_independent
def test_an_up_to_date_database_costs_one_query_and_no_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrations.migrate(database.make_engine(url))
    code = (
        "import sys; from jobsys.store import database, migrations; "
        "engine = database.make_engine(sys.argv[1]); statements = []; "
        "import sqlalchemy as sa; "
        "sa.event.listen(engine, 'before_cursor_execute', "
        "lambda *a: statements.append(a[2])); "
        "migrations.migrate(engine); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic'}), statements)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, url], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f"[] ['SELECT version_num FROM {schema.VERSION_TABLE}']"


# --- a store made by jobsys before Alembic --------------------------------------------------


def _fixture_rows(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        return {
            "version": conn.execute("SELECT version FROM jobsys_schema").fetchone()[0],
            "runs": dict(conn.execute("SELECT id, state FROM jobsys_runs").fetchall()),
            "schedules": [r[0] for r in conn.execute("SELECT name FROM jobsys_schedules")],
            "workflow runs": [r[0] for r in conn.execute("SELECT id FROM jobsys_workflow_runs")],
            "tokens": [r[0] for r in conn.execute("SELECT id FROM jobsys_tokens")],
        }


def test_a_store_made_before_alembic_upgrades_and_every_command_works(
    tmp_path: Path, redis_url: str
) -> None:
    shutil.copy(FIXTURE, tmp_path / "runs.db")  # the cluster's SQLite store
    before = _fixture_rows(tmp_path / "runs.db")
    assert before["version"] == 12 and len(before["runs"]) >= 10
    with cluster(tmp_path, redis_url, None) as c:
        runner_ = CliRunner(env=c.env)

        def cli(*argv: str, process: bool = False) -> Any:
            """A command's ``--json`` answer: the click app in this process (the start-up of
            a ``python -m jobsys`` adds nothing here), or a real process."""
            if process:
                done = subprocess.run(
                    [sys.executable, "-m", "jobsys", *argv, "--json"],
                    env=c.env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert done.returncode == 0, f"{argv}: {done.stderr}"
                return json.loads(done.stdout)
            result = runner_.invoke(cli_main, [*argv, "--json"])
            assert result.exit_code == 0, f"{argv}: {result.stderr} {result.exception!r}"
            return json.loads(result.stdout)

        # The first command, a real process, upgrades the store.
        listed = cli("runs", "list", "--limit", "100", process=True)
        assert migrations.current_revision(c.store.engine) == schema.REVISION
        assert {r["id"]: r["state"] for r in listed} == before["runs"]
        failed = next(r for r, state in before["runs"].items() if state == "failed")
        shown = cli("runs", "show", failed)
        assert shown["state"] == "failed" and shown["error"]["message"]
        assert [s["name"] for s in cli("schedules", "list")] == before["schedules"]
        (schedule,) = cli("schedules", "list")
        assert schedule["description"] == "adds two numbers every hour"
        assert [w["id"] for w in cli("workflows", "list", "--runs")] == before["workflow runs"]
        assert [d["name"] for d in cli("jobs", "definitions")] == ["team.add10"]
        assert [t["id"] for t in cli("tokens", "list")] == before["tokens"]
        c.start_worker()
        for job, given, output in (
            ("examples.add", {"a": 2, "b": 3}, 5),
            ("team.add10", {"a": 5}, 15),  # the definition registered before
        ):
            done = cli("submit", job, "--input", json.dumps(given), "--wait")
            assert (done["state"], done["output"]) == ("completed", output)
        flow = cli("workflows", "submit", "examples.diamond", "--input", '{"count": 2}', "--wait")
        assert flow["state"] == "completed", flow
