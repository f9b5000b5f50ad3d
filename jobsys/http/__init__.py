"""The HTTP API of jobsys (FastAPI): ``create_app(settings_or_service)``; ``jobsys serve``
runs it. The contract: every route under ``/api/v1`` with a bearer token, one error body."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from jobsys.base import config
    from jobsys.service.process import Service


def create_app(settings_or_service: config.Settings | Service, **options: Any) -> FastAPI:
    """See ``jobsys.http.app.create_app`` (imported on first use: FastAPI is not light)."""
    from jobsys.http.app import create_app as make

    return make(settings_or_service, **options)


__all__ = ["create_app"]
