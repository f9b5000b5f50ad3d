"""Static checks of the container deployment (no Docker, no network).

docker-compose.yml is validated against the official Compose Specification schema
(deploy/compose-spec.json, vendored from compose-spec/compose-spec), and the
properties the cluster relies on are asserted explicitly.
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
from typing import Any

import jsonschema
import jsonschema.validators
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "deploy" / "compose-spec.json"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# Services that run the jobsys image (everything except the backing stores).
BACKING_SERVICES = frozenset({"redis", "postgres"})
DOCKERFILE_PATH = "deploy/Dockerfile"

# compose-spec declares "$schema": "https://json-schema.org/draft-07/schema" (https, no
# trailing "#"). jsonschema does not know that spelling: validator_for() would warn and fall
# back to the latest draft. Map it to the canonical draft-07 identifier first.
_DRAFT_07_ALIASES = frozenset(
    {"http://json-schema.org/draft-07/schema", "https://json-schema.org/draft-07/schema"}
)
_DRAFT_07_CANONICAL = "http://json-schema.org/draft-07/schema#"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml must be a mapping"
    return document


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    declared = str(schema.get("$schema", "")).rstrip("#")
    probe = {**schema, "$schema": _DRAFT_07_CANONICAL} if declared in _DRAFT_07_ALIASES else schema
    cls = jsonschema.validators.validator_for(probe)
    cls.check_schema(schema)
    return cls(schema)


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose.get("services")
    assert isinstance(services, dict) and services, "no services defined"
    return services


def _command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def test_schema_is_the_compose_spec_draft07(schema: dict[str, Any]) -> None:
    assert "draft-07" in schema["$schema"]
    assert schema["title"] == "Compose Specification"
    assert "service" in schema["definitions"]


def test_compose_file_matches_compose_spec(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_expected_services_present(compose: dict[str, Any]) -> None:
    assert {"redis", "postgres", "worker", "beat", "server", "flower"} <= set(_services(compose))


def test_redis_is_durable_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = _services(compose)["redis"]
    command = _command_text(redis)
    assert "--appendonly yes" in command
    assert "noeviction" in command
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", []))


@pytest.mark.parametrize("name", ["worker", "beat", "server", "flower"])
def test_jobsys_roles_wait_for_healthy_backing_services(compose: dict[str, Any], name: str) -> None:
    depends_on = _services(compose)[name].get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on must use the long form"
    for dependency in ("redis", "postgres"):
        assert dependency in depends_on, f"{name} must depend on {dependency}"
        assert depends_on[dependency].get("condition") == "service_healthy"
    for dependency in BACKING_SERVICES:
        assert "healthcheck" in _services(compose)[dependency]


def test_worker_is_scalable(compose: dict[str, Any]) -> None:
    worker = _services(compose)["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_worker_shutdown_and_health(compose: dict[str, Any]) -> None:
    worker = _services(compose)["worker"]
    assert worker.get("stop_grace_period") == "60s"
    test = worker["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else test
    assert "inspect ping" in text
    # jobsys worker names its processes celery-1, celery-2, ...; $$: expanded by the shell
    assert "celery-1@$$HOSTNAME" in text


def test_jobsys_services_build_from_deploy_dockerfile(compose: dict[str, Any]) -> None:
    image_services = {
        name: svc for name, svc in _services(compose).items() if name not in BACKING_SERVICES
    }
    assert image_services
    for name, service in image_services.items():
        build = service.get("build")
        assert isinstance(build, dict), f"{name}: build must name the Dockerfile"
        assert build.get("dockerfile") == DOCKERFILE_PATH, name
        assert (ROOT / build.get("context", ".") / build["dockerfile"]).is_file(), name


def test_worker_and_beat_share_the_environment(compose: dict[str, Any]) -> None:
    services = _services(compose)
    env = services["worker"]["environment"]
    assert env == services["beat"]["environment"]
    assert env == compose["x-jobsys-env"]
    for key in ("JOBSYS_BROKER_URL", "JOBSYS_RESULT_URL", "JOBSYS_DATABASE_URL"):
        assert env.get(key), key


def test_flower_watches_the_cluster_with_basic_auth(compose: dict[str, Any]) -> None:
    services = _services(compose)
    flower = services["flower"]
    assert flower["image"] == services["worker"]["image"]
    command = _command_text(flower)
    assert command.startswith("jobsys flower") and "--address 0.0.0.0" in command
    env = flower["environment"]
    # The workers' broker, results and records, plus the logins from the environment.
    assert {k: env[k] for k in compose["x-jobsys-env"]} == compose["x-jobsys-env"]
    auth = env["JOBSYS_FLOWER_BASIC_AUTH"]
    assert auth.startswith("${JOBSYS_FLOWER_BASIC_AUTH:-") and re.search(r":-\w+:\w+}$", auth)
    # The compose default password is only reachable from the host itself.
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    for dependency in ("redis", "postgres"):
        assert flower["depends_on"][dependency]["condition"] == "service_healthy"
    assert "/healthcheck" in " ".join(flower["healthcheck"]["test"])


def test_server_serves_the_api_on_the_host_loopback(compose: dict[str, Any]) -> None:
    server = _services(compose)["server"]
    assert _command_text(server).startswith("jobsys serve") and "--host 0.0.0.0" in (
        _command_text(server)
    )
    assert server["ports"] == ["127.0.0.1:8000:8000"]
    assert "/api/v1/ready" in " ".join(server["healthcheck"]["test"])


def test_env_example_documents_flower() -> None:
    text = (ROOT / "deploy" / "env.example").read_text(encoding="utf-8")
    assert re.search(r"^JOBSYS_FLOWER_BASIC_AUTH=\w+:", text, re.M)


def test_unknown_service_key_is_rejected(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["not_a_compose_key"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    joined = re.sub(r"\\\r?\n", " ", text)  # fold line continuations
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_runs_jobsys() -> None:
    assert DOCKERFILE.is_file()
    instructions = _dockerfile_instructions()
    launch = [rest for keyword, rest in instructions if keyword in {"CMD", "ENTRYPOINT"}]
    assert launch, "Dockerfile has no CMD or ENTRYPOINT"
    assert "jobsys" in launch[-1]
    assert ("FROM", "python:3.11-slim") in instructions
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}
