"""What an outside actor completes a run with, as a careless or hostile actor sends it from
the CLI (which reads any JSON Python reads): NaN and infinities are no JSON and JSON nested
past any sense is refused with the field named, and the run stays running, on both databases
(PostgreSQL's jsonb refuses NaN: it must not come back as an internal error)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobsys import Principal
from jobsys.base import errors
from tests import cli_runner
from tests.cluster import CATALOG, Cluster, cluster

pytestmark = pytest.mark.integration

ACTOR = Principal(id="ana", roles=("admin",), tenant="default")


@pytest.fixture(scope="module")
def actors(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str | None
) -> Iterator[Cluster]:
    env = {"JOBSYS_CATALOG": f"{CATALOG},tests.actor_jobs"}
    with cluster(tmp_path_factory.mktemp("actor-output"), redis_url, database_url, **env) as c:
        yield c


@pytest.mark.parametrize(
    "output",
    ['{"value": NaN}', '{"value": Infinity}', '{"value": -Infinity}', "[" * 5000 + "]" * 5000],
)
def test_an_output_that_is_no_json_is_refused_and_the_run_stays_running(
    actors: Cluster, output: str
) -> None:
    run_id = actors.client.submit("actors.measure", {"url": "s"})
    taken = actors.client.actors.take_run(run_id)
    env = {**actors.env, "JOBSYS_RUN_TOKEN": taken.token}
    done = cli_runner.run(env, ["runs", "complete", run_id, "--output", output])
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "--output" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert actors.store.get(run_id).state.value == "running"
    good = cli_runner.run(env, ["runs", "complete", run_id, "--output", '{"value": 1.5}'])
    assert good.returncode == 0, good.stderr
    assert actors.store.get(run_id).output == {"value": 1.5}


def test_python_refuses_an_output_with_nan_naming_the_field(actors: Cluster) -> None:
    run_id = actors.client.submit("actors.measure", {"url": "s"})
    taken = actors.client.actors.take_run(run_id)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(errors.InvalidInput) as refused:
            actors.client.actors.complete(run_id, taken.token, {"value": bad})
        assert "value" in str(refused.value) and "finite" in str(refused.value)
    assert actors.store.get(run_id).state.value == "running"
