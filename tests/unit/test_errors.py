"""The one table of error answers: every error class has a mapping, and the three interfaces
read it (the CLI's exit code, the HTTP status, the MCP tool error's body)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import jobsys
from jobsys.base import errors
from jobsys.cli import base as cli_base
from jobsys.http import errors as http_errors
from jobsys.mcp import answers


def every_error_class() -> set[type[errors.JobsysError]]:
    """Every subclass of ``JobsysError`` in the tree, once every jobsys module is imported."""
    for module in pkgutil.walk_packages(jobsys.__path__, "jobsys."):
        # __main__ runs the command line; a migration environment and its revisions run only
        # inside Alembic (and define no errors)
        if not module.name.endswith("__main__") and ".migrations." not in module.name:
            importlib.import_module(module.name)
    found: set[type[errors.JobsysError]] = set()
    todo: list[type[errors.JobsysError]] = [errors.JobsysError]
    while todo:
        kind = todo.pop()
        found.add(kind)
        todo.extend(kind.__subclasses__())
    return found


def test_every_error_class_has_an_answer() -> None:
    classes = every_error_class()
    assert len(classes) > 20
    for kind in classes:
        if kind.__module__ == errors.__name__:
            assert kind in errors.ANSWERS, f"{kind.__name__} has no row in errors.ANSWERS"
        else:  # declared elsewhere: answered as a base class with a row of its own
            base = next(b for b in kind.__mro__ if b in errors.ANSWERS)
            assert base is not errors.JobsysError, f"{kind.__module__}.{kind.__name__}"
    assert set(errors.ANSWERS) <= classes


def test_the_answers_keep_the_documented_codes() -> None:
    """README: exit 1 a run failed or a service is down, 2 bad input or an unknown name, 3 not
    allowed; HTTP 401, 403, 404, 409, 422, 503."""
    expected = {
        errors.InvalidInput("j", []): (2, 422),
        errors.UnknownJob("j", []): (2, 404),
        errors.RunNotFound("r"): (2, 404),
        errors.InvalidTransition("r", "completed", "cancel"): (2, 409),
        errors.PermissionDenied("p", "execute", "j"): (3, 403),
        errors.NotOwner("p", "remove", "j", "o"): (3, 403),
        errors.Unauthenticated("no"): (3, 401),
        errors.RunFailed("r", "failed", None): (1, 409),
        errors.WaitTimeout("r", 1.0): (1, 409),
        errors.BrokerUnavailable("down"): (1, 503),
        answers.InvalidArguments("list_jobs", []): (2, 422),
    }
    for exc, (code, status) in expected.items():
        assert errors.answer(exc) == errors.Answer(code, status), type(exc).__name__
        assert http_errors.status_of(exc) == status


@pytest.mark.parametrize(
    "exc",
    [
        errors.UnknownJob("j", ["k"]),
        errors.PermissionDenied("p", "list", "j"),
        errors.InvalidSchedule("every", "must be at least 1"),
        errors.WaitTimeout("r", 1.0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_cli_and_mcp_answer_from_the_table(exc: errors.JobsysError) -> None:
    @cli_base.handle_errors
    def command() -> None:
        raise exc

    with pytest.raises(SystemExit) as exited:
        command()
    assert exited.value.code == errors.answer(exc).exit_code
    body = answers.error_body(exc)["error"]
    assert body["type"] == type(exc).__name__
    http = http_errors.jobsys_response(exc)
    assert http.status_code == errors.answer(exc).http_status
    assert [f["loc"] for f in body["fields"]] == [f["loc"] for f in errors.fields(exc)]
