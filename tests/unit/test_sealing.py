"""Secret fields are found at any depth and under any wrapper, split out of the stored input,
merged back for the body, and redacted from text without masking unrelated words."""

from __future__ import annotations

from typing import Annotated

import pydantic
import pytest

from jobsys import Registry
from jobsys.base import errors, sealing
from jobsys.base.sealing import REDACTED
from jobsys.declare import workflows
from tests import jobs as test_jobs


class Creds(pydantic.BaseModel):
    user: str = "deploy"
    password: pydantic.SecretStr


class Everything(pydantic.BaseModel):
    creds: Creds
    maybe: Creds | None = None
    many: list[Creds] = []
    keyed: dict[str, Creds] = {}
    token: pydantic.SecretStr | None = None
    marked: str = pydantic.Field("", json_schema_extra={"secret": True})
    pins: list[Annotated[str, pydantic.Field(json_schema_extra={"secret": True})]] = []
    plain: str = ""


class Tree(pydantic.BaseModel):
    key: pydantic.SecretStr
    children: list[Tree] = []


def test_every_shape_of_secret_field_has_a_path() -> None:
    assert sealing.secret_paths(Everything) == [
        ("creds", "password"),
        ("maybe", "password"),
        ("many", "*", "password"),
        ("keyed", "*", "password"),
        ("token",),
        ("marked",),
        ("pins", "*"),
    ]
    assert sealing.secret_paths(Tree)[:2] == [("key",), ("children", "*", "key")]


def test_split_redacts_every_secret_and_merge_gives_the_real_values_back() -> None:
    given = Everything(
        creds={"password": "p0"},
        maybe={"password": "p1"},
        many=[{"password": "p2"}, {"password": "p3"}],
        keyed={"a.b": {"password": "p4"}},
        token="t0",
        marked="m0",
        pins=["x0", "x1"],
        plain="visible",
    )
    stored, hidden = sealing.split(given, sealing.secret_paths(Everything))
    text = repr(stored)
    for value in ("p0", "p1", "p2", "p3", "p4", "t0", "m0", "x0", "x1"):
        assert value not in text
    assert stored["many"][1] == {"user": "deploy", "password": REDACTED}
    assert stored["keyed"]["a.b"]["password"] == REDACTED
    assert stored["plain"] == "visible"
    back = Everything.model_validate(sealing.merge(stored, hidden))
    assert back.token is not None and back.token.get_secret_value() == "t0"  # not the mask
    assert back.model_dump() == given.model_dump()


def test_an_absent_optional_secret_stays_absent() -> None:
    stored, hidden = sealing.split(Everything(creds={"password": "p"}), [("token",), ("maybe",)])
    assert stored["token"] is None and stored["maybe"] is None and hidden == {}


def test_seals_of_dotted_paths_still_open() -> None:
    """Runs sealed before paths were JSON keep dotted keys."""
    assert sealing.merge({"a": {"b": REDACTED}}, {"a.b": "v"}) == {"a": {"b": "v"}}


def test_merge_under_takes_only_that_part() -> None:
    hidden = {
        **sealing.prefixed("input", {'["k"]': "v"}),
        **sealing.prefixed("definition", {'["steps",0,"input","t"]': "w"}),
    }
    assert sealing.merge({"k": REDACTED}, hidden, ("input",)) == {"k": "v"}
    merged = sealing.merge({"steps": [{"input": {"t": REDACTED}}]}, hidden, ("definition",))
    assert merged == {"steps": [{"input": {"t": "w"}}]}


def test_short_secrets_are_redacted_only_where_they_stand_whole() -> None:
    redact = sealing.Redactor(["ab", "Q7", "long-secret"])
    assert redact.text("pin=ab, about abab ab_c") == f"pin={REDACTED}, about abab ab_c"
    assert redact.text("Q7") == REDACTED
    assert redact.text("xlong-secretx") == f"x{REDACTED}x"  # long ones: anywhere
    assert redact.json({"pin": "ab", "word": "about", "n": ["ab"]}) == {
        "pin": REDACTED,
        "word": "about",
        "n": [REDACTED],
    }


def test_secret_lists_and_numbers_are_redacted_by_their_items() -> None:
    redact = sealing.Redactor([["first-item", "2nd-item"], 123456])
    assert redact.text("first-item 2nd-item 123456") == " ".join([REDACTED] * 3)


ADHOC = {
    "name": "adhoc",
    "steps": [
        {"name": "marked", "job": "tests.secret_marked", "input": {"token": "$input.tok"}},
        {
            "name": "each",
            "job": "tests.secret_nested",
            "for_each": "$input.logins",
            "input": {"creds": "$item"},
        },
        {"name": "literal", "job": "tests.secret_optional", "input": {"token": "written-in"}},
    ],
}


def test_a_workflow_seals_what_its_steps_take_as_secrets() -> None:
    registry = Registry(
        [test_jobs.secret_marked, test_jobs.secret_nested, test_jobs.secret_optional]
    )
    wf = workflows.from_data(ADHOC)
    assert workflows.secret_input_paths(wf, registry) == [("tok",), ("logins", "*", "password")]
    given = wf.input_model.model_validate(
        {"tok": "t-value", "logins": [{"password": "p-value"}], "note": "plain"}
    )
    stored, hidden = workflows.split(wf, given, registry)
    assert stored == {"tok": REDACTED, "logins": [{"password": REDACTED}], "note": "plain"}
    definition = workflows.run_copy(wf, registry)
    assert definition["steps"][2]["input"] == {"token": REDACTED}
    assert "written-in" not in repr(definition) and "t-value" not in repr(stored)
    assert sealing.merge(stored, hidden, ("input",))["logins"][0]["password"] == "p-value"
    back = sealing.merge(definition, hidden, ("definition",))
    assert back["steps"][2]["input"] == {"token": "written-in"}
    with pytest.raises(errors.WorkflowDeclarationError, match=r"input\.token: is secret"):
        workflows.refuse_secret_literals(wf, registry)  # a definition stored as it is


class WholeModelMarked(pydantic.BaseModel):
    creds: Creds = pydantic.Field(json_schema_extra={"secret": True})


def test_a_sub_model_marked_secret_is_sealed_whole_with_its_own_secrets() -> None:
    given = WholeModelMarked(creds={"user": "u", "password": "inner"})
    stored, hidden = sealing.split(given, sealing.secret_paths(WholeModelMarked))
    assert stored == {"creds": REDACTED}
    back = WholeModelMarked.model_validate(sealing.merge(stored, hidden))
    assert back.creds.password.get_secret_value() == "inner"
