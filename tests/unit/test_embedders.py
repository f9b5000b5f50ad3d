"""Embedders (``JOBSYS_EMBEDDER``): the OpenAI-compatible client against a fake endpoint over
real HTTP, a local callable, the setting's parsing; and the pure parts of ranking (unit
vectors, cosine, reciprocal rank fusion, the choice of mode)."""

from __future__ import annotations

import pytest

from jobsys.base import embedders, errors
from jobsys.service import searching
from jobsys.store import semantic
from tests import embedder
from tests.embedder import FakeEndpoint


def test_openai_embedder_posts_the_texts_and_reads_the_vectors_in_order() -> None:
    with FakeEndpoint() as fake:
        e = embedders.from_setting(f"openai:{fake.url}", "tiny-model", "sk-test")
        assert isinstance(e, embedders.OpenAIEmbedder)
        got = e.embed(["connection refused", "disk full", "nothing here"])
        assert got == [embedder.vector(t) for t in ("connection refused", "disk full", "x")]
        body, headers = fake.requests[-1]
        assert body == {
            "model": "tiny-model",
            "input": ["connection refused", "disk full", "nothing here"],
        }
        assert headers["Authorization"] == "Bearer sk-test"
        keyless = embedders.from_setting(f"openai:{fake.url}", "m", None)
        assert keyless is not None and keyless.embed(["a"]) == [[0.0] * embedder.DIMENSIONS]
        assert "Authorization" not in fake.requests[-1][1]


def test_openai_embedder_failures_say_what_the_endpoint_answered() -> None:
    with FakeEndpoint() as fake:
        fake.status = 401
        e = embedders.from_setting(f"openai:{fake.url}", "m", "wrong")
        assert e is not None
        with pytest.raises(errors.EmbedderUnavailable, match="answered 401"):
            e.embed(["x"])
        url = fake.url
    gone = embedders.from_setting(f"openai:{url}", "m", None)
    assert gone is not None
    with pytest.raises(errors.EmbedderUnavailable, match=url):
        gone.embed(["x"])
    assert errors.answer(errors.EmbedderUnavailable("x")).http_status == 503


def test_python_embedder_and_bad_settings() -> None:
    e = embedders.from_setting("python:tests.embedder:embed", "ignored", None)
    assert e is not None and e.embed(["network outage"]) == [embedder.vector("network outage")]
    assert embedders.from_setting(None, "m", None) is None
    assert embedders.from_setting("", "m", None) is None
    for bad, says in (
        ("python:tests.embedder:missing", "cannot import"),
        ("python:tests.embedder:DIMENSIONS", "not callable"),
        ("huggingface:all-MiniLM", "neither"),
        ("openai:not-a-url", "neither"),
    ):
        with pytest.raises(errors.ConfigError, match=says):
            embedders.from_setting(bad, "m", None)
    bad_answer = embedders.CallableEmbedder("python:x:y", lambda texts: [[1.0]])
    with pytest.raises(errors.EmbedderUnavailable, match=r"1 vectors .* for 2 texts"):
        bad_answer.embed(["a", "b"])
    with pytest.raises(errors.EmbedderUnavailable, match="NaN"):
        embedders.CallableEmbedder("p", lambda texts: [[float("nan")]]).embed(["a"])


def test_vectors_are_stored_at_unit_length_and_compared_by_cosine() -> None:
    a = semantic.unpack(semantic.pack([3.0, 4.0]))
    assert list(a) == pytest.approx([0.6, 0.8])
    assert semantic.similarity(a, semantic.unpack(semantic.pack([6.0, 8.0]))) == pytest.approx(1)
    assert semantic.similarity(a, semantic.unpack(semantic.pack([-4.0, 3.0]))) == pytest.approx(0)
    assert list(semantic.unpack(semantic.pack([0.0, 0.0]))) == [0.0, 0.0]
    assert semantic.similarity(a, [1.0, 0.0, 0.0]) == -1.0  # another embedder's length


def test_reciprocal_rank_fusion_puts_what_both_lists_hold_first() -> None:
    fused = searching.fuse(["a", "b", "c"], ["c", "d"])
    assert [k for k, _ in fused] == ["c", "a", "b", "d"]  # (b and d tie: first seen first)
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)


def test_mode_defaults_to_hybrid_with_an_embedder_and_refuses_semantic_without() -> None:
    e = embedders.from_setting("python:tests.embedder:embed", "m", None)
    assert searching.resolve(None, e) == "hybrid"
    assert searching.resolve(None, None) == "keyword"
    assert searching.resolve("keyword", None) == "keyword"
    with pytest.raises(errors.SemanticSearchOff, match="set JOBSYS_EMBEDDER"):
        searching.resolve("semantic", None)
    with pytest.raises(errors.InvalidFilter, match="keyword, semantic, hybrid"):
        searching.resolve("fuzzy", e)
