"""The tests' embedder: small, deterministic, and meaning-aware enough to show semantic
search at work with no model.

Each dimension is a concept; a text's vector counts the words of each concept it holds
(synonyms share a dimension). So "connection refused by upstream host" and "network outage"
share no word, but both land on the ``network`` dimension. Words of no concept count nothing:
a text with none is the zero vector, like nothing.

``JOBSYS_EMBEDDER=python:tests.embedder:embed`` uses it in-process; ``FakeEndpoint`` serves it
as an OpenAI-compatible ``/v1/embeddings`` over real HTTP, for ``openai:URL``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jobsys.base import keywords

CONCEPTS: dict[str, tuple[str, ...]] = {
    "network": (
        "network",
        "outage",
        "connection",
        "connect",
        "refused",
        "upstream",
        "host",
        "unreachable",
        "socket",
        "dns",
    ),
    "storage": ("disk", "storage", "full", "space", "quota", "volume"),
    "payment": ("payment", "invoice", "billing", "charge", "card", "declined"),
    "auth": ("password", "login", "credential", "unauthorized", "forbidden"),
    "math": ("add", "sum", "integers", "arithmetic", "plus", "numbers"),
}
DIMENSIONS = len(CONCEPTS)
_BY_WORD = {w: i for i, words in enumerate(CONCEPTS.values()) for w in words}


def vector(text: str) -> list[float]:
    out = [0.0] * DIMENSIONS
    for word in keywords.words(text):
        if word in _BY_WORD:
            out[_BY_WORD[word]] += 1.0
    return out


def embed(texts: list[str]) -> list[list[float]]:
    """The ``python:`` embedder: one vector per text."""
    return [vector(t) for t in texts]


class FakeEndpoint:
    """An OpenAI-compatible embeddings endpoint on a free port of 127.0.0.1, answering with
    this module's vectors; it records each request's body and headers (``requests``), and
    answers ``status`` instead when that is set."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.status = 200
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append((body, dict(self.headers)))
                if self.path != "/v1/embeddings" or endpoint.status != 200:
                    self._answer(endpoint.status if endpoint.status != 200 else 404, {})
                    return
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                data = [
                    {"object": "embedding", "index": i, "embedding": vector(t)}
                    for i, t in enumerate(texts)
                ]
                data.reverse()  # the client orders them by ``index``
                self._answer(200, {"object": "list", "data": data, "model": body["model"]})

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/embeddings"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
