"""One error body for every failure of the HTTP API, and the handlers that produce it.

Every error is ``{"error": {"type", "message", "fields"}}``: ``type`` is the error's class
name, ``message`` one line that says how to fix it, ``fields`` the field-level problems
(``loc``, ``msg``, ``type``), empty when there are none. A jobsys error's status comes from
the one table of answers, ``jobsys.base.errors.ANSWERS`` (which also gives the CLI's exit
codes). Client mistakes get a 4xx; a 500 means a bug in jobsys, and its traceback is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobsys.base import errors

log = logging.getLogger("jobsys.http")

FieldError = dict[str, Any]


class ApiError(Exception):
    """An error raised by the HTTP layer itself (not by the service layer)."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        fields: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message
        self.fields = list(fields)
        self.headers = dict(headers or {})


def body(type_: str, message: str, fields: Iterable[FieldError] = ()) -> dict[str, Any]:
    """The error body."""
    return {"error": {"type": type_, "message": message, "fields": [_field(f) for f in fields]}}


def response(
    status: int,
    type_: str,
    message: str,
    fields: Iterable[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(body(type_, message, fields), status_code=status, headers=headers)


def _field(f: Mapping[str, Any]) -> FieldError:
    """A field error with JSON-safe parts only (pydantic may add inputs and contexts)."""
    loc = f.get("loc") or []
    return {
        "loc": [p if isinstance(p, int | str) else str(p) for p in loc],
        "msg": str(f.get("msg", "")),
        "type": str(f.get("type", "")),
    }


def status_of(exc: errors.JobsysError) -> int:
    """The HTTP status of a jobsys error (``errors.ANSWERS``, shared with the CLI and MCP)."""
    return errors.answer(exc).http_status


def jobsys_response(exc: errors.JobsysError) -> JSONResponse:
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    message = str(exc) or type(exc).__doc__ or type(exc).__name__
    return response(status, type(exc).__name__, message, errors.fields(exc), headers)


async def _on_jobsys(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.JobsysError)
    return jobsys_response(exc)


async def _on_api(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return response(exc.status, exc.type, exc.message, exc.fields, exc.headers)


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = list(exc.errors())
    if any(p.get("type") == "json_invalid" for p in problems):
        return response(400, "MalformedJSON", "the body is not valid JSON; send a JSON object")
    parts = [
        f"{'.'.join(str(x) for x in p.get('loc', ())) or '(request)'}: {p.get('msg')}"
        for p in problems[:5]
    ]
    message = "invalid request: " + "; ".join(parts) + " (see /docs for the expected shape)"
    return response(422, "InvalidRequest", message, problems)


HTTP_TYPES = {
    400: "BadRequest",
    401: "Unauthenticated",
    403: "PermissionDenied",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
}


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        message = f"no such route: {request.method} {request.url.path} (see /docs for the routes)"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        hint = f"; allowed: {allowed}" if allowed else ""
        message = f"method {request.method} is not allowed on {request.url.path}{hint}"
    else:
        message = str(exc.detail)
    return response(status, HTTP_TYPES.get(status, "HTTPError"), message, (), exc.headers)


async def _on_database(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, sa.exc.DataError):
        # A value the database refuses (too long, out of range): the request's fault, and the
        # statement changed nothing.
        log.warning("database refused a value: %s", exc)
        return response(
            422,
            "InvalidInput",
            "a value was refused by the database (too long, out of range, or with characters "
            "it cannot store); shorten or simplify it",
        )
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError):
        log.warning("database unavailable: %s", exc)
        return response(
            503,
            "DatabaseUnavailable",
            "the run store cannot be reached or is busy; retry shortly "
            "(check JOBSYS_DATABASE_URL and the database server)",
        )
    return await _on_bug(_, exc)


async def _on_broker(_: Request, exc: Exception) -> JSONResponse:
    log.warning("broker unavailable: %s", exc)
    return response(
        503,
        "BrokerUnavailable",
        f"the broker cannot be reached ({type(exc).__name__}); is Redis up? "
        "(`jobsys up`, or check JOBSYS_BROKER_URL)",
    )


async def _on_bug(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return response(
        500,
        "InternalError",
        f"jobsys failed on this request ({type(exc).__name__}); this is a bug: the server log "
        "holds its traceback",
    )


def install(app: FastAPI) -> None:
    """Register the handlers: jobsys errors, request validation, HTTP errors, database and
    broker outages, and a last one for bugs (logged, 500)."""
    import redis.exceptions

    from jobsys.engine import celery_api  # on first use: it loads Celery

    app.add_exception_handler(errors.JobsysError, _on_jobsys)
    app.add_exception_handler(ApiError, _on_api)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(sa.exc.SQLAlchemyError, _on_database)
    app.add_exception_handler(redis.exceptions.ConnectionError, _on_broker)
    app.add_exception_handler(redis.exceptions.TimeoutError, _on_broker)
    app.add_exception_handler(celery_api.BrokerConnectionError, _on_broker)
    app.add_exception_handler(Exception, _on_bug)
