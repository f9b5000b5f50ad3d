"""The checks every request passes before it reaches a route (an ASGI middleware).

* A body over ``MAX_BODY_BYTES`` (1 MiB) gets 413, whether announced by Content-Length or not.
* Paths and query strings with control characters get 422: no name or id holds one.
* Under ``/api/``, the body of a POST, PUT or PATCH must be one JSON object (400 otherwise),
  nested at most ``MAX_DEPTH`` deep (422), with only finite numbers and no NUL characters or
  lone surrogates in its strings (422): values a database could not store never reach it.
  A valid body is passed on as ``application/json`` whatever Content-Type it was sent with.

``SecurityHeaders`` adds ``SECURITY_HEADERS`` to every answer: a Content-Security-Policy that
allows only this origin's own scripts, styles and connections and no framing, and the headers
that forbid framing, MIME sniffing and sending the URL (which may hold ``?token=``) elsewhere.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from jobsys.http import errors as http_errors

MAX_BODY_BYTES = 1 << 20
MAX_DEPTH = 32

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Rejected(Exception):
    def __init__(self, status: int, type_: str, message: str, loc: list[Any] | None = None):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message
        self.fields = [{"loc": loc, "msg": message, "type": type_}] if loc is not None else []


def has_control(text: str) -> bool:
    """True if ``text`` holds a C0 control character, DEL, or a lone surrogate."""
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def _check_target(scope: Scope) -> None:
    if has_control(scope.get("path", "")):
        raise Rejected(
            422,
            "InvalidRequest",
            "the path holds control characters; no job name or id has them",
            ["path"],
        )
    raw = scope.get("query_string", b"").decode("latin-1")
    for key, value in urllib.parse.parse_qsl(raw, keep_blank_values=True, errors="replace"):
        if has_control(key) or has_control(value):
            raise Rejected(
                422,
                "InvalidRequest",
                f"query parameter {key[:40]!r} holds control characters; remove them",
                ["query", key[:40]],
            )


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON (use null or a finite number)")


def parse_json(raw: bytes) -> Any:
    """Strict JSON: finite numbers only. Raises ``Rejected``."""
    try:
        return json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise Rejected(
            422, "InvalidRequest", f"the JSON is nested deeper than {MAX_DEPTH} levels", ["body"]
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, our own refusals
        raise Rejected(
            400, "MalformedJSON", f"the body is not valid JSON ({str(exc)[:120]}); send an object"
        ) from None


def check_value(value: Any) -> None:
    """Refuse JSON nested deeper than ``MAX_DEPTH`` or holding strings a database cannot
    store (NUL, lone surrogates). Iterative: a hostile body cannot exhaust the stack."""
    todo: list[tuple[Any, int, list[Any]]] = [(value, 0, [])]
    while todo:
        item, depth, loc = todo.pop()
        if isinstance(item, dict | list):
            if depth + 1 > MAX_DEPTH:
                raise Rejected(
                    422,
                    "InvalidRequest",
                    f"the JSON is nested deeper than {MAX_DEPTH} levels; flatten it",
                    ["body", *loc[:4], "..."],
                )
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    _check_string(key, [*loc, key[:40]])
                todo.append((child, depth + 1, [*loc, key if isinstance(key, int) else key[:40]]))
        elif isinstance(item, str):
            _check_string(item, loc)


def _check_string(text: str, loc: list[Any]) -> None:
    if "\x00" in text or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        raise Rejected(
            422,
            "InvalidRequest",
            "a string holds a NUL character or a lone surrogate, which cannot be stored",
            ["body", *loc[:8]],
        )


CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    """ASGI middleware: ``SECURITY_HEADERS`` on every HTTP answer (a route's own value of
    one of them is replaced)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._names = {name for name, _ in SECURITY_HEADERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in self._names
                ]
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


class RequestGuard:
    """ASGI middleware applying the checks in the module docstring."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self._guarded(scope, receive, send)
        except Rejected as exc:
            reply = http_errors.response(exc.status, exc.type, exc.message, exc.fields)
            await reply(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = scope.get("path", "").startswith("/api/")
        if api:
            _check_target(scope)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise self._too_large()
        if scope.get("method") not in JSON_METHODS:
            await self.app(scope, receive, send)
            return
        raw, disconnected = await self._read(receive)
        if disconnected:
            return
        if api and raw.strip():
            data = parse_json(raw)
            if not isinstance(data, dict):
                raise Rejected(400, "MalformedJSON", "the body must be a JSON object ({...})")
            check_value(data)
            scope = {**scope, "headers": _as_json(scope.get("headers") or [])}
        await self.app(scope, _replay(raw, receive), send)

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", True
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False

    def _too_large(self) -> Rejected:
        return Rejected(
            413,
            "PayloadTooLarge",
            f"the body is over {self.max_body} bytes; send less (large data belongs in files "
            "or object storage, passed by reference)",
        )


def _as_json(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k.lower() != b"content-type"]
    return [*kept, (b"content-type", b"application/json")]


def _replay(raw: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay
