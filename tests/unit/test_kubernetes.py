"""Static checks of the Kubernetes manifests in deploy/kubernetes (no cluster, no network).

Every manifest is validated against the Kubernetes schemas bundled with kubernetes-validate
(strict: an unknown field is an error). KEDA's ScaledObject and TriggerAuthentication are
custom resources those schemas do not have: their structure is checked here field by field
(see ``test_scaledobject_*``). Then what no schema sees: the references between the
manifests, and between them and jobsys (settings, routes, Redis keys, shutdown grace).
tests/unit/test_kubernetes_kustomize.py checks the kustomizations that tie them together.
"""

from __future__ import annotations

import re
import types
import urllib.parse

import kubernetes_validate
import pytest
import yaml
from flower import urls as flower_urls
from sqlalchemy.engine import make_url

from jobsys.base import config
from jobsys.declare import catalog
from jobsys.engine import broker, transport
from jobsys.http import routes_system
from jobsys.worker import supervisor
from tests.kube import (
    KUBE,
    NAMESPACE,
    ROOT,
    SECRETS_EXAMPLE,
    Doc,
    all_docs,
    container,
    env_file,
    generated_secret,
    jobsys_deployments,
    one,
    pod,
    workloads,
)

VERSIONS = ("1.30", kubernetes_validate.latest_version())
"""The oldest Kubernetes still maintained when these manifests were written, and the newest
whose schemas the installed kubernetes-validate bundles."""
CRD_GROUPS = ("keda.sh/",)
OTHER_ENV = {"REDIS_PASSWORD", "REDISCLI_AUTH"}
"""The only variables of the manifests that are not jobsys settings: Redis's password (for
Redis itself, redis-cli and KEDA)."""


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    found = all_docs()
    assert found
    return found


# --- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_matches_the_kubernetes_schemas(docs: list[Doc], version: str) -> None:
    checked, problems = 0, []
    for doc in [*docs, generated_secret()]:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue  # custom resources: see test_scaledobject_* and the TriggerAuthentication
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(map(str, e.absolute_path)) or "<root>"
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: {path}: {e.message}")
        checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 14


def test_the_strict_schemas_refuse_an_unknown_field(docs: list[Doc]) -> None:
    worker = one(docs, "Deployment", "jobsys-worker")
    broken = {**worker, "spec": {**worker["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_the_custom_resources_are_keda_s_two(docs: list[Doc]) -> None:
    keda = {(d["kind"], d["apiVersion"]) for d in docs if d["apiVersion"].startswith(CRD_GROUPS)}
    assert keda == {
        ("ScaledObject", "keda.sh/v1alpha1"),
        ("TriggerAuthentication", "keda.sh/v1alpha1"),
    }


# --- references between the manifests -------------------------------------------------------


def test_each_workload_selects_its_own_pods(docs: list[Doc]) -> None:
    for w in workloads(docs):
        selector = w["spec"]["selector"]["matchLabels"]
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), w["metadata"]["name"]
        others = [
            o["metadata"]["name"]
            for o in workloads(docs)
            if o is not w
            and selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert others == [], f"{w['metadata']['name']}'s selector also matches {others}"


def test_each_service_points_at_one_workload_and_its_ports(docs: list[Doc]) -> None:
    services = [
        d for d in docs if d["kind"] == "Service" and d["spec"].get("type") != "ExternalName"
    ]
    assert {s["metadata"]["name"] for s in services} == {
        "redis",
        "redis-headless",
        "jobsys-server",
        "jobsys-flower",
    }
    for service in services:
        selector = service["spec"]["selector"]
        (target,) = [
            w
            for w in workloads(docs)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        ports = {p["name"] for c in pod(target)["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    redis = one(docs, "StatefulSet", "redis")
    governing = one(docs, "Service", redis["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"


def test_pod_disruption_budget_covers_the_beats(docs: list[Doc]) -> None:
    pdb = one(docs, "PodDisruptionBudget", "jobsys-beat")
    beat = one(docs, "Deployment", "jobsys-beat")
    assert pdb["spec"]["selector"]["matchLabels"] == beat["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] == 1 < beat["spec"]["replicas"]


def test_jobsys_roles_run_one_image_the_one_compose_builds(docs: list[Doc]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    image = compose["services"]["worker"]["image"]
    images = {role: container(d)["image"] for role, d in jobsys_deployments(docs).items()}
    assert set(images.values()) == {image}, images
    others = {c["image"] for w in workloads(docs) for c in pod(w)["containers"]} - {image}
    assert others == {"redis:7"}
    kustomization = yaml.safe_load((KUBE / "base" / "kustomization.yaml").read_text())
    name, _, tag = image.partition(":")
    assert kustomization["images"] == [{"name": name, "newTag": tag}]


def test_pods_run_as_the_unprivileged_user_of_the_image(docs: list[Doc]) -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    uid = re.search(r"useradd .*?--uid (\d+)", dockerfile, re.S)
    assert uid is not None
    for role, d in jobsys_deployments(docs).items():
        security = pod(d)["securityContext"]
        assert security["runAsNonRoot"] is True, role
        assert security["runAsUser"] == int(uid.group(1)), role
        c = container(d)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, role
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/var/lib/jobsys", "/tmp"} <= mounts, role  # JOBSYS_HOME, as in the image
    assert "JOBSYS_HOME=/var/lib/jobsys" in dockerfile


# --- jobsys settings ----------------------------------------------------------------------


def setting_names() -> set[str]:
    return {f.metadata["env"] for f, _ in config.fields()}


def test_every_jobsys_variable_is_a_jobsys_setting(docs: list[Doc]) -> None:
    configmap = one(docs, "ConfigMap", "jobsys-config")["data"]
    named = set(configmap) | set(env_file(SECRETS_EXAMPLE))
    for w in workloads(docs):
        named |= {e["name"] for c in pod(w)["containers"] for e in c.get("env", [])}
    assert {n for n in named if not n.startswith("JOBSYS_")} == OTHER_ENV
    unknown = {n for n in named if n.startswith("JOBSYS_")} - setting_names()
    assert not unknown, f"not settings of jobsys/base/config.py: {sorted(unknown)}"


def test_config_and_example_secret_parse_as_settings(docs: list[Doc]) -> None:
    configmap = one(docs, "ConfigMap", "jobsys-config")["data"]
    env = {**configmap, **env_file(SECRETS_EXAMPLE)}
    env["JOBSYS_SECRET_KEY"] = "x" * 43 + "="  # the one the operator adds (see the example)
    settings = config.Settings.from_env(env)
    assert settings.catalog == ("workers.examples",)
    assert "JOBSYS_SECRET_KEY=" in SECRETS_EXAMPLE.read_text() and "jobsys secret-key" in (
        SECRETS_EXAMPLE.read_text()
    )


def test_jobsys_pods_read_the_config_and_cannot_start_without_the_sealing_key(
    docs: list[Doc],
) -> None:
    for role, d in jobsys_deployments(docs).items():
        c = container(d)
        assert c["envFrom"] == [
            {"configMapRef": {"name": "jobsys-config"}},
            {"secretRef": {"name": "jobsys-secrets"}},
        ], role
        (key,) = [e for e in c["env"] if e["name"] == "JOBSYS_SECRET_KEY"]
        ref = key["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "jobsys-secrets", "key": "JOBSYS_SECRET_KEY"}, role  # required
        assert c["command"][:2] == ["jobsys", role if role != "server" else "serve"]


def test_urls_point_at_the_cluster_services(docs: list[Doc]) -> None:
    secrets = env_file(SECRETS_EXAMPLE)
    brokers = urllib.parse.urlsplit(secrets["JOBSYS_BROKER_URL"])
    redis = one(docs, "Service", "redis")
    assert (brokers.scheme, brokers.hostname) == ("redis", "redis")
    assert brokers.port == redis["spec"]["ports"][0]["port"]
    assert brokers.password == secrets["REDIS_PASSWORD"]
    database = make_url(secrets["JOBSYS_DATABASE_URL"])
    postgres = one(docs, "Service", "postgres")
    assert postgres["spec"]["type"] == "ExternalName" and postgres["spec"]["externalName"]
    assert database.drivername == "postgresql+psycopg"
    assert (database.host, database.port) == ("postgres", postgres["spec"]["ports"][0]["port"])
    assert database.query.get("sslmode") == "require"


# --- Redis ----------------------------------------------------------------------------------


def redis_conf(docs: list[Doc]) -> dict[str, list[str]]:
    conf: dict[str, list[str]] = {}
    for line in one(docs, "ConfigMap", "redis-config")["data"]["redis.conf"].splitlines():
        key, _, value = line.partition(" ")
        conf.setdefault(key, []).append(value)
    return conf


def test_redis_is_durable_never_evicts_and_refuses_what_compose_refuses(docs: list[Doc]) -> None:
    conf = redis_conf(docs)
    assert conf["appendonly"] == ["yes"] and conf["appendfsync"] == ["everysec"]
    assert conf["maxmemory-policy"] == ["noeviction"]
    redis = one(docs, "StatefulSet", "redis")
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container(redis)["volumeMounts"]}
    assert [mounts[claim["metadata"]["name"]]] == conf["dir"] == ["/data"]
    maxmemory = int(conf["maxmemory"][0].removesuffix("gb")) * 1024
    limit = container(redis)["resources"]["limits"]["memory"]
    assert int(limit.removesuffix("Gi")) * 1024 > maxmemory
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    refused = set(re.findall(r'--rename-command (\w+) ""', compose))
    assert {v.split()[0] for v in conf["rename-command"]} == refused
    assert all(v.endswith(' ""') for v in conf["rename-command"])


def test_redis_password_is_in_no_command_line(docs: list[Doc]) -> None:
    c = container(one(docs, "StatefulSet", "redis"))
    script = c["command"][-1]
    assert "redis-server /etc/redis/redis.conf - <<EOF" in script
    assert 'requirepass "$REDIS_PASSWORD"' in script and "--requirepass" not in script
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    password = {"name": "jobsys-secrets", "key": "REDIS_PASSWORD"}
    assert refs["REDIS_PASSWORD"] == refs["REDISCLI_AUTH"] == password


# --- probes and shutdown --------------------------------------------------------------------


def test_http_probes_use_routes_jobsys_and_flower_have(docs: list[Doc]) -> None:
    routes = {getattr(r, "path", None) for r in routes_system.router.routes}
    server = container(one(docs, "Deployment", "jobsys-server"))
    assert server["readinessProbe"]["httpGet"]["path"] == "/api/v1/ready" in routes
    assert server["livenessProbe"]["httpGet"]["path"] == "/api/v1/health" in routes
    flower = container(one(docs, "Deployment", "jobsys-flower"))
    flower_paths = {h[0] for h in flower_urls.handlers if isinstance(h, tuple)}
    for probe in ("readinessProbe", "livenessProbe"):
        assert flower[probe]["httpGet"]["path"] == "/healthcheck"
        assert "/healthcheck" in flower_paths
    for c in (server, flower):
        port = c["ports"][0]
        assert port["name"] == "http" and str(port["containerPort"]) == c["command"][-1]


def test_worker_probe_pings_the_pods_first_process(docs: list[Doc]) -> None:
    worker = container(one(docs, "Deployment", "jobsys-worker"))
    command = worker["command"]
    concurrency = int(command[command.index("--concurrency") + 1])
    first = supervisor.node_names(None, concurrency)[0].replace("%h", "$HOSTNAME")
    probe = worker["livenessProbe"]
    assert probe["exec"]["command"][:2] == ["sh", "-c"]
    assert probe["exec"]["command"][2] == (
        f'celery -A workers.app inspect ping --timeout 10 -d "{first}"'
    )
    assert probe["timeoutSeconds"] > 10 and "readinessProbe" not in worker


def test_beats_run_twice_with_no_invented_probe(docs: list[Doc]) -> None:
    beat = one(docs, "Deployment", "jobsys-beat")
    assert beat["spec"]["replicas"] == 2
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(container(beat))


def test_worker_grace_covers_the_shutdown_grace_and_hand_back(docs: list[Doc]) -> None:
    grace = float(one(docs, "ConfigMap", "jobsys-config")["data"]["JOBSYS_SHUTDOWN_GRACE_SECONDS"])
    worker = one(docs, "Deployment", "jobsys-worker")
    assert pod(worker)["terminationGracePeriodSeconds"] > grace + supervisor.HAND_BACK_SECONDS
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert float(compose["x-jobsys-env"]["JOBSYS_SHUTDOWN_GRACE_SECONDS"]) == grace
    assert compose["services"]["worker"]["stop_grace_period"] == (
        f"{pod(worker)['terminationGracePeriodSeconds']}s"
    )
    assert "replicas" not in worker["spec"]  # the autoscaler's


# --- KEDA -----------------------------------------------------------------------------------

SCALEDOBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
TRIGGER_FIELDS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
REDIS_METADATA = {
    "address", "host", "port", "listName", "listLength", "activationListLength",
    "databaseIndex", "enableTLS", "unsafeSsl",
}  # fmt: skip
"""What KEDA's ScaledObject (keda.sh/v1alpha1) and its redis scaler accept."""


def kombu_lists(queue: str) -> set[str]:
    """The Redis lists the workers read for ``queue``: kombu's own naming of its priority
    lists, with the priority steps jobsys configures, for jobsys priorities 0-9."""
    settings = config.Settings.from_env({"JOBSYS_BROKER_URL": "redis://redis:6379/0"})
    steps = broker.celery_config(settings)["broker_transport_options"]["priority_steps"]
    fake = types.SimpleNamespace(sep=transport.Channel.sep, priority_steps=steps)
    fake.priority = lambda n: transport.Channel.priority(fake, n)
    return {transport.Channel._q_for_pri(fake, queue, p) for p in range(10)}


def test_scaledobject_targets_the_workers_within_bounds(docs: list[Doc]) -> None:
    spec = one(docs, "ScaledObject", "jobsys-worker")["spec"]
    assert set(spec) <= SCALEDOBJECT_SPEC
    worker = one(docs, "Deployment", "jobsys-worker")
    ref = spec["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    assert worker["metadata"]["name"] == ref["name"]
    # At least one worker: the workers run the reaper and the reconciler.
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    hpa = one(docs, "HorizontalPodAutoscaler", "jobsys-worker")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (
        spec["minReplicaCount"],
        spec["maxReplicaCount"],
    )
    assert hpa["scaleTargetRef"] == ref
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["behavior"]


def test_scaledobject_sums_every_redis_list_the_workers_read(docs: list[Doc]) -> None:
    spec = one(docs, "ScaledObject", "jobsys-worker")["spec"]
    configmap = one(docs, "ConfigMap", "jobsys-config")["data"]
    registry = catalog.load_registry(tuple(configmap["JOBSYS_CATALOG"].split(",")))
    expected = set().union(*(kombu_lists(q) for q in registry.queues() | {"jobs"}))
    triggers = spec["triggers"]
    assert {t["metadata"]["listName"] for t in triggers} == expected
    assert len(triggers) == len(expected)
    names = [t["name"] for t in triggers]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", n) for n in names)  # formula variables
    modifiers = spec["advanced"]["scalingModifiers"]
    assert sorted(modifiers["formula"].replace(" ", "").split("+")) == sorted(names)
    assert modifiers["metricType"] == "AverageValue" and float(modifiers["target"]) > 0


def test_scaledobject_triggers_reach_the_broker_database(docs: list[Doc]) -> None:
    spec = one(docs, "ScaledObject", "jobsys-worker")["spec"]
    broker_url = urllib.parse.urlsplit(env_file(SECRETS_EXAMPLE)["JOBSYS_BROKER_URL"])
    redis = one(docs, "Service", "redis")
    address = f"{redis['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{broker_url.port}"
    auth = one(docs, "TriggerAuthentication", "jobsys-redis")["spec"]
    assert auth == {
        "secretTargetRef": [
            {"parameter": "password", "name": "jobsys-secrets", "key": "REDIS_PASSWORD"}
        ]
    }
    for t in spec["triggers"]:
        assert set(t) <= TRIGGER_FIELDS and t["type"] == "redis"
        assert set(t["metadata"]) <= REDIS_METADATA
        assert all(isinstance(v, str) for v in t["metadata"].values())  # CRD: map of strings
        assert t["metadata"]["address"] == address
        assert t["metadata"]["databaseIndex"] == broker_url.path.strip("/")
        assert t["authenticationRef"] == {"name": "jobsys-redis"}
